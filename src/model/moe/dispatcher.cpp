#include "model/moe/dispatcher.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include <climits>
#include <type_traits>

#include "parallel/communicator.h"
#include "parallel/mpi_check.h"
#include "parallel/mpi_communicator.h"
#include "util/check.h"

namespace finemoe::moe {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

template <typename T>
AllToAllDispatcher<T>::AllToAllDispatcher(Communicator* expert_group, int n_experts)
    : comm_(expert_group),
      ranks_(expert_group ? expert_group->size() : 1),
      my_rank_(expert_group ? expert_group->rank() : 0) {
  FINEMOE_CHECK(n_experts % ranks_ == 0,
                "n_experts " << n_experts << " not divisible by the expert-parallel size " << ranks_);
  n_local_ = n_experts / ranks_;
  recv_counts_.assign(size_t(ranks_) * n_local_, 0);
  rank_major_offset_.assign(recv_counts_.size(), 0);
  expert_major_offset_.assign(recv_counts_.size(), 0);
  send_rank_rows_.assign(ranks_, 0);
  recv_rank_rows_.assign(ranks_, 0);
  send_elems_.assign(ranks_, 0);
  recv_elems_.assign(ranks_, 0);
  per_local_expert_.assign(n_local_, 0);
}

template <typename T>
void AllToAllDispatcher<T>::plan(const std::vector<int64_t>& send_per_expert) {
  FINEMOE_CHECK(send_per_expert.size() == size_t(ranks_) * n_local_,
                "plan needs one count per global expert, got " << send_per_expert.size());
  const auto t0 = std::chrono::steady_clock::now();
  if (comm_) {
    comm_->all_to_all(send_per_expert.data(), recv_counts_.data(), n_local_, DType::i64);
    stats_.bytes += 2 * int64_t(ranks_ - 1) * n_local_ * int64_t(sizeof(int64_t));
  } else {
    recv_counts_ = send_per_expert;
  }
  stats_.time_s += seconds_since(t0);
  sent_rows_ = received_rows_ = own_send_offset_ = 0;
  std::fill(per_local_expert_.begin(), per_local_expert_.end(), 0);
  for (int r = 0; r < ranks_; ++r) {
    send_rank_rows_[r] = recv_rank_rows_[r] = 0;
    for (int j = 0; j < n_local_; ++j) {
      send_rank_rows_[r] += send_per_expert[size_t(r) * n_local_ + j];
      const int64_t c = recv_counts_[size_t(r) * n_local_ + j];
      recv_rank_rows_[r] += c;
      per_local_expert_[j] += c;
    }
    if (r < my_rank_) own_send_offset_ += send_rank_rows_[r];
    sent_rows_ += send_rank_rows_[r];
    received_rows_ += recv_rank_rows_[r];
  }
  // Offsets of each (source rank, local expert) block in rank-major and in expert-major order.
  int64_t off = 0;
  for (size_t b = 0; b < recv_counts_.size(); ++b) {
    rank_major_offset_[b] = off;
    off += recv_counts_[b];
  }
  off = 0;
  for (int j = 0; j < n_local_; ++j)
    for (int r = 0; r < ranks_; ++r) {
      expert_major_offset_[size_t(r) * n_local_ + j] = off;
      off += recv_counts_[size_t(r) * n_local_ + j];
    }
}

template <typename T>
void AllToAllDispatcher<T>::exchange(const T* send, const std::vector<int64_t>& send_rank_rows, T* recv,
                                     const std::vector<int64_t>& recv_rank_rows, int width) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < ranks_; ++r) {
    send_elems_[r] = send_rank_rows[r] * width;
    recv_elems_[r] = recv_rank_rows[r] * width;
    if (r != my_rank_) stats_.bytes += (send_elems_[r] + recv_elems_[r]) * int64_t(sizeof(T));
  }
  comm_->all_to_all_v(send, send_elems_, recv, recv_elems_, dtype_of<T>());
  stats_.time_s += seconds_since(t0);
}

template <typename T>
void AllToAllDispatcher<T>::copy_blocks(const T* in, T* out, int width, bool to_expert_major) const {
  for (size_t b = 0; b < recv_counts_.size(); ++b) {
    const int64_t rows = recv_counts_[b];
    if (rows == 0) continue;
    const int64_t from = to_expert_major ? rank_major_offset_[b] : expert_major_offset_[b];
    const int64_t to = to_expert_major ? expert_major_offset_[b] : rank_major_offset_[b];
    std::memcpy(out + to * width, in + from * width, size_t(rows) * width * sizeof(T));
  }
}

template <typename T>
bool AllToAllDispatcher<T>::exchange_remote(const T* send, const std::vector<int64_t>& send_rank_rows, T* recv,
                                            const std::vector<int64_t>& recv_rank_rows, int width) {
  auto* mpi = dynamic_cast<MpiCommunicator*>(comm_);
  if (!mpi) return false;
  if (std::max(sent_rows_, received_rows_) * int64_t(width) > int64_t(INT_MAX)) return false;
  const auto t0 = std::chrono::steady_clock::now();
  const size_t n = static_cast<size_t>(ranks_);
  std::vector<int> sc(n), sd(n), rc(n), rd(n);
  int64_t s_off = 0, r_off = 0;
  for (int r = 0; r < ranks_; ++r) {
    const int64_t s_elems = send_rank_rows[r] * width, r_elems = recv_rank_rows[r] * width;
    sc[r] = r == my_rank_ ? 0 : int(s_elems);
    rc[r] = r == my_rank_ ? 0 : int(r_elems);
    sd[r] = int(s_off);
    rd[r] = int(r_off);
    s_off += s_elems;
    r_off += r_elems;
    if (r != my_rank_) stats_.bytes += (s_elems + r_elems) * int64_t(sizeof(T));
  }
  const MPI_Datatype type = std::is_same<T, float>::value ? MPI_FLOAT : MPI_DOUBLE;
  MPI_CHECK(MPI_Alltoallv(send, sc.data(), sd.data(), type, recv, rc.data(), rd.data(), type, mpi->handle()));
  stats_.time_s += seconds_since(t0);
  return true;
}

