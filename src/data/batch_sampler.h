#pragma once
// Deterministic batches: sequence `global_seq` of step `step` starts at an offset drawn with the
// counter-based RNG from (seed, stream, step, global_seq). Any rank layout therefore draws the
// same global batch (each rank fills its own contiguous slice of global sequence indices), and
// the loader position is just the step. Offsets are independent and uniform, never consecutive
// chunks of one document: expert-choice routing mixes the tokens of a group's sequences, which
// must not see one another's future.
#include <cstdint>
#include <string_view>

#include "data/token_dataset.h"

namespace finemoe {

// Stream names: training batches and the fixed held-out evaluation set draw independently.
inline constexpr std::string_view kTrainStream = "data.train";
inline constexpr std::string_view kEvalStream = "data.eval";

class BatchSampler {
 public:
  // Throws InputError when the dataset is shorter than context + 1 tokens. Keeps a reference to
  // `data`, which must outlive the sampler.
  BatchSampler(const TokenDataset& data, int context, uint64_t seed, std::string_view stream);

  int context() const { return context_; }
  const TokenDataset& data() const { return data_; }

  // Start of the sequence: uniform in [0, data.size() - context - 1].
  uint64_t offset(uint64_t step, uint64_t global_seq) const;

  // Writes `count` sequences (global indices first_global_seq ..) of `context` inputs each and
  // their next-token targets, row-major [count][context]. No allocation.
  void fill(uint64_t step, uint64_t first_global_seq, int count, int32_t* inputs, int32_t* targets) const;

 private:
  const TokenDataset& data_;
  int context_;
  uint64_t key_;
  uint64_t n_offsets_;
};

// The held-out evaluation set: `kEvalStream` sequences of the validation data at step 0, so every
// evaluation (and every rank layout) sees the same sequences.
class EvalBatches {
 public:
  EvalBatches(const TokenDataset& val, int context, uint64_t seed)
      : sampler_(val, context, seed, kEvalStream) {}
  void fill(uint64_t first_global_seq, int count, int32_t* inputs, int32_t* targets) const {
    sampler_.fill(0, first_global_seq, count, inputs, targets);
  }
  const BatchSampler& sampler() const { return sampler_; }

 private:
  BatchSampler sampler_;
};

}  // namespace finemoe
