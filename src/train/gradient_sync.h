#pragma once
// Gradient reduction for world = EP x DP. Every rank's gradients are already scaled by
// 1 / (tokens in the global step), so the gradient of the global mean loss is a plain SUM:
// replicated tensors summed over the world, an expert's tensors (which already hold the tokens
// of its whole expert-parallel group) summed over its data-parallel group. (Averaging the latter
// over DP would leave a factor EP.) A block's reduction starts as soon as its backward is done.
#include <memory>

#include "backend/compute.h"
#include <vector>

#include "model/parameters.h"
#include "parallel/process_grid.h"
#include "train/step_communicators.h"

namespace finemoe {

template <typename T>
class GradientSync {
 public:
  // Replicated tensors are summed over comms.world, expert tensors over comms.data_group; the
  // expert part of the norm over comms.expert_group.
  GradientSync(ParameterStore<T>& store, const StepCommunicators& comms, int n_blocks);

  // Starts the non-blocking reduction of block `block`'s gradients (-1: tensors outside blocks).
  void start_block(int block);
  // Waits for every started reduction, then reduces whatever was not started.
  void finish();
  // Global L2 norm, each tensor counted once (replicated once, each expert once). One host wait.
  double global_norm();
  // The two local sums of squares [replicated, expert] into squares() on the compute backend, without
  // a wait or a reduction (a captured step on one rank: global_norm's first half).
  void compute_squares();
  const double* squares() const { return squares_.data(); }

 private:
  void start_ranges(ParamGroup g, int block, Communicator& comm);

  ParameterStore<T>& store_;
  const StepCommunicators& comms_;
  std::vector<std::pair<int, bool>> started_;  // (block, started) for blocks -1 .. n_blocks-1
  std::vector<std::unique_ptr<PendingCollective>> pending_;
  DeviceBuffer<double> squares_;  // [replicated, expert] sums of squares
};

}  // namespace finemoe
