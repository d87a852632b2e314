#pragma once
// world = EP x DP. Rank r sits at ep_rank = r % EP within expert-parallel group r / EP (consecutive
// ranks, so the all-to-all stays within a node where possible); the data-parallel group of r
// holds the ranks with the same ep_rank, i.e. the replicas of the same experts.
#include <memory>
#include <string>

#include "parallel/mpi_communicator.h"

namespace finemoe {

class ProcessGrid {
 public:
  // Collective over `world`. expert_parallel must divide the world size (validated earlier).
  ProcessGrid(MPI_Comm world, int expert_parallel);

  MpiCommunicator& world() { return *world_; }
  MpiCommunicator& expert_group() { return *ep_; }
  MpiCommunicator& data_group() { return *dp_; }

  int rank() const { return world_->rank(); }
  int world_size() const { return world_->size(); }
  int ep_size() const { return ep_->size(); }
  int ep_rank() const { return ep_->rank(); }
  int dp_size() const { return dp_->size(); }
  int dp_rank() const { return dp_->rank(); }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  const std::string& host() const { return host_; }

  // Threads per rank when train.threads = 0: OMP_NUM_THREADS when set, else the node's cores
  // shared among its ranks.
  int default_threads() const;

 private:
  std::unique_ptr<MpiCommunicator> world_, ep_, dp_;
  int local_rank_ = 0;
  int local_size_ = 1;
  std::string host_;
};

// MPI_Init_thread / MPI_Finalize for an application's lifetime.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
};

}  // namespace finemoe
