// The MoE layer on one process: finite-difference gradients in float64 (both routings, auxiliary
// losses, output LayerNorm), invariants, the one-expert case against a dense FFN, and the plain
// reference loop.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "backend/cpu/blas.h"
#include "model/moe/moe_layer.h"
#include "moe_test_support.h"

namespace finemoe {
namespace {

template <typename T>
struct BuiltLayer {
  explicit BuiltLayer(const Config& c, uint64_t seed = 3) : cfg(c) {
    layer = std::make_unique<MoeLayer<T>>(cfg, 0, store, MoeComms{}, 0, 1);
    store.allocate(seed);
  }
  const T* param(const std::string& suffix) {
    for (int i = 0; i < store.count(); ++i)
      if (store.spec(i).name == "blocks.0.moe." + suffix) return store.value(ParamHandle{i});
    ADD_FAILURE() << "no parameter " << suffix;
    return nullptr;
  }
  Config cfg;
  ParameterStore<T> store;
  std::unique_ptr<MoeLayer<T>> layer;
};

TokenBatch make_batch(int n_seq, int context, double loss_scale) {
  TokenBatch b;
  b.n_seq = n_seq;
  b.context = context;
  b.first_global_seq = 0;
  b.loss_scale = loss_scale;
  return b;
}

// J = <R, y> + aux_loss(); backward(R) must give dJ/dx and dJ/dtheta, with the selection fixed.
void check_gradients(const Config& cfg, int n_seq, int context, bool expect_drops = false) {
  BuiltLayer<double> b(cfg);
  const int d = cfg.model.d_model;
  const TokenBatch batch = make_batch(n_seq, context, 0.5);
  const int64_t n = batch.tokens() * d;
  auto x = test::random_values<double>(n, 21);
  const auto r = test::random_values<double>(n, 22);
  std::vector<double> y(n), dx(n);
  auto objective = [&] {
    b.layer->forward(x.data(), y.data(), batch);
    double j = b.layer->aux_loss();
    for (int64_t i = 0; i < n; ++i) j += r[i] * y[i];
    return j;
  };
  objective();
  const auto rows = b.layer->copy_rows();
  const auto experts = b.layer->copy_experts();
  if (expect_drops) {
    EXPECT_GT(b.layer->stats().assignments_dropped, 0);
  }
  b.store.zero_grads();
  b.layer->backward(r.data(), dx.data());
  const std::vector<double> grads[2] = {to_host(b.store.grads(ParamGroup::replicated)),
                                        to_host(b.store.grads(ParamGroup::expert))};

  const double h = 1e-6;
  int selection_changes = 0;
  auto fd = [&](double& v) {
    const double keep = v;
    v = keep + h;
    const double up = objective();
    selection_changes += b.layer->copy_rows() != rows || b.layer->copy_experts() != experts;
    v = keep - h;
    const double down = objective();
    selection_changes += b.layer->copy_rows() != rows || b.layer->copy_experts() != experts;
    v = keep;
    return (up - down) / (2 * h);
  };
  for (int64_t i = 0; i < n; ++i) {
    const double num = fd(x[i]);
    EXPECT_NEAR(dx[i], num, 1e-7 * (1 + std::abs(num))) << "dx[" << i << "]";
  }
  for (int g = 0; g < 2; ++g) {
    auto& buffer = b.store.values(static_cast<ParamGroup>(g));
    double* values = buffer.data();  // the CPU backend: compute memory is host memory
    for (size_t i = 0; i < buffer.size(); ++i) {
      const double num = fd(values[i]);
      EXPECT_NEAR(grads[g][i], num, 1e-7 * (1 + std::abs(num))) << "group " << g << " parameter element " << i;
    }
  }
  EXPECT_EQ(selection_changes, 0) << "the selection changed at +-h";
}

TEST(MoeLayerGradients, ExpertChoice) {
  check_gradients(test::tiny_moe_config("expert_choice", 4, 2, 4), 8, 3);
}

TEST(MoeLayerGradients, ExpertChoiceReluWithOutputLayerNorm) {
  Config cfg = test::tiny_moe_config("expert_choice", 2, 2, 4);
  cfg.model.activation = "relu";
  cfg.moe.output_layernorm = true;
  cfg.moe.capacity_factor = 1.5;
  check_gradients(cfg, 4, 3);
}

TEST(MoeLayerGradients, TokenChoiceWithAuxLossZLossAndDrops) {
  Config cfg = test::tiny_moe_config("token_choice", 4, 2, 4);
  cfg.moe.capacity_factor = 1.0;
  cfg.moe.aux_loss_weight = 0.3;
  cfg.moe.z_loss_weight = 0.2;
  check_gradients(cfg, 8, 3, /*expect_drops=*/true);
}

TEST(MoeLayerGradients, TokenChoiceDroplessTopOneWithOutputLayerNorm) {
  Config cfg = test::tiny_moe_config("token_choice", 4, 1, 2);
  cfg.moe.capacity_factor = 0;
  cfg.moe.output_layernorm = true;
  cfg.moe.aux_loss_weight = 0.3;
  cfg.moe.z_loss_weight = 0.2;
  check_gradients(cfg, 4, 2);
}

TEST(MoeLayer, RegistersThePaperShapesAndInit) {
  Config cfg = test::tiny_moe_config("expert_choice", 4, 2, 4);
  cfg.model.init_scale = 0.1;
  cfg.moe.output_layernorm = true;
  BuiltLayer<double> b(cfg);
  std::map<std::string, const ParamSpec*> specs;
  for (int i = 0; i < b.store.count(); ++i) specs[b.store.spec(i).name] = &b.store.spec(i);
  ASSERT_EQ(specs.size(), 5u);
  const ParamSpec& w1 = *specs.at("blocks.0.moe.experts.w1");
  const ParamSpec& w2 = *specs.at("blocks.0.moe.experts.w2");
  EXPECT_EQ(specs.at("blocks.0.moe.router")->shape, (std::vector<int64_t>{8, 8}));
  EXPECT_EQ(w1.shape, (std::vector<int64_t>{8, 8, 16}));
  EXPECT_EQ(w2.shape, (std::vector<int64_t>{8, 16, 8}));
  EXPECT_EQ(w1.group, ParamGroup::expert);
  EXPECT_DOUBLE_EQ(w1.init.std, std::sqrt(0.1 / 8));
  EXPECT_DOUBLE_EQ(w2.init.std, std::sqrt(0.1 / 32));  // fan_in = d_ff = 4 d_model, not d_expert
  EXPECT_TRUE(specs.count("blocks.0.moe.out_ln.weight") && specs.count("blocks.0.moe.out_ln.bias"));
  for (const auto& [name, spec] : specs) EXPECT_EQ(spec->block, 0) << name;
}

TEST(MoeLayer, RegistersItsExpertShardWithoutCommunicatorButDoesNotRun) {
  const Config cfg = test::tiny_moe_config("expert_choice", 4, 2, 4);
  ParameterStore<double> store;
  MoeLayer<double> layer(cfg, 0, store, MoeComms{}, 1, 2);  // a dry run's registration, EP = 2
  store.allocate(3);
  for (int i = 0; i < store.count(); ++i) {
    const ParamSpec& s = store.spec(i);
    if (s.group != ParamGroup::expert) continue;
    EXPECT_EQ(s.shape[0], 4) << s.name;
    EXPECT_EQ(s.first_global_expert, 4) << s.name;
  }
  std::vector<double> x(4 * 2 * 8, 0.1), y(x.size());
  EXPECT_THROW(layer.forward(x.data(), y.data(), make_batch(4, 2, 1.0)), std::runtime_error);
}

TEST(MoeLayer, OneExpertWithGateOneIsTheDenseFfn) {
  Config cfg = test::tiny_moe_config("expert_choice", 1, 1, 2);
  cfg.model.activation = "relu";
  BuiltLayer<double> b(cfg);
  const int d = 8, dff = 32, n_seq = 4, ctx = 5, tokens = n_seq * ctx;
  const auto x = test::random_values<double>(tokens * d, 31);
  std::vector<double> y(tokens * d);
  b.layer->forward(x.data(), y.data(), make_batch(n_seq, ctx, 1.0));
  for (double g : b.layer->copy_gates()) EXPECT_EQ(g, 1.0);
  std::vector<double> h(tokens * dff), want(tokens * d);
  cpu::gemm<double>(false, false, tokens, dff, d, 1.0, x.data(), d, b.param("experts.w1"), dff, 0.0, h.data(), dff);
  for (double& v : h) v = std::max(v, 0.0);
  cpu::gemm<double>(false, false, tokens, d, dff, 1.0, h.data(), dff, b.param("experts.w2"), d, 0.0, want.data(), d);
  for (int i = 0; i < tokens * d; ++i) EXPECT_NEAR(y[i], want[i], 1e-13);
}

class MoeLayerReference : public ::testing::TestWithParam<std::tuple<const char*, int, double>> {};

TEST_P(MoeLayerReference, MatchesThePlainPerExpertLoop) {
  const auto [routing, top_k, cf] = GetParam();
  Config cfg = test::tiny_moe_config(routing, 4, 2, 4);
  cfg.moe.top_k = top_k;
  cfg.moe.capacity_factor = cf;
  BuiltLayer<double> b(cfg);
  const int n_seq = 8, ctx = 3, d = 8;
  const auto x = test::random_values<double>(n_seq * ctx * d, 41);
  std::vector<double> y(x.size());
  b.layer->forward(x.data(), y.data(), make_batch(n_seq, ctx, 1.0));
  const auto ref =
      test::reference_moe(cfg, x, n_seq, ctx, b.param("router"), b.param("experts.w1"), b.param("experts.w2"));
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref.y[i], 1e-12) << i;
  std::vector<std::pair<int, int>> got;
  const auto rows = b.layer->copy_rows(), experts = b.layer->copy_experts();
  for (size_t c = 0; c < rows.size(); ++c) got.push_back({rows[c], experts[c]});
  auto want = ref.kept;
  std::sort(got.begin(), got.end());
  std::sort(want.begin(), want.end());
  EXPECT_EQ(got, want);
  const auto& st = b.layer->stats();
  int64_t processed = 0;
  for (int64_t c : st.expert_tokens) processed += c;
  EXPECT_EQ(processed, int64_t(want.size()));
  if (std::string(routing) == "token_choice") {
    EXPECT_EQ(st.assignments_requested, int64_t(n_seq) * ctx * cfg.moe.effective_top_k());
    EXPECT_EQ(st.assignments_requested - st.assignments_dropped, int64_t(want.size()));
  }
}

INSTANTIATE_TEST_SUITE_P(Routings, MoeLayerReference,
                         ::testing::Values(std::make_tuple("expert_choice", 0, 1.0),
                                           std::make_tuple("expert_choice", 0, 0.5),
                                           std::make_tuple("token_choice", 0, 1.0),
                                           std::make_tuple("token_choice", 1, 1.25),
                                           std::make_tuple("token_choice", 3, 0.0)));

TEST(MoeLayer, ExpertChoiceFillsEveryExpertToCapacityInEveryGroup) {
  const Config cfg = test::tiny_moe_config("expert_choice", 4, 2, 8);
  BuiltLayer<double> b(cfg);
  const int n_seq = 16, ctx = 4, d = 8, gs = 8;
  const auto x = test::random_values<double>(n_seq * ctx * d, 51);
  std::vector<double> y(x.size());
  b.layer->forward(x.data(), y.data(), make_batch(n_seq, ctx, 1.0));
  EXPECT_EQ(b.layer->capacity(), 2);  // group_size * G / n_experts = 8 * 2 / 8
  std::map<std::tuple<int, int, int>, int> load;  // (sequence group, position, expert)
  const auto rows = b.layer->copy_rows(), experts = b.layer->copy_experts();
  for (size_t c = 0; c < rows.size(); ++c) ++load[{rows[c] / ctx / gs, rows[c] % ctx, experts[c]}];
  EXPECT_EQ(load.size(), size_t(2 * ctx * 8));
  for (const auto& [key, count] : load) EXPECT_EQ(count, 2);
}

TEST(MoeLayer, FloatAgreesWithDouble) {
  Config cfg = test::tiny_moe_config("token_choice", 4, 2, 4);
  cfg.moe.output_layernorm = true;
  BuiltLayer<double> bd(cfg);
  BuiltLayer<float> bf(cfg);
  const int n_seq = 4, ctx = 3, d = 8;
  const auto xd = test::random_values<double>(n_seq * ctx * d, 61);
  const std::vector<float> xf(xd.begin(), xd.end());
  std::vector<double> yd(xd.size()), dxd(xd.size());
  std::vector<float> yf(xd.size()), dxf(xd.size());
  const TokenBatch batch = make_batch(n_seq, ctx, 1.0 / (n_seq * ctx));
  bd.layer->forward(xd.data(), yd.data(), batch);
  bf.layer->forward(xf.data(), yf.data(), batch);
  EXPECT_EQ(bd.layer->copy_rows(), bf.layer->copy_rows());
  EXPECT_EQ(bd.layer->copy_experts(), bf.layer->copy_experts());
  const auto r = test::random_values<double>(xd.size(), 62);
  const std::vector<float> rf(r.begin(), r.end());
  bd.layer->backward(r.data(), dxd.data());
  bf.layer->backward(rf.data(), dxf.data());
  for (size_t i = 0; i < yd.size(); ++i) {
    EXPECT_NEAR(yf[i], yd[i], 1e-4);
    EXPECT_NEAR(dxf[i], dxd[i], 1e-4);
  }
  EXPECT_NEAR(bf.layer->aux_loss(), bd.layer->aux_loss(), 1e-6);
}

}  // namespace
}  // namespace finemoe
