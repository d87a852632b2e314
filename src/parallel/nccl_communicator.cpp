#include "parallel/nccl_communicator.h"

#include <algorithm>
#include <string>

#include "kernels/cuda_check.h"
#include "parallel/mpi_check.h"
#include "parallel/nccl_check.h"
#include "util/check.h"

namespace finemoe {

void nccl_fail(ncclResult_t result, const char* call, const char* file, int line) {
  fail_at(file, line, std::string(call) + " failed: " + ncclGetErrorString(result));
}

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::i32: return ncclInt32;
    case DType::i64: return ncclInt64;
    case DType::u8: return ncclUint8;
  }
  FINEMOE_CHECK(false, "unknown DType " << static_cast<int>(t));
}

namespace {

// Device (or managed) memory that NCCL can use directly; anything else is staged.
bool on_device(const void* p) {
  if (!p) return false;
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

// A reduction on the communicator's second stream; wait() (or destruction) orders the main stream
// after it.
class NcclPending final : public PendingCollective {
 public:
  NcclPending(cudaEvent_t done, cudaStream_t stream) : done_(done), stream_(stream) {}
  ~NcclPending() override {
    if (!done_) return;
    cudaStreamWaitEvent(stream_, done_, 0);  // no throw from a destructor
    cudaEventDestroy(done_);
  }
  void wait() override {
    if (!done_) return;
    CUDA_CHECK(cudaStreamWaitEvent(stream_, done_, 0));
    CUDA_CHECK(cudaEventDestroy(done_));
    done_ = nullptr;
  }

 private:
  cudaEvent_t done_;
  cudaStream_t stream_;
};

// A collective that completed before it was returned (host buffers).
class CompletedCollective final : public PendingCollective {
 public:
  void wait() override {}
};

}  // namespace

NcclCommunicator::NcclCommunicator(MPI_Comm comm, cudaStream_t stream) : stream_(stream) {
  int mpi_rank = 0, mpi_size = 1;
  MPI_CHECK(MPI_Comm_rank(comm, &mpi_rank));
  MPI_CHECK(MPI_Comm_size(comm, &mpi_size));
  ncclUniqueId id{};
  if (mpi_rank == 0) NCCL_CHECK(ncclGetUniqueId(&id));
  MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, comm));
  NCCL_CHECK(ncclCommInitRank(&comm_, mpi_size, id, mpi_rank));
  rank_ = mpi_rank;
  size_ = mpi_size;
  CUDA_CHECK(cudaStreamCreateWithFlags(&reduce_stream_, cudaStreamNonBlocking));
}

NcclCommunicator::NcclCommunicator(ncclComm_t comm, cudaStream_t stream) : comm_(comm), stream_(stream) {
  NCCL_CHECK(ncclCommUserRank(comm_, &rank_));
  NCCL_CHECK(ncclCommCount(comm_, &size_));
  CUDA_CHECK(cudaStreamCreateWithFlags(&reduce_stream_, cudaStreamNonBlocking));
}

NcclCommunicator::~NcclCommunicator() {
  if (reduce_stream_) cudaStreamDestroy(reduce_stream_);
  if (comm_) ncclCommDestroy(comm_);
}

std::unique_ptr<NcclCommunicator> NcclCommunicator::split(int color, int key) const {
  ncclComm_t child = nullptr;
  NCCL_CHECK(ncclCommSplit(comm_, color, key, &child, nullptr));
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(child, stream_));
}

uint8_t* NcclCommunicator::stage_in(const void* in, size_t in_bytes, size_t out_bytes) {
  staging_.resize(in_bytes + out_bytes);
  if (in_bytes > 0) CUDA_CHECK(cudaMemcpyAsync(staging_.data(), in, in_bytes, cudaMemcpyDefault, stream_));
  return staging_.data();
}

