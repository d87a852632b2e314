#include "kernels/moe_routing.h"

#include "kernels/cuda_check.h"
#include "kernels/device_util.cuh"
#include "util/check.h"

namespace finemoe::cuda {
namespace {
using namespace detail;

// route_tokens runs in passes over the units (slot, expert), one thread each:
//   count   the selection, giving this rank's kept copies per unit (and `requested`);
//   scan    per expert over the slots (chunked), giving each unit's first place within its
//           expert, the per-expert counts and the experts' offsets;
//   write   the selection again, writing each kept copy at its expert's offset + its unit's place +
//           its place within the unit.
// Token choice first finds each token's k-th best expert key (one warp per token), so that a unit
// decides "token i asked expert e" with one comparison.

// Threads of the single block that scans the experts' chunk sums.
constexpr int kScanThreads = 1024;
// Chunks per expert of the scan over slots: enough parallel work for small expert counts, and a
// short sequential scan over the chunks.
constexpr int64_t kMaxChunks = 1024;
constexpr size_t kAlign = 256;

// A total order with the selectors' rule (higher probability first, then the lower index) as an
// unsigned compare: the larger key ranks before. The high word maps the float monotonically (-0 as
// +0, which compare equal), the low word is ~index. Keys are distinct even for NaN probabilities,
// so a diverging run cannot keep more than `capacity` tokens or write two copies to one place.
__device__ __forceinline__ uint64_t order_key(float p, int index) {
  uint32_t u = __float_as_uint(p);
  if ((u << 1) == 0) u = 0;
  const uint32_t ordered = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (uint64_t(ordered) << 32) | uint32_t(~uint32_t(index));
}

// threshold[r] = the k-th largest order_key of row r: token r asks expert e iff key(e) >= it. A
// bitwise search from the top bit: t stays the largest prefix with at least k keys >= t; the keys
// are distinct, so it ends on the k-th key exactly. One warp per row.
__global__ void top_k_threshold_kernel(const float* probs, int64_t rows, int n, int k, uint64_t* threshold) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = warp_id(); r < rows; r += warp_count()) {
    const float* p = probs + r * n;
    uint64_t t = 0;
    for (int bit = 63; bit >= 0; --bit) {
      const uint64_t candidate = t | (uint64_t(1) << bit);
      int at_least = 0;
      for (int e = lane; e < n; e += 32) at_least += order_key(p[e], e) >= candidate ? 1 : 0;
      if (warp_sum(at_least) >= k) t = candidate;
    }
    if (lane == 0) threshold[r] = t;
  }
}

// Where a unit's kept copies go (write pass).
struct CopyOut {
  const int32_t* unit_place;     // [slots * E]: first place of the unit within its expert
  const int64_t* expert_offset;  // [E]
  const float* local_probs;
  int32_t* row;
  int32_t* expert;
  float* gate;

  __device__ void put(int64_t unit, int e, int32_t local_row, int place_in_unit, int n_experts) const {
    const int64_t at = expert_offset[e] + unit_place[unit] + place_in_unit;
    row[at] = local_row;
    expert[at] = e;
    gate[at] = local_probs[int64_t(local_row) * n_experts + e];
  }
};

// The geometry of unit u = slot * E + e, slot = g * context + p.
struct Unit {
  int e, g, p;
  const float* col;  // token i's probability for e: col[i * stride]
  int64_t stride;
  int seq0;          // this rank's sequence index of the group's token 0 (may be out of range)

  __device__ Unit(const float* group_probs, const cpu::RoutingShape& s, int64_t u) {
    e = int(u % s.n_experts);
    const int64_t slot = u / s.n_experts;
    g = int(slot / s.context);
    p = int(slot % s.context);
    stride = int64_t(s.context) * s.n_experts;
    col = group_probs + (int64_t(g) * s.group_size * s.context + p) * s.n_experts + e;
    seq0 = g * s.group_size - s.first_local_seq;
  }
  __device__ bool local(int i, const cpu::RoutingShape& s) const {
    return seq0 + i >= 0 && seq0 + i < s.local_seqs;
  }
  __device__ int32_t local_row(int i, const cpu::RoutingShape& s) const { return (seq0 + i) * s.context + p; }
};

