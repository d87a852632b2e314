#pragma once
// Which GPU a rank uses.
#include <mpi.h>

#include <string>

namespace finemoe::cuda {

// Usable CUDA devices: 0 where libcuda.so.1 cannot be loaded (no driver) or the driver reports
// cudaErrorNoDevice; any other CUDA error is a RuntimeFailure naming it with the driver and
// runtime versions (a broken driver must not read as "no GPU").
int cuda_device_count();
// "driver API 13.0, runtime 13.0": for messages.
std::string cuda_versions();

// Selects and sets this rank's device: device_id when >= 0 (parallel.device_id; InputError unless it
// is below the device count), otherwise the rank's index on its node (MPI_COMM_TYPE_SHARED) modulo
// the device count. RuntimeFailure when there is no device. Collective over `world`. Returns the
// device index.
int select_device(MPI_Comm world, int device_id);

}  // namespace finemoe::cuda
