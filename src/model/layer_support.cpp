#include "model/layer_support.h"

#include "util/check.h"

namespace finemoe {

cpu::Activation parse_activation(const std::string& name) {
  if (name == "relu") return cpu::Activation::relu;
  if (name == "gelu") return cpu::Activation::gelu;
  throw InputError("model.activation = '" + name + "': allowed values are relu, gelu");
}

}  // namespace finemoe
