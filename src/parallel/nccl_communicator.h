#pragma once
// Communicator over NCCL for device buffers (one GPU per rank; select the device first,
// backend/cuda/device.h). Bootstrapped over MPI: rank 0's ncclUniqueId is broadcast.
//
// Device buffers (cudaMalloc or managed): every operation is enqueued on stream() and returns
// without waiting for the device, except barrier(), which waits. Host buffers (the dispatcher's
// counts, Communicator::sum) are staged through a device buffer and the call returns with the
// result on the host. start_all_reduce_sum runs on a second stream of this communicator, after the
// work already on stream(); wait() orders stream() after it (the host does not block).
// NCCL serialises the operations of one communicator: overlap of the data-parallel all-reduce with
// expert-parallel exchanges comes from their being on different communicators (split()).
#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <cstdint>
#include <memory>

#include "backend/cuda/device_buffer.h"
#include "parallel/communicator.h"

namespace finemoe {

ncclDataType_t nccl_type(DType t);

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `comm` (which is only used here). `stream` is the caller's (0: the default stream).
  explicit NcclCommunicator(MPI_Comm comm, cudaStream_t stream = 0);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  // ncclCommSplit: the ranks passing the same color form a communicator, ordered by key, sharing
  // this one's stream (expert-parallel and data-parallel groups). Collective over this communicator.
  std::unique_ptr<NcclCommunicator> split(int color, int key) const;

  ncclComm_t handle() const { return comm_; }
  cudaStream_t stream() const { return stream_; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void barrier() override;
  void all_reduce_sum(void* data, size_t count, DType type) override;
  void all_reduce_max(void* data, size_t count, DType type) override;
  std::unique_ptr<PendingCollective> start_all_reduce_sum(void* data, size_t count, DType type) override;
  void broadcast(void* data, size_t count, DType type, int root) override;
  void all_gather(const void* send, void* recv, size_t count, DType type) override;
  void all_to_all(const void* send, void* recv, size_t count, DType type) override;
  // Grouped ncclSend / ncclRecv; the counts must already be known on both sides (exchange them
  // first, e.g. with all_to_all on host counts).
  void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                    const std::vector<int64_t>& recv_counts, DType type) override;
  // Grouped ncclSend / ncclRecv, one per non-empty piece; pieces to and from this rank are
  // device copies on stream(). Host buffers are staged (only the recv pieces are copied back).
  void all_to_all_blocks(const void* send, const BlockLayout& send_layout, void* recv,
                         const BlockLayout& recv_layout, DType type, int64_t unit) override;
  using Communicator::all_reduce_sum;

 private:
  NcclCommunicator(ncclComm_t comm, cudaStream_t stream);
  void all_reduce(void* data, size_t count, DType type, ncclRedOp_t op);
  // Device copies of host buffers: `in_bytes` from `in` at the start of the staging area, room for
  // out_bytes after them. Returns the staging area.
  uint8_t* stage_in(const void* in, size_t in_bytes, size_t out_bytes);
  // Copies out_bytes from the staging area at `offset` to the host and waits for the stream.
  void stage_out(void* out, size_t offset, size_t out_bytes);

  ncclComm_t comm_ = nullptr;
  int rank_ = 0;
  int size_ = 1;
  cudaStream_t stream_ = 0;
  cudaStream_t reduce_stream_ = nullptr;  // owned: start_all_reduce_sum
  cuda::DeviceBuffer<uint8_t> staging_;
  cuda::DeviceBuffer<float> barrier_token_;
};

}  // namespace finemoe