// Expert choice: e keeps the `capacity` tokens of the slot ranking first. A token's rank is the
// number of tokens ranking before it; its place among this rank's kept copies is the number of local
// tokens ranking before it (they are kept too).
template <bool Write>
__global__ void expert_choice_kernel(const float* group_probs, cpu::RoutingShape s, int64_t units, int capacity,
                                     int32_t* count, int32_t* requested, CopyOut out) {
  for (int64_t u = thread_id(); u < units; u += thread_count()) {
    const Unit unit(group_probs, s, u);
    const int first = max(0, -unit.seq0), last = min(s.group_size, s.local_seqs - unit.seq0);
    int kept = 0;
    for (int i = first; i < last; ++i) {  // only this rank's tokens can be written
      const uint64_t key_i = order_key(unit.col[i * unit.stride], i);
      int rank = 0, local_rank = 0;
      for (int j = 0; j < s.group_size && rank < capacity; ++j)
        if (order_key(unit.col[j * unit.stride], j) > key_i) {
          ++rank;
          local_rank += unit.local(j, s) ? 1 : 0;
        }
      if (rank >= capacity) continue;
      if (Write) out.put(u, unit.e, unit.local_row(i, s), local_rank, s.n_experts);
      ++kept;
    }
    if (!Write) {
      count[u] = kept;
      if (requested) requested[u] = capacity;
    }
  }
}

// Token choice: the slot's tokens in order ask e when it is among their top_k; e keeps requests while
// its load is below capacity.
template <bool Write>
__global__ void token_choice_kernel(const float* group_probs, const uint64_t* threshold, cpu::RoutingShape s,
                                    int64_t units, int capacity, int32_t* count, int32_t* requested, CopyOut out) {
  for (int64_t u = thread_id(); u < units; u += thread_count()) {
    const Unit unit(group_probs, s, u);
    const uint64_t* token_threshold = threshold + int64_t(unit.g) * s.group_size * s.context + unit.p;
    int asked = 0, load = 0, kept = 0;
    for (int i = 0; i < s.group_size; ++i) {
      if (order_key(unit.col[i * unit.stride], unit.e) < token_threshold[int64_t(i) * s.context]) continue;
      ++asked;
      if (load == capacity) continue;
      ++load;
      if (!unit.local(i, s)) continue;
      if (Write) out.put(u, unit.e, unit.local_row(i, s), kept, s.n_experts);
      ++kept;
    }
    if (!Write) {
      count[u] = kept;
      if (requested) requested[u] = asked;
    }
  }
}

// chunk_sum[c * E + e] = sum of count[slot * E + e] over the chunk's slots.
__global__ void chunk_sum_kernel(const int32_t* count, int64_t slots, int n_experts, int64_t chunk_len,
                                 int64_t chunks, int64_t* chunk_sum) {
  for (int64_t u = thread_id(); u < chunks * n_experts; u += thread_count()) {
    const int64_t c = u / n_experts, e = u % n_experts;
    const int64_t end = min(slots, (c + 1) * chunk_len);
    int64_t sum = 0;
    for (int64_t slot = c * chunk_len; slot < end; ++slot) sum += count[slot * n_experts + e];
    chunk_sum[u] = sum;
  }
}

// One block: chunk sums become exclusive prefixes per expert; per_expert = the totals; the experts'
// offsets are their exclusive prefix.
__global__ void expert_scan_kernel(int64_t* chunk_sum, int64_t chunks, int n_experts, int64_t* per_expert,
                                   int64_t* expert_offset) {
  for (int e = threadIdx.x; e < n_experts; e += blockDim.x) {
    int64_t run = 0;
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t v = chunk_sum[c * n_experts + e];
      chunk_sum[c * n_experts + e] = run;
      run += v;
    }
    per_expert[e] = run;
  }
  __syncthreads();  // per_expert is complete (global writes are visible to the block after it)
  if (threadIdx.x == 0) {
    int64_t run = 0;
    for (int e = 0; e < n_experts; ++e) {
      expert_offset[e] = run;
      run += per_expert[e];
    }
  }
}

