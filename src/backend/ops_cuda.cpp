#include "backend/ops_cuda.h"

#include <cublas_v2.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "backend/cuda/attention.h"
#include "backend/cuda/cudnn_attention.h"
#include "backend/cuda/cublas_check.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/gemm_epilogue.h"
#include "kernels/activation.h"
#include "kernels/adamw.h"
#include "kernels/bf16_storage.h"
#include "kernels/cross_entropy.h"
#include "kernels/cuda_check.h"
#include "kernels/embedding.h"
#include "kernels/layernorm.h"
#include "kernels/reduce.h"
#include "kernels/routing.h"
#include "kernels/selection_bias.h"
#include "kernels/swiglu.h"
#include "util/check.h"

namespace finemoe::ops::device {
namespace {

// The process's compute stream, cuBLAS handle and scratch (one GPU per process).
struct Context {
  explicit Context(const ComputeSettings& s) {
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    cublas = std::make_unique<cuda::CublasHandle>(stream);
    precision.allow_tf32 = s.gemm_inputs == GemmInputs::full && s.allow_tf32;
    precision.bf16_math = s.gemm_inputs == GemmInputs::bf16;
    native_bf16.inputs = cuda::GemmDType::bf16;
    sum_partials.resize(cuda::kSumOfSquaresPartials);
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    // Keep freed memory in the pool: returning it to the driver would synchronise.
    uint64_t keep = UINT64_MAX;
    CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  }
  ~Context() {
    // Everything that uses the stream goes before it: the buffers below are freed through
    // ops::device::free (cudaFreeAsync on g_context's stream, which at exit is still this one).
    (void)cudaStreamSynchronize(stream);
    release_scratch();
    fused.reset();
    cublas.reset();
    (void)cudaStreamDestroy(stream);
  }
  // The context's own DeviceBuffers (counted as live buffers like the model's).
  void release_scratch() {
    for (auto* b : {&qkv16, &out16, &dout16, &dqkv16, &operand16[0], &operand16[1]}) *b = DeviceBuffer<Bfloat16>();
    fused_workspace = DeviceBuffer<uint8_t>();
    losses = DeviceBuffer<float>();
  }
  cudaStream_t stream = nullptr;
  std::unique_ptr<cuda::CublasHandle> cublas;
  cuda::GemmPrecision precision;    // fp32 inputs
  cuda::GemmPrecision native_bf16;  // bf16 operands: bf16 inputs, fp32 output and sums
  DeviceBuffer<Bfloat16> operand16[2];  // a plain product's operands without a bf16 copy, packed
  cuda::GroupedGemm grouped;
  cuda::GemmEpilogue epilogue;  // gemm_activation: cuBLASLt plans (gelu_tanh), the separate pass
  cudaMemPool_t pool = nullptr;
  cuda::DeviceBuffer<double> sum_partials;  // sum_of_squares' block partials (fixed size)
  DeviceBuffer<float> losses;               // per-row cross-entropy of the last call
  // cuDNN's fused attention (bf16 runs where select_attention found it usable) and its bf16
  // operands and workspace, shared by the blocks (one attention runs at a time).
  std::unique_ptr<cuda::FusedAttention> fused;
  DeviceBuffer<Bfloat16> qkv16, out16, dout16, dqkv16;
  DeviceBuffer<uint8_t> fused_workspace;
};

std::unique_ptr<Context> g_context;

Context& context() {
  FINEMOE_CHECK(g_context, "a CUDA operation before configure_compute(cuda)");
  return *g_context;
}

}  // namespace

void configure(const ComputeSettings& s) {
  // The stream and handle belong to the current device (chosen before, cuda::select_device).
  g_context = std::make_unique<Context>(s);
}

cudaStream_t compute_stream() { return context().stream; }

void release_scratch() {
  if (g_context) g_context->release_scratch();
}

void synchronize() { CUDA_CHECK(cudaStreamSynchronize(context().stream)); }

void* allocate(size_t bytes) {
  Context& c = context();
  void* p = nullptr;
  CUDA_CHECK(cudaMallocFromPoolAsync(&p, bytes, c.pool, c.stream));
  return p;
}

void free(void* p) noexcept {
  // Stream-ordered: the memory returns to the pool after the work queued before it.
  if (!g_context) return;
  const cudaError_t e = cudaFreeAsync(p, g_context->stream);
  if (e == cudaErrorCudartUnloading) return;  // exit after the runtime's own teardown: nothing to free
  if (e != cudaSuccess) {  // e.g. a buffer freed inside a graph capture: a bug, never to pass silently
    std::fprintf(stderr, "fatal: cudaFreeAsync failed: %s\n", cudaGetErrorString(e));
    std::abort();
  }
}

bool is_device_pointer(const void* p) {
  if (!p) return false;
  cudaPointerAttributes a{};
  CUDA_CHECK(cudaPointerGetAttributes(&a, p));
  return a.type == cudaMemoryTypeDevice;
}

size_t pool_used_high() {
  uint64_t high = 0;
  CUDA_CHECK(cudaMemPoolGetAttribute(context().pool, cudaMemPoolAttrUsedMemHigh, &high));
  return size_t(high);
}

void reset_pool_used_high() {
  uint64_t zero = 0;
  CUDA_CHECK(cudaMemPoolSetAttribute(context().pool, cudaMemPoolAttrUsedMemHigh, &zero));
}

void copy_to_host(void* host, const void* device, size_t bytes) {
  Context& c = context();
  if (bytes > 0) CUDA_CHECK(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, c.stream));
  CUDA_CHECK(cudaStreamSynchronize(c.stream));
}

