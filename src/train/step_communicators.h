#pragma once
// The communicators a training step moves tensors with. The CPU backend, and the CUDA backend with
// parallel.communicator = mpi, use the process grid's MPI groups; on CUDA that is the host-staged
// path (Debian's OpenMPI is not CUDA-aware: MPI reads and writes the managed buffers from the host,
// so the device is waited for first), which also lets several ranks share one GPU. With
// parallel.communicator = nccl the same groups are NCCL communicators on the compute stream.
// Host scalars (losses, norms, counters) always go through the grid's MPI communicators.
#include <memory>
#include <vector>

#include "config/config.h"
#include "parallel/communicator.h"
#include "parallel/process_grid.h"

namespace finemoe {

struct StepCommunicators {
  Communicator* world = nullptr;
  Communicator* expert_group = nullptr;
  Communicator* data_group = nullptr;
  // Tensors pass through host MPI while the compute runs on a GPU: wait for it before a collective.
  bool host_staged = false;
  std::vector<std::unique_ptr<Communicator>> owned;
};

// Collective over grid.world(). Call after configure_compute.
StepCommunicators make_step_communicators(const Config& cfg, ProcessGrid& grid);

}  // namespace finemoe
