#include "backend/cuda/cudnn_attention.h"

#include <map>

#include "util/check.h"

#ifdef FINEMOE_WITH_CUDNN
#include <dlfcn.h>

#include <cmath>
#include <cstdlib>
#include <cudnn_frontend.h>
#include <unordered_map>

// cudnn-frontend's dynamic loading (NV_CUDNN_FRONTEND_USE_DYNAMIC_LOADING) resolves every cuDNN
// call through this handle.
namespace cudnn_frontend {
void* cudnn_dlhandle = nullptr;
}  // namespace cudnn_frontend
#endif

namespace finemoe::cuda {

#ifdef FINEMOE_WITH_CUDNN
namespace {
namespace fe = cudnn_frontend;

enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV };

// dlopen of libcudnn, once per process; empty on success, else why not.
std::string load_cudnn(std::string* where) {
  static std::string error, path;
  static bool tried = false;
  if (!tried) {
    tried = true;
    const char* env = std::getenv("FINEMOE_CUDNN_LIBRARY");
    const std::string lib = env && *env ? env : "libcudnn.so.9";
    fe::cudnn_dlhandle = dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (!fe::cudnn_dlhandle) {
      const char* e = dlerror();
      error = "cannot load " + lib + " (" + (e ? e : "dlopen failed") +
              "); set FINEMOE_CUDNN_LIBRARY or LD_LIBRARY_PATH to cuDNN 9's lib folder";
    } else {
      path = lib;
      Dl_info info{};
      if (void* sym = dlsym(fe::cudnn_dlhandle, "cudnnGetVersion"); sym && dladdr(sym, &info) && info.dli_fname)
        path = lib + ": " + info.dli_fname;
    }
  }
  *where = path;
  return error;
}

std::string version_string(size_t v) {  // cuDNN 9: major * 10000 + minor * 100 + patch
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

struct Graphs {
  std::shared_ptr<fe::graph::Graph> forward, backward;
  int64_t workspace = 0;
};
}  // namespace

struct FusedAttention::Impl {
  cudnnHandle_t handle = nullptr;
  int context = 0, n_heads = 0, d = 0;
  bool usable = false;
  std::string description;
  std::map<int, Graphs> graphs;  // by sequence count
  std::map<int, std::string> unsupported;

