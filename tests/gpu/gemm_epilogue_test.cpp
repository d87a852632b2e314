// cuBLASLt's GELU epilogues (cuda::GemmEpilogue) against the CPU reference (cpu::gemm, then
// cpu::activation_* with gelu_tanh), forward and backward, strided-batched, every transpose, fp32
// and bf16, with the pre-activation kept in the output's type or the other one; the separate pass
// asked for and chosen by itself (leading dimension not a multiple of 8, padded rows); calls captured
// in a CUDA graph replaying the eager results bit for bit; and
// ops::gemm_activation on the CUDA backend against the CPU backend for every activation. Each case
// prints the path it took. Tolerance of the activated values: cuBLASLt may evaluate tanh with the
// hardware approximation (relative error about 2^-11), so 1e-3 of the largest value; the
// pre-activation, a plain product, keeps the GEMM tolerances (1e-5 fp32, bf16 rounding). Small
// shapes: expected to take a few seconds on a GPU (not yet run there; TIMEOUT 300).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "backend/compute.h"
#include "backend/cpu/activation.h"
#include "backend/cpu/blas.h"
#include "backend/cuda/gemm_epilogue.h"
#include "backend/ops.h"
#include "gpu_test_support.h"
#include "kernels/cuda_check.h"

namespace finemoe::gpu_test {
namespace {

using cuda::GemmDType;
using cuda::StridedProduct;
using GemmEpilogueTest = GpuTest;
constexpr double kActivatedTolerance = 1e-3;

// A strided batch: op(A_i) m x k, op(B_i) k x n, C-side m x n with leading dimension ldc.
struct Case {
  bool ta, tb;
  int m, n, k, batch, ldc;
  int lda() const { return ta ? m : k; }
  int ldb() const { return tb ? k : n; }
  int64_t sa() const { return int64_t(m) * k; }
  int64_t sb() const { return int64_t(k) * n; }
  int64_t sc() const { return int64_t(m) * ldc; }
  StridedProduct product(const void* A, const void* B) const {
    return {ta, tb, m, n, k, A, lda(), sa(), B, ldb(), sb(), batch};
  }
  std::string name() const {
    return "ta " + std::to_string(ta) + " tb " + std::to_string(tb) + " m " + std::to_string(m) + " n " +
           std::to_string(n) + " k " + std::to_string(k) + " batch " + std::to_string(batch) + " ldc " +
           std::to_string(ldc);
  }
};

// The products on the CPU (fp32), gaps of the C-side zero.
std::vector<float> cpu_products(const Case& c, const std::vector<float>& A, const std::vector<float>& B) {
  std::vector<float> C(size_t(c.sc()) * c.batch, 0.0f);
  for (int i = 0; i < c.batch; ++i)
    cpu::gemm(c.ta, c.tb, c.m, c.n, c.k, 1.0f, A.data() + i * c.sa(), c.lda(), B.data() + i * c.sb(), c.ldb(), 0.0f,
              C.data() + i * c.sc(), c.ldc);
  return C;
}

// Only the m x n elements of each batch member (the gaps are not written).
std::vector<float> valid(const Case& c, const std::vector<float>& v) {
  std::vector<float> out;
  for (int i = 0; i < c.batch; ++i)
    for (int r = 0; r < c.m; ++r)
      for (int j = 0; j < c.n; ++j) out.push_back(v[size_t(i * c.sc() + int64_t(r) * c.ldc + j)]);
  return out;
}

// Each element within `rel` of its reference plus `of_max` of the largest reference.
double check_close(const std::vector<float>& got, const std::vector<float>& ref, double rel, double of_max,
                   const std::string& what) {
  EXPECT_EQ(got.size(), ref.size()) << what;
  double scale = 0, worst = 0;
  for (float r : ref) scale = std::max(scale, std::abs(double(r)));
  int bad = 0;
  for (size_t i = 0; i < std::min(got.size(), ref.size()); ++i) {
    const double d = std::abs(double(got[i]) - double(ref[i]));
    worst = std::max(worst, scale > 0 ? d / scale : d);
    if (!(d <= rel * std::abs(double(ref[i])) + of_max * scale) && bad++ < 5)
      ADD_FAILURE() << what << ": element " << i << ": got " << got[i] << ", reference " << ref[i];
  }
  EXPECT_EQ(bad, 0) << what;
  return worst;
}

template <typename T>
std::vector<float> download_as_float(const cuda::DeviceBuffer<T>& b) {
  if constexpr (std::is_same_v<T, float>)
    return b.download();
  else
    return to_float(b.download());
}

// Runs forward and backward of one case with storage In (inputs), Out (out, dpre), Pre (pre) and
// checks them against the CPU; returns the forward's path.
template <typename In, typename Out, typename Pre>
cuda::EpiloguePath run_case(cuda::GemmEpilogue& epi, const Case& c) {
  constexpr bool bf16_inputs = std::is_same_v<In, bf16>;
  cuda::GemmPrecision p;
  p.inputs = bf16_inputs ? GemmDType::bf16 : GemmDType::f32;
  p.output = std::is_same_v<Out, bf16> ? GemmDType::bf16 : GemmDType::f32;
  const GemmDType pre_type = std::is_same_v<Pre, bf16> ? GemmDType::bf16 : GemmDType::f32;
  auto A = random_vector(size_t(c.sa()) * c.batch, 11), B = random_vector(size_t(c.sb()) * c.batch, 12);
  if (bf16_inputs) {
    A = round_to_bf16(A);
    B = round_to_bf16(B);
  }
  auto on_device_as = [](const std::vector<float>& v) {
    if constexpr (std::is_same_v<In, float>)
      return on_device(v);
    else
      return on_device(to_bf16(v));
  };
  auto dA = on_device_as(A), dB = on_device_as(B);
  cuda::CublasHandle handle;
  const size_t nc = size_t(c.sc()) * c.batch;
  const std::string what = c.name() + (bf16_inputs ? " bf16 inputs" : " fp32 inputs") +
                           (p.output == GemmDType::bf16 ? ", bf16 out" : ", fp32 out") +
                           (pre_type == GemmDType::bf16 ? ", bf16 pre" : ", fp32 pre");

  // Forward.
  cuda::DeviceBuffer<Out> d_out(nc);
  cuda::DeviceBuffer<Pre> d_pre(nc);
  const auto gelu = cpu::Activation::gelu_tanh;
  epi.forward(handle, c.product(dA.data(), dB.data()), d_out.data(), d_pre.data(), pre_type, c.ldc, c.sc(), p, gelu);
  const cuda::EpiloguePath forward_path = epi.last_path();
  const std::string forward_reason = epi.last_reason();
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> pre_ref = cpu_products(c, A, B);
  std::vector<float> out_ref(pre_ref.size());
  cpu::activation_forward(out_ref.data(), pre_ref.data(), int64_t(pre_ref.size()), cpu::Activation::gelu_tanh);
  const std::vector<float> pre_got = valid(c, download_as_float(d_pre)), out_got = valid(c, download_as_float(d_out));
  const double pre_rel = pre_type == GemmDType::bf16 ? std::ldexp(1.0, -8) : 0.0;
  const double out_rel = p.output == GemmDType::bf16 ? std::ldexp(1.0, -8) : 0.0;
  const double e_pre = check_close(pre_got, valid(c, pre_ref), pre_rel, kFp32Tolerance, what + ": pre");
  const double e_out = check_close(out_got, valid(c, out_ref), out_rel, kActivatedTolerance, what + ": out");

  // Backward from a pre-activation in Pre's storage: dpre = (op(A) op(B)) * gelu_tanh'(pre).
  auto pre_in = random_vector(nc, 13, -4.0f, 4.0f);
  if (pre_type == GemmDType::bf16) pre_in = round_to_bf16(pre_in);
  cuda::DeviceBuffer<Pre> d_pre_in(nc);
  if constexpr (std::is_same_v<Pre, float>)
    d_pre_in.upload(pre_in);
  else
    d_pre_in.upload(to_bf16(pre_in));
  cuda::DeviceBuffer<Out> d_dpre(nc);
  epi.backward(handle, c.product(dA.data(), dB.data()), d_pre_in.data(), pre_type, d_dpre.data(), c.ldc, c.sc(), p,
               gelu);
  const cuda::EpiloguePath backward_path = epi.last_path();
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> dpre_ref = cpu_products(c, A, B);
  cpu::activation_backward(dpre_ref.data(), pre_in.data(), dpre_ref.data(), int64_t(nc), cpu::Activation::gelu_tanh);
  const double e_dpre =
      check_close(valid(c, download_as_float(d_dpre)), valid(c, dpre_ref), out_rel, kActivatedTolerance,
                  what + ": dpre");
  auto name = [](cuda::EpiloguePath q) {
    return q == cuda::EpiloguePath::fused ? "cublaslt-epilogue" : "separate";
  };
  std::cout << "[epilogue] " << what << ": forward " << name(forward_path)
            << (forward_reason.empty() ? "" : " (" + forward_reason + ")") << ", backward " << name(backward_path)
            << (epi.last_reason().empty() ? "" : " (" + epi.last_reason() + ")") << "; max error pre " << e_pre
            << ", out " << e_out << ", dpre " << e_dpre << "\n";
  EXPECT_EQ(forward_path, backward_path) << what;  // same shape, types and alignment
  return forward_path;
}

std::vector<Case> batched_cases() {
  std::vector<Case> out;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) out.push_back({ta, tb, 64, 96, 48, 4, 96});
  out.push_back({false, false, 40, 64, 32, 1, 64});  // one product
  return out;
}

TEST_F(GemmEpilogueTest, Fp32MatchesCpu) {
  cuda::GemmEpilogue epi;
  for (const Case& c : batched_cases()) run_case<float, float, float>(epi, c);
}

// The trainer's bf16 case: cuBLASLt has these epilogues for bf16 on sm_80 and later.
TEST_F(GemmEpilogueTest, Bf16MatchesCpuAndIsFused) {
  cuda::GemmEpilogue epi;
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  for (const Case& c : batched_cases()) {
    const cuda::EpiloguePath path = run_case<bf16, bf16, bf16>(epi, c);
    if (prop.major >= 8) {
      EXPECT_EQ(path, cuda::EpiloguePath::fused) << c.name() << ": " << epi.last_reason();
    }
  }
}

// What the experts run with bf16 operands (ops::gemm_activation, ops_cuda.cpp): bf16 inputs, the
// output and the pre-activation in fp32. Whether cuBLASLt fuses this combination is printed, not
// asserted (not confirmed without a GPU); the results must match either way.
TEST_F(GemmEpilogueTest, Bf16InputsFp32OutputMatchesCpu) {
  cuda::GemmEpilogue epi;
  for (const Case& c : batched_cases()) run_case<bf16, float, float>(epi, c);
}

TEST_F(GemmEpilogueTest, PreActivationInTheOtherTypeMatchesCpu) {
  cuda::GemmEpilogue epi;
  const Case c{false, false, 64, 96, 48, 4, 96};
  run_case<bf16, bf16, float>(epi, c);  // fused where cuBLASLt takes the aux type, else separate
  run_case<bf16, float, bf16>(epi, c);
}

TEST_F(GemmEpilogueTest, SeparatePassAskedForMatchesCpu) {
  cuda::GemmEpilogue epi(cuda::EpiloguePath::separate);
  for (const Case& c : batched_cases()) {
    EXPECT_EQ((run_case<float, float, float>(epi, c)), cuda::EpiloguePath::separate);
    EXPECT_EQ((run_case<bf16, bf16, bf16>(epi, c)), cuda::EpiloguePath::separate);
    EXPECT_EQ(epi.last_reason(), "separate pass requested");
  }
}

TEST_F(GemmEpilogueTest, LeadingDimensionNotAMultipleOf8FallsBack) {
  cuda::GemmEpilogue epi;
  for (const Case& c : {Case{false, false, 24, 30, 16, 3, 30}, Case{true, false, 24, 30, 16, 3, 33}}) {
    EXPECT_EQ((run_case<float, float, float>(epi, c)), cuda::EpiloguePath::separate) << c.name();
    EXPECT_NE(epi.last_reason().find("multiples of 8"), std::string::npos) << epi.last_reason();
    EXPECT_EQ((run_case<bf16, bf16, bf16>(epi, c)), cuda::EpiloguePath::separate) << c.name();
  }
}

// Inside a stream capture (global mode, as the trainer's step graph): nothing allocated, and the
// replayed graph gives the eager results bit for bit. The plan is built by an eager call first, as
// the trainer's first step does; then a capture with a fresh object builds its plan while capturing.
TEST_F(GemmEpilogueTest, CapturedCallsReplayTheEagerResults) {
  const Case c{false, false, 64, 96, 48, 4, 96};
  const auto A = to_bf16(random_vector(size_t(c.sa()) * c.batch, 31));
  const auto B = to_bf16(random_vector(size_t(c.sb()) * c.batch, 32));
  auto dA = on_device(A), dB = on_device(B);
  const size_t nc = size_t(c.sc()) * c.batch;
  cudaStream_t stream = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  {
    cuda::CublasHandle handle(stream);
    cuda::GemmPrecision p;
    p.inputs = p.output = GemmDType::bf16;
    cuda::DeviceBuffer<bf16> out(nc), pre(nc), dpre(nc);
    auto run = [&](cuda::GemmEpilogue& e) {
      const auto gelu = cpu::Activation::gelu_tanh;
      e.forward(handle, c.product(dA.data(), dB.data()), out.data(), pre.data(), GemmDType::bf16, c.ldc, c.sc(), p,
                gelu);
      e.backward(handle, c.product(dA.data(), dB.data()), pre.data(), GemmDType::bf16, dpre.data(), c.ldc, c.sc(),
                 p, gelu);
    };
    auto results = [&] {
      CUDA_CHECK(cudaStreamSynchronize(stream));
      return std::vector<std::vector<float>>{to_float(out.download()), to_float(pre.download()),
                                             to_float(dpre.download())};
    };
    cuda::GemmEpilogue warm, cold;
    run(warm);
    const auto eager = results();
    for (cuda::GemmEpilogue* e : {&warm, &cold}) {
      CUDA_CHECK(cudaMemsetAsync(out.data(), 0xFF, out.bytes(), stream));
      CUDA_CHECK(cudaMemsetAsync(pre.data(), 0xFF, pre.bytes(), stream));
      CUDA_CHECK(cudaMemsetAsync(dpre.data(), 0xFF, dpre.bytes(), stream));
      CUDA_CHECK(cudaStreamSynchronize(stream));
      cudaGraph_t graph = nullptr;
      cudaGraphExec_t exec = nullptr;
      CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
      try {
        run(*e);
      } catch (...) {  // leave capture mode, or every later test's cudaMalloc fails too
        (void)cudaStreamEndCapture(stream, &graph);
        if (graph) (void)cudaGraphDestroy(graph);
        throw;
      }
      CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
      CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
      CUDA_CHECK(cudaGraphLaunch(exec, stream));
      const auto replayed = results();
      CUDA_CHECK(cudaGraphExecDestroy(exec));
      CUDA_CHECK(cudaGraphDestroy(graph));
      const char* which = e == &warm ? "plan built before the capture" : "plan built inside the capture";
      for (size_t i = 0; i < eager.size(); ++i)
        EXPECT_EQ(std::memcmp(eager[i].data(), replayed[i].data(), eager[i].size() * sizeof(float)), 0)
            << which << ", result " << i;
    }
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
}

// ops::gemm_activation(_backward) on the CUDA backend (fp32 storage) against the CPU backend, every
// activation: gelu_tanh through the epilogue, relu and gelu through the separate pass.
TEST_F(GemmEpilogueTest, OpsOnCudaMatchCpu) {
  const Case c{false, true, 32, 64, 40, 3, 64};
  const auto A = random_vector(size_t(c.sa()) * c.batch, 21), B = random_vector(size_t(c.sb()) * c.batch, 22);
  const size_t nc = size_t(c.sc()) * c.batch;
  for (cpu::Activation a : {cpu::Activation::relu, cpu::Activation::gelu, cpu::Activation::gelu_tanh}) {
    std::vector<float> pre(nc), out(nc), dpre(nc);
    configure_compute(ComputeSettings{});
    ops::gemm_activation<float>(c.ta, c.tb, c.m, c.n, c.k, A.data(), c.lda(), c.sa(), B.data(), c.ldb(), c.sb(),
                                pre.data(), out.data(), c.ldc, c.sc(), c.batch, a);
    ops::gemm_activation_backward<float>(c.ta, c.tb, c.m, c.n, c.k, A.data(), c.lda(), c.sa(), B.data(), c.ldb(),
                                         c.sb(), pre.data(), dpre.data(), c.ldc, c.sc(), c.batch, a);
    ComputeSettings gpu;
    gpu.device = ComputeDevice::cuda;
    configure_compute(gpu);
    {
      auto dA = on_device(A), dB = on_device(B);
      cuda::DeviceBuffer<float> d_pre(nc), d_out(nc), d_dpre(nc);
      ops::gemm_activation<float>(c.ta, c.tb, c.m, c.n, c.k, dA.data(), c.lda(), c.sa(), dB.data(), c.ldb(), c.sb(),
                                  d_pre.data(), d_out.data(), c.ldc, c.sc(), c.batch, a);
      const std::string forward_path = ops::last_gemm_activation_path();
      ops::gemm_activation_backward<float>(c.ta, c.tb, c.m, c.n, c.k, dA.data(), c.lda(), c.sa(), dB.data(), c.ldb(),
                                           c.sb(), d_pre.data(), d_dpre.data(), c.ldc, c.sc(), c.batch, a);
      ops::synchronize();
      const std::string what = std::string("ops ") + cpu::activation_name(a) + " (" + forward_path + ")";
      std::cout << "[epilogue] " << what << ", backward " << ops::last_gemm_activation_path() << "\n";
      if (a != cpu::Activation::gelu_tanh) {
        EXPECT_EQ(forward_path.rfind("separate", 0), 0u) << what;
      }
      const double tol = a == cpu::Activation::gelu_tanh ? kActivatedTolerance : kFp32Tolerance;
      check_close(d_pre.download(), pre, 0.0, kFp32Tolerance, what + ": pre");
      check_close(d_out.download(), out, 0.0, tol, what + ": out");
      // dpre from the device's own pre, which equals the CPU's within fp32 rounding.
      check_close(d_dpre.download(), dpre, 0.0, tol, what + ": dpre");
    }
    configure_compute(ComputeSettings{});
  }
}

}  // namespace
}  // namespace finemoe::gpu_test