// In place: count[slot * E + e] becomes the unit's first place within expert e.
__global__ void chunk_scan_kernel(int32_t* count, const int64_t* chunk_base, int64_t slots, int n_experts,
                                  int64_t chunk_len, int64_t chunks) {
  for (int64_t u = thread_id(); u < chunks * n_experts; u += thread_count()) {
    const int64_t c = u / n_experts, e = u % n_experts;
    const int64_t end = min(slots, (c + 1) * chunk_len);
    int64_t run = chunk_base[u];
    for (int64_t slot = c * chunk_len; slot < end; ++slot) {
      const int32_t v = count[slot * n_experts + e];
      count[slot * n_experts + e] = int32_t(run);
      run += v;
    }
  }
}

__global__ void balance_loss_kernel(const float* group_probs, const int32_t* requested, cpu::RoutingShape s,
                                    int64_t units, double coef, int local_tokens_per_slot, float* grad,
                                    double* loss_sum) {
  __shared__ double shared[32];
  const int E = s.n_experts, gs = s.group_size;
  double loss = 0;
  for (int64_t u = thread_id(); u < units; u += thread_count()) {
    const Unit unit(group_probs, s, u);
    const double f = double(requested[u]) / (double(gs) * s.top_k);
    double mean_p = 0;
    for (int i = 0; i < gs; ++i) mean_p += unit.col[i * unit.stride];
    mean_p /= gs;
    loss += E * f * mean_p;
    grad[u] = static_cast<float>(coef * E * f);
  }
  loss = block_sum(loss, shared);
  if (threadIdx.x == 0) atomicAdd(loss_sum, coef * local_tokens_per_slot * loss);
}

// One warp per row.
__global__ void router_z_loss_kernel(const float* logits, const float* probs, int64_t rows, int n, double scale,
                                     float* dlogits, double* loss_sum) {
  __shared__ double shared[32];
  const int lane = threadIdx.x % 32;
  double total = 0;  // lane 0's rows
  for (int64_t r = warp_id(); r < rows; r += warp_count()) {
    const float* l = logits + r * n;
    float mx = -INFINITY;
    for (int e = lane; e < n; e += 32) mx = fmaxf(mx, l[e]);
    mx = warp_max(mx);
    float sum = 0;
    for (int e = lane; e < n; e += 32) sum += expf(l[e] - mx);
    const float lse = mx + logf(warp_sum(sum));
    if (lane == 0) total += double(lse) * double(lse);
    const float c = static_cast<float>(2 * scale) * lse;
    for (int e = lane; e < n; e += 32) dlogits[r * n + e] = c * probs[r * n + e];
  }
  total = block_sum(total, shared);
  if (threadIdx.x == 0) atomicAdd(loss_sum, scale * total);
}

// dprobs = 0 (+ the token's slot's balance gradient). The gate's value is added next; float addition
// commutes, so the sum is the reference's (gate first) bit for bit.
__global__ void dprobs_init_kernel(const float* balance_grad, cpu::RoutingShape s, int64_t total, float* dprobs) {
  const int E = s.n_experts;
  for (int64_t u = thread_id(); u < total; u += thread_count()) {
    if (!balance_grad) {
      dprobs[u] = 0.0f;
      continue;
    }
    const int64_t t = u / E, e = u % E;
    const int64_t seq = s.first_local_seq + t / s.context, pos = t % s.context;
    dprobs[u] = 0.0f + balance_grad[((seq / s.group_size) * s.context + pos) * E + e];
  }
}

