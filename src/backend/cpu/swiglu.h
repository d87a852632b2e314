#pragma once
// The gated SwiGLU activation (Shazeer 2020): per row, inp = [gate | up] (2 * hidden columns),
// out = silu(gate) * up (hidden columns), silu(g) = g * sigmoid(g). The reference of kernels/swiglu.cu.
#include <cstdint>

namespace finemoe::cpu {

// inp [rows, 2 hidden], out [rows, hidden].
template <typename T>
void swiglu_forward(T* out, const T* inp, int64_t rows, int hidden);

// dinp [rows, 2 hidden] (overwritten) from inp [rows, 2 hidden] and dout [rows, hidden]:
// d up = dout silu(g), d gate = dout up silu'(g), silu'(g) = s (1 + g (1 - s)), s = sigmoid(g).
template <typename T>
void swiglu_backward(T* dinp, const T* inp, const T* dout, int64_t rows, int hidden);

}  // namespace finemoe::cpu
