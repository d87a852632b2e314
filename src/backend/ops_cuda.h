#pragma once
// The CUDA side of backend/ops.h (fp32 storage), built only with the CUDA backend. One compute
// stream and cuBLAS handle per process, made by configure_compute; the NCCL communicators enqueue
// on the same stream so that collectives are ordered after the work that produced their inputs.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "backend/bf16.h"
#include "backend/compute.h"
#include "backend/cpu/activation.h"
#include "backend/cpu/adamw.h"
#include "backend/ops.h"

namespace finemoe::ops::device {

void configure(const ComputeSettings& s);
cudaStream_t compute_stream();
void synchronize();
// Frees the context's own scratch (cross-entropy rows, the fused attention's bf16 operands and
// workspace), counted as live buffers like the model's: configure_compute does it before it leaves
// the device, whose check would otherwise refuse the change after any step.
void release_scratch();

// Stream-ordered device memory from the device's default pool, on the compute stream (no host wait).
void* allocate(size_t bytes);
void free(void* p) noexcept;
bool is_device_pointer(const void* p);
// The pool's used-memory high-water mark and current use (bytes).
size_t pool_used_high();
void reset_pool_used_high();
// Host <-> device on the compute stream; copy_to_host waits for the stream.
void copy_to_host(void* host, const void* device, size_t bytes);
void copy_to_device(void* device, const void* host, size_t bytes);

using Operand = ops::Operand<float>;
using Problem = ops::GemmProblem<float>;
// With bf16 operands: native bf16 products (an operand without its bf16 copy is packed into scratch);
// otherwise fp32 inputs, rounded inside cuBLAS in bf16 runs.
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, Operand A, int lda, Operand B, int ldb,
          float beta, float* C, int ldc);
void grouped_gemm(bool trans_a, bool trans_b, float alpha, const std::vector<Problem>& problems, float beta);

// ops::gemm_activation(_backward) on the compute stream; returns the path taken (ops.h).
std::string gemm_activation(bool trans_a, bool trans_b, int m, int n, int k, Operand A, int lda, int64_t stride_a,
                            Operand B, int ldb, int64_t stride_b, float* pre, float* out, int ldc, int64_t stride_c,
                            int batch, cpu::Activation a);
std::string gemm_activation_backward(bool trans_a, bool trans_b, int m, int n, int k, Operand A, int lda,
                                     int64_t stride_a, Operand B, int ldb, int64_t stride_b, const float* pre,
                                     float* dpre, int ldc, int64_t stride_c, int batch, cpu::Activation a);

void add(float* out, const float* a, const float* b, int64_t n);
void fill_zero(void* x, size_t bytes);
void copy(void* dst, const void* src, size_t bytes);
void scale(float* x, int64_t n, float s);
void pack_bf16(Bfloat16* dst, const float* src, int64_t n);
void unpack_bf16(float* dst, const Bfloat16* src, int64_t n);

void activation_forward(float* out, const float* inp, int64_t n, cpu::Activation a);
void activation_backward(float* dinp, const float* inp, const float* dout, int64_t n, cpu::Activation a);
void add_selection_bias(float* scores, const float* probs, const float* bias, int64_t rows, int n_experts);
void swiglu_forward(float* out, const float* inp, int64_t rows, int hidden);
void swiglu_backward(float* dinp, const float* inp, const float* dout, int64_t rows, int hidden);
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t rows, int cols, float eps);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                        const float* weight, const float* mean, const float* rstd, int64_t rows, int cols);
// Tries cuDNN's fused attention for n_seq x context x n_heads (bf16 runs): "cudnn-sdpa (<versions>)"
// when it is usable, else "cublas (<why not>)" and the cuBLAS path.
std::string select_attention(int n_seq, int context, int n_heads, int d);
// Back to the cuBLAS path (tests compare the two).
void use_cublas_attention();
// Whether attention on n_seq sequences takes the fused path (att then holds [n_seq, heads, T] statistics).
bool fused_attention(int n_seq);
void attention_forward(float* out, float* att, const float* qkv, int n_seq, int context, int n_heads, int d);
void attention_backward(float* dqkv, float* datt, const float* dout, const float* qkv, const float* att,
                        const float* out, int n_seq, int context, int n_heads, int d);
void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int n_seq,
                       int context, int d);
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int n_seq, int context,
                        int d);
void softmax_cross_entropy(float* dlogits, const float* logits, const int32_t* targets, int64_t rows, int vocab,
                           float dscale, double* loss_sum);
void accumulate(double* dst, const double* src, int n);
void row_softmax(const float* logits, float* probs, int64_t rows, int n);
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, const cpu::AdamWStep& s);
void sum_of_squares(const float* x, int64_t n, double* out);
void adamw_prepare(const double* inputs, const double* squares, const cpu::AdamWStep& fixed, double clip,
                   float* constants);
void adamw_update_prepared(float* param, const float* grad, float* m, float* v, int64_t n, const float* constants,
                           bool decay);
// ops::StepGraph: capture on the compute stream (thread-local mode), instantiate, launch.
void begin_capture();
void* end_capture();
void replay_graph(void* graph);
void destroy_graph(void* graph) noexcept;

// A Stopwatch's event pairs on the compute stream, read once per take.
void* create_intervals();
void destroy_intervals(void* intervals) noexcept;
void record_interval_start(void* intervals);
void record_interval_stop(void* intervals);
double take_interval_seconds(void* intervals);
void reset_intervals(void* intervals);

}  // namespace finemoe::ops::device