// (row, expert) pairs are unique: no two copies add to the same element.
__global__ void dprobs_gate_kernel(const float* dgate, const int32_t* copy_row, const int32_t* copy_expert,
                                   int64_t copies, int n_experts, float* dprobs) {
  for (int64_t c = thread_id(); c < copies; c += thread_count())
    dprobs[int64_t(copy_row[c]) * n_experts + copy_expert[c]] += dgate[c];
}

// One warp per row.
__global__ void softmax_backward_kernel(const float* probs, const float* dprobs, float* dlogits, int64_t rows,
                                        int n) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = warp_id(); r < rows; r += warp_count()) {
    const float* p = probs + r * n;
    const float* dp = dprobs + r * n;
    float* dl = dlogits + r * n;
    float dot = 0;
    for (int e = lane; e < n; e += 32) dot += p[e] * dp[e];
    dot = warp_sum(dot);
    for (int e = lane; e < n; e += 32) dl[e] += p[e] * (dp[e] - dot);
  }
}

// route_tokens' scratch, carved from the caller's workspace (each part aligned to kAlign; the base
// pointer may have any alignment).
struct RouteWorkspace {
  int64_t chunk_len = 1, chunks = 0;
  size_t threshold_bytes = 0, count_bytes = 0, chunk_bytes = 0, offset_bytes = 0;

  explicit RouteWorkspace(const cpu::RoutingShape& s) {
    const int64_t slots = s.slots();
    if (slots > 0) {
      chunks = std::min<int64_t>(slots, kMaxChunks);
      chunk_len = (slots + chunks - 1) / chunks;
      chunks = (slots + chunk_len - 1) / chunk_len;
    }
    const int64_t buffer_rows = slots * s.group_size;
    threshold_bytes = s.token_choice ? aligned(size_t(buffer_rows) * sizeof(uint64_t)) : 0;
    count_bytes = aligned(size_t(slots) * s.n_experts * sizeof(int32_t));
    chunk_bytes = aligned(size_t(chunks) * s.n_experts * sizeof(int64_t));
    offset_bytes = aligned(size_t(s.n_experts) * sizeof(int64_t));
  }
  static size_t aligned(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }
  size_t bytes() const { return kAlign + threshold_bytes + count_bytes + chunk_bytes + offset_bytes; }
};

}  // namespace

size_t route_tokens_workspace_bytes(const cpu::RoutingShape& s) { return RouteWorkspace(s).bytes(); }

