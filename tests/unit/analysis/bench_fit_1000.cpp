// Timing: 1000 synthetic records (random paper-like shapes, G and D, 1% noise) fitted with 100
// bootstrap resamples, held-out and 5-fold validation on 2 threads. The issue asks for under a
// minute on 2 cores. Run: build/tests/bench_fit_1000 [folder for the records]; exit 1 when slower.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "fit.h"
#include "runs.h"
#include "synthetic_records.h"
#include "util/rng.h"

using namespace finemoe;
using namespace finemoe::analysis;

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  const std::string dir = argc > 1 ? argv[1] : (fs::temp_directory_path() / "finemoe_bench_fit_1000").string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  const LawCoefficients truth = law_preset("table1").moe;
  const auto shapes = synthetic::paper_shapes();
  for (uint64_t i = 0; i < 1000; ++i) {
    const synthetic::Shape s = shapes[std::size_t(uniform_open(11, 3 * i) * 6)];
    const int64_t G = int64_t(1) << int64_t(uniform_open(11, 3 * i + 1) * 5);
    const double D = 16e9 * std::pow(130.0 / 16.0, uniform_open(11, 3 * i + 2));
    const double loss =
        truth.predict(double(synthetic::total_params(s, 64)), D, double(G)) * (1 + 0.01 * synthetic::normal(12, i));
    synthetic::write_record(dir, "r" + std::to_string(i), s, 64, G, D, loss);
  }
  const auto start = std::chrono::steady_clock::now();
  const RunSet set = load_runs(expand_inputs({dir}), LossSource::eval);
  FitOptions o;
  o.threads = 2;
  const FitResult fit = fit_law(set.moe, o);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%zu records, %zu bootstrap fits, held-out and 5-fold on 2 threads: %.1f s (limit 60 s)\n",
              fit.n_runs, fit.bootstrap.size(), seconds);
  fs::remove_all(dir);
  return seconds < 60 ? 0 : 1;
}
