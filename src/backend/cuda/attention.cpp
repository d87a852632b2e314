#include "backend/cuda/attention.h"

#include <cmath>
#include <cstdint>

#include "backend/cuda/cublas_check.h"
#include "backend/cuda/gemm.h"
#include "kernels/attention_softmax.h"

namespace finemoe::cuda {

// Layouts as on the CPU: qkv [n_seq * T, 3d], head h of Q, K, V at columns h hs, d + h hs, 2d + h hs;
// att [n_seq, n_heads, T, T]; out [n_seq * T, d]. Head h of sequence s: the batch index is s.
void attention_forward(cublasHandle_t handle, float* out, float* att, const float* qkv, int n_seq, int context,
                       int n_heads, int d, bool allow_tf32) {
  const int hs = d / n_heads, T = context, ld = 3 * d;
  const int64_t seq_qkv = int64_t(T) * ld, seq_att = int64_t(n_heads) * T * T, seq_out = int64_t(T) * d;
  const float scale = 1.0f / std::sqrt(float(hs));
  GemmPrecision p;
  p.allow_tf32 = allow_tf32;
  for (int h = 0; h < n_heads; ++h) {  // S = scale Q K^T
    const float* q = qkv + h * hs;
    gemm_strided_batched(handle, false, true, T, T, hs, scale, q, ld, seq_qkv, q + d, ld, seq_qkv, 0.0f,
                         att + int64_t(h) * T * T, T, seq_att, n_seq, p);
  }
  cudaStream_t stream = 0;
  CUBLAS_CHECK(cublasGetStream(handle, &stream));
  causal_softmax_forward(att, int64_t(n_seq) * n_heads, T, stream);
  for (int h = 0; h < n_heads; ++h)  // Y = P V
    gemm_strided_batched(handle, false, false, T, hs, T, 1.0f, att + int64_t(h) * T * T, T, seq_att,
                         qkv + 2 * d + h * hs, ld, seq_qkv, 0.0f, out + h * hs, d, seq_out, n_seq, p);
}

void attention_backward(cublasHandle_t handle, float* dqkv, float* datt, const float* dout, const float* qkv,
                        const float* att, int n_seq, int context, int n_heads, int d, bool allow_tf32) {
  const int hs = d / n_heads, T = context, ld = 3 * d;
  const int64_t seq_qkv = int64_t(T) * ld, seq_att = int64_t(n_heads) * T * T, seq_out = int64_t(T) * d;
  const float scale = 1.0f / std::sqrt(float(hs));
  GemmPrecision p;
  p.allow_tf32 = allow_tf32;
  for (int h = 0; h < n_heads; ++h) {
    const int64_t a = int64_t(h) * T * T;
    const float* dy = dout + h * hs;
    // dP = dY V^T, dV = P^T dY
    gemm_strided_batched(handle, false, true, T, T, hs, 1.0f, dy, d, seq_out, qkv + 2 * d + h * hs, ld, seq_qkv,
                         0.0f, datt + a, T, seq_att, n_seq, p);
    gemm_strided_batched(handle, true, false, T, hs, T, 1.0f, att + a, T, seq_att, dy, d, seq_out, 0.0f,
                         dqkv + 2 * d + h * hs, ld, seq_qkv, n_seq, p);
  }
  cudaStream_t stream = 0;
  CUBLAS_CHECK(cublasGetStream(handle, &stream));
  causal_softmax_backward(datt, att, int64_t(n_seq) * n_heads, T, stream);
  for (int h = 0; h < n_heads; ++h) {
    const int64_t a = int64_t(h) * T * T;
    // dQ = scale dS K, dK = scale dS^T Q
    gemm_strided_batched(handle, false, false, T, hs, T, scale, datt + a, T, seq_att, qkv + d + h * hs, ld,
                         seq_qkv, 0.0f, dqkv + h * hs, ld, seq_qkv, n_seq, p);
    gemm_strided_batched(handle, true, false, T, hs, T, scale, datt + a, T, seq_att, qkv + h * hs, ld, seq_qkv,
                         0.0f, dqkv + d + h * hs, ld, seq_qkv, n_seq, p);
  }
}

}  // namespace finemoe::cuda
