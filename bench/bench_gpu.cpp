// finemoe-bench's GPU subcommands (bench/bench_gpu.h). Timing: CUDA events on the benchmark's
// stream around `inner` back-to-back calls (chosen after the warm-up so that one sample lasts about
// --sample-ms), the per-call time of a sample is the slowest rank's, and every figure is the median
// of --reps samples (min and max in the JSON). Inputs are random (never zeros), outputs poisoned
// with NaN before a checked run, and each benchmark checks a sample of its results before timing.
#include "bench_gpu.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/cuda/cublas_check.h"
#include "backend/cuda/device.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/gemm.h"
#include "backend/cuda/gemm_epilogue.h"
#include "bench_util.h"
#include "kernels/cuda_check.h"
#include "kernels/permute.h"
#include "parallel/mpi_check.h"
#include "parallel/nccl_communicator.h"
#include "parallel/process_grid.h"
#include "util/rng.h"

namespace finemoe::bench {
namespace {

using bf16 = __nv_bfloat16;
using cuda::GemmDType;
using cuda::GemmPrecision;

struct GpuCommon {
  std::string sub;
  int reps = 20;
  int warmup = 3;
  double sample_ms = 2.0;
  bool json = false;
  std::string json_out;
  int rank = 0;
  int ranks = 1;
  int device = 0;
  cudaDeviceProp prop{};
  std::vector<double> load_before;
  int device_option = -1;  // --device
};

// No CUDA device: the subcommand fails at once, with exit status 3.
struct NoDevice : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Called by each subcommand once it has read all its options: a typo fails before any work, and
// without a device nothing runs. Selects the device (--device, else the node-local rank).
void begin(GpuCommon& c, const Options& o) {
  const auto unused = o.unused();
  if (!unused.empty()) throw std::invalid_argument("unknown option --" + unused.front());
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    throw NoDevice(std::string("no CUDA device (cudaGetDeviceCount: ") +
                   (rc != cudaSuccess ? cudaGetErrorString(rc) : "0 devices") +
                   "); the GPU benchmarks need a GPU");
  }
  c.device = cuda::select_device(MPI_COMM_WORLD, c.device_option);
  CUDA_CHECK(cudaGetDeviceProperties(&c.prop, c.device));
}

// ------------------------------------------------------------------------------------------------
// Data: element j of a buffer filled with `seed` is pattern(seed, j % kPeriod): random values in
// [-scale, scale), periodic so that gigabyte buffers fill on the device (one upload, then copies
// doubling the filled part). The period is odd so that rows of a power-of-two width differ.
constexpr size_t kPeriod = (size_t(1) << 20) + 3;

float pattern(uint64_t seed, size_t j, float scale) {
  const uint64_t h = hash_combine(seed, uint64_t(j % kPeriod));
  return scale * (float(double(h >> 11) * 0x1.0p-53) * 2.0f - 1.0f);
}

size_t dtype_bytes(GemmDType t) { return t == GemmDType::bf16 ? 2 : 4; }

void fill_device(void* dst, size_t n, GemmDType t, uint64_t seed, float scale, cudaStream_t s) {
  if (n == 0) return;
  const size_t elem = dtype_bytes(t), block = std::min(n, kPeriod);
  std::vector<uint8_t> host(block * elem);
  for (size_t j = 0; j < block; ++j) {
    const float v = pattern(seed, j, scale);
    if (t == GemmDType::bf16) {
      const bf16 b = __float2bfloat16_rn(v);
      std::memcpy(host.data() + j * elem, &b, elem);
    } else {
      std::memcpy(host.data() + j * elem, &v, elem);
    }
  }
  auto* d = static_cast<uint8_t*>(dst);
  CUDA_CHECK(cudaMemcpyAsync(d, host.data(), block * elem, cudaMemcpyHostToDevice, s));
  for (size_t filled = block; filled < n;) {
    const size_t chunk = std::min(filled - filled % kPeriod, n - filled);  // whole periods
    CUDA_CHECK(cudaMemcpyAsync(d + filled * elem, d, chunk * elem, cudaMemcpyDeviceToDevice, s));
    filled += chunk;
  }
  CUDA_CHECK(cudaStreamSynchronize(s));
}

// `count` elements from element `first` of a device buffer of type t, as floats.
std::vector<float> download(const void* src, size_t first, size_t count, GemmDType t) {
  const size_t elem = dtype_bytes(t);
  std::vector<uint8_t> raw(count * elem);
  CUDA_CHECK(cudaMemcpy(raw.data(), static_cast<const uint8_t*>(src) + first * elem, raw.size(),
                        cudaMemcpyDeviceToHost));
  std::vector<float> out(count);
  for (size_t i = 0; i < count; ++i) {
    if (t == GemmDType::bf16) {
      bf16 b;
      std::memcpy(&b, raw.data() + i * elem, elem);
      out[i] = __bfloat162float(b);
    } else {
      std::memcpy(&out[i], raw.data() + i * elem, elem);
    }
  }
  return out;
}

float round_to(GemmDType t, double v) {
  return t == GemmDType::bf16 ? __bfloat162float(__float2bfloat16_rn(float(v))) : float(v);
}

// max |got - ref| / max |ref|; infinity when anything is not finite (unwritten: NaN poison).
double relative_error(const std::vector<float>& got, const std::vector<double>& ref) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    diff = std::max(diff, std::abs(double(got[i]) - ref[i]));
    scale = std::max(scale, std::abs(ref[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

// ------------------------------------------------------------------------------------------------
// Timing
double max_over_ranks(double v) {
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
  return v;
}

struct Timing {
  double median_s = 0, min_s = 0, max_s = 0;
  int inner = 1;
};

class Events {
 public:
  Events() {
    CUDA_CHECK(cudaEventCreate(&start_));
    CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~Events() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  Events(const Events&) = delete;
  Events& operator=(const Events&) = delete;
  // Seconds per call of `inner` calls of fn, enqueued on `stream` back to back.
  template <typename Fn>
  double time(cudaStream_t stream, int inner, Fn& fn) {
    CUDA_CHECK(cudaEventRecord(start_, stream));
    for (int i = 0; i < inner; ++i) fn();
    CUDA_CHECK(cudaEventRecord(stop_, stream));
    CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return 1e-3 * double(ms) / inner;
  }

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

template <typename Fn>
Timing time_gpu(const GpuCommon& c, cudaStream_t stream, Fn&& fn) {
  Events ev;
  for (int i = 0; i < c.warmup; ++i) fn();
  CUDA_CHECK(cudaStreamSynchronize(stream));
  CUDA_CHECK(cudaGetLastError());
  MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  const double once = max_over_ranks(ev.time(stream, 1, fn));
  Timing t;
  t.inner = int(std::clamp(std::ceil(c.sample_ms * 1e-3 / std::max(once, 1e-9)), 1.0, 1000.0));
  std::vector<double> samples;
  for (int r = 0; r < c.reps; ++r) {
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    samples.push_back(max_over_ranks(ev.time(stream, t.inner, fn)));
  }
  CUDA_CHECK(cudaGetLastError());
  t.median_s = median(samples);
  t.min_s = *std::min_element(samples.begin(), samples.end());
  t.max_s = *std::max_element(samples.begin(), samples.end());
  return t;
}

// ------------------------------------------------------------------------------------------------
// Header, JSON
void print_header(const GpuCommon& c, const std::string& what) {
  if (c.rank != 0 || c.json) return;
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  std::printf("# finemoe-bench %s: %d rank(s), device %d: %s (sm_%d%d, %d SMs, %.1f GiB), host %s, reps %d (median), "
              "warmup %d, ~%.1f ms per sample\n",
              what.c_str(), c.ranks, c.device, c.prop.name, c.prop.major, c.prop.minor, c.prop.multiProcessorCount,
              double(c.prop.totalGlobalMem) / (1 << 30), host, c.reps, c.warmup, c.sample_ms);
}

void json_common(Json& j, const GpuCommon& c) {
  int driver = 0, runtime = 0, nccl = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  ncclGetVersion(&nccl);
  const auto after = load_average();
  j.str("bench", c.sub).num("ranks", c.ranks).num("reps", c.reps).num("warmup", c.warmup)
      .num("sample_ms", c.sample_ms).str("device_name", c.prop.name).num("device", c.device)
      .num("compute_capability", c.prop.major * 10 + c.prop.minor).num("sms", c.prop.multiProcessorCount)
      .num("device_memory_bytes", double(c.prop.totalGlobalMem)).num("l2_bytes", c.prop.l2CacheSize)
      .num("cuda_driver", driver).num("cuda_runtime", runtime).num("cublas", CUBLAS_VERSION).num("nccl", nccl)
      .num("load_before", c.load_before[0]).num("load_after", after[0]);
}

void emit_json(const GpuCommon& c, const Json& j) {
  if (c.rank != 0) return;
  if (c.json) std::printf("%s\n", j.text().c_str());
  if (!c.json_out.empty()) std::ofstream(c.json_out) << j.text() << "\n";
}

std::vector<std::string> string_list(const Options& o, const std::string& key, const std::string& def) {
  std::vector<std::string> out;
  std::stringstream ss(o.str(key, def));
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

struct Precision {
  std::string name;
  GemmPrecision p;
};

std::vector<Precision> precisions(const Options& o,
                                  const std::string& default_list = "trainer-bf16,fast-bf16,bf16,tf32,fp32") {
  std::vector<Precision> out;
  for (const std::string& n : string_list(o, "precision", default_list)) {
    Precision pr;
    pr.name = n;
    if (n == "trainer-bf16") {
      pr.p.inputs = GemmDType::bf16;  // what a bf16 training run runs: bf16 operands, fp32 results
    } else if (n == "fast-bf16") {
      pr.p.bf16_math = true;  // fp32 buffers rounded inside cuBLAS (bf16 runs before native operands)
    } else if (n == "bf16") {
      pr.p.inputs = GemmDType::bf16;  // bf16 storage, fp32 accumulation, bf16 results
      pr.p.output = GemmDType::bf16;
    } else if (n == "tf32") {
      pr.p.allow_tf32 = true;
    } else if (n != "fp32") {
      throw std::invalid_argument("--precision: trainer-bf16, fast-bf16, bf16, tf32 or fp32, got " + n);
    }
    out.push_back(pr);
  }
  return out;
}

// Relative-error bounds of a checked product against the double reference (its inputs as stored).
double tolerance(const Precision& p) {
  if (p.p.inputs == GemmDType::bf16 || p.p.bf16_math) return 3e-2;  // bf16 inputs (and hidden layer, output)
  return p.p.allow_tf32 ? 5e-3 : 1e-4;
}

// ------------------------------------------------------------------------------------------------
// A dense product C[m x n] = A[m x k] B[k x n] in one cublasGemmEx: the reference rate.
struct Dense {
  int m, n, k;
  GemmPrecision p;
  cuda::DeviceBuffer<uint8_t> a, b, cbuf;
  Dense(int m_, int n_, int k_, const GemmPrecision& p_, cudaStream_t s) : m(m_), n(n_), k(k_), p(p_) {
    a.resize(size_t(m) * k * dtype_bytes(p.inputs));
    b.resize(size_t(k) * n * dtype_bytes(p.inputs));
    cbuf.resize(size_t(m) * n * dtype_bytes(p.output));
    fill_device(a.data(), size_t(m) * k, p.inputs, 1, 1.0f, s);
    fill_device(b.data(), size_t(k) * n, p.inputs, 2, 0.05f, s);
  }
  double flops() const { return 2.0 * m * n * k; }
  void run(cublasHandle_t h) {
    cuda::gemm(h, false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, cbuf.data(), n, p);
  }
};

// ------------------------------------------------------------------------------------------------
// gpu-expert-gemm
int expert_gemm(GpuCommon& c, const Options& o) {
  const int d = o.integer("d-model", 1024), tokens = o.integer("tokens", 8192), E = o.integer("E", 8);
  const std::vector<int> Gs = o.int_list("G", {1, 2, 4, 8, 16, 32, 64});
  const std::vector<Precision> precs = precisions(o);
  const std::vector<std::string> paths = string_list(o, "paths", "grouped,batched,loop");
  const std::string counts_mode = o.str("token-counts", "equal");
  for (const auto& p : paths)
    if (p != "grouped" && p != "batched" && p != "loop")
      throw std::invalid_argument("--paths: grouped, batched or loop, got " + p);
  if (counts_mode != "equal" && counts_mode != "multinomial")
    throw std::invalid_argument("--token-counts equal|multinomial");
  if (tokens % E) throw std::invalid_argument("--tokens must be a multiple of --E");
  for (int G : Gs)
    if (G <= 0 || (4 * d) % G) throw std::invalid_argument("--G: 4 d_model must be a multiple of G");
  if (c.ranks != 1) throw std::invalid_argument("gpu-expert-gemm runs on one rank");
  begin(c, o);
  auto uses = [&](const std::string& p) { return std::find(paths.begin(), paths.end(), p) != paths.end(); };

  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cuda::CublasHandle handle(stream);
  print_header(c, "gpu-expert-gemm (" + counts_mode + " rows per expert for grouped and loop)");
  Json j;
  j.begin_object();
  json_common(j, c);
  j.num("d_model", d).num("tokens", tokens).num("E", E).str("token_counts", counts_mode);
  j.begin_array("precisions");
  if (c.rank == 0 && !c.json)
    std::printf("%5s %4s %7s %7s %8s %9s %9s %9s %9s %8s %8s %8s %8s %9s\n", "prec", "G", "experts", "d_exp",
                "rows/exp", "dense_TF", "group_TF", "batch_TF", "loop_TF", "grp/dns", "bat/dns", "loop/dns", "path",
                "max_err");
  bool all_ok = true;
  for (const Precision& pr : precs) {
    const GemmPrecision& p = pr.p;
    const size_t in = dtype_bytes(p.inputs), out = dtype_bytes(p.output);
    // Dense reference: one GEMM with the experts' forward FLOPs (two tokens x d x 4d GEMMs).
    Dense dense(tokens, 8 * d, d, p, stream);
    std::vector<double> dense_times;
    auto dense_timing = [&] {
      const Timing t = time_gpu(c, stream, [&] { dense.run(handle.get()); });
      dense_times.push_back(t.median_s);
      return t;
    };
    const Timing dense_first = dense_timing();
    j.begin_object().str("precision", pr.name).begin_array("rows");
    cuda::DeviceBuffer<uint8_t> x, w1, w2, h, y;
    for (int G : Gs) {
      const int n_exp = E * G, de = 4 * d / G, cap = tokens / E;
      const int64_t rows = int64_t(n_exp) * cap;
      // Rows per expert: equal (expert choice, and token choice when balanced) or one multinomial
      // draw of the same total (token choice as routed); the strided-batched path always uses equal.
      std::vector<int64_t> counts(size_t(n_exp), cap);
      if (counts_mode == "multinomial") {
        std::fill(counts.begin(), counts.end(), 0);
        for (int64_t r = 0; r < rows; ++r) ++counts[size_t(hash_combine(77, uint64_t(r)) % uint64_t(n_exp))];
      }
      std::vector<int64_t> offset(size_t(n_exp) + 1, 0);
      for (int e = 0; e < n_exp; ++e) offset[size_t(e) + 1] = offset[size_t(e)] + counts[size_t(e)];
      x.resize(size_t(rows) * d * in);
      w1.resize(size_t(n_exp) * d * de * in);
      w2.resize(size_t(n_exp) * de * d * in);
      h.resize(size_t(rows) * de * out);
      y.resize(size_t(rows) * d * out);
      fill_device(x.data(), size_t(rows) * d, p.inputs, 3, 1.0f, stream);
      fill_device(w1.data(), size_t(n_exp) * d * de, p.inputs, 4, 0.05f, stream);
      fill_device(w2.data(), size_t(n_exp) * de * d, p.inputs, 5, 0.05f, stream);
      auto at = [](cuda::DeviceBuffer<uint8_t>& b, size_t elements, size_t elem) {
        return static_cast<void*>(b.data() + elements * elem);
      };
      std::vector<cuda::GemmProblem> up(static_cast<size_t>(n_exp)), down(static_cast<size_t>(n_exp));
      for (int e = 0; e < n_exp; ++e) {
        const int ce = int(counts[size_t(e)]);
        const size_t r0 = size_t(offset[size_t(e)]);
        up[size_t(e)] = {ce, de, d, at(x, r0 * d, in), d, at(w1, size_t(e) * d * de, in), de, at(h, r0 * de, out), de};
        down[size_t(e)] = {ce, d, de, at(h, r0 * de, out), de, at(w2, size_t(e) * de * d, in), d, at(y, r0 * d, out), d};
      }
      cuda::GroupedGemm grouped_up, grouped_down;
      cuda::GroupedGemm loop_up(cuda::GroupedGemmPath::loop), loop_down(cuda::GroupedGemmPath::loop);
      auto run_grouped = [&] {
        grouped_up.run(handle.get(), false, false, 1.0f, up, 0.0f, p);
        grouped_down.run(handle.get(), false, false, 1.0f, down, 0.0f, p);
      };
      auto run_loop = [&] {
        loop_up.run(handle.get(), false, false, 1.0f, up, 0.0f, p);
        loop_down.run(handle.get(), false, false, 1.0f, down, 0.0f, p);
      };
      auto run_batched = [&] {
        cuda::gemm_strided_batched(handle.get(), false, false, cap, de, d, 1.0f, x.data(), d, int64_t(cap) * d,
                                   w1.data(), de, int64_t(d) * de, 0.0f, h.data(), de, int64_t(cap) * de, n_exp, p);
        cuda::gemm_strided_batched(handle.get(), false, false, cap, d, de, 1.0f, h.data(), de, int64_t(cap) * de,
                                   w2.data(), d, int64_t(de) * d, 0.0f, y.data(), d, int64_t(cap) * d, n_exp, p);
      };
      // Check each path once on poisoned outputs: two rows of the first and of the last expert
      // against a double reference on the stored inputs (hidden layer rounded as stored).
      auto check = [&](auto&& run, bool equal_rows) {
        CUDA_CHECK(cudaMemsetAsync(h.data(), 0xFF, h.bytes(), stream));
        CUDA_CHECK(cudaMemsetAsync(y.data(), 0xFF, y.bytes(), stream));
        run();
        CUDA_CHECK(cudaStreamSynchronize(stream));
        std::vector<float> got;
        std::vector<double> ref;
        for (int e : {0, n_exp - 1}) {
          const int64_t ce = equal_rows ? cap : counts[size_t(e)];
          const int64_t r0 = equal_rows ? int64_t(e) * cap : offset[size_t(e)];
          if (ce == 0) continue;
          const std::vector<float> W1 = download(w1.data(), size_t(e) * d * de, size_t(d) * de, p.inputs);
          const std::vector<float> W2 = download(w2.data(), size_t(e) * de * d, size_t(de) * d, p.inputs);
          for (int64_t r : {r0, r0 + ce - 1}) {
            const std::vector<float> xr = download(x.data(), size_t(r) * d, size_t(d), p.inputs);
            const std::vector<float> yr = download(y.data(), size_t(r) * d, size_t(d), p.output);
            std::vector<double> hr(size_t(de), 0.0);
            for (int kk = 0; kk < d; ++kk)
              for (int col = 0; col < de; ++col) hr[size_t(col)] += double(xr[size_t(kk)]) * W1[size_t(kk) * de + col];
            for (double& v : hr) v = round_to(p.output, v);
            for (int col = 0; col < d; ++col) {
              double acc = 0;
              for (int kk = 0; kk < de; ++kk) acc += hr[size_t(kk)] * W2[size_t(kk) * d + col];
              ref.push_back(acc);
              got.push_back(yr[size_t(col)]);
            }
          }
        }
        return relative_error(got, ref);
      };
      double max_err = 0;
      Timing t_grouped, t_batched, t_loop;
      std::string path_taken = "-";
      if (uses("grouped")) {
        max_err = std::max(max_err, check(run_grouped, false));
        path_taken = grouped_up.last_path() == cuda::GroupedGemmPath::grouped &&
                             grouped_down.last_path() == cuda::GroupedGemmPath::grouped
                         ? "grouped"
                         : "loop";  // cuBLAS reported the grouped call unsupported
        t_grouped = time_gpu(c, stream, run_grouped);
      }
      if (uses("batched")) {
        max_err = std::max(max_err, check(run_batched, true));
        t_batched = time_gpu(c, stream, run_batched);
      }
      if (uses("loop")) {
        max_err = std::max(max_err, check(run_loop, false));
        t_loop = time_gpu(c, stream, run_loop);
      }
      const bool ok = max_err <= tolerance(pr);
      all_ok = all_ok && ok;
      const double flops = dense.flops();  // 4 rows d de = 16 tokens d^2, whatever G
      const double t_dense = median(dense_times);
      auto tf = [&](const Timing& t) { return t.median_s > 0 ? flops / t.median_s * 1e-12 : 0.0; };
      auto vs = [&](const Timing& t) { return t.median_s > 0 ? t_dense / t.median_s : 0.0; };
      if (c.rank == 0 && !c.json)
        std::printf("%5s %4d %7d %7d %8d %9.1f %9.1f %9.1f %9.1f %8.3f %8.3f %8.3f %8s %9.2e%s\n", pr.name.c_str(), G,
                    n_exp, de, cap, flops / t_dense * 1e-12, tf(t_grouped), tf(t_batched), tf(t_loop), vs(t_grouped),
                    vs(t_batched), vs(t_loop), path_taken.c_str(), max_err, ok ? "" : "  CHECK FAILED");
      int64_t min_rows = rows, max_rows = 0;
      for (int64_t ce : counts) {
        min_rows = std::min(min_rows, ce);
        max_rows = std::max(max_rows, ce);
      }
      j.begin_object().num("G", G).num("experts", n_exp).num("d_expert", de).num("rows_per_expert", cap)
          .num("min_rows", double(min_rows)).num("max_rows", double(max_rows)).num("fwd_flops", flops)
          .str("grouped_path_taken", path_taken).num("max_rel_err", max_err).num("check_ok", ok);
      auto put = [&](const std::string& name, const Timing& t) {
        if (t.median_s <= 0) return;
        j.num(name + "_s", t.median_s).num(name + "_min_s", t.min_s).num(name + "_max_s", t.max_s)
            .num(name + "_inner", t.inner).num(name + "_tflops", tf(t)).num(name + "_vs_dense", vs(t));
      };
      put("grouped", t_grouped);
      put("batched", t_batched);
      put("loop", t_loop);
      j.end_object();
    }
    // The dense GEMM again after the sweep: the reference is the median over both passes.
    const Timing dense_last = dense_timing();
    const double t_dense = median(dense_times);
    j.end_array().num("dense_m", dense.m).num("dense_n", dense.n).num("dense_k", dense.k)
        .num("dense_s", t_dense).num("dense_tflops", dense.flops() / t_dense * 1e-12)
        .num("dense_first_s", dense_first.median_s).num("dense_last_s", dense_last.median_s).end_object();
    if (c.rank == 0 && !c.json)
      std::printf("# %s dense cublasGemmEx %dx%dx%d: %.1f TFLOP/s (median of the passes before and after: %.4f, "
                  "%.4f ms)\n",
                  pr.name.c_str(), dense.m, dense.n, dense.k, dense.flops() / t_dense * 1e-12,
                  1e3 * dense_first.median_s, 1e3 * dense_last.median_s);
  }
  j.end_array().num("all_checks_ok", all_ok).end_object();
  emit_json(c, j);
  CUDA_CHECK(cudaStreamDestroy(stream));
  if (!all_ok) std::fprintf(stderr, "finemoe-bench gpu-expert-gemm: a result check FAILED (max_err column)\n");
  return all_ok ? 0 : 1;
}

// ------------------------------------------------------------------------------------------------
// gpu-ffn-epilogue: the experts' first product and its activation (gelu_tanh), fused in cuBLASLt's
// GELU_AUX / DGELU epilogue against the separate pass (the product, then the activation kernel) and
// against the product alone (the floor), on the expert-choice shapes: E G experts of width 4 d / G,
// tokens / E rows each, strided-batched.
//   forward   pre = X W1, h = gelu_tanh(pre)          X [rows, d], W1 [d, de]
//   backward  dpre = (dY W2^T) * gelu_tanh'(pre)      dY [rows, d], W2 [de, d]
int ffn_epilogue(GpuCommon& c, const Options& o) {
  const int d = o.integer("d-model", 768), tokens = o.integer("tokens", 64 * 512), E = o.integer("E", 8);
  const std::vector<int> Gs = o.int_list("G", {1, 8});
  const std::vector<Precision> precs = precisions(o, "bf16,trainer-bf16");
  if (tokens % E) throw std::invalid_argument("--tokens must be a multiple of --E");
  for (int G : Gs)
    if (G <= 0 || (4 * d) % G) throw std::invalid_argument("--G: 4 d_model must be a multiple of G");
  if (c.ranks != 1) throw std::invalid_argument("gpu-ffn-epilogue runs on one rank");
  begin(c, o);

  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  bool all_ok = true;
  {
    cuda::CublasHandle handle(stream);
    cuda::GemmEpilogue fused, separate(cuda::EpiloguePath::separate);
    print_header(c, "gpu-ffn-epilogue (gelu_tanh: cuBLASLt GELU_AUX / DGELU vs GEMM + activation kernel)");
    Json j;
    j.begin_object();
    json_common(j, c);
    j.num("d_model", d).num("tokens", tokens).num("E", E).str("activation", "gelu_tanh");
    j.begin_array("rows");
    if (c.rank == 0 && !c.json)
      std::printf("%12s %3s %7s %6s %8s %9s %9s %9s %9s %9s %9s %7s %7s %9s %9s\n", "prec", "G", "experts", "d_exp",
                  "rows/exp", "fwd_fus", "fwd_sep", "fwd_gemm", "bwd_fus", "bwd_sep", "bwd_gemm", "fwd_x", "bwd_x",
                  "path", "max_err");
    for (const Precision& pr : precs) {
      const GemmPrecision& p = pr.p;
      const size_t in = dtype_bytes(p.inputs), out = dtype_bytes(p.output);
      for (int G : Gs) {
        const int n_exp = E * G, de = 4 * d / G, cap = tokens / E;
        const int64_t rows = int64_t(n_exp) * cap;
        cuda::DeviceBuffer<uint8_t> x(size_t(rows) * d * in), dy(size_t(rows) * d * in),
            w1(size_t(n_exp) * d * de * in), w2(size_t(n_exp) * de * d * in), pre(size_t(rows) * de * out),
            h(size_t(rows) * de * out), dpre(size_t(rows) * de * out);
        fill_device(x.data(), size_t(rows) * d, p.inputs, 31, 1.0f, stream);
        fill_device(dy.data(), size_t(rows) * d, p.inputs, 32, 1.0f, stream);
        fill_device(w1.data(), size_t(n_exp) * d * de, p.inputs, 33, 0.05f, stream);
        fill_device(w2.data(), size_t(n_exp) * de * d, p.inputs, 34, 0.05f, stream);
        const cuda::StridedProduct up{false, false, cap, de, d, x.data(), d, int64_t(cap) * d, w1.data(), de,
                                      int64_t(d) * de, n_exp};
        const cuda::StridedProduct down_grad{false, true, cap, de, d, dy.data(), d, int64_t(cap) * d, w2.data(), d,
                                             int64_t(de) * d, n_exp};
        const int64_t sc = int64_t(cap) * de;
        auto forward = [&](cuda::GemmEpilogue& e) {
          e.forward(handle, up, h.data(), pre.data(), p.output, de, sc, p, cpu::Activation::gelu_tanh);
        };
        auto backward = [&](cuda::GemmEpilogue& e) {
          e.backward(handle, down_grad, pre.data(), p.output, dpre.data(), de, sc, p,
                     cpu::Activation::gelu_tanh);
        };
        auto gemm_only = [&](const cuda::StridedProduct& g, void* C) {
          cuda::gemm_strided_batched(handle.get(), g.trans_a, g.trans_b, g.m, g.n, g.k, 1.0f, g.A, g.lda, g.stride_a,
                                     g.B, g.ldb, g.stride_b, 0.0f, C, de, sc, g.batch, p);
        };
        // Check each path once on poisoned outputs: two rows of the first and the last expert
        // against a double reference on the stored inputs (pre as stored for the backward).
        auto check = [&](cuda::GemmEpilogue& e) {
          CUDA_CHECK(cudaMemsetAsync(pre.data(), 0xFF, pre.bytes(), stream));
          CUDA_CHECK(cudaMemsetAsync(h.data(), 0xFF, h.bytes(), stream));
          CUDA_CHECK(cudaMemsetAsync(dpre.data(), 0xFF, dpre.bytes(), stream));
          forward(e);
          backward(e);
          CUDA_CHECK(cudaStreamSynchronize(stream));
          std::vector<float> got;
          std::vector<double> ref;
          const double c0 = std::sqrt(2.0 / M_PI);
          auto gelu = [&](double v) { return 0.5 * v * (1 + std::tanh(c0 * (v + 0.044715 * v * v * v))); };
          auto dgelu = [&](double v) {
            const double t = std::tanh(c0 * (v + 0.044715 * v * v * v));
            return 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * c0 * (1 + 3 * 0.044715 * v * v);
          };
          for (int ex : {0, n_exp - 1}) {
            const std::vector<float> W1 = download(w1.data(), size_t(ex) * d * de, size_t(d) * de, p.inputs);
            const std::vector<float> W2 = download(w2.data(), size_t(ex) * de * d, size_t(de) * d, p.inputs);
            for (int64_t r : {int64_t(ex) * cap, int64_t(ex) * cap + cap - 1}) {
              const std::vector<float> xr = download(x.data(), size_t(r) * d, size_t(d), p.inputs);
              const std::vector<float> dyr = download(dy.data(), size_t(r) * d, size_t(d), p.inputs);
              const std::vector<float> pre_r = download(pre.data(), size_t(r) * de, size_t(de), p.output);
              const std::vector<float> h_r = download(h.data(), size_t(r) * de, size_t(de), p.output);
              const std::vector<float> dpre_r = download(dpre.data(), size_t(r) * de, size_t(de), p.output);
              for (int col = 0; col < de; ++col) {
                double acc = 0, dacc = 0;
                for (int kk = 0; kk < d; ++kk) {
                  acc += double(xr[size_t(kk)]) * W1[size_t(kk) * de + col];
                  dacc += double(dyr[size_t(kk)]) * W2[size_t(col) * d + kk];
                }
                ref.push_back(acc);
                got.push_back(pre_r[size_t(col)]);
                ref.push_back(gelu(acc));
                got.push_back(h_r[size_t(col)]);
                ref.push_back(dacc * dgelu(pre_r[size_t(col)]));
                got.push_back(dpre_r[size_t(col)]);
              }
            }
          }
          return relative_error(got, ref);
        };
        const double err = std::max(check(fused), check(separate));
        forward(fused);
        const std::string fwd_taken = fused.last_path() == cuda::EpiloguePath::fused ? "fused" : "separate";
        const std::string reason = fused.last_reason();
        backward(fused);
        const std::string bwd_taken = fused.last_path() == cuda::EpiloguePath::fused ? "fused" : "separate";
        const bool ok = err <= std::max(tolerance(pr), 2e-3);  // fp32: cuBLASLt's tanh may be approximate
        all_ok = all_ok && ok;
        const Timing t_fwd_fused = time_gpu(c, stream, [&] { forward(fused); });
        const Timing t_fwd_sep = time_gpu(c, stream, [&] { forward(separate); });
        const Timing t_fwd_gemm = time_gpu(c, stream, [&] { gemm_only(up, pre.data()); });
        const Timing t_bwd_fused = time_gpu(c, stream, [&] { backward(fused); });
        const Timing t_bwd_sep = time_gpu(c, stream, [&] { backward(separate); });
        const Timing t_bwd_gemm = time_gpu(c, stream, [&] { gemm_only(down_grad, dpre.data()); });
        const double flops = 2.0 * double(rows) * d * de;
        const std::string path = fwd_taken + "/" + bwd_taken;
        if (c.rank == 0 && !c.json)
          std::printf("%12s %3d %7d %6d %8d %9.4f %9.4f %9.4f %9.4f %9.4f %9.4f %7.3f %7.3f %9s %9.2e%s\n",
                      pr.name.c_str(), G, n_exp, de, cap, 1e3 * t_fwd_fused.median_s, 1e3 * t_fwd_sep.median_s,
                      1e3 * t_fwd_gemm.median_s, 1e3 * t_bwd_fused.median_s, 1e3 * t_bwd_sep.median_s,
                      1e3 * t_bwd_gemm.median_s, t_fwd_sep.median_s / t_fwd_fused.median_s,
                      t_bwd_sep.median_s / t_bwd_fused.median_s, path.c_str(), err,
                      ok ? (reason.empty() ? "" : ("  (" + reason + ")").c_str()) : "  CHECK FAILED");
        j.begin_object().str("precision", pr.name).num("G", G).num("experts", n_exp).num("d_expert", de)
            .num("rows_per_expert", cap).num("flops_per_product", flops).str("fused_forward_path", fwd_taken)
            .str("fused_backward_path", bwd_taken).str("fallback_reason", reason).num("max_rel_err", err)
            .num("check_ok", ok);
        auto put = [&](const std::string& name, const Timing& t) {
          j.num(name + "_s", t.median_s).num(name + "_min_s", t.min_s).num(name + "_max_s", t.max_s)
              .num(name + "_inner", t.inner).num(name + "_tflops", flops / t.median_s * 1e-12);
        };
        put("forward_fused", t_fwd_fused);
        put("forward_separate", t_fwd_sep);
        put("forward_gemm_only", t_fwd_gemm);
        put("backward_fused", t_bwd_fused);
        put("backward_separate", t_bwd_sep);
        put("backward_gemm_only", t_bwd_gemm);
        j.num("forward_speedup", t_fwd_sep.median_s / t_fwd_fused.median_s)
            .num("backward_speedup", t_bwd_sep.median_s / t_bwd_fused.median_s).end_object();
      }
    }
    j.end_array().num("all_checks_ok", all_ok).end_object();
    emit_json(c, j);
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
  if (!all_ok) std::fprintf(stderr, "finemoe-bench gpu-ffn-epilogue: a result check FAILED (max_err column)\n");
  return all_ok ? 0 : 1;
}

// ------------------------------------------------------------------------------------------------
// gpu-alltoall
int alltoall(GpuCommon& c, const Options& o, MPI_Comm world) {
  const int d = o.integer("d-model", 1024), n_experts = o.integer("experts", 64), G = o.integer("G", 8);
  const std::vector<int> rpes = o.int_list("rows-per-expert", {1, 4, 16, 64, 256, 1024});
  const std::vector<std::string> dtypes = string_list(o, "dtype", "f32,bf16");
  for (const auto& t : dtypes)
    if (t != "f32" && t != "bf16") throw std::invalid_argument("--dtype: f32 or bf16, got " + t);
  if (n_experts % c.ranks) throw std::invalid_argument("--experts must be divisible by the ranks");
  begin(c, o);
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  bool all_ok = true;
  {
    NcclCommunicator comm(world, stream);
    print_header(c, "gpu-alltoall (NCCL, " + std::to_string(c.ranks) + " rank(s))");
    Json j;
    j.begin_object();
    json_common(j, c);
    j.num("d_model", d).num("experts", n_experts).num("G", G).begin_array("rows");
    if (c.rank == 0 && !c.json)
      std::printf("%5s %8s %9s %9s %9s %9s %9s %9s %9s %9s %9s %8s %6s\n", "dtype", "rows/exp", "MB/rank", "a2a_us",
                  "a2av_us", "a2a_GB/s", "counts_us", "perm_us", "unperm_us", "full_us", "2a2a/full", "a2av/a2a",
                  "check");
    for (const std::string& dt : dtypes) {
      const GemmDType t = dt == "bf16" ? GemmDType::bf16 : GemmDType::f32;
      const size_t elem = dtype_bytes(t);
      for (int rpe : rpes) {
        // This rank's copies (token rows gathered once per chosen expert), sent in equal blocks to
        // every rank (balanced routing); as many come back.
        const int64_t copies = int64_t(n_experts) * rpe;
        const int64_t tokens = std::max<int64_t>(1, copies / G);
        const int64_t per_peer = copies / c.ranks;  // rows
        const size_t row_bytes = size_t(d) * elem;
        cuda::DeviceBuffer<uint8_t> x(size_t(tokens) * row_bytes), x_send(size_t(copies) * row_bytes),
            x_exp(size_t(copies) * row_bytes), y_back(size_t(copies) * row_bytes);
        cuda::DeviceBuffer<float> y(size_t(tokens) * d), gate(std::vector<float>(size_t(copies), 0.5f));
        std::vector<int32_t> host_rows(static_cast<size_t>(copies));
        for (int64_t i = 0; i < copies; ++i)
          host_rows[size_t(i)] = int32_t(hash_combine(91, uint64_t(i)) % uint64_t(tokens));
        cuda::DeviceBuffer<int32_t> rows(host_rows);
        fill_device(x.data(), size_t(tokens) * d, t, 11 + uint64_t(c.rank), 1.0f, stream);
        fill_device(x_send.data(), size_t(copies) * d, t, 100 + uint64_t(c.rank), 1.0f, stream);
        fill_device(y_back.data(), size_t(copies) * d, t, 200 + uint64_t(c.rank), 1.0f, stream);
        // Bytes as NCCL sees them: bf16 rows travel as bytes (the Communicator has no bf16 type).
        const DType nt = t == GemmDType::bf16 ? DType::u8 : DType::f32;
        const size_t per_peer_count = size_t(per_peer) * d * (t == GemmDType::bf16 ? 2 : 1);
        const std::vector<int64_t> counts(size_t(c.ranks), int64_t(per_peer_count));
        std::vector<int64_t> send_n(size_t(c.ranks), per_peer), recv_n(size_t(c.ranks), 0);

        // Check: block r of what arrives is rank r's block for this rank (a sample of each block).
        CUDA_CHECK(cudaMemsetAsync(x_exp.data(), 0xFF, x_exp.bytes(), stream));
        comm.all_to_all_v(x_send.data(), counts, x_exp.data(), counts, nt);
        CUDA_CHECK(cudaStreamSynchronize(stream));
        bool ok = true;
        const size_t block = size_t(per_peer) * d, sample = std::min<size_t>(block, 4096);
        for (int r = 0; r < c.ranks && block > 0; ++r) {
          for (size_t first : {size_t(0), block - sample}) {
            const std::vector<float> got = download(x_exp.data(), size_t(r) * block + first, sample, t);
            for (size_t i = 0; i < sample; ++i) {
              const float want = round_to(t, pattern(100 + uint64_t(r), size_t(c.rank) * block + first + i, 1.0f));
              if (!(got[i] == want)) ok = false;
            }
          }
        }
        ok = max_over_ranks(ok ? 0.0 : 1.0) == 0.0;
        all_ok = all_ok && ok;

        const Timing t_a2a = time_gpu(c, stream, [&] { comm.all_to_all(x_send.data(), x_exp.data(), per_peer_count, nt); });
        const Timing t_a2av =
            time_gpu(c, stream, [&] { comm.all_to_all_v(x_send.data(), counts, x_exp.data(), counts, nt); });
        // The dispatcher's count exchange (host int64 counts, staged through the device; blocks).
        const Timing t_counts =
            time_gpu(c, stream, [&] { comm.all_to_all(send_n.data(), recv_n.data(), 1, DType::i64); });
        auto permute = [&] {
          if (t == GemmDType::bf16)
            cuda::gather_rows(reinterpret_cast<const bf16*>(x.data()), rows.data(), copies, d,
                              reinterpret_cast<bf16*>(x_send.data()), stream);
          else
            cuda::gather_rows(reinterpret_cast<const float*>(x.data()), rows.data(), copies, d,
                              reinterpret_cast<float*>(x_send.data()), stream);
          CUDA_CHECK_LAUNCH();
        };
        auto unpermute = [&] {
          CUDA_CHECK(cudaMemsetAsync(y.data(), 0, y.bytes(), stream));
          if (t == GemmDType::bf16)
            cuda::combine_rows(reinterpret_cast<const bf16*>(y_back.data()), rows.data(), gate.data(), copies, d,
                               y.data(), stream);
          else
            cuda::combine_rows(reinterpret_cast<const float*>(y_back.data()), rows.data(), gate.data(), copies, d,
                               y.data(), stream);
          CUDA_CHECK_LAUNCH();
        };
        const Timing t_perm = time_gpu(c, stream, permute);
        const Timing t_unperm = time_gpu(c, stream, unpermute);
        // The whole exchange of one MoE layer's forward: permute, counts, there, back, unpermute.
        const Timing t_full = time_gpu(c, stream, [&] {
          permute();
          comm.all_to_all(send_n.data(), recv_n.data(), 1, DType::i64);
          comm.all_to_all_v(x_send.data(), counts, x_exp.data(), counts, nt);
          comm.all_to_all_v(x_exp.data(), counts, y_back.data(), counts, nt);
          unpermute();
        });
        const double bytes = double(copies) * double(row_bytes);  // per rank, one direction
        const double gbps = bytes / t_a2a.median_s * 1e-9;
        if (c.rank == 0 && !c.json)
          std::printf("%5s %8d %9.3f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %9.1f %9.3f %8.3f %6s\n", dt.c_str(), rpe,
                      bytes / 1e6, 1e6 * t_a2a.median_s, 1e6 * t_a2av.median_s, gbps, 1e6 * t_counts.median_s,
                      1e6 * t_perm.median_s, 1e6 * t_unperm.median_s, 1e6 * t_full.median_s,
                      2 * t_a2a.median_s / t_full.median_s, t_a2av.median_s / t_a2a.median_s, ok ? "ok" : "FAILED");
        j.begin_object().str("dtype", dt).num("rows_per_expert", rpe).num("copies", double(copies))
            .num("tokens", double(tokens)).num("bytes_per_rank", bytes).num("check_ok", ok);
        auto put = [&](const std::string& name, const Timing& tm) {
          j.num(name + "_s", tm.median_s).num(name + "_min_s", tm.min_s).num(name + "_max_s", tm.max_s)
              .num(name + "_inner", tm.inner);
        };
        put("alltoall", t_a2a);
        put("alltoall_v", t_a2av);
        put("counts", t_counts);
        put("permute", t_perm);
        put("unpermute", t_unperm);
        put("full", t_full);
        j.num("alltoall_gbps", gbps)
            .num("alltoall_busbw_gbps", gbps * (c.ranks - 1) / c.ranks)
            .num("two_alltoall_vs_full", 2 * t_a2a.median_s / t_full.median_s)
            .num("alltoall_v_vs_alltoall", t_a2av.median_s / t_a2a.median_s)
            .end_object();
      }
    }
    j.end_array().num("all_checks_ok", all_ok).end_object();
    emit_json(c, j);
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
  if (!all_ok && c.rank == 0)
    std::fprintf(stderr, "finemoe-bench gpu-alltoall: a received block differed from what was sent (check column)\n");
  return all_ok ? 0 : 1;
}

// ------------------------------------------------------------------------------------------------
// gpu-peak
int peak(GpuCommon& c, const Options& o) {
  const std::vector<int> sizes = o.int_list("size", {4096, 8192, 16384});
  const std::vector<Precision> precs = precisions(o);
  const double copy_mib = o.num("copy-mib", 2048);
  if (c.ranks != 1) throw std::invalid_argument("gpu-peak runs on one rank");
  begin(c, o);
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cuda::CublasHandle handle(stream);
  print_header(c, "gpu-peak");
  Json j;
  j.begin_object();
  json_common(j, c);
  j.begin_array("gemm");
  if (c.rank == 0 && !c.json)
    std::printf("%5s %6s %10s %10s %10s %10s\n", "prec", "size", "ms", "TFLOP/s", "min_TF", "max_TF");
  std::vector<std::pair<std::string, double>> best;
  for (const Precision& pr : precs) {
    double top = 0;
    for (int n : sizes) {
      Dense g(n, n, n, pr.p, stream);
      const Timing t = time_gpu(c, stream, [&] { g.run(handle.get()); });
      const double tf = g.flops() / t.median_s * 1e-12;
      top = std::max(top, tf);
      if (c.rank == 0 && !c.json)
        std::printf("%5s %6d %10.3f %10.1f %10.1f %10.1f\n", pr.name.c_str(), n, 1e3 * t.median_s, tf,
                    g.flops() / t.max_s * 1e-12, g.flops() / t.min_s * 1e-12);
      j.begin_object().str("precision", pr.name).num("size", n).num("s", t.median_s).num("min_s", t.min_s)
          .num("max_s", t.max_s).num("inner", t.inner).num("tflops", tf).end_object();
    }
    best.emplace_back(pr.name, top);
  }
  j.end_array();
  // Device-to-device copy: bytes read plus bytes written over the time.
  const size_t bytes = size_t(copy_mib * (1 << 20));
  double copy_gbps = 0;
  if (bytes > 0) {
    cuda::DeviceBuffer<uint8_t> src(bytes), dst(bytes);
    fill_device(src.data(), bytes / 4, GemmDType::f32, 9, 1.0f, stream);
    const Timing t = time_gpu(c, stream, [&] {
      CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), bytes, cudaMemcpyDeviceToDevice, stream));
    });
    copy_gbps = 2.0 * double(bytes) / t.median_s * 1e-9;
    j.num("copy_bytes", double(bytes)).num("copy_s", t.median_s).num("copy_gbps_read_plus_write", copy_gbps);
  }
  j.begin_object("peak_tflops");
  for (const auto& [name, tf] : best) j.num(name, tf);
  j.end_object().end_object();
  emit_json(c, j);
  if (c.rank == 0 && !c.json) {
    for (const auto& [name, tf] : best) std::printf("# peak %s: %.1f TFLOP/s (best median over sizes)\n", name.c_str(), tf);
    if (bytes > 0) std::printf("# device-to-device copy of %.0f MiB: %.0f GB/s (read + write)\n", copy_mib, copy_gbps);
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
  return 0;
}

// ------------------------------------------------------------------------------------------------
// gpu-preflight: is this GPU usable at all? Driver and runtime versions, a 1 GiB cudaMalloc that is
// written and read back, and a bf16 cuBLAS GEMM against a float64 reference of the same rounded
// inputs. Exit 0 when all pass, 1 otherwise (3 without a device).
int preflight(GpuCommon& c, const Options& o) {
  if (c.ranks != 1) throw std::invalid_argument("gpu-preflight runs on one rank");
  begin(c, o);
  bool ok = true;
  std::printf("[preflight] device %d: %s, %.1f GiB, compute capability %d.%d; %s\n", c.device, c.prop.name,
              double(c.prop.totalGlobalMem) / (1 << 30), c.prop.major, c.prop.minor, cuda::cuda_versions().c_str());
  {
    const size_t bytes = size_t(1) << 30;
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, bytes));
    CUDA_CHECK(cudaMemset(p, 0x5a, bytes));
    unsigned char tail[64];
    CUDA_CHECK(cudaMemcpy(tail, static_cast<unsigned char*>(p) + bytes - sizeof tail, sizeof tail,
                          cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaFree(p));
    const bool written = std::all_of(tail, tail + sizeof tail, [](unsigned char b) { return b == 0x5a; });
    std::printf("[preflight] 1 GiB cudaMalloc, memset, read back: %s\n", written ? "ok" : "WRONG");
    ok = ok && written;
  }
  {
    const int n = 512;
    std::vector<float> a(size_t(n) * n), b(size_t(n) * n), got(size_t(n) * n);
    for (size_t i = 0; i < a.size(); ++i) {  // values exact in bf16
      a[i] = float(int(i * 7 % 17) - 8) / 8.0f;
      b[i] = float(int(i * 5 % 13) - 6) / 4.0f;
    }
    cuda::DeviceBuffer<float> da(a), db(b), dc(got.size());
    cuda::CublasHandle handle;
    cuda::GemmPrecision p;
    p.bf16_math = true;
    cuda::gemm(handle.get(), false, false, n, n, n, 1.0f, da.data(), n, db.data(), n, 0.0f, dc.data(), n, p);
    CUDA_CHECK(cudaDeviceSynchronize());
    got = dc.download();
    double worst = 0;
    for (int i = 0; i < n; i += 37)
      for (int j = 0; j < n; j += 41) {
        double ref = 0;
        for (int k = 0; k < n; ++k) ref += double(a[size_t(i) * n + k]) * double(b[size_t(k) * n + j]);
        worst = std::max(worst, std::abs(double(got[size_t(i) * n + j]) - ref) / (1.0 + std::abs(ref)));
      }
    const bool gemm_ok = worst <= 1e-5;  // exact bf16 inputs, fp32 sums of small integers / 32
    std::printf("[preflight] cuBLAS bf16 GEMM %d^3 vs float64 reference: worst relative error %.2e: %s\n", n, worst,
                gemm_ok ? "ok" : "WRONG");
    ok = ok && gemm_ok;
  }
  std::printf("[preflight] %s\n", ok ? "passed" : "FAILED");
  return ok ? 0 : 1;
}

}  // namespace

int run_gpu(int argc, char** argv) {
  GpuCommon c;
  c.sub = argv[1];
  const Options o(argc, argv, 2);
  if (o.flag("help")) {
    std::fputs("usage: finemoe-bench SUBCOMMAND [options]\n" FINEMOE_BENCH_GPU_USAGE
               "common: --json | --json-out FILE\n",
               stdout);
    return 0;
  }
  if (c.sub != "gpu-expert-gemm" && c.sub != "gpu-ffn-epilogue" && c.sub != "gpu-alltoall" && c.sub != "gpu-peak" &&
      c.sub != "gpu-preflight") {
    std::fprintf(stderr, "finemoe-bench: unknown GPU subcommand %s\n" FINEMOE_BENCH_GPU_USAGE, c.sub.c_str());
    return 2;
  }
  MpiSession mpi(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &c.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &c.ranks);
  c.load_before = load_average();
  try {
    c.reps = o.integer("reps", 20);
    c.warmup = o.integer("warmup", 3);
    c.sample_ms = o.num("sample-ms", 2.0);
    c.json = o.flag("json");
    c.json_out = o.str("json-out", "");
    c.device_option = o.integer("device", -1);
    if (c.reps < 1 || c.warmup < 0) throw std::invalid_argument("--reps >= 1, --warmup >= 0");
    if (c.sub == "gpu-expert-gemm") return expert_gemm(c, o);
    if (c.sub == "gpu-ffn-epilogue") return ffn_epilogue(c, o);
    if (c.sub == "gpu-alltoall") return alltoall(c, o, MPI_COMM_WORLD);
    if (c.sub == "gpu-preflight") return preflight(c, o);
    return peak(c, o);
  } catch (const NoDevice& e) {
    if (c.rank == 0) std::fprintf(stderr, "finemoe-bench %s: %s\n", c.sub.c_str(), e.what());
    return 3;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "finemoe-bench %s: error: %s\n", c.sub.c_str(), e.what());
    if (c.ranks > 1) MPI_Abort(MPI_COMM_WORLD, 2);
    return 2;
  }
}

}  // namespace finemoe::bench
