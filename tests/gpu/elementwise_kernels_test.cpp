// Activations (with SwiGLU), AdamW, sum of squares, embedding and the loss-free balancing's
// selection scores on the GPU against their CPU references.
#include <cuda_runtime_api.h>

#include <cstring>
#include <limits>

#include "backend/bf16.h"
#include "backend/cpu/activation.h"
#include "backend/cpu/adamw.h"
#include "backend/cpu/embedding.h"
#include "backend/cpu/selection_bias.h"
#include "backend/cpu/swiglu.h"
#include "gpu_test_support.h"
#include "kernels/activation.h"
#include "kernels/adamw.h"
#include "kernels/bf16_storage.h"
#include "kernels/embedding.h"
#include "kernels/selection_bias.h"
#include "kernels/swiglu.h"

namespace finemoe::gpu_test {
namespace {

using ElementwiseKernels = GpuTest;
const cpu::Activation kActivations[] = {cpu::Activation::relu, cpu::Activation::gelu, cpu::Activation::gelu_tanh};

TEST_F(ElementwiseKernels, ActivationFp32MatchesCpu) {
  const int64_t n = 10007;
  const auto x = random_vector(n, 1, -4, 4), dy = random_vector(n, 2);
  for (cpu::Activation a : kActivations) {
    std::vector<float> y(n), dx(n);
    cpu::activation_forward(y.data(), x.data(), n, a);
    cpu::activation_backward(dx.data(), x.data(), dy.data(), n, a);
    auto dev_x = on_device(x), dev_dy = on_device(dy);
    cuda::DeviceBuffer<float> dev_y(n), dev_dx(n);
    cuda::activation_forward(dev_y.data(), dev_x.data(), n, a);
    cuda::activation_backward(dev_dx.data(), dev_x.data(), dev_dy.data(), n, a);
    EXPECT_LE(relative_max_error(dev_y.download(), y), kFp32Tolerance);
    EXPECT_LE(relative_max_error(dev_dx.download(), dx), kFp32Tolerance);
  }
}

TEST_F(ElementwiseKernels, ActivationBf16WithinRounding) {
  const int64_t n = 4099;
  const auto x = round_to_bf16(random_vector(n, 3, -4, 4)), dy = round_to_bf16(random_vector(n, 4));
  for (cpu::Activation a : kActivations) {
    std::vector<float> y(n), dx(n);
    cpu::activation_forward(y.data(), x.data(), n, a);
    cpu::activation_backward(dx.data(), x.data(), dy.data(), n, a);
    auto dev_x = on_device(to_bf16(x)), dev_dy = on_device(to_bf16(dy));
    cuda::DeviceBuffer<bf16> dev_y(n), dev_dx(n);
    cuda::activation_forward(dev_y.data(), dev_x.data(), n, a);
    cuda::activation_backward(dev_dx.data(), dev_x.data(), dev_dy.data(), n, a);
    expect_bf16_close(dev_y.download(), y);
    expect_bf16_close(dev_dx.download(), dx);
  }
}

// Input in one type, output (and gradients) in the other: the GEMM epilogues' separate pass.
TEST_F(ElementwiseKernels, ActivationMixedTypesMatchCpu) {
  const int64_t n = 3001;
  const auto x = round_to_bf16(random_vector(n, 5, -4, 4)), dy = round_to_bf16(random_vector(n, 6));
  for (cpu::Activation a : kActivations) {
    std::vector<float> y(n), dx(n);
    cpu::activation_forward(y.data(), x.data(), n, a);
    cpu::activation_backward(dx.data(), x.data(), dy.data(), n, a);
    // bf16 input, fp32 output: only the fp32 math differs.
    auto x16 = on_device(to_bf16(x));
    auto dy32 = on_device(dy);
    cuda::DeviceBuffer<float> y32(n), dx32(n);
    cuda::activation_forward_mixed(y32.data(), x16.data(), n, a);
    cuda::activation_backward_mixed(dx32.data(), x16.data(), dy32.data(), n, a);
    EXPECT_LE(relative_max_error(y32.download(), y), kFp32Tolerance) << cpu::activation_name(a);
    EXPECT_LE(relative_max_error(dx32.download(), dx), kFp32Tolerance) << cpu::activation_name(a);
    // fp32 input, bf16 output and gradients.
    auto x32 = on_device(x);
    auto dy16 = on_device(to_bf16(dy));
    cuda::DeviceBuffer<bf16> y16(n), dx16(n);
    cuda::activation_forward_mixed(y16.data(), x32.data(), n, a);
    cuda::activation_backward_mixed(dx16.data(), x32.data(), dy16.data(), n, a);
    expect_bf16_close(y16.download(), y);
    expect_bf16_close(dx16.download(), dx);
  }
}

// The kept-activation storage (backend/kept_activation.h): the GPU's packing is the host's
// finemoe::to_bf16 bit for bit (ties to even, carries into the exponent, infinities, NaN to the
// canonical NaN 0x7fff), and unpacking is exact.
TEST_F(ElementwiseKernels, Bf16StorageMatchesHostRoundingBitForBit) {
  auto x = random_vector(20011, 13, -5, 5);
  for (size_t i = 0; i < 256; ++i) {  // exact ties, both parities
    uint32_t bits;
    std::memcpy(&bits, &x[i], sizeof bits);
    bits = (bits & 0xffff0000u) | 0x8000u;
    std::memcpy(&x[i], &bits, sizeof bits);
  }
  x[256] = std::numeric_limits<float>::infinity();
  x[257] = -std::numeric_limits<float>::infinity();
  x[258] = std::numeric_limits<float>::max();  // rounds up to infinity
  x[259] = std::numeric_limits<float>::denorm_min();
  x[260] = 0x1.fffffep0f;  // carries into the exponent: 2
  const int64_t n = int64_t(x.size());
  auto dev_x = on_device(x);
  cuda::DeviceBuffer<bf16> packed(n);
  cuda::DeviceBuffer<float> back(n);
  cuda::pack_bf16(packed.data(), dev_x.data(), n);
  cuda::unpack_bf16(back.data(), packed.data(), n);
  CUDA_CHECK(cudaDeviceSynchronize());
  const auto got = packed.download();
  const auto got_back = back.download();
  int mismatches = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint16_t bits;
    std::memcpy(&bits, &got[i], sizeof bits);
    mismatches += bits != finemoe::to_bf16(x[i]).bits;
    mismatches += got_back[i] != finemoe::to_float(finemoe::to_bf16(x[i]));
  }
  EXPECT_EQ(mismatches, 0);
  std::vector<float> nan(1, std::numeric_limits<float>::quiet_NaN());
  auto dev_nan = on_device(nan);
  cuda::pack_bf16(packed.data(), dev_nan.data(), 1);
  cuda::unpack_bf16(back.data(), packed.data(), 1);
  EXPECT_TRUE(std::isnan(back.download()[0]));
  uint16_t nan_bits;
  std::memcpy(&nan_bits, &packed.download()[0], sizeof nan_bits);
  EXPECT_EQ(nan_bits, finemoe::to_bf16(nan[0]).bits) << "NaN packs to the host reference's bits";
}

// Issue 20: SwiGLU, rows of [gate | up] (an odd width, so rows do not align with warps).
TEST_F(ElementwiseKernels, SwigluFp32MatchesCpu) {
  const int64_t rows = 301;
  const int hidden = 37;
  const auto x = random_vector(rows * 2 * hidden, 31, -4, 4), dy = random_vector(rows * hidden, 32);
  std::vector<float> y(size_t(rows * hidden)), dx(x.size());
  cpu::swiglu_forward(y.data(), x.data(), rows, hidden);
  cpu::swiglu_backward(dx.data(), x.data(), dy.data(), rows, hidden);
  auto dev_x = on_device(x), dev_dy = on_device(dy);
  cuda::DeviceBuffer<float> dev_y(y.size()), dev_dx(dx.size());
  cuda::swiglu_forward(dev_y.data(), dev_x.data(), rows, hidden);
  cuda::swiglu_backward(dev_dx.data(), dev_x.data(), dev_dy.data(), rows, hidden);
  EXPECT_LE(relative_max_error(dev_y.download(), y), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_dx.download(), dx), kFp32Tolerance);
}

