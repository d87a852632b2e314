// finemoe-train: parse and validate the parameters on every rank, build the process grid, then
// train (or print the configuration / a dry-run summary).
#include <cstdio>
#include <exception>
#include <iostream>

#include "config/options.h"
#include "config/validate.h"
#include "parallel/process_grid.h"
#include "train/exit_codes.h"
#include "train/trainer.h"
#include "util/check.h"

namespace {

// Every rank validates; if any rank fails, the lowest failing rank's message is printed once and
// every rank returns the same exit code, so no rank waits in a collective that never comes.
bool agree_on_input(finemoe::Communicator& world, const std::string& error) {
  int failed_rank = error.empty() ? world.size() : world.rank();
  int lowest = -failed_rank;
  lowest = -world.max(lowest);
  if (lowest == world.size()) return true;
  if (world.rank() == lowest)
    std::cerr << "finemoe-train: " << error << (world.size() > 1 ? " [rank " + std::to_string(lowest) + "]" : "")
              << std::endl;
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace finemoe;
  MpiSession mpi(&argc, &argv);
  MpiCommunicator world(MPI_COMM_WORLD);

  CommandLine cli;
  std::string error;
  try {
    cli = parse_command_line(argc, argv);
    if (!cli.help && !cli.print_config) {
      ValidationContext ctx;
      ctx.world_size = world.size();
      ctx.check_data_files = !cli.dry_run;
      ctx.cuda_available = cuda_backend_available();
      validate_config(cli.config, ctx);
    }
  } catch (const InputError& e) {
    error = e.what();
  }
  if (!agree_on_input(world, error)) return kExitBadInput;

  if (cli.help) {
    if (world.rank() == 0) std::cout << cli.help_text << std::flush;
    return kExitOk;
  }
  if (cli.print_config) {
    if (world.rank() == 0) std::cout << config_to_ini(cli.config) << std::flush;
    return kExitOk;
  }

  try {
    ProcessGrid grid(MPI_COMM_WORLD, cli.config.parallel.expert_parallel);
    if (cli.dry_run) return dry_run(cli, grid);
    return run_training(cli, grid);
  } catch (const InputError& e) {
    std::cerr << "finemoe-train: rank " << world.rank() << ": " << e.what() << std::endl;
    MPI_Abort(MPI_COMM_WORLD, kExitBadInput);
  } catch (const std::exception& e) {
    std::cerr << "finemoe-train: rank " << world.rank() << ": fatal: " << e.what() << std::endl;
    MPI_Abort(MPI_COMM_WORLD, kExitFailure);
  }
  return kExitFailure;
}
