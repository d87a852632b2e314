// The step that train.cuda_graph captures (TrainingEngine::graph_step), run eagerly on the CPU with
// the same calls a GPU capture records: the inputs in fixed buffers, the gradient norm's sums of
// squares, clipping and the AdamW constants formed on the compute backend (ops::adamw_prepare), the
// prepared update. Against the ordinary step (host-side norm and constants, cpu::adamw_update):
//   GraphStepFollowsTheOrdinaryStep: 6 steps, expert choice and a dense model, clipping active:
//     step-1 loss and gradient norm equal, later losses within 1e-6 and parameters within 1e-5
//     (norm-wise; the two updates round differently only where one side fuses multiply-adds);
//   GraphStepWaitsTwice: the step's host waits are its two reads (losses, norm), as the ordinary
//     expert-choice step's, and it copies in its tokens and [lr, t];
//   CudaGraphStatusSaysWhyNot: what the record says for each layout it refuses.
// Runtime about 2 s (one rank).
#include <gtest/gtest.h>

#include "backend/compute.h"
#include "training_harness.h"

namespace finemoe {
namespace {
using namespace test;

Config graph_config(bool moe) {
  Case c;
  c.batch = 8;
  Config cfg = make_config(c, "fp32");
  cfg.moe.enabled = moe;
  cfg.train.grad_clip = 0.05;  // below the early norms: clipping is on
  return cfg;
}

TEST(GraphStep, GraphStepFollowsTheOrdinaryStep) {
  Corpus corpus;
  for (const bool moe : {true, false}) {
    SCOPED_TRACE(moe ? "expert choice" : "dense");
    const Config cfg = graph_config(moe);
    BatchSampler data(corpus.data(), kContext, cfg.train.seed, kTrainStream);
    ProcessGrid grid(MPI_COMM_SELF, 1);
    TrainingEngine<float> ordinary(cfg, grid), graph(cfg, grid);
    graph.use_graph_step_eagerly();
    ASSERT_TRUE(graph.graph_mode());
    ASSERT_FALSE(ordinary.graph_mode());
    for (int s = 0; s < 6; ++s) {
      const StepResult a = ordinary.step(s, 1e-2, data), b = graph.step(s, 1e-2, data);
      if (s == 0) {
        EXPECT_EQ(a.loss, b.loss);
        EXPECT_EQ(a.grad_norm, b.grad_norm);
        EXPECT_GT(a.grad_norm, cfg.train.grad_clip) << "clipping must be active for the comparison";
      }
      EXPECT_NEAR(a.loss, b.loss, 1e-6 * a.loss) << "step " << s;
      EXPECT_NEAR(a.grad_norm, b.grad_norm, 1e-5 * a.grad_norm) << "step " << s;
    }
    for (int g = 0; g < 2; ++g) {
      const auto pa = to_host(ordinary.store().values(ParamGroup(g)));
      const auto pb = to_host(graph.store().values(ParamGroup(g)));
      if (!pa.empty()) {
        EXPECT_LE(rel_norm(pb.data(), pa.data(), int64_t(pa.size())), 1e-5) << "group " << g;
      }
    }
  }
}

TEST(GraphStep, GraphStepWaitsTwice) {
  Corpus corpus;
  const Config cfg = graph_config(true);
  BatchSampler data(corpus.data(), kContext, cfg.train.seed, kTrainStream);
  ProcessGrid grid(MPI_COMM_SELF, 1);
  TrainingEngine<float> engine(cfg, grid);
  engine.use_graph_step_eagerly();
  engine.step(0, 1e-3, data);
  reset_transfer_counters();
  engine.step(1, 1e-3, data);
  const TransferCounters t = transfer_counters();
  EXPECT_EQ(t.host_waits, 2);
  EXPECT_EQ(t.to_host_calls, 2);
  EXPECT_EQ(t.to_device_calls, 3) << "inputs, targets, [lr, t]";
}

TEST(GraphStep, CudaGraphStatusSaysWhyNot) {
  Config cfg = graph_config(true);
  EXPECT_EQ(cuda_graph_status(cfg, 1), "off");
  cfg.train.cuda_graph = true;
  EXPECT_NE(cuda_graph_status(cfg, 1).find("needs train.device = cuda"), std::string::npos);
  cfg.train.device = "cuda";
  EXPECT_EQ(cuda_graph_status(cfg, 1).rfind("captured", 0), 0u);
  EXPECT_NE(cuda_graph_status(cfg, 2).find("one rank"), std::string::npos);
  cfg.train.micro_batch = cfg.train.batch_size / 2;
  EXPECT_NE(cuda_graph_status(cfg, 1).find("one micro-batch"), std::string::npos);
  cfg.train.micro_batch = 0;
  cfg.moe.routing = "token_choice";
  EXPECT_NE(cuda_graph_status(cfg, 1).find("token choice"), std::string::npos);
}

}  // namespace
}  // namespace finemoe
