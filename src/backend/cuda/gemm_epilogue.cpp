#include "backend/cuda/gemm_epilogue.h"

#include <cuda_bf16.h>

#include <cstdint>
#include <utility>

#include "backend/cuda/cublas_check.h"
#include "backend/strided_runs.h"
#include "kernels/activation.h"
#include "kernels/cuda_check.h"
#include "util/check.h"

namespace finemoe::cuda {
namespace {

size_t element_bytes(GemmDType t) { return t == GemmDType::bf16 ? 2 : 4; }

// The alignment (bytes, at most cuBLASLt's default assumption of 256) that every matrix of a strided
// batch keeps: the heuristic must not pick a kernel that needs more.
uint32_t alignment(const void* p, int64_t stride, int batch, GemmDType t) {
  uint64_t bits = uint64_t(reinterpret_cast<uintptr_t>(p));
  if (batch > 1) bits |= uint64_t(stride) * element_bytes(t);
  uint32_t a = 256;
  while (a > 1 && bits % a != 0) a /= 2;
  return a;
}

template <typename Attr, typename V>
void set_desc(cublasLtMatmulDesc_t d, Attr attr, const V& v) {
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof v));
}
template <typename V>
void set_layout(cublasLtMatrixLayout_t l, cublasLtMatrixLayoutAttribute_t attr, const V& v) {
  CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, attr, &v, sizeof v));
}

// f(T{}) with T the storage type of t.
template <typename F>
void with_type(GemmDType t, F&& f) {
  if (t == GemmDType::bf16)
    f(__nv_bfloat16{});
  else
    f(float{});
}

}  // namespace