void copy_to_device(void* device, const void* host, size_t bytes) {
  if (bytes > 0) CUDA_CHECK(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, context().stream));
}

namespace {

// The bf16 copy of op(M) (rows x cols, leading dimension ld): the operand's own, or its values packed
// into scratch (the stored extent, same leading dimension).
const Bfloat16* bf16_operand(const Operand& M, bool trans, int rows, int cols, int ld,
                             DeviceBuffer<Bfloat16>& scratch) {
  if (M.rounded || rows == 0 || cols == 0) return M.rounded;
  FINEMOE_CHECK(M.values, "a matrix product's operand without values or a bf16 copy");
  const int stored_rows = trans ? cols : rows, stored_cols = trans ? rows : cols;
  const int64_t extent = int64_t(stored_rows - 1) * ld + stored_cols;
  Bfloat16* packed = ensure_size(scratch, size_t(extent));
  pack_bf16(packed, M.values, extent);
  return packed;
}

const float* fp32_operand(const Operand& M) {
  FINEMOE_CHECK(M.values, "a matrix product's operand has no fp32 values and bf16 operands are off");
  return M.values;
}

// Equal shapes at a constant distance (expert choice: equal tokens per expert); strides in elements.
bool evenly_strided(const std::vector<cuda::GemmProblem>& p, size_t element, int64_t& sa, int64_t& sb, int64_t& sc) {
  if (p.size() < 2) return false;
  const cuda::GemmProblem& f = p[0];
  auto distance = [element](const void* a, const void* b) {
    return int64_t((static_cast<const char*>(b) - static_cast<const char*>(a)) / int64_t(element));
  };
  sa = distance(f.A, p[1].A);
  sb = distance(f.B, p[1].B);
  sc = (static_cast<const float*>(p[1].C) - static_cast<const float*>(f.C));
  for (size_t i = 0; i < p.size(); ++i) {
    const cuda::GemmProblem& q = p[i];
    const int64_t j = int64_t(i);
    if (q.m != f.m || q.n != f.n || q.k != f.k || q.lda != f.lda || q.ldb != f.ldb || q.ldc != f.ldc ||
        distance(f.A, q.A) != j * sa || distance(f.B, q.B) != j * sb ||
        static_cast<const float*>(q.C) - static_cast<const float*>(f.C) != j * sc)
      return false;
  }
  return f.m > 0 && f.n > 0;
}

}  // namespace

