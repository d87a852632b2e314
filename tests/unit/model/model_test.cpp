// The whole dense model: a naive forward written independently, finite-difference gradients of
// every parameter (float64), float32 vs float64, causality, the block_done contract, parameter
// counts against the paper's closed forms, and counted GEMM FLOPs against the analytic count.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "backend/cpu/blas.h"
#include "finite_difference.h"
#include "model/dense_ffn.h"
#include "model/model.h"
#include "model/moe/moe_layer.h"
#include "util/check.h"

namespace finemoe {
namespace {
using test::check_gradient;
using test::random_vector;

Config tiny_config(bool tied = true, const std::string& activation = "gelu") {
  Config cfg;
  cfg.model.d_model = 8;
  cfg.model.n_blocks = 2;
  cfg.model.n_heads = 2;
  cfg.model.context = 4;
  cfg.model.vocab = 11;
  cfg.model.activation = activation;
  cfg.model.tied_embeddings = tied;
  cfg.model.init_scale = 1.0;  // larger weights than the paper's 0.1: more curvature for the check
  cfg.moe.enabled = false;
  return cfg;
}

template <typename T>
Model<T> make_dense_model(const Config& cfg, ParameterStore<T>& store) {
  return Model<T>(cfg, store, [&cfg](int b, ParameterStore<T>& s) { return make_dense_ffn<T>(cfg, b, s); });
}

void perturb(ParameterStore<double>& store, uint64_t seed) {
  auto& buffer = store.values(ParamGroup::replicated);
  double* v = buffer.data();  // the CPU backend: compute memory is host memory
  const auto noise = random_vector(buffer.size(), seed, -0.3, 0.3);
  for (size_t i = 0; i < buffer.size(); ++i) v[i] += noise[i];
}

std::vector<int32_t> random_tokens(size_t n, int vocab, uint64_t seed) {
  const auto u = random_vector(n, seed, 0, vocab);
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = std::min(vocab - 1, static_cast<int>(u[i]));
  return t;
}

const double* param(const ParameterStore<double>& store, const std::string& name) {
  for (int i = 0; i < store.count(); ++i)
    if (store.spec(i).name == name) return store.values(store.spec(i).group).data() + store.offset(i);
  ADD_FAILURE() << "no parameter " << name;
  return nullptr;
}

// The model written as plain loops over [token][feature], straight from the definition.
std::vector<double> naive_logits(const Config& cfg, const ParameterStore<double>& store,
                                 const std::vector<int32_t>& tokens, int n_seq, int context) {
  const int d = cfg.model.d_model, V = cfg.model.vocab, H = cfg.model.n_heads, hs = d / H, N = n_seq * context;
  using Rows = std::vector<std::vector<double>>;
  auto layernorm = [&](const Rows& x, const std::string& name) {
    const double *w = param(store, name + ".weight"), *b = param(store, name + ".bias");
    Rows y(N, std::vector<double>(d));
    for (int t = 0; t < N; ++t) {
      double m = 0, v = 0;
      for (double e : x[t]) m += e / d;
      for (double e : x[t]) v += (e - m) * (e - m) / d;
      for (int i = 0; i < d; ++i) y[t][i] = (x[t][i] - m) / std::sqrt(v + 1e-5) * w[i] + b[i];
    }
    return y;
  };
  auto matmul = [&](const Rows& x, const double* w, int out) {  // x [N, in] times w [in, out]
    Rows y(N, std::vector<double>(out, 0));
    for (int t = 0; t < N; ++t)
      for (size_t k = 0; k < x[t].size(); ++k)
        for (int j = 0; j < out; ++j) y[t][j] += x[t][k] * w[k * out + j];
    return y;
  };
  const double *wte = param(store, "embed.token"), *wpe = param(store, "embed.position");
  Rows x(N, std::vector<double>(d));
  for (int t = 0; t < N; ++t)
    for (int i = 0; i < d; ++i) x[t][i] = wte[tokens[t] * d + i] + wpe[(t % context) * d + i];
  for (int b = 0; b < cfg.model.n_blocks; ++b) {
    const std::string p = "blocks." + std::to_string(b) + ".";
    const Rows qkv = matmul(layernorm(x, p + "ln1"), param(store, p + "attn.qkv"), 3 * d);
    Rows heads(N, std::vector<double>(d, 0));
    for (int s = 0; s < n_seq; ++s)
      for (int h = 0; h < H; ++h)
        for (int t = 0; t < context; ++t) {
          const auto& q = qkv[s * context + t];
          std::vector<double> w(t + 1);
          double sum = 0;
          for (int j = 0; j <= t; ++j) {
            double sc = 0;
            for (int i = 0; i < hs; ++i) sc += q[h * hs + i] * qkv[s * context + j][d + h * hs + i];
            sum += (w[j] = std::exp(sc / std::sqrt(double(hs))));
          }
          for (int j = 0; j <= t; ++j)
            for (int i = 0; i < hs; ++i) heads[s * context + t][h * hs + i] += w[j] / sum * qkv[s * context + j][2 * d + h * hs + i];
        }
    const Rows attn = matmul(heads, param(store, p + "attn.out"), d);
    for (int t = 0; t < N; ++t)
      for (int i = 0; i < d; ++i) x[t][i] += attn[t][i];
    Rows hidden = matmul(layernorm(x, p + "ln2"), param(store, p + "ffn.w1"), 4 * d);
    for (auto& row : hidden)
      for (double& e : row) e = cfg.model.activation == "relu" ? std::max(e, 0.0) : 0.5 * e * (1 + std::erf(e / std::sqrt(2.0)));
    const Rows ffn = matmul(hidden, param(store, p + "ffn.w2"), d);
    for (int t = 0; t < N; ++t)
      for (int i = 0; i < d; ++i) x[t][i] += ffn[t][i];
  }
  const Rows xf = layernorm(x, "ln_f");
  std::vector<double> logits(N * V, 0);
  const double* head = cfg.model.tied_embeddings ? wte : param(store, "head.weight");
  for (int t = 0; t < N; ++t)
    for (int v = 0; v < V; ++v)
      for (int i = 0; i < d; ++i)
        logits[t * V + v] += xf[t][i] * (cfg.model.tied_embeddings ? head[v * d + i] : head[i * V + v]);
  return logits;
}

TEST(DenseModel, ForwardMatchesNaiveImplementation) {
  for (bool tied : {true, false}) {
    const Config cfg = tiny_config(tied, tied ? "gelu" : "relu");
    ParameterStore<double> store;
    auto model = make_dense_model(cfg, store);
    store.allocate(5);
    perturb(store, 6);
    const int n_seq = 3, context = 4;
    const auto inputs = random_tokens(n_seq * context, cfg.model.vocab, 7);
    const auto targets = random_tokens(n_seq * context, cfg.model.vocab, 8);
    const double loss = model.forward_loss(inputs.data(), targets.data(), TokenBatch{n_seq, context});
    const auto ref = naive_logits(cfg, store, inputs, n_seq, context);
    EXPECT_LT(test::max_rel_diff(model.logits(), ref.data(), ref.size()), 1e-12) << "tied " << tied;
    double ref_loss = 0;
    for (int t = 0; t < n_seq * context; ++t) {
      double sum = 0;
      for (int v = 0; v < cfg.model.vocab; ++v) sum += std::exp(ref[t * cfg.model.vocab + v]);
      ref_loss += std::log(sum) - ref[t * cfg.model.vocab + targets[t]];
    }
    EXPECT_NEAR(loss, ref_loss, 1e-10 * ref_loss);
  }
}

TEST(DenseModel, EveryParameterGradientMatchesFiniteDifferences) {
  for (const auto& [tied, act] : std::vector<std::pair<bool, std::string>>{{true, "gelu"}, {false, "relu"}}) {
    const Config cfg = tiny_config(tied, act);
    ParameterStore<double> store;
    auto model = make_dense_model(cfg, store);
    store.allocate(9);
    perturb(store, 10);
    TokenBatch batch{2, 4};
    batch.loss_scale = 1.0 / double(batch.tokens());
    const auto inputs = random_tokens(batch.tokens(), cfg.model.vocab, 11);
    const auto targets = random_tokens(batch.tokens(), cfg.model.vocab, 12);
    model.forward_backward(inputs.data(), targets.data(), batch);
    const auto grads = to_host(store.grads(ParamGroup::replicated));
    auto& values = store.values(ParamGroup::replicated);
    auto loss = [&] { return batch.loss_scale * model.forward_loss(inputs.data(), targets.data(), batch); };
    double worst = 0;
    for (int i = 0; i < store.count(); ++i) {
      const ParamSpec& s = store.spec(i);
      const auto e = check_gradient(values.data() + store.offset(i), s.numel(), grads.data() + store.offset(i), loss);
      EXPECT_LT(e.rel_error, 1e-6) << s.name << (tied ? " tied " : " untied ") << act;
      EXPECT_GT(e.max_numeric, 1e-8) << s.name;
      worst = std::max(worst, e.rel_error);
    }
    test::record_error(tied ? "tied_gelu_max_rel_error" : "untied_relu_max_rel_error", worst);
  }
}

TEST(DenseModel, GradientsAccumulateAndScaleWithLossScale) {
  const Config cfg = tiny_config();
  ParameterStore<double> store;
  auto model = make_dense_model(cfg, store);
  store.allocate(13);
  TokenBatch batch{2, 4};
  const auto inputs = random_tokens(batch.tokens(), cfg.model.vocab, 14);
  const auto targets = random_tokens(batch.tokens(), cfg.model.vocab, 15);
  batch.loss_scale = 0.5;
  const double l1 = model.forward_backward(inputs.data(), targets.data(), batch);
  const auto once = to_host(store.grads(ParamGroup::replicated));
  batch.loss_scale = 1.0;  // a second micro-batch with twice the scale: total = 3 x the first
  const double l2 = model.forward_backward(inputs.data(), targets.data(), batch);
  EXPECT_EQ(l1, l2);  // the loss is the unscaled sum
  const auto total = to_host(store.grads(ParamGroup::replicated));
  for (size_t i = 0; i < once.size(); ++i) EXPECT_NEAR(total[i], 3 * once[i], 1e-12 * (1 + std::abs(once[i])));
}

TEST(DenseModel, BlockDoneComesInReverseOrderWithFinalGradients) {
  const Config cfg = tiny_config();
  ParameterStore<double> store;
  auto model = make_dense_model(cfg, store);
  store.allocate(16);
  TokenBatch batch{2, 4};
  const auto inputs = random_tokens(batch.tokens(), cfg.model.vocab, 17);
  const auto targets = random_tokens(batch.tokens(), cfg.model.vocab, 18);
  std::vector<int> order;
  std::map<int, std::vector<double>> at_callback;
  model.forward_backward(inputs.data(), targets.data(), batch, [&](int b) {
    order.push_back(b);
    const auto g = to_host(store.grads(ParamGroup::replicated));
    for (const auto& [begin, end] : store.block_ranges(ParamGroup::replicated, b))
      at_callback[b].insert(at_callback[b].end(), g.begin() + begin, g.begin() + end);
  });
  EXPECT_EQ(order, (std::vector<int>{1, 0, -1}));
  int64_t covered = 0;
  for (const auto& [b, snapshot] : at_callback) {
    const auto g = to_host(store.grads(ParamGroup::replicated));
    std::vector<double> now;
    for (const auto& [begin, end] : store.block_ranges(ParamGroup::replicated, b)) {
      now.insert(now.end(), g.begin() + begin, g.begin() + end);
      covered += end - begin;
    }
    EXPECT_EQ(snapshot, now) << "block " << b;
  }
  EXPECT_EQ(covered, int64_t(store.grads(ParamGroup::replicated).size()));  // the ranges cover every tensor
}

TEST(DenseModel, IsCausal) {
  const Config cfg = tiny_config();
  ParameterStore<double> store;
  auto model = make_dense_model(cfg, store);
  store.allocate(19);
  const TokenBatch batch{2, 4};
  auto inputs = random_tokens(batch.tokens(), cfg.model.vocab, 20);
  const auto targets = random_tokens(batch.tokens(), cfg.model.vocab, 21);
  const int V = cfg.model.vocab;
  model.forward_loss(inputs.data(), targets.data(), batch);
  const std::vector<double> before(model.logits(), model.logits() + batch.tokens() * V);
  const int changed = 2;  // position 2 of sequence 0
  inputs[changed] = (inputs[changed] + 1) % V;
  model.forward_loss(inputs.data(), targets.data(), batch);
  for (int t = 0; t < batch.tokens(); ++t) {
    const bool affected = t >= changed && t < batch.context;
    const bool same = std::equal(before.begin() + t * V, before.begin() + (t + 1) * V, model.logits() + t * V);
    EXPECT_EQ(same, !affected) << "token " << t;
  }
}

TEST(DenseModel, Float32AgreesWithFloat64) {
  Config cfg = tiny_config();
  cfg.model.d_model = 16;
  cfg.model.context = 8;
  cfg.model.vocab = 32;
  cfg.model.init_scale = 0.1;
  ParameterStore<double> store64;
  ParameterStore<float> store32;
  auto model64 = make_dense_model(cfg, store64);
  auto model32 = make_dense_model(cfg, store32);
  store64.allocate(22);
  store32.allocate(22);  // the same draws, rounded to float
  TokenBatch batch{3, 8};
  batch.loss_scale = 1.0 / double(batch.tokens());
  const auto inputs = random_tokens(batch.tokens(), cfg.model.vocab, 23);
  const auto targets = random_tokens(batch.tokens(), cfg.model.vocab, 24);
  const double l64 = model64.forward_backward(inputs.data(), targets.data(), batch);
  const double l32 = model32.forward_backward(inputs.data(), targets.data(), batch);
  EXPECT_NEAR(l32, l64, 1e-5 * l64);
  const auto g64 = to_host(store64.grads(ParamGroup::replicated));
  const auto g32 = to_host(store32.grads(ParamGroup::replicated));
  for (int i = 0; i < store64.count(); ++i) {
    const double e = test::max_rel_diff(g32.data() + store32.offset(i), g64.data() + store64.offset(i), store64.spec(i).numel());
    EXPECT_LT(e, 1e-4) << store64.spec(i).name;
  }
}

TEST(DenseModel, ParameterNamesShapesAndDecay) {
  Config cfg = tiny_config(false);
  ParameterStore<double> store;
  auto model = make_dense_model(cfg, store);
  const int d = 8;
  std::map<std::string, const ParamSpec*> by_name;
  for (int i = 0; i < store.count(); ++i) by_name[store.spec(i).name] = &store.spec(i);
  auto expect = [&](const std::string& name, std::vector<int64_t> shape, int block, bool decay) {
    ASSERT_TRUE(by_name.count(name)) << name;
    EXPECT_EQ(by_name[name]->shape, shape) << name;
    EXPECT_EQ(by_name[name]->block, block) << name;
    EXPECT_EQ(by_name[name]->weight_decay, decay) << name;
  };
  expect("embed.token", {11, d}, -1, true);
  expect("embed.position", {4, d}, -1, true);
  expect("ln_f.weight", {d}, -1, false);
  expect("ln_f.bias", {d}, -1, false);
  expect("head.weight", {d, 11}, -1, true);
  for (int b = 0; b < 2; ++b) {
    const std::string p = "blocks." + std::to_string(b) + ".";
    expect(p + "ln1.weight", {d}, b, false);
    expect(p + "ln1.bias", {d}, b, false);
    expect(p + "attn.qkv", {d, 3 * d}, b, true);
    expect(p + "attn.out", {d, d}, b, true);
    expect(p + "ln2.weight", {d}, b, false);
    expect(p + "ln2.bias", {d}, b, false);
    expect(p + "ffn.w1", {d, 4 * d}, b, true);
    expect(p + "ffn.w2", {4 * d, d}, b, true);
  }
  EXPECT_EQ(store.count(), 5 + 2 * 8);
}

TEST(DenseModel, InitStdIsSqrtScaleOverFanIn) {
  Config cfg = tiny_config();
  cfg.model.d_model = 64;
  cfg.model.init_scale = 0.1;
  ParameterStore<double> store;
  auto model = make_dense_model(cfg, store);
  store.allocate(25);
  // A normal truncated at +-2 sigma has std 0.8796 sigma.
  const double truncated = 0.87963;
  for (const auto& [name, fan_in] : std::vector<std::pair<std::string, int>>{
           {"blocks.0.attn.qkv", 64}, {"blocks.1.ffn.w1", 64}, {"blocks.1.ffn.w2", 256}, {"embed.token", 64}}) {
    for (int i = 0; i < store.count(); ++i) {
      if (store.spec(i).name != name) continue;
      const double* v = store.values(ParamGroup::replicated).data() + store.offset(i);
      const int64_t n = store.spec(i).numel();
      double sq = 0;
      for (int64_t j = 0; j < n; ++j) sq += v[j] * v[j];
      EXPECT_NEAR(std::sqrt(sq / n) / (truncated * std::sqrt(0.1 / fan_in)), 1.0, 0.03) << name;
    }
  }
}

TEST(ModelCounts, DenseMatchesClosedForms) {
  for (bool tied : {true, false}) {
    Config cfg;
    cfg.moe.enabled = false;
    cfg.model.d_model = 32;
    cfg.model.n_blocks = 3;
    cfg.model.n_heads = 4;
    cfg.model.context = 16;
    cfg.model.vocab = 50;
    cfg.model.tied_embeddings = tied;
    ParameterStore<double> store;
    const ModelCounts c = make_dense_model(cfg, store).counts();
    const int64_t d = 32, L = 3, V = 50, ctx = 16;
    EXPECT_EQ(c.n_total(), 12 * d * d * L);
    EXPECT_EQ(c.n_active(), c.n_total());
    EXPECT_EQ(c.n_router(), 0);
    EXPECT_EQ(c.embedding, V * d + ctx * d);
    EXPECT_EQ(c.n_embedding(), tied ? V * d + ctx * d : 2 * V * d + ctx * d);
    EXPECT_EQ(c.norms, 4 * d * L + 2 * d);
    EXPECT_EQ(c.other, 0);
    EXPECT_EQ(c.flops_per_token(), 6.0 * 12 * d * d * L);
  }
}

// Registers exactly the tensors the MoE layer registers (names, shapes, expert group) for one
// expert-parallel rank, so the counting of expert tensors is tested without the MoE layer itself.
class MoeShapedTensors final : public FeedForwardLayer<double> {
 public:
  MoeShapedTensors(ParameterStore<double>& store, int block, int d, int n_experts, int d_expert, int ep_size) {
    const std::string p = "blocks." + std::to_string(block) + ".moe.";
    const int64_t local = n_experts / ep_size;
    store.add({p + "router", {d, n_experts}, ParamGroup::replicated, ParamInit::normal(0.1), block});
    ParamSpec w1{p + "experts.w1", {local, d, d_expert}, ParamGroup::expert, ParamInit::normal(0.1), block};
    ParamSpec w2{p + "experts.w2", {local, d_expert, d}, ParamGroup::expert, ParamInit::normal(0.1), block};
    store.add(w1);
    store.add(w2);
    store.add({p + "out_ln.weight", {d}, ParamGroup::replicated, ParamInit::ones(), block});
    store.add({p + "out_ln.bias", {d}, ParamGroup::replicated, ParamInit::zeros(), block});
  }
  void forward(const double*, double*, const TokenBatch&) override { FINEMOE_CHECK(false, "shape-only layer"); }
  void backward(const double*, double*) override { FINEMOE_CHECK(false, "shape-only layer"); }
  const FeedForwardStats& stats() override { return stats_; }
  void reset_stats() override {}

