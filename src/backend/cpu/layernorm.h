#pragma once
// LayerNorm over the last dimension of a row-major [rows, cols] matrix.
#include <cstdint>

namespace finemoe::cpu {

// out = (inp - mean) * rstd * weight + bias per row; mean and rstd ([rows]) are kept for backward.
template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias,
                       int64_t rows, int cols, T eps);

// Accumulates (+=) into dinp [rows, cols], dweight [cols] and dbias [cols].
template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const T* mean, const T* rstd, int64_t rows, int cols);

}  // namespace finemoe::cpu
