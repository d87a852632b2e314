#pragma once
// The model's arithmetic, on whichever backend compute_settings() names (backend/compute.h). Each
// operation takes the arguments of its CPU implementation in backend/cpu (the reference of the CUDA
// kernel that replaces it) and runs there or, on the CUDA backend, asynchronously on the compute
// stream. Pointers are compute-backend memory (DeviceBuffer data, backend/compute.h); results that
// the host needs (losses, norms) are written to device scalars and read with one counted
// copy_to_host where the caller chooses. The CUDA backend takes T = float only.
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "backend/bf16.h"
#include "backend/compute.h"
#include "backend/cpu/activation.h"
#include "backend/cpu/adamw.h"

namespace finemoe::ops {

[[noreturn]] void refuse_device_type();
// Whether an operation on T takes the GPU path: the CUDA backend, which stores fp32 only (other T
// are refused there with a RuntimeFailure).
template <typename T>
bool use_device() {
  if (!on_device()) return false;
  if constexpr (!std::is_same_v<T, float>) refuse_device_type();
  return true;
}

// Waits for the operations issued so far (a counted host wait on both backends; no-op work on the CPU).
void synchronize();

// A matrix product's operand: its values, and with bf16 operands (bf16_operands(), backend/compute.h)
// the same matrix rounded to bfloat16 and stored in 2 bytes an element, at the same offsets and
// leading dimension. With bf16 operands a product reads `rounded` where given (a plain gemm packs
// the values of an operand without it into scratch; a grouped gemm needs it on every operand);
// otherwise it reads `values`, which must then be given.
template <typename T>
struct Operand {
  Operand() = default;
  Operand(const T* v) : values(v) {}  // NOLINT: a plain matrix is an operand
  Operand(const T* v, const Bfloat16* r) : values(v), rounded(r) {}
  // The operand starting `offset` elements further (a sub-matrix, one expert's rows).
  Operand at(int64_t offset) const {
    return {values ? values + offset : nullptr, rounded ? rounded + offset : nullptr};
  }
  const T* values = nullptr;
  const Bfloat16* rounded = nullptr;
};

// C = alpha op(A) op(B) + beta C, row-major (cpu::gemm). Counted in cpu::gemm_flops on both backends.
template <typename T>
void gemm(bool trans_a, bool trans_b, int m, int n, int k, T alpha, Operand<T> A, int lda, Operand<T> B, int ldb,
          T beta, T* C, int ldc);

// One product of a group sharing trans_a, trans_b, alpha and beta (the experts of an MoE layer).
template <typename T>
struct GemmProblem {
  int m = 0, n = 0, k = 0;
  Operand<T> A;
  int lda = 0;
  Operand<T> B;
  int ldb = 0;
  T* C = nullptr;
  int ldc = 0;
};
// CPU: the problems in parallel (OpenMP, one BLAS thread each). CUDA: one strided-batched call when
// the problems are equally shaped and evenly spaced (expert choice), else one grouped call
// (cublasGemmGroupedBatchedEx, falling back to a loop of GEMMs where cuBLAS lacks it).
template <typename T>
void grouped_gemm(bool trans_a, bool trans_b, T alpha, const std::vector<GemmProblem<T>>& problems, T beta);

// With bf16 operands: packs n values into `rounded` (grown as needed) and returns both as one
// operand, for a matrix that feeds several products; otherwise returns the values alone.
template <typename T>
Operand<T> operand_for_products(const T* values, int64_t n, DeviceBuffer<Bfloat16>& rounded);

// A product followed by an elementwise activation (the FFN's first matrix), for `batch` equally
// shaped products at constant strides (expert choice's experts; batch 1: one product), the i-th on
// A + i stride_a, B + i stride_b and the C-side matrices + i stride_c (strides in elements):
//   gemm_activation:          pre = op(A) op(B), out = act(pre)
//   gemm_activation_backward: dpre = (op(A) op(B)) * act'(pre)
// pre, out and dpre are row-major m x n with leading dimension ldc, overwritten (no alpha, beta);
// out and dpre must not be pre. CPU (the reference): ops::gemm (batch 1) or ops::grouped_gemm, then
// ops::activation_forward / _backward, the same arithmetic bit for bit. CUDA: gelu_tanh in one
// cuBLASLt matmul with the GELU_AUX / DGELU epilogue (cuda::GemmEpilogue), the separate pass where
// cuBLASLt has no algorithm; relu and gelu (erf) the separate pass, cuBLASLt having no epilogue that
// keeps their pre-activation. Counted in cpu::gemm_flops on both backends.
// A and B are operands as for gemm (with bf16 operands every operand needs its bf16 copy, as for
// grouped_gemm).
template <typename T>
void gemm_activation(bool trans_a, bool trans_b, int m, int n, int k, Operand<T> A, int lda, int64_t stride_a,
                     Operand<T> B, int ldb, int64_t stride_b, T* pre, T* out, int ldc, int64_t stride_c, int batch,
                     cpu::Activation a);
template <typename T>
void gemm_activation_backward(bool trans_a, bool trans_b, int m, int n, int k, Operand<T> A, int lda,
                              int64_t stride_a, Operand<T> B, int ldb, int64_t stride_b, const T* pre, T* dpre,
                              int ldc, int64_t stride_c, int batch, cpu::Activation a);
// The path of the last gemm_activation(_backward): "cpu", "cublaslt-epilogue" or
// "separate (<why>)" on CUDA.
std::string last_gemm_activation_path();

// out = a + b, elementwise (out may alias a or b).
template <typename T>
void add(T* out, const T* a, const T* b, int64_t n);
template <typename T>
void fill_zero(T* x, int64_t n);
template <typename T>
void copy(T* dst, const T* src, int64_t n);

// dst[i] = src[i] rounded to bfloat16 (to_bf16: nearest, ties to even), and back (exact).
template <typename T>
void pack_bf16(Bfloat16* dst, const T* src, int64_t n);
template <typename T>
void unpack_bf16(T* dst, const Bfloat16* src, int64_t n);

template <typename T>
void activation_forward(T* out, const T* inp, int64_t n, cpu::Activation a);
template <typename T>
void activation_backward(T* dinp, const T* inp, const T* dout, int64_t n, cpu::Activation a);

// Token choice's selection scores under loss-free balancing (cpu::add_selection_bias).
template <typename T>
void add_selection_bias(T* scores, const T* probs, const T* bias, int64_t rows, int n_experts);

// The gated activation (cpu::swiglu_forward): inp [rows, 2 hidden] = [gate | up], out [rows, hidden].
template <typename T>
void swiglu_forward(T* out, const T* inp, int64_t rows, int hidden);
template <typename T>
void swiglu_backward(T* dinp, const T* inp, const T* dout, int64_t rows, int hidden);

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias, int64_t rows,
                       int cols, T eps);
