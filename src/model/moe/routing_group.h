#pragma once
// The communicator of a routing group that spans ranks.
#include <memory>

#include "parallel/mpi_communicator.h"

namespace finemoe::moe {

// World ranks hold contiguous slices of seqs_per_rank global sequences in rank order. When
// group_size > seqs_per_rank, a routing group of group_size sequences spans group_size /
// seqs_per_rank consecutive ranks; the returned communicator joins them (rank order kept, so its
// all_gather yields the group's sequences in global order). Otherwise every group is local and
// the result is a communicator of this rank alone. Collective over `world`.
std::unique_ptr<MpiCommunicator> make_routing_group(const MpiCommunicator& world, int group_size,
                                                    int seqs_per_rank);

}  // namespace finemoe::moe
