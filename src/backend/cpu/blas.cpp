#include "backend/cpu/blas.h"

#include <cblas.h>

namespace finemoe::cpu {
namespace {
CBLAS_TRANSPOSE op(bool t) { return t ? CblasTrans : CblasNoTrans; }
}  // namespace

template <>
void gemm<float>(bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda,
                 const float* B, int ldb, float beta, float* C, int ldc) {
  cblas_sgemm(CblasRowMajor, op(ta), op(tb), m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <>
void gemm<double>(bool ta, bool tb, int m, int n, int k, double alpha, const double* A, int lda,
                  const double* B, int ldb, double beta, double* C, int ldc) {
  cblas_dgemm(CblasRowMajor, op(ta), op(tb), m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
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
