// Device routing over a whole routing buffer (kernels/moe_routing.h) and the device loss sums
// (kernels/reduce.h) against their CPU references (src/backend/cpu/routing.h): decisions and orders
// exactly equal, floating-point sums within 1e-6.
#include <numeric>
#include <string>

#include "backend/cpu/routing.h"
#include "gpu_test_support.h"
#include "kernels/moe_routing.h"
#include "kernels/reduce.h"

namespace finemoe::gpu_test {
namespace {

using MoeRouting = GpuTest;
using Reduce = GpuTest;

constexpr double kSumTolerance = 1e-6;

enum class Probs { kTied, kSkewed, kEqual };

// Router probabilities quantised to a few levels, so that ties (lowest index first) are everywhere,
// with -0 among the zeros (it ties with +0). Skewed: expert e's probability shrinks like 1 / (1 + e),
// so token choice overloads the first experts and drops. Equal: every probability ties.
std::vector<float> make_probs(int64_t rows, int n_experts, Probs kind, uint32_t seed) {
  auto p = random_vector(size_t(rows) * n_experts, seed, 0.0f, 1.0f);
  for (size_t k = 0; k < p.size(); ++k) {
    float x = p[k];
    if (kind == Probs::kSkewed) x = x * 4.0f / float(1 + k % n_experts);
    x = std::floor(x * 4.0f) / 4.0f;
    if (x == 0.0f && k % 3 == 0) x = -0.0f;
    p[k] = kind == Probs::kEqual ? 0.5f : x;
  }
  return p;
}

struct Case {
  std::string name;
  cpu::RoutingShape shape;
  Probs probs = Probs::kTied;
};

cpu::RoutingShape expert_choice(int groups, int group_size, int context, int n_experts, int granularity,
                                double capacity_factor, int first_local_seq = 0, int local_seqs = -1) {
  cpu::RoutingShape s;
  s.groups = groups;
  s.group_size = group_size;
  s.context = context;
  s.n_experts = n_experts;
  s.granularity = granularity;
  s.capacity_factor = capacity_factor;
  s.first_local_seq = first_local_seq;
  s.local_seqs = local_seqs < 0 ? groups * group_size : local_seqs;
  return s;
}

cpu::RoutingShape token_choice(int groups, int group_size, int context, int n_experts, int top_k,
                               double capacity_factor, int first_local_seq = 0, int local_seqs = -1) {
  cpu::RoutingShape s = expert_choice(groups, group_size, context, n_experts, 1, capacity_factor, first_local_seq,
                                      local_seqs);
  s.token_choice = true;
  s.top_k = top_k;
  return s;
}

std::vector<Case> cases() {
  return {
      {"expert choice, one rank", expert_choice(3, 16, 5, 16, 4, 1.0)},
      {"expert choice, groups spanning ranks", expert_choice(2, 16, 3, 8, 2, 1.5, 8, 16)},
      {"expert choice, capacity == group_size", expert_choice(2, 8, 4, 4, 4, 1.0)},
      {"expert choice, all equal, odd rank split", expert_choice(2, 12, 3, 6, 2, 1.0, 5, 13), Probs::kEqual},
      {"expert choice, one expert", expert_choice(3, 5, 7, 1, 1, 1.0)},
      {"expert choice, 512 experts, group of 64", expert_choice(1, 64, 2, 512, 8, 2.0)},
      {"expert choice, odd sizes", expert_choice(5, 7, 3, 37, 3, 1.0, 3, 29)},
      {"expert choice, 1400 slots", expert_choice(2, 4, 700, 8, 2, 1.0, 2, 5)},
      {"token choice, top 2 with drops", token_choice(3, 32, 4, 16, 2, 1.0), Probs::kSkewed},
      {"token choice, dropless", token_choice(2, 9, 5, 10, 3, 0.0), Probs::kSkewed},
      {"token choice, top_k == n_experts", token_choice(2, 10, 3, 6, 6, 0.5)},
      {"token choice, groups spanning ranks", token_choice(3, 16, 3, 8, 2, 1.25, 12, 24), Probs::kSkewed},
      {"token choice, 512 experts, top 8", token_choice(1, 64, 2, 512, 8, 1.0), Probs::kSkewed},
      {"token choice, one expert", token_choice(3, 6, 4, 1, 1, 1.0)},
      {"token choice, all equal", token_choice(2, 12, 3, 6, 2, 1.0, 5, 13), Probs::kEqual},
      {"token choice, odd sizes", token_choice(5, 7, 3, 37, 5, 1.1, 3, 29)},
      {"token choice, 1400 slots", token_choice(2, 4, 700, 8, 2, 1.0, 2, 5), Probs::kSkewed},
      {"token choice, no local tokens", token_choice(2, 4, 3, 4, 2, 1.0, 0, 0)},
      {"expert choice, no tokens", expert_choice(0, 4, 3, 8, 2, 1.0)},
      {"token choice, no tokens", token_choice(0, 4, 3, 8, 2, 0.0)},
  };
}

int64_t buffer_rows(const cpu::RoutingShape& s) { return s.slots() * s.group_size; }
int64_t local_rows(const cpu::RoutingShape& s) { return int64_t(s.local_seqs) * s.context; }

struct Routed {
  std::vector<int32_t> row, expert;
  std::vector<float> gate;
  std::vector<int64_t> per_expert;
  std::vector<int32_t> requested;
};

// The probabilities a case routes: the buffer's, and this rank's (distinct values, so that gates
// read from anywhere else would show).
struct Inputs {
  std::vector<float> group, local;
  Inputs(const Case& c, uint32_t seed)
      : group(make_probs(buffer_rows(c.shape), c.shape.n_experts, c.probs, seed)),
        local(random_vector(size_t(local_rows(c.shape)) * c.shape.n_experts, seed + 1, 0.0f, 1.0f)) {}
};

Routed cpu_route(const Inputs& in, const cpu::RoutingShape& s) {
  Routed r;
  const size_t copies = size_t(s.max_copies());
  r.row.assign(copies, -1);
  r.expert.assign(copies, -1);
  r.gate.assign(copies, -1.0f);
  r.per_expert.assign(size_t(s.n_experts), -1);
  r.requested.assign(size_t(s.slots()) * s.n_experts, -1);
  cpu::route_tokens(in.group.data(), in.local.data(), s, r.row.data(), r.expert.data(), r.gate.data(),
                    r.per_expert.data(), r.requested.data());
  const size_t total = size_t(std::accumulate(r.per_expert.begin(), r.per_expert.end(), int64_t(0)));
  r.row.resize(total);
  r.expert.resize(total);
  r.gate.resize(total);
  return r;
}

// Device outputs start as garbage, so that anything left unwritten shows.
template <typename T>
cuda::DeviceBuffer<T> garbage(size_t n, T value) {
  return on_device(std::vector<T>(std::max<size_t>(n, 1), value));
}

template <typename T>
std::vector<T> first(const cuda::DeviceBuffer<T>& buffer, size_t n) {
  auto host = buffer.download();
  host.resize(n);
  return host;
}

Routed gpu_route(const Inputs& in, const cpu::RoutingShape& s, size_t total, cudaStream_t stream = 0,
                 bool with_requested = true) {
  const size_t copies = size_t(s.max_copies()), requested = size_t(s.slots()) * s.n_experts;
  auto group = on_device(in.group.empty() ? std::vector<float>{0} : in.group);
  auto local = on_device(in.local.empty() ? std::vector<float>{0} : in.local);
  auto row = garbage<int32_t>(copies, -7), expert = garbage<int32_t>(copies, -7);
  auto gate = garbage<float>(copies, -7.0f);
  auto per_expert = garbage<int64_t>(size_t(s.n_experts), 99);
  auto asked = garbage<int32_t>(requested, -7);
  // An odd base address: route_tokens aligns its scratch itself.
  const size_t bytes = cuda::route_tokens_workspace_bytes(s);
  cuda::DeviceBuffer<unsigned char> workspace(bytes + 8);
  cuda::route_tokens(group.data(), local.data(), s, row.data(), expert.data(), gate.data(), per_expert.data(),
                     with_requested ? asked.data() : nullptr, workspace.data() + 8, bytes, stream);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return {first(row, total), first(expert, total), first(gate, total), first(per_expert, size_t(s.n_experts)),
          first(asked, requested)};
}

void expect_same_routing(const Routed& gpu, const Routed& ref, const std::string& name) {
  EXPECT_EQ(gpu.per_expert, ref.per_expert) << name;
  EXPECT_EQ(gpu.requested, ref.requested) << name;
  EXPECT_EQ(gpu.row, ref.row) << name;
  EXPECT_EQ(gpu.expert, ref.expert) << name;
  EXPECT_EQ(gpu.gate, ref.gate) << name;
}

TEST_F(MoeRouting, RouteTokensMatchesCpu) {
  uint32_t seed = 100;
  for (const Case& c : cases()) {
    const Inputs in(c, seed += 2);
    const Routed ref = cpu_route(in, c.shape);
    expect_same_routing(gpu_route(in, c.shape, ref.row.size()), ref, c.name);
  }
}

// The cases mean what their names say: drops happen where the capacity is short, and not where
// token choice is dropless.
TEST_F(MoeRouting, CasesCoverDropsAndSplits) {
  uint32_t seed = 100;
  for (const Case& c : cases()) {
    const Inputs in(c, seed += 2);
    const Routed ref = cpu_route(in, c.shape);
    if (!c.shape.token_choice) continue;
    const int64_t kept = int64_t(ref.row.size()), asked = local_rows(c.shape) * c.shape.top_k;
    if (c.name.find("drops") != std::string::npos) {
      EXPECT_LT(kept, asked) << c.name;
    }
    if (c.name.find("dropless") != std::string::npos) {
      EXPECT_EQ(kept, asked) << c.name;
    }
  }
}

TEST_F(MoeRouting, RouteTokensWithoutRequestedAndRepeated) {
  const Case c{"token choice, groups spanning ranks", token_choice(3, 16, 3, 8, 2, 1.25, 12, 24), Probs::kSkewed};
  const Inputs in(c, 7);
  Routed ref = cpu_route(in, c.shape);
  for (int run = 0; run < 2; ++run) {
    Routed gpu = gpu_route(in, c.shape, ref.row.size(), 0, false);
    gpu.requested = ref.requested;  // not asked for
    expect_same_routing(gpu, ref, c.name + ", run " + std::to_string(run));
  }
}

TEST_F(MoeRouting, BalanceLossMatchesCpu) {
  uint32_t seed = 300;
  for (const Case& c : cases()) {
    if (!c.shape.token_choice || c.shape.slots() == 0) continue;
    const cpu::RoutingShape& s = c.shape;
    const Inputs in(c, seed += 2);
    const Routed ref = cpu_route(in, s);
    const double coef = 0.01;
    const int local_tokens_per_slot = 5;
    std::vector<float> grad(size_t(s.slots()) * s.n_experts, -1.0f);
    double loss = 1.25;
    cpu::balance_loss(in.group.data(), ref.requested.data(), s, coef, local_tokens_per_slot, grad.data(), &loss);
    auto dev_probs = on_device(in.group);
    auto dev_requested = on_device(ref.requested);
    auto dev_grad = garbage<float>(grad.size(), -7.0f);
    auto dev_loss = on_device(std::vector<double>{1.25});
    cuda::balance_loss(dev_probs.data(), dev_requested.data(), s, coef, local_tokens_per_slot, dev_grad.data(),
                       dev_loss.data(), 0);
    EXPECT_LE(relative_max_error(dev_grad.download(), grad), kSumTolerance) << c.name;
    EXPECT_NEAR(dev_loss.download()[0], loss, kSumTolerance * std::abs(loss)) << c.name;
  }
}

// Softmax of random logits (the probabilities the z-loss gradient multiplies).
std::vector<float> softmax_rows(const std::vector<float>& logits, int n) {
  std::vector<float> p(logits.size());
  for (size_t r = 0; r < logits.size() / n; ++r) {
    const float* l = logits.data() + r * n;
    const double m = *std::max_element(l, l + n);
    double sum = 0;
    for (int e = 0; e < n; ++e) sum += std::exp(l[e] - m);
    for (int e = 0; e < n; ++e) p[r * n + e] = float(std::exp(l[e] - m) / sum);
  }
  return p;
}

TEST_F(MoeRouting, RouterZLossMatchesCpu) {
  for (int n : {1, 8, 70, 512}) {
    for (int64_t rows : {int64_t(0), int64_t(77)}) {
      const auto logits = random_vector(size_t(rows) * n, 400 + n, -4.0f, 4.0f);
      const auto probs = softmax_rows(logits, n);
      const double scale = 1e-3;
      std::vector<float> dlogits(logits.size(), -1.0f);
      double loss = 0.5;
      cpu::router_z_loss(logits.data(), probs.data(), rows, n, scale, dlogits.data(), &loss);
      auto dev_logits = on_device(logits.empty() ? std::vector<float>{0} : logits);
      auto dev_probs = on_device(probs.empty() ? std::vector<float>{0} : probs);
      auto dev_dlogits = garbage<float>(dlogits.size(), -7.0f);
      auto dev_loss = on_device(std::vector<double>{0.5});
      cuda::router_z_loss(dev_logits.data(), dev_probs.data(), rows, n, scale, dev_dlogits.data(), dev_loss.data(),
                          0);
      EXPECT_LE(relative_max_error(first(dev_dlogits, dlogits.size()), dlogits), kSumTolerance) << n << " experts";
      EXPECT_NEAR(dev_loss.download()[0], loss, kSumTolerance * std::abs(loss)) << n << " experts, " << rows;
    }
  }
}

TEST_F(MoeRouting, RoutingBackwardMatchesCpu) {
  uint32_t seed = 500;
  for (const Case& c : cases()) {
    const cpu::RoutingShape& s = c.shape;
    const Inputs in(c, seed += 2);
    const Routed ref = cpu_route(in, s);
    const int64_t copies = int64_t(ref.row.size());
    const auto dgate = random_vector(size_t(copies), seed + 1);
    std::vector<float> balance(size_t(s.slots()) * s.n_experts, 0.0f);
    double loss = 0;
    if (s.token_choice) cpu::balance_loss(in.group.data(), ref.requested.data(), s, 0.01, 5, balance.data(), &loss);
    else balance = random_vector(balance.size(), seed + 2);
    const size_t n = size_t(local_rows(s)) * s.n_experts;
    auto dev_dgate = garbage<float>(0, 0.0f);
    auto dev_row = garbage<int32_t>(0, 0), dev_expert = garbage<int32_t>(0, 0);
    if (copies > 0) {
      dev_dgate = on_device(dgate);
      dev_row = on_device(ref.row);
      dev_expert = on_device(ref.expert);
    }
    auto dev_balance = garbage<float>(balance.size(), 0.0f);
    if (!balance.empty()) dev_balance = on_device(balance);
    for (bool with_balance : {false, true}) {
      std::vector<float> dprobs(n, -1.0f);
      cpu::routing_backward(dgate.data(), ref.row.data(), ref.expert.data(), copies,
                            with_balance ? balance.data() : nullptr, s, dprobs.data());
      auto dev_dprobs = garbage<float>(n, -7.0f);
      cuda::routing_backward(dev_dgate.data(), dev_row.data(), dev_expert.data(), copies,
                             with_balance ? dev_balance.data() : nullptr, s, dev_dprobs.data(), 0);
      EXPECT_LE(relative_max_error(first(dev_dprobs, n), dprobs), kSumTolerance)
          << c.name << (with_balance ? ", with balance" : "");
    }
  }
}

TEST_F(MoeRouting, SoftmaxBackwardAccumulateMatchesCpu) {
  for (int n : {1, 8, 70, 512}) {
    const int64_t rows = 65;
    const auto probs = softmax_rows(random_vector(size_t(rows) * n, 600 + n, -3.0f, 3.0f), n);
    const auto dprobs = random_vector(probs.size(), 700 + n);
    auto dlogits = random_vector(probs.size(), 800 + n);
    auto dev_probs = on_device(probs), dev_dprobs = on_device(dprobs), dev_dlogits = on_device(dlogits);
    cpu::softmax_backward_accumulate(probs.data(), dprobs.data(), dlogits.data(), rows, n);
    cuda::softmax_backward_accumulate(dev_probs.data(), dev_dprobs.data(), dev_dlogits.data(), rows, n, 0);
    EXPECT_LE(relative_max_error(dev_dlogits.download(), dlogits), kSumTolerance) << n;
  }
}

// Routing, balance loss and a loss sum captured into a graph under the global capture mode, where a
// synchronisation, an allocation or a host read of device memory fails the capture.
TEST_F(MoeRouting, RoutingIsGraphCapturable) {
  const Case c{"token choice, groups spanning ranks", token_choice(3, 16, 3, 8, 2, 1.25, 12, 24), Probs::kSkewed};
  const cpu::RoutingShape& s = c.shape;
  const Inputs in(c, 9);
  const Routed ref = cpu_route(in, s);
  std::vector<float> grad(size_t(s.slots()) * s.n_experts);
  double loss = 0;
  cpu::balance_loss(in.group.data(), ref.requested.data(), s, 0.01, 5, grad.data(), &loss);

  auto group = on_device(in.group), local = on_device(in.local);
  const size_t copies = size_t(s.max_copies()), units = size_t(s.slots()) * s.n_experts;
  auto row = garbage<int32_t>(copies, -7), expert = garbage<int32_t>(copies, -7);
  auto gate = garbage<float>(copies, -7.0f);
  auto per_expert = garbage<int64_t>(size_t(s.n_experts), 99);
  auto requested = garbage<int32_t>(units, -7);
  auto dev_grad = garbage<float>(units, -7.0f);
  auto dev_loss = on_device(std::vector<double>{0.0});
  const size_t bytes = cuda::route_tokens_workspace_bytes(s);
  cuda::DeviceBuffer<unsigned char> workspace(bytes);

  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  cuda::route_tokens(group.data(), local.data(), s, row.data(), expert.data(), gate.data(), per_expert.data(),
                     requested.data(), workspace.data(), bytes, stream);
  cuda::balance_loss(group.data(), requested.data(), s, 0.01, 5, dev_grad.data(), dev_loss.data(), stream);
  cudaGraph_t graph;
  CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  CUDA_CHECK(cudaGraphLaunch(exec, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaGraphDestroy(graph));
  CUDA_CHECK(cudaStreamDestroy(stream));

  const size_t total = ref.row.size();
  expect_same_routing({first(row, total), first(expert, total), first(gate, total), per_expert.download(),
                       requested.download()},
                      ref, c.name);
  EXPECT_LE(relative_max_error(dev_grad.download(), grad), kSumTolerance);
  EXPECT_NEAR(dev_loss.download()[0], loss, kSumTolerance * std::abs(loss));
}

TEST_F(Reduce, AccumulateSumIsExactToDoubleAndRepeatable) {
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(1000), int64_t(1000003)}) {
    const auto x = random_vector(size_t(n), 900, 0.0f, 10.0f);
    long double exact = 3.5;
    for (float v : x) exact += v;
    auto dev_x = on_device(x.empty() ? std::vector<float>{0} : x);
    double got[2];
    for (double& g : got) {
      auto sum = on_device(std::vector<double>{3.5});
      cuda::accumulate_sum(dev_x.data(), n, sum.data(), 0);
      g = sum.download()[0];
    }
    EXPECT_NEAR(got[0], double(exact), 1e-12 * double(exact)) << n;
    EXPECT_EQ(got[0], got[1]) << "the same sum on every run, n " << n;
  }
}

TEST_F(Reduce, AddDoubles) {
  for (int n : {0, 1, 1000}) {
    auto dst = random_vector(size_t(n) + 1, 910), src = random_vector(size_t(n) + 1, 911);
    std::vector<double> d(dst.begin(), dst.end()), s(src.begin(), src.end());
    for (double& v : s) v *= 1.0 / 3.0;  // not representable in float
    auto dev_dst = on_device(d), dev_src = on_device(s);
    cuda::add_doubles(dev_dst.data(), dev_src.data(), n, 0);
    for (int i = 0; i < n; ++i) d[size_t(i)] += s[size_t(i)];  // element n stays as it was
    EXPECT_EQ(dev_dst.download(), d) << n;
  }
}

}  // namespace
}  // namespace finemoe::gpu_test
