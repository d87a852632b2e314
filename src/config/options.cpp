#include "config/options.h"

#include <algorithm>
#include <boost/program_options.hpp>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "util/check.h"

namespace po = boost::program_options;

namespace finemoe {
namespace {

std::string format_value(const std::string& v) { return v; }
std::string format_value(bool v) { return v ? "true" : "false"; }
std::string format_value(double v) {
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, v);  // shortest round-trip form
  return std::string(buf, res.ptr);
}
template <typename I>
std::string format_value(I v) { return std::to_string(v); }

template <typename T>
const char* type_name() {
  if constexpr (std::is_same_v<T, bool>) return "true|false";
  else if constexpr (std::is_same_v<T, double>) return "number";
  else if constexpr (std::is_same_v<T, std::string>) return "text";
  else if constexpr (std::is_unsigned_v<T>) return "non-negative integer";
  else return "integer";
}

struct OptionEntry {
  std::string key;
  std::string help;
  std::string type;
  std::function<std::string(const Config&)> value;
};

// One table drives parsing, --help, --print-config and the record's attributes.
class OptionTable {
 public:
  explicit OptionTable(Config& cfg) : cfg_(cfg) {
    auto& m = cfg.model;
    add("model.d_model", &Config::model, &ModelConfig::d_model, "residual stream width");
    add("model.n_blocks", &Config::model, &ModelConfig::n_blocks, "number of Transformer blocks");
    add("model.n_heads", &Config::model, &ModelConfig::n_heads, "attention heads (divides d_model)");
    add("model.context", &Config::model, &ModelConfig::context, "sequence length in tokens");
    add("model.vocab", &Config::model, &ModelConfig::vocab, "vocabulary size (256 for byte-level text)");
    add("model.activation", &Config::model, &ModelConfig::activation, "FFN activation: relu | gelu (exact, erf) | gelu_tanh (tanh approximation, the form of cuBLASLt's GELU epilogues) | swiglu (gated; hidden width 8 d_model / (3 G) to a multiple of 8)");
    add("model.tied_embeddings", &Config::model, &ModelConfig::tied_embeddings,
        "output projection shares the token embedding");
    add("model.init_scale", &Config::model, &ModelConfig::init_scale,
        "init std = sqrt(init_scale / fan_in), truncated normal");
    add("moe.enabled", &Config::moe, &MoeConfig::enabled, "MoE FFN in every block (false = dense model)");
    add("moe.expansion_rate", &Config::moe, &MoeConfig::expansion_rate,
        "E: total expert parameters over one dense FFN's");
    add("moe.granularity", &Config::moe, &MoeConfig::granularity,
        "G: expert width 4 d_model / G, n_experts = E G");
    add("moe.routing", &Config::moe, &MoeConfig::routing, "expert_choice | token_choice");
    add("moe.group_size", &Config::moe, &MoeConfig::group_size,
        "sequences per routing group; tokens are grouped by position across them");
    add("moe.capacity_factor", &Config::moe, &MoeConfig::capacity_factor,
        "expert capacity multiplier (token_choice: 0 = dropless)");
    add("moe.top_k", &Config::moe, &MoeConfig::top_k, "token_choice experts per token (0 = G - moe.shared_experts)");
    add("moe.output_layernorm", &Config::moe, &MoeConfig::output_layernorm,
        "LayerNorm on the MoE output (the paper's choice for G > 1)");
    add("moe.aux_loss_weight", &Config::moe, &MoeConfig::aux_loss_weight,
        "token_choice load-balancing loss weight");
    add("moe.z_loss_weight", &Config::moe, &MoeConfig::z_loss_weight, "token_choice router z-loss weight");
    add("moe.shared_experts", &Config::moe, &MoeConfig::shared_experts,
        "S always-on experts of the routed width, replicated; routed activation G - S (0 <= S < G)");
    add("moe.balance", &Config::moe, &MoeConfig::balance,
        "token_choice load balancing: aux_loss (aux_loss_weight) | bias (loss-free, per-expert selection bias)");
    add("moe.bias_rate", &Config::moe, &MoeConfig::bias_rate,
        "moe.balance = bias: bias change per optimizer step, times sign(mean load - expert load)");
    add("train.device", &Config::train, &TrainConfig::device, "cpu | cuda");
    add("train.precision", &Config::train, &TrainConfig::precision,
        "fp64 | fp32 | bf16 (cpu: bf16 GEMM inputs emulated); fp32 | bf16 (cuda)");
    add("train.seed", &Config::train, &TrainConfig::seed, "seed for initialisation and data order");
    add("train.steps", &Config::train, &TrainConfig::steps, "optimizer steps (0 = from train.tokens)");
    add("train.tokens", &Config::train, &TrainConfig::tokens, "token budget D, used when train.steps = 0");
    add("train.batch_size", &Config::train, &TrainConfig::batch_size, "global sequences per optimizer step");
    add("train.micro_batch", &Config::train, &TrainConfig::micro_batch,
        "global sequences per forward/backward (0 = batch_size); the rest is accumulated");
    add("train.lr", &Config::train, &TrainConfig::lr, "peak learning rate");
    add("train.final_lr", &Config::train, &TrainConfig::final_lr, "learning rate at the end of the cosine decay");
    add("train.warmup_fraction", &Config::train, &TrainConfig::warmup_fraction,
        "fraction of steps with linear warm-up");
    add("train.weight_decay", &Config::train, &TrainConfig::weight_decay, "AdamW decoupled weight decay");
    add("train.beta1", &Config::train, &TrainConfig::beta1, "AdamW beta1");
    add("train.beta2", &Config::train, &TrainConfig::beta2, "AdamW beta2");
    add("train.eps", &Config::train, &TrainConfig::eps, "AdamW epsilon");
    add("train.grad_clip", &Config::train, &TrainConfig::grad_clip, "global gradient-norm clip (0 = off)");
    add("train.eval_interval", &Config::train, &TrainConfig::eval_interval,
        "steps between evaluations (0 = only at the end)");
    add("train.eval_sequences", &Config::train, &TrainConfig::eval_sequences,
        "held-out sequences per evaluation");
    add("train.threads", &Config::train, &TrainConfig::threads,
        "BLAS/OpenMP threads per rank (0 = OMP_NUM_THREADS if set, else node cores / ranks on the node)");
    add("train.resume", &Config::train, &TrainConfig::resume,
        "no | auto (continue from the newest valid checkpoint)");
    add("train.stop_after", &Config::train, &TrainConfig::stop_after,
        "steps to run in this invocation, then checkpoint and exit with code 75 like a stop signal "
        "(0 = run to the end); the schedule stays that of train.steps");
    add("train.cuda_graph", &Config::train, &TrainConfig::cuda_graph,
        "cuda: capture the step once as a CUDA graph and replay it (expert choice, routing groups inside "
        "the rank, one rank, one micro-batch; elsewhere the run says why not and runs uncaptured)");
    add("data.train", &Config::data, &DataConfig::train, "training shards: file, directory or glob");
    add("data.val", &Config::data, &DataConfig::val, "validation shards: file, directory or glob");
    add("parallel.expert_parallel", &Config::parallel, &ParallelConfig::expert_parallel,
        "expert-parallel group size EP (DP = world / EP)");
    add("parallel.communicator", &Config::parallel, &ParallelConfig::communicator, "mpi | nccl");
    add("parallel.watchdog_s", &Config::parallel, &ParallelConfig::watchdog_s,
        "seconds before a stuck collective is reported (0 = off)");
    add("parallel.device_id", &Config::parallel, &ParallelConfig::device_id,
        "GPU index (-1 = node-local rank modulo device count)");
    add("output.dir", &Config::output, &OutputConfig::dir, "run directory: record.h5, checkpoints/");
    add("output.log_interval", &Config::output, &OutputConfig::log_interval,
        "steps between record appends and progress lines");
    add("output.checkpoint_interval", &Config::output, &OutputConfig::checkpoint_interval,
        "steps between checkpoints (0 = at the end and when signalled)");
    add("output.keep_checkpoints", &Config::output, &OutputConfig::keep_checkpoints,
        "newest checkpoints kept");
    add("output.overwrite", &Config::output, &OutputConfig::overwrite,
        "replace an existing completed run in output.dir");
    (void)m;
  }

