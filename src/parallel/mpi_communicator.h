#pragma once
#include <mpi.h>

#include <cstdint>
#include <vector>

#include "parallel/communicator.h"

namespace finemoe {

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of comm (freed on destruction) unless it is MPI_COMM_WORLD.
  explicit MpiCommunicator(MPI_Comm comm);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  MPI_Comm handle() const { return comm_; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void barrier() override;
  void all_reduce_sum(void* data, size_t count, DType type) override;
  void all_reduce_max(void* data, size_t count, DType type) override;
  std::unique_ptr<PendingCollective> start_all_reduce_sum(void* data, size_t count, DType type) override;
  void broadcast(void* data, size_t count, DType type, int root) override;
  void all_gather(const void* send, void* recv, size_t count, DType type) override;
  void all_to_all(const void* send, void* recv, size_t count, DType type) override;
  void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                    const std::vector<int64_t>& recv_counts, DType type) override;
  // Point-to-point per peer: one message per non-empty piece when the pieces exchanged with that
  // peer are large (the receiver's copy lands in place; no regroup), else one message per peer,
  // packed / unpacked through scratch where the pieces are not adjacent (fewer messages for
  // small pieces). Both sides take the same choice: it depends only on the pieces' counts.
  void all_to_all_blocks(const void* send, const BlockLayout& send_layout, void* recv,
                         const BlockLayout& recv_layout, DType type, int64_t unit) override;
  using Communicator::all_reduce_sum;

 private:
  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
  std::vector<uint8_t> pack_scratch_, unpack_scratch_;
  std::vector<MPI_Request> requests_;
};

MPI_Datatype mpi_type(DType t);

}  // namespace finemoe
