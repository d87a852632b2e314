#include "backend/compute.h"

#include <atomic>
#include <new>

#include "util/check.h"
#ifdef FINEMOE_WITH_CUDA
#include "backend/ops_cuda.h"
#endif

namespace finemoe {
namespace {
ComputeSettings g_settings;
std::atomic<int64_t> g_live_buffers{0};
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

namespace detail {

void* allocate_compute_bytes(size_t bytes) {
  void* p = nullptr;
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) p = ops::device::allocate_managed(bytes);
#endif
  if (!p) p = ::operator new(bytes, kHostAlignment);
  g_live_buffers.fetch_add(1);
  return p;
}

void free_compute_bytes(void* p, size_t) noexcept {
  g_live_buffers.fetch_sub(1);
#ifdef FINEMOE_WITH_CUDA
  if (on_device()) return ops::device::free_managed(p);
#endif
  ::operator delete(p, kHostAlignment);
}

}  // namespace detail
}  // namespace finemoe
