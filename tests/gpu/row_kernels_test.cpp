// LayerNorm, attention (strided-batched GEMMs + causal softmax) and fused cross-entropy on the GPU
// against their CPU references.
#include <numeric>

#include "backend/cpu/attention.h"
#include "backend/cpu/cross_entropy.h"
#include "backend/cpu/layernorm.h"
#include "backend/cuda/attention.h"
#include "backend/cuda/gemm.h"
#include "gpu_test_support.h"
#include "kernels/cross_entropy.h"
#include "kernels/layernorm.h"

namespace finemoe::gpu_test {
namespace {

using RowKernels = GpuTest;
constexpr int64_t kRows = 37;
constexpr int kCols = 300;  // not a multiple of the warp size
constexpr float kEps = 1e-5f;

TEST_F(RowKernels, LayerNormFp32MatchesCpu) {
  const size_t n = size_t(kRows) * kCols;
  const auto x = random_vector(n, 20, -2, 3), w = random_vector(kCols, 21), b = random_vector(kCols, 22);
  const auto dy = random_vector(n, 23);
  auto dx = random_vector(n, 24), dw = random_vector(kCols, 25), db = random_vector(kCols, 26);
  std::vector<float> y(n), mean(kRows), rstd(kRows);
  auto dev_x = on_device(x), dev_w = on_device(w), dev_b = on_device(b), dev_dy = on_device(dy);
  auto dev_dx = on_device(dx), dev_dw = on_device(dw), dev_db = on_device(db);
  cuda::DeviceBuffer<float> dev_y(n), dev_mean(kRows), dev_rstd(kRows);
  cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), kRows, kCols, kEps);
  cpu::layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(),
                          rstd.data(), kRows, kCols);
  cuda::layernorm_forward(dev_y.data(), dev_mean.data(), dev_rstd.data(), dev_x.data(), dev_w.data(),
                          dev_b.data(), kRows, kCols, kEps);
  cuda::layernorm_backward(dev_dx.data(), dev_dw.data(), dev_db.data(), dev_dy.data(), dev_x.data(),
                           dev_w.data(), dev_mean.data(), dev_rstd.data(), kRows, kCols);
  EXPECT_LE(relative_max_error(dev_y.download(), y), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_mean.download(), mean), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_rstd.download(), rstd), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_dx.download(), dx), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_dw.download(), dw), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_db.download(), db), kFp32Tolerance);
}

TEST_F(RowKernels, LayerNormBf16WithinRounding) {
  const size_t n = size_t(kRows) * kCols;
  const auto x = round_to_bf16(random_vector(n, 30, -2, 3)), dy = round_to_bf16(random_vector(n, 31));
  auto dx = round_to_bf16(random_vector(n, 32));
  const auto w = random_vector(kCols, 33), b = random_vector(kCols, 34);
  auto dw = random_vector(kCols, 35), db = random_vector(kCols, 36);
  std::vector<float> y(n), mean(kRows), rstd(kRows);
  auto dev_x = on_device(to_bf16(x)), dev_dy = on_device(to_bf16(dy)), dev_dx = on_device(to_bf16(dx));
  auto dev_w = on_device(w), dev_b = on_device(b), dev_dw = on_device(dw), dev_db = on_device(db);
  cuda::DeviceBuffer<bf16> dev_y(n);
  cuda::DeviceBuffer<float> dev_mean(kRows), dev_rstd(kRows);
  cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), kRows, kCols, kEps);
  cpu::layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(),
                          rstd.data(), kRows, kCols);
  cuda::layernorm_forward(dev_y.data(), dev_mean.data(), dev_rstd.data(), dev_x.data(), dev_w.data(),
                          dev_b.data(), kRows, kCols, kEps);
  cuda::layernorm_backward(dev_dx.data(), dev_dw.data(), dev_db.data(), dev_dy.data(), dev_x.data(),
                           dev_w.data(), dev_mean.data(), dev_rstd.data(), kRows, kCols);
  expect_bf16_close(dev_y.download(), y);
  expect_bf16_close(dev_dx.download(), dx);
  EXPECT_LE(relative_max_error(dev_mean.download(), mean), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_rstd.download(), rstd), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_dw.download(), dw), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_db.download(), db), kFp32Tolerance);
}

