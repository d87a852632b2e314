// The memory plan (model/memory_plan.h) against the CPU allocator's measured peak of the same run:
// measured <= predicted <= 1.05 measured for expert choice (static shapes), predicted >= measured
// for token choice (its rows are counted at their worst case), and the closed-form parameter count
// equal to the registry's. The h100-100m model's per-token shape (d_model 768, context 512, 12
// heads, E 8, G 1 and 8) with 2 blocks and 2 sequences (routing groups of 2, so expert choice keeps
// one token per expert and slot: 4 and 32 copies per token, about 1.7 and 2.1 GB); on 2 ranks a
// small expert-parallel case. Each expert-choice and token-choice case runs in fp32 and with bf16
// activation storage (train.precision = bf16: kept activations in 2 bytes, fp32 working copies),
// and with the GPU's bf16 operands as well (the weights' bf16 copy, packed operands).
// Runtime about 70 s on one rank, 152 s with three other builds and tests running (TIMEOUT 600).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "backend/compute.h"
#include "config/options.h"
#include "model/memory_plan.h"
#include "training_harness.h"

namespace finemoe {
namespace {
using namespace test;

struct Measured {
  double peak = 0;
  double predicted = 0;
};

// bf16_operands: the bf16 run as on a GPU (the weights' bf16 copy, operands packed once).
Measured run_one_step(const Config& cfg, const Corpus& corpus, bool bf16_operands = false) {
  ComputeSettings settings;
  if (cfg.train.precision == "bf16") {
    settings.gemm_inputs = GemmInputs::bf16;
    settings.activation_storage = ActivationStorage::bf16;
    settings.bf16_operands = bf16_operands;
  }
  configure_compute(settings);
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  const MemoryUse before = buffer_memory_use();
  EXPECT_EQ(before.live_bytes, 0) << "buffers left over from an earlier case";
  reset_buffer_memory_peak();
  {
    BatchSampler data(corpus.data(), cfg.model.context, cfg.train.seed, kTrainStream);
    ProcessGrid grid(MPI_COMM_WORLD, cfg.parallel.expert_parallel);
    TrainingEngine<float> engine(cfg, grid);
    engine.step(0, 1e-3, data);
    engine.step(1, 1e-3, data);
  }
  configure_compute(ComputeSettings{});
  Measured m;
  m.peak = double(buffer_memory_use().peak_bytes);
  m.predicted = plan_memory(cfg, world, false, settings.bf16_operands).total();
  return m;
}

Config h100_shape(const std::string& routing, int G, const std::string& precision = "fp32") {
  Case c;
  c.routing = routing;
  c.E = 8;
  c.G = G;
  c.group_size = 2;
  c.batch = 2;
  Config cfg = make_config(c, precision);
  cfg.model.d_model = 768;
  cfg.model.n_heads = 12;
  cfg.model.context = 512;
  cfg.model.vocab = kVocab;
  return cfg;
}

int world_size() {
  int w = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &w);
  return w;
}

TEST(MemoryPlan, ExpertChoicePredictionIsATightUpperBound) {
  if (world_size() != 1) GTEST_SKIP() << "the h100-100m shape runs on one rank";
  Corpus corpus;
  for (const char* precision : {"fp32", "bf16", "bf16 operands"})
    for (int G : {1, 8}) {
      const bool operands = std::string(precision) == "bf16 operands";
      const Measured m = run_one_step(h100_shape("expert_choice", G, operands ? "bf16" : precision), corpus, operands);
      EXPECT_LE(m.peak, m.predicted) << precision << " G " << G;
      EXPECT_LE(m.predicted, 1.05 * m.peak) << precision << " G " << G;
      std::printf("[memory] expert choice %s G %d: measured peak %.1f MiB, predicted %.1f MiB (%.4f)\n", precision,
                  G, m.peak / (1 << 20), m.predicted / (1 << 20), m.predicted / m.peak);
    }
}

TEST(MemoryPlan, TokenChoicePredictionBoundsTheMeasuredPeak) {
  if (world_size() != 1) GTEST_SKIP() << "the h100-100m shape runs on one rank";
  Corpus corpus;
  for (const char* precision : {"fp32", "bf16", "bf16 operands"}) {
    const bool operands = std::string(precision) == "bf16 operands";
    const Measured m = run_one_step(h100_shape("token_choice", 8, operands ? "bf16" : precision), corpus, operands);
    EXPECT_LE(m.peak, m.predicted) << precision;
    std::printf("[memory] token choice %s G 8: measured peak %.1f MiB, predicted bound %.1f MiB\n", precision,
                m.peak / (1 << 20), m.predicted / (1 << 20));
  }
}

TEST(MemoryPlan, ExpertParallelPredictionIsATightUpperBound) {
  if (world_size() != 2) GTEST_SKIP() << "the expert-parallel case runs on two ranks";
  Corpus corpus;
  Case c;
  c.batch = 8;
  Config cfg = make_config(c, "fp32");
  cfg.parallel.expert_parallel = 2;
  const Measured m = run_one_step(cfg, corpus);
  EXPECT_LE(m.peak, m.predicted);
  EXPECT_LE(m.predicted, 1.05 * m.peak);
}

// The GPU target of the throughput issue: inputs/gpu/h100-100m.ini (bf16) plans at most 40 GiB per
// rank with the CUDA allowances at G = 1 and 8, and its fp32 storage would not (so the bf16 storage
// is what makes it fit).
TEST(MemoryPlan, H100ModelFitsFortyGiBWithBf16Storage) {
  const std::string file = std::string(FINEMOE_SOURCE_DIR) + "/inputs/gpu/h100-100m.ini";
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  Config cfg = parse_config_text(text.str(), file);
  ASSERT_EQ(cfg.train.precision, "bf16");
  const double GiB = double(1 << 30);
  for (int G : {1, 8}) {
    cfg.moe.granularity = G;
    cfg.train.precision = "bf16";
    const double bf16 = plan_memory(cfg, 1, true).total();
    cfg.train.precision = "fp32";
    const double fp32 = plan_memory(cfg, 1, true).total();
    EXPECT_LE(bf16, 40 * GiB) << "G " << G;
    EXPECT_GT(fp32, 40 * GiB) << "G " << G;
    std::printf("[memory] h100-100m G %d on a GPU: bf16 storage %.2f GiB, fp32 storage %.2f GiB\n", G, bf16 / GiB,
                fp32 / GiB);
  }
}

// The GPU plan's device scratch that the library decides (the review of the CUDA path found it
// missing), against sizes worked out here from the code that allocates it, for the h100-100m
// model: the deterministic scatter-add's three int arrays and CUB's alternate keys and values for
// its largest call (the MoE copies at G = 8), the LayerNorm backward's partial sums (t / 64
// slices of 2 d floats), the CUDA graph's pool only with train.cuda_graph; and at context 16, where
// cuDNN's path outweighs the probabilities, its deterministic backward's bf16 dP matrix as
// cudnn-frontend sizes it on Hopper (b h, T padded to 64 x 128, 2 bytes) beside the bf16 operands
// and statistics. Arithmetic only: well under a second.
TEST(MemoryPlan, GpuPlanCountsKernelScratchCudnnWorkspaceAndGraphPool) {
  const std::string file = std::string(FINEMOE_SOURCE_DIR) + "/inputs/gpu/h100-100m.ini";
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  Config cfg = parse_config_text(text.str(), file);
  cfg.moe.granularity = 8;
  ASSERT_TRUE(cfg.train.cuda_graph);
  const double seqs = cfg.train.micro_batch_size(), T = cfg.model.context, d = cfg.model.d_model;
  const double tokens = seqs * T, copies = tokens * 8;  // expert choice, capacity 1: G copies a token
  auto item = [](const MemoryPlan& plan, const std::string& start) {
    for (const MemoryItem& i : plan.items)
      if (i.name.rfind(start, 0) == 0) return i.bytes;
    return -1.0;
  };
  const MemoryPlan plan = plan_memory(cfg, 1, true);
  const double scratch = item(plan, "scatter-add sort or LayerNorm backward partials");
  EXPECT_GE(scratch, copies * (3 * 4 + 4 + 4));  // keys, copy ids, order; CUB's alternate keys, values
  EXPECT_GE(scratch, (tokens / 64) * 2 * d * 4);
  EXPECT_GE(item(plan, "CUDA graph: memory-node pool"), scratch);
  EXPECT_EQ(item(plan_memory(cfg, 1, false), "scatter-add sort"), -1.0) << "device-only scratch in the CPU plan";
  cfg.train.cuda_graph = false;
  EXPECT_EQ(item(plan_memory(cfg, 1, true), "CUDA graph"), -1.0);

  cfg.model.context = 16;
  const double t16 = seqs * 16, H = cfg.model.n_heads, nb = cfg.model.n_blocks;
  const double probabilities = nb * seqs * H * 16 * 16 * 2 + 2 * seqs * H * 16 * 16 * 4;  // kept bf16; fp32 copies
  const double fused = 16 * t16 * d + seqs * H * 64 * 128 * 2 + nb * seqs * H * 16 * 4;
  const double attention = item(plan_memory(cfg, 1, true), "attention: cuDNN's bf16 operands");
  EXPECT_GE(attention, fused - probabilities);
  std::printf("[memory] h100-100m G 8: kernel scratch %.1f MiB; at context 16 cuDNN beyond the probabilities %.1f "
              "MiB\n", scratch / (1 << 20), attention / (1 << 20));
}

// Issue 20: a shared expert and swiglu experts (and the swiglu dense FFN) on a mid-sized shape
// (d_model 256, context 256, 4 sequences in groups of 2, E 4, G 4 with S 1): the shared experts'
// kept activations and the gated pre-activations are in the plan; fp32 and bf16 activation storage
// (the gated pre-activations kept in bf16, their fp32 working copy).
TEST(MemoryPlan, SharedExpertsAndSwigluPredictionIsATightUpperBound) {
  if (world_size() != 1) GTEST_SKIP() << "runs on one rank";
  Corpus corpus;
  for (const char* precision : {"fp32", "bf16", "bf16 operands"})
  for (const bool moe : {true, false}) {
    const bool operands = std::string(precision) == "bf16 operands";
    Case c;
    c.E = 4;
    c.G = 4;
    c.group_size = 2;
    c.batch = 4;
    c.shared_experts = moe ? 1 : 0;
    c.activation = "swiglu";
    Config cfg = make_config(c, operands ? "bf16" : precision);
    cfg.moe.enabled = moe;
    cfg.model.d_model = 256;
    cfg.model.n_heads = 4;
    cfg.model.context = 256;
    cfg.model.vocab = kVocab;
    const Measured m = run_one_step(cfg, corpus, operands);
    EXPECT_LE(m.peak, m.predicted) << (moe ? "moe " : "dense ") << precision;
    EXPECT_LE(m.predicted, 1.05 * m.peak) << (moe ? "moe " : "dense ") << precision;
    std::printf("[memory] %s swiglu %s: measured peak %.1f MiB, predicted %.1f MiB (%.4f)\n",
                moe ? "expert choice G 4 S 1" : "dense", precision, m.peak / (1 << 20), m.predicted / (1 << 20),
                m.predicted / m.peak);
  }
}

// Issue 20: dropless token choice with loss-free balancing, a shared expert and swiglu (the
// selection-score scratch and the router bias in the plan; rows at their worst case).
TEST(MemoryPlan, DroplessBiasBalancedPredictionBoundsTheMeasuredPeak) {
  if (world_size() != 1) GTEST_SKIP() << "runs on one rank";
  Corpus corpus;
  Case c;
  c.routing = "token_choice";
  c.E = 4;
  c.G = 4;
  c.shared_experts = 1;
  c.activation = "swiglu";
  c.capacity_factor = 0;
  c.balance = "bias";
  c.group_size = 2;
  c.batch = 4;
  Config cfg = make_config(c, "fp32");
  cfg.model.d_model = 256;
  cfg.model.n_heads = 4;
  cfg.model.context = 256;
  cfg.model.vocab = kVocab;
  const Measured m = run_one_step(cfg, corpus);
  EXPECT_LE(m.peak, m.predicted);
  std::printf("[memory] dropless token choice, bias, G 4 S 1 swiglu: measured peak %.1f MiB, predicted bound %.1f MiB\n",
              m.peak / (1 << 20), m.predicted / (1 << 20));
}

TEST(MemoryPlan, ParameterCountEqualsTheRegistry) {
  for (const bool moe : {false, true})
    for (const bool tied : {false, true})
      for (const bool out_ln : {false, true})
        for (const int ep : {1, 2})
          for (const int variant : {0, 1, 2}) {  // 1: issue 20's shared expert and swiglu; 2: bias balance
          Case c;
          if (variant == 1) {
            c.shared_experts = moe ? 1 : 0;
            c.activation = "swiglu";
          }
          if (variant == 2) {
            c.routing = "token_choice";
            c.balance = "bias";
          }
          Config cfg = make_config(c, "fp64");
          cfg.moe.enabled = moe;
          cfg.model.tied_embeddings = tied;
          cfg.moe.output_layernorm = out_ln;
          cfg.parallel.expert_parallel = ep;
          ParameterStore<double> store;
          MoeComms no_comms;
          Model<double> model(cfg, store, ffn_factory<double>(cfg, no_comms, 0, ep));
          double registered = 0;
          for (int i = 0; i < store.count(); ++i) registered += double(store.spec(i).numel());
          EXPECT_EQ(stored_parameters(cfg), registered) << moe << tied << out_ln << ep << variant;
        }
}

}  // namespace
}  // namespace finemoe
