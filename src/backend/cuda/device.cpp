#include "backend/cuda/device.h"

#include <cuda_runtime_api.h>

#include <string>

#include "kernels/cuda_check.h"
#include "parallel/mpi_check.h"
#include "util/check.h"

namespace finemoe::cuda {

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no driver" error for later calls
    return 0;
  }
  return count;
}

int select_device(MPI_Comm world, int device_id) {
  MPI_Comm node = MPI_COMM_NULL;
  MPI_CHECK(MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node));
  int local_rank = 0;
  MPI_CHECK(MPI_Comm_rank(node, &local_rank));
  MPI_CHECK(MPI_Comm_free(&node));
  const int count = cuda_device_count();
  FINEMOE_CHECK(count > 0, "train.device = cuda but no CUDA device is visible to this process");
  if (device_id >= 0 && device_id >= count)
    throw InputError("parallel.device_id = " + std::to_string(device_id) + ": this node has " +
                     std::to_string(count) + " CUDA device(s); expected -1 (node-local rank) or 0.." +
                     std::to_string(count - 1));
  const int device = device_id >= 0 ? device_id : local_rank % count;
  CUDA_CHECK(cudaSetDevice(device));
  return device;
}

}  // namespace finemoe::cuda
