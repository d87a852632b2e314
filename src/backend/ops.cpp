#include "backend/ops.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>

#include "backend/bf16.h"
#include "backend/cpu/attention.h"
#include "backend/cpu/blas.h"
#include "backend/cpu/cross_entropy.h"
#include "backend/cpu/selection_bias.h"
#include "backend/cpu/swiglu.h"
#include "backend/cpu/embedding.h"
#include "backend/cpu/layernorm.h"
#include "util/check.h"
#ifdef FINEMOE_WITH_CUDA
#include "backend/ops_cuda.h"
#endif

namespace finemoe::ops {
namespace {

// op(M) is rows x cols of a row-major matrix with leading dimension ld: a bf16-rounded dense copy.
template <typename T>
const T* bf16_copy(const T* M, bool trans, int rows, int cols, int ld, std::vector<T>& out, int& out_ld) {
  const int stored_rows = trans ? cols : rows, stored_cols = trans ? rows : cols;
  out.resize(size_t(stored_rows) * stored_cols);
  for (int r = 0; r < stored_rows; ++r)
    for (int c = 0; c < stored_cols; ++c)
      out[size_t(r) * stored_cols + c] = static_cast<T>(round_to_bf16(static_cast<float>(M[size_t(r) * ld + c])));
  out_ld = stored_cols;
  return out.data();
}

template <typename T>
void cpu_gemm(bool ta, bool tb, int m, int n, int k, T alpha, const T* A, int lda, const T* B, int ldb, T beta,
              T* C, int ldc) {
  if (compute_settings().gemm_inputs == GemmInputs::bf16 && m > 0 && n > 0 && k > 0) {
    thread_local std::vector<T> a16, b16;
    A = bf16_copy(A, ta, m, k, lda, a16, lda);
    B = bf16_copy(B, tb, k, n, ldb, b16, ldb);
  }
  cpu::gemm<T>(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

// op(M), rows x cols, as the CPU's product reads it: the values, or with bf16 operands the stored
// bf16 copy where given, expanded (exactly) into a dense `out`.
template <typename T>
const T* cpu_operand(const Operand<T>& M, bool trans, int rows, int cols, int& ld, std::vector<T>& out) {
  if (!bf16_operands() || !M.rounded) {
    FINEMOE_CHECK(M.values, "a matrix product's operand has no fp32 values and bf16 operands are off");
    return M.values;
  }
  const int stored_rows = trans ? cols : rows, stored_cols = trans ? rows : cols;
  out.resize(size_t(stored_rows) * stored_cols);
  for (int r = 0; r < stored_rows; ++r)
    for (int c = 0; c < stored_cols; ++c) out[size_t(r) * stored_cols + c] = T(to_float(M.rounded[size_t(r) * ld + c]));
  ld = stored_cols;
  return out.data();
}

template <typename T>
void cpu_gemm_operands(bool ta, bool tb, int m, int n, int k, T alpha, const Operand<T>& A, int lda,
                       const Operand<T>& B, int ldb, T beta, T* C, int ldc) {
  thread_local std::vector<T> a_expanded, b_expanded;
  const T* a = cpu_operand(A, ta, m, k, lda, a_expanded);
  const T* b = cpu_operand(B, tb, k, n, ldb, b_expanded);
  cpu_gemm<T>(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, C, ldc);
}

}  // namespace

void refuse_device_type() {
  throw RuntimeFailure("the CUDA backend computes in fp32 storage (train.precision fp32 | bf16), not fp64");
}

void synchronize() {
  detail::count_host_wait();
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) device::synchronize();
#endif
}

#ifdef FINEMOE_WITH_CUDA
// Runs the device call and returns from the operation when T = float and the backend is CUDA.
#define FINEMOE_ON_DEVICE(...)                         \
  if constexpr (std::is_same_v<T, float>) {            \
    if (use_device<T>()) {                             \
      device::__VA_ARGS__;                             \
      return;                                          \
    }                                                  \
  } else {                                             \
    use_device<T>();                                   \
  }
#else
#define FINEMOE_ON_DEVICE(...)
#endif

template <typename T>
void gemm(bool ta, bool tb, int m, int n, int k, T alpha, Operand<T> A, int lda, Operand<T> B, int ldb, T beta, T* C,
          int ldc) {
#ifdef FINEMOE_WITH_CUDA
  if constexpr (std::is_same_v<T, float>) {
    if (use_device<T>()) {
      cpu::count_gemm_flops(m, n, k);
      return device::gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    }
  } else {
    use_device<T>();
  }
#endif
  cpu_gemm_operands<T>(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <typename T>
void grouped_gemm(bool ta, bool tb, T alpha, const std::vector<GemmProblem<T>>& problems, T beta) {
  // Checked on both backends so that CPU tests catch what the GPU would refuse.
  if (bf16_operands())
    for (const auto& q : problems)
      FINEMOE_CHECK(q.A.rounded && q.B.rounded, "a grouped product without the bf16 copy of an operand");
#ifdef FINEMOE_WITH_CUDA
  if constexpr (std::is_same_v<T, float>) {
    if (use_device<T>()) {
      for (const auto& q : problems) cpu::count_gemm_flops(q.m, q.n, q.k);
      return device::grouped_gemm(ta, tb, alpha, problems, beta);
    }
  } else {
    use_device<T>();
  }
#endif
  // One BLAS thread per product: the problems are the parallel dimension (bench: expert-gemm).
  cpu::ScopedBlasThreads one_thread(1);
  const int count = static_cast<int>(problems.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int i = 0; i < count; ++i) {
    const GemmProblem<T>& q = problems[i];
    if (q.m == 0 || q.n == 0) continue;
    cpu_gemm_operands<T>(ta, tb, q.m, q.n, q.k, alpha, q.A, q.lda, q.B, q.ldb, beta, q.C, q.ldc);
  }
}

template <typename T>
Operand<T> operand_for_products(const T* values, int64_t n, DeviceBuffer<Bfloat16>& rounded) {
  if (!bf16_operands()) return {values};
  Bfloat16* r = ensure_size(rounded, size_t(n));
  pack_bf16<T>(r, values, n);
  return {values, r};
}

template <typename T>
void add(T* out, const T* a, const T* b, int64_t n) {
  FINEMOE_ON_DEVICE(add(out, a, b, n))
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <typename T>
void fill_zero(T* x, int64_t n) {
  if (on_device()) {
#ifdef FINEMOE_WITH_CUDA
    return device::fill_zero(x, size_t(n) * sizeof(T));
#endif
  }
  std::fill(x, x + n, T(0));
}

template <typename T>
void copy(T* dst, const T* src, int64_t n) {
  if (on_device()) {
#ifdef FINEMOE_WITH_CUDA
    return device::copy(dst, src, size_t(n) * sizeof(T));
#endif
  }
  std::copy(src, src + n, dst);
}

template <typename T>
void scale(T* x, int64_t n, T s) {
  FINEMOE_ON_DEVICE(scale(x, n, s))
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

template <typename T>
void pack_bf16(Bfloat16* dst, const T* src, int64_t n) {
  FINEMOE_ON_DEVICE(pack_bf16(dst, src, n))
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) dst[i] = to_bf16(static_cast<float>(src[i]));
}

template <typename T>
void unpack_bf16(T* dst, const Bfloat16* src, int64_t n) {
  FINEMOE_ON_DEVICE(unpack_bf16(dst, src, n))
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(to_float(src[i]));
}

template <typename T>
void activation_forward(T* out, const T* inp, int64_t n, cpu::Activation a) {
  FINEMOE_ON_DEVICE(activation_forward(out, inp, n, a))
  cpu::activation_forward<T>(out, inp, n, a);
}

template <typename T>
void activation_backward(T* dinp, const T* inp, const T* dout, int64_t n, cpu::Activation a) {
  FINEMOE_ON_DEVICE(activation_backward(dinp, inp, dout, n, a))
  cpu::activation_backward<T>(dinp, inp, dout, n, a);
}

template <typename T>
void add_selection_bias(T* scores, const T* probs, const T* bias, int64_t rows, int n_experts) {
  FINEMOE_ON_DEVICE(add_selection_bias(scores, probs, bias, rows, n_experts))
  cpu::add_selection_bias<T>(scores, probs, bias, rows, n_experts);
}

template <typename T>
void swiglu_forward(T* out, const T* inp, int64_t rows, int hidden) {
  FINEMOE_ON_DEVICE(swiglu_forward(out, inp, rows, hidden))
  cpu::swiglu_forward<T>(out, inp, rows, hidden);
}

template <typename T>
void swiglu_backward(T* dinp, const T* inp, const T* dout, int64_t rows, int hidden) {
  FINEMOE_ON_DEVICE(swiglu_backward(dinp, inp, dout, rows, hidden))
  cpu::swiglu_backward<T>(dinp, inp, dout, rows, hidden);
}

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* inp, const T* weight, const T* bias, int64_t rows,
                       int cols, T eps) {
  FINEMOE_ON_DEVICE(layernorm_forward(out, mean, rstd, inp, weight, bias, rows, cols, eps))
  cpu::layernorm_forward<T>(out, mean, rstd, inp, weight, bias, rows, cols, eps);
}

template <typename T>
void layernorm_backward(T* dinp, T* dweight, T* dbias, const T* dout, const T* inp, const T* weight,
                        const T* mean, const T* rstd, int64_t rows, int cols) {
  FINEMOE_ON_DEVICE(layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, rows, cols))
  cpu::layernorm_backward<T>(dinp, dweight, dbias, dout, inp, weight, mean, rstd, rows, cols);
}

template <typename T>
void attention_forward(T* out, T* att, const T* qkv, int n_seq, int context, int n_heads, int d) {
  FINEMOE_ON_DEVICE(attention_forward(out, att, qkv, n_seq, context, n_heads, d))
  cpu::attention_forward<T>(out, att, qkv, n_seq, context, n_heads, d);
}

template <typename T>
void attention_backward(T* dqkv, T* datt, const T* dout, const T* qkv, const T* att, const T* out, int n_seq,
                        int context, int n_heads, int d) {
  FINEMOE_ON_DEVICE(attention_backward(dqkv, datt, dout, qkv, att, out, n_seq, context, n_heads, d))
  (void)out;
  cpu::attention_backward<T>(dqkv, datt, dout, qkv, att, n_seq, context, n_heads, d);
}

template <typename T>
bool attention_fused(int n_seq) {
#ifdef FINEMOE_WITH_CUDA
  return std::is_same_v<T, float> && on_device() && device::fused_attention(n_seq);
#else
  (void)n_seq;
  return false;
#endif
}

template <typename T>
int64_t attention_kept_size(int n_seq, int context, int n_heads) {
  const int64_t rows = int64_t(n_seq) * n_heads * context;
  return attention_fused<T>(n_seq) ? rows : rows * context;
}

std::string select_attention(int n_seq, int context, int n_heads, int d) {
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) {
    if (compute_settings().gemm_inputs != GemmInputs::bf16) return "cublas (fp32 run: the fused path is bf16)";
    return device::select_attention(n_seq, context, n_heads, d);
  }
#endif
  (void)n_seq, (void)context, (void)n_heads, (void)d;
  return "cpu";
}

template <typename T>
void embedding_forward(T* out, const int32_t* tokens, const T* wte, const T* wpe, int n_seq, int context, int d) {
  FINEMOE_ON_DEVICE(embedding_forward(out, tokens, wte, wpe, n_seq, context, d))
  cpu::embedding_forward<T>(out, tokens, wte, wpe, n_seq, context, d);
}

template <typename T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, int n_seq, int context, int d) {
  FINEMOE_ON_DEVICE(embedding_backward(dwte, dwpe, dout, tokens, n_seq, context, d))
  cpu::embedding_backward<T>(dwte, dwpe, dout, tokens, n_seq, context, d);
}

template <typename T>
void softmax_cross_entropy(T* dlogits, const T* logits, const int32_t* targets, int64_t rows, int vocab, T dscale,
                           double* loss_sum) {
  FINEMOE_ON_DEVICE(softmax_cross_entropy(dlogits, logits, targets, rows, vocab, dscale, loss_sum))
  *loss_sum += cpu::softmax_cross_entropy<T>(dlogits, logits, targets, rows, vocab, dscale);
}

void accumulate(double* dst, const double* src, int n) {
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) return device::accumulate(dst, src, n);
#endif
  for (int i = 0; i < n; ++i) dst[i] += src[i];
}

