#pragma once
// All trainable tensors of a model live in two flat buffers (values and gradients), one for the
// replicated (non-expert) parameters and one for this rank's experts. Flat buffers make the
// gradient reduction one call per block range and the optimizer one loop.
#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

#include "backend/compute.h"
#include "backend/ops.h"

namespace finemoe {

enum class ParamGroup { replicated = 0, expert = 1 };

struct ParamInit {
  enum class Kind { truncated_normal, zeros, ones } kind = Kind::zeros;
  double std = 0;  // truncated_normal: std of the (untruncated) normal, cut at +-2 std
  static ParamInit normal(double s) { return {Kind::truncated_normal, s}; }
  static ParamInit zeros() { return {Kind::zeros, 0}; }
  static ParamInit ones() { return {Kind::ones, 0}; }
};

struct ParamSpec {
  std::string name;            // "blocks.3.attn.qkv.weight"; unique, stable (checkpoints key on it)
  std::vector<int64_t> shape;  // expert params: [local experts, ...], one expert contiguous
  ParamGroup group = ParamGroup::replicated;
  ParamInit init;
  int block = -1;              // Transformer block, for per-block gradient reduction (-1: outside)
  int64_t first_global_expert = 0;  // expert params: global id of local expert 0
  bool weight_decay = true;    // AdamW decay (off for LayerNorm gains, biases)

  int64_t numel() const;
  int64_t experts() const { return group == ParamGroup::expert ? shape.at(0) : 1; }
  int64_t numel_per_expert() const { return numel() / experts(); }
};

struct ParamHandle {
  int index = -1;
};

template <typename T>
class ParameterStore {
 public:
  // Registration phase: layers add their tensors in forward order (embedding, block 0, ..., head).
  ParamHandle add(ParamSpec spec);
  // Lays out the buffers and initialises every value from (seed, name, global element index),
  // so a tensor's values do not depend on the rank layout. Gradients start at zero.
  void allocate(uint64_t seed);
  bool allocated() const { return allocated_; }

  T* value(ParamHandle h) { return values_[group_index(h)].data() + offsets_[h.index]; }
  T* grad(ParamHandle h) { return grads_[group_index(h)].data() + offsets_[h.index]; }
  const T* value(ParamHandle h) const { return values_[group_index(h)].data() + offsets_[h.index]; }
  // The tensor as a matrix product's operand: its values and, with bf16 operands, their bf16 copy
  // as of the last round_values().
  ops::Operand<T> operand(ParamHandle h) const {
    const int g = group_index(h);
    const Bfloat16* r = rounded_[g].empty() ? nullptr : rounded_[g].data() + offsets_[h.index];
    return {values_[g].data() + offsets_[h.index], r};
  }
  // With bf16 operands: the bf16 copy of every value, for the products of the forward and backward
  // that follow (the model refreshes it at each forward; the optimizer changes the values between).
  // Without: frees the copy.
  void round_values();
  const ParamSpec& spec(ParamHandle h) const { return specs_[h.index]; }
  int count() const { return static_cast<int>(specs_.size()); }
  const ParamSpec& spec(int i) const { return specs_[i]; }
  int64_t offset(int i) const { return offsets_[i]; }

  DeviceBuffer<T>& values(ParamGroup g) { return values_[static_cast<int>(g)]; }
  DeviceBuffer<T>& grads(ParamGroup g) { return grads_[static_cast<int>(g)]; }
  const DeviceBuffer<T>& values(ParamGroup g) const { return values_[static_cast<int>(g)]; }
  const DeviceBuffer<T>& grads(ParamGroup g) const { return grads_[static_cast<int>(g)]; }
  // [begin, end) ranges of a block's tensors in a group's flat buffer, adjacent tensors merged
  // (a block's tensors are one range when added in order; block -1 is the embedding and head).
  std::vector<std::pair<int64_t, int64_t>> block_ranges(ParamGroup g, int block) const;
  void zero_grads();

 private:
  int group_index(ParamHandle h) const { return static_cast<int>(specs_[h.index].group); }

  std::vector<ParamSpec> specs_;
  std::unordered_set<std::string> names_;  // duplicate check in O(1): n_blocks may be large
  std::vector<int64_t> offsets_;
  DeviceBuffer<T> values_[2];
  DeviceBuffer<T> grads_[2];
  DeviceBuffer<Bfloat16> rounded_[2];  // bf16 operands: the values rounded (round_values)
  bool allocated_ = false;
};

}  // namespace finemoe
