// --dry-run: the model's tensors are registered (not allocated), so the counts are those of the
// real model; the memory per rank is the closed-form prediction of train/memory_budget.h, the same
// one finemoe-train checks at start-up.
#include <cmath>
#include <cstdio>

#include "model/memory_plan.h"
#include "model/model.h"
#include "train/engine.h"
#include "train/exit_codes.h"
#include "train/memory_budget.h"
#include "train/progress.h"
#include "train/trainer.h"

namespace finemoe {
namespace {

template <typename T>
int dry_run_typed(const CommandLine& cli, int world) {
  const Config& cfg = cli.config;
  ParameterStore<T> store;
  MoeComms no_comms;  // registration needs no communication
  Model<T> model(cfg, store, ffn_factory<T>(cfg, no_comms, 0, cfg.parallel.expert_parallel));

  int64_t local_params = 0, local_expert = 0;
  for (int i = 0; i < store.count(); ++i) {
    local_params += store.spec(i).numel();
    if (store.spec(i).group == ParamGroup::expert) local_expert += store.spec(i).numel();
  }
  const ModelCounts c = model.counts();
  const MemoryBudget budget = predict_memory(cfg, world);
  std::string where;
  // As if every rank ran on this node (the dry run may size a layout for other machines).
  const double available = host_memory_per_rank(world, &where);
  std::printf("dry run: %s\n", cfg.config_file.empty() ? "(command line only)" : cfg.config_file.c_str());
  std::printf("  layout            world %d = EP %d x DP %d, %s %s\n", world, cfg.parallel.expert_parallel, world / cfg.parallel.expert_parallel,
              cfg.train.device.c_str(), cfg.train.precision.c_str());
  std::printf("  N_total (paper)   %lld  (d^2 (8E+4) n_blocks, non-embedding, router excluded)\n",
              static_cast<long long>(c.n_total()));
  std::printf("  N_active          %lld\n", static_cast<long long>(c.n_active()));
  std::printf("  N_embedding       %lld\n", static_cast<long long>(c.n_embedding()));
  std::printf("  N_router          %lld\n", static_cast<long long>(c.n_router()));
  std::printf("  FLOPs / token     %.4g  (paper: (12 d^2 c_f + d E G c_r) n_blocks)\n", c.flops_per_token());
  std::printf("  FLOPs / step      %.4g  (%lld tokens)\n", c.flops_per_token() * double(cfg.tokens_per_step()),
              static_cast<long long>(cfg.tokens_per_step()));
  std::printf("  steps             %lld  (%s tokens, FLOPs %.4g)\n", static_cast<long long>(cfg.total_steps()),
              format_count(double(cfg.total_steps() * cfg.tokens_per_step())).c_str(),
              c.flops_per_token() * double(cfg.total_steps() * cfg.tokens_per_step()));
  std::printf("  parameters/rank   %lld (of which experts %lld)\n", static_cast<long long>(local_params),
              static_cast<long long>(local_expert));
  std::printf("  memory per rank   %s\n", describe(budget).c_str());
  if (budget.dropless_rows > 0)
    std::printf("  expert rows/rank  at most %lld per MoE layer and micro-batch (dropless token choice: worst case, "
                "every copy the expert group sends lands on this rank's experts)\n",
                static_cast<long long>(std::llround(budget.dropless_rows)));
  if (cfg.train.device == "cpu" && available > 0)
    std::printf("                    %s here: %s (%s)\n", budget.total() <= available ? "fits" : "DOES NOT FIT",
                format_bytes(available).c_str(), where.c_str());
  std::printf("  every kept tensor (micro-batch of %g tokens per rank):\n",
              double(cfg.train.micro_batch_size()) / world * cfg.model.context);
  for (const MemoryItem& item : plan_memory(cfg, world, cfg.train.device == "cuda").items)
    std::printf("    %-13s %10s  %s\n", item.category.c_str(), format_bytes(item.bytes).c_str(), item.name.c_str());
  return kExitOk;
}

}  // namespace

int dry_run(const CommandLine& cli, int world_size) {
  if (cli.config.train.precision == "fp64") return dry_run_typed<double>(cli, world_size);
  return dry_run_typed<float>(cli, world_size);
}

}  // namespace finemoe