 private:
  FeedForwardStats stats_;
};

TEST(ModelCounts, MoeMatchesPaperFormulas) {
  for (const auto& [E, G] : std::vector<std::pair<int, int>>{{8, 1}, {4, 4}, {16, 2}}) {
    for (const std::string routing : {"expert_choice", "token_choice"}) {
      Config cfg;
      cfg.model.d_model = 32;
      cfg.model.n_blocks = 2;
      cfg.model.n_heads = 4;
      cfg.moe.expansion_rate = E;
      cfg.moe.granularity = G;
      cfg.moe.routing = routing;
      const int ep_size = 2;  // this rank holds half the experts
      ParameterStore<double> store;
      Model<double> model(cfg, store, [&](int b, ParameterStore<double>& s) {
        return std::make_unique<MoeShapedTensors>(s, b, cfg.model.d_model, cfg.n_experts(), cfg.d_expert(), ep_size);
      });
      const ModelCounts c = model.counts();
      const double d = 32, L = 2;
      EXPECT_EQ(double(c.n_total()), d * d * (8 * E + 4) * L) << E << " " << G << " " << routing;
      EXPECT_EQ(double(c.n_active()), 12 * d * d * L);
      EXPECT_EQ(double(c.n_router()), d * E * G * L);
      EXPECT_EQ(c.flops_per_token(), (12 * d * d * 6 + d * E * G * 14) * L);
      EXPECT_EQ(c.ffn, 0);
      EXPECT_EQ(double(c.norms), 6 * d * L + 2 * d);  // ln1, ln2, moe.out_ln per block; ln_f
      EXPECT_EQ(c.other, 0);
    }
  }
}

// Issue 20: shared experts and swiglu, counted from the tensors the real layers register, against
// closed forms. With S shared experts (DeepSeekMoE) the routed activation is G - S, so N_active is
// that of the same G without them: 12 d^2 per block for relu, 4 d^2 + 3 G d w(G) for swiglu.
TEST(ModelCounts, SharedExpertsAndSwigluMatchClosedForms) {
  const double d = 32, L = 2;
  for (const std::string activation : {"relu", "swiglu"}) {
    for (const std::string routing : {"expert_choice", "token_choice"}) {
      for (int S : {0, 1, 3}) {
        Config cfg;
        cfg.model.d_model = 32;
        cfg.model.n_blocks = 2;
        cfg.model.n_heads = 4;
        cfg.model.activation = activation;
        cfg.moe.expansion_rate = 2;
        cfg.moe.granularity = 4;
        cfg.moe.shared_experts = S;
        cfg.moe.routing = routing;
        ParameterStore<double> store;
        Model<double> model(cfg, store, [&](int b, ParameterStore<double>& s) {
          return make_moe_layer<double>(cfg, b, s, MoeComms{}, 0, 1);
        });
        const ModelCounts c = model.counts();
        const double G = 4, E = 2;
        const double w = activation == "swiglu" ? 8 * std::round(8 * d / (3 * G) / 8) : 4 * d / G;  // 24 or 32
        const double per_expert = (activation == "swiglu" ? 3 : 2) * d * w;
        SCOPED_TRACE(activation + " " + routing + " S=" + std::to_string(S));
        EXPECT_EQ(cfg.d_expert(), int(w));
        EXPECT_EQ(double(c.shared_experts), S * per_expert * L);
        EXPECT_EQ(double(c.experts), E * G * per_expert * L);
        EXPECT_EQ(double(c.n_total()), (4 * d * d + (E * G + S) * per_expert) * L);
        EXPECT_EQ(double(c.n_active()), (4 * d * d + G * per_expert) * L);
        if (activation == "relu") {
          EXPECT_EQ(double(c.n_active()), 12 * d * d * L);
        }
        EXPECT_EQ(c.flops_per_token(), 6 * double(c.n_active()) + 14 * d * E * G * L);
      }
    }
  }
  // The dense swiglu FFN: d_ff = round8(8 * 32 / 3) = 88, three matrices.
  Config dense;
  dense.model.d_model = 32;
  dense.model.n_blocks = 2;
  dense.model.n_heads = 4;
  dense.model.activation = "swiglu";
  dense.moe.enabled = false;
  ParameterStore<double> store;
  Model<double> model(dense, store, [&](int b, ParameterStore<double>& s) { return make_dense_ffn<double>(dense, b, s); });
  EXPECT_EQ(dense.d_ff(), 88);
  EXPECT_EQ(double(model.counts().ffn), 3 * d * 88 * L);
}

TEST(GemmFlops, ForwardBackwardMatchesAnalyticCount) {
  Config cfg = tiny_config(false);
  cfg.model.d_model = 16;
  cfg.model.context = 8;
  cfg.model.vocab = 32;
  ParameterStore<double> store;
  auto model = make_dense_model(cfg, store);
  store.allocate(26);
  const TokenBatch batch{3, 8};
  const auto inputs = random_tokens(batch.tokens(), cfg.model.vocab, 27);
  const auto targets = random_tokens(batch.tokens(), cfg.model.vocab, 28);
  cpu::reset_gemm_flops();
  model.forward_backward(inputs.data(), targets.data(), batch);
  const cpu::GemmFlops f = cpu::gemm_flops();
  const int64_t N = batch.tokens(), d = 16, L = 2, V = 32, T = 8, S = 3;
  // Forward 2 FLOPs per weight and token, backward 4 (input and weight gradients).
  EXPECT_EQ(f[cpu::FlopCategory::attention_projection], 6 * N * 4 * d * d * L);
  EXPECT_EQ(f[cpu::FlopCategory::ffn], 6 * N * 8 * d * d * L);
  EXPECT_EQ(f[cpu::FlopCategory::head], 6 * N * d * V);
  // Per sequence and head: Q K^T and P V forward (2 T^2 hs each), four such products backward.
  EXPECT_EQ(f[cpu::FlopCategory::attention_scores], 12 * S * T * T * d * L);
  EXPECT_EQ(f[cpu::FlopCategory::router], 0);
  EXPECT_EQ(f[cpu::FlopCategory::other], 0);
  // The paper's c_f = 6 term is exactly the projection + FFN GEMMs.
  EXPECT_EQ(double(f[cpu::FlopCategory::attention_projection] + f[cpu::FlopCategory::ffn]),
            model.counts().flops_per_token() * N);
}

}  // namespace
}  // namespace finemoe