TEST_F(ElementwiseKernels, SwigluBf16WithinRounding) {
  const int64_t rows = 129;
  const int hidden = 24;
  const auto x = round_to_bf16(random_vector(rows * 2 * hidden, 33, -4, 4));
  const auto dy = round_to_bf16(random_vector(rows * hidden, 34));
  std::vector<float> y(size_t(rows * hidden)), dx(x.size());
  cpu::swiglu_forward(y.data(), x.data(), rows, hidden);
  cpu::swiglu_backward(dx.data(), x.data(), dy.data(), rows, hidden);
  auto dev_x = on_device(to_bf16(x)), dev_dy = on_device(to_bf16(dy));
  cuda::DeviceBuffer<bf16> dev_y(y.size()), dev_dx(dx.size());
  cuda::swiglu_forward(dev_y.data(), dev_x.data(), rows, hidden);
  cuda::swiglu_backward(dev_dx.data(), dev_x.data(), dev_dy.data(), rows, hidden);
  expect_bf16_close(dev_y.download(), y);
  expect_bf16_close(dev_dx.download(), dx);
}

TEST_F(ElementwiseKernels, SelectionBiasMatchesCpu) {
  const int64_t rows = 1001;
  const int n_experts = 24;
  const auto probs = random_vector(rows * n_experts, 35, 0, 1), bias = random_vector(n_experts, 36, -0.1f, 0.1f);
  std::vector<float> scores(probs.size());
  cpu::add_selection_bias(scores.data(), probs.data(), bias.data(), rows, n_experts);
  auto dev_probs = on_device(probs), dev_bias = on_device(bias);
  cuda::DeviceBuffer<float> dev_scores(scores.size());
  cuda::add_selection_bias(dev_scores.data(), dev_probs.data(), dev_bias.data(), rows, n_experts);
  EXPECT_EQ(dev_scores.download(), scores) << "one float addition each: bit for bit";
}

