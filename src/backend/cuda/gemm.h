#pragma once
// Row-major matrix products through cuBLAS, with the argument conventions of cpu::gemm:
// C[m x n] = alpha * op(A) * op(B) + beta * C, op(A) m x k, op(B) k x n, leading dimensions of the
// row-major storage. Inputs fp32 (TF32 off unless asked for) or bf16; accumulation always fp32.
// Everything runs on the handle's stream.
#include <cublas_v2.h>

#include <cstdint>
#include <vector>

#include "backend/cuda/device_buffer.h"

namespace finemoe::cuda {

enum class GemmDType { f32, bf16 };

struct GemmPrecision {
  GemmDType inputs = GemmDType::f32;  // A and B
  GemmDType output = GemmDType::f32;  // C
  bool allow_tf32 = false;            // fp32 inputs only: TF32 tensor cores (about 1e-3 relative error)
  bool bf16_math = false;             // fp32 inputs only: rounded to bf16 for the tensor cores, fp32 sums
};

// The cuBLAS types and compute mode of a precision (shared by cuBLAS and cuBLASLt calls, so that
// both round alike).
inline cudaDataType_t cublas_data_type(GemmDType t) { return t == GemmDType::bf16 ? CUDA_R_16BF : CUDA_R_32F; }
inline cublasComputeType_t cublas_compute_type(const GemmPrecision& p) {
  if (p.inputs == GemmDType::f32 && p.bf16_math) return CUBLAS_COMPUTE_32F_FAST_16BF;
  return p.inputs == GemmDType::f32 && p.allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}
inline cublasOperation_t cublas_op(bool transpose) { return transpose ? CUBLAS_OP_T : CUBLAS_OP_N; }

// A cuBLAS handle (RAII) bound to a stream, in the default math mode (no TF32 unless a call asks).
class CublasHandle {
 public:
  explicit CublasHandle(cudaStream_t stream = 0);
  ~CublasHandle();
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  cublasHandle_t get() const { return handle_; }
  cudaStream_t stream() const { return stream_; }
  void* workspace() const { return workspace_; }  // kWorkspaceBytes, shared with cuBLASLt (same stream)
  // Hopper's recommended cuBLAS workspace (the memory plan's allowance counts it).
  static constexpr size_t kWorkspaceBytes = size_t(32) << 20;

 private:
  cublasHandle_t handle_ = nullptr;
  cudaStream_t stream_ = 0;
  void* workspace_ = nullptr;
};

// cublasGemmEx.
void gemm(cublasHandle_t handle, bool trans_a, bool trans_b, int m, int n, int k, float alpha, const void* A,
          int lda, const void* B, int ldb, float beta, void* C, int ldc, const GemmPrecision& p = {});

// cublasGemmStridedBatchedEx: `batch` products, the i-th on A + i * stride_a (elements), etc.
// Expert choice (equal tokens per expert) and attention (per head, batched over sequences).
void gemm_strided_batched(cublasHandle_t handle, bool trans_a, bool trans_b, int m, int n, int k, float alpha,
                          const void* A, int lda, int64_t stride_a, const void* B, int ldb, int64_t stride_b,
                          float beta, void* C, int ldc, int64_t stride_c, int batch,
                          const GemmPrecision& p = {});

// One product of a group; shapes may differ between problems (token choice: rows per expert).
struct GemmProblem {
  int m = 0, n = 0, k = 0;
  const void* A = nullptr;
  int lda = 0;
  const void* B = nullptr;
  int ldb = 0;
  void* C = nullptr;
  int ldc = 0;
};

enum class GroupedGemmPath {
  grouped,  // one cublasGemmGroupedBatchedEx call (cuBLAS 12.5+)
  loop      // one cublasGemmEx per problem: the fallback and the reference
};

// Products with one trans_a, trans_b, alpha and beta but their own shapes. Keeps the device array of
// matrix pointers between calls (use it from one stream). Problems with m or n zero are skipped;
// with k zero they still scale C by beta.
class GroupedGemm {
 public:
  explicit GroupedGemm(GroupedGemmPath path = GroupedGemmPath::grouped) : path_(path) {}
  void run(cublasHandle_t handle, bool trans_a, bool trans_b, float alpha, const std::vector<GemmProblem>& problems,
           float beta, const GemmPrecision& p = {});
  // The path the last run took: grouped falls back to loop where cuBLAS reports the grouped call
  // unsupported (types, architecture).
  GroupedGemmPath last_path() const { return last_path_; }

 private:
  void run_loop(cublasHandle_t handle, bool trans_a, bool trans_b, float alpha,
                const std::vector<GemmProblem>& problems, float beta, const GemmPrecision& p);

  GroupedGemmPath path_;
  GroupedGemmPath last_path_ = GroupedGemmPath::loop;
  // Precisions (inputs, output, compute type) cuBLAS refused for the grouped call: straight to the loop.
  std::vector<uint32_t> unsupported_;
  DeviceBuffer<void*> pointers_;  // [A..., B..., C...] of the grouped call (column-major view)
  std::vector<void*> host_pointers_;
  std::vector<cublasOperation_t> op_a_, op_b_;
  std::vector<int> m_, n_, k_, lda_, ldb_, ldc_, ones_;
  std::vector<float> alpha_, beta_;
};

}  // namespace finemoe::cuda
