// Whole training steps on the GPU against the CPU backend (issue 5), with the model, router and
// dispatcher code shared and only the arithmetic (backend/ops.h) and the memory differing:
//   OneStepMatchesCpu:    one fp32 step (TF32 off) per routing: the same routing decisions as the
//                         CPU, loss and every gradient tensor within 1e-4 (relative, norm-wise);
//                         with NCCL communicators (world 1) the same as with MPI.
//   Bf16FollowsFp32:      200 steps with bf16 GEMM inputs and bf16 activation storage follow the fp32
//                         loss curve within 1% (20-step moving averages).
//   FusedAttentionStepMatchesCublas: a bf16 step with cuDNN's fused attention against the same step
//                         through the cuBLAS attention: loss within 1e-3, gradients within 2e-2
//                         norm-wise (skipped with a message where cuDNN is unavailable).
//   FusedAttentionAtContextOne: one attention layer at context 1 (where the statistics and the
//                         probabilities have the same size) on cuDNN's fused path: the layer knows it
//                         took that path (ops::attention_fused), and its input and weight gradients
//                         are within 2e-2 norm-wise of the cuBLAS path's (skipped where cuDNN is
//                         unavailable or does not build the graph at context 1).
//   Bf16StorageMatchesCpu: one step with bf16 activation storage against the CPU's (its reference):
//                         the same routing, loss and every gradient within 1e-3 norm-wise.
//   Bf16OperandsMatchCpuAndRoundingInsideCublas: one bf16 step with native bf16 products (the
//                         weights' bf16 copy, stored bf16 operands) against the CPU's bf16 step and
//                         against the GPU's fp32-input products rounded inside cuBLAS: loss within
//                         1e-3, gradients within 5e-3 norm-wise where the routing agrees (the
//                         step cases and expert choice with gelu_tanh: the experts' GELU epilogue).
//   SharedGpuLayouts:     2 or 4 ranks sharing the GPU through the host-staged MPI path (EP = world,
//                         and EP < world) reproduce the 1-rank GPU run as on the CPU: identical
//                         routing at step 1, step-1 gradients and 5 per-step losses within 1e-4.
//   DeviceResidency:      every live buffer of a trained engine is device memory
//                         (cudaPointerGetAttributes), the step waits for the device exactly as the
//                         CPU budget test says (expert choice: its two reads; token choice: one more
//                         per MoE layer), and the pool's high-water mark against the memory plan.
//   CapturedStepMatchesUncapturedBitForBit: train.cuda_graph (TrainingEngine::graph_step): 6 steps
//                         replayed from a graph captured at step 2 (step 4 eager and timed, as a
//                         logged step) against the same steps run eagerly: losses, gradient norms
//                         and every parameter bit for bit (the scatter-adds are deterministic), fp32
//                         and bf16 (with cuDNN's attention where it is usable); the graph's memory-node
//                         pool within the plan's count of it (its largest scratch, in 2 MiB pages).
//   StepGraphCaptureLetsOtherThreadsCallCuda: while ops::StepGraph captures, another thread (as the
//                         watchdog's may, through a CUDA-aware MPI) calls cudaMalloc: it must succeed
//                         (a global-mode capture refuses it), and the graph still replays correctly.
//   ExpertChoiceCaptures: forward + backward of an expert-choice micro-batch and the AdamW update
//                         captured under cudaStreamCaptureModeGlobal (any host synchronisation,
//                         blocking copy, cudaMalloc or cudaFree inside fails the capture), then
//                         replayed: the same loss sums as the uncaptured run.
// Run under mpiexec: -n 1 for all but SharedGpuLayouts (gtest filter), -n 2 and -n 4 for that one.
#include <gtest/gtest.h>

#include <cuda_runtime_api.h>

#include <cstring>
#include <thread>

#include "../mpi/train/training_harness.h"
#include "backend/compute.h"
#include "backend/cuda/device.h"
#include "backend/ops_cuda.h"
#include "kernels/cuda_check.h"
#include "model/attention.h"
#include "model/memory_plan.h"

