#pragma once
// Moving token copies between the rank that holds a token and the rank that owns its expert.
//
// At its source a copy sits in SEND ORDER: destination-rank-major, expert-minor; since rank r of
// the expert-parallel group owns experts [r * n_local, (r + 1) * n_local), that is simply global
// expert order. At its expert the copies are grouped per local expert: expert-major, then source
// rank, then send order. to_experts() moves rows from send order to expert order; from_experts()
// is its exact inverse. Forward sends activations to_experts and outputs from_experts; backward
// sends output gradients to_experts and input gradients from_experts (the exchanges swap roles).
// The dispatcher only moves rows: permuting tokens into send order and combining the returned
// rows with their routing weights are the free functions below, so a device dispatcher (NCCL)
// implements just this interface.
#include <cstdint>
#include <vector>

#include "parallel/communicator.h"

namespace finemoe::moe {

struct ExchangeStats {
  double time_s = 0;
  int64_t bytes = 0;  // sent to and received from other ranks
};

// A run of send order: rows for other ranks (staged: they travel from a send-order buffer), or
// this rank's own rows, which its experts hold from expert_row of expert order on.
struct SendRun {
  int64_t send_row = 0;
  int64_t rows = 0;
  int64_t expert_row = -1;  // own runs only
  bool own() const { return expert_row >= 0; }
};

template <typename T>
class TokenDispatcher {
 public:
  virtual ~TokenDispatcher() = default;
  // Exchanges copy counts (collective over the expert-parallel group). send_per_expert[e]: copies
  // this rank sends to global expert e. same_on_every_rank: every rank sends these same counts
  // (static shapes), so nothing needs exchanging.
  virtual void plan(const std::vector<int64_t>& send_per_expert, bool same_on_every_rank = false) = 0;
  // The same when the caller exchanged the counts itself (on the device, with the rows' communicator):
  // received[source rank * n_local + j] = copies source sends to this rank's local expert j.
  virtual void plan_received(const std::vector<int64_t>& send_per_expert, const std::vector<int64_t>& received) = 0;
  // Ranks of the expert-parallel group (the exchanges are collective over it).
  virtual int group_size() const = 0;
  virtual int64_t sent_rows() const = 0;
  virtual int64_t received_rows() const = 0;
  // Rows received per local expert (the expert computation's batch sizes).
  virtual const std::vector<int64_t>& received_per_local_expert() const = 0;
  // Send order as runs, ascending and covering it; consecutive own rows that stay consecutive in
  // expert order form one run (at one rank: a single run).
  virtual const std::vector<SendRun>& send_runs() const = 0;
  // sent_rows() rows of `width` in send order -> received_rows() rows in expert order.
  virtual void to_experts(const T* send, T* recv, int width) = 0;
  // received_rows() rows in expert order -> sent_rows() rows in send order at their source.
  virtual void from_experts(const T* recv, T* send, int width) = 0;
  // The same two exchanges for the staged runs only: own rows are neither read nor written, so a
  // caller can gather them straight into expert order and combine them from there.
  virtual void to_experts_staged(const T* send, T* recv, int width) = 0;
  virtual void from_experts_staged(const T* recv, T* send, int width) = 0;
  virtual const ExchangeStats& exchange_stats() const = 0;
  virtual void reset_exchange_stats() = 0;
};

// All-to-all over a Communicator: counts with all_to_all, rows with all_to_all_blocks, which
// sends each (destination rank, expert) block of send order and receives it straight into its
// place in expert order (no staging buffer, no regroup copy; the own block is one local copy).
// from_experts() is the same exchange with the layouts swapped. A null communicator is a group of
// one rank (all experts local): the exchange is trivial (this rank receives what it sends) and the
// rest of the code path is the same.
template <typename T>
class AllToAllDispatcher final : public TokenDispatcher<T> {
 public:
  AllToAllDispatcher(Communicator* expert_group, int n_experts);
  void plan(const std::vector<int64_t>& send_per_expert, bool same_on_every_rank = false) override;
  void plan_received(const std::vector<int64_t>& send_per_expert, const std::vector<int64_t>& received) override;
  int group_size() const override { return ranks_; }
  int64_t sent_rows() const override { return sent_rows_; }
  int64_t received_rows() const override { return received_rows_; }
  const std::vector<int64_t>& received_per_local_expert() const override { return per_local_expert_; }
  const std::vector<SendRun>& send_runs() const override { return runs_; }
  void to_experts(const T* send, T* recv, int width) override;
  void from_experts(const T* recv, T* send, int width) override;
  void to_experts_staged(const T* send, T* recv, int width) override;
  void from_experts_staged(const T* recv, T* send, int width) override;
  const ExchangeStats& exchange_stats() const override { return stats_; }
  void reset_exchange_stats() override { stats_ = ExchangeStats{}; }

 private:
  // Layouts and runs from the counts (recv_counts_ set).
  void lay_out(const std::vector<int64_t>& send_per_expert);
  // Without a communicator: blocks between send order and expert order (one rank: the same order).
  void copy_local(const T* in, T* out, int width) const;
  void exchange(const T* in, const BlockLayout& in_layout, T* out, const BlockLayout& out_layout, int width);

  Communicator* comm_;
  int ranks_;
  int n_local_;
  int my_rank_;
  std::vector<int64_t> recv_counts_;  // [source rank][local expert]
  std::vector<int64_t> per_local_expert_;
  // Pieces in rows, grouped by peer rank: send_layout_ the (peer, peer's local expert) blocks of
  // send order, expert_layout_ the (source, local expert) blocks of expert order.
  BlockLayout send_layout_, expert_layout_;
  // The same without this rank's own pieces (counts 0), for the staged exchanges.
  BlockLayout staged_send_layout_, staged_expert_layout_;
  std::vector<SendRun> runs_;
  int64_t remote_sent_rows_ = 0, remote_received_rows_ = 0;  // to / from other ranks
  int64_t sent_rows_ = 0;
  int64_t received_rows_ = 0;
  ExchangeStats stats_;
};

// out[c] = x[rows[c]] for the n copies (permute into send order).
template <typename T>
void gather_rows(const T* x, const int32_t* rows, int64_t n, int width, T* out);
// y[rows[c]] += gate[c] * back[c] (combine; y must be initialised).
template <typename T>
void combine_rows(const T* back, const int32_t* rows, const T* gate, int64_t n, int width, T* y);
// Backward of combine_rows: dback[c] = gate[c] * dy[rows[c]], dgate[c] = <dy[rows[c]], back[c]>.
template <typename T>
void combine_rows_backward(const T* dy, const T* back, const int32_t* rows, const T* gate, int64_t n,
                           int width, T* dback, T* dgate);
// Backward of gather_rows: dx[rows[c]] += dout[c] (dx must be initialised).
template <typename T>
void scatter_add_rows(const T* dout, const int32_t* rows, int64_t n, int width, T* dx);

}  // namespace finemoe::moe
