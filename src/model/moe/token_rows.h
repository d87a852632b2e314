#pragma once
// Permute / combine of MoE token copies on the compute backend (backend/compute.h): the CPU
// functions of dispatcher.h, or their CUDA kernels (kernels/permute.h) on the compute stream.
#include <cstdint>

namespace finemoe::moe::rows {

// out[c] = x[rows[c]].
template <typename T>
void gather(const T* x, const int32_t* rows, int64_t n, int width, T* out);
// y[rows[c]] += gate[c] * back[c].
template <typename T>
void combine(const T* back, const int32_t* rows, const T* gate, int64_t n, int width, T* y);
// dback[c] = gate[c] * dy[rows[c]], dgate[c] = <dy[rows[c]], back[c]>.
template <typename T>
void combine_backward(const T* dy, const T* back, const int32_t* rows, const T* gate, int64_t n, int width,
                      T* dback, T* dgate);
// dx[rows[c]] += dout[c].
template <typename T>
void scatter_add(const T* dout, const int32_t* rows, int64_t n, int width, T* dx);

}  // namespace finemoe::moe::rows
