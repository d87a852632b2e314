#pragma once
// Everything besides the parameters that a checkpoint must hold to continue bit-exactly.
#include <cstdint>
#include <vector>

#include "backend/compute.h"
#include "model/parameters.h"

namespace finemoe {

// AdamW moments, laid out exactly like the parameter store's flat buffers (per group).
template <typename T>
struct OptimizerState {
  DeviceBuffer<T> m[2];
  DeviceBuffer<T> v[2];
  void resize_like(const ParameterStore<T>& store) {
    for (int g = 0; g < 2; ++g) {
      const auto n = store.values(static_cast<ParamGroup>(g)).size();
      m[g].assign_zero(n);
      v[g].assign_zero(n);
    }
  }
  DeviceBuffer<T>& first(ParamGroup g) { return m[static_cast<int>(g)]; }
  DeviceBuffer<T>& second(ParamGroup g) { return v[static_cast<int>(g)]; }
};

// The data order is a pure function of (seed, step, global sequence index), so the loader state
// is the step itself; the schedule is a function of the step too.
struct TrainProgress {
  int64_t step = 0;            // optimizer steps completed
  int64_t tokens = 0;          // training tokens consumed (global)
  uint64_t seed = 0;           // train.seed the run started with (resume checks it)
  double wall_time_s = 0;      // training wall time accumulated over restarts
  int64_t restarts = 0;
};

}  // namespace finemoe
