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

// N as the records store it: d^2 (8E + 4) n_blocks (MoE) or 12 d^2 n_blocks (dense).
int64_t total_params(const Shape& s, int64_t E);

// Standard normal draw number `index` of stream `seed` (Box-Muller on counter-based uniforms).
double normal(uint64_t seed, uint64_t index);

// One completed record at dir/name.h5 with /final eval_loss = loss; moe = (E > 0).
std::string write_record(const std::string& dir, const std::string& name, const Shape& shape, int64_t E,
                         int64_t G, double D, double loss);

// The grid (6 x 5 x 4 = 120 MoE runs at E = 64, or 6 x 4 dense runs), losses from the law
// times (1 + noise * z). Returns the runs as load_runs reads them back from the records.
std::vector<Run> write_grid(const std::string& dir, const LawCoefficients& law, double noise, uint64_t seed);

}  // namespace finemoe::analysis::synthetic