void gemm(bool ta, bool tb, int m, int n, int k, float alpha, Operand A, int lda, Operand B, int ldb, float beta,
          float* C, int ldc) {
  Context& c = context();
  if (!bf16_operands())
    return cuda::gemm(c.cublas->get(), ta, tb, m, n, k, alpha, fp32_operand(A), lda, fp32_operand(B), ldb, beta, C,
                      ldc, c.precision);
  if (m == 0 || n == 0) return;
  const Bfloat16* a = bf16_operand(A, ta, m, k, lda, c.operand16[0]);
  const Bfloat16* b = bf16_operand(B, tb, k, n, ldb, c.operand16[1]);
  cuda::gemm(c.cublas->get(), ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, C, ldc, c.native_bf16);
}

void grouped_gemm(bool ta, bool tb, float alpha, const std::vector<Problem>& problems, float beta) {
  Context& c = context();
  const bool bf16 = bf16_operands();  // ops::grouped_gemm checked that every operand has its copy
  const cuda::GemmPrecision& precision = bf16 ? c.native_bf16 : c.precision;
  std::vector<cuda::GemmProblem> q;
  q.reserve(problems.size());
  for (const Problem& p : problems) {
    const void* a = bf16 ? static_cast<const void*>(p.A.rounded) : fp32_operand(p.A);
    const void* b = bf16 ? static_cast<const void*>(p.B.rounded) : fp32_operand(p.B);
    q.push_back({p.m, p.n, p.k, a, p.lda, b, p.ldb, p.C, p.ldc});
  }
  int64_t sa = 0, sb = 0, sc = 0;
  if (evenly_strided(q, bf16 ? sizeof(Bfloat16) : sizeof(float), sa, sb, sc)) {
    const cuda::GemmProblem& f = q[0];
    return cuda::gemm_strided_batched(c.cublas->get(), ta, tb, f.m, f.n, f.k, alpha, f.A, f.lda, sa, f.B, f.ldb, sb,
                                      beta, f.C, f.ldc, sc, static_cast<int>(q.size()), precision);
  }
  c.grouped.run(c.cublas->get(), ta, tb, alpha, q, beta, precision);
}

namespace {
std::string epilogue_path(const cuda::GemmEpilogue& e) {
  if (e.last_path() == cuda::EpiloguePath::fused) return "cublaslt-epilogue";
  return "separate (" + e.last_reason() + ")";
}

// The product's inputs as the epilogue reads them: the bf16 copies with bf16 operands, else the values.
cuda::StridedProduct strided_product(bool ta, bool tb, int m, int n, int k, const Operand& A, int lda, int64_t sa,
                                     const Operand& B, int ldb, int64_t sb, int batch) {
  if (bf16_operands()) return {ta, tb, m, n, k, A.rounded, lda, sa, B.rounded, ldb, sb, batch};
  return {ta, tb, m, n, k, fp32_operand(A), lda, sa, fp32_operand(B), ldb, sb, batch};
}
}  // namespace

std::string gemm_activation(bool ta, bool tb, int m, int n, int k, Operand A, int lda, int64_t sa, Operand B,
                            int ldb, int64_t sb, float* pre, float* out, int ldc, int64_t sc, int batch,
                            cpu::Activation a) {
  Context& c = context();
  if (m == 0 || n == 0 || batch == 0) return "separate (empty)";
  const cuda::StridedProduct g = strided_product(ta, tb, m, n, k, A, lda, sa, B, ldb, sb, batch);
  c.epilogue.forward(*c.cublas, g, out, pre, cuda::GemmDType::f32, ldc, sc,
                     bf16_operands() ? c.native_bf16 : c.precision, a);
  return epilogue_path(c.epilogue);
}