namespace finemoe {
namespace {

using namespace test;

// bf16 GEMM inputs with bf16 storage on the GPU read stored bf16 operands, as train.precision = bf16
// sets it (compute_setup), unless bf16_operands is false (fp32 inputs rounded inside cuBLAS).
void use(ComputeDevice device, GemmInputs inputs = GemmInputs::full,
         ActivationStorage storage = ActivationStorage::full, bool bf16_operands = true) {
  ComputeSettings s;
  s.device = device;
  s.gemm_inputs = inputs;
  s.activation_storage = storage;
  s.bf16_operands = bf16_operands && device == ComputeDevice::cuda && inputs == GemmInputs::bf16 &&
                    storage == ActivationStorage::bf16;
  if (device == ComputeDevice::cuda) cuda::select_device(MPI_COMM_WORLD, -1);
  configure_compute(s);
}

class GpuModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { corpus_ = new Corpus(); }
  static void TearDownTestSuite() {
    delete corpus_;
    corpus_ = nullptr;
  }
  void SetUp() override {
    if (cuda::cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: skipped";
  }
  void TearDown() override { use(ComputeDevice::cpu); }
  static Corpus* corpus_;
};

Corpus* GpuModel::corpus_ = nullptr;

std::vector<Case> step_cases() {
  Case expert_choice;
  expert_choice.name = "expert_choice";
  Case token_choice;
  token_choice.name = "token_choice";
  token_choice.routing = "token_choice";
  token_choice.capacity_factor = 1.25;
  // Issue 20: a shared expert with swiglu experts (expert choice, G = 2, S = 1), and dropless
  // token choice with loss-free balancing on a router skewed to one expert (GPU dropless path).
  Case shared_swiglu;
  shared_swiglu.name = "shared_swiglu";
  shared_swiglu.shared_experts = 1;
  shared_swiglu.activation = "swiglu";
  shared_swiglu.group_size = 8;
  Case dropless_bias;
  dropless_bias.name = "dropless_bias";
  dropless_bias.routing = "token_choice";
  dropless_bias.capacity_factor = 0;
  dropless_bias.shared_experts = 1;
  dropless_bias.balance = "bias";
  dropless_bias.router_skew = 4.0;
  return {expert_choice, token_choice, shared_swiglu, dropless_bias};
}

TEST_F(GpuModel, OneStepMatchesCpu) {
  for (const Case& c : step_cases()) {
    SCOPED_TRACE(c.name);
    const Config cfg = make_config(c, "fp32");
    BatchSampler data(corpus_->data(), kContext, cfg.train.seed, kTrainStream);
    use(ComputeDevice::cpu);
    const Trained<float> cpu = train<float>(cfg, MPI_COMM_SELF, 1, data, 1, c.router_skew);
    use(ComputeDevice::cuda);
    const Trained<float> gpu = train<float>(cfg, MPI_COMM_SELF, 1, data, 1, c.router_skew);
    use(ComputeDevice::cpu);
    ASSERT_EQ(gpu.routed, cpu.routed) << "routing decisions of step 1 differ: the comparison needs the same ones";
    const double loss_diff = rel_scalar(gpu.loss[0], cpu.loss[0]);
    std::string worst;
    const double grad_diff = tensor_diff(gpu, gpu.grads, cpu, cpu.grads, rel_norm<float>, &worst);
    EXPECT_LE(loss_diff, 1e-4);
    EXPECT_LE(grad_diff, 1e-4) << "gradient of " << worst;
    std::printf("  %-14s GPU vs CPU fp32: loss %.6f vs %.6f (rel %.1e), worst gradient %s rel %.1e\n",
                c.name.c_str(), gpu.loss[0], cpu.loss[0], loss_diff, worst.c_str(), grad_diff);

    // The same step with NCCL communicators (world 1: the dispatcher's exchange through NCCL).
    Config nccl_cfg = cfg;
    nccl_cfg.parallel.communicator = "nccl";
    use(ComputeDevice::cuda);
    const Trained<float> nccl = train<float>(nccl_cfg, MPI_COMM_SELF, 1, data, 1, c.router_skew);
    use(ComputeDevice::cpu);
    EXPECT_EQ(nccl.routed, gpu.routed) << "NCCL vs MPI communicators: routing";
    EXPECT_LE(tensor_diff(nccl, nccl.grads, gpu, gpu.grads, rel_norm<float>, &worst), 1e-6)
        << "NCCL vs MPI communicators: gradient of " << worst;
  }
}

TEST_F(GpuModel, Bf16FollowsFp32) {
  Case c;
  c.name = "bf16";
  c.steps = 200;
  c.batch = 64;  // as tests/mpi/train/precision_mpi_test: per-step losses of small batches are noise
  const Config cfg = make_config(c, "fp32");
  BatchSampler data(corpus_->data(), kContext, cfg.train.seed, kTrainStream);
  use(ComputeDevice::cuda);
  const Trained<float> fp32 = train<float>(cfg, MPI_COMM_SELF, 1, data, c.steps);
  use(ComputeDevice::cpu);
  use(ComputeDevice::cuda, GemmInputs::bf16, ActivationStorage::bf16);
  const Trained<float> bf16 = train<float>(cfg, MPI_COMM_SELF, 1, data, c.steps);
  use(ComputeDevice::cpu);
  EXPECT_NE(bf16.loss, fp32.loss) << "bf16 inputs changed nothing: the rounding is not applied";
  const double worst = moving_average_gap(bf16.loss, fp32.loss, 20);
  EXPECT_LE(worst, 0.01);
  std::printf("  bf16 vs fp32 on the GPU, 200 steps: loss %.4f -> %.4f vs %.4f -> %.4f, worst 20-step mean gap %.2f%%\n",
              bf16.loss.front(), bf16.loss.back(), fp32.loss.front(), fp32.loss.back(), 100 * worst);
}

TEST_F(GpuModel, Bf16StorageMatchesCpu) {
  for (const Case& c : step_cases()) {
    SCOPED_TRACE(c.name);
    const Config cfg = make_config(c, "bf16");
    BatchSampler data(corpus_->data(), kContext, cfg.train.seed, kTrainStream);
    use(ComputeDevice::cpu, GemmInputs::full, ActivationStorage::bf16);
    const Trained<float> cpu = train<float>(cfg, MPI_COMM_SELF, 1, data, 1);
    use(ComputeDevice::cuda, GemmInputs::full, ActivationStorage::bf16);
    const Trained<float> gpu = train<float>(cfg, MPI_COMM_SELF, 1, data, 1);
    use(ComputeDevice::cpu);
    ASSERT_EQ(gpu.routed, cpu.routed) << "routing decisions of step 1 differ";
    std::string worst;
    const double grad_diff = tensor_diff(gpu, gpu.grads, cpu, cpu.grads, rel_norm<float>, &worst);
    EXPECT_LE(rel_scalar(gpu.loss[0], cpu.loss[0]), 1e-4);
    // An fp32 difference can flip a rounding to bf16 (2^-8 relative on that element): 1e-3 norm-wise.
    EXPECT_LE(grad_diff, 1e-3) << "gradient of " << worst;
    std::printf("  %-14s GPU vs CPU, bf16 storage: worst gradient %s rel %.1e\n", c.name.c_str(), worst.c_str(),
                grad_diff);
  }
}

TEST_F(GpuModel, Bf16OperandsMatchCpuAndRoundingInsideCublas) {
  std::vector<Case> cases = step_cases();
  // The experts' fused path (cuBLASLt's GELU_AUX / DGELU epilogues on the stored bf16 copies, fp32
  // output and pre-activation), which no other model case takes; three one-step runs of the small
  // model, expected well under a second on a GPU (not measured: no GPU here).
  Case gelu_tanh;
  gelu_tanh.name = "expert_choice_gelu_tanh";
  gelu_tanh.activation = "gelu_tanh";
  cases.push_back(gelu_tanh);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const Config cfg = make_config(c, "bf16");
    BatchSampler data(corpus_->data(), kContext, cfg.train.seed, kTrainStream);
    use(ComputeDevice::cpu, GemmInputs::bf16, ActivationStorage::bf16);
    const Trained<float> cpu = train<float>(cfg, MPI_COMM_SELF, 1, data, 1, c.router_skew);
    use(ComputeDevice::cuda, GemmInputs::bf16, ActivationStorage::bf16, true);
    const Trained<float> native = train<float>(cfg, MPI_COMM_SELF, 1, data, 1, c.router_skew);
    use(ComputeDevice::cpu);
    use(ComputeDevice::cuda, GemmInputs::bf16, ActivationStorage::bf16, false);
    const Trained<float> inside = train<float>(cfg, MPI_COMM_SELF, 1, data, 1, c.router_skew);
    use(ComputeDevice::cpu);
    // Routing can flip on a near tie under a different summation order: report, compare gradients
    // only where the decisions agree.
    if (native.routed != cpu.routed) {
      std::printf("  %-14s routing of step 1 differs from the CPU's: gradients not compared\n", c.name.c_str());
      continue;
    }
    std::string worst_cpu, worst_inside;
    const double vs_cpu = tensor_diff(native, native.grads, cpu, cpu.grads, rel_norm<float>, &worst_cpu);
    const double vs_inside = tensor_diff(native, native.grads, inside, inside.grads, rel_norm<float>, &worst_inside);
    EXPECT_LE(rel_scalar(native.loss[0], cpu.loss[0]), 1e-3);
    // The same bf16 inputs (round to nearest even on both sides), fp32 sums in another order; a
    // sum that lands on the other side of a bf16 rounding moves that element by 2^-8: 5e-3
    // norm-wise (a bound set without a GPU to calibrate it: the printed figures say how tight).
    EXPECT_LE(vs_cpu, 5e-3) << "gradient of " << worst_cpu;
    EXPECT_LE(vs_inside, 5e-3) << "gradient of " << worst_inside;
    std::printf("  %-14s native bf16 operands: vs CPU worst gradient %s rel %.1e; vs rounding inside cuBLAS %s "
                "rel %.1e\n", c.name.c_str(), worst_cpu.c_str(), vs_cpu, worst_inside.c_str(), vs_inside);
  }
}

TEST_F(GpuModel, FusedAttentionStepMatchesCublas) {
  Case c;
  c.name = "fused";
  Config cfg = make_config(c, "bf16");
  cfg.model.d_model = 128;  // head size 64, as h100-100m's
  cfg.model.n_heads = 2;
  BatchSampler data(corpus_->data(), kContext, cfg.train.seed, kTrainStream);
  use(ComputeDevice::cuda, GemmInputs::bf16, ActivationStorage::bf16);
  const Trained<float> cublas = train<float>(cfg, MPI_COMM_SELF, 1, data, 1);
  const std::string path =
      ops::select_attention(cfg.train.micro_batch_size(), cfg.model.context, cfg.model.n_heads, cfg.model.d_model);
  if (path.rfind("cudnn-sdpa", 0) != 0) {
    use(ComputeDevice::cpu);
    GTEST_SKIP() << "cuDNN unavailable: skipped (" << path << ")";
  }
  const Trained<float> fused = train<float>(cfg, MPI_COMM_SELF, 1, data, 1);
  ops::device::use_cublas_attention();
  use(ComputeDevice::cpu);
  ASSERT_EQ(fused.routed, cublas.routed) << "routing decisions of step 1 differ";
  std::string worst;
  const double grad_diff = tensor_diff(fused, fused.grads, cublas, cublas.grads, rel_norm<float>, &worst);
  EXPECT_LE(rel_scalar(fused.loss[0], cublas.loss[0]), 1e-3);
  EXPECT_LE(grad_diff, 2e-2) << "gradient of " << worst;
  std::printf("  %s: fused vs cuBLAS attention step: loss %.6f vs %.6f, worst gradient %s rel %.1e\n", path.c_str(),
              fused.loss[0], cublas.loss[0], worst.c_str(), grad_diff);
}

// Expected runtime on a GPU: about a second (cuDNN's graph build), not yet measured: no GPU here.
TEST_F(GpuModel, FusedAttentionAtContextOne) {
  const int n_seq = 4, n_heads = 2, d = 128;  // head size 64, as h100-100m's
  const TokenBatch batch{n_seq, 1};
  const size_t n = size_t(batch.tokens()) * d;
  use(ComputeDevice::cuda, GemmInputs::bf16, ActivationStorage::bf16);
  const std::string path = ops::select_attention(n_seq, batch.context, n_heads, d);
  if (path.rfind("cudnn-sdpa", 0) != 0) {
    use(ComputeDevice::cpu);
    GTEST_SKIP() << "cuDNN unavailable: skipped (" << path << ")";
  }
  std::vector<float> dx_fused, dx_cublas, grads_fused, grads_cublas;
  bool fused_first = false, fused_second = true;
  {
    ParameterStore<float> store;
    AttentionScratch<float> scratch;
    CausalSelfAttention<float> attn(store, 0, d, n_heads, 1.0, scratch);
    store.allocate(5);
    std::vector<float> x_host(n), dy_host(n);
    for (size_t i = 0; i < n; ++i) {
      x_host[i] = float(uniform_open(6, i) * 4 - 2);
      dy_host[i] = float(uniform_open(7, i) * 2 - 1);
    }
    DeviceBuffer<float> x, dy, y(n), dx(n);
    to_device(x, x_host);
    to_device(dy, dy_host);
    auto run = [&](std::vector<float>& dx_host, std::vector<float>& grads_host) {
      store.zero_grads();
      attn.forward(x.data(), y.data(), batch);
      attn.backward(dy.data(), dx.data());
      dx_host = to_host(dx);
      grads_host = to_host(store.grads(ParamGroup::replicated));
      return attn.fused();
    };
    fused_first = run(dx_fused, grads_fused);
    ops::device::use_cublas_attention();
    fused_second = run(dx_cublas, grads_cublas);
  }
  use(ComputeDevice::cpu);
  EXPECT_TRUE(fused_first) << "the layer did not take the fused path " << path << " chose";
  EXPECT_FALSE(fused_second);
  const double dx_diff = rel_norm(dx_fused.data(), dx_cublas.data(), int64_t(n));
  const double grad_diff = rel_norm(grads_fused.data(), grads_cublas.data(), int64_t(grads_cublas.size()));
  EXPECT_LE(dx_diff, 2e-2);
  EXPECT_LE(grad_diff, 2e-2);
  std::printf("  %s at context 1: dx rel %.1e, weight gradients rel %.1e\n", path.c_str(), dx_diff, grad_diff);
}

TEST_F(GpuModel, CapturedStepMatchesUncapturedBitForBit) {
  for (const char* precision : {"fp32", "bf16"}) {
    SCOPED_TRACE(precision);
    Case c;
    c.name = "graph";
    Config cfg = make_config(c, precision);
    cfg.train.device = "cuda";
    cfg.train.cuda_graph = true;
    const bool bf16 = std::string(precision) == "bf16";
    use(ComputeDevice::cuda, bf16 ? GemmInputs::bf16 : GemmInputs::full,
        bf16 ? ActivationStorage::bf16 : ActivationStorage::full);
    if (bf16)
      std::printf("  attention: %s\n", ops::select_attention(cfg.train.micro_batch_size(), cfg.model.context,
                                                             cfg.model.n_heads, cfg.model.d_model).c_str());
    BatchSampler data(corpus_->data(), kContext, cfg.train.seed, kTrainStream);
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    uint64_t zero = 0, graph_high = 0;
    CUDA_CHECK(cudaDeviceSetGraphMemAttribute(device, cudaGraphMemAttrUsedMemHigh, &zero));
    {
      ProcessGrid grid(MPI_COMM_SELF, 1);
      TrainingEngine<float> captured(cfg, grid), eager(cfg, grid);
      ASSERT_TRUE(captured.graph_mode()) << cuda_graph_status(cfg, 1);
      eager.set_replay(false);
      for (int s = 0; s < 6; ++s) {
        if (s == 4) captured.time_next_step();
        const StepResult a = captured.step(s, 1e-2, data), b = eager.step(s, 1e-2, data);
        EXPECT_EQ(a.loss, b.loss) << "step " << s;
        EXPECT_EQ(a.grad_norm, b.grad_norm) << "step " << s;
      }
      for (int g = 0; g < 2; ++g) {
        const auto pa = to_host(captured.store().values(ParamGroup(g)));
        const auto pb = to_host(eager.store().values(ParamGroup(g)));
        ASSERT_EQ(pa.size(), pb.size());
        EXPECT_EQ(std::memcmp(pa.data(), pb.data(), pa.size() * sizeof(float)), 0) << "parameters, group " << g;
      }
      std::printf("  %s: captured vs uncaptured, 6 steps: losses, norms and parameters bit for bit\n", precision);
      // The graph's memory-node pool as the plan counts it: the largest stream-ordered scratch in
      // 2 MiB pages, which holds only if allocations with disjoint lifetimes share addresses.
      CUDA_CHECK(cudaDeviceGetGraphMemAttribute(device, cudaGraphMemAttrUsedMemHigh, &graph_high));
      double scratch = 0, allowance = 0;
      for (const MemoryItem& item : plan_memory(cfg, 1, true).items) {
        if (item.name.rfind("scatter-add sort or LayerNorm", 0) == 0) scratch = item.bytes;
        if (item.name.rfind("CUDA graph", 0) == 0) allowance = item.bytes;
      }
      const double pages = std::ceil(scratch / (2 << 20)) * (2 << 20);
      EXPECT_LE(double(graph_high), pages) << "the graph's memory nodes beyond the plan's largest scratch";
      EXPECT_GE(allowance, pages);
      std::printf("  %s: graph memory-node high %.2f MiB, planned %.2f MiB (with the graph: %.2f MiB)\n", precision,
                  graph_high / 1048576.0, pages / 1048576, allowance / 1048576);
    }
    ops::device::use_cublas_attention();
    use(ComputeDevice::cpu);
  }
}

TEST_F(GpuModel, DeviceResidency) {
  for (const Case& c : step_cases()) {
    SCOPED_TRACE(c.name);
    const Config cfg = make_config(c, "fp32");
    BatchSampler data(corpus_->data(), kContext, cfg.train.seed, kTrainStream);
    use(ComputeDevice::cuda);
    {
      EXPECT_EQ(buffer_memory_use().live_bytes, 0) << "buffers left over from an earlier test";
      reset_buffer_memory_peak();
      ops::device::reset_pool_used_high();
      ProcessGrid grid(MPI_COMM_SELF, 1);
      TrainingEngine<float> engine(cfg, grid);
      engine.step(0, 1e-3, data);
      reset_transfer_counters();
      engine.step(1, 1e-3, data);
      const TransferCounters counted = transfer_counters();
      const int64_t layer_reads = c.routing == "token_choice" ? cfg.model.n_blocks : 0;
      EXPECT_EQ(counted.host_waits, 2 + layer_reads);
      int64_t buffers = 0;
      for (const auto& [p, bytes] : live_buffers()) {
        cudaPointerAttributes a{};
        CUDA_CHECK(cudaPointerGetAttributes(&a, p));
        EXPECT_EQ(a.type, cudaMemoryTypeDevice) << bytes << " bytes at " << p;
        ++buffers;
      }
      EXPECT_GT(buffers, 20);
      const MemoryPlan plan = plan_memory(cfg, 1, true);
      const double planned = plan.total() - plan.category_total("allowance");  // what goes through the pool
      const double used = double(buffer_memory_use().peak_bytes), pool = double(ops::device::pool_used_high());
      EXPECT_LE(used, planned);
      EXPECT_LE(pool, plan.total()) << "the pool's high-water mark beyond the plan with its allowances";
      std::printf("  %-14s %lld device buffers; host waits per step %lld; peak %.2f MiB requested, pool high %.2f MiB, "
                  "plan %.2f MiB\n",
                  c.name.c_str(), static_cast<long long>(buffers), static_cast<long long>(counted.host_waits),
                  used / 1048576, pool / 1048576, planned / 1048576);
    }
    use(ComputeDevice::cpu);
  }
}

// Expected runtime on a GPU: well under a second, not yet measured: no GPU here.
TEST_F(GpuModel, StepGraphCaptureLetsOtherThreadsCallCuda) {
  use(ComputeDevice::cuda);
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  const std::vector<float> host = {1.0f, -2.0f, 3.5f, 0.25f};
  std::vector<float> after;
  cudaError_t other_thread = cudaErrorUnknown;
  void* other_memory = nullptr;
  {
    DeviceBuffer<float> x;
    to_device(x, host);
    ops::synchronize();
    ops::StepGraph graph;
    graph.begin_capture();
    ops::scale<float>(x.data(), int64_t(x.size()), 2.0f);  // recorded, not run
    std::thread([&] {
      cudaSetDevice(device);
      other_thread = cudaMalloc(&other_memory, 256);
    }).join();
    graph.end_capture();
    graph.replay();
    graph.replay();
    after = to_host(x);
  }
  if (other_memory) CUDA_CHECK(cudaFree(other_memory));
  use(ComputeDevice::cpu);
  EXPECT_EQ(other_thread, cudaSuccess) << cudaGetErrorString(other_thread);
  ASSERT_EQ(after.size(), host.size());
  for (size_t i = 0; i < host.size(); ++i) EXPECT_EQ(after[i], host[i] * 4.0f) << i;
}

TEST_F(GpuModel, ExpertChoiceCaptures) {
  Case c;
  c.name = "capture";
  const Config cfg = make_config(c, "fp32");
  BatchSampler data(corpus_->data(), kContext, cfg.train.seed, kTrainStream);
  use(ComputeDevice::cuda);
  {
    ProcessGrid grid(MPI_COMM_SELF, 1);
    TrainingEngine<float> engine(cfg, grid);
    engine.step(0, 1e-3, data);  // every buffer at its size
    const int n_seq = cfg.train.batch_size, tokens = n_seq * cfg.model.context;
    std::vector<int32_t> inputs(tokens), targets(tokens);
    data.fill(1, 0, n_seq, inputs.data(), targets.data());
    DeviceBuffer<int32_t> dev_inputs(tokens), dev_targets(tokens);
    copy_to_device(dev_inputs.data(), inputs.data(), inputs.size());
    copy_to_device(dev_targets.data(), targets.data(), targets.size());
    TokenBatch batch;
    batch.n_seq = n_seq;
    batch.context = cfg.model.context;
    batch.loss_scale = 1.0 / tokens;
    auto& model = engine.model();
    auto& store = engine.store();
    auto run = [&] {
      store.zero_grads();
      model.zero_loss_sums();
      model.accumulate_forward_backward(dev_inputs.data(), dev_targets.data(), batch);
      engine.apply_update(1, 1e-3, 1.0);
    };
    // Parameters and AdamW moments: the replay and the plain run start from the same state.
    auto state = [&] {
      std::vector<std::vector<float>> h;
      for (int g = 0; g < 2; ++g) {
        const auto group = static_cast<ParamGroup>(g);
        h.push_back(to_host(store.values(group)));
        h.push_back(to_host(engine.optimizer().first(group)));
        h.push_back(to_host(engine.optimizer().second(group)));
      }
      return h;
    };
    auto restore = [&](const std::vector<std::vector<float>>& h) {
      for (int g = 0; g < 2; ++g) {
        const auto group = static_cast<ParamGroup>(g);
        to_device(store.values(group), h[size_t(3 * g)]);
        to_device(engine.optimizer().first(group), h[size_t(3 * g + 1)]);
        to_device(engine.optimizer().second(group), h[size_t(3 * g + 2)]);
      }
    };
    const auto start = state();
    ops::synchronize();
    const cudaStream_t stream = ops::device::compute_stream();
    // Ends the capture however the captured code leaves (a throw must not leave it open).
    struct Capture {
      cudaStream_t stream;
      cudaGraph_t graph = nullptr;
      cudaError_t ended = cudaErrorUnknown;
      explicit Capture(cudaStream_t s) : stream(s) { CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal)); }
      void end() { ended = cudaStreamEndCapture(stream, &graph); }
      ~Capture() {
        if (ended == cudaErrorUnknown) end();
        if (graph) cudaGraphDestroy(graph);
      }
    } capture(stream);
    run();
    capture.end();
    ASSERT_EQ(capture.ended, cudaSuccess) << "the expert-choice step is not capturable: "
                                          << cudaGetErrorString(capture.ended);
    model.reset_attention_time();  // its events were captured: never read them
    cudaGraphExec_t exec = nullptr;
    CUDA_CHECK(cudaGraphInstantiate(&exec, capture.graph, 0));
    CUDA_CHECK(cudaGraphLaunch(exec, stream));
    double replayed[2];
    copy_to_host(replayed, model.loss_sums(), 2);
    const auto after_replay = state();
    restore(start);
    run();
    double plain[2];
    copy_to_host(plain, model.loss_sums(), 2);
    const auto after_plain = state();
    EXPECT_NEAR(replayed[0], plain[0], 1e-6 * std::abs(plain[0]));
    EXPECT_NEAR(replayed[1], plain[1], 1e-6 * std::abs(plain[1]) + 1e-12);
    double worst = 0;
    for (size_t k = 0; k < after_plain.size(); ++k) {
      ASSERT_EQ(after_replay[k].size(), after_plain[k].size());
      for (size_t i = 0; i < after_plain[k].size(); ++i)
        worst = std::max(worst, double(std::abs(after_replay[k][i] - after_plain[k][i])) /
                                    (1e-6 + std::abs(after_plain[k][i])));
    }
    EXPECT_LE(worst, 1e-5) << "parameters or AdamW moments after the replayed update";
    EXPECT_NE(after_plain[0], start[0]) << "the update changed no parameter";
    std::printf("  captured expert-choice micro-batch + update replayed: loss sum %.6f vs %.6f uncaptured, "
                "state rel diff %.1e\n", replayed[0], plain[0], worst);
    CUDA_CHECK(cudaGraphExecDestroy(exec));
  }
  use(ComputeDevice::cpu);
}