template <typename T>
void AllToAllDispatcher<T>::copy_blocks_own(const T* in, T* out, const T* own_in, T* own_out, int width,
                                            bool to_expert_major) const {
  const int64_t own_first = rank_major_offset_[size_t(my_rank_) * n_local_];
  for (size_t b = 0; b < recv_counts_.size(); ++b) {
    const int64_t rows = recv_counts_[b];
    if (rows == 0) continue;
    const bool mine = int(b / size_t(n_local_)) == my_rank_;
    const size_t bytes = size_t(rows) * width * sizeof(T);
    // Own block rows sit in send order at own_send_offset_, expert by expert, like staging's.
    const int64_t rank_row = mine ? own_send_offset_ + rank_major_offset_[b] - own_first : rank_major_offset_[b];
    if (to_expert_major)
      std::memcpy(out + expert_major_offset_[b] * width, (mine ? own_in : in) + rank_row * width, bytes);
    else
      std::memcpy((mine ? own_out : out) + rank_row * width, in + expert_major_offset_[b] * width, bytes);
  }
}

// Without a communicator this rank is the only source, so what it sends is what it receives and
// the regrouping alone (one block per expert) moves the rows.
template <typename T>
void AllToAllDispatcher<T>::to_experts(const T* send, T* recv, int width) {
  if (!comm_) return copy_blocks(send, recv, width, true);
  if (staging_.size() < size_t(received_rows_) * width) staging_.resize(size_t(received_rows_) * width);
  if (exchange_remote(send, send_rank_rows_, staging_.data(), recv_rank_rows_, width)) {
    copy_blocks_own(staging_.data(), recv, send, nullptr, width, true);
    return;
  }
  exchange(send, send_rank_rows_, staging_.data(), recv_rank_rows_, width);
  copy_blocks(staging_.data(), recv, width, true);
}

template <typename T>
void AllToAllDispatcher<T>::from_experts(const T* recv, T* send, int width) {
  if (!comm_) return copy_blocks(recv, send, width, false);
  if (staging_.size() < size_t(received_rows_) * width) staging_.resize(size_t(received_rows_) * width);
  if (dynamic_cast<MpiCommunicator*>(comm_) && std::max(sent_rows_, received_rows_) * int64_t(width) <= int64_t(INT_MAX)) {
    copy_blocks_own(recv, staging_.data(), nullptr, send, width, false);
    exchange_remote(staging_.data(), recv_rank_rows_, send, send_rank_rows_, width);
    return;
  }
  copy_blocks(recv, staging_.data(), width, false);
  exchange(staging_.data(), recv_rank_rows_, send, send_rank_rows_, width);
}

template <typename T>
void gather_rows(const T* x, const int32_t* rows, int64_t n, int width, T* out) {
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < n; ++c) std::memcpy(out + c * width, x + int64_t(rows[c]) * width, width * sizeof(T));
}

// The scatters run serially: copies of one token would race, and they are memory bound anyway.
template <typename T>
void combine_rows(const T* back, const int32_t* rows, const T* gate, int64_t n, int width, T* y) {
  for (int64_t c = 0; c < n; ++c) {
    T* yr = y + int64_t(rows[c]) * width;
    const T* b = back + c * width;
    const T g = gate[c];
    for (int i = 0; i < width; ++i) yr[i] += g * b[i];
  }
}

template <typename T>
void combine_rows_backward(const T* dy, const T* back, const int32_t* rows, const T* gate, int64_t n,
                           int width, T* dback, T* dgate) {
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < n; ++c) {
    const T* d = dy + int64_t(rows[c]) * width;
    const T* b = back + c * width;
    T* db = dback + c * width;
    const T g = gate[c];
    T dot = 0;
    for (int i = 0; i < width; ++i) {
      db[i] = g * d[i];
      dot += d[i] * b[i];
    }
    dgate[c] = dot;
  }
}

template <typename T>
void scatter_add_rows(const T* dout, const int32_t* rows, int64_t n, int width, T* dx) {
  for (int64_t c = 0; c < n; ++c) {
    T* d = dx + int64_t(rows[c]) * width;
    const T* s = dout + c * width;
    for (int i = 0; i < width; ++i) d[i] += s[i];
  }
}

#define FINEMOE_DISPATCH(T)                                                                          \
  template class AllToAllDispatcher<T>;                                                              \
  template void gather_rows<T>(const T*, const int32_t*, int64_t, int, T*);                          \
  template void combine_rows<T>(const T*, const int32_t*, const T*, int64_t, int, T*);               \
  template void combine_rows_backward<T>(const T*, const T*, const int32_t*, const T*, int64_t, int, T*, \
                                         T*);                                                        \
  template void scatter_add_rows<T>(const T*, const int32_t*, int64_t, int, T*);
FINEMOE_DISPATCH(float)
FINEMOE_DISPATCH(double)
#undef FINEMOE_DISPATCH

}  // namespace finemoe::moe
