#include "backend/cpu/swiglu.h"

#include <cmath>

namespace finemoe::cpu {

template <typename T>
void swiglu_forward(T* out, const T* inp, int64_t rows, int hidden) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* gate = inp + r * 2 * hidden;
    const T* up = gate + hidden;
    T* o = out + r * hidden;
    for (int j = 0; j < hidden; ++j) {
      const T g = gate[j];
      o[j] = g / (T(1) + std::exp(-g)) * up[j];
    }
  }
}

template <typename T>
void swiglu_backward(T* dinp, const T* inp, const T* dout, int64_t rows, int hidden) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* gate = inp + r * 2 * hidden;
    const T* up = gate + hidden;
    const T* dy = dout + r * hidden;
    T* dgate = dinp + r * 2 * hidden;
    T* dup = dgate + hidden;
    for (int j = 0; j < hidden; ++j) {
      const T g = gate[j];
      const T s = T(1) / (T(1) + std::exp(-g));
      dup[j] = dy[j] * g * s;
      dgate[j] = dy[j] * up[j] * s * (T(1) + g * (T(1) - s));
    }
  }
}

template void swiglu_forward<float>(float*, const float*, int64_t, int);
template void swiglu_forward<double>(double*, const double*, int64_t, int);
template void swiglu_backward<float>(float*, const float*, const float*, int64_t, int);
template void swiglu_backward<double>(double*, const double*, const double*, int64_t, int);

}  // namespace finemoe::cpu
