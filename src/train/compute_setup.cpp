#include "train/compute_setup.h"

#include <algorithm>

#include "backend/compute.h"
#include "backend/ops.h"
#include "train/engine.h"
#include "util/check.h"
#ifdef FINEMOE_WITH_CUDA
#include <cuda_runtime_api.h>

#include "backend/cuda/device.h"
#include "kernels/cuda_check.h"
#endif

namespace finemoe {

std::string setup_compute(const Config& cfg, ProcessGrid& grid) {
  ComputeSettings s;
  s.gemm_inputs = cfg.train.precision == "bf16" ? GemmInputs::bf16 : GemmInputs::full;
  s.activation_storage = cfg.train.precision == "bf16" ? ActivationStorage::bf16 : ActivationStorage::full;
  std::string label = "cpu";
  if (cfg.train.device == "cuda") {
#ifdef FINEMOE_WITH_CUDA
    const int device = cuda::select_device(grid.world().handle(), cfg.parallel.device_id);
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    label = "cuda:" + std::to_string(device) + " " + prop.name;
    s.device = ComputeDevice::cuda;
    // Native bf16 products: the operands stored in bf16 (on the CPU only a test mode: same values).
    s.bf16_operands = cfg.train.precision == "bf16";
#else
    (void)grid;
    throw InputError("train.device = cuda: this finemoe-train was built without the CUDA backend; allowed here: cpu");
#endif
  }
  configure_compute(s);
  if (s.device == ComputeDevice::cuda) {
    // The attention path for the training micro-batch (evaluation batches are checked when met).
    const int n_seq = std::max(1, cfg.train.micro_batch_size() / grid.world_size());
    label += ", attention " + ops::select_attention(n_seq, cfg.model.context, cfg.model.n_heads, cfg.model.d_model);
    label += ", cuda graph " + cuda_graph_status(cfg, grid.world_size());
    if (s.bf16_operands) label += ", bf16 operands (weights' bf16 copy, native bf16 products)";
  }
  return label;
}

}  // namespace finemoe
