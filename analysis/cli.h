#pragma once
// finemoe-analyze's command line: the options every subcommand shares, parsed and checked once
// (cli_options.cpp), and one entry point per subcommand (cli_fit.cpp, cli_optimal.cpp,
// cli_compare.cpp, cli_plan.cpp, cli_next.cpp; main.cpp dispatches).
#include <boost/program_options.hpp>

#include <optional>
#include <string>
#include <vector>

#include "fit.h"
#include "joint_law.h"
#include "optimal.h"

namespace finemoe::analysis::cli {

namespace po = boost::program_options;

extern const char* const kUsage;

// The parsed command line: the subcommand, every option (each subcommand reads its own), and the
// options checked for every subcommand.
struct CommandLine {
  std::string command;  // fit | optimal | compare | plan | next
  po::variables_map vm;
  std::string out_dir;  // --out
  bool json = false;    // --json
  bool joint = false;   // --law joint
  bool joint_fine_grained = true;  // --joint-form fine-grained (else published)
  ExpertTransform transform;       // --e-start, --e-max
};

// argv[1] is the subcommand (checked: InputError naming the allowed ones). Returns nothing after
// printing the usage and options for --help.
std::optional<CommandLine> parse_command_line(int argc, char** argv);

// What optimal, compare and plan share, checked in this order: the FLOPs model (--c-f, --c-r,
// --min-tokens), the granularities searched (--max-g) and the FLOP budgets (--budgets).
struct BudgetOptions {
  FlopsModel flops;
  std::vector<double> granularities;
  std::vector<double> budgets;
};
BudgetOptions budget_options(const po::variables_map& vm);

// A comma-separated list of positive finite numbers; InputError naming the option and the bad item.
std::vector<double> parse_positive_list(const std::string& text, const std::string& option,
                                        const std::string& unit = "", const std::string& when_empty = "empty list");

// The fine-grained laws of --fit FIT.h5 or of a --coefficients preset.
struct Laws {
  std::string source;
  std::optional<LawCoefficients> moe, dense;
  double E = 0;
  std::vector<LawCoefficients> bootstrap;
  bool moe_identified = true, dense_identified = true;
};
Laws laws_from(const po::variables_map& vm);

// A number with 4 significant digits ("%.4g").
std::string human(double v);

int run_fit_command(const CommandLine& cli);
int run_optimal_command(const CommandLine& cli, const BudgetOptions& budget);
int run_compare_command(const CommandLine& cli, const BudgetOptions& budget);
int run_plan_command(const CommandLine& cli, const BudgetOptions& budget);
int run_next_command(const CommandLine& cli);

}  // namespace finemoe::analysis::cli
