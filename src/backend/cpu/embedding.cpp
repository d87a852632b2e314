#include "backend/cpu/embedding.h"

#include <algorithm>

namespace finemoe::cpu {

template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte, const T* wpe, int n_seq, int context,
                       int d) {
  const int64_t rows = int64_t(n_seq) * context;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* te = wte + int64_t(tokens[r]) * d;
    const T* pe = wpe + (r % context) * d;
    T* y = out + r * d;
    for (int i = 0; i < d; ++i) y[i] = te[i] + pe[i];
  }
}

template <typename T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, int n_seq, int context,
                        int d) {
  // Several rows scatter into the same token row, so threads split the columns instead of the
  // rows: each owns a column chunk of every table (no atomics, a fixed summation order).
  constexpr int kChunk = 64;
  const int chunks = (d + kChunk - 1) / kChunk;
  const int64_t rows = int64_t(n_seq) * context;
#pragma omp parallel for schedule(static)
  for (int c = 0; c < chunks; ++c) {
    const int begin = c * kChunk, end = std::min(d, begin + kChunk);
    for (int64_t r = 0; r < rows; ++r) {
      const T* dy = dout + r * d;
      T* te = dwte + int64_t(tokens[r]) * d;
      T* pe = dwpe + (r % context) * d;
      for (int i = begin; i < end; ++i) {
        te[i] += dy[i];
        pe[i] += dy[i];
      }
    }
  }
}

template void embedding_forward<float>(float*, const int32_t*, const float*, const float*, int, int, int);
template void embedding_forward<double>(double*, const int32_t*, const double*, const double*, int, int,
                                        int);
template void embedding_backward<float>(float*, float*, const float*, const int32_t*, int, int, int);
template void embedding_backward<double>(double*, double*, const double*, const int32_t*, int, int, int);

}  // namespace finemoe::cpu
