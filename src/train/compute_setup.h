#pragma once
// Chooses this rank's compute backend from train.device / train.precision / parallel.device_id
// (backend/compute.h) before any model memory exists.
#include <string>

#include "config/config.h"
#include "parallel/process_grid.h"

namespace finemoe {

// Collective over grid.world(). Returns what the run record (/meta/rank_devices) and banner call
// this rank's device: "cpu", or "cuda:<index> <name>, attention <path>" with the attention path that
// runs (ops::select_attention: "cudnn-sdpa (cuDNN <version> (<library>), cudnn-frontend <version>)"
// or "cublas (<why not cuDNN>)").
std::string setup_compute(const Config& cfg, ProcessGrid& grid);

}  // namespace finemoe
