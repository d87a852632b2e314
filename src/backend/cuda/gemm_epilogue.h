#pragma once
// A matrix product and the FFN's elementwise activation after it, with the activation folded into the
// product by cuBLASLt's GELU epilogues where it can be, in the row-major conventions of
// backend/cuda/gemm.h (op(A) m x k, op(B) k x n, leading dimensions of the row-major storage),
// strided-batched (the i-th product on A + i stride_a, B + i stride_b, C + i stride_c; strides in
// elements):
//   forward   pre = op(A) op(B),  out = act(pre)         gelu_tanh: CUBLASLT_EPILOGUE_GELU_AUX
//   backward  dpre = (op(A) op(B)) * act'(pre)           gelu_tanh: CUBLASLT_EPILOGUE_DGELU
// cuBLASLt's GELU is the tanh approximation (cpu::Activation::gelu_tanh), not the erf form; relu and
// gelu always take the separate pass (docs/cuda.md says why). The C-side matrices (out and pre, dpre
// and pre) share one leading dimension and batch stride. out and dpre are stored in the precision's
// output type, pre in its own type (fp32 or bf16; in the forward another type than the output's only
// with bf16 inputs); inputs fp32 or bf16 with fp32 accumulation (GemmPrecision). alpha = 1, beta = 0:
// the C-side is overwritten.
//
// The separate pass: cuda::gemm_strided_batched, then the activation kernel (kernels/activation.h).
// gelu_tanh takes it too where cuBLASLt cannot take the product (no algorithm for the shape, types or
// alignment; the pre-activation's leading dimension or batch stride not a multiple of 8, which
// cuBLASLt requires; k = 0). last_path() says which ran and last_reason() why.
//
// Graph capture: a call allocates nothing (cuBLASLt gets the handle's fixed workspace) and only
// enqueues on the handle's stream. The first call for a shape builds its plan (descriptors and the
// heuristic's algorithm, host-side only) and keeps it; later calls reuse it. Use one object from one
// stream at a time.
#include <cublasLt.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "backend/cpu/activation.h"
#include "backend/cuda/gemm.h"

namespace finemoe::cuda {

enum class EpiloguePath {
  fused,    // one cublasLtMatmul with the epilogue
  separate  // the product, then the activation kernel: the fallback and the reference
};

// The product side of an epilogue call: `batch` row-major products op(A_i) op(B_i).
struct StridedProduct {
  bool trans_a = false, trans_b = false;
  int m = 0, n = 0, k = 0;
  const void* A = nullptr;
  int lda = 0;
  int64_t stride_a = 0;
  const void* B = nullptr;
  int ldb = 0;
  int64_t stride_b = 0;
  int batch = 1;
};

class GemmEpilogue {
 public:
  // path = separate: always the separate pass (tests and the benchmark compare the two).
  explicit GemmEpilogue(EpiloguePath path = EpiloguePath::fused);
  ~GemmEpilogue();
  GemmEpilogue(const GemmEpilogue&) = delete;
  GemmEpilogue& operator=(const GemmEpilogue&) = delete;

  // pre = op(A) op(B) (pre_type), out = act(pre) (p.output); out and pre must not overlap.
  void forward(const CublasHandle& handle, const StridedProduct& g, void* out, void* pre, GemmDType pre_type,
               int ldc, int64_t stride_c, const GemmPrecision& p, cpu::Activation act);
  // dpre = (op(A) op(B)) * act'(pre), dpre in p.output, pre in pre_type; they must not overlap.
  void backward(const CublasHandle& handle, const StridedProduct& g, const void* pre, GemmDType pre_type,
                void* dpre, int ldc, int64_t stride_c, const GemmPrecision& p, cpu::Activation act);

  EpiloguePath last_path() const { return last_path_; }
  // Empty after a fused call; after a separate one, why ("separate pass requested", "no cuBLASLt
  // epilogue for relu", "cuBLASLt: no algorithm ...", ...).
  const std::string& last_reason() const { return last_reason_; }

 private:
  struct Plan;
  using Key = std::array<int64_t, 21>;
  Plan& plan_for(bool backward, const StridedProduct& g, const void* D, const void* aux, GemmDType aux_type,
                 int ldc, int64_t stride_c, const GemmPrecision& p);
  // False (nothing enqueued) where cuBLASLt cannot take the product; last_reason_ says why.
  bool run_fused(bool backward, cpu::Activation act, const CublasHandle& handle, const StridedProduct& g, void* D,
                 const void* aux, GemmDType aux_type, int ldc, int64_t stride_c, const GemmPrecision& p);

  EpiloguePath path_;
  EpiloguePath last_path_ = EpiloguePath::separate;
  std::string last_reason_ = "no call yet";
  cublasLtHandle_t lt_ = nullptr;
  std::map<Key, std::unique_ptr<Plan>> plans_;  // per shape, types and alignment
};

}  // namespace finemoe::cuda
