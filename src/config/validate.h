#pragma once
#include <string>

#include "config/config.h"

namespace finemoe {

struct ValidationContext {
  int world_size = 0;        // 0 = not known (no layout checks)
  bool check_data_files = true;
  bool cuda_available = false;  // built with the CUDA backend
};

// Range and consistency checks; throws InputError naming the key, the value, where it came
// from and what is allowed.
void validate_config(const Config& cfg, const ValidationContext& ctx);

}  // namespace finemoe
