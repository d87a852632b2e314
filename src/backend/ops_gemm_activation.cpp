// ops::gemm_activation and its backward (backend/ops.h): the CPU reference and the dispatch to the
// CUDA backend's fused epilogue.
#include <string>
#include <type_traits>
#include <vector>

#include "backend/cpu/blas.h"
#include "backend/ops.h"
#include "backend/strided_runs.h"
#include "util/check.h"
#ifdef FINEMOE_WITH_CUDA
#include "backend/ops_cuda.h"
#endif

namespace finemoe::ops {
namespace {

std::string g_last_path = "cpu";

void check_shape(int m, int n, int k, int ldc, int batch, const void* c_side, const void* other,
                 const char* what) {
  FINEMOE_CHECK(m >= 0 && n >= 0 && k >= 0 && batch >= 0 && ldc >= n,
                what << ": m " << m << ", n " << n << ", k " << k << ", ldc " << ldc << ", batch " << batch);
  FINEMOE_CHECK(c_side != other, what << ": the result must not overwrite the pre-activation");
}

// As grouped_gemm: with bf16 operands the strided call reads one type, so both copies must exist
// (checked on both backends, so that CPU tests catch what the GPU would refuse).
template <typename T>
void check_operands(const Operand<T>& A, const Operand<T>& B, const char* what) {
  if (bf16_operands()) FINEMOE_CHECK(A.rounded && B.rounded, what << ": an operand without its bf16 copy");
}

// C_i = op(A_i) op(B_i) through the ops the layers call one by one (the reference's arithmetic).
template <typename T>
void products(bool ta, bool tb, int m, int n, int k, const Operand<T>& A, int lda, int64_t sa, const Operand<T>& B,
              int ldb, int64_t sb, T* C, int ldc, int64_t sc, int batch) {
  if (batch == 1) return gemm<T>(ta, tb, m, n, k, T(1), A, lda, B, ldb, T(0), C, ldc);
  std::vector<GemmProblem<T>> problems(static_cast<size_t>(batch));
  for (int i = 0; i < batch; ++i)
    problems[size_t(i)] = {m, n, k, A.at(i * sa), lda, B.at(i * sb), ldb, C + i * sc, ldc};
  grouped_gemm<T>(ta, tb, T(1), problems, T(0));
}

#ifdef FINEMOE_WITH_CUDA
void count_flops(int m, int n, int k, int batch) {
  for (int i = 0; i < batch; ++i) cpu::count_gemm_flops(m, n, k);
}
#endif

}  // namespace

std::string last_gemm_activation_path() { return g_last_path; }

template <typename T>
void gemm_activation(bool ta, bool tb, int m, int n, int k, Operand<T> A, int lda, int64_t sa, Operand<T> B,
                     int ldb, int64_t sb, T* pre, T* out, int ldc, int64_t sc, int batch, cpu::Activation a) {
  check_shape(m, n, k, ldc, batch, out, pre, "gemm_activation");
  check_operands(A, B, "gemm_activation");
#ifdef FINEMOE_WITH_CUDA
  if constexpr (std::is_same_v<T, float>) {
    if (use_device<T>()) {
      count_flops(m, n, k, batch);
      g_last_path = device::gemm_activation(ta, tb, m, n, k, A, lda, sa, B, ldb, sb, pre, out, ldc, sc, batch,
                                            a);
      return;
    }
  } else {
    use_device<T>();
  }
#endif
  if (m == 0 || n == 0 || batch == 0) return;
  products(ta, tb, m, n, k, A, lda, sa, B, ldb, sb, pre, ldc, sc, batch);
  for_each_strided_run(m, n, ldc, sc, batch, [&](int64_t offset, int64_t count) {
    ops::activation_forward<T>(out + offset, pre + offset, count, a);
  });
  g_last_path = "cpu";
}

template <typename T>
void gemm_activation_backward(bool ta, bool tb, int m, int n, int k, Operand<T> A, int lda, int64_t sa,
                              Operand<T> B, int ldb, int64_t sb, const T* pre, T* dpre, int ldc, int64_t sc, int batch,
                              cpu::Activation a) {
  check_shape(m, n, k, ldc, batch, dpre, pre, "gemm_activation_backward");
  check_operands(A, B, "gemm_activation_backward");
#ifdef FINEMOE_WITH_CUDA
  if constexpr (std::is_same_v<T, float>) {
    if (use_device<T>()) {
      count_flops(m, n, k, batch);
      g_last_path =
          device::gemm_activation_backward(ta, tb, m, n, k, A, lda, sa, B, ldb, sb, pre, dpre, ldc, sc, batch, a);
      return;
    }
  } else {
    use_device<T>();
  }
#endif
  if (m == 0 || n == 0 || batch == 0) return;
  products(ta, tb, m, n, k, A, lda, sa, B, ldb, sb, dpre, ldc, sc, batch);
  for_each_strided_run(m, n, ldc, sc, batch, [&](int64_t offset, int64_t count) {
    ops::activation_backward<T>(dpre + offset, pre + offset, dpre + offset, count, a);  // dinp may alias dout
  });
  g_last_path = "cpu";
}

#define FINEMOE_GEMM_ACTIVATION(T)                                                                            \
  template void gemm_activation<T>(bool, bool, int, int, int, Operand<T>, int, int64_t, Operand<T>, int,        \
                                   int64_t, T*, T*, int, int64_t, int, cpu::Activation);                      \
  template void gemm_activation_backward<T>(bool, bool, int, int, int, Operand<T>, int, int64_t, Operand<T>,    \
                                            int, int64_t, const T*, T*, int, int64_t, int, cpu::Activation);
FINEMOE_GEMM_ACTIVATION(float)
FINEMOE_GEMM_ACTIVATION(double)
#undef FINEMOE_GEMM_ACTIVATION

}  // namespace finemoe::ops
