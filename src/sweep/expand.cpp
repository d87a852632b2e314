#include "sweep/expand.h"

#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "config/options.h"
#include "config/validate.h"
#include "model/model.h"
#include "sweep/ini_file.h"
#include "train/engine.h"
#include "util/check.h"

namespace fs = std::filesystem;

namespace finemoe::sweep {
namespace {

// One setting and who made it, for error messages and the record of where a key came from.
struct Setting {
  std::string key, value, origin;
};

// Checks key and value type alone (unknown keys get finemoe-train's "did you mean").
void check_setting(const Setting& s, std::set<std::string>& checked) {
  const std::string id = s.origin + "\n" + s.key + "\n" + s.value;
  if (!checked.insert(id).second) return;
  const auto dot = s.key.find('.');
  if (dot == std::string::npos)
    throw InputError(s.origin + ": '" + s.key + "' is not a parameter key: expected section.key (e.g. moe.granularity)");
  parse_config_text("[" + s.key.substr(0, dot) + "]\n" + s.key.substr(dot + 1) + " = " + s.value + "\n", s.origin);
}

std::string render_ini(const std::vector<std::pair<std::string, std::string>>& items) {
  std::ostringstream os;
  std::string section;
  for (const auto& [key, value] : items) {
    const auto dot = key.find('.');
    const std::string sec = key.substr(0, dot);
    if (sec != section) os << (section.empty() ? "" : "\n") << "[" << sec << "]\n", section = sec;
    os << key.substr(dot + 1) << " = " << value << "\n";
  }
  return os.str();
}

// What makes two runs the same experiment: every resolved key except those that only say where
// and how it executes (output folder, threads, ...), and for dense models none of the MoE keys.
std::string identity(const Config& cfg) {
  std::string id;
  for (const auto& [key, value] : config_items(cfg)) {
    // How and where a run executes, not what it computes.
    if (key == "output.dir" || key == "output.overwrite" || key == "train.resume" || key == "train.stop_after" ||
        key == "train.threads" || key == "train.cuda_graph" || key == "parallel.watchdog_s" || key == "parallel.device_id")
      continue;
    if (!cfg.moe.enabled && key.rfind("moe.", 0) == 0 && key != "moe.enabled") continue;
    id += key + "=" + value + "\n";
  }
  return id;
}

std::string format_name(const std::string& format, const std::vector<std::string>& axes,
                        const std::vector<std::string>& labels, const std::string& sweep_file) {
  std::string out;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] != '{') {
      out += format[i];
      continue;
    }
    const auto close = format.find('}', i);
    if (close == std::string::npos) throw InputError(sweep_file + ": name_format '" + format + "' has an unclosed '{'");
    const std::string axis = format.substr(i + 1, close - i - 1);
    size_t a = 0;
    while (a < axes.size() && axes[a] != axis) ++a;
    if (a == axes.size())
      throw InputError(sweep_file + ": name_format '" + format + "' names '{" + axis + "}', which is not an axis");
    out += labels[a];
    i = close;
  }
  return out;
}

}  // namespace

ModelCounts model_counts(const Config& cfg) {
  ParameterStore<float> store;
  MoeComms no_comms;  // registration needs no communication
  Model<float> model(cfg, store, ffn_factory<float>(cfg, no_comms, 0, cfg.parallel.expert_parallel));
  return model.counts();
}