template <typename T>
void row_softmax(const T* logits, T* probs, int64_t rows, int n) {
  FINEMOE_ON_DEVICE(row_softmax(logits, probs, rows, n))
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < rows; ++t) {
    const T* l = logits + t * n;
    T* p = probs + t * n;
    const T m = *std::max_element(l, l + n);
    T s = 0;
    for (int e = 0; e < n; ++e) s += (p[e] = std::exp(l[e] - m));
    const T inv = T(1) / s;
    for (int e = 0; e < n; ++e) p[e] *= inv;
  }
}

template <typename T>
void adamw_update(T* param, const T* grad, T* m, T* v, int64_t n, const cpu::AdamWStep& s) {
  FINEMOE_ON_DEVICE(adamw_update(param, grad, m, v, n, s))
  cpu::adamw_update<T>(param, grad, m, v, n, s);
}

template <typename T>
void sum_of_squares(const T* x, int64_t n, double* out) {
  FINEMOE_ON_DEVICE(sum_of_squares(x, n, out))
  *out = cpu::sum_of_squares<T>(x, n);
}

#undef FINEMOE_ON_DEVICE

namespace {
// The constants of kernels/adamw.h's AdamWConstants, in its field order.
void adamw_constants(double lr, double t, double scale, const cpu::AdamWStep& f, double weight_decay, float* c) {
  const double bc1 = 1.0 - std::pow(f.beta1, t), bc2 = 1.0 - std::pow(f.beta2, t);
  const float values[7] = {float(f.beta1),  float(f.beta2),             float(1.0 - lr * weight_decay),
                           float(lr / bc1), float(1.0 / std::sqrt(bc2)), float(f.eps), float(scale)};
  std::copy(values, values + 7, c);
}
}  // namespace

