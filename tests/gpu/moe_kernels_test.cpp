// Router softmax and the permute / unpermute kernels on the GPU against the MoE layer's CPU code
// (src/model/moe); the selection kernels are in moe_routing_test.cpp.
#include "gpu_test_support.h"
#include "kernels/permute.h"
#include "kernels/routing.h"
#include "model/moe/dispatcher.h"
#include "model/moe/router.h"

namespace finemoe::gpu_test {
namespace {

using MoeKernels = GpuTest;

TEST_F(MoeKernels, RouterSoftmaxMatchesCpu) {
  const int64_t rows = 53;
  const int d_model = 48;
  for (int n_experts : {8, 70}) {
    const auto x = random_vector(size_t(rows) * d_model, 60), w = random_vector(size_t(d_model) * n_experts, 61);
    std::vector<float> logits(size_t(rows) * n_experts), probs(logits.size());
    moe::router_forward<float>(x.data(), w.data(), rows, d_model, n_experts, logits.data(), probs.data());
    auto dev_logits = on_device(logits);
    cuda::DeviceBuffer<float> dev_probs(probs.size());
    cuda::router_softmax(dev_logits.data(), dev_probs.data(), rows, n_experts);
    EXPECT_LE(relative_max_error(dev_probs.download(), probs), kFp32Tolerance) << n_experts << " experts";
  }
}

struct PermuteCase {
  int64_t tokens = 29, copies = 71;
  int width = 45;
  std::vector<int32_t> rows = random_ints(size_t(copies), int32_t(tokens), 70);  // repeats: atomics
  std::vector<float> gate = random_vector(size_t(copies), 71);
};

TEST_F(MoeKernels, PermuteFp32MatchesCpu) {
  const PermuteCase c;
  const auto x = random_vector(size_t(c.tokens) * c.width, 72), back = random_vector(size_t(c.copies) * c.width, 73);
  const auto dy = random_vector(size_t(c.tokens) * c.width, 74);
  auto y = random_vector(x.size(), 75), dx = random_vector(x.size(), 76);
  std::vector<float> out(back.size()), dback(back.size()), dgate(c.copies);
  auto dev_rows = on_device(c.rows);
  auto dev_gate = on_device(c.gate), dev_x = on_device(x), dev_back = on_device(back), dev_dy = on_device(dy);
  auto dev_y = on_device(y), dev_dx = on_device(dx);
  cuda::DeviceBuffer<float> dev_out(out.size()), dev_dback(dback.size()), dev_dgate(dgate.size());
  moe::gather_rows(x.data(), c.rows.data(), c.copies, c.width, out.data());
  moe::combine_rows(back.data(), c.rows.data(), c.gate.data(), c.copies, c.width, y.data());
  moe::combine_rows_backward(dy.data(), back.data(), c.rows.data(), c.gate.data(), c.copies, c.width, dback.data(),
                             dgate.data());
  moe::scatter_add_rows(back.data(), c.rows.data(), c.copies, c.width, dx.data());
  cuda::gather_rows(dev_x.data(), dev_rows.data(), c.copies, c.width, dev_out.data());
  cuda::combine_rows(dev_back.data(), dev_rows.data(), dev_gate.data(), c.copies, c.width, dev_y.data());
  cuda::combine_rows_backward(dev_dy.data(), dev_back.data(), dev_rows.data(), dev_gate.data(), c.copies, c.width,
                              dev_dback.data(), dev_dgate.data());
  cuda::scatter_add_rows(dev_back.data(), dev_rows.data(), c.copies, c.width, dev_dx.data());
  EXPECT_EQ(dev_out.download(), out);  // a copy is exact
  EXPECT_LE(relative_max_error(dev_y.download(), y), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_dback.download(), dback), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_dgate.download(), dgate), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_dx.download(), dx), kFp32Tolerance);
}

TEST_F(MoeKernels, PermuteBf16WithinRounding) {
  const PermuteCase c;
  const auto x = round_to_bf16(random_vector(size_t(c.tokens) * c.width, 80));
  const auto back = round_to_bf16(random_vector(size_t(c.copies) * c.width, 81));
  const auto dy = round_to_bf16(random_vector(size_t(c.tokens) * c.width, 82));
  auto y = random_vector(x.size(), 83), dx = random_vector(x.size(), 84);
  std::vector<float> out(back.size()), dback(back.size()), dgate(c.copies);
  auto dev_rows = on_device(c.rows);
  auto dev_gate = on_device(c.gate), dev_y = on_device(y), dev_dx = on_device(dx);
  auto dev_x = on_device(to_bf16(x)), dev_back = on_device(to_bf16(back)), dev_dy = on_device(to_bf16(dy));
  cuda::DeviceBuffer<bf16> dev_out(out.size()), dev_dback(dback.size());
  cuda::DeviceBuffer<float> dev_dgate(dgate.size());
  moe::gather_rows(x.data(), c.rows.data(), c.copies, c.width, out.data());
  moe::combine_rows(back.data(), c.rows.data(), c.gate.data(), c.copies, c.width, y.data());
  moe::combine_rows_backward(dy.data(), back.data(), c.rows.data(), c.gate.data(), c.copies, c.width, dback.data(),
                             dgate.data());
  moe::scatter_add_rows(back.data(), c.rows.data(), c.copies, c.width, dx.data());
  cuda::gather_rows(dev_x.data(), dev_rows.data(), c.copies, c.width, dev_out.data());
  cuda::combine_rows(dev_back.data(), dev_rows.data(), dev_gate.data(), c.copies, c.width, dev_y.data());
  cuda::combine_rows_backward(dev_dy.data(), dev_back.data(), dev_rows.data(), dev_gate.data(), c.copies, c.width,
                              dev_dback.data(), dev_dgate.data());
  cuda::scatter_add_rows(dev_back.data(), dev_rows.data(), c.copies, c.width, dev_dx.data());
  EXPECT_EQ(to_float(dev_out.download()), out);  // a copy is exact
  EXPECT_LE(relative_max_error(dev_y.download(), y), kFp32Tolerance);  // fp32 accumulators
  expect_bf16_close(dev_dback.download(), dback);
  EXPECT_LE(relative_max_error(dev_dgate.download(), dgate), kFp32Tolerance);
  EXPECT_LE(relative_max_error(dev_dx.download(), dx), kFp32Tolerance);
}

}  // namespace
}  // namespace finemoe::gpu_test