SweepPlan expand_sweep(const SweepDefinition& def, const ExpandOptions& opts) {
  SweepPlan plan;
  plan.definition = def;
  plan.output = opts.output.empty() ? def.output : opts.output;
  plan.params_dir = opts.params_dir.empty() ? (fs::path(plan.output) / "params").string() : opts.params_dir;
  const std::string& file = def.file;

  // Points per axis after --select.
  std::vector<Axis> axes = def.axes;
  for (const auto& [axis_name, labels] : opts.select) {
    auto it = std::find_if(axes.begin(), axes.end(), [&](const Axis& a) { return a.name == axis_name; });
    if (it == axes.end()) throw InputError(file + ": --select " + axis_name + "=...: there is no axis '" + axis_name + "'");
    std::vector<AxisPoint> kept;
    for (const auto& l : labels) {
      auto p = std::find_if(it->points.begin(), it->points.end(), [&](const AxisPoint& q) { return q.label == l; });
      if (p == it->points.end())
        throw InputError(file + ": --select " + axis_name + "=...: axis '" + axis_name + "' has no point '" + l + "'");
      kept.push_back(*p);
    }
    it->points = kept;
  }
  for (const auto& a : axes) plan.axis_names.push_back(a.name);

  // Base parameters.
  const std::string base_text = read_text_file(def.base);
  Config base;
  try {
    base = parse_config_text(base_text, def.base);
  } catch (const InputError& e) {
    throw InputError(file + ": base parameter file: " + e.what());
  }
  const auto base_items = config_items(base);
  std::set<std::string> known;
  for (const auto& it : base_items) known.insert(it.first);

  std::vector<Setting> common;
  if (opts.allocation)
    for (size_t i = 0; i < opts.allocation->parameters.size(); ++i)
      common.push_back({opts.allocation->parameters[i].first, opts.allocation->parameters[i].second,
                        opts.allocation->file + ":" + std::to_string(opts.allocation->parameter_lines[i]) +
                            " ([parameters])"});
  for (const auto& [k, v] : def.set) common.push_back({k, v, file + " ([sweep] set)"});

  std::set<std::string> checked;
  std::map<std::string, int> seen_identity, seen_name;
  size_t total = 1;
  for (const auto& a : axes) total *= a.points.size();
  const std::string name_format = !opts.name_format.empty() ? opts.name_format : def.name_format;

  std::vector<size_t> pick(axes.size(), 0);
  for (size_t n = 0; n < total; ++n) {
    // Mixed-radix counter, last axis fastest.
    size_t rest = n;
    for (size_t a = axes.size(); a-- > 0;) {
      pick[a] = rest % axes[a].points.size();
      rest /= axes[a].points.size();
    }
    SweepRun run;
    run.index = int(n);
    std::string point_desc;
    std::vector<Setting> settings = common;
    for (size_t a = 0; a < axes.size(); ++a) {
      const AxisPoint& p = axes[a].points[pick[a]];
      run.labels.push_back(p.label);
      point_desc += (point_desc.empty() ? "" : ", ") + axes[a].name + " = " + p.label;
      for (const auto& [k, v] : p.overrides)
        settings.push_back({k, v, file + ":" + std::to_string(p.line) + " (axis '" + axes[a].name + "', point '" + p.label + "')"});
    }
    for (const auto& [k, v] : opts.cli_set) settings.push_back({k, v, "finemoe-sweep --set"});
    if (name_format.empty()) {
      for (const auto& l : run.labels) run.name += (run.name.empty() ? "" : "-") + l;
      if (run.name.empty()) run.name = def.name;
    } else {
      run.name = format_name(name_format, plan.axis_names, run.labels, file);
    }
    if (!valid_label(run.name))
      throw InputError(file + ": run " + std::to_string(n) + " (" + point_desc + ") gets the name '" + run.name +
                       "', which is not a valid file name (letters, digits and . _ + - only)");
    const std::string where = file + ": run " + std::to_string(n) + " '" + run.name + "' (" + point_desc + ")";
    run.output_dir = (fs::path(plan.output) / run.name).string();
    run.params_path = (fs::path(plan.params_dir) / (run.name + ".ini")).string();
    settings.push_back({"output.dir", run.output_dir, file + " ([sweep] output)"});

    // Resolve: the base's values, then each setting in precedence order.
    auto items = base_items;
    std::map<std::string, std::string> origin;
    for (const auto& s : settings) {
      try {
        check_setting(s, checked);
      } catch (const InputError& e) {
        throw InputError(where + ": " + e.what());
      }
      for (auto& it : items)
        if (it.first == s.key) it.second = s.value;
      origin[s.key] = s.origin;
    }
    try {
      run.config = parse_config_text(render_ini(items), def.base);
      for (const auto& it : items)
        run.config.key_origin[it.first] = origin.count(it.first) ? origin[it.first]
                                          : base.origin_of(it.first) == "default" ? "default" : def.base;
      ValidationContext ctx;
      ctx.world_size = def.ranks;
      ctx.check_data_files = opts.check_data_files;
      ctx.cuda_available = opts.cuda_available;
      validate_config(run.config, ctx);
    } catch (const InputError& e) {
      throw InputError(where + " is invalid: " + e.what());
    }

    const std::string id = identity(run.config);
    if (auto it = seen_identity.find(id); it != seen_identity.end()) {
      const SweepRun& other = plan.runs[it->second];
      throw InputError(where + " duplicates run " + std::to_string(other.index) + " '" + other.name +
                       "': both resolve to the same parameters (apart from output.dir)" +
                       (run.config.moe.enabled ? "" : "; for a dense model the moe.* keys have no effect"));
    }
    seen_identity[id] = int(plan.runs.size());
    if (auto it = seen_name.find(run.name); it != seen_name.end())
      throw InputError(where + " has the same name as run " + std::to_string(it->second) +
                       "; add the distinguishing axis to name_format");
    seen_name[run.name] = int(n);

    // Size and cost.
    run.ranks = def.ranks;
    run.counts = model_counts(run.config);
    run.tokens = run.config.total_steps() * run.config.tokens_per_step();
    run.flops = run.counts.flops(double(run.tokens));
    if (opts.allocation) {
      const Allocation& alloc = *opts.allocation;
      run.nodes = (run.ranks + alloc.ranks_per_node - 1) / alloc.ranks_per_node;
      run.est_hours = run.flops / (alloc.model_flops_per_s_per_rank * run.ranks) / 3600.0;
      run.est_node_hours = run.est_hours * run.nodes;
    }
    std::ostringstream text;
    text << "# Run " << run.index << " '" << run.name << "' of sweep '" << def.name << "' (" << file << "): "
         << point_desc << ".\n# Written by finemoe-sweep from " << def.base
         << "; edit the sweep definition, not this file.\n"
         << config_to_ini(run.config);
    run.params_text = text.str();
    plan.total_flops += run.flops;
    plan.runs.push_back(std::move(run));
  }
  if (opts.allocation) {
    plan.total_node_hours = 0;
    for (const auto& r : plan.runs) plan.total_node_hours += r.est_node_hours;
  }
  return plan;
}

}  // namespace finemoe::sweep