// cuBLASLt's view is column-major, as in cuda::gemm: row-major C = op(A) op(B) is C^T = op(B)^T op(A)^T,
// so cuBLASLt's A is our B, its B our A, and its D (n x m, leading dimension ldc) our C.
struct GemmEpilogue::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t lt_a = nullptr, lt_b = nullptr, lt_d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool usable = false;  // false: the separate pass, for `reason`
  bool proven = false;  // a matmul has run with it
  std::string reason;
  ~Plan() {
    if (lt_d) cublasLtMatrixLayoutDestroy(lt_d);
    if (lt_b) cublasLtMatrixLayoutDestroy(lt_b);
    if (lt_a) cublasLtMatrixLayoutDestroy(lt_a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

GemmEpilogue::GemmEpilogue(EpiloguePath path) : path_(path) { CUBLAS_CHECK(cublasLtCreate(&lt_)); }

GemmEpilogue::~GemmEpilogue() {
  plans_.clear();
  if (lt_) cublasLtDestroy(lt_);
}

GemmEpilogue::Plan& GemmEpilogue::plan_for(bool backward, const StridedProduct& g, const void* D, const void* aux,
                                           GemmDType aux_type, int ldc, int64_t stride_c, const GemmPrecision& p) {
  const uint32_t align_a = alignment(g.B, g.stride_b, g.batch, p.inputs);  // cuBLASLt's A, B, D (see Plan)
  const uint32_t align_b = alignment(g.A, g.stride_a, g.batch, p.inputs);
  const uint32_t align_d = alignment(D, stride_c, g.batch, p.output);
  const uint32_t align_aux = alignment(aux, stride_c, g.batch, aux_type);
  const Key key = {backward, g.trans_a, g.trans_b, g.m, g.n, g.k, g.lda, g.ldb, ldc, g.stride_a, g.stride_b,
                   stride_c, g.batch, int64_t(p.inputs), int64_t(p.output), int64_t(aux_type),
                   int64_t(cublas_compute_type(p)), align_a, align_b, align_d, align_aux};
  auto found = plans_.find(key);
  if (found != plans_.end()) return *found->second;
  auto plan = std::make_unique<Plan>();
  Plan& q = *plan;
  plans_.emplace(key, std::move(plan));
  // Cached before it is built: if a cuBLASLt call below throws, later calls take the separate pass
  // and say why instead of an empty reason.
  q.reason = "cuBLASLt: building the plan failed earlier";

  const cublasOperation_t op_a = cublas_op(g.trans_b), op_b = cublas_op(g.trans_a);
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&q.desc, cublas_compute_type(p), CUDA_R_32F));
  set_desc(q.desc, CUBLASLT_MATMUL_DESC_TRANSA, op_a);
  set_desc(q.desc, CUBLASLT_MATMUL_DESC_TRANSB, op_b);
  const cublasLtEpilogue_t epilogue = backward ? CUBLASLT_EPILOGUE_DGELU : CUBLASLT_EPILOGUE_GELU_AUX;
  set_desc(q.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue);
  set_desc(q.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, aux);  // the heuristic reads its alignment
  set_desc(q.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(ldc));
  if (g.batch > 1) set_desc(q.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE, stride_c);
  if (aux_type != p.output) {  // the default aux type is D's; another one only where cuBLASLt accepts it
    const int32_t t = cublas_data_type(aux_type);
    if (cublasLtMatmulDescSetAttribute(q.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, &t, sizeof t) !=
        CUBLAS_STATUS_SUCCESS) {
      q.reason = "cuBLASLt: the pre-activation's type differs from the output's and is not accepted";
      return q;
    }
  }

  const uint64_t ra = op_a == CUBLAS_OP_N ? g.n : g.k, ca = op_a == CUBLAS_OP_N ? g.k : g.n;
  const uint64_t rb = op_b == CUBLAS_OP_N ? g.k : g.m, cb = op_b == CUBLAS_OP_N ? g.m : g.k;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&q.lt_a, cublas_data_type(p.inputs), ra, ca, g.ldb));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&q.lt_b, cublas_data_type(p.inputs), rb, cb, g.lda));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&q.lt_d, cublas_data_type(p.output), uint64_t(g.n), uint64_t(g.m), ldc));
  if (g.batch > 1) {
    const int32_t count = g.batch;
    const std::pair<cublasLtMatrixLayout_t, int64_t> strided[] = {
        {q.lt_a, g.stride_b}, {q.lt_b, g.stride_a}, {q.lt_d, stride_c}};
    for (const auto& [layout, stride] : strided) {
      set_layout(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, count);
      set_layout(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, stride);
    }
  }

  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t workspace = CublasHandle::kWorkspaceBytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                    sizeof workspace));
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> alignments[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_d},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_d}};
  for (const auto& [attr, a] : alignments)
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &a, sizeof a));
  cublasLtMatmulHeuristicResult_t result{};
  int count = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(lt_, q.desc, q.lt_a, q.lt_b, q.lt_d, q.lt_d, pref, 1, &result, &count);
  cublasLtMatmulPreferenceDestroy(pref);
  if (status != CUBLAS_STATUS_SUCCESS || count == 0) {
    q.reason = std::string("cuBLASLt: no algorithm for this shape, types and alignment (") +
               (status != CUBLAS_STATUS_SUCCESS ? cublasGetStatusName(status) : "0 results") + ")";
    return q;
  }
  q.algo = result.algo;
  q.usable = true;
  return q;
}

bool GemmEpilogue::run_fused(bool backward, cpu::Activation act, const CublasHandle& handle, const StridedProduct& g,
                             void* D, const void* aux, GemmDType aux_type, int ldc, int64_t stride_c,
                             const GemmPrecision& p) {
  if (path_ == EpiloguePath::separate) {
    last_reason_ = "separate pass requested";
    return false;
  }
  if (act != cpu::Activation::gelu_tanh) {
    last_reason_ = std::string("no cuBLASLt epilogue for ") + cpu::activation_name(act);
    return false;
  }
  if (g.k == 0) {
    last_reason_ = "k = 0";
    return false;
  }
  if (ldc % 8 != 0 || (g.batch > 1 && stride_c % 8 != 0)) {
    last_reason_ = "cuBLASLt needs the pre-activation's leading dimension and batch stride to be multiples of 8";
    return false;
  }
  Plan& q = plan_for(backward, g, D, aux, aux_type, ldc, stride_c, p);
  if (!q.usable) {
    last_reason_ = q.reason;
    return false;
  }
  set_desc(q.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, aux);
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t status =
      cublasLtMatmul(lt_, q.desc, &alpha, g.B, q.lt_a, g.A, q.lt_b, &beta, D, q.lt_d, D, q.lt_d, &q.algo,
                     handle.workspace(), CublasHandle::kWorkspaceBytes, handle.stream());
  if (!q.proven && (status == CUBLAS_STATUS_NOT_SUPPORTED || status == CUBLAS_STATUS_INVALID_VALUE)) {
    // Refused before anything was enqueued (a combination the heuristic let through): never again.
    q.usable = false;
    q.reason = last_reason_ = std::string("cuBLASLt refused the matmul (") + cublasGetStatusName(status) + ")";
    return false;
  }
  CUBLAS_CHECK(status);
  q.proven = true;
  last_reason_.clear();
  return true;
}

