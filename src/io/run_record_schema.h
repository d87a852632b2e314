#pragma once
// The names in a run record (docs/run-record.md). The writer and the reader both use these, so
// they cannot drift apart. Bump kFormatVersion when a name or meaning changes.
#include <cstdint>

namespace finemoe::record {

inline constexpr int64_t kFormatVersion = 1;

// Root attributes.
inline constexpr const char* kFormatVersionAttr = "format_version";
inline constexpr const char* kVersionAttr = "finemoe_version";
inline constexpr const char* kGitCommitAttr = "git_commit";
inline constexpr const char* kCommandLineAttr = "command_line";
inline constexpr const char* kConfigPrefix = "config.";  // + dotted key, e.g. config.model.d_model
inline constexpr const char* kStartTimeAttr = "start_time";
inline constexpr const char* kEndTimeAttr = "end_time";
inline constexpr const char* kWorldSizeAttr = "world_size";
inline constexpr const char* kExpertParallelAttr = "expert_parallel";
inline constexpr const char* kDataParallelAttr = "data_parallel";
inline constexpr const char* kBackendAttr = "backend";
inline constexpr const char* kMoeEnabledAttr = "moe_enabled";
inline constexpr const char* kStatusAttr = "status";
inline constexpr const char* kStatusReasonAttr = "status_reason";
inline constexpr const char* kResumeCountAttr = "resume_count";

// /meta datasets.
inline constexpr const char* kMetaGroup = "meta";
inline constexpr const char* kConfigTextDataset = "config_text";
inline constexpr const char* kRankHostsDataset = "rank_hosts";
inline constexpr const char* kRankDevicesDataset = "rank_devices";

// /model attributes.
inline constexpr const char* kModelGroup = "model";
inline constexpr const char* kModelIntAttrs[] = {"N_total", "N_active", "N_embedding", "N_router",
                                                 "d_model", "n_blocks",  "n_heads",     "E",
                                                 "G",       "n_experts", "d_expert",    "top_k",
                                                 "vocab",   "context"};
inline constexpr const char* kRoutingAttr = "routing";
inline constexpr const char* kFlopsPerTokenAttr = "flops_per_token";
inline constexpr const char* kFlopsPerTokenCountedAttr = "flops_per_token_counted";

// /train: one row per log interval. Integer series first, then floating point.
inline constexpr const char* kTrainGroup = "train";
inline constexpr const char* kTrainIntSeries[] = {"step", "tokens", "alltoall_bytes"};
inline constexpr const char* kTrainDoubleSeries[] = {
    "loss",         "lr",          "grad_norm",       "aux_loss",          "step_time_s",
    "tokens_per_s", "alltoall_time_s", "expert_gemm_time_s", "dropped_fraction"};
inline constexpr const char* kPhaseTimesGroup = "phase_times";  // /train/phase_times/<name>
inline constexpr const char* kExpertLoadDataset = "expert_load";  // (rows, n_blocks, n_experts)

// /eval: one row per evaluation.
inline constexpr const char* kEvalGroup = "eval";
inline constexpr const char* kEvalIntSeries[] = {"step", "tokens"};
inline constexpr const char* kEvalLossSeries = "loss";

// /final attributes.
inline constexpr const char* kFinalGroup = "final";
inline constexpr const char* kEvalLossAttr = "eval_loss";
inline constexpr const char* kSmoothedTrainLossAttr = "smoothed_train_loss";
inline constexpr const char* kTokensAttr = "tokens";
inline constexpr const char* kFlopsAttr = "flops";
inline constexpr const char* kWallTimeAttr = "wall_time_s";

// Fraction of the last steps whose training losses are averaged into smoothed_train_loss.
inline constexpr double kSmoothingFraction = 0.1;

}  // namespace finemoe::record
