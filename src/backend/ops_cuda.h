#pragma once
// The CUDA side of backend/ops.h (fp32 storage), built only with the CUDA backend. One compute
// stream and cuBLAS handle per process, made by configure_compute; the NCCL communicators enqueue
// on the same stream so that collectives are ordered after the work that produced their inputs.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <vector>

#include "backend/compute.h"
#include "backend/cpu/activation.h"
#include "backend/cpu/adamw.h"

namespace finemoe::ops::device {

void configure(const ComputeSettings& s);
cudaStream_t compute_stream();
void synchronize();

void* allocate_managed(size_t bytes);
void free_managed(void* p) noexcept;

void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* A, int lda, const float* B,
          int ldb, float beta, float* C, int ldc);
struct Problem {
  int m, n, k;
  const float* A;
  int lda;
  const float* B;
  int ldb;
  float* C;
  int ldc;
};
void grouped_gemm(bool trans_a, bool trans_b, float alpha, const std::vector<Problem>& problems, float beta);

void add(float* out, const float* a, const float* b, int64_t n);
void fill_zero(void* x, size_t bytes);
void copy(void* dst, const void* src, size_t bytes);
void scale(float* x, int64_t n, float s);

void activation_forward(float* out, const float* inp, int64_t n, cpu::Activation a);
void activation_backward(float* dinp, const float* inp, const float* dout, int64_t n, cpu::Activation a);
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t rows, int cols, float eps);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int64_t rows, int cols);
void attention_forward(float* out, float* att, const float* qkv, int n_seq, int context, int n_heads, int d);
void attention_backward(float* dqkv, float* datt, const float* dout, const float* qkv, const float* att, int n_seq,
                        int context, int n_heads, int d);
void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int n_seq,
                       int context, int d);
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int n_seq, int context,
                        int d);
double softmax_cross_entropy(float* dlogits, const float* logits, const int32_t* targets, int64_t rows, int vocab,
                             float dscale);
void row_softmax(const float* logits, float* probs, int64_t rows, int n);
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, const cpu::AdamWStep& s);
double sum_of_squares(const float* x, int64_t n);

void* create_event_pair();
void destroy_event_pair(void* events) noexcept;
void record_start(void* events);
double record_stop_seconds(void* events);

}  // namespace finemoe::ops::device