void GemmEpilogue::forward(const CublasHandle& handle, const StridedProduct& g, void* out, void* pre,
                           GemmDType pre_type, int ldc, int64_t stride_c, const GemmPrecision& p, cpu::Activation act) {
  FINEMOE_CHECK(out != pre, "GemmEpilogue::forward: out and pre must be different matrices");
  FINEMOE_CHECK(pre_type == p.output || p.inputs == GemmDType::bf16,
                "GemmEpilogue::forward: a pre-activation type other than the output's needs bf16 inputs (cuBLAS has no "
                "fp32 x fp32 -> bf16 product)");
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  if (run_fused(false, act, handle, g, out, pre, pre_type, ldc, stride_c, p)) {
    last_path_ = EpiloguePath::fused;
    return;
  }
  GemmPrecision to_pre = p;
  to_pre.output = pre_type;
  gemm_strided_batched(handle.get(), g.trans_a, g.trans_b, g.m, g.n, g.k, 1.0f, g.A, g.lda, g.stride_a, g.B, g.ldb,
                       g.stride_b, 0.0f, pre, ldc, stride_c, g.batch, to_pre);
  with_type(p.output, [&](auto out_tag) {
    with_type(pre_type, [&](auto pre_tag) {
      using TOut = decltype(out_tag);
      using TPre = decltype(pre_tag);
      for_each_strided_run(g.m, g.n, ldc, stride_c, g.batch, [&](int64_t offset, int64_t count) {
        activation_forward_mixed(static_cast<TOut*>(out) + offset, static_cast<const TPre*>(pre) + offset, count,
                                 act, handle.stream());
      });
    });
  });
  last_path_ = EpiloguePath::separate;
}

void GemmEpilogue::backward(const CublasHandle& handle, const StridedProduct& g, const void* pre, GemmDType pre_type,
                            void* dpre, int ldc, int64_t stride_c, const GemmPrecision& p, cpu::Activation act) {
  FINEMOE_CHECK(dpre != pre, "GemmEpilogue::backward: dpre and pre must be different matrices");
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  if (run_fused(true, act, handle, g, dpre, pre, pre_type, ldc, stride_c, p)) {
    last_path_ = EpiloguePath::fused;
    return;
  }
  gemm_strided_batched(handle.get(), g.trans_a, g.trans_b, g.m, g.n, g.k, 1.0f, g.A, g.lda, g.stride_a, g.B, g.ldb,
                       g.stride_b, 0.0f, dpre, ldc, stride_c, g.batch, p);
  with_type(p.output, [&](auto grad_tag) {
    with_type(pre_type, [&](auto pre_tag) {
      using TGrad = decltype(grad_tag);
      using TPre = decltype(pre_tag);
      for_each_strided_run(g.m, g.n, ldc, stride_c, g.batch, [&](int64_t offset, int64_t count) {
        TGrad* d = static_cast<TGrad*>(dpre) + offset;
        activation_backward_mixed(d, static_cast<const TPre*>(pre) + offset, d, count, act, handle.stream());
      });
    });
  });
  last_path_ = EpiloguePath::separate;
}

}  // namespace finemoe::cuda