void NcclCommunicator::stage_out(void* out, size_t offset, size_t out_bytes) {
  if (out_bytes > 0)
    CUDA_CHECK(cudaMemcpyAsync(out, staging_.data() + offset, out_bytes, cudaMemcpyDefault, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void NcclCommunicator::barrier() {
  barrier_token_.resize(1);
  NCCL_CHECK(ncclAllReduce(barrier_token_.data(), barrier_token_.data(), 1, ncclFloat32, ncclSum, comm_, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void NcclCommunicator::all_reduce(void* data, size_t count, DType type, ncclRedOp_t op) {
  if (count == 0) return;
  if (on_device(data)) {
    NCCL_CHECK(ncclAllReduce(data, data, count, nccl_type(type), op, comm_, stream_));
    return;
  }
  const size_t bytes = count * dtype_size(type);
  uint8_t* d = stage_in(data, bytes, 0);
  NCCL_CHECK(ncclAllReduce(d, d, count, nccl_type(type), op, comm_, stream_));
  stage_out(data, 0, bytes);
}

void NcclCommunicator::all_reduce_sum(void* data, size_t count, DType type) { all_reduce(data, count, type, ncclSum); }

void NcclCommunicator::all_reduce_max(void* data, size_t count, DType type) { all_reduce(data, count, type, ncclMax); }

std::unique_ptr<PendingCollective> NcclCommunicator::start_all_reduce_sum(void* data, size_t count, DType type) {
  if (count == 0 || !on_device(data)) {
    all_reduce_sum(data, count, type);
    return std::make_unique<CompletedCollective>();
  }
  cudaEvent_t ready = nullptr, done = nullptr;
  CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(ready, stream_));  // the gradients written so far on the main stream
  CUDA_CHECK(cudaStreamWaitEvent(reduce_stream_, ready, 0));
  CUDA_CHECK(cudaEventDestroy(ready));  // released once the recorded work completes
  NCCL_CHECK(ncclAllReduce(data, data, count, nccl_type(type), ncclSum, comm_, reduce_stream_));
  CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  CUDA_CHECK(cudaEventRecord(done, reduce_stream_));
  return std::make_unique<NcclPending>(done, stream_);
}

void NcclCommunicator::broadcast(void* data, size_t count, DType type, int root) {
  if (count == 0) return;
  if (on_device(data)) {
    NCCL_CHECK(ncclBroadcast(data, data, count, nccl_type(type), root, comm_, stream_));
    return;
  }
  const size_t bytes = count * dtype_size(type);
  uint8_t* d = stage_in(data, bytes, 0);
  NCCL_CHECK(ncclBroadcast(d, d, count, nccl_type(type), root, comm_, stream_));
  stage_out(data, 0, bytes);
}

void NcclCommunicator::all_gather(const void* send, void* recv, size_t count, DType type) {
  if (count == 0) return;
  if (on_device(send) && on_device(recv)) {
    NCCL_CHECK(ncclAllGather(send, recv, count, nccl_type(type), comm_, stream_));
    return;
  }
  const size_t in = count * dtype_size(type), out = in * size_;
  uint8_t* d = stage_in(send, in, out);
  NCCL_CHECK(ncclAllGather(d, d + in, count, nccl_type(type), comm_, stream_));
  stage_out(recv, in, out);
}

void NcclCommunicator::all_to_all(const void* send, void* recv, size_t count, DType type) {
  const std::vector<int64_t> counts(size_, static_cast<int64_t>(count));
  all_to_all_v(send, counts, recv, counts, type);
}

void NcclCommunicator::all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                                    const std::vector<int64_t>& recv_counts, DType type) {
  FINEMOE_CHECK(int(send_counts.size()) == size_ && int(recv_counts.size()) == size_,
                "all_to_all_v needs one count per rank (" << size_ << "), got " << send_counts.size() << " and "
                                                          << recv_counts.size());
  const size_t elem = dtype_size(type);
  int64_t send_total = 0, recv_total = 0;
  for (int r = 0; r < size_; ++r) {
    send_total += send_counts[r];
    recv_total += recv_counts[r];
  }
  const size_t in = size_t(send_total) * elem, out = size_t(recv_total) * elem;
  const bool direct = (send_total == 0 || on_device(send)) && (recv_total == 0 || on_device(recv));
  const uint8_t* s = static_cast<const uint8_t*>(send);
  uint8_t* d = static_cast<uint8_t*>(recv);
  if (!direct) {
    s = stage_in(send, in, out);
    d = staging_.data() + in;
  }
  NCCL_CHECK(ncclGroupStart());
  int64_t send_at = 0, recv_at = 0;
  for (int r = 0; r < size_; ++r) {
    if (send_counts[r] > 0)
      NCCL_CHECK(ncclSend(s + send_at * elem, size_t(send_counts[r]), nccl_type(type), r, comm_, stream_));
    if (recv_counts[r] > 0)
      NCCL_CHECK(ncclRecv(d + recv_at * elem, size_t(recv_counts[r]), nccl_type(type), r, comm_, stream_));
    send_at += send_counts[r];
    recv_at += recv_counts[r];
  }
  NCCL_CHECK(ncclGroupEnd());
  if (!direct) stage_out(recv, in, out);
}

void NcclCommunicator::all_to_all_blocks(const void* send, const BlockLayout& send_layout, void* recv,
                                         const BlockLayout& recv_layout, DType type, int64_t unit) {
  FINEMOE_CHECK(send_layout.first.size() == size_t(size_) + 1 && recv_layout.first.size() == size_t(size_) + 1,
                "all_to_all_blocks needs pieces grouped by " << size_ << " ranks");
  FINEMOE_CHECK(send_layout.pieces(rank_) == recv_layout.pieces(rank_),
                "all_to_all_blocks: " << send_layout.pieces(rank_) << " pieces to self, "
                                      << recv_layout.pieces(rank_) << " from self");
  const size_t unit_bytes = size_t(unit) * dtype_size(type);
  // Extent of each buffer: the end of its last piece.
  int64_t send_end = 0, recv_end = 0;
  for (const auto& b : send_layout.blocks)
    if (b.count > 0) send_end = std::max(send_end, b.offset + b.count);
  for (const auto& b : recv_layout.blocks)
    if (b.count > 0) recv_end = std::max(recv_end, b.offset + b.count);
  const size_t in = size_t(send_end) * unit_bytes, out = size_t(recv_end) * unit_bytes;
  const bool direct = (in == 0 || on_device(send)) && (out == 0 || on_device(recv));
  const uint8_t* s = static_cast<const uint8_t*>(send);
  uint8_t* d = static_cast<uint8_t*>(recv);
  if (!direct) {
    s = stage_in(send, in, out);
    d = staging_.data() + in;
  }
  for (size_t k = 0; k < send_layout.pieces(rank_); ++k) {
    const auto& a = send_layout.piece(rank_, k);
    const auto& b = recv_layout.piece(rank_, k);
    FINEMOE_CHECK(a.count == b.count, "all_to_all_blocks: piece " << k << " to self has " << a.count
                                                                   << " units, received as " << b.count);
    if (a.count > 0)
      CUDA_CHECK(cudaMemcpyAsync(d + size_t(b.offset) * unit_bytes, s + size_t(a.offset) * unit_bytes,
                                 size_t(a.count) * unit_bytes, cudaMemcpyDefault, stream_));
  }
  NCCL_CHECK(ncclGroupStart());
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    for (size_t k = 0; k < send_layout.pieces(r); ++k) {
      const auto& b = send_layout.piece(r, k);
      if (b.count > 0)
        NCCL_CHECK(ncclSend(s + size_t(b.offset) * unit_bytes, size_t(b.count * unit), nccl_type(type), r, comm_,
                            stream_));
    }
    for (size_t k = 0; k < recv_layout.pieces(r); ++k) {
      const auto& b = recv_layout.piece(r, k);
      if (b.count > 0)
        NCCL_CHECK(ncclRecv(d + size_t(b.offset) * unit_bytes, size_t(b.count * unit), nccl_type(type), r, comm_,
                            stream_));
    }
  }
  NCCL_CHECK(ncclGroupEnd());
  if (!direct) {
    for (const auto& b : recv_layout.blocks)
      if (b.count > 0)
        CUDA_CHECK(cudaMemcpyAsync(static_cast<uint8_t*>(recv) + size_t(b.offset) * unit_bytes,
                                   d + size_t(b.offset) * unit_bytes, size_t(b.count) * unit_bytes,
                                   cudaMemcpyDefault, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
}

}  // namespace finemoe
