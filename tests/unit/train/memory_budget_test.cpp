// The closed-form memory prediction (train/memory_budget.h) against the model itself: its weights
// are exactly the parameters the model registers on a rank (counted independently from the
// parameter store), and the refusal names the keys of the largest part.
#include <gtest/gtest.h>

#include <chrono>

#include "model/memory_plan.h"
#include "model/model.h"
#include "train/engine.h"
#include "train/memory_budget.h"
#include "util/check.h"

namespace finemoe {
namespace {

template <typename T>
double registered_bytes(const Config& cfg, int ep_rank) {
  ParameterStore<T> store;
  MoeComms no_comms;
  Model<T> model(cfg, store, ffn_factory<T>(cfg, no_comms, ep_rank, cfg.parallel.expert_parallel));
  double n = 0;
  for (int i = 0; i < store.count(); ++i) n += double(store.spec(i).numel());
  return n * sizeof(T);
}

TEST(MemoryBudget, WeightsAreTheRegisteredParametersOfARank) {
  struct Case {
    const char* what;
    bool moe, tied, out_ln;
    std::string routing, precision;
    int E, G, ep;
  };
  for (const Case& c : {Case{"dense fp32", false, true, true, "expert_choice", "fp32", 1, 1, 1},
                        Case{"expert choice fp64", true, true, true, "expert_choice", "fp64", 8, 2, 1},
                        Case{"token choice EP 4, untied", true, false, false, "token_choice", "fp32", 4, 4, 4},
                        Case{"bf16 EP 2", true, true, true, "expert_choice", "bf16", 2, 8, 2}}) {
    SCOPED_TRACE(c.what);
    Config cfg;
    cfg.model.d_model = 32;
    cfg.model.n_blocks = 3;
    cfg.model.n_heads = 4;
    cfg.model.context = 16;
    cfg.model.vocab = 100;
    cfg.model.tied_embeddings = c.tied;
    cfg.moe.enabled = c.moe;
    cfg.moe.expansion_rate = c.E;
    cfg.moe.granularity = c.G;
    cfg.moe.routing = c.routing;
    cfg.moe.output_layernorm = c.out_ln;
    cfg.parallel.expert_parallel = c.ep;
    cfg.train.precision = c.precision;
    const MemoryBudget b = predict_memory(cfg, c.ep);
    const double expected = c.precision == "fp64" ? registered_bytes<double>(cfg, c.ep - 1)
                                                  : registered_bytes<float>(cfg, c.ep - 1);
    EXPECT_EQ(b.weights, expected);
    EXPECT_EQ(b.gradients, expected);
    EXPECT_EQ(b.optimizer, 2 * expected);
    EXPECT_GT(b.activations, 0);
    EXPECT_EQ(b.communication > 0, c.moe && c.ep > 1);  // staged rows: only other ranks' copies
  }
}

TEST(MemoryBudget, RefusalNamesTheKeysOfTheLargestPart) {
  Config cfg;
  cfg.model.n_blocks = 10000000;
  const auto start = std::chrono::steady_clock::now();
  const MemoryBudget b = predict_memory(cfg, 1);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 0.1);
  EXPECT_NO_THROW(check_memory_fits(b, b.total(), "test"));
  EXPECT_NO_THROW(check_memory_fits(b, -1, "unknown"));  // nothing to compare with
  try {
    check_memory_fits(b, b.total() / 2, "half of it");
    ADD_FAILURE() << "no refusal";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("model.n_blocks"), std::string::npos) << what;
    EXPECT_NE(what.find("half of it"), std::string::npos) << what;
  }
  Config wide;
  wide.train.batch_size = 1 << 20;
  try {
    check_memory_fits(predict_memory(wide, 1), 1e9, "1 GB");
    ADD_FAILURE() << "no refusal";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()).find("lower train.micro_batch or train.batch_size"), std::string(e.what()).find("lower "))
        << e.what();
  }
}

// Issue 20: dropless token choice is planned for the rows a rank can receive at worst: with EP
// ranks each sending its tokens * k copies, at most tokens * min(k, n_experts / EP) per source
// (one copy per token and local expert). The refusal says so and names moe.capacity_factor.
TEST(MemoryBudget, DroplessTokenChoiceIsPlannedForItsWorstCaseAndRefusedWithTheBound) {
  Config cfg;
  cfg.moe.routing = "token_choice";
  cfg.moe.capacity_factor = 0;
  cfg.moe.expansion_rate = 8;
  cfg.moe.granularity = 4;  // 32 experts, k = 4
  cfg.train.batch_size = 32;
  cfg.parallel.expert_parallel = 4;
  const int world = 8;  // EP 4 x DP 2: 4 sequences, 256 tokens per rank
  const double tokens = 32.0 / world * cfg.model.context;
  EXPECT_EQ(max_expert_rows(cfg, world), 4 * tokens * std::min(4.0, 32.0 / 4));
  cfg.moe.top_k = 12;  // more than the 8 local experts: one copy per token and local expert
  EXPECT_EQ(max_expert_rows(cfg, world), 4 * tokens * 8);
  const MemoryBudget dropless = predict_memory(cfg, world);
  EXPECT_EQ(dropless.dropless_rows, 4 * tokens * 8);
  Config capped = cfg;
  capped.moe.capacity_factor = 1.0;
  EXPECT_EQ(predict_memory(capped, world).dropless_rows, 0);
  try {
    check_memory_fits(dropless, dropless.total() / 2, "half of it");
    ADD_FAILURE() << "no refusal";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("moe.capacity_factor = 0"), std::string::npos) << what;
    EXPECT_NE(what.find(std::to_string(int64_t(4 * tokens * 8)) + " expert rows per rank and layer"), std::string::npos)
        << what;
  }
}

TEST(MemoryBudget, HostMemoryIsSharedByTheRanksOfANode) {
  std::string where1, where4;
  const double one = host_memory_per_rank(1, &where1), four = host_memory_per_rank(4, &where4);
  ASSERT_GT(one, 0) << "this test needs /proc/meminfo";
  EXPECT_NEAR(four * 4, one, 0.05 * one) << where1 << " / " << where4;
  EXPECT_NE(where4.find("4 ranks"), std::string::npos) << where4;
}

}  // namespace
}  // namespace finemoe
