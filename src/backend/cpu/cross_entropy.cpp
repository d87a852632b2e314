#include "backend/cpu/cross_entropy.h"

#include <algorithm>
#include <cmath>

namespace finemoe::cpu {

template <typename T>
double softmax_cross_entropy(T* dlogits, const T* logits, const int32_t* targets, int64_t rows, int vocab,
                             T dscale) {
  double loss = 0;
#pragma omp parallel for schedule(static) reduction(+ : loss)
  for (int64_t r = 0; r < rows; ++r) {
    const T* z = logits + r * vocab;
    T mx = z[0];
    for (int i = 1; i < vocab; ++i) mx = std::max(mx, z[i]);
    T sum = 0;
    for (int i = 0; i < vocab; ++i) sum += std::exp(z[i] - mx);
    const T log_sum = std::log(sum);
    const int32_t target = targets[r];
    loss += static_cast<double>(log_sum - (z[target] - mx));
    if (dlogits) {
      // z is read before each element is written, so dlogits may be logits itself.
      T* g = dlogits + r * vocab;
      const T inv = T(1) / sum;
      for (int i = 0; i < vocab; ++i) g[i] = dscale * std::exp(z[i] - mx) * inv;
      g[target] -= dscale;
    }
  }
  return loss;
}

template double softmax_cross_entropy<float>(float*, const float*, const int32_t*, int64_t, int, float);
template double softmax_cross_entropy<double>(double*, const double*, const int32_t*, int64_t, int, double);

}  // namespace finemoe::cpu
