// The GPU step's host-synchronisation budget, measured on the CPU through the same code path: the
// transfer counters of backend/compute.h count every wait of the host for the compute backend and
// every named transfer, on both backends. One optimizer step, after a first step that sized the
// buffers, on 1 and 2 ranks (EP = world), both routings, several block and micro-batch counts:
//   expert choice, groups inside the rank: the step's two reads (losses, gradient norm), nothing
//     per MoE layer and nothing per micro-batch;
//   token choice: one read of the per-expert counts per MoE layer per micro-batch (on 2 ranks after
//     their exchange, in the same transfer), plus the two.
#include <gtest/gtest.h>

#include "backend/compute.h"
#include "training_harness.h"

namespace finemoe {
namespace {
using namespace test;

constexpr int64_t kStepReads = 2;  // the loss sums and the gradient norm's sums of squares

struct Budget {
  TransferCounters step;
  int n_blocks = 0, micro_batches = 0, n_experts = 0, world = 1;
};

Budget measure(const std::string& routing, int n_blocks, int micro_batches, const Corpus& corpus,
               const std::string& balance = "aux_loss") {
  Case c;
  c.routing = routing;
  c.balance = balance;
  c.batch = 16;
  c.micro = c.batch / micro_batches;
  Config cfg = make_config(c, "fp32");
  cfg.model.n_blocks = n_blocks;
  int world_size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  BatchSampler data(corpus.data(), kContext, cfg.train.seed, kTrainStream);
  ProcessGrid grid(MPI_COMM_WORLD, world_size);
  TrainingEngine<float> engine(cfg, grid);
  engine.step(0, 1e-3, data);  // buffers grow to their size here
  reset_transfer_counters();
  engine.step(1, 1e-3, data);
  Budget b;
  b.step = transfer_counters();
  b.n_blocks = n_blocks;
  b.micro_batches = micro_batches;
  b.n_experts = cfg.n_experts();
  b.world = world_size;
  return b;
}

class HostSyncBudget : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(HostSyncBudget, ExpertChoiceWaitsOnlyForTheStepsReads) {
  Corpus corpus;
  const auto [n_blocks, micro_batches] = GetParam();
  const Budget b = measure("expert_choice", n_blocks, micro_batches, corpus);
  EXPECT_EQ(b.step.host_waits, kStepReads) << n_blocks << " blocks, " << micro_batches << " micro-batches";
  EXPECT_EQ(b.step.to_host_calls, kStepReads);
  EXPECT_EQ(b.step.to_host_bytes, 2 * 2 * int64_t(sizeof(double)));
  EXPECT_EQ(b.step.to_device_calls, 2 * micro_batches) << "inputs and targets per micro-batch";
}

TEST_P(HostSyncBudget, TokenChoiceReadsTheCountsOncePerLayerAndMicroBatch) {
  Corpus corpus;
  const auto [n_blocks, micro_batches] = GetParam();
  const Budget b = measure("token_choice", n_blocks, micro_batches, corpus);
  const int64_t layer_reads = int64_t(n_blocks) * micro_batches;
  EXPECT_EQ(b.step.host_waits, kStepReads + layer_reads) << n_blocks << " blocks, " << micro_batches << " micro-batches";
  EXPECT_EQ(b.step.to_host_calls, kStepReads + layer_reads);
  // One transfer per layer: the counts sent, and with 2 ranks those received, exchanged before it.
  const int64_t count_bytes = b.n_experts * int64_t(sizeof(int64_t)) * (b.world > 1 ? 2 : 1);
  EXPECT_EQ(b.step.to_host_bytes, 2 * 2 * int64_t(sizeof(double)) + layer_reads * count_bytes);
  EXPECT_EQ(b.step.to_device_calls, 2 * micro_batches);
}

// Issue 20, moe.balance = bias: the same waits as token choice with the balance loss (the loads are
// on the host since the count reads); the bias step adds one transfer to the device per MoE layer
// per step (its +-rate vector), which does not wait.
TEST_P(HostSyncBudget, BiasBalancingAddsOneTransferToTheDevicePerLayerAndNoWait) {
  Corpus corpus;
  const auto [n_blocks, micro_batches] = GetParam();
  const Budget b = measure("token_choice", n_blocks, micro_batches, corpus, "bias");
  const int64_t layer_reads = int64_t(n_blocks) * micro_batches;
  EXPECT_EQ(b.step.host_waits, kStepReads + layer_reads) << n_blocks << " blocks, " << micro_batches << " micro-batches";
  EXPECT_EQ(b.step.to_host_calls, kStepReads + layer_reads);
  EXPECT_EQ(b.step.to_device_calls, 2 * micro_batches + n_blocks) << "tokens per micro-batch, one bias step per layer";
}

INSTANTIATE_TEST_SUITE_P(BlocksAndMicroBatches, HostSyncBudget,
                         ::testing::Values(std::make_tuple(1, 1), std::make_tuple(3, 1), std::make_tuple(2, 2)));

}  // namespace
}  // namespace finemoe