void adamw_prepare(const double* inputs, const double* squares, const cpu::AdamWStep& fixed, double clip,
                   float* constants) {
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) return device::adamw_prepare(inputs, squares, fixed, clip, constants);
#endif
  const double norm = std::sqrt(squares[0] + squares[1]);
  const double scale = clip > 0 && norm > clip ? clip / norm : 1.0;
  adamw_constants(inputs[0], inputs[1], scale, fixed, fixed.weight_decay, constants);
  adamw_constants(inputs[0], inputs[1], scale, fixed, 0.0, constants + 7);
}

void adamw_update_prepared(float* param, const float* grad, float* m, float* v, int64_t n, const float* constants,
                           bool decay) {
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) return device::adamw_update_prepared(param, grad, m, v, n, constants, decay);
#endif
  const float* c = constants + (decay ? 0 : 7);
  const float b1 = c[0], b2 = c[1], keep = c[2], step = c[3], inv_sqrt_bc2 = c[4], eps = c[5], scale = c[6];
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * scale;
    const float mi = b1 * m[i] + (1.0f - b1) * g;
    const float vi = b2 * v[i] + (1.0f - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] = param[i] * keep - step * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
  }
}

StepGraph::~StepGraph() { reset(); }

void StepGraph::reset() {
#ifdef FINEMOE_WITH_CUDA
  if (graph_) device::destroy_graph(graph_);
#endif
  graph_ = nullptr;
}

