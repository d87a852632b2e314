#pragma once
// finemoe-bench plan: the performance model of docs/performance.md.
namespace finemoe::bench {
// argv[1] == "plan"; returns the exit code (2 on bad input, via exceptions caught by main).
int run_plan(int argc, char** argv);
}  // namespace finemoe::bench