void route_tokens(const float* group_probs, const float* local_probs, const cpu::RoutingShape& s,
                  int32_t* copy_row, int32_t* copy_expert, float* copy_gate, int64_t* per_expert,
                  int32_t* requested, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const int E = s.n_experts;
  FINEMOE_CHECK(E >= 1, "n_experts " << E);
  FINEMOE_CHECK(!s.token_choice || (s.top_k >= 1 && s.top_k <= E), "top_k " << s.top_k << " not in [1, " << E << "]");
  const RouteWorkspace layout(s);
  FINEMOE_CHECK(workspace_bytes >= layout.bytes(),
                "route_tokens workspace of " << workspace_bytes << " bytes, needs " << layout.bytes());
  const int64_t slots = s.slots();
  if (slots == 0) {
    CUDA_CHECK(cudaMemsetAsync(per_expert, 0, size_t(E) * sizeof(int64_t), stream));
    return;
  }
  const int capacity = s.capacity();

  auto* base = static_cast<char*>(workspace);
  base += (kAlign - reinterpret_cast<uintptr_t>(base) % kAlign) % kAlign;
  auto* threshold = reinterpret_cast<uint64_t*>(base);
  auto* count = reinterpret_cast<int32_t*>(base + layout.threshold_bytes);
  auto* chunk_sum = reinterpret_cast<int64_t*>(base + layout.threshold_bytes + layout.count_bytes);
  auto* expert_offset =
      reinterpret_cast<int64_t*>(base + layout.threshold_bytes + layout.count_bytes + layout.chunk_bytes);

  const int64_t units = slots * E;
  const CopyOut none{};
  const CopyOut out{count, expert_offset, local_probs, copy_row, copy_expert, copy_gate};
  if (s.token_choice) {
    const int64_t rows = slots * s.group_size;
    top_k_threshold_kernel<<<grid_for_rows(rows), kThreads, 0, stream>>>(group_probs, rows, E, s.top_k, threshold);
    CUDA_CHECK_LAUNCH();
    token_choice_kernel<false><<<grid_for(units), kThreads, 0, stream>>>(group_probs, threshold, s, units, capacity,
                                                                          count, requested, none);
  } else {
    expert_choice_kernel<false><<<grid_for(units), kThreads, 0, stream>>>(group_probs, s, units, capacity, count,
                                                                           requested, none);
  }
  CUDA_CHECK_LAUNCH();

  const int64_t chunk_units = layout.chunks * E;
  chunk_sum_kernel<<<grid_for(chunk_units), kThreads, 0, stream>>>(count, slots, E, layout.chunk_len, layout.chunks,
                                                                   chunk_sum);
  CUDA_CHECK_LAUNCH();
  expert_scan_kernel<<<1, kScanThreads, 0, stream>>>(chunk_sum, layout.chunks, E, per_expert, expert_offset);
  CUDA_CHECK_LAUNCH();
  chunk_scan_kernel<<<grid_for(chunk_units), kThreads, 0, stream>>>(count, chunk_sum, slots, E, layout.chunk_len,
                                                                    layout.chunks);
  CUDA_CHECK_LAUNCH();

  if (s.token_choice)
    token_choice_kernel<true><<<grid_for(units), kThreads, 0, stream>>>(group_probs, threshold, s, units, capacity,
                                                                         nullptr, nullptr, out);
  else
    expert_choice_kernel<true><<<grid_for(units), kThreads, 0, stream>>>(group_probs, s, units, capacity, nullptr,
                                                                          nullptr, out);
  CUDA_CHECK_LAUNCH();
}

void balance_loss(const float* group_probs, const int32_t* requested, const cpu::RoutingShape& s, double coef,
                  int local_tokens_per_slot, float* grad, double* loss_sum, cudaStream_t stream) {
  const int64_t units = s.slots() * s.n_experts;
  if (units == 0) return;
  balance_loss_kernel<<<grid_for(units), kThreads, 0, stream>>>(group_probs, requested, s, units, coef,
                                                                local_tokens_per_slot, grad, loss_sum);
  CUDA_CHECK_LAUNCH();
}

void router_z_loss(const float* logits, const float* probs, int64_t rows, int n_experts, double scale,
                   float* dlogits, double* loss_sum, cudaStream_t stream) {
  if (rows == 0) return;
  router_z_loss_kernel<<<grid_for_rows(rows), kThreads, 0, stream>>>(logits, probs, rows, n_experts, scale,
                                                                     dlogits, loss_sum);
  CUDA_CHECK_LAUNCH();
}

void routing_backward(const float* dgate, const int32_t* copy_row, const int32_t* copy_expert, int64_t copies,
                      const float* balance_grad, const cpu::RoutingShape& s, float* dprobs, cudaStream_t stream) {
  const int64_t total = int64_t(s.local_seqs) * s.context * s.n_experts;
  if (total == 0) return;
  dprobs_init_kernel<<<grid_for(total), kThreads, 0, stream>>>(balance_grad, s, total, dprobs);
  CUDA_CHECK_LAUNCH();
  if (copies == 0) return;
  dprobs_gate_kernel<<<grid_for(copies), kThreads, 0, stream>>>(dgate, copy_row, copy_expert, copies, s.n_experts,
                                                                dprobs);
  CUDA_CHECK_LAUNCH();
}

void softmax_backward_accumulate(const float* probs, const float* dprobs, float* dlogits, int64_t rows, int n,
                                 cudaStream_t stream) {
  if (rows == 0) return;
  softmax_backward_kernel<<<grid_for_rows(rows), kThreads, 0, stream>>>(probs, dprobs, dlogits, rows, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace finemoe::cuda
