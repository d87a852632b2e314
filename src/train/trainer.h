#pragma once
#include "config/options.h"
#include "parallel/process_grid.h"

namespace finemoe {

// True when this build has the CUDA backend.
bool cuda_backend_available();

// Trains as configured: resumes from a checkpoint when asked, writes the run record (rank 0),
// checkpoints, evaluates. Returns an exit code (train/exit_codes.h, kExitInterrupted).
int run_training(const CommandLine& cli, ProcessGrid& grid);

// Registers the model's tensors (without allocating them) as rank 0 of `world_size` ranks would,
// and prints parameter counts, FLOPs per token and per step, and the memory each rank needs.
// Not collective. Returns kExitOk.
int dry_run(const CommandLine& cli, int world_size);

}  // namespace finemoe