TEST_F(RowKernels, AttentionMatchesCpu) {
  const int n_seq = 3, context = 37, n_heads = 4, d = 64;
  const size_t rows = size_t(n_seq) * context, att_size = size_t(n_seq) * n_heads * context * context;
  const auto qkv = random_vector(rows * 3 * d, 40), dout = random_vector(rows * d, 41);
  std::vector<float> out(rows * d), att(att_size), dqkv(rows * 3 * d), datt(att_size);
  cpu::attention_forward(out.data(), att.data(), qkv.data(), n_seq, context, n_heads, d);
  cpu::attention_backward(dqkv.data(), datt.data(), dout.data(), qkv.data(), att.data(), n_seq, context, n_heads,
                          d);
  cuda::CublasHandle handle;
  auto dev_qkv = on_device(qkv), dev_dout = on_device(dout);
  cuda::DeviceBuffer<float> dev_out(out.size()), dev_att(att_size), dev_dqkv(dqkv.size()), dev_datt(att_size);
  cuda::attention_forward(handle.get(), dev_out.data(), dev_att.data(), dev_qkv.data(), n_seq, context, n_heads, d);
  cuda::attention_backward(handle.get(), dev_dqkv.data(), dev_datt.data(), dev_dout.data(), dev_qkv.data(),
                           dev_att.data(), n_seq, context, n_heads, d);
  EXPECT_LE(relative_max_error(dev_att.download(), att), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_out.download(), out), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_datt.download(), datt), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_dqkv.download(), dqkv), kFp32Tolerance);
}

TEST_F(RowKernels, CrossEntropyFp32MatchesCpuInPlaceToo) {
  const int64_t rows = 19;
  const int vocab = 1000;
  const float dscale = 0.25f;
  const auto logits = random_vector(size_t(rows) * vocab, 50, -6, 6);
  const auto targets = random_ints(rows, vocab, 51);
  std::vector<float> dlogits(logits.size());
  const double loss = cpu::softmax_cross_entropy(dlogits.data(), logits.data(), targets.data(), rows, vocab, dscale);
  auto dev_logits = on_device(logits);
  auto dev_targets = on_device(targets);
  cuda::DeviceBuffer<float> dev_dlogits(logits.size()), dev_losses(rows);
  cuda::softmax_cross_entropy(dev_dlogits.data(), dev_logits.data(), dev_targets.data(), rows, vocab, dscale,
                              dev_losses.data());
  auto losses = dev_losses.download();
  EXPECT_NEAR(std::accumulate(losses.begin(), losses.end(), 0.0), loss, kFp32Tolerance * loss);
  EXPECT_LE(relative_max_error(dev_dlogits.download(), dlogits), kFp32Tolerance);
  // Loss only, then the gradient written over the logits.
  cuda::softmax_cross_entropy<float>(nullptr, dev_logits.data(), dev_targets.data(), rows, vocab, dscale,
                                     dev_losses.data());
  losses = dev_losses.download();
  EXPECT_NEAR(std::accumulate(losses.begin(), losses.end(), 0.0), loss, kFp32Tolerance * loss);
  cuda::softmax_cross_entropy(dev_logits.data(), dev_logits.data(), dev_targets.data(), rows, vocab, dscale,
                              dev_losses.data());
  EXPECT_LE(relative_max_error(dev_logits.download(), dlogits), kFp32Tolerance);
}

TEST_F(RowKernels, CrossEntropyBf16WithinRounding) {
  const int64_t rows = 13;
  const int vocab = 777;
  const auto logits = round_to_bf16(random_vector(size_t(rows) * vocab, 52, -6, 6));
  const auto targets = random_ints(rows, vocab, 53);
  std::vector<float> dlogits(logits.size());
  const double loss = cpu::softmax_cross_entropy(dlogits.data(), logits.data(), targets.data(), rows, vocab, 1.0f);
  auto dev_logits = on_device(to_bf16(logits));
  auto dev_targets = on_device(targets);
  cuda::DeviceBuffer<bf16> dev_dlogits(logits.size());
  cuda::DeviceBuffer<float> dev_losses(rows);
  cuda::softmax_cross_entropy(dev_dlogits.data(), dev_logits.data(), dev_targets.data(), rows, vocab, 1.0f,
                              dev_losses.data());
  const auto losses = dev_losses.download();
  EXPECT_NEAR(std::accumulate(losses.begin(), losses.end(), 0.0), loss, kFp32Tolerance * loss);
  expect_bf16_close(dev_dlogits.download(), dlogits);
}

}  // namespace
}  // namespace finemoe::gpu_test
