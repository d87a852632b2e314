#include "model/parameters.h"

#include <algorithm>

#include "backend/ops.h"
#include "util/check.h"
#include "util/rng.h"

namespace finemoe {

int64_t ParamSpec::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

template <typename T>
ParamHandle ParameterStore<T>::add(ParamSpec spec) {
  FINEMOE_CHECK(!allocated_, "parameter '" << spec.name << "' added after allocation");
  FINEMOE_CHECK(names_.insert(spec.name).second, "duplicate parameter name " << spec.name);
  FINEMOE_CHECK(spec.group == ParamGroup::replicated || !spec.shape.empty(),
                "expert parameter " << spec.name << " needs a leading expert dimension");
  specs_.push_back(std::move(spec));
  return ParamHandle{static_cast<int>(specs_.size()) - 1};
}

template <typename T>
void ParameterStore<T>::allocate(uint64_t seed) {
  FINEMOE_CHECK(!allocated_, "parameters allocated twice");
  int64_t sizes[2] = {0, 0};
  offsets_.resize(specs_.size());
  for (size_t i = 0; i < specs_.size(); ++i) {
    const int g = static_cast<int>(specs_[i].group);
    offsets_[i] = sizes[g];
    sizes[g] += specs_[i].numel();
  }
  // Initialised on the host, then one transfer per group.
  std::vector<T> host[2];
  for (int g = 0; g < 2; ++g) {
    host[g].assign(size_t(sizes[g]), T(0));
    grads_[g].assign_zero(size_t(sizes[g]));
  }
  for (size_t i = 0; i < specs_.size(); ++i) {
    const ParamSpec& s = specs_[i];
    T* v = host[static_cast<int>(s.group)].data() + offsets_[i];
    const int64_t n = s.numel();
    switch (s.init.kind) {
      case ParamInit::Kind::zeros: std::fill(v, v + n, T(0)); break;
      case ParamInit::Kind::ones: std::fill(v, v + n, T(1)); break;
      case ParamInit::Kind::truncated_normal: {
        const uint64_t key = hash_combine(seed, hash_string(s.name));
        const int64_t base = s.group == ParamGroup::expert ? s.first_global_expert * s.numel_per_expert() : 0;
        for (int64_t j = 0; j < n; ++j) v[j] = static_cast<T>(s.init.std * truncated_normal(key, base + j));
        break;
      }
    }
  }
  for (int g = 0; g < 2; ++g) to_device(values_[g], host[g]);
  allocated_ = true;
}

template <typename T>
std::vector<std::pair<int64_t, int64_t>> ParameterStore<T>::block_ranges(ParamGroup g, int block) const {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (size_t i = 0; i < specs_.size(); ++i) {
    if (specs_[i].group != g || specs_[i].block != block) continue;
    const int64_t begin = offsets_[i], end = offsets_[i] + specs_[i].numel();
    if (!ranges.empty() && ranges.back().second == begin)
      ranges.back().second = end;
    else
      ranges.emplace_back(begin, end);
  }
  return ranges;
}

template <typename T>
void ParameterStore<T>::zero_grads() {
  for (auto& g : grads_) ops::fill_zero(g.data(), int64_t(g.size()));
}

template <typename T>
void ParameterStore<T>::round_values() {
  for (int g = 0; g < 2; ++g) {
    if (!bf16_operands()) {
      rounded_[g] = DeviceBuffer<Bfloat16>();
      continue;
    }
    rounded_[g].resize(values_[g].size());
    ops::pack_bf16<T>(rounded_[g].data(), values_[g].data(), int64_t(values_[g].size()));
  }
}

template class ParameterStore<float>;
template class ParameterStore<double>;

}  // namespace finemoe
