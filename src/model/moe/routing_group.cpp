#include "model/moe/routing_group.h"

#include "parallel/mpi_check.h"
#include "util/check.h"

namespace finemoe::moe {

std::unique_ptr<MpiCommunicator> make_routing_group(const MpiCommunicator& world, int group_size,
                                                    int seqs_per_rank) {
  FINEMOE_CHECK(group_size > 0 && seqs_per_rank > 0,
                "group_size " << group_size << " and seqs_per_rank " << seqs_per_rank << " must be > 0");
  int span = 1;
  if (group_size > seqs_per_rank) {
    FINEMOE_CHECK(group_size % seqs_per_rank == 0, "routing group of " << group_size
                      << " sequences is not a whole number of ranks holding " << seqs_per_rank << " each");
    span = group_size / seqs_per_rank;
    FINEMOE_CHECK(world.size() % span == 0,
                  "routing groups of " << span << " ranks do not tile a world of " << world.size());
  } else {
    FINEMOE_CHECK(seqs_per_rank % group_size == 0, "ranks hold " << seqs_per_rank
                      << " sequences, not a whole number of routing groups of " << group_size);
  }
  MPI_Comm comm;
  MPI_CHECK(MPI_Comm_split(world.handle(), world.rank() / span, world.rank(), &comm));
  return std::make_unique<MpiCommunicator>(comm);
}

}  // namespace finemoe::moe