TEST_F(GpuModel, SharedGpuLayouts) {
  const int w = world_size();
  ASSERT_GT(w, 1) << "run with mpiexec -n 2 or -n 4";
  Case c;
  c.name = "shared_gpu";
  c.steps = 5;
  const Config ref_cfg = make_config(c, "fp32");
  BatchSampler data(corpus_->data(), kContext, ref_cfg.train.seed, kTrainStream);
  use(ComputeDevice::cuda);
  const Trained<float> ref = train<float>(ref_cfg, MPI_COMM_SELF, 1, data, c.steps);
  for (int ep : {w, w / 2}) {
    SCOPED_TRACE("world " + std::to_string(w) + ", EP " + std::to_string(ep));
    Config cfg = make_config(c, "fp32");
    cfg.parallel.expert_parallel = ep;
    const Trained<float> par = train<float>(cfg, MPI_COMM_WORLD, ep, data, c.steps);
    EXPECT_EQ(par.routed, ref.routed) << "routing decisions at step 1";
    double loss_diff = 0;
    for (int s = 0; s < c.steps; ++s) loss_diff = std::max(loss_diff, rel_scalar(par.loss[s], ref.loss[s]));
    std::string worst;
    const double grad_diff = tensor_diff(par, par.grads, ref, ref.grads, rel_norm<float>, &worst);
    EXPECT_LE(loss_diff, 1e-4) << "per-step losses";
    EXPECT_LE(grad_diff, 1e-4) << "step-1 gradient of " << worst;
    if (world_rank() == 0)
      std::printf("  %d ranks on one GPU, EP %d: losses rel %.1e, step-1 gradients rel %.1e (%s)\n", w, ep, loss_diff,
                  grad_diff, worst.c_str());
  }
  use(ComputeDevice::cpu);
}

}  // namespace
}  // namespace finemoe
