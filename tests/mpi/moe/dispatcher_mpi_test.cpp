// The all-to-all dispatcher across ranks: every copy reaches its expert's owner, grouped per local
// expert, and comes back unchanged (permute -> all-to-all -> unpermute is the identity).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "model/moe/dispatcher.h"
#include "model/moe/expert_exchange.h"
#include "parallel/process_grid.h"

namespace finemoe {
namespace {

// Small rows (width 3: one packed message per peer) and large ones (width 4096 doubles, ~5 rows
// per expert at EP 2: one message per (peer, expert) block).
class MoeDispatcherMpi : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(MoeDispatcherMpi, RowsReachTheirExpertsAndComeBack) {
  MpiCommunicator world(MPI_COMM_WORLD);
  const int W = world.size();
  const int base_tokens = GetParam().first, width = GetParam().second;
  for (int ep = 1; ep <= W; ep *= 2) {
    ProcessGrid grid(MPI_COMM_WORLD, ep);
    const int ne = 4 * ep, n_local = 4, me = grid.rank();
    // Rank r sends token t to expert (t * (r + 1)) % ne; some experts get nothing from some ranks.
    const int tokens = base_tokens + me;
    std::vector<double> x(tokens * width);
    for (int t = 0; t < tokens; ++t)
      for (int i = 0; i < width; ++i) x[t * width + i] = 1000.0 * me + 10.0 * t + i;
    std::vector<int64_t> per_expert(ne, 0);
    std::vector<int32_t> rows;
    for (int e = 0; e < ne; ++e)
      for (int t = 0; t < tokens; ++t)
        if ((t * (me + 1)) % ne == e) {
          rows.push_back(t);
          ++per_expert[e];
        }
    moe::AllToAllDispatcher<double> dispatcher(&grid.expert_group(), ne);
    dispatcher.plan(per_expert);
    const int64_t n = int64_t(rows.size());
    std::vector<double> send(n * width), recv(dispatcher.received_rows() * width), back(n * width);
    moe::gather_rows(x.data(), rows.data(), n, width, send.data());
    dispatcher.to_experts(send.data(), recv.data(), width);

    // What this rank should receive, expert-major then source rank then token order.
    std::vector<double> want;
    const int group_first_rank = grid.rank() - grid.ep_rank();
    for (int j = 0; j < n_local; ++j) {
      const int e = grid.ep_rank() * n_local + j;
      int64_t count = 0;
      for (int src = group_first_rank; src < group_first_rank + ep; ++src)
        for (int t = 0; t < base_tokens + src; ++t)
          if ((t * (src + 1)) % ne == e) {
            for (int i = 0; i < width; ++i) want.push_back(1000.0 * src + 10.0 * t + i);
            ++count;
          }
      EXPECT_EQ(dispatcher.received_per_local_expert()[j], count) << "ep " << ep << " expert " << e;
    }
    EXPECT_EQ(recv, want) << "ep " << ep;

    dispatcher.from_experts(recv.data(), back.data(), width);
    EXPECT_EQ(back, send) << "ep " << ep;
    std::vector<double> y(tokens * width, 0.0), ones(n, 1.0);
    moe::combine_rows(back.data(), rows.data(), ones.data(), n, width, y.data());
    EXPECT_EQ(y, x) << "ep " << ep;
    if (ep > 1) {
      EXPECT_GT(dispatcher.exchange_stats().bytes, 0);
    }
  }
}

// The layer's fused path (own copies straight between token rows and expert order, only the
// others' staged) against the plain one: gather_rows -> to_experts, from_experts -> combine_rows,
// and their backward; bit for bit, since both sum a token's copies in send order. Rank 0 keeps
// every copy on its own experts, so it has nothing staged yet must take part in the exchanges.
TEST_P(MoeDispatcherMpi, FusedOwnRowsMatchThePlainPath) {
  MpiCommunicator world(MPI_COMM_WORLD);
  const int base_tokens = GetParam().first, width = GetParam().second;
  for (int ep = 1; ep <= world.size(); ep *= 2) {
    ProcessGrid grid(MPI_COMM_WORLD, ep);
    const int n_local = 4, ne = n_local * ep, me = grid.rank();
    const int tokens = base_tokens + me;
    std::mt19937 gen(17 + me);
    std::uniform_real_distribution<double> u(-1, 1);
    std::vector<double> x(size_t(tokens) * width), dy(size_t(tokens) * width);
    for (double& v : x) v = u(gen);
    for (double& v : dy) v = u(gen);
    // Two copies per token (top-2 style), sorted into send order by expert.
    std::vector<std::vector<int32_t>> by_expert(ne);
    for (int t = 0; t < tokens; ++t)
      for (int k = 0; k < 2; ++k) {
        const int e = me == 0 ? (t + k) % n_local + grid.ep_rank() * n_local : (t * (me + 1) + 3 * k) % ne;
        by_expert[e].push_back(t);
      }
    std::vector<int32_t> rows;
    std::vector<int64_t> per_expert(ne);
    for (int e = 0; e < ne; ++e) {
      rows.insert(rows.end(), by_expert[e].begin(), by_expert[e].end());
      per_expert[e] = int64_t(by_expert[e].size());
    }
    const int64_t n = int64_t(rows.size());
    std::vector<double> gate(n);
    for (double& g : gate) g = u(gen);
    moe::AllToAllDispatcher<double> dispatcher(&grid.expert_group(), ne);
    dispatcher.plan(per_expert);
    const int64_t m = dispatcher.received_rows();
    const size_t rows_n = size_t(n) * width, expert_n = size_t(m) * width;

    std::vector<double> send(rows_n), expert_ref(expert_n), expert(expert_n), staged(rows_n);
    moe::gather_rows(x.data(), rows.data(), n, width, send.data());
    dispatcher.to_experts(send.data(), expert_ref.data(), width);
    moe::dispatch_to_experts(dispatcher, x.data(), rows.data(), width, staged.data(), expert.data());
    EXPECT_EQ(expert, expert_ref) << "ep " << ep;

    std::vector<double> out(expert_n);  // the experts' output, in expert order
    for (size_t i = 0; i < expert_n; ++i) out[i] = 2 * expert_ref[i] + 0.5;
    std::vector<double> back(rows_n), y_ref(size_t(tokens) * width, 0.0), y(y_ref), out_staged(rows_n);
    dispatcher.from_experts(out.data(), back.data(), width);
    moe::combine_rows(back.data(), rows.data(), gate.data(), n, width, y_ref.data());
    moe::combine_from_experts(dispatcher, out.data(), rows.data(), gate.data(), width, out_staged.data(), y.data());
    EXPECT_EQ(y, y_ref) << "ep " << ep;

    std::vector<double> dback(rows_n), dexpert_ref(expert_n), dgate_ref(n), dexpert(expert_n), dgate(n),
        dstaged(rows_n);
    moe::combine_rows_backward(dy.data(), back.data(), rows.data(), gate.data(), n, width, dback.data(),
                               dgate_ref.data());
    dispatcher.to_experts(dback.data(), dexpert_ref.data(), width);
    moe::combine_backward_to_experts(dispatcher, dy.data(), out.data(), out_staged.data(), rows.data(), gate.data(),
                                     width, dstaged.data(), dexpert.data(), dgate.data());
    EXPECT_EQ(dexpert, dexpert_ref) << "ep " << ep;
    EXPECT_EQ(dgate, dgate_ref) << "ep " << ep;

    std::vector<double> dsend(rows_n), dx_ref(size_t(tokens) * width, 0.0), dx(dx_ref), dx_staged(rows_n);
    dispatcher.from_experts(dexpert_ref.data(), dsend.data(), width);
    moe::scatter_add_rows(dsend.data(), rows.data(), n, width, dx_ref.data());
    moe::scatter_add_from_experts(dispatcher, dexpert.data(), rows.data(), width, dx_staged.data(), dx.data());
    EXPECT_EQ(dx, dx_ref) << "ep " << ep;
  }
}

INSTANTIATE_TEST_SUITE_P(Widths, MoeDispatcherMpi,
                         ::testing::Values(std::make_pair(5, 3), std::make_pair(40, 4096)));

// Communicator::all_to_all_blocks against the plain all_to_all_v: pieces scattered through both
// buffers (gaps, reversed order, empty pieces), small pieces (packed per peer) and large ones
// (one message each) in one call; the gaps of the receive buffer stay untouched.
TEST(CommunicatorBlocks, PiecesLandWhereListedAndMatchAllToAllV) {
  MpiCommunicator world(MPI_COMM_WORLD);
  const int P = world.size(), me = world.rank(), K = 4;
  for (const int unit : {3, 2048}) {
    // Units in piece k from src to dst; some zero, large for some pairs.
    const auto count = [&](int src, int dst, int k) -> int64_t {
      if ((src + 2 * dst + k) % 5 == 0) return 0;
      return (src + dst + k) % 3 + ((src + dst) % 2 == 0 ? 6 : 1);
    };
    const auto value = [&](int src, int dst, int k, int64_t i) {
      return double((((src * 8 + dst) * 8 + k) * 16 + i) % 65536) * 4096.0;
    };
    // Send layout: per destination, pieces in reverse order in memory with a one-unit gap after each.
    BlockLayout send_layout, recv_layout;
    send_layout.clear(P);
    recv_layout.clear(P);
    std::vector<std::vector<int64_t>> send_off(P, std::vector<int64_t>(K));
    int64_t at = 0;
    for (int d = 0; d < P; ++d)
      for (int k = K - 1; k >= 0; --k) {
        send_off[d][k] = at;
        at += count(me, d, k) + 1;
      }
    std::vector<double> send(size_t(at) * unit, -1.0);
    for (int d = 0; d < P; ++d)
      for (int k = 0; k < K; ++k) {
        send_layout.add(d, send_off[d][k], count(me, d, k));
        for (int64_t i = 0; i < count(me, d, k) * unit; ++i) send[size_t(send_off[d][k] * unit + i)] = value(me, d, k, i);
      }
    // Receive layout: piece-major, then source (like expert order), a gap before every piece.
    std::vector<std::vector<int64_t>> recv_off(P, std::vector<int64_t>(K));
    at = 0;
    for (int k = 0; k < K; ++k)
      for (int s = 0; s < P; ++s) {
        recv_off[s][k] = at + 1;
        at += count(s, me, k) + 1;
      }
    for (int s = 0; s < P; ++s)
      for (int k = 0; k < K; ++k) recv_layout.add(s, recv_off[s][k], count(s, me, k));
    std::vector<double> recv(size_t(at) * unit, -7.0);
    world.all_to_all_blocks(send.data(), send_layout, recv.data(), recv_layout, DType::f64, unit);

    // Plain reference: the same pieces packed contiguously, all_to_all_v, then placed by hand.
    std::vector<double> flat_send, flat_recv;
    std::vector<int64_t> sc(P, 0), rc(P, 0);
    for (int d = 0; d < P; ++d)
      for (int k = 0; k < K; ++k) {
        for (int64_t i = 0; i < count(me, d, k) * unit; ++i) flat_send.push_back(send[size_t(send_off[d][k] * unit + i)]);
        sc[d] += count(me, d, k) * unit;
        rc[d] += count(d, me, k) * unit;
      }
    int64_t total = 0;
    for (int s = 0; s < P; ++s) total += rc[s];
    flat_recv.assign(size_t(total), 0.0);
    world.all_to_all_v(flat_send.data(), sc, flat_recv.data(), rc, DType::f64);
    std::vector<double> want(size_t(at) * unit, -7.0);
    size_t f = 0;
    for (int s = 0; s < P; ++s)
      for (int k = 0; k < K; ++k)
        for (int64_t i = 0; i < count(s, me, k) * unit; ++i) {
          want[size_t(recv_off[s][k] * unit + i)] = flat_recv[f++];
          EXPECT_EQ(flat_recv[f - 1], value(s, me, k, i)) << "unit " << unit;
        }
    EXPECT_EQ(recv, want) << "unit " << unit;

    // And back: the swapped layouts invert the exchange (send's gaps stay as they were).
    std::vector<double> back(send.size(), -1.0);
    world.all_to_all_blocks(recv.data(), recv_layout, back.data(), send_layout, DType::f64, unit);
    EXPECT_EQ(back, send) << "unit " << unit;
  }
}

// combine_rows and scatter_add_rows split columns between threads: each element must get exactly
// the serial additions in the serial order (1-rank and multi-rank runs are compared bit for bit).
TEST(MoeScatters, ThreadedCombineIsBitIdenticalToSerial) {
  const int tokens = 37, copies = 300, width = 1000 + 37;
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<int32_t> rows(copies);
  for (auto& r : rows) r = int32_t(rng() % tokens);
  std::vector<float> back(size_t(copies) * width), gate(copies), y0(size_t(tokens) * width);
  for (auto& v : back) v = u(rng);
  for (auto& v : gate) v = u(rng);
  for (auto& v : y0) v = u(rng);
  std::vector<float> want_y = y0, want_dx = y0;
  for (int c = 0; c < copies; ++c)
    for (int i = 0; i < width; ++i) {
      want_y[size_t(rows[c]) * width + i] += gate[c] * back[size_t(c) * width + i];
      want_dx[size_t(rows[c]) * width + i] += back[size_t(c) * width + i];
    }
#ifdef _OPENMP
  const int saved_threads = omp_get_max_threads();
#endif
  for (int threads = 1; threads <= 3; ++threads) {
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    std::vector<float> y = y0, dx = y0;
    moe::combine_rows(back.data(), rows.data(), gate.data(), copies, width, y.data());
    moe::scatter_add_rows(back.data(), rows.data(), copies, width, dx.data());
    for (size_t i = 0; i < y.size(); ++i) {
      ASSERT_EQ(std::memcmp(&y[i], &want_y[i], sizeof(float)), 0) << "threads " << threads << " element " << i;
      ASSERT_EQ(std::memcmp(&dx[i], &want_dx[i], sizeof(float)), 0) << "threads " << threads << " element " << i;
    }
  }
#ifdef _OPENMP
  omp_set_num_threads(saved_threads);
#endif
}

}  // namespace
}  // namespace finemoe
