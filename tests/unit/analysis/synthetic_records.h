#pragma once
// Synthetic run records for the analysis tests, written with the trainer's RunRecordWriter (same
// schema) from a known law on the paper's grid of shapes, granularities and token budgets.
#include <cstdint>
#include <string>
#include <vector>

#include "runs.h"
#include "scaling_law.h"

namespace finemoe::analysis::synthetic {

struct Shape {
  int64_t d_model, n_blocks;
};
// The paper's six shapes (64x3M ... 64x85M), G in {1..16}, D in {16B, 33B, 66B, 130B}.
std::vector<Shape> paper_shapes();
std::vector<int64_t> paper_granularities();
std::vector<double> paper_token_budgets();
// Four token budgets over a factor of 64 (8B, 32B, 128B, 512B): the paper's 16B-130B (a factor
// of 8) does not separate c from b / D^beta at 1% noise (docs/analysis.md, "Identifiability").
std::vector<double> wide_token_budgets();

// N as the records store it: d^2 (8E + 4) n_blocks (MoE) or 12 d^2 n_blocks (dense).
int64_t total_params(const Shape& s, int64_t E);

// Standard normal draw number `index` of stream `seed` (Box-Muller on counter-based uniforms).
double normal(uint64_t seed, uint64_t index);

// One completed record at dir/name.h5 with /final eval_loss = loss; moe = (E > 0); `config`: the
// record's config.* attributes (none by default, as records before they were read).
std::string write_record(const std::string& dir, const std::string& name, const Shape& shape, int64_t E,
                         int64_t G, double D, double loss,
                         const std::vector<std::pair<std::string, std::string>>& config = {});

// The grid (6 x 5 x 4 = 120 MoE runs at E = 64, or 6 x 4 dense runs) in memory, losses from the
// law times (1 + noise * z); token budgets paper_token_budgets() unless given.
std::vector<Run> make_grid(const LawCoefficients& law, double noise, uint64_t seed,
                           const std::vector<double>& token_budgets = paper_token_budgets());

// The same grid written as records; returns the runs as load_runs reads them back.
std::vector<Run> write_grid(const std::string& dir, const LawCoefficients& law, double noise, uint64_t seed,
                            const std::vector<double>& token_budgets = paper_token_budgets());

}  // namespace finemoe::analysis::synthetic
