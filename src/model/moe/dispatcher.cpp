#include "model/moe/dispatcher.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "backend/ops.h"
#include "parallel/communicator.h"
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
  per_local_expert_.assign(n_local_, 0);
  send_layout_.clear(ranks_);
  expert_layout_.clear(ranks_);
}

template <typename T>
void AllToAllDispatcher<T>::plan(const std::vector<int64_t>& send_per_expert, bool same_on_every_rank) {
  FINEMOE_CHECK(send_per_expert.size() == size_t(ranks_) * n_local_,
                "plan needs one count per global expert, got " << send_per_expert.size());
  const auto t0 = std::chrono::steady_clock::now();
  if (comm_ && same_on_every_rank) {
    for (int r = 0; r < ranks_; ++r)
      std::copy_n(send_per_expert.begin() + int64_t(my_rank_) * n_local_, n_local_,
                  recv_counts_.begin() + int64_t(r) * n_local_);
  } else if (comm_) {
    comm_->all_to_all(send_per_expert.data(), recv_counts_.data(), n_local_, DType::i64);
    stats_.bytes += 2 * int64_t(ranks_ - 1) * n_local_ * int64_t(sizeof(int64_t));
  } else {
    recv_counts_ = send_per_expert;
  }
  stats_.time_s += seconds_since(t0);
  lay_out(send_per_expert);
}

template <typename T>
void AllToAllDispatcher<T>::plan_received(const std::vector<int64_t>& send_per_expert,
                                          const std::vector<int64_t>& received) {
  FINEMOE_CHECK(send_per_expert.size() == size_t(ranks_) * n_local_ && received.size() == recv_counts_.size(),
                "plan_received needs one count per global expert and per (source rank, local expert)");
  recv_counts_ = received;
  lay_out(send_per_expert);
}

template <typename T>
void AllToAllDispatcher<T>::lay_out(const std::vector<int64_t>& send_per_expert) {
  std::fill(per_local_expert_.begin(), per_local_expert_.end(), 0);
  for (size_t b = 0; b < recv_counts_.size(); ++b) per_local_expert_[b % size_t(n_local_)] += recv_counts_[b];
  // Send order: destination-rank-major, expert-minor. The k-th piece for rank r is r's local
  // expert k, matching the k-th piece r receives from this rank.
  send_layout_.clear(ranks_);
  sent_rows_ = remote_sent_rows_ = 0;
  for (int r = 0; r < ranks_; ++r)
    for (int j = 0; j < n_local_; ++j) {
      const int64_t c = send_per_expert[size_t(r) * n_local_ + j];
      send_layout_.add(r, sent_rows_, c);
      sent_rows_ += c;
      if (r != my_rank_) remote_sent_rows_ += c;
    }
  // Expert order: local-expert-major, then source rank; the pieces listed per source rank.
  std::vector<int64_t> expert_first(size_t(n_local_) + 1, 0);
  for (int j = 0; j < n_local_; ++j) expert_first[j + 1] = expert_first[j] + per_local_expert_[j];
  received_rows_ = expert_first[n_local_];
  std::vector<int64_t> at(expert_first.begin(), expert_first.end() - 1);  // next row per local expert
  std::vector<int64_t> offset(recv_counts_.size());
  for (int r = 0; r < ranks_; ++r)  // within an expert, sources in rank order
    for (int j = 0; j < n_local_; ++j) {
      offset[size_t(r) * n_local_ + j] = at[j];
      at[j] += recv_counts_[size_t(r) * n_local_ + j];
    }
  expert_layout_.clear(ranks_);
  staged_expert_layout_.clear(ranks_);
  remote_received_rows_ = 0;
  for (int r = 0; r < ranks_; ++r)
    for (int j = 0; j < n_local_; ++j) {
      const size_t b = size_t(r) * n_local_ + j;
      expert_layout_.add(r, offset[b], recv_counts_[b]);
      staged_expert_layout_.add(r, offset[b], r == my_rank_ ? 0 : recv_counts_[b]);
      if (r != my_rank_) remote_received_rows_ += recv_counts_[b];
    }
  // Runs of send order: other ranks' pieces staged; this rank's pieces own, landing at the offset
  // of (this rank, local expert j) in expert order.
  staged_send_layout_.clear(ranks_);
  runs_.clear();
  for (int r = 0; r < ranks_; ++r)
    for (size_t k = 0; k < send_layout_.pieces(r); ++k) {
      const BlockLayout::Block& piece = send_layout_.piece(r, k);
      staged_send_layout_.add(r, piece.offset, r == my_rank_ ? 0 : piece.count);
      if (piece.count == 0) continue;
      const int64_t expert_row = r == my_rank_ ? offset[size_t(my_rank_) * n_local_ + k] : -1;
      SendRun* last = runs_.empty() ? nullptr : &runs_.back();
      const bool continues = last && last->own() == (expert_row >= 0) &&
                             (expert_row < 0 || last->expert_row + last->rows == expert_row);
      if (continues) {
        last->rows += piece.count;
      } else {
        runs_.push_back({piece.offset, piece.count, expert_row});
      }
    }
}

template <typename T>
void AllToAllDispatcher<T>::copy_local(const T* in, T* out, int width) const {
  // On the compute backend: a device copy on a GPU (no round trip of the rows through the host).
  if (sent_rows_ > 0) ops::copy(out, in, sent_rows_ * width);
}

