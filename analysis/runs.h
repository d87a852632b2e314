#pragma once
// Runs for the fit, read from run records: completed records are used, every other record is
// listed with the reason it was left out.
#include <cstdint>
#include <string>
#include <vector>

namespace finemoe::analysis {

enum class LossSource { eval, smoothed_train };
// "eval" | "smoothed_train"; InputError otherwise.
LossSource parse_loss_source(const std::string& text);
std::string to_string(LossSource source);

struct Run {
  std::string path;
  bool moe = true;
  double N = 0;  // total non-embedding parameters (/model N_total)
  double D = 0;  // training tokens (/final tokens)
  double G = 1;  // granularity (1 for dense runs)
  int64_t E = 0;
  int64_t d_model = 0;
  int64_t n_blocks = 0;
  double loss = 0;
};

struct SkippedRecord {
  std::string path;
  std::string state;  // incomplete | failed | unreadable | inconsistent
  std::string reason;
};

struct RunSet {
  std::vector<Run> moe;
  std::vector<Run> dense;
  std::vector<SkippedRecord> skipped;
};

// Record files, directories (searched recursively for *.h5) and glob patterns, sorted and
// without duplicates. InputError when an input matches nothing.
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs);

// Reads the records. A completed record whose loss is NaN, infinite or not positive is an
// InputError naming the record: it is not a run to leave out quietly.
RunSet load_runs(const std::vector<std::string>& paths, LossSource source);

}  // namespace finemoe::analysis