std::string gemm_activation_backward(bool ta, bool tb, int m, int n, int k, Operand A, int lda, int64_t sa,
                                     Operand B, int ldb, int64_t sb, const float* pre, float* dpre, int ldc,
                                     int64_t sc, int batch, cpu::Activation a) {
  Context& c = context();
  if (m == 0 || n == 0 || batch == 0) return "separate (empty)";
  const cuda::StridedProduct g = strided_product(ta, tb, m, n, k, A, lda, sa, B, ldb, sb, batch);
  c.epilogue.backward(*c.cublas, g, pre, cuda::GemmDType::f32, dpre, ldc, sc,
                      bf16_operands() ? c.native_bf16 : c.precision, a);
  return epilogue_path(c.epilogue);
}

void add(float* out, const float* a, const float* b, int64_t n) {
  const float one = 1;
  FINEMOE_CHECK(n <= INT32_MAX, "elementwise add of " << n << " elements");
  const int len = static_cast<int>(n);
  CUBLAS_CHECK(cublasSgeam(context().cublas->get(), CUBLAS_OP_N, CUBLAS_OP_N, len, 1, &one, a, len, &one, b, len,
                           out, len));
}

void fill_zero(void* x, size_t bytes) { CUDA_CHECK(cudaMemsetAsync(x, 0, bytes, context().stream)); }

void copy(void* dst, const void* src, size_t bytes) {
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, context().stream));
}

void scale(float* x, int64_t n, float s) {
  FINEMOE_CHECK(n <= INT32_MAX, "scaling " << n << " elements");
  CUBLAS_CHECK(cublasSscal(context().cublas->get(), static_cast<int>(n), &s, x, 1));
}

void pack_bf16(Bfloat16* dst, const float* src, int64_t n) {
  cuda::pack_bf16(reinterpret_cast<__nv_bfloat16*>(dst), src, n, context().stream);
}

void unpack_bf16(float* dst, const Bfloat16* src, int64_t n) {
  cuda::unpack_bf16(dst, reinterpret_cast<const __nv_bfloat16*>(src), n, context().stream);
}

void activation_forward(float* out, const float* inp, int64_t n, cpu::Activation a) {
  cuda::activation_forward<float>(out, inp, n, a, context().stream);
}

void activation_backward(float* dinp, const float* inp, const float* dout, int64_t n, cpu::Activation a) {
  cuda::activation_backward<float>(dinp, inp, dout, n, a, context().stream);
}

void add_selection_bias(float* scores, const float* probs, const float* bias, int64_t rows, int n_experts) {
  cuda::add_selection_bias(scores, probs, bias, rows, n_experts, context().stream);
}

void swiglu_forward(float* out, const float* inp, int64_t rows, int hidden) {
  cuda::swiglu_forward<float>(out, inp, rows, hidden, context().stream);
}

void swiglu_backward(float* dinp, const float* inp, const float* dout, int64_t rows, int hidden) {
  cuda::swiglu_backward<float>(dinp, inp, dout, rows, hidden, context().stream);
}

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t rows, int cols, float eps) {
  cuda::layernorm_forward<float>(out, mean, rstd, inp, weight, bias, rows, cols, eps, context().stream);
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int64_t rows, int cols) {
  cuda::layernorm_backward<float>(dinp, dweight, dbias, dout, inp, weight, mean, rstd, rows, cols, context().stream);
}

std::string select_attention(int n_seq, int context_len, int n_heads, int d) {
  Context& c = context();
  c.fused = std::make_unique<cuda::FusedAttention>(c.stream, n_seq, context_len, n_heads, d);
  if (!c.fused->usable()) {
    const std::string why = c.fused->description();
    c.fused.reset();
    return "cublas (" + why + ")";
  }
  return "cudnn-sdpa (" + c.fused->description() + ")";
}

void use_cublas_attention() { context().fused.reset(); }

bool fused_attention(int n_seq) {
  Context& c = context();
  return c.fused && c.fused->supports(n_seq);
}

