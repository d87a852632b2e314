// finemoe-analyze compare: the MoE and the dense law's optimal losses side by side per FLOP budget.
#include <iostream>

#include "cli.h"
#include "results.h"
#include "util/check.h"

namespace finemoe::analysis::cli {

int run_compare_command(const CommandLine& cli, const BudgetOptions& budget) {
  if (cli.joint) throw InputError("--law joint: only fit, optimal and plan take the joint law");
  const Laws laws = laws_from(cli.vm);
  if (!laws.moe || !laws.dense) {
    throw InputError(laws.source + ": compare needs both a MoE and a dense law (fit MoE and dense records together)");
  }
  CompareReport report;
  report.source = laws.source;
  report.E = laws.E;
  for (double flops : budget.budgets) {
    report.rows.push_back(compare_row(*laws.moe, *laws.dense, laws.E, budget.granularities, flops, budget.flops));
  }
  write_compare_files(cli.out_dir, report);
  if (cli.json) {
    print_compare_json(std::cout, report);
  } else {
    print_compare_table(std::cout, report);
  }
  return 0;
}

}  // namespace finemoe::analysis::cli