TEST_F(ElementwiseKernels, AdamWMatchesCpu) {
  const int64_t n = 5003;
  auto param = random_vector(n, 5), grad = random_vector(n, 6), m = random_vector(n, 7, -0.1f, 0.1f);
  auto v = random_vector(n, 8, 0.0f, 0.01f);
  cpu::AdamWStep s;
  s.lr = 3e-3;
  s.weight_decay = 0.1;
  s.grad_scale = 0.7;
  s.t = 3;
  auto dev_param = on_device(param), dev_grad = on_device(grad), dev_m = on_device(m), dev_v = on_device(v);
  cpu::adamw_update(param.data(), grad.data(), m.data(), v.data(), n, s);
  cuda::adamw_update(dev_param.data(), dev_grad.data(), dev_m.data(), dev_v.data(), n, s);
  EXPECT_LE(relative_max_error(dev_param.download(), param), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_m.download(), m), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_v.download(), v), kFp32Tolerance);
}

TEST_F(ElementwiseKernels, SumOfSquaresMatchesCpu) {
  const int64_t n = 300001;
  const auto x = round_to_bf16(random_vector(n, 9, -3, 3));
  const double ref = cpu::sum_of_squares(x.data(), n);
  cuda::DeviceBuffer<double> result(1), partials(cuda::kSumOfSquaresPartials);
  auto dev_x = on_device(x);
  cuda::sum_of_squares(dev_x.data(), n, result.data(), partials.data());
  EXPECT_NEAR(result.download()[0], ref, 1e-10 * ref);
  auto dev_x16 = on_device(to_bf16(x));  // the same values in bf16 storage
  cuda::sum_of_squares(dev_x16.data(), n, result.data(), partials.data());
  EXPECT_NEAR(result.download()[0], ref, 1e-10 * ref);
}

TEST_F(ElementwiseKernels, EmbeddingMatchesCpu) {
  const int n_seq = 3, context = 17, d = 40, vocab = 11;  // few tokens: rows repeat
  const auto tokens = random_ints(size_t(n_seq) * context, vocab, 10);
  const auto wte = random_vector(size_t(vocab) * d, 11), wpe = random_vector(size_t(context) * d, 12);
  const auto dout = random_vector(size_t(n_seq) * context * d, 13);
  auto dwte = random_vector(wte.size(), 14), dwpe = random_vector(wpe.size(), 15);
  auto dev_tokens = on_device(tokens);
  auto dev_wte = on_device(wte), dev_wpe = on_device(wpe), dev_dout = on_device(dout);
  auto dev_dwte = on_device(dwte), dev_dwpe = on_device(dwpe);
  std::vector<float> out(dout.size());
  cuda::DeviceBuffer<float> dev_out(out.size());
  cpu::embedding_forward(out.data(), tokens.data(), wte.data(), wpe.data(), n_seq, context, d);
  cpu::embedding_backward(dwte.data(), dwpe.data(), dout.data(), tokens.data(), n_seq, context, d);
  cuda::embedding_forward(dev_out.data(), dev_tokens.data(), dev_wte.data(), dev_wpe.data(), n_seq, context, d);
  cuda::embedding_backward(dev_dwte.data(), dev_dwpe.data(), dev_dout.data(), dev_tokens.data(), n_seq, context, d);
  EXPECT_LE(relative_max_error(dev_out.download(), out), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_dwte.download(), dwte), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_dwpe.download(), dwpe), kFp32Tolerance);
}

}  // namespace
}  // namespace finemoe::gpu_test
