#pragma once
// Small helpers shared by the dense layers.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "backend/cpu/activation.h"
#include "model/parameters.h"

namespace finemoe {

// The paper's initialisation of a weight matrix: truncated normal, std = sqrt(scale / fan_in).
inline ParamInit fan_in_init(double init_scale, int64_t fan_in) {
  return ParamInit::normal(std::sqrt(init_scale / static_cast<double>(fan_in)));
}

// An FFN's activation: elementwise (relu, gelu, gelu_tanh) or gated (swiglu: the first matrix has
// 2 * hidden columns [gate | up] and the activation maps them to hidden columns).
struct FfnActivation {
  FfnActivation(cpu::Activation a = cpu::Activation::relu) : elementwise(a) {}  // NOLINT: an elementwise one
  static FfnActivation swiglu() {
    FfnActivation a;
    a.gated = true;
    return a;
  }
  cpu::Activation elementwise;
  bool gated = false;
  // Columns of the pre-activation for `hidden` columns of activation.
  int pre_width(int hidden) const { return gated ? 2 * hidden : hidden; }
};

// model.activation ("relu" | "gelu" | "gelu_tanh" | "swiglu"); anything else is a configuration error.
FfnActivation parse_activation(const std::string& name);

// act [rows, hidden] from pre [rows, a.pre_width(hidden)].
template <typename T>
void ffn_activation_forward(T* act, const T* pre, int64_t rows, int hidden, FfnActivation a);
// dpre [rows, pre_width] (overwritten) from pre and dact [rows, hidden]; dpre may alias dact only
// when the activation is elementwise.
template <typename T>
void ffn_activation_backward(T* dpre, const T* pre, const T* dact, int64_t rows, int hidden, FfnActivation a);

}  // namespace finemoe
