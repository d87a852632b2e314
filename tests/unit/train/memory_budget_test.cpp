// The closed-form memory prediction (train/memory_budget.h) against the model itself: its weights
// are exactly the parameters the model registers on a rank (counted independently from the
// parameter store), and the refusal names the keys of the largest part.
#include <gtest/gtest.h>

#include <chrono>

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

TEST(MemoryBudget, HostMemoryIsSharedByTheRanksOfANode) {
  std::string where1, where4;
  const double one = host_memory_per_rank(1, &where1), four = host_memory_per_rank(4, &where4);
  ASSERT_GT(one, 0) << "this test needs /proc/meminfo";
  EXPECT_NEAR(four * 4, one, 0.05 * one) << where1 << " / " << where4;
  EXPECT_NE(where4.find("4 ranks"), std::string::npos) << where4;
}

}  // namespace
}  // namespace finemoe
