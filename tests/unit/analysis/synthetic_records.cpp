#include "synthetic_records.h"

#include <cmath>

#include "io/run_record.h"
#include "util/rng.h"

namespace finemoe::analysis::synthetic {

std::vector<Shape> paper_shapes() { return {{256, 4}, {384, 4}, {512, 4}, {512, 8}, {640, 10}, {768, 12}}; }
std::vector<int64_t> paper_granularities() { return {1, 2, 4, 8, 16}; }
std::vector<double> paper_token_budgets() { return {16e9, 33e9, 66e9, 130e9}; }
std::vector<double> wide_token_budgets() { return {8e9, 32e9, 128e9, 512e9}; }

int64_t total_params(const Shape& s, int64_t E) {
  return s.d_model * s.d_model * (E > 0 ? 8 * E + 4 : 12) * s.n_blocks;
}

double normal(uint64_t seed, uint64_t index) {
  const double u1 = uniform_open(seed, 2 * index), u2 = uniform_open(seed, 2 * index + 1);
  return std::sqrt(-2 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

std::string write_record(const std::string& dir, const std::string& name, const Shape& shape, int64_t E,
                         int64_t G, double D, double loss,
                         const std::vector<std::pair<std::string, std::string>>& config) {
  const std::string path = dir + "/" + name + ".h5";
  RunInfo run;
  run.config = config;
  run.command_line = "synthetic";
  run.moe_enabled = E > 0;
  run.backend = "cpu";
  ModelInfo m;
  m.N_total = total_params(shape, E);
  m.N_active = 12 * shape.d_model * shape.d_model * shape.n_blocks;
  m.d_model = shape.d_model;
  m.n_blocks = shape.n_blocks;
  m.E = E;
  m.G = E > 0 ? G : 0;
  m.n_experts = E * G;
  RunRecordWriter w = RunRecordWriter::create(path, run, m, false);
  TrainRow row;
  row.step = 1;
  row.tokens = int64_t(D);
  row.loss = loss;
  row.expert_load.assign(std::size_t(m.n_blocks * m.n_experts), 0);
  w.append_train(row);
  w.complete({loss, int64_t(D), 6.0 * double(m.N_active) * D, 1.0});
  return path;
}

std::vector<Run> make_grid(const LawCoefficients& law, double noise, uint64_t seed,
                           const std::vector<double>& token_budgets) {
  std::vector<Run> runs;
  uint64_t index = 0;
  const int64_t E = law.moe ? 64 : 0;
  for (const Shape& s : paper_shapes()) {
    for (int64_t G : law.moe ? paper_granularities() : std::vector<int64_t>{1}) {
      for (double D : token_budgets) {
        Run r;
        r.moe = law.moe;
        r.N = double(total_params(s, E));
        r.D = D;
        r.G = law.moe ? double(G) : 1.0;
        r.E = E;
        r.d_model = s.d_model;
        r.n_blocks = s.n_blocks;
        r.loss = law.predict(r.N, D, double(G)) * (1 + noise * normal(seed, index++));
        r.path = "run_" + std::to_string(index) + (law.moe ? "_moe" : "_dense");
        runs.push_back(r);
      }
    }
  }
  return runs;
}

std::vector<Run> write_grid(const std::string& dir, const LawCoefficients& law, double noise, uint64_t seed,
                            const std::vector<double>& token_budgets) {
  std::vector<std::string> paths;
  for (const Run& r : make_grid(law, noise, seed, token_budgets)) {
    paths.push_back(write_record(dir, r.path, {r.d_model, r.n_blocks}, r.E, int64_t(r.G), r.D, r.loss));
  }
  const RunSet set = load_runs(paths, LossSource::eval);
  return law.moe ? set.moe : set.dense;
}

}  // namespace finemoe::analysis::synthetic