template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const T* mean, const T* rstd, int64_t rows, int cols);

// Causal self-attention (cpu::attention_*). att is what the forward keeps for the backward:
// the probabilities [n_seq, heads, T, T], or on cuDNN's fused path (CUDA bf16 runs, see
// select_attention) the fp32 softmax statistics [n_seq, heads, T]; attention_kept_size says which.
// out is the forward's output (the fused backward needs it; the other paths ignore it).
template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int n_seq, int context, int n_heads, int d);
template <typename T>
void attention_backward(T* dqkv, T* datt, const T* dout, const T* qkv, const T* att, const T* out, int n_seq,
                        int context, int n_heads, int d);
// Whether attention on n_seq sequences takes cuDNN's fused path (att then holds the statistics).
// The layers ask this rather than compare sizes: at context 1 both kinds of att have one element a row.
template <typename T>
bool attention_fused(int n_seq);
// Elements of att for n_seq sequences (and of the backward's datt: 0 on the fused path).
template <typename T>
int64_t attention_kept_size(int n_seq, int context, int n_heads);
// CUDA bf16 runs: tries cuDNN's fused attention for this shape (check_support) and returns
// "cudnn-sdpa (<cuDNN and frontend versions, library path>)" or "cublas (<why not>)"; the cuBLAS
// path is kept where it is not usable. Elsewhere: "cpu" or "cublas (fp32 run)".
std::string select_attention(int n_seq, int context, int n_heads, int d);

template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte, const T* wpe, int n_seq, int context, int d);
template <typename T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, int n_seq, int context, int d);

// *loss_sum (one device double) += the sum over rows of the cross-entropy
// (cpu::softmax_cross_entropy), with dlogits when not null.
template <typename T>
void softmax_cross_entropy(T* dlogits, const T* logits, const int32_t* targets, int64_t rows, int vocab,
                           T dscale, double* loss_sum);
// dst[i] += src[i] for n device doubles.
void accumulate(double* dst, const double* src, int n);

// probs = softmax(logits) per row of n_experts (the router).
template <typename T>
void row_softmax(const T* logits, T* probs, int64_t rows, int n);

template <typename T>
void adamw_update(T* param, const T* grad, T* m, T* v, int64_t n, const cpu::AdamWStep& s);
// The update with its constants formed on the compute backend, for a step captured as a CUDA graph
// (kernels/adamw.h): adamw_prepare turns inputs [lr, t] and the gradient norm's sums of squares
// [replicated, expert] into constants (kAdamWConstants floats: with weight decay, then without;
// beta1, beta2, eps and weight_decay from `fixed`, clipping to `clip` when > 0);
// adamw_update_prepared applies them. On the CPU the same formulas run on the host.
constexpr int kAdamWConstants = 14;
void adamw_prepare(const double* inputs, const double* squares, const cpu::AdamWStep& fixed, double clip,
                   float* constants);
void adamw_update_prepared(float* param, const float* grad, float* m, float* v, int64_t n, const float* constants,
                           bool decay);

// A stretch of compute-stream work captured once as a CUDA graph and replayed (CUDA backend only):
// begin_capture() .. end_capture() records (nothing runs), replay() launches it without a host wait.
// Capture is thread-local: a host synchronisation, blocking copy, cudaMalloc or cudaFree inside fails
// on the capturing thread; other threads (the watchdog's) are not held to it.
class StepGraph {
 public:
  StepGraph() = default;
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;
  void begin_capture();
  void end_capture();
  void replay();
  bool captured() const { return graph_ != nullptr; }
  void reset();  // forgets the capture

 private:
  void* graph_ = nullptr;  // CUDA: the instantiated graph and its template
};

// *out (one device double) = sum of x[i]^2, in double.
template <typename T>
void sum_of_squares(const T* x, int64_t n, double* out);
// x *= s.
template <typename T>
void scale(T* x, int64_t n, T s);

// Wall time of stretches of work, summed: the host clock on the CPU, CUDA events on the compute
// stream. start() and stop() never wait for the device; take_seconds() returns the total since the
// last take (on CUDA it waits for the last stop event: call it once per logged step, not inside one).
class Stopwatch {
 public:
  Stopwatch();
  ~Stopwatch();
  Stopwatch(const Stopwatch&) = delete;
  Stopwatch& operator=(const Stopwatch&) = delete;
  void start();
  void stop();
  double take_seconds();
  // Forgets the intervals so far without reading them (no wait).
  void reset();

 private:
  double host_start_ = 0;
  double host_total_ = 0;
  void* device_intervals_ = nullptr;  // CUDA: pairs of events, reused step after step
};

}  // namespace finemoe::ops
