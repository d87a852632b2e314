#pragma once
// Where the model's tensors live and where its arithmetic runs: one process-wide setting.
//   cpu:  host memory; backend/cpu (BLAS + OpenMP).
//   cuda: CUDA managed memory, so one pointer is valid on the host and on the GPU; kernels/ and
//         cuBLAS on one stream. The host-side parts of the model (routing decisions, the dispatcher's
//         bookkeeping, the host-staged MPI path, checkpoints) then share the CPU code unchanged and
//         only the arithmetic (backend/ops.h) differs between backends.
// Set once per process, before the first Buffer is allocated (the trainer does it after choosing the
// rank's GPU); every Buffer is freed the way it was allocated.
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace finemoe {

enum class ComputeDevice { cpu, cuda };

// What a matrix product's multiplications see. bf16: both operands rounded to bfloat16 (round to
// nearest even), products accumulated in fp32 - cuBLAS's CUBLAS_COMPUTE_32F_FAST_16BF on the GPU,
// the same rounding in front of SGEMM on the CPU. Storage, master weights, optimizer state,
// softmaxes and reductions stay fp32 either way.
enum class GemmInputs { full, bf16 };

struct ComputeSettings {
  ComputeDevice device = ComputeDevice::cpu;
  GemmInputs gemm_inputs = GemmInputs::full;
  bool allow_tf32 = false;  // cuda, GemmInputs::full only: TF32 tensor cores for fp32 products
};

// Applies `s`. Changing the device while Buffers are allocated is a logic error (RuntimeFailure);
// cuda needs a build with the CUDA backend and the rank's device selected (backend/cuda/device.h).
void configure_compute(const ComputeSettings& s);
const ComputeSettings& compute_settings();
inline bool on_device() { return compute_settings().device == ComputeDevice::cuda; }
// Whether this build has the CUDA backend (FINEMOE_CUDA).
bool cuda_backend_built();

namespace detail {
void* allocate_compute_bytes(size_t bytes);
void free_compute_bytes(void* p, size_t bytes) noexcept;
}  // namespace detail

// std::vector's allocator for model tensors: host memory on the CPU backend, managed memory on CUDA.
template <typename T>
struct ComputeAllocator {
  using value_type = T;
  ComputeAllocator() = default;
  template <typename U>
  ComputeAllocator(const ComputeAllocator<U>&) noexcept {}
  T* allocate(size_t n) { return static_cast<T*>(detail::allocate_compute_bytes(n * sizeof(T))); }
  void deallocate(T* p, size_t n) noexcept { detail::free_compute_bytes(p, n * sizeof(T)); }
  friend bool operator==(const ComputeAllocator&, const ComputeAllocator&) { return true; }
  friend bool operator!=(const ComputeAllocator&, const ComputeAllocator&) { return false; }
};

// A model tensor (parameters, gradients, optimizer state, activations, MoE copies).
template <typename T>
using Buffer = std::vector<T, ComputeAllocator<T>>;

}  // namespace finemoe