void attention_forward(float* out, float* att, const float* qkv, int n_seq, int context_len, int n_heads, int d) {
  if (fused_attention(n_seq)) {  // att holds the softmax statistics [n_seq, heads, T]
    Context& c = context();
    const int64_t n = int64_t(n_seq) * context_len;
    auto* qkv16 = reinterpret_cast<__nv_bfloat16*>(ensure_size(c.qkv16, size_t(n) * 3 * d));
    auto* out16 = reinterpret_cast<__nv_bfloat16*>(ensure_size(c.out16, size_t(n) * d));
    cuda::pack_bf16(qkv16, qkv, n * 3 * d, c.stream);
    c.fused->forward(out16, att, qkv16, n_seq, ensure_size(c.fused_workspace, c.fused->workspace_bytes(n_seq) + 1));
    cuda::unpack_bf16(out, out16, n * d, c.stream);
    return;
  }
  Context& c = context();
  cuda::attention_forward(c.cublas->get(), out, att, qkv, n_seq, context_len, n_heads, d, c.precision.allow_tf32);
}

void attention_backward(float* dqkv, float* datt, const float* dout, const float* qkv, const float* att,
                        const float* out, int n_seq, int context_len, int n_heads, int d) {
  Context& c = context();
  if (fused_attention(n_seq)) {  // att holds the forward's softmax statistics; datt is not used
    const int64_t n = int64_t(n_seq) * context_len;
    auto* qkv16 = reinterpret_cast<__nv_bfloat16*>(ensure_size(c.qkv16, size_t(n) * 3 * d));
    auto* out16 = reinterpret_cast<__nv_bfloat16*>(ensure_size(c.out16, size_t(n) * d));
    auto* dout16 = reinterpret_cast<__nv_bfloat16*>(ensure_size(c.dout16, size_t(n) * d));
    auto* dqkv16 = reinterpret_cast<__nv_bfloat16*>(ensure_size(c.dqkv16, size_t(n) * 3 * d));
    // The kept qkv and output are bf16 values already (bf16 storage): packing them is exact.
    cuda::pack_bf16(qkv16, qkv, n * 3 * d, c.stream);
    cuda::pack_bf16(out16, out, n * d, c.stream);
    cuda::pack_bf16(dout16, dout, n * d, c.stream);
    c.fused->backward(dqkv16, dout16, qkv16, out16, att, n_seq,
                      ensure_size(c.fused_workspace, c.fused->workspace_bytes(n_seq) + 1));
    cuda::unpack_bf16(dqkv, dqkv16, n * 3 * d, c.stream);
    return;
  }
  cuda::attention_backward(c.cublas->get(), dqkv, datt, dout, qkv, att, n_seq, context_len, n_heads, d,
                           c.precision.allow_tf32);
}

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int n_seq,
                       int context_len, int d) {
  cuda::embedding_forward(out, tokens, wte, wpe, n_seq, context_len, d, context().stream);
}

void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int n_seq,
                        int context_len, int d) {
  cuda::embedding_backward(dwte, dwpe, dout, tokens, n_seq, context_len, d, context().stream);
}

void softmax_cross_entropy(float* dlogits, const float* logits, const int32_t* targets, int64_t rows, int vocab,
                           float dscale, double* loss_sum) {
  Context& c = context();
  float* losses = ensure_size(c.losses, size_t(rows));  // from the pool: nothing synchronises
  cuda::softmax_cross_entropy<float>(dlogits, logits, targets, rows, vocab, dscale, losses, c.stream);
  cuda::accumulate_sum(losses, rows, loss_sum, c.stream);
}

void accumulate(double* dst, const double* src, int n) { cuda::add_doubles(dst, src, n, context().stream); }

void row_softmax(const float* logits, float* probs, int64_t rows, int n) {
  cuda::router_softmax(logits, probs, rows, n, context().stream);
}

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, const cpu::AdamWStep& s) {
  cuda::adamw_update(param, grad, m, v, n, s, context().stream);
}

void sum_of_squares(const float* x, int64_t n, double* out) {
  Context& c = context();
  cuda::sum_of_squares<float>(x, n, out, c.sum_partials.data(), c.stream);
}

static_assert(sizeof(cuda::AdamWConstants) == 7 * sizeof(float), "ops::kAdamWConstants: 2 x 7 floats");

