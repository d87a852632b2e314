// The performance model (src/perf): the exchange and all-reduce terms against their closed forms,
// the step of a dense model against a hand count, and calibration from synthetic JSON files in the
// schema bench/bench_gpu.cpp writes (data/, made from known constants):
//   gpu-peak.json        peak_tflops.bf16 = 700 (tf32 350)
//   gpu-expert-gemm.json bf16 batched/grouped TFLOP/s per G (d_expert = 4096 / G); fp32 rows at 1/10
//   gpu-alltoall.json    4 GPUs; bf16 rows t = 5 us x 3 + bytes x 3/4 / 100 GB/s, f32 rows from
//                        9 us and 50 GB/s; every number rounded to 7 digits as Json::num writes it.
// Runtime < 1 s.
#include <gtest/gtest.h>

#include <cmath>

#include "perf/calibration.h"
#include "perf/perf_model.h"
#include "sweep/allocation.h"
#include "util/check.h"

namespace finemoe::perf {
namespace {

const std::string kData = FINEMOE_PERF_TEST_DATA;

TEST(PerfModel, ExchangeAndAllReduceMatchTheirClosedForms) {
  Machine m;
  m.gpus_per_node = 4;
  m.nv_alpha = 2e-6, m.nv_beta = 100e9, m.ib_alpha = 10e-6, m.ib_beta = 20e9;
  const double B = 64e6;
  EXPECT_EQ(exchange_time(m, 1, B), 0);
  EXPECT_NEAR(exchange_time(m, 4, B), 3 * 2e-6 + B * 3 / 4 / 100e9, 1e-15);
  // EP 16 over 4 nodes: 3 peers over NVLink, 12 over the network.
  EXPECT_NEAR(exchange_time(m, 16, B), 3 * 2e-6 + B * 3 / 16 / 100e9 + 12 * 10e-6 + B * 12 / 16 / 20e9, 1e-15);
  EXPECT_NEAR(allreduce_time(m, 8, B, true), 2 * 7 * 10e-6 + 2.0 * 7 / 8 * B / 20e9, 1e-15);
}

TEST(PerfModel, DenseStepIsTheHandCount) {
  Machine m;
  m.peak = 100e12, m.dense_eff = 0.5, m.overhead = 0.1, m.gpus_per_node = 8;
  ModelShape s;
  s.moe = false, s.d = 512, s.blocks = 4, s.context = 256, s.vocab = 1000, s.batch_tokens = 8192;
  const Prediction p = predict(s, m, 1, 1);
  const double flops_per_token = 24.0 * 512 * 512 * 4 + 12.0 * 256 * 512 * 4 + 6.0 * 512 * 1000 + 48.0 * 512 * 512 * 4;
  EXPECT_NEAR(p.compute_s, 8192 * flops_per_token / 50e12 * 1.1, 1e-12);
  EXPECT_EQ(p.a2a_s, 0);
  EXPECT_NEAR(p.step_s, p.compute_s, 1e-15);  // one device: no all-reduce
}

TEST(PerfModel, BestLayoutIsTheFastestThatFits) {
  Machine m;
  ModelShape s;  // d 1024, 16 blocks, E 64, G 8
  std::vector<Prediction> all;
  const Prediction best = best_layout(s, m, 32, &all);
  ASSERT_GE(all.size(), 3u);
  for (const Prediction& p : all) {
    EXPECT_EQ(32 % p.ep, 0);
    if (p.fits && best.fits) {
      EXPECT_LE(best.step_s, p.step_s);
    }
  }
}

TEST(Calibration, PeakJsonSetsTheDenseEfficiency) {
  Machine m;
  m.peak = 989e12;
  calibrate_from_peak_json(m, kData + "/gpu-peak.json");
  EXPECT_NEAR(m.dense_eff, 700.0 / 989.0, 1e-12);
  EXPECT_NE(m.provenance["dense_eff"].find("gpu-peak"), std::string::npos);
  EXPECT_NE(m.provenance["dense_eff"].find("SYNTHETIC H100"), std::string::npos);
  calibrate_from_peak_json(m, kData + "/gpu-peak.json", "tf32");
  EXPECT_NEAR(m.dense_eff, 350.0 / 989.0, 1e-12);
}

TEST(Calibration, ExpertGemmJsonGivesEfficiencyPerExpertWidth) {
  Machine m;
  m.peak = 1000e12;
  calibrate_from_expert_gemm_json(m, kData + "/gpu-expert-gemm.json");
  ASSERT_EQ(m.expert_eff.size(), 7u);
  EXPECT_EQ(m.expert_eff.front().first, 64);    // G = 64
  EXPECT_NEAR(m.expert_eff.front().second, 0.150, 1e-12);
  EXPECT_EQ(m.expert_eff.back().first, 4096);   // G = 1
  EXPECT_NEAR(m.expert_eff.back().second, 0.600, 1e-12);
  EXPECT_NEAR(expert_efficiency(m, 512), 0.480, 1e-12);  // G = 8, a table point
  // Between points: linear in log d_expert (d 362 is halfway between 256 and 512 in log).
  EXPECT_NEAR(expert_efficiency(m, std::sqrt(256.0 * 512.0)), 0.5 * (0.380 + 0.480), 1e-9);
  calibrate_from_expert_gemm_json(m, kData + "/gpu-expert-gemm.json", "bf16", "grouped");
  EXPECT_NEAR(expert_efficiency(m, 512), 0.430, 1e-12);
  calibrate_from_expert_gemm_json(m, kData + "/gpu-expert-gemm.json", "fp32", "batched");
  EXPECT_NEAR(expert_efficiency(m, 512), 0.048, 1e-12);
}

TEST(Calibration, AllToAllJsonRecoversLatencyAndBandwidth) {
  Machine m;
  calibrate_from_alltoall_json(m, kData + "/gpu-alltoall.json");
  EXPECT_NEAR(m.nv_beta, 100e9, 1e-5 * 100e9);
  EXPECT_NEAR(m.nv_alpha, 5e-6, 1e-3 * 5e-6);
  calibrate_from_alltoall_json(m, kData + "/gpu-alltoall.json", "f32");
  EXPECT_NEAR(m.nv_beta, 50e9, 1e-5 * 50e9);
  EXPECT_NEAR(m.nv_alpha, 9e-6, 1e-3 * 9e-6);
  // The calibrated model predicts the measured exchange it was fitted to (one row: 4 GPUs, EP 4).
  EXPECT_NEAR(exchange_time(m, 4, 1024.0 * 64 / 4 * 1024 * 4), 9e-6 * 3 + 1024.0 * 16 * 1024 * 4 * 3 / 4 / 50e9, 1e-9);
}

TEST(Calibration, DispatchesByBenchFieldAndRefusesOtherFiles) {
  Machine m;
  m.peak = 1000e12;
  calibrate_from_json(m, kData + "/gpu-expert-gemm.json");
  EXPECT_NEAR(expert_efficiency(m, 4096), 0.6, 1e-12);
  EXPECT_THROW(calibrate_from_peak_json(m, kData + "/gpu-alltoall.json"), InputError);  // wrong bench
  EXPECT_THROW(calibrate_from_json(m, kData + "/missing.json"), InputError);
}

TEST(Calibration, AllocationHardwareSetsPeakMemoryAndTiersWithSources) {
  Machine m;
  const sweep::Allocation a =
      sweep::read_allocation(std::string(FINEMOE_SOURCE_DIR) + "/inputs/allocations/nersc-perlmutter-a100-40gb.ini");
  apply_allocation(m, a);
  EXPECT_EQ(m.gpus_per_node, 4);
  EXPECT_EQ(m.peak, 312e12);
  EXPECT_EQ(m.mem_bytes, 40e9);
  EXPECT_NEAR(m.nv_beta, 300e9 * kNvlinkAllToAllEfficiency, 1);
  EXPECT_NEAR(m.ib_beta, 25e9 * kNetworkAllToAllEfficiency, 1);
  EXPECT_NE(m.provenance["mem_bytes"].find("docs.nersc.gov"), std::string::npos) << m.provenance["mem_bytes"];
  EXPECT_NE(m.provenance["ib_beta"].find("unverified"), std::string::npos) << m.provenance["ib_beta"];
  EXPECT_EQ(m.provenance["overhead"], "documented default (docs/performance.md)");
}

}  // namespace
}  // namespace finemoe::perf
