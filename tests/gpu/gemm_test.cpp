// The cuBLAS wrappers against cpu::gemm: plain, strided-batched, and grouped against the
// per-expert loop, in fp32 (TF32 off) and with bf16 inputs.
#include <iostream>

#include "backend/cpu/blas.h"
#include "backend/cuda/gemm.h"
#include "gpu_test_support.h"

namespace finemoe::gpu_test {
namespace {

using GemmWrappers = GpuTest;

// Row-major storage of op(X) r x c with leading dimension ld (padded), X stored transposed if t.
size_t stored(bool t, int r, int c, int ld) { return size_t(t ? c : r) * ld; }

TEST_F(GemmWrappers, GemmFp32MatchesCpuForEveryTranspose) {
  const int m = 37, n = 29, k = 53;
  cuda::CublasHandle handle;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 2, ldc = n + 5;
      const auto A = random_vector(stored(ta, m, k, lda), 90), B = random_vector(stored(tb, k, n, ldb), 91);
      auto C = random_vector(size_t(m) * ldc, 92);
      auto dev_A = on_device(A), dev_B = on_device(B), dev_C = on_device(C);
      cpu::gemm(ta, tb, m, n, k, 0.75f, A.data(), lda, B.data(), ldb, 0.5f, C.data(), ldc);
      cuda::gemm(handle.get(), ta, tb, m, n, k, 0.75f, dev_A.data(), lda, dev_B.data(), ldb, 0.5f, dev_C.data(), ldc);
      EXPECT_LE(relative_max_error(dev_C.download(), C), kFp32Tolerance) << "trans_a " << ta << ", trans_b " << tb;
    }
  }
}

TEST_F(GemmWrappers, GemmBf16InputsAccumulateInFp32) {
  const int m = 64, n = 48, k = 96;
  cuda::CublasHandle handle;
  const auto A = round_to_bf16(random_vector(size_t(m) * k, 93)), B = round_to_bf16(random_vector(size_t(k) * n, 94));
  std::vector<float> C(size_t(m) * n);
  cpu::gemm(false, false, m, n, k, 1.0f, A.data(), k, B.data(), n, 0.0f, C.data(), n);
  auto dev_A = on_device(to_bf16(A)), dev_B = on_device(to_bf16(B));
  cuda::GemmPrecision p;
  p.inputs = cuda::GemmDType::bf16;
  cuda::DeviceBuffer<float> dev_C(C.size());  // fp32 output: products of bf16 are exact in fp32
  cuda::gemm(handle.get(), false, false, m, n, k, 1.0f, dev_A.data(), k, dev_B.data(), n, 0.0f, dev_C.data(), n, p);
  EXPECT_LE(relative_max_error(dev_C.download(), C), kFp32Tolerance);
  p.output = cuda::GemmDType::bf16;
  cuda::DeviceBuffer<bf16> dev_C16(C.size());
  cuda::gemm(handle.get(), false, false, m, n, k, 1.0f, dev_A.data(), k, dev_B.data(), n, 0.0f, dev_C16.data(), n, p);
  expect_bf16_close(dev_C16.download(), C);
}

TEST_F(GemmWrappers, StridedBatchedMatchesCpuPerBatch) {
  // Expert choice: equal tokens per expert, X [E, rows, d] times W [E, d, h].
  const int batch = 6, m = 24, n = 40, k = 32;
  cuda::CublasHandle handle;
  const auto X = random_vector(size_t(batch) * m * k, 95), W = random_vector(size_t(batch) * k * n, 96);
  std::vector<float> Y(size_t(batch) * m * n);
  for (int e = 0; e < batch; ++e)
    cpu::gemm(false, false, m, n, k, 1.0f, X.data() + size_t(e) * m * k, k, W.data() + size_t(e) * k * n, n, 0.0f,
              Y.data() + size_t(e) * m * n, n);
  auto dev_X = on_device(X), dev_W = on_device(W);
  cuda::DeviceBuffer<float> dev_Y(Y.size());
  cuda::gemm_strided_batched(handle.get(), false, false, m, n, k, 1.0f, dev_X.data(), k, int64_t(m) * k,
                             dev_W.data(), n, int64_t(k) * n, 0.0f, dev_Y.data(), n, int64_t(m) * n, batch);
  EXPECT_LE(relative_max_error(dev_Y.download(), Y), kFp32Tolerance);
}

// Token choice: rows per expert differ (one expert has none). Forward Y_e = X_e W_e (m varies) and
// the weight gradient dW_e += X_e^T dY_e (k varies, zero for the empty expert: C unchanged).
struct ExpertProblems {
  std::vector<int> counts{7, 0, 19, 3, 12};
  int d = 24, h = 40;
  int rows() const {
    int r = 0;
    for (int c : counts) r += c;
    return r;
  }
};

