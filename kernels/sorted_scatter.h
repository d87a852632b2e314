#pragma once
// Deterministic scatter-add: dst[rows[c]] += (gate ? gate[c] : 1) * src[c] for every copy c < n (rows
// of `width` values). The copies are ordered by target row with a stable radix sort (CUB), and one
// thread per (target row, column) adds its copies in ascending c: the same result on every run (so
// captured and uncaptured steps agree bit for bit), in the order of the sequential CPU loop (which
// may round differently only where one side fuses the multiply-add). Limit: that order makes each
// row's sum a serial chain as long as its copy count (a frequent token's embedding row, an expert
// choice token picked by many experts); the thread loads its copies 8 ahead of the additions, so
// the chain waits for memory once per 8 copies, but its length stays. Used by combine_rows,
// scatter_add_rows and the token rows of embedding_backward. The sort's buffers are stream-ordered
// (cudaMallocAsync / cudaFreeAsync on `stream`): no host wait, and allowed inside a graph capture.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace finemoe::cuda {

// Bytes of stream-ordered scratch sorted_scatter_add takes for n copies (CUB's sort queried for this
// device); the memory plan counts a bound of it (model/memory_plan.h: sorted_scatter_scratch_bound).
size_t sorted_scatter_scratch_bytes(int64_t n, cudaStream_t stream);

template <typename T>
void sorted_scatter_add(const T* src, const int32_t* rows, const float* gate, int64_t n, int width, float* dst,
                        cudaStream_t stream);

}  // namespace finemoe::cuda
