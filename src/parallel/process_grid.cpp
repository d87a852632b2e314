#include "parallel/process_grid.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include "parallel/mpi_check.h"

namespace finemoe {
namespace {

MPI_Comm split(MPI_Comm comm, int color, int key) {
  MPI_Comm out;
  MPI_CHECK(MPI_Comm_split(comm, color, key, &out));
  return out;
}

}  // namespace

ProcessGrid::ProcessGrid(MPI_Comm world, int expert_parallel) {
  MPI_Comm world_dup;
  MPI_CHECK(MPI_Comm_dup(world, &world_dup));
  world_ = std::make_unique<MpiCommunicator>(world_dup);
  const int r = world_->rank();
  ep_ = std::make_unique<MpiCommunicator>(split(world_dup, r / expert_parallel, r));
  dp_ = std::make_unique<MpiCommunicator>(split(world_dup, r % expert_parallel, r));

  MPI_Comm node;
  MPI_CHECK(MPI_Comm_split_type(world_dup, MPI_COMM_TYPE_SHARED, r, MPI_INFO_NULL, &node));
  MPI_CHECK(MPI_Comm_rank(node, &local_rank_));
  MPI_CHECK(MPI_Comm_size(node, &local_size_));
  MPI_CHECK(MPI_Comm_free(&node));

  char name[MPI_MAX_PROCESSOR_NAME];
  int len = 0;
  MPI_CHECK(MPI_Get_processor_name(name, &len));
  host_.assign(name, len);
}

int ProcessGrid::default_threads() const {
  // An explicit OMP_NUM_THREADS (a batch script, a test harness) wins over the core count.
  if (const char* env = std::getenv("OMP_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  return std::max(1, cores / std::max(1, local_size_));
}

MpiSession::MpiSession(int* argc, char*** argv) {
  int provided = 0;
  // MULTIPLE: the watchdog thread (parallel/watchdog.h) talks to the other ranks' watchdogs.
  MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace finemoe
