#include "backend/cuda/gemm.h"

#include <algorithm>
#include <string>

#include "backend/cuda/cublas_check.h"
#include "util/check.h"

namespace finemoe::cuda {

void cublas_fail(cublasStatus_t status, const char* call, const char* file, int line) {
  fail_at(file, line,
          std::string(call) + " failed: " + cublasGetStatusName(status) + ": " + cublasGetStatusString(status));
}


CublasHandle::CublasHandle(cudaStream_t stream) : stream_(stream) {
  CUBLAS_CHECK(cublasCreate(&handle_));
  CUBLAS_CHECK(cublasSetStream(handle_, stream));
  CUBLAS_CHECK(cublasSetMathMode(handle_, CUBLAS_DEFAULT_MATH));
  // A fixed workspace, set once: cuBLAS then allocates nothing inside a step (graph capture).
  CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
  CUBLAS_CHECK(cublasSetWorkspace(handle_, workspace_, kWorkspaceBytes));
}

CublasHandle::~CublasHandle() {
  if (handle_) cublasDestroy(handle_);
  if (workspace_) cudaFree(workspace_);
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands and m, n.
void gemm(cublasHandle_t handle, bool trans_a, bool trans_b, int m, int n, int k, float alpha, const void* A,
          int lda, const void* B, int ldb, float beta, void* C, int ldc, const GemmPrecision& p) {
  if (m == 0 || n == 0) return;
  CUBLAS_CHECK(cublasGemmEx(handle, cublas_op(trans_b), cublas_op(trans_a), n, m, k, &alpha, B,
                            cublas_data_type(p.inputs), ldb, A, cublas_data_type(p.inputs), lda, &beta, C,
                            cublas_data_type(p.output), ldc, cublas_compute_type(p), CUBLAS_GEMM_DEFAULT));
}

void gemm_strided_batched(cublasHandle_t handle, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                          const void* A, int lda, int64_t stride_a, const void* B, int ldb, int64_t stride_b,
                          float beta, void* C, int ldc, int64_t stride_c, int batch, const GemmPrecision& p) {
  if (m == 0 || n == 0 || batch == 0) return;
  CUBLAS_CHECK(cublasGemmStridedBatchedEx(handle, cublas_op(trans_b), cublas_op(trans_a), n, m, k, &alpha, B,
                                          cublas_data_type(p.inputs), ldb, stride_b, A, cublas_data_type(p.inputs), lda,
                                          stride_a, &beta, C, cublas_data_type(p.output), ldc, stride_c, batch,
                                          cublas_compute_type(p), CUBLAS_GEMM_DEFAULT));
}

void GroupedGemm::run_loop(cublasHandle_t handle, bool trans_a, bool trans_b, float alpha,
                           const std::vector<GemmProblem>& problems, float beta, const GemmPrecision& p) {
  for (const GemmProblem& q : problems)
    gemm(handle, trans_a, trans_b, q.m, q.n, q.k, alpha, q.A, q.lda, q.B, q.ldb, beta, q.C, q.ldc, p);
  last_path_ = GroupedGemmPath::loop;
}

void GroupedGemm::run(cublasHandle_t handle, bool trans_a, bool trans_b, float alpha,
                      const std::vector<GemmProblem>& problems, float beta, const GemmPrecision& p) {
  const uint32_t precision_key = uint32_t(p.inputs) | uint32_t(p.output) << 4 | uint32_t(cublas_compute_type(p)) << 8;
  const bool refused =
      std::find(unsupported_.begin(), unsupported_.end(), precision_key) != unsupported_.end();
  if (path_ == GroupedGemmPath::loop || refused)
    return run_loop(handle, trans_a, trans_b, alpha, problems, beta, p);
  // Problems with k = 0 only scale C: cublasGemmEx does that; the grouped call takes the rest.
  std::vector<GemmProblem> scale_only;
  host_pointers_.clear();
  for (auto* v : {&m_, &n_, &k_, &lda_, &ldb_, &ldc_}) v->clear();
  op_a_.clear();
  op_b_.clear();
  for (const GemmProblem& q : problems) {
    if (q.m == 0 || q.n == 0) continue;
    if (q.k == 0) {
      scale_only.push_back(q);
      continue;
    }
    // Column-major view, operands swapped as in gemm().
    op_a_.push_back(cublas_op(trans_b));
    op_b_.push_back(cublas_op(trans_a));
    m_.push_back(q.n);
    n_.push_back(q.m);
    k_.push_back(q.k);
    lda_.push_back(q.ldb);
    ldb_.push_back(q.lda);
    ldc_.push_back(q.ldc);
  }
  const int count = static_cast<int>(m_.size());
  if (count > 0) {
    for (const GemmProblem& q : problems)
      if (q.m != 0 && q.n != 0 && q.k != 0) host_pointers_.push_back(const_cast<void*>(q.B));
    for (const GemmProblem& q : problems)
      if (q.m != 0 && q.n != 0 && q.k != 0) host_pointers_.push_back(const_cast<void*>(q.A));
    for (const GemmProblem& q : problems)
      if (q.m != 0 && q.n != 0 && q.k != 0) host_pointers_.push_back(q.C);
    ones_.assign(count, 1);
    alpha_.assign(count, alpha);
    beta_.assign(count, beta);
    pointers_.resize(host_pointers_.size());
    cudaStream_t stream = 0;
    CUBLAS_CHECK(cublasGetStream(handle, &stream));
    // The pointer array comes from pageable host memory that the next grouped call overwrites: a
    // captured graph would re-read it on every replay.
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    CUDA_CHECK(cudaStreamIsCapturing(stream, &capturing));
    FINEMOE_CHECK(capturing == cudaStreamCaptureStatusNone,
                  "grouped expert GEMM (unequal expert row counts) inside a captured CUDA graph step: not "
                  "capturable; set train.cuda_graph = false");
    // Stream-ordered after the previous run's grouped call, which read the same array.
    CUDA_CHECK(cudaMemcpyAsync(pointers_.data(), host_pointers_.data(), pointers_.bytes(), cudaMemcpyHostToDevice,
                               stream));
    const void* const* a = pointers_.data();
    const void* const* b = pointers_.data() + count;
    void* const* c = pointers_.data() + 2 * count;
    const cublasStatus_t status = cublasGemmGroupedBatchedEx(
        handle, op_a_.data(), op_b_.data(), m_.data(), n_.data(), k_.data(), alpha_.data(), a,
        cublas_data_type(p.inputs), lda_.data(), b, cublas_data_type(p.inputs), ldb_.data(), beta_.data(), c,
        cublas_data_type(p.output), ldc_.data(), count, ones_.data(), cublas_compute_type(p));
    if (status == CUBLAS_STATUS_NOT_SUPPORTED) {
      unsupported_.push_back(precision_key);
      return run_loop(handle, trans_a, trans_b, alpha, problems, beta, p);
    }
    CUBLAS_CHECK(status);
  }
  for (const GemmProblem& q : scale_only)
    gemm(handle, trans_a, trans_b, q.m, q.n, q.k, alpha, q.A, q.lda, q.B, q.ldb, beta, q.C, q.ldc, p);
  last_path_ = GroupedGemmPath::grouped;
}

}  // namespace finemoe::cuda
