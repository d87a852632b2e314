#pragma once
// Row-major matrix products through CBLAS, with a count of the FLOPs they perform.
#include <array>
#include <cstdint>

namespace finemoe::cpu {

// C[m x n] = alpha * op(A) * op(B) + beta * C, all row-major; op(A) is m x k, op(B) is k x n.
// Adds 2 m n k to the FLOP count of the current category.
template <typename T>
void gemm(bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* A, int lda, const T* B,
          int ldb, T beta, T* C, int ldc);

// What the GEMM FLOPs were spent on, so the count can be held against the paper's compute model
// (which counts 2 FLOPs per active weight per token forward, 4 backward, plus the router).
enum class FlopCategory : int {
  other = 0,
  attention_projection,  // QKV and output projections
  attention_scores,      // per-head Q K^T and P V (not in the paper's 12 d^2 c_f term)
  ffn,                   // dense FFN or the experts' matrices
  router,
  head,                  // output projection to the vocabulary
  count
};
const char* flop_category_name(FlopCategory c);

// The category later gemm calls (from any thread) count under, until the scope ends. Set it from
// serial code: it is one process-wide setting, not per thread, so OpenMP workers inherit it.
class FlopScope {
 public:
  explicit FlopScope(FlopCategory c);
  ~FlopScope();
  FlopScope(const FlopScope&) = delete;
  FlopScope& operator=(const FlopScope&) = delete;

 private:
  FlopCategory previous_;
};

struct GemmFlops {
  std::array<int64_t, static_cast<int>(FlopCategory::count)> by_category{};
  int64_t operator[](FlopCategory c) const { return by_category[static_cast<int>(c)]; }
  int64_t total() const;
};
// Adds 2 m n k to the current category (for products computed elsewhere: the CUDA backend).
void count_gemm_flops(int m, int n, int k);
// FLOPs of all gemm calls since the last reset (process-wide).
GemmFlops gemm_flops();
void reset_gemm_flops();

// Threads BLAS may use inside one call (OpenBLAS); returns the previous setting.
int set_blas_threads(int n);
int blas_threads();

// Holds BLAS to n threads for a scope: 1 around OpenMP loops that call gemm once per item (the
// per-head attention products), so the two thread pools do not oversubscribe the cores.
class ScopedBlasThreads {
 public:
  explicit ScopedBlasThreads(int n) : previous_(set_blas_threads(n)) {}
  ~ScopedBlasThreads() { set_blas_threads(previous_); }
  ScopedBlasThreads(const ScopedBlasThreads&) = delete;
  ScopedBlasThreads& operator=(const ScopedBlasThreads&) = delete;

 private:
  int previous_;
};

}  // namespace finemoe::cpu
