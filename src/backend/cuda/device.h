#pragma once
// Which GPU a rank uses.
#include <mpi.h>

namespace finemoe::cuda {

// Usable CUDA devices; 0 where there is no driver or no device (never throws).
int cuda_device_count();

// Selects and sets this rank's device: device_id when >= 0 (parallel.device_id; InputError unless it
// is below the device count), otherwise the rank's index on its node (MPI_COMM_TYPE_SHARED) modulo
// the device count. RuntimeFailure when there is no device. Collective over `world`. Returns the
// device index.
int select_device(MPI_Comm world, int device_id);

}  // namespace finemoe::cuda