void StepGraph::begin_capture() {
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) return device::begin_capture();
#endif
  throw RuntimeFailure("a CUDA graph needs the CUDA backend (train.device = cuda)");
}

void StepGraph::end_capture() {
  reset();
#ifdef FINEMOE_WITH_CUDA
  graph_ = device::end_capture();
#endif
}

void StepGraph::replay() {
  FINEMOE_CHECK(graph_, "StepGraph::replay() before a capture");
#ifdef FINEMOE_WITH_CUDA
  device::replay_graph(graph_);
#endif
}

namespace {
double host_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

Stopwatch::Stopwatch() {
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) device_intervals_ = device::create_intervals();
#endif
}

Stopwatch::~Stopwatch() {
#ifdef FINEMOE_WITH_CUDA
  if (device_intervals_) device::destroy_intervals(device_intervals_);
#endif
}

void Stopwatch::start() {
#ifdef FINEMOE_WITH_CUDA
  if (device_intervals_) return device::record_interval_start(device_intervals_);
#endif
  host_start_ = host_seconds();
}

void Stopwatch::stop() {
#ifdef FINEMOE_WITH_CUDA
  if (device_intervals_) return device::record_interval_stop(device_intervals_);
#endif
  host_total_ += host_seconds() - host_start_;
}

void Stopwatch::reset() {
#ifdef FINEMOE_WITH_CUDA
  if (device_intervals_) return device::reset_intervals(device_intervals_);
#endif
  host_total_ = 0;
}