void adamw_prepare(const double* inputs, const double* squares, const cpu::AdamWStep& fixed, double clip,
                   float* constants) {
  cuda::adamw_prepare(inputs, squares, fixed.beta1, fixed.beta2, fixed.eps, fixed.weight_decay, clip,
                      reinterpret_cast<cuda::AdamWConstants*>(constants), context().stream);
}

void adamw_update_prepared(float* param, const float* grad, float* m, float* v, int64_t n, const float* constants,
                           bool decay) {
  cuda::adamw_update_prepared(param, grad, m, v, n, reinterpret_cast<const cuda::AdamWConstants*>(constants), decay,
                              context().stream);
}

namespace {
struct Graph {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
};
}  // namespace

// Thread-local mode: the capture forbids unsafe calls (synchronisation, cudaMalloc, blocking copies)
// on the capturing thread only, where they would break the graph. Global mode would also fail them
// on the other threads - the watchdog's (src/parallel/watchdog.h), whose MPI calls a CUDA-aware MPI
// may turn into CUDA calls (pointer queries, its own synchronisations) - and invalidate our capture.
void begin_capture() { CUDA_CHECK(cudaStreamBeginCapture(context().stream, cudaStreamCaptureModeThreadLocal)); }

void* end_capture() {
  auto g = std::make_unique<Graph>();
  CUDA_CHECK(cudaStreamEndCapture(context().stream, &g->graph));
  CUDA_CHECK(cudaGraphInstantiate(&g->exec, g->graph, 0));
  return g.release();
}

void replay_graph(void* graph) { CUDA_CHECK(cudaGraphLaunch(static_cast<Graph*>(graph)->exec, context().stream)); }

void destroy_graph(void* graph) noexcept {
  auto* g = static_cast<Graph*>(graph);
  if (g->exec) cudaGraphExecDestroy(g->exec);
  if (g->graph) cudaGraphDestroy(g->graph);
  delete g;
}

namespace {
// A Stopwatch's intervals: event pairs recorded on the compute stream; `used` of them this take.
struct Intervals {
  std::vector<cudaEvent_t> starts, stops;
  size_t used = 0;
};
}  // namespace

void* create_intervals() { return new Intervals; }

void destroy_intervals(void* p) noexcept {
  auto* iv = static_cast<Intervals*>(p);
  for (cudaEvent_t e : iv->starts) cudaEventDestroy(e);
  for (cudaEvent_t e : iv->stops) cudaEventDestroy(e);
  delete iv;
}

namespace {
// Events recorded inside a graph capture become part of the graph and cannot be timed: skipped.
bool capturing() {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  CUDA_CHECK(cudaStreamIsCapturing(context().stream, &status));
  return status != cudaStreamCaptureStatusNone;
}
}  // namespace

void record_interval_start(void* p) {
  auto* iv = static_cast<Intervals*>(p);
  if (capturing()) return;
  if (iv->used == iv->starts.size()) {
    cudaEvent_t a = nullptr, b = nullptr;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    iv->starts.push_back(a);
    iv->stops.push_back(b);
  }
  CUDA_CHECK(cudaEventRecord(iv->starts[iv->used], context().stream));
}

void record_interval_stop(void* p) {
  auto* iv = static_cast<Intervals*>(p);
  if (capturing()) return;
  FINEMOE_CHECK(iv->used < iv->starts.size(), "Stopwatch::stop() without start()");
  CUDA_CHECK(cudaEventRecord(iv->stops[iv->used], context().stream));
  ++iv->used;
}

void reset_intervals(void* p) { static_cast<Intervals*>(p)->used = 0; }

double take_interval_seconds(void* p) {
  auto* iv = static_cast<Intervals*>(p);
  double total = 0;
  if (iv->used > 0) {
    detail::count_host_wait();
    CUDA_CHECK(cudaEventSynchronize(iv->stops[iv->used - 1]));
  }
  for (size_t i = 0; i < iv->used; ++i) {
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, iv->starts[i], iv->stops[i]));
    total += ms * 1e-3;
  }
  iv->used = 0;
  return total;
}

}  // namespace finemoe::ops::device
