#include "backend/cuda/device.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <string>

#include "kernels/cuda_check.h"
#include "parallel/mpi_check.h"
#include "util/check.h"

namespace finemoe::cuda {

std::string cuda_versions() {
  int driver = 0, runtime = 0;
  (void)cudaDriverGetVersion(&driver);
  (void)cudaRuntimeGetVersion(&runtime);
  (void)cudaGetLastError();
  const auto v = [](int x) { return std::to_string(x / 1000) + "." + std::to_string(x % 1000 / 10); };
  return "driver API " + (driver ? v(driver) : std::string("none")) + ", runtime " + v(runtime);
}

bool driver_library_present() {
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return false;
  dlclose(lib);
  return true;
}

int cuda_device_count() {
  if (!driver_library_present()) return 0;
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e == cudaSuccess) return count;
  (void)cudaGetLastError();
  if (e == cudaErrorNoDevice) return 0;
  throw RuntimeFailure(std::string("CUDA: counting devices failed with ") + cudaGetErrorName(e) + " (" +
                       cudaGetErrorString(e) + "); " + cuda_versions() +
                       ". libcuda.so.1 loads, so the driver is installed but not usable: check nvidia-smi, "
                       "CUDA_VISIBLE_DEVICES and the driver/runtime versions");
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
