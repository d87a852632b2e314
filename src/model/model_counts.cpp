#include "model/model_counts.h"

#include <string>

#include "util/check.h"

namespace finemoe {
namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_norm(const std::string& name) {
  for (const char* ln : {"ln1", "ln2", "ln_f", "out_ln"})
    for (const char* part : {".weight", ".bias"})
      if (name == std::string(ln) + part || ends_with(name, "." + std::string(ln) + part)) return true;
  return false;
}
}  // namespace

template <typename T>
ModelCounts count_parameters(const Config& cfg, const ParameterStore<T>& store) {
  ModelCounts c;
  c.n_blocks = cfg.model.n_blocks;
  const int64_t n_experts = cfg.n_experts();
  const int64_t experts_per_token =
      cfg.moe.routing == "token_choice" ? cfg.moe.effective_top_k() : cfg.moe.routed_granularity();
  for (int i = 0; i < store.count(); ++i) {
    const ParamSpec& s = store.spec(i);
    const std::string& name = s.name;
    if (ends_with(name, ".moe.experts.w1") || ends_with(name, ".moe.experts.w2")) {
      FINEMOE_CHECK(s.group == ParamGroup::expert && n_experts > 0, name << " is not an expert tensor of an MoE model");
      c.experts += s.numel_per_expert() * n_experts;
      c.experts_active += s.numel_per_expert() * experts_per_token;
      continue;
    }
    FINEMOE_CHECK(s.group == ParamGroup::replicated, "unexpected expert tensor " << name);
    if (ends_with(name, ".attn.qkv") || ends_with(name, ".attn.out"))
      c.attention += s.numel();
    else if (ends_with(name, ".ffn.w1") || ends_with(name, ".ffn.w2"))
      c.ffn += s.numel();
    else if (ends_with(name, ".moe.shared.w1") || ends_with(name, ".moe.shared.w2"))
      c.shared_experts += s.numel();
    else if (ends_with(name, ".moe.router"))
      c.router += s.numel();
    else if (name == "embed.token" || name == "embed.position")
      c.embedding += s.numel();
    else if (name == "head.weight")
      c.head += s.numel();
    else if (is_norm(name))
      c.norms += s.numel();
    else
      c.other += s.numel();
  }
  return c;
}

template ModelCounts count_parameters<float>(const Config&, const ParameterStore<float>&);
template ModelCounts count_parameters<double>(const Config&, const ParameterStore<double>&);

}  // namespace finemoe
