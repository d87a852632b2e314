#include "parallel/agreement.h"

namespace finemoe {

std::pair<int, int> lowest_failure(Communicator& comm, bool failed, int exit_code) {
  // The max of -rank is the lowest failing rank; a second reduction carries its exit code.
  const int64_t lowest = -comm.max(failed ? -int64_t(comm.rank()) : -int64_t(comm.size()));
  if (lowest == comm.size()) return {-1, 0};
  const int64_t code = comm.max(int64_t(lowest == comm.rank() ? exit_code : 0));
  return {int(lowest), int(code)};
}

}  // namespace finemoe
