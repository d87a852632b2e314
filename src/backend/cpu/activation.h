#pragma once
// Elementwise FFN activations.
#include <cstdint>

namespace finemoe::cpu {

// gelu is the exact form x * Phi(x) with the erf (PyTorch's default), not the tanh approximation.
enum class Activation { relu, gelu };

template <typename T>
void activation_forward(T* out, const T* inp, int64_t n, Activation a);

// dinp = act'(inp) * dout (overwritten). relu'(0) = 0, as in PyTorch.
template <typename T>
void activation_backward(T* dinp, const T* inp, const T* dout, int64_t n, Activation a);

}  // namespace finemoe::cpu
