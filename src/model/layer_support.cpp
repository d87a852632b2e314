#include "model/layer_support.h"

#include "backend/ops.h"
#include "util/check.h"

namespace finemoe {

FfnActivation parse_activation(const std::string& name) {
  if (name == "relu") return cpu::Activation::relu;
  if (name == "gelu") return cpu::Activation::gelu;
  if (name == "gelu_tanh") return cpu::Activation::gelu_tanh;
  if (name == "swiglu") return FfnActivation::swiglu();
  throw InputError("model.activation = '" + name + "': allowed values are relu, gelu, gelu_tanh, swiglu");
}

template <typename T>
void ffn_activation_forward(T* act, const T* pre, int64_t rows, int hidden, FfnActivation a) {
  if (a.gated)
    ops::swiglu_forward<T>(act, pre, rows, hidden);
  else
    ops::activation_forward<T>(act, pre, rows * hidden, a.elementwise);
}

template <typename T>
void ffn_activation_backward(T* dpre, const T* pre, const T* dact, int64_t rows, int hidden, FfnActivation a) {
  FINEMOE_CHECK(!a.gated || dpre != dact, "the gated activation's gradient cannot overwrite its input");
  if (a.gated)
    ops::swiglu_backward<T>(dpre, pre, dact, rows, hidden);
  else
    ops::activation_backward<T>(dpre, pre, dact, rows * hidden, a.elementwise);
}

template void ffn_activation_forward<float>(float*, const float*, int64_t, int, FfnActivation);
template void ffn_activation_forward<double>(double*, const double*, int64_t, int, FfnActivation);
template void ffn_activation_backward<float>(float*, const float*, const float*, int64_t, int, FfnActivation);
template void ffn_activation_backward<double>(double*, const double*, const double*, int64_t, int, FfnActivation);

}  // namespace finemoe
