#pragma once
// Permute / unpermute of MoE token copies on the device; references: gather_rows, combine_rows,
// combine_rows_backward and scatter_add_rows in src/model/moe/dispatcher.h (same argument order).
// Row data (x, back, dy, dout, out, dback) are float or bf16; gates and the scatter-add targets
// (y, dx, dgate) are fp32. The scatter-adds are deterministic (kernels/sorted_scatter.h): the copies
// of a token are added in ascending copy order, as the CPU loop does. With T = float the arguments
// are the CPU's.
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace finemoe::cuda {

// out[c] = x[rows[c]].
template <typename T>
void gather_rows(const T* x, const int32_t* rows, int64_t n, int width, T* out, cudaStream_t stream = 0);

// y[rows[c]] += gate[c] * back[c] (y initialised by the caller).
template <typename T>
void combine_rows(const T* back, const int32_t* rows, const float* gate, int64_t n, int width, float* y,
                  cudaStream_t stream = 0);

// dback[c] = gate[c] * dy[rows[c]], dgate[c] = <dy[rows[c]], back[c]>.
template <typename T>
void combine_rows_backward(const T* dy, const T* back, const int32_t* rows, const float* gate, int64_t n,
                           int width, T* dback, float* dgate, cudaStream_t stream = 0);

// dx[rows[c]] += dout[c] (dx initialised by the caller).
template <typename T>
void scatter_add_rows(const T* dout, const int32_t* rows, int64_t n, int width, float* dx,
                      cudaStream_t stream = 0);

}  // namespace finemoe::cuda
