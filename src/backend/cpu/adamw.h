#pragma once
#include <cstdint>

namespace finemoe::cpu {

struct AdamWStep {
  double lr = 0;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0;  // decoupled: p -= lr * wd * p
  double grad_scale = 1;    // applied to the gradient first (global-norm clipping)
  int64_t t = 1;            // 1-based step, for bias correction
};

// AdamW (Loshchilov & Hutter) as in torch.optim.AdamW: decay, then the Adam update.
template <typename T>
void adamw_update(T* param, const T* grad, T* m, T* v, int64_t n, const AdamWStep& s);

// Sum of squares (accumulated in double, whatever T is).
template <typename T>
double sum_of_squares(const T* x, int64_t n);

}  // namespace finemoe::cpu
