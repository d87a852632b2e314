// The core guarantee of expert parallelism: on any (world, EP) layout the MoE layer's outputs,
// input gradients, summed parameter gradients, auxiliary loss and token counts equal those of the
// single-rank layer on the same global batch (float64, relative difference <= 1e-10), for both
// routings, routing groups inside a rank and spanning 2 or 4 ranks, dropped tokens and experts
// that receive nothing.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "model/moe/moe_layer.h"
#include "model/moe/routing_group.h"
#include "parallel/process_grid.h"
#include "util/rng.h"

namespace finemoe {
namespace {

struct Case {
  std::string name;
  std::string routing;
  int E, G, group_size, global_seqs, context;
  double capacity_factor = 1.0;
  int top_k = 0;
  bool output_layernorm = false;
  bool expect_drops = false;
  bool expect_idle_expert = false;
};

std::vector<double> random_values(int64_t n, uint64_t key) {
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = 2 * uniform_open(key, i) - 1;
  return v;
}

// max |a - b| / max |b|.
double rel_diff(const double* a, const double* b, int64_t n) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

struct Built {
  Built(const Config& cfg, const MoeComms& comms, int ep_rank, int ep_size)
      : layer(cfg, 0, store, comms, ep_rank, ep_size) {
    store.allocate(17);
  }
  ParameterStore<double> store;
  MoeLayer<double> layer;
};

void run_case(const Case& c) {
  Config cfg;
  cfg.model.d_model = 8;
  cfg.model.init_scale = 1.0;
  cfg.model.activation = "gelu";
  cfg.moe.routing = c.routing;
  cfg.moe.expansion_rate = c.E;
  cfg.moe.granularity = c.G;
  cfg.moe.group_size = c.group_size;
  cfg.moe.capacity_factor = c.capacity_factor;
  cfg.moe.top_k = c.top_k;
  cfg.moe.output_layernorm = c.output_layernorm;
  cfg.moe.aux_loss_weight = 0.05;
  cfg.moe.z_loss_weight = 0.01;
  const int d = cfg.model.d_model, ctx = c.context;

  MpiCommunicator world(MPI_COMM_WORLD);
  const int W = world.size();
  ASSERT_EQ(c.global_seqs % W, 0);
  const int local = c.global_seqs / W;
  const int64_t global_tokens = int64_t(c.global_seqs) * ctx;
  const int64_t local_tokens = int64_t(local) * ctx;
  const auto x = random_values(global_tokens * d, 101);
  const auto dy = random_values(global_tokens * d, 102);

  // The single-rank layer on the whole global batch (every rank computes it).
  Built ref(cfg, MoeComms{}, 0, 1);
  TokenBatch full;
  full.n_seq = c.global_seqs;
  full.context = ctx;
  full.loss_scale = 1.0 / double(global_tokens);
  std::vector<double> y_ref(global_tokens * d), dx_ref(global_tokens * d);
  ref.layer.forward(x.data(), y_ref.data(), full);
  ref.layer.backward(dy.data(), dx_ref.data());
  const auto& ref_stats = ref.layer.stats();
  if (c.expect_drops) {
    ASSERT_GT(ref_stats.assignments_dropped, 0) << c.name;
  }
  if (c.expect_idle_expert) {
    ASSERT_GT(std::count(ref_stats.expert_tokens.begin(), ref_stats.expert_tokens.end(), 0), 0) << c.name;
  }

  const int n_experts = c.E * c.G;
  for (int ep = 1; ep <= W; ep *= 2) {
    if (n_experts % ep) continue;
    SCOPED_TRACE(c.name + ", world " + std::to_string(W) + ", EP " + std::to_string(ep));
    ProcessGrid grid(MPI_COMM_WORLD, ep);
    auto routing = moe::make_routing_group(grid.world(), c.group_size, local);
    Built par(cfg, MoeComms{&grid.expert_group(), routing.get()}, grid.ep_rank(), grid.ep_size());
    TokenBatch batch;
    batch.n_seq = local;
    batch.context = ctx;
    batch.first_global_seq = int64_t(grid.rank()) * local;
    batch.loss_scale = full.loss_scale;
    const int64_t off = batch.first_global_seq * ctx * d;
    std::vector<double> y(local_tokens * d), dx(local_tokens * d);
    par.layer.forward(x.data() + off, y.data(), batch);
    par.layer.backward(dy.data() + off, dx.data());

    EXPECT_LE(rel_diff(y.data(), y_ref.data() + off, local_tokens * d), 1e-10) << "output";
    EXPECT_LE(rel_diff(dx.data(), dx_ref.data() + off, local_tokens * d), 1e-10) << "input gradient";
    const double aux = grid.world().sum(par.layer.aux_loss());
    EXPECT_LE(std::abs(aux - ref.layer.aux_loss()), 1e-10 * std::max(1e-300, std::abs(ref.layer.aux_loss())))
        << "aux loss " << aux << " vs " << ref.layer.aux_loss();

    // Replicated gradients sum over the world; an expert's over the ranks holding its replicas.
    auto& g_rep = par.store.grads(ParamGroup::replicated);
    grid.world().all_reduce_sum(g_rep.data(), g_rep.size());
    EXPECT_LE(rel_diff(g_rep.data(), ref.store.grads(ParamGroup::replicated).data(), int64_t(g_rep.size())),
              1e-10)
        << "replicated parameter gradients";
    auto& g_exp = par.store.grads(ParamGroup::expert);
    grid.data_group().all_reduce_sum(g_exp.data(), g_exp.size());
    for (int i = 0; i < par.store.count(); ++i) {
      const ParamSpec& s = par.store.spec(i);
      if (s.group != ParamGroup::expert) continue;
      const int64_t ref_off = ref.store.offset(i) + s.first_global_expert * s.numel_per_expert();
      EXPECT_LE(rel_diff(g_exp.data() + par.store.offset(i), ref.store.grads(ParamGroup::expert).data() + ref_off,
                         s.numel()),
                1e-10)
          << s.name;
    }

    std::vector<int64_t> tokens = par.layer.stats().expert_tokens;
    grid.world().all_reduce_sum(tokens.data(), tokens.size());
    EXPECT_EQ(tokens, ref_stats.expert_tokens);
    EXPECT_EQ(grid.world().sum(par.layer.stats().assignments_dropped), ref_stats.assignments_dropped);
    EXPECT_EQ(grid.world().sum(par.layer.stats().assignments_requested), ref_stats.assignments_requested);
  }
}

// Global batch of 8 sequences: 8, 4 or 2 per rank on 1, 2 or 4 ranks.
TEST(MoeLayerMpi, ExpertChoiceGroupsInsideRanks) {
  run_case({"expert choice, groups of 2", "expert_choice", 2, 2, 2, 8, 3});
}
TEST(MoeLayerMpi, ExpertChoiceGroupsSpanningRanks) {
  run_case({"expert choice, groups of 8", "expert_choice", 4, 2, 8, 8, 3});
}
TEST(MoeLayerMpi, ExpertChoiceCapacityFactorWithOutputLayerNorm) {
  Case c{"expert choice cf 1.5 + LN", "expert_choice", 4, 2, 4, 8, 3, 1.5};
  c.output_layernorm = true;
  run_case(c);
}
TEST(MoeLayerMpi, TokenChoiceWithDropsSpanningRanks) {
  Case c{"token choice top-2 cf 1, groups of 8", "token_choice", 4, 2, 8, 8, 3, 1.0};
  c.expect_drops = true;
  run_case(c);
}
TEST(MoeLayerMpi, TokenChoiceWithDropsInsideRanks) {
  Case c{"token choice top-1 cf 0.5, groups of 2 + LN", "token_choice", 4, 1, 2, 8, 4, 0.5, 1};
  c.output_layernorm = true;
  c.expect_drops = true;
  run_case(c);
}
TEST(MoeLayerMpi, TokenChoiceDroplessWithIdleExperts) {
  // 16 experts, 8 tokens, top-1: at least half the experts receive nothing.
  Case c{"token choice dropless, idle experts", "token_choice", 8, 2, 4, 4, 2, 0.0, 1};
  c.expect_idle_expert = true;
  run_case(c);
}

}  // namespace
}  // namespace finemoe