template <typename T>
void AllToAllDispatcher<T>::exchange(const T* in, const BlockLayout& in_layout, T* out, const BlockLayout& out_layout,
                                     int width) {
  const auto t0 = std::chrono::steady_clock::now();
  comm_->all_to_all_blocks(in, in_layout, out, out_layout, dtype_of<T>(), width);
  stats_.bytes += (remote_sent_rows_ + remote_received_rows_) * width * int64_t(sizeof(T));
  stats_.time_s += seconds_since(t0);
}

// Without a communicator this rank is the only source and expert order is send order.
template <typename T>
void AllToAllDispatcher<T>::to_experts(const T* send, T* recv, int width) {
  if (!comm_) return copy_local(send, recv, width);
  exchange(send, send_layout_, recv, expert_layout_, width);
}

template <typename T>
void AllToAllDispatcher<T>::from_experts(const T* recv, T* send, int width) {
  if (!comm_) return copy_local(recv, send, width);
  exchange(recv, expert_layout_, send, send_layout_, width);
}

template <typename T>
void AllToAllDispatcher<T>::to_experts_staged(const T* send, T* recv, int width) {
  if (comm_ && ranks_ > 1) exchange(send, staged_send_layout_, recv, staged_expert_layout_, width);
}

template <typename T>
void AllToAllDispatcher<T>::from_experts_staged(const T* recv, T* send, int width) {
  if (comm_ && ranks_ > 1) exchange(recv, staged_expert_layout_, send, staged_send_layout_, width);
}

namespace {

// Outputs of gather_rows at least this large are written with streaming (non-temporal) stores:
// they exceed the caches, so ordinary stores would first read every destination line (a third of
// the permutation's memory traffic) and evict the source rows being gathered.
int64_t stream_store_bytes() {
  static const int64_t bytes = [] {
    const char* e = std::getenv("FINEMOE_GATHER_NT_BYTES");
    return e && *e ? int64_t(std::atoll(e)) : int64_t(32) << 20;
  }();
  return bytes;
}

#if defined(__SSE2__)
// bytes: a multiple of 16; dst 16-byte aligned.
inline void stream_copy(void* dst, const void* src, size_t bytes) {
  auto* d = static_cast<__m128i*>(dst);
  const auto* s = static_cast<const __m128i*>(src);
  for (size_t i = 0, n = bytes / 16; i < n; ++i) _mm_stream_si128(d + i, _mm_loadu_si128(s + i));
}
#endif

}  // namespace

template <typename T>
void gather_rows(const T* x, const int32_t* rows, int64_t n, int width, T* out) {
  const size_t row_bytes = size_t(width) * sizeof(T);
#if defined(__SSE2__)
  if (int64_t(n * row_bytes) >= stream_store_bytes() && row_bytes % 16 == 0 &&
      reinterpret_cast<uintptr_t>(out) % 16 == 0) {
#pragma omp parallel
    {
#pragma omp for schedule(static)
      for (int64_t c = 0; c < n; ++c) stream_copy(out + c * width, x + int64_t(rows[c]) * width, row_bytes);
      _mm_sfence();  // this thread's streaming stores are visible before the region's closing barrier
    }
    return;
  }
#endif
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < n; ++c) std::memcpy(out + c * width, x + int64_t(rows[c]) * width, row_bytes);
}

namespace {

// Columns [begin, end) of `width` for this thread of the current team: whole cache lines, so
// threads never write the same line. Serial code gets all of them.
template <typename T>
void column_slice(int width, int& begin, int& end) {
#ifdef _OPENMP
  const int t = omp_get_thread_num(), n = omp_get_num_threads();
#else
  const int t = 0, n = 1;
#endif
  const int line = int(64 / sizeof(T));
  const int64_t lines = (int64_t(width) + line - 1) / line;
  begin = int(std::min<int64_t>(width, lines * t / n * line));
  end = int(std::min<int64_t>(width, lines * (t + 1) / n * line));
}

// Below this many elements the scatters stay serial (a parallel region costs more).
constexpr int64_t kParallelScatterElems = int64_t(1) << 16;

// The scatters split the columns between threads: copies of one token would race if split by
// copy, while with columns every thread walks all copies in order, so each element gets the
// same additions in the same order as serially (bit-identical for any thread count).
// y[rows[c]] += gate[c] * src[c], or += src[c] without a gate.
template <typename T>
void scatter_rows_by_columns(const T* src, const int32_t* rows, const T* gate, int64_t n, int width, T* y) {
#pragma omp parallel if (n * int64_t(width) >= kParallelScatterElems)
  {
    int c0 = 0, c1 = 0;
    column_slice<T>(width, c0, c1);
    if (c1 > c0)
      for (int64_t c = 0; c < n; ++c) {
        T* __restrict yr = y + int64_t(rows[c]) * width;
        const T* __restrict b = src + c * width;
        if (gate) {
          const T g = gate[c];
          for (int i = c0; i < c1; ++i) yr[i] += g * b[i];
        } else {
          for (int i = c0; i < c1; ++i) yr[i] += b[i];
        }
      }
  }
}

}  // namespace

template <typename T>
void combine_rows(const T* back, const int32_t* rows, const T* gate, int64_t n, int width, T* y) {
  scatter_rows_by_columns(back, rows, gate, n, width, y);
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
  scatter_rows_by_columns<T>(dout, rows, nullptr, n, width, dx);
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