  const std::vector<OptionEntry>& entries() const { return entries_; }
  const po::options_description& description() const { return desc_; }

 private:
  template <typename Section, typename T>
  void add(const char* key, Section Config::*section, T Section::*field, const char* help) {
    T* target = &(cfg_.*section.*field);
    desc_.add_options()(key, po::value<T>(target)->default_value(*target, format_value(*target)), help);
    entries_.push_back({key, help, type_name<T>(), [section, field](const Config& c) {
                          return format_value(c.*section.*field);
                        }});
  }

  Config& cfg_;
  po::options_description desc_{"Parameters (file: [section] key = value; command line: --section.key=value)"};
  std::vector<OptionEntry> entries_;
};

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1] ? 1 : 0)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string nearest_key(const std::string& key, const std::vector<OptionEntry>& entries) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto& e : entries) {
    size_t d = edit_distance(key, e.key);
    // A key whose last part matches in another section is the likely intent.
    auto dot = e.key.find('.');
    if (key == e.key.substr(dot + 1) || (key.find('.') != std::string::npos &&
                                         key.substr(key.find('.') + 1) == e.key.substr(dot + 1)))
      d = std::min<size_t>(d, 1);
    if (d < best_d) best_d = d, best = e.key;
  }
  return best;
}

po::options_description flag_options() {
  po::options_description flags("Command");
  flags.add_options()("help,h", "list every option with its default and meaning")(
      "config", po::value<std::string>(), "parameter file (also the first positional argument)")(
      "print-config", "print the resolved configuration as a parameter file and exit")(
      "dry-run", "validate, print parameter counts, FLOPs and memory per rank, and exit")(
      "ranks", po::value<int>(), "with --dry-run: validate and size for this many ranks (default: those running)")(
      "resume", "continue from the newest valid checkpoint (same as train.resume = auto)")(
      "quiet", "no progress lines");
  return flags;
}

