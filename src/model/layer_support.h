#pragma once
// Small helpers shared by the dense layers.
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "backend/cpu/activation.h"
#include "model/parameters.h"

namespace finemoe {

// The paper's initialisation of a weight matrix: truncated normal, std = sqrt(scale / fan_in).
inline ParamInit fan_in_init(double init_scale, int64_t fan_in) {
  return ParamInit::normal(std::sqrt(init_scale / static_cast<double>(fan_in)));
}

// model.activation ("relu" | "gelu"); anything else is a configuration error.
cpu::Activation parse_activation(const std::string& name);

}  // namespace finemoe
