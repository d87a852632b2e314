#pragma once
// Row-major matrix products through CBLAS.
namespace finemoe::cpu {

// C[m x n] = alpha * op(A) * op(B) + beta * C, all row-major; op(A) is m x k, op(B) is k x n.
template <typename T>
void gemm(bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* A, int lda, const T* B,
          int ldb, T beta, T* C, int ldc);

// Threads BLAS may use inside one call (OpenBLAS); returns the previous setting.
int set_blas_threads(int n);
int blas_threads();

}  // namespace finemoe::cpu