std::string raw_value(const po::parsed_options& parsed, const std::string& key) {
  for (const auto& o : parsed.options)
    if (o.string_key == key && !o.value.empty()) return o.value.front();
  return "";
}

std::string allowed_for(const std::string& key, const std::vector<OptionEntry>& entries) {
  for (const auto& e : entries)
    if (e.key == key) return e.type;
  return "see --help";
}

// Stores one source; the first store of a key wins, so the command line goes first.
void store_source(const po::parsed_options& parsed, const po::options_description& all,
                  const std::vector<OptionEntry>& entries, const std::string& origin,
                  po::variables_map& vm, Config& cfg) {
  const std::string where = origin == "command line" ? "on the command line" : "in " + origin;
  for (const auto& o : parsed.options) {
    if (o.unregistered) {
      std::string key = o.string_key;
      std::ostringstream os;
      os << "error " << where << ": unknown key '" << key << "'";
      std::string near = nearest_key(key, entries);
      if (!near.empty()) os << "; did you mean '" << near << "'?";
      os << " (finemoe-train --help lists every key)";
      throw InputError(os.str());
    }
  }
  // Boost reads "-1" into an unsigned integer as 2^64 - 1.
  for (const auto& o : parsed.options) {
    if (o.unregistered || o.value.empty() || allowed_for(o.string_key, entries) != type_name<uint64_t>()) continue;
    const std::string& v = o.value.front();
    const auto first = v.find_first_not_of(" \t");
    if (first != std::string::npos && v[first] == '-')
      throw InputError("error " + where + ": " + o.string_key + " = '" + v +
                       "' is not a valid value: expected " + type_name<uint64_t>());
  }
  try {
    po::store(parsed, vm);
  } catch (const po::validation_error& e) {
    std::string key = e.get_option_name();
    while (!key.empty() && key.front() == '-') key.erase(0, 1);
    throw InputError("error " + where + ": " + key + " = '" + raw_value(parsed, key) +
                     "' is not a valid value: expected " + allowed_for(key, entries));
  } catch (const po::multiple_occurrences& e) {
    throw InputError("error " + where + ": key '" + e.get_option_name() + "' is given more than once");
  }
  for (const auto& o : parsed.options)
    if (!o.unregistered && cfg.key_origin.find(o.string_key) == cfg.key_origin.end())
      cfg.key_origin[o.string_key] = origin;
  (void)all;
}

void finish(po::variables_map& vm) {
  try {
    po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(std::string("error: ") + e.what());
  }
}

}  // namespace

int ffn_hidden_width(int d_model, int granularity, const std::string& activation) {
  if (!is_gated(activation)) return 4 * d_model / granularity;
  // Nearest integer to (8 d / (3 G)) / 8 = d / (3 G), halves up, in integers.
  const int64_t eighths = (2 * int64_t(d_model) + 3 * int64_t(granularity)) / (6 * int64_t(granularity));
  return 8 * int(std::max<int64_t>(1, eighths));
}

std::string Config::origin_of(const std::string& key) const {
  auto it = key_origin.find(key);
  return it == key_origin.end() ? "default" : it->second;
}

int64_t Config::total_steps() const {
  if (train.steps > 0) return train.steps;
  const int64_t per_step = tokens_per_step();
  return per_step > 0 ? (train.tokens + per_step - 1) / per_step : 0;
}

std::vector<std::pair<std::string, std::string>> config_items(const Config& cfg) {
  Config scratch;
  OptionTable table(scratch);
  std::vector<std::pair<std::string, std::string>> items;
  for (const auto& e : table.entries()) items.emplace_back(e.key, e.value(cfg));
  return items;
}

