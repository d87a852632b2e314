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

// /model: one attribute per ModelInfo field, named as the field (run_record.cpp pairs them).
inline constexpr const char* kModelGroup = "model";

// /train: one extendible dataset per TrainRow field, named as the field, one row per log
// interval; named per-phase times under /train/phase_times; expert token counts as a
// (rows, n_blocks, n_experts) dataset.
inline constexpr const char* kTrainGroup = "train";
inline constexpr const char* kPhaseTimesGroup = "phase_times";
inline constexpr const char* kExpertLoadDataset = "expert_load";
// (rows, n_blocks) float64: max / mean of each block's expert_load row (MoE records since issue 20).
inline constexpr const char* kLoadImbalanceDataset = "load_imbalance";

// /eval: step, tokens, loss, one row per evaluation.
inline constexpr const char* kEvalGroup = "eval";

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
