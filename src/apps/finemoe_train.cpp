// finemoe-train: parse and validate the parameters on every rank, build the process grid, then
// train (or print the configuration / a dry-run summary).
#include <cstdio>
#include <exception>
#include <iostream>

#include "config/options.h"
#include "config/validate.h"
#include "parallel/agreement.h"
#include "parallel/process_grid.h"
#include "train/exit_codes.h"
#include "train/trainer.h"
#include "util/check.h"

int main(int argc, char** argv) {
  using namespace finemoe;
  MpiSession mpi(&argc, &argv);
  MpiCommunicator world(MPI_COMM_WORLD);

  CommandLine cli;
  try {
    run_agreed(world, [&] {
      cli = parse_command_line(argc, argv);
      if (cli.help || cli.print_config) return;
      ValidationContext ctx;
      ctx.world_size = cli.dry_run_ranks > 0 ? cli.dry_run_ranks : world.size();
      ctx.check_data_files = !cli.dry_run;
      ctx.cuda_available = cuda_backend_available();
      validate_config(cli.config, ctx);
    });
    if (cli.help) {
      if (world.rank() == 0) std::cout << cli.help_text << std::flush;
      return kExitOk;
    }
    if (cli.print_config) {
      if (world.rank() == 0) std::cout << config_to_ini(cli.config) << std::flush;
      return kExitOk;
    }
    if (cli.dry_run) return world.rank() == 0 ? dry_run(cli, cli.dry_run_ranks > 0 ? cli.dry_run_ranks : world.size())
                                              : kExitOk;
    ProcessGrid grid(MPI_COMM_WORLD, cli.config.parallel.expert_parallel);
    return run_training(cli, grid);
  } catch (const AgreedFailure& e) {
    const std::string what = e.what();
    const char* prefix = e.exit_code() != kExitBadInput ? "fatal: " : what.rfind("error", 0) == 0 ? "" : "error: ";
    if (e.reporter())
      std::cerr << "finemoe-train: " << prefix << what
                << (world.size() > 1 ? " [rank " + std::to_string(world.rank()) + "]" : "") << std::endl;
    return e.exit_code();
  } catch (const std::exception& e) {
    // A fault on this rank alone: the others may be inside a collective, so end the whole job.
    std::cerr << "finemoe-train: rank " << world.rank() << ": fatal: " << e.what() << std::endl;
    MPI_Abort(MPI_COMM_WORLD, kExitFailure);
  }
  return kExitFailure;
}
