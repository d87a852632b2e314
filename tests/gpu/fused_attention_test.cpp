// cuDNN's fused attention (backend/cuda/cudnn_attention.h) against the cuBLAS path
// (backend/cuda/attention.h, itself checked against cpu::attention_* in row_kernels_test), forward
// and backward, causal, bf16 operands: the same bf16-representable qkv and output gradient go to
// both; the fused output and gradients must be within bf16 tolerance of the fp32 reference.
// Skipped with "no CUDA device: skipped" without a GPU and "cuDNN unavailable: skipped (<why>)" where
// the build has no cuDNN path or libcudnn cannot be loaded (ctest reports both as skipped).
// FusedAttentionFallback runs everywhere: without a device it loads libcudnn where it is found
// (dynamic loading), reads its version and reports why the fused path is unusable.
#include <cuda_runtime_api.h>

#include "backend/cuda/attention.h"
#include "backend/cuda/cudnn_attention.h"
#include "backend/cuda/gemm.h"
#include "gpu_test_support.h"
#include "kernels/cuda_check.h"
#include "model/memory_plan.h"

namespace finemoe::gpu_test {
namespace {

using FusedAttentionTest = GpuTest;

// ||got - ref|| / ||ref||.
double relative_norm_error(const std::vector<float>& got, const std::vector<float>& ref) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    diff += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    scale += double(ref[i]) * ref[i];
  }
  return std::sqrt(diff / scale);
}

TEST_F(FusedAttentionTest, ForwardAndBackwardMatchCublasWithinBf16) {
  // The h100-100m head size (64) and a context long enough for several of cuDNN's tiles.
  const int n_seq = 3, context = 256, n_heads = 4, d = 256;
  const size_t rows = size_t(n_seq) * context, att_size = size_t(n_seq) * n_heads * context * context;
  cuda::CublasHandle handle;
  cuda::FusedAttention fused(handle.stream(), n_seq, context, n_heads, d);
  if (!fused.usable()) GTEST_SKIP() << "cuDNN unavailable: skipped (" << fused.description() << ")";
  std::printf("  fused attention: %s\n", fused.description().c_str());

  const auto qkv = round_to_bf16(random_vector(rows * 3 * d, 60, -2, 2));
  const auto dout = round_to_bf16(random_vector(rows * d, 61));
  // Reference: cuBLAS in fp32 on the same (bf16-exact) inputs.
  auto dev_qkv = on_device(qkv), dev_dout = on_device(dout);
  cuda::DeviceBuffer<float> ref_out(rows * d), att(att_size), ref_dqkv(rows * 3 * d), datt(att_size);
  cuda::attention_forward(handle.get(), ref_out.data(), att.data(), dev_qkv.data(), n_seq, context, n_heads, d);
  cuda::attention_backward(handle.get(), ref_dqkv.data(), datt.data(), dev_dout.data(), dev_qkv.data(), att.data(),
                           n_seq, context, n_heads, d);

  auto qkv16 = on_device(to_bf16(qkv)), dout16 = on_device(to_bf16(dout));
  cuda::DeviceBuffer<bf16> out16(rows * d), dqkv16(rows * 3 * d);
  cuda::DeviceBuffer<float> stats(size_t(n_seq) * n_heads * context);
  cuda::DeviceBuffer<uint8_t> workspace(fused.workspace_bytes(n_seq) + 1);
  fused.forward(out16.data(), stats.data(), qkv16.data(), n_seq, workspace.data());
  fused.backward(dqkv16.data(), dout16.data(), qkv16.data(), out16.data(), stats.data(), n_seq, workspace.data());
  CUDA_CHECK(cudaDeviceSynchronize());

  const double out_err = relative_norm_error(to_float(out16.download()), ref_out.download());
  const double dqkv_err = relative_norm_error(to_float(dqkv16.download()), ref_dqkv.download());
  // bf16 outputs (2^-9 relative rounding) of products whose probabilities cuDNN rounds to bf16
  // too: about 3e-3 norm-wise; 1e-2 forward and 2e-2 backward (a few more roundings) as bounds.
  EXPECT_LE(out_err, 1e-2);
  EXPECT_LE(dqkv_err, 2e-2);
  std::printf("  fused vs cuBLAS: output %.2e, qkv gradient %.2e (relative, norm-wise)\n", out_err, dqkv_err);
}

// cudnn-frontend's workspace (its size is only known once the graphs are built on a device) within
// the memory plan's bound (fused_attention_workspace_bound), for this test's shape, the h100-100m
// micro-batch (64 sequences of 512, 12 heads of 64) and a single position. Graph builds only: a few
// seconds expected (not yet run: no GPU here).
TEST_F(FusedAttentionTest, WorkspaceWithinThePlansBound) {
  struct Shape {
    int n_seq, context, n_heads, d;
  };
  cuda::CublasHandle handle;
  for (const Shape& s : {Shape{3, 256, 4, 256}, Shape{64, 512, 12, 768}, Shape{4, 1, 2, 128}}) {
    cuda::FusedAttention fused(handle.stream(), s.n_seq, s.context, s.n_heads, s.d);
    if (!fused.usable()) {
      if (s.context == 256) GTEST_SKIP() << "cuDNN unavailable: skipped (" << fused.description() << ")";
      std::printf("  %d x %d: not supported here (%s)\n", s.n_seq, s.context, fused.description().c_str());
      continue;
    }
    const double bytes = double(fused.workspace_bytes(s.n_seq));
    const double bound = fused_attention_workspace_bound(s.n_seq, s.n_heads, s.context, s.d);
    EXPECT_LE(bytes, bound) << s.n_seq << " x " << s.context;
    std::printf("  cuDNN workspace %d x %d, %d heads of %d: %.0f bytes (plan's bound %.0f)\n", s.n_seq, s.context,
                s.n_heads, s.d / s.n_heads, bytes, bound);
  }
}

// Runs without a GPU too (the fallback path CI can exercise): constructing the fused attention never
// throws, and where it is unusable it says why, naming the cuDNN library and version when one
// loaded (so the run's record can say which attention ran and why).
TEST(FusedAttentionFallback, SaysWhyItIsUnusable) {
  cuda::FusedAttention fused(nullptr, 2, 64, 2, 128);
  const std::string& why = fused.description();
  std::printf("  fused attention here: %s: %s\n", fused.usable() ? "usable" : "not usable", why.c_str());
  EXPECT_FALSE(why.empty());
  if (cuda::cuda_device_count() == 0) {
    EXPECT_FALSE(fused.usable()) << "no device, yet usable";
    EXPECT_NE(why.find("cuDNN"), std::string::npos) << why;
  }
}

}  // namespace
}  // namespace finemoe::gpu_test