template <typename In>
std::vector<cuda::GemmProblem> forward_problems(const ExpertProblems& e, const In* X, const In* W, float* Y) {
  std::vector<cuda::GemmProblem> problems;
  int row = 0;
  for (size_t j = 0; j < e.counts.size(); ++j) {
    problems.push_back({e.counts[j], e.h, e.d, X + size_t(row) * e.d, e.d, W + j * e.d * e.h, e.h,
                        Y + size_t(row) * e.h, e.h});
    row += e.counts[j];
  }
  return problems;
}

template <typename In>
std::vector<cuda::GemmProblem> weight_grad_problems(const ExpertProblems& e, const In* X, const In* dY, float* dW) {
  std::vector<cuda::GemmProblem> problems;
  int row = 0;
  for (size_t j = 0; j < e.counts.size(); ++j) {
    problems.push_back({e.d, e.h, e.counts[j], X + size_t(row) * e.d, e.d, dY + size_t(row) * e.h, e.h,
                        dW + j * e.d * e.h, e.h});
    row += e.counts[j];
  }
  return problems;
}

template <typename In>
void check_grouped_against_loop(const cuda::GemmPrecision& p, const std::vector<float>& X,
                                const std::vector<float>& W, const std::vector<float>& dY, const ExpertProblems& e) {
  // CPU reference, per expert.
  std::vector<float> Y(size_t(e.rows()) * e.h);
  auto dW = random_vector(W.size(), 97);
  const auto dW0 = dW;
  int row = 0;
  for (size_t j = 0; j < e.counts.size(); ++j) {
    const int c = e.counts[j];
    cpu::gemm(false, false, c, e.h, e.d, 1.0f, X.data() + size_t(row) * e.d, e.d, W.data() + j * e.d * e.h, e.h,
              0.0f, Y.data() + size_t(row) * e.h, e.h);
    cpu::gemm(true, false, e.d, e.h, c, 1.0f, X.data() + size_t(row) * e.d, e.d, dY.data() + size_t(row) * e.h,
              e.h, 1.0f, dW.data() + j * e.d * e.h, e.h);
    row += c;
  }
  cuda::CublasHandle handle;
  std::vector<In> hX(X.size()), hW(W.size()), hdY(dY.size());
  for (size_t i = 0; i < X.size(); ++i) hX[i] = In(X[i]);
  for (size_t i = 0; i < W.size(); ++i) hW[i] = In(W[i]);
  for (size_t i = 0; i < dY.size(); ++i) hdY[i] = In(dY[i]);
  auto dev_X = on_device(hX), dev_W = on_device(hW), dev_dY = on_device(hdY);
  for (auto path : {cuda::GroupedGemmPath::grouped, cuda::GroupedGemmPath::loop}) {
    cuda::GroupedGemm grouped(path);
    cuda::DeviceBuffer<float> dev_Y(Y.size());
    auto dev_dW = on_device(dW0);
    grouped.run(handle.get(), false, false, 1.0f, forward_problems(e, dev_X.data(), dev_W.data(), dev_Y.data()),
                0.0f, p);
    grouped.run(handle.get(), true, false, 1.0f,
                weight_grad_problems(e, dev_X.data(), dev_dY.data(), dev_dW.data()), 1.0f, p);
    const char* name = path == cuda::GroupedGemmPath::grouped ? "grouped" : "loop";
    if (path == cuda::GroupedGemmPath::grouped && grouped.last_path() == cuda::GroupedGemmPath::loop)
      std::cout << "cublasGemmGroupedBatchedEx unsupported here: the grouped path ran the loop\n";
    EXPECT_LE(relative_max_error(dev_Y.download(), Y), kFp32Tolerance) << name;
    EXPECT_LE(relative_max_error(dev_dW.download(), dW), kFp32Tolerance) << name;
  }
}

TEST_F(GemmWrappers, GroupedMatchesPerExpertLoopFp32) {
  const ExpertProblems e;
  const auto X = random_vector(size_t(e.rows()) * e.d, 98), W = random_vector(e.counts.size() * e.d * e.h, 99);
  const auto dY = random_vector(size_t(e.rows()) * e.h, 100);
  check_grouped_against_loop<float>(cuda::GemmPrecision{}, X, W, dY, e);
}

TEST_F(GemmWrappers, GroupedMatchesPerExpertLoopBf16Inputs) {
  const ExpertProblems e;
  const auto X = round_to_bf16(random_vector(size_t(e.rows()) * e.d, 101));
  const auto W = round_to_bf16(random_vector(e.counts.size() * e.d * e.h, 102));
  const auto dY = round_to_bf16(random_vector(size_t(e.rows()) * e.h, 103));
  cuda::GemmPrecision p;
  p.inputs = cuda::GemmDType::bf16;
  check_grouped_against_loop<bf16>(p, X, W, dY, e);
}

}  // namespace
}  // namespace finemoe::gpu_test
