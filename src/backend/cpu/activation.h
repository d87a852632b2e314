#pragma once
// Elementwise FFN activations.
#include <cstdint>

namespace finemoe::cpu {

// gelu is the exact form x * Phi(x) with the erf (PyTorch's default). gelu_tanh is the tanh
// approximation 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) (PyTorch's approximate='tanh'),
// the form cuBLASLt's GELU epilogues compute (backend/cuda/gemm_epilogue.h).
enum class Activation { relu, gelu, gelu_tanh };

// "relu", "gelu", "gelu_tanh".
const char* activation_name(Activation a);

template <typename T>
void activation_forward(T* out, const T* inp, int64_t n, Activation a);

// dinp = act'(inp) * dout (overwritten). relu'(0) = 0, as in PyTorch.
template <typename T>
void activation_backward(T* dinp, const T* inp, const T* dout, int64_t n, Activation a);

}  // namespace finemoe::cpu
