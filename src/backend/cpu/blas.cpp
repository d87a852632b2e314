#include "backend/cpu/blas.h"

#include <cblas.h>

#include <atomic>

namespace finemoe::cpu {
namespace {
CBLAS_TRANSPOSE op(bool t) { return t ? CblasTrans : CblasNoTrans; }

constexpr int kCategories = static_cast<int>(FlopCategory::count);
std::atomic<int64_t> g_flops[kCategories];
std::atomic<int> g_category{static_cast<int>(FlopCategory::other)};
}  // namespace

void count_gemm_flops(int m, int n, int k) {
  g_flops[g_category.load(std::memory_order_relaxed)].fetch_add(2 * int64_t(m) * n * k,
                                                                 std::memory_order_relaxed);
}

template <>
void gemm<float>(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  count_gemm_flops(m, n, k);
  cblas_sgemm(CblasRowMajor, op(ta), op(tb), m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <>
void gemm<double>(bool ta, bool tb, int m, int n, int k, double alpha, const double* A, int lda,
                  const double* B, int ldb, double beta, double* C, int ldc) {
  count_gemm_flops(m, n, k);
  cblas_dgemm(CblasRowMajor, op(ta), op(tb), m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

const char* flop_category_name(FlopCategory c) {
  switch (c) {
    case FlopCategory::other: return "other";
    case FlopCategory::attention_projection: return "attention_projection";
    case FlopCategory::attention_scores: return "attention_scores";
    case FlopCategory::ffn: return "ffn";
    case FlopCategory::router: return "router";
    case FlopCategory::head: return "head";
    case FlopCategory::count: break;
  }
  return "unknown";
}

FlopScope::FlopScope(FlopCategory c)
    : previous_(static_cast<FlopCategory>(g_category.exchange(static_cast<int>(c)))) {}
FlopScope::~FlopScope() { g_category.store(static_cast<int>(previous_)); }

int64_t GemmFlops::total() const {
  int64_t t = 0;
  for (int64_t f : by_category) t += f;
  return t;
}

GemmFlops gemm_flops() {
  GemmFlops f;
  for (int i = 0; i < kCategories; ++i) f.by_category[i] = g_flops[i].load();
  return f;
}

void reset_gemm_flops() {
  for (auto& f : g_flops) f.store(0);
}

#ifdef FINEMOE_OPENBLAS
extern "C" {
void openblas_set_num_threads(int);
int openblas_get_num_threads(void);
}
int set_blas_threads(int n) {
  const int previous = openblas_get_num_threads();
  openblas_set_num_threads(n);
  return previous;
}
int blas_threads() { return openblas_get_num_threads(); }
#else
int set_blas_threads(int) { return 1; }
int blas_threads() { return 1; }
#endif

}  // namespace finemoe::cpu
