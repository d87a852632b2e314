#pragma once
#include <mpi.h>

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
  using Communicator::all_reduce_sum;

 private:
  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
};

MPI_Datatype mpi_type(DType t);

}  // namespace finemoe