double Stopwatch::take_seconds() {
#ifdef FINEMOE_WITH_CUDA
  if (device_intervals_) return device::take_interval_seconds(device_intervals_);
#endif
  return std::exchange(host_total_, 0.0);
}

#define FINEMOE_OPS(T)                                                                                           \
  template void gemm<T>(bool, bool, int, int, int, T, Operand<T>, int, Operand<T>, int, T, T*, int);             \
  template Operand<T> operand_for_products<T>(const T*, int64_t, DeviceBuffer<Bfloat16>&);                       \
  template void grouped_gemm<T>(bool, bool, T, const std::vector<GemmProblem<T>>&, T);                           \
  template void add<T>(T*, const T*, const T*, int64_t);                                                         \
  template void fill_zero<T>(T*, int64_t);                                                                       \
  template void copy<T>(T*, const T*, int64_t);                                                                  \
  template void scale<T>(T*, int64_t, T);                                                                        \
  template void pack_bf16<T>(Bfloat16*, const T*, int64_t);                                                      \
  template void unpack_bf16<T>(T*, const Bfloat16*, int64_t);                                                    \
  template void activation_forward<T>(T*, const T*, int64_t, cpu::Activation);                                   \
  template void activation_backward<T>(T*, const T*, const T*, int64_t, cpu::Activation);                        \
  template void add_selection_bias<T>(T*, const T*, const T*, int64_t, int);                                   \
  template void swiglu_forward<T>(T*, const T*, int64_t, int);                                                  \
  template void swiglu_backward<T>(T*, const T*, const T*, int64_t, int);                                       \
  template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int, T);                 \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, int64_t, int); \
  template void attention_forward<T>(T*, T*, const T*, int, int, int, int);                                      \
  template void attention_backward<T>(T*, T*, const T*, const T*, const T*, const T*, int, int, int, int);      \
  template bool attention_fused<T>(int);                                                                          \
  template int64_t attention_kept_size<T>(int, int, int);                                                        \
  template void embedding_forward<T>(T*, const int32_t*, const T*, const T*, int, int, int);                     \
  template void embedding_backward<T>(T*, T*, const T*, const int32_t*, int, int, int);                          \
  template void softmax_cross_entropy<T>(T*, const T*, const int32_t*, int64_t, int, T, double*);               \
  template void row_softmax<T>(const T*, T*, int64_t, int);                                                      \
  template void adamw_update<T>(T*, const T*, T*, T*, int64_t, const cpu::AdamWStep&);                           \
  template void sum_of_squares<T>(const T*, int64_t, double*);
FINEMOE_OPS(float)
FINEMOE_OPS(double)
#undef FINEMOE_OPS
template void fill_zero<int32_t>(int32_t*, int64_t);
template void copy<int32_t>(int32_t*, const int32_t*, int64_t);

}  // namespace finemoe::ops
