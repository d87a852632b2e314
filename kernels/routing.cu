#include "kernels/cuda_check.h"
#include "kernels/device_util.cuh"
#include "kernels/routing.h"

namespace finemoe::cuda {
namespace {
using namespace detail;

// a ranks before b: higher probability, or equal probability and lower index.
__device__ __forceinline__ bool ranks_before(float pa, int ia, float pb, int ib) {
  return pa > pb || (pa == pb && ia < ib);
}

__global__ void softmax_kernel(const float* logits, float* probs, int64_t rows, int n) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = warp_id(); r < rows; r += warp_count()) {
    const float* l = logits + r * n;
    float* p = probs + r * n;
    float mx = -INFINITY;
    for (int e = lane; e < n; e += 32) mx = fmaxf(mx, l[e]);
    mx = warp_max(mx);
    float sum = 0;
    for (int e = lane; e < n; e += 32) sum += expf(l[e] - mx);
    const float inv = 1.0f / warp_sum(sum);
    for (int e = lane; e < n; e += 32) p[e] = expf(l[e] - mx) * inv;
  }
}

// One warp per row, k rounds: each round takes the best expert ranking after the previous pick.
__global__ void top_k_kernel(const float* probs, int64_t rows, int n, int k, int32_t* experts, float* weights) {
  const int lane = threadIdx.x % 32;
  for (int64_t r = warp_id(); r < rows; r += warp_count()) {
    const float* p = probs + r * n;
    float prev_p = INFINITY;
    int prev_e = -1;
    for (int j = 0; j < k; ++j) {
      float best_p = -INFINITY;
      int best_e = n;  // none yet
      for (int e = lane; e < n; e += 32) {
        const float pe = p[e];
        if (ranks_before(prev_p, prev_e, pe, e) && (best_e == n || ranks_before(pe, e, best_p, best_e))) {
          best_p = pe;
          best_e = e;
        }
      }
      for (int offset = 16; offset > 0; offset >>= 1) {
        const float op = __shfl_xor_sync(0xffffffffu, best_p, offset);
        const int oe = __shfl_xor_sync(0xffffffffu, best_e, offset);
        if (oe != n && (best_e == n || ranks_before(op, oe, best_p, best_e))) {
          best_p = op;
          best_e = oe;
        }
      }
      if (lane == 0) {
        experts[r * k + j] = best_e;
        weights[r * k + j] = best_p;
      }
      prev_p = best_p;
      prev_e = best_e;
    }
  }
}

// One warp per (group, position, expert): a token's place is the number of tokens ranking before
// it, so the kept tokens land in order without sorting.
__global__ void expert_choice_kernel(const float* probs, int64_t slots, int group_size, int context,
                                     int n_experts, int capacity, int32_t* tokens, float* gates) {
  const int lane = threadIdx.x % 32;
  for (int64_t slot = warp_id(); slot < slots; slot += warp_count()) {
    const int e = int(slot % n_experts);
    const int64_t gp = slot / n_experts;
    const int64_t g = gp / context, p = gp % context;
    const float* col = probs + ((g * group_size) * context + p) * n_experts + e;
    const int64_t stride = int64_t(context) * n_experts;
    for (int i = lane; i < group_size; i += 32) {
      const float pi = col[i * stride];
      int place = 0;
      for (int j = 0; j < group_size && place < capacity; ++j)
        place += ranks_before(col[j * stride], j, pi, i) ? 1 : 0;
      if (place < capacity) {
        tokens[slot * capacity + place] = i;
        gates[slot * capacity + place] = pi;
      }
    }
  }
}
}  // namespace

void router_softmax(const float* logits, float* probs, int64_t rows, int n_experts, cudaStream_t stream) {
  if (rows == 0) return;
  softmax_kernel<<<grid_for_rows(rows), kThreads, 0, stream>>>(logits, probs, rows, n_experts);
  CUDA_CHECK_LAUNCH();
}

void router_top_k(const float* probs, int64_t rows, int n_experts, int k, int32_t* experts, float* weights,
                  cudaStream_t stream) {
  if (rows == 0) return;
  top_k_kernel<<<grid_for_rows(rows), kThreads, 0, stream>>>(probs, rows, n_experts, k, experts, weights);
  CUDA_CHECK_LAUNCH();
}

void expert_choice_select(const float* probs, int n_groups, int group_size, int context, int n_experts,
                          int capacity, int32_t* tokens, float* gates, cudaStream_t stream) {
  const int64_t slots = int64_t(n_groups) * context * n_experts;
  if (slots == 0) return;
  expert_choice_kernel<<<grid_for_rows(slots), kThreads, 0, stream>>>(probs, slots, group_size, context,
                                                                       n_experts, capacity, tokens, gates);
  CUDA_CHECK_LAUNCH();
}

}  // namespace finemoe::cuda
