#include "backend/compute.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>

#include "util/check.h"
#ifdef FINEMOE_WITH_CUDA
#include "backend/ops_cuda.h"
#endif

namespace finemoe {
namespace {
ComputeSettings g_settings;
std::atomic<int64_t> g_live_buffers{0};
std::atomic<int64_t> g_live_bytes{0};
std::atomic<int64_t> g_peak_bytes{0};
TransferCounters g_transfers;
std::mutex g_live_mutex;
std::unordered_map<const void*, size_t> g_live;
constexpr std::align_val_t kHostAlignment{64};
}  // namespace

bool cuda_backend_built() {
#ifdef FINEMOE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

void configure_compute(const ComputeSettings& s) {
#ifdef FINEMOE_WITH_CUDA
  if (g_settings.device == ComputeDevice::cuda && s.device != ComputeDevice::cuda) ops::device::release_scratch();
#endif
  FINEMOE_CHECK(!s.bf16_operands ||
                    (s.gemm_inputs == GemmInputs::bf16 && s.activation_storage == ActivationStorage::bf16),
                "bf16 GEMM operands need bf16 GEMM inputs and bf16 activation storage");
  FINEMOE_CHECK(s.device == g_settings.device || g_live_buffers.load() == 0,
                "the compute device changed while " << g_live_buffers.load() << " model buffers were allocated");
  if (s.device == ComputeDevice::cuda) {
#ifdef FINEMOE_WITH_CUDA
    ops::device::configure(s);
#else
    throw RuntimeFailure("train.device = cuda: this finemoe-train was built without the CUDA backend "
                         "(configure with -DFINEMOE_CUDA=ON on a machine with nvcc)");
#endif
  }
  g_settings = s;
}

const ComputeSettings& compute_settings() { return g_settings; }

const TransferCounters& transfer_counters() { return g_transfers; }
void reset_transfer_counters() { g_transfers = TransferCounters{}; }

std::vector<std::pair<const void*, size_t>> live_buffers() {
  std::lock_guard<std::mutex> lock(g_live_mutex);
  return {g_live.begin(), g_live.end()};
}

MemoryUse buffer_memory_use() { return {g_live_bytes.load(), g_peak_bytes.load()}; }
bool is_device_memory(const void* p) {
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) return ops::device::is_device_pointer(p);
#endif
  (void)p;
  return false;
}

void reset_buffer_memory_peak() { g_peak_bytes.store(g_live_bytes.load()); }

namespace detail {

void* allocate_compute_bytes(size_t bytes) {
  void* p = nullptr;
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) p = ops::device::allocate(bytes);
#endif
  if (!p) p = ::operator new(bytes, kHostAlignment);
  g_live_buffers.fetch_add(1);
  {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    g_live[p] = bytes;
  }
  const int64_t live = g_live_bytes.fetch_add(int64_t(bytes)) + int64_t(bytes);
  int64_t peak = g_peak_bytes.load();
  while (live > peak && !g_peak_bytes.compare_exchange_weak(peak, live)) {
  }
  return p;
}

void free_compute_bytes(void* p, size_t bytes) noexcept {
  g_live_buffers.fetch_sub(1);
  g_live_bytes.fetch_sub(int64_t(bytes));
  {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    g_live.erase(p);
  }
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) return ops::device::free(p);
#endif
  ::operator delete(p, kHostAlignment);
}

void copy_compute_bytes(void* dst, const void* src, size_t bytes) {
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) return ops::device::copy(dst, src, bytes);
#endif
  std::memmove(dst, src, bytes);
}

void zero_compute_bytes(void* p, size_t bytes) {
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) return ops::device::fill_zero(p, bytes);
#endif
  std::memset(p, 0, bytes);
}

void copy_bytes_to_host(void* host, const void* device, size_t bytes) {
  ++g_transfers.to_host_calls;
  g_transfers.to_host_bytes += int64_t(bytes);
  ++g_transfers.host_waits;
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) return ops::device::copy_to_host(host, device, bytes);
#endif
  if (bytes > 0) std::memcpy(host, device, bytes);
}

void copy_bytes_to_device(void* device, const void* host, size_t bytes) {
  ++g_transfers.to_device_calls;
  g_transfers.to_device_bytes += int64_t(bytes);
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) return ops::device::copy_to_device(device, host, bytes);
#endif
  if (bytes > 0) std::memcpy(device, host, bytes);
}

void count_host_wait() { ++g_transfers.host_waits; }

}  // namespace detail
}  // namespace finemoe
