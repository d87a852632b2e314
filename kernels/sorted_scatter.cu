#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda_check.h"
#include "kernels/device_util.cuh"
#include "kernels/sorted_scatter.h"
#include "util/check.h"

namespace finemoe::cuda {
namespace {
using namespace detail;

__global__ void iota_kernel(int32_t* out, int64_t n) {
  for (int64_t i = thread_id(); i < n; i += thread_count()) out[i] = int32_t(i);
}

// How many copies of its row a thread loads before adding them. The additions stay serial and in
// ascending copy order (the CPU loop's, bit for bit), so a row's sum is a chain as long as its copy
// count, which no order-preserving kernel can shorten; but the loads of a batch depend neither on one
// another nor on the sum, so a frequent row waits for memory once a batch instead of once a copy.
constexpr int kLoadAhead = 8;

// keys: the target rows in ascending order, order: the copy of each (ascending within a row). The
// thread at the first copy of a row sums the row's copies in order for its column; consecutive
// threads take consecutive columns (coalesced loads of each copy's row).
template <typename T>
__global__ void run_sum_kernel(const T* src, const int32_t* keys, const int32_t* order, const float* gate, int64_t n,
                               int width, float* dst) {
  const int64_t total = n * width;
  for (int64_t idx = thread_id(); idx < total; idx += thread_count()) {
    const int64_t i = idx / width;
    const int col = int(idx % width);
    const int32_t key = keys[i];
    if (i > 0 && keys[i - 1] == key) continue;
    float* out = dst + int64_t(key) * width + col;
    float acc = *out;
    for (int64_t j = i;;) {
      float value[kLoadAhead] = {}, weight[kLoadAhead] = {};
      int loaded = 0;  // the row's copies among j .. j + kLoadAhead - 1: a prefix (keys are sorted)
#pragma unroll
      for (int k = 0; k < kLoadAhead; ++k) {
        if (j + k < n && keys[j + k] == key) {
          const int64_t c = order[j + k];
          value[k] = to_float(src[c * width + col]);
          weight[k] = gate ? gate[c] : 1.0f;
          ++loaded;
        }
      }
#pragma unroll
      for (int k = 0; k < kLoadAhead; ++k)
        if (k < loaded) acc += gate ? weight[k] * value[k] : value[k];
      if (loaded < kLoadAhead) break;
      j += kLoadAhead;
    }
    *out = acc;
  }
}

size_t aligned(size_t bytes) { return (bytes + 255) / 256 * 256; }

// The scratch of one call: the sorted keys, the copy ids and their sorted order (n ints each), then
// CUB's storage for sorting n (key, value) int pairs on all 32 bits; each part 256-byte aligned.
struct ScratchLayout {
  size_t ints = 0, sort = 0;
  size_t total() const { return 3 * ints + sort; }
};

ScratchLayout scratch_layout(int64_t n, cudaStream_t stream) {
  FINEMOE_CHECK(n < (int64_t(1) << 31), "sorted scatter-add of " << n << " copies (the sort takes int counts)");
  size_t sort_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                             static_cast<int32_t*>(nullptr), int(n), 0, 32, stream));
  return {aligned(size_t(n) * sizeof(int32_t)), aligned(sort_bytes)};
}
}  // namespace

size_t sorted_scatter_scratch_bytes(int64_t n, cudaStream_t stream) { return scratch_layout(n, stream).total(); }

template <typename T>
void sorted_scatter_add(const T* src, const int32_t* rows, const float* gate, int64_t n, int width, float* dst,
                        cudaStream_t stream) {
  if (n == 0 || width == 0) return;
  const ScratchLayout layout = scratch_layout(n, stream);
  char* block = nullptr;
  CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&block), layout.total(), stream));
  auto* keys = reinterpret_cast<int32_t*>(block);
  auto* copies = reinterpret_cast<int32_t*>(block + layout.ints);
  auto* order = reinterpret_cast<int32_t*>(block + 2 * layout.ints);
  iota_kernel<<<grid_for(n), kThreads, 0, stream>>>(copies, n);
  CUDA_CHECK_LAUNCH();
  size_t sort_bytes = layout.sort;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(block + 3 * layout.ints, sort_bytes, rows, keys, copies, order, int(n),
                                             0, 32, stream));
  run_sum_kernel<T><<<grid_for(n * width), kThreads, 0, stream>>>(src, keys, order, gate, n, width, dst);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cudaFreeAsync(block, stream));
}

template void sorted_scatter_add<float>(const float*, const int32_t*, const float*, int64_t, int, float*,
                                        cudaStream_t);
template void sorted_scatter_add<__nv_bfloat16>(const __nv_bfloat16*, const int32_t*, const float*, int64_t, int,
                                                float*, cudaStream_t);

}  // namespace finemoe::cuda
