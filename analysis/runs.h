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
  // The FFN options one scaling law must not mix (issue 20), from the record's config.* attributes
  // (records written before an option existed have its default): e.g.
  // "moe.shared_experts=1 ffn=swiglu moe.balance=bias". See run_variant().
  std::string variant;
};

// The variant of a run from its record's config items: moe.shared_experts, whether the FFN is
// gated (model.activation = swiglu; relu and gelu are not told apart, as before) and, for token
// choice, moe.balance.
std::string run_variant(const std::vector<std::pair<std::string, std::string>>& config, bool moe);

// InputError when `runs` (the runs of one law) hold more than one variant, naming each with a
// record, unless `allow_mixed`.
void check_one_variant(const std::vector<Run>& runs, const std::string& law, bool allow_mixed);

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
