#pragma once
// The communicators a training step moves tensors with. The CPU backend, and the CUDA backend with
// parallel.communicator = mpi, use the process grid's MPI groups; on CUDA that is the host-staged
// path (Debian's OpenMPI is not CUDA-aware: HostStagedCommunicator copies device tensors through
// the host explicitly), which also lets several ranks share one GPU. With
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
  // The grid's MPI expert group, for host scalars.
  Communicator* expert_group_host = nullptr;
  std::vector<std::unique_ptr<Communicator>> owned;
};

// Collective over grid.world(). Call after configure_compute.
StepCommunicators make_step_communicators(const Config& cfg, ProcessGrid& grid);

}  // namespace finemoe