  // Empty on success, else the failing step and cudnn-frontend's message.
  std::string build(int n_seq, Graphs& g) {
    const int64_t B = n_seq, H = n_heads, T = context, D = d / n_heads, ld = 3 * int64_t(d);
    const float scale = 1.0f / std::sqrt(float(D));
    const std::vector<int64_t> dims = {B, H, T, D}, qkv_stride = {T * ld, D, ld, 1}, out_stride = {T * d, D, d, 1};
    auto make = [] {
      auto graph = std::make_shared<fe::graph::Graph>();
      graph->set_io_data_type(fe::DataType_t::BFLOAT16)
          .set_intermediate_data_type(fe::DataType_t::FLOAT)
          .set_compute_data_type(fe::DataType_t::FLOAT);
      return graph;
    };
    auto tensor = [&](fe::graph::Graph& graph, const char* name, int64_t uid, const std::vector<int64_t>& stride) {
      return graph.tensor(fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim(dims).set_stride(stride));
    };
    // validate, build the operation graph, choose plans (heuristics A), check_support, build them:
    // the first failure stops the rest.
    auto finish = [&](fe::graph::Graph& graph, const char* what) -> std::string {
      fe::error_t status = graph.validate();
      const char* step = "validate";
      if (status.is_good()) status = graph.build_operation_graph(handle), step = "build_operation_graph";
      if (status.is_good()) status = graph.create_execution_plans({fe::HeurMode_t::A}), step = "create_execution_plans";
      if (status.is_good()) status = graph.check_support(handle), step = "check_support";
      if (status.is_good()) status = graph.build_plans(handle), step = "build_plans";
      if (status.is_bad()) return std::string(what) + " " + step + ": " + status.get_message();
      int64_t ws = 0;
      if (status = graph.get_workspace_size(ws); status.is_bad()) return status.get_message();
      g.workspace = std::max(g.workspace, ws);
      return "";
    };
    try {
      g.forward = make();
      auto& f = *g.forward;
      auto q = tensor(f, "Q", kQ, qkv_stride), k = tensor(f, "K", kK, qkv_stride), v = tensor(f, "V", kV, qkv_stride);
      auto [o, stats] = f.sdpa(q, k, v,
                               fe::graph::SDPA_attributes().set_name("sdpa").set_generate_stats(true)
                                   .set_causal_mask(true).set_attn_scale(scale));
      o->set_output(true).set_dim(dims).set_stride(out_stride).set_uid(kO);
      stats->set_output(true).set_data_type(fe::DataType_t::FLOAT).set_uid(kStats);
      if (std::string e = finish(f, "sdpa"); !e.empty()) return e;

      g.backward = make();
      auto& b = *g.backward;
      auto bq = tensor(b, "Q", kQ, qkv_stride), bk = tensor(b, "K", kK, qkv_stride), bv = tensor(b, "V", kV, qkv_stride);
      auto bo = tensor(b, "O", kO, out_stride), dout = tensor(b, "dO", kDO, out_stride);
      auto bstats = b.tensor(fe::graph::Tensor_attributes().set_name("stats").set_uid(kStats)
                                 .set_dim({B, H, T, 1}).set_stride({H * T, T, 1, 1})
                                 .set_data_type(fe::DataType_t::FLOAT));
      // Deterministic: by default cuDNN accumulates dQ with atomics (run-to-run differences), which
      // the bit-for-bit captured-vs-uncaptured step (train.cuda_graph) does not allow. On Hopper this
      // takes the dP-workspace kernel: more workspace (workspace_bytes includes it), some speed.
      auto [dq, dk, dv] = b.sdpa_backward(bq, bk, bv, bo, dout, bstats,
                                          fe::graph::SDPA_backward_attributes().set_name("sdpa_backward")
                                              .set_causal_mask(true).set_attn_scale(scale)
                                              .set_deterministic_algorithm(true));
      dq->set_output(true).set_dim(dims).set_stride(qkv_stride).set_uid(kDQ);
      dk->set_output(true).set_dim(dims).set_stride(qkv_stride).set_uid(kDK);
      dv->set_output(true).set_dim(dims).set_stride(qkv_stride).set_uid(kDV);
      return finish(b, "sdpa_backward");
    } catch (const std::exception& e) {
      return std::string("cudnn-frontend: ") + e.what();
    }
  }

  const Graphs* find(int n_seq) {
    if (auto it = graphs.find(n_seq); it != graphs.end()) return &it->second;
    if (unsupported.count(n_seq)) return nullptr;
    Graphs g;
    if (std::string e = build(n_seq, g); !e.empty()) {
      unsupported[n_seq] = e;
      return nullptr;
    }
    return &(graphs[n_seq] = std::move(g));
  }
};

FusedAttention::FusedAttention(cudaStream_t stream, int n_seq, int context, int n_heads, int d)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.context = context;
  m.n_heads = n_heads;
  m.d = d;
  std::string where;
  if (std::string e = load_cudnn(&where); !e.empty()) {
    m.description = "cuDNN not available: " + e;
    return;
  }
  try {
    const std::string version = "cuDNN " + version_string(fe::detail::get_backend_version()) + " (" + where +
                                "), cudnn-frontend " + std::to_string(CUDNN_FRONTEND_MAJOR_VERSION) + "." +
                                std::to_string(CUDNN_FRONTEND_MINOR_VERSION) + "." +
                                std::to_string(CUDNN_FRONTEND_PATCH_VERSION);
    if (const cudnnStatus_t st = fe::detail::create_handle(&m.handle); st != CUDNN_STATUS_SUCCESS) {
      m.description = version + ": cudnnCreate failed (status " + std::to_string(int(st)) + ")";
      m.handle = nullptr;
      return;
    }
    if (fe::detail::set_stream(m.handle, stream) != CUDNN_STATUS_SUCCESS) {
      m.description = version + ": cudnnSetStream failed";
      return;
    }
    if (!m.find(n_seq)) {
      m.description = version + ": the sdpa graph for " + std::to_string(n_seq) + " x " + std::to_string(n_heads) +
                      " heads x " + std::to_string(context) + " x " + std::to_string(d / n_heads) +
                      " is not supported: " + m.unsupported[n_seq];
      return;
    }
    m.description = version;
    m.usable = true;
  } catch (const std::exception& e) {
    m.description = std::string("cuDNN not usable: ") + e.what();
  }
}

