#include "train/step_communicators.h"

#include "backend/compute.h"
#include "train/host_staged_communicator.h"
#include "util/check.h"
#ifdef FINEMOE_WITH_CUDA
#include "backend/ops_cuda.h"
#include "parallel/nccl_communicator.h"
#endif

namespace finemoe {

StepCommunicators make_step_communicators(const Config& cfg, ProcessGrid& grid) {
  StepCommunicators c;
  c.world = &grid.world();
  c.expert_group = &grid.expert_group();
  c.data_group = &grid.data_group();
  c.expert_group_host = &grid.expert_group();
  if (cfg.parallel.communicator != "nccl") {
    if (on_device()) {  // host-staged MPI: device tensors are copied through the host explicitly
      for (MpiCommunicator* group : {&grid.world(), &grid.expert_group(), &grid.data_group()})
        c.owned.push_back(std::make_unique<HostStagedCommunicator>(*group));
      c.world = c.owned[0].get();
      c.expert_group = c.owned[1].get();
      c.data_group = c.owned[2].get();
    }
    return c;
  }
  FINEMOE_CHECK(on_device(), "parallel.communicator = nccl needs train.device = cuda");
#ifdef FINEMOE_WITH_CUDA
  const cudaStream_t stream = ops::device::compute_stream();
  for (MpiCommunicator* group : {&grid.world(), &grid.expert_group(), &grid.data_group()})
    c.owned.push_back(std::make_unique<NcclCommunicator>(group->handle(), stream));
  c.world = c.owned[0].get();
  c.expert_group = c.owned[1].get();
  c.data_group = c.owned[2].get();
#endif
  return c;
}

}  // namespace finemoe
