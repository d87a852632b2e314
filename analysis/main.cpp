// finemoe-analyze: scaling-law fits, compute-optimal configurations and the dense comparison
// from run records (docs/run-record.md describes the records it reads). One file per subcommand
// (cli_*.cpp), the shared options in cli_options.cpp.
#include <iostream>
#include <string>

#include "cli.h"
#include "util/check.h"

using namespace finemoe;
using namespace finemoe::analysis::cli;

namespace {

int run(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::optional<CommandLine> cli = parse_command_line(argc, argv);
  if (!cli) return 0;  // --help: the usage and options were printed
  const std::string& command = cli->command;
  if (command == "fit") return run_fit_command(*cli);
  if (command == "next") return run_next_command(*cli);
  if (cli->vm.count("inputs")) throw InputError(command + " takes no record files (use --fit FIT.h5)");
  const BudgetOptions budget = budget_options(cli->vm);
  if (command == "plan") return run_plan_command(*cli, budget);
  if (command == "optimal") return run_optimal_command(*cli, budget);
  return run_compare_command(*cli, budget);
}

}  // namespace

int main(int argc, char** argv) { return finemoe::run_tool("finemoe-analyze", run, argc, argv); }