FusedAttention::~FusedAttention() {
  if (impl_ && impl_->handle) {
    impl_->graphs.clear();
    (void)fe::detail::destroy_handle(impl_->handle);
  }
}

bool FusedAttention::usable() const { return impl_->usable; }
const std::string& FusedAttention::description() const { return impl_->description; }
bool FusedAttention::supports(int n_seq) { return impl_->usable && impl_->find(n_seq) != nullptr; }

size_t FusedAttention::workspace_bytes(int n_seq) {
  const Graphs* g = impl_->usable ? impl_->find(n_seq) : nullptr;
  return g ? size_t(g->workspace) : 0;
}

namespace {
void check(fe::error_t status, const char* what) {
  FINEMOE_CHECK(status.is_good(), what << " failed: " << status.get_message());
}
}  // namespace

void FusedAttention::forward(__nv_bfloat16* out, float* stats, const __nv_bfloat16* qkv, int n_seq, void* workspace) {
  const Graphs* g = impl_->find(n_seq);
  FINEMOE_CHECK(g, "fused attention for " << n_seq << " sequences: " << impl_->unsupported[n_seq]);
  auto* base = const_cast<__nv_bfloat16*>(qkv);
  const int d = impl_->d;
  std::unordered_map<int64_t, void*> pack = {{kQ, base}, {kK, base + d}, {kV, base + 2 * d}, {kO, out}, {kStats, stats}};
  check(g->forward->execute(impl_->handle, pack, workspace), "cudnn sdpa forward (execute)");
}

void FusedAttention::backward(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv,
                              const __nv_bfloat16* out, const float* stats, int n_seq, void* workspace) {
  const Graphs* g = impl_->find(n_seq);
  FINEMOE_CHECK(g, "fused attention for " << n_seq << " sequences: " << impl_->unsupported[n_seq]);
  auto* base = const_cast<__nv_bfloat16*>(qkv);
  const int d = impl_->d;
  std::unordered_map<int64_t, void*> pack = {
      {kQ, base},          {kK, base + d},       {kV, base + 2 * d},
      {kO, const_cast<__nv_bfloat16*>(out)},   {kDO, const_cast<__nv_bfloat16*>(dout)},
      {kStats, const_cast<float*>(stats)},     {kDQ, dqkv},
      {kDK, dqkv + d},     {kDV, dqkv + 2 * d}};
  check(g->backward->execute(impl_->handle, pack, workspace), "cudnn sdpa backward (execute)");
}

#else  // built without cuDNN / cudnn-frontend: the interface reports it and is never usable

struct FusedAttention::Impl {
  std::string description =
      "not built: CMake found no cuDNN headers and cudnn-frontend (pip nvidia-cudnn-frontend; "
      "FINEMOE_CUDNN_FRONTEND_INCLUDE)";
};
FusedAttention::FusedAttention(cudaStream_t, int, int, int, int) : impl_(std::make_unique<Impl>()) {}
FusedAttention::~FusedAttention() = default;
bool FusedAttention::usable() const { return false; }
const std::string& FusedAttention::description() const { return impl_->description; }
bool FusedAttention::supports(int) { return false; }
size_t FusedAttention::workspace_bytes(int) { return 0; }
void FusedAttention::forward(__nv_bfloat16*, float*, const __nv_bfloat16*, int, void*) {
  throw RuntimeFailure("fused attention: " + impl_->description);
}
void FusedAttention::backward(__nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                              const float*, int, void*) {
  throw RuntimeFailure("fused attention: " + impl_->description);
}
#endif

}  // namespace finemoe::cuda