std::vector<std::pair<std::string, std::string>> config_resume_items(const Config& cfg) {
  std::vector<std::pair<std::string, std::string>> items;
  for (auto& kv : config_items(cfg)) {
    const std::string& key = kv.first;
    const bool fixed = key.rfind("model.", 0) == 0 || key.rfind("moe.", 0) == 0 ||
                       (key.rfind("train.", 0) == 0 && key != "train.device" && key != "train.micro_batch" &&
                        key != "train.threads" && key != "train.resume" && key != "train.stop_after" &&
                        key != "train.cuda_graph");
    if (fixed) items.push_back(std::move(kv));
  }
  return items;
}

std::string config_to_ini(const Config& cfg) {
  std::ostringstream os;
  std::string section;
  for (const auto& [key, value] : config_items(cfg)) {
    const auto dot = key.find('.');
    const std::string sec = key.substr(0, dot);
    if (sec != section) {
      os << (section.empty() ? "" : "\n") << "[" << sec << "]\n";
      section = sec;
    }
    os << key.substr(dot + 1) << " = " << value << "\n";
  }
  return os.str();
}

std::string options_help() {
  Config scratch;
  OptionTable table(scratch);
  std::ostringstream os;
  os << "usage: finemoe-train [PARAMETER_FILE] [--section.key=value ...] [--dry-run [--ranks N]]\n"
        "                     [--print-config] [--resume] [--quiet]\n\n"
     << flag_options() << "\n"
     << table.description();
  return os.str();
}

CommandLine parse_command_line(int argc, const char* const* argv) {
  CommandLine result;
  std::ostringstream cmd;
  for (int i = 0; i < argc; ++i) cmd << (i ? " " : "") << argv[i];
  result.config.command_line = cmd.str();

  OptionTable table(result.config);
  po::options_description all;
  all.add(flag_options()).add(table.description());
  po::positional_options_description positional;
  positional.add("config", 1);

  po::variables_map vm;
  po::parsed_options cli(&all);
  try {
    // No guessing: an abbreviation such as --train.step must not silently mean train.steps.
    cli = po::command_line_parser(argc, argv)
              .options(all)
              .style(po::command_line_style::default_style & ~po::command_line_style::allow_guessing)
              .positional(positional)
              .allow_unregistered()
              .run();
  } catch (const po::error& e) {
    throw InputError(std::string("error on the command line: ") + e.what());
  }
  store_source(cli, all, table.entries(), "command line", vm, result.config);
  result.config.key_origin.erase("config");

  if (vm.count("config")) {
    const std::string path = vm["config"].as<std::string>();
    std::error_code ec;
    if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))
      throw InputError("error: parameter file '" + path + "' is not a regular file (a directory or device)");
    std::ifstream in(path);
    if (!in) throw InputError("error: cannot open parameter file '" + path + "'");
    std::stringstream text;
    text << in.rdbuf();
    result.config.config_file = path;
    result.config.config_text = text.str();
    po::parsed_options parsed(&all);
    try {
      std::istringstream stream(result.config.config_text);
      parsed = po::parse_config_file(stream, all, true);
    } catch (const po::error& e) {
      throw InputError("error in " + path + ": " + e.what());
    }
    store_source(parsed, all, table.entries(), path, vm, result.config);
  }
  finish(vm);

  result.help = vm.count("help") > 0;
  result.print_config = vm.count("print-config") > 0;
  result.dry_run = vm.count("dry-run") > 0;
  if (vm.count("ranks")) {
    result.dry_run_ranks = vm["ranks"].as<int>();
    if (!result.dry_run || result.dry_run_ranks < 1)
      throw InputError("error on the command line: --ranks = " + std::to_string(result.dry_run_ranks) +
                       " is invalid: it needs --dry-run and a value >= 1");
  }
  result.quiet = vm.count("quiet") > 0;
  result.resume = vm.count("resume") > 0;
  if (result.resume) result.config.train.resume = "auto";
  if (result.help) result.help_text = options_help();
  return result;
}

Config parse_config_text(const std::string& text, const std::string& origin) {
  Config cfg;
  OptionTable table(cfg);
  po::variables_map vm;
  po::parsed_options parsed(&table.description());
  try {
    std::istringstream stream(text);
    parsed = po::parse_config_file(stream, table.description(), true);
  } catch (const po::error& e) {
    throw InputError("error in " + origin + ": " + e.what());
  }
  store_source(parsed, table.description(), table.entries(), origin, vm, cfg);
  finish(vm);
  cfg.config_file = origin;
  cfg.config_text = text;
  return cfg;
}

}  // namespace finemoe
