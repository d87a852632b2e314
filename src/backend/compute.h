#pragma once
// Where the model's tensors live and where its arithmetic runs: one process-wide setting.
//   cpu:  host memory; backend/cpu (BLAS + OpenMP).
//   cuda: device memory from the CUDA runtime's stream-ordered pool (cudaMallocAsync on the compute
//         stream), never managed memory; kernels/ and cuBLAS on the same stream.
// Model tensors are DeviceBuffers: they have no host accessors, so host code reaches their
// contents only through the named, counted transfers below (copy_to_host / copy_to_device). The
// CPU backend runs the same types and calls, so every CPU test exercises the GPU's discipline and
// the transfer counters measure the GPU step's host synchronisations.
// Set once per process, before the first buffer is allocated (the trainer does it after choosing
// the rank's GPU); every buffer is freed the way it was allocated.
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace finemoe {

enum class ComputeDevice { cpu, cuda };

// What a matrix product's multiplications see. bf16: both operands rounded to bfloat16 (round to
// nearest even), products accumulated in fp32 - cuBLAS's CUBLAS_COMPUTE_32F_FAST_16BF on the GPU,
// the same rounding in front of SGEMM on the CPU. Storage, master weights, optimizer state,
// softmaxes and reductions stay fp32 either way.
enum class GemmInputs { full, bf16 };

// How the activations kept from the forward for the backward are stored. bf16: each is rounded to
// bfloat16 (round to nearest even) where the forward produced it and stored in 2 bytes; the backward
// reads the rounded values (backend/kept_activation.h). The forward itself runs on fp32 working
// buffers, and the residual stream, LayerNorm statistics, router and losses stay fp32 either way.
enum class ActivationStorage { full, bf16 };

struct ComputeSettings {
  ComputeDevice device = ComputeDevice::cpu;
  GemmInputs gemm_inputs = GemmInputs::full;
  bool allow_tf32 = false;  // cuda, GemmInputs::full only: TF32 tensor cores for fp32 products
  ActivationStorage activation_storage = ActivationStorage::full;  // bf16: fp32 models (T = float) only
  // GemmInputs::bf16 with bf16 activation storage only: the products read stored bf16 operands
  // (ops::Operand: the weights' bf16 copy, the kept activations' bf16 storage, gradients packed
  // once for their two products) instead of rounding fp32 inputs inside each product. The same
  // values either way; on the GPU it halves the operand traffic and makes the products native bf16
  // cuBLAS calls. CUDA bf16 runs turn it on; on the CPU it is a test mode (the products then read
  // exactly the pointers the GPU reads, so equal bits with it off show those copies are current).
  bool bf16_operands = false;
};

// Applies `s`. Changing the device while buffers are allocated is a logic error (RuntimeFailure);
// cuda needs a build with the CUDA backend and the rank's device selected (backend/cuda/device.h).
void configure_compute(const ComputeSettings& s);
const ComputeSettings& compute_settings();
inline bool on_device() { return compute_settings().device == ComputeDevice::cuda; }
inline bool bf16_activation_storage() { return compute_settings().activation_storage == ActivationStorage::bf16; }
inline bool bf16_operands() { return compute_settings().bf16_operands; }
// Whether this build has the CUDA backend (FINEMOE_CUDA).
bool cuda_backend_built();

// What crossed between host and device, and how often the host waited for the device. Counted on
// both backends by the same calls, so a CPU test can assert the GPU step's budget.
struct TransferCounters {
  int64_t host_waits = 0;        // the host blocked until the compute stream drained
  int64_t to_host_calls = 0;     // copy_to_host
  int64_t to_host_bytes = 0;
  int64_t to_device_calls = 0;   // copy_to_device
  int64_t to_device_bytes = 0;
};
const TransferCounters& transfer_counters();
void reset_transfer_counters();

// Bytes of model buffers: live now and the high-water mark since the last reset (the allocator's
// own accounting: host allocations on the CPU, the pool's used memory on CUDA).
struct MemoryUse {
  int64_t live_bytes = 0;
  int64_t peak_bytes = 0;
};
MemoryUse buffer_memory_use();
// Address and bytes of every live buffer (for residency checks).
std::vector<std::pair<const void*, size_t>> live_buffers();
// Whether p is device memory (cudaPointerGetAttributes); always false on the CPU backend.
bool is_device_memory(const void* p);
void reset_buffer_memory_peak();

namespace detail {
void* allocate_compute_bytes(size_t bytes);
void free_compute_bytes(void* p, size_t bytes) noexcept;
// Device <- device copy and zero fill on the compute backend (ordered on the compute stream).
void copy_compute_bytes(void* dst, const void* src, size_t bytes);
void zero_compute_bytes(void* p, size_t bytes);
// Host <-> device on the compute stream; to_host waits for it (one counted host wait).
void copy_bytes_to_host(void* host, const void* device, size_t bytes);
void copy_bytes_to_device(void* device, const void* host, size_t bytes);
// ops::synchronize and the other waits of the host for the device call this.
void count_host_wait();
}  // namespace detail

// A model tensor in the compute backend's memory (parameters, gradients, optimizer state,
// activations, MoE copies). Move-only; no element access, no iterators: data() is an address for
// the operations of backend/ops.h and the communicators, never for host reads or writes.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) { resize(count); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)),
        capacity_(std::exchange(o.capacity_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(capacity_, o.capacity_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // As std::vector::resize: the first min(old, new) elements are kept, new ones are zero.
  void resize(size_t count) {
    if (count > capacity_) {
      T* fresh = static_cast<T*>(detail::allocate_compute_bytes(count * sizeof(T)));
      if (size_ > 0) detail::copy_compute_bytes(fresh, data_, size_ * sizeof(T));
      release();
      data_ = fresh;
      capacity_ = count;
    }
    if (count > size_) detail::zero_compute_bytes(data_ + size_, (count - size_) * sizeof(T));
    size_ = count;
  }
  // count elements, all zero.
  void assign_zero(size_t count) {
    resize(count);
    if (count > 0) detail::zero_compute_bytes(data_, count * sizeof(T));
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  size_t bytes() const { return size_ * sizeof(T); }

 private:
  void release() noexcept {
    if (data_) detail::free_compute_bytes(data_, capacity_ * sizeof(T));
    data_ = nullptr;
    size_ = capacity_ = 0;
  }
  T* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

// The named transfers. copy_to_host waits for the compute stream (counted); copy_to_device is
// ordered on it and returns at once.
template <typename T>
void copy_to_host(T* host, const T* device, size_t count) {
  detail::copy_bytes_to_host(host, device, count * sizeof(T));
}
template <typename T>
void copy_to_device(T* device, const T* host, size_t count) {
  detail::copy_bytes_to_device(device, host, count * sizeof(T));
}
template <typename T>
std::vector<T> to_host(const DeviceBuffer<T>& b) {
  std::vector<T> host(b.size());
  copy_to_host(host.data(), b.data(), b.size());
  return host;
}
template <typename T>
void to_device(DeviceBuffer<T>& b, const std::vector<T>& host) {
  b.resize(host.size());
  copy_to_device(b.data(), host.data(), host.size());
}

// Activation buffers are allocated once and only grow (a larger micro-batch), never per step.
template <typename T>
T* ensure_size(DeviceBuffer<T>& buffer, size_t n) {
  if (buffer.size() < n) buffer.resize(n);
  return buffer.data();
}

}  // namespace finemoe
