#include "backend/cpu/selection_bias.h"

namespace finemoe::cpu {

template <typename T>
void add_selection_bias(T* scores, const T* probs, const T* bias, int64_t rows, int n_experts) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int e = 0; e < n_experts; ++e) scores[r * n_experts + e] = probs[r * n_experts + e] + bias[e];
}

template <typename T>
void selection_bias_step(T* delta, const int64_t* load, int n_experts, double rate) {
  int64_t total = 0;
  for (int e = 0; e < n_experts; ++e) total += load[e];
  // sign(total / n - load) without rounding: compare total with n * load.
  for (int e = 0; e < n_experts; ++e) {
    const int64_t scaled = load[e] * n_experts;
    delta[e] = scaled < total ? T(rate) : scaled > total ? T(-rate) : T(0);
  }
}

template void add_selection_bias<float>(float*, const float*, const float*, int64_t, int);
template void add_selection_bias<double>(double*, const double*, const double*, int64_t, int);
template void selection_bias_step<float>(float*, const int64_t*, int, double);
template void selection_bias_step<double>(double*, const int64_t*, int, double);

}  // namespace finemoe::cpu
