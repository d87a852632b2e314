#pragma once
// The host-staged path (train.device = cuda, parallel.communicator = mpi): Debian's OpenMPI is not
// CUDA-aware, so tensors in device memory travel device -> host -> MPI -> host -> device through
// explicit, counted transfers (backend/compute.h), each device -> host copy a host wait. Host
// buffers (scalars, counts) go straight to MPI. Several ranks can share one GPU this way; it is
// exempt from the GPU step's zero-wait budget and its waits are counted like any other.
#include <memory>
#include <vector>

#include "parallel/communicator.h"

namespace finemoe {

class HostStagedCommunicator final : public Communicator {
 public:
  explicit HostStagedCommunicator(Communicator& host) : host_(host) {}
  int rank() const override { return host_.rank(); }
  int size() const override { return host_.size(); }
  void barrier() override { host_.barrier(); }
  void all_reduce_sum(void* data, size_t count, DType type) override;
  void all_reduce_max(void* data, size_t count, DType type) override;
  std::unique_ptr<PendingCollective> start_all_reduce_sum(void* data, size_t count, DType type) override;
  void broadcast(void* data, size_t count, DType type, int root) override;
  void all_gather(const void* send, void* recv, size_t count, DType type) override;
  void all_to_all(const void* send, void* recv, size_t count, DType type) override;
  void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                    const std::vector<int64_t>& recv_counts, DType type) override;
  void all_to_all_blocks(const void* send, const BlockLayout& send_layout, void* recv,
                         const BlockLayout& recv_layout, DType type, int64_t unit) override;

 private:
  Communicator& host_;
  std::vector<uint8_t> send_stage_, recv_stage_;
};

}  // namespace finemoe
