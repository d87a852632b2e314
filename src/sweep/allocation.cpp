#include "sweep/allocation.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <iterator>

#include "sweep/ini_file.h"
#include "util/check.h"

namespace finemoe::sweep {
namespace {

std::string at(const std::string& origin, const IniEntry& e) {
  return origin + ":" + std::to_string(e.line) + ": ";
}

long to_long(const std::string& origin, const IniEntry& e, long min_value) {
  char* end = nullptr;
  const long v = std::strtol(e.value.c_str(), &end, 10);
  if (e.value.empty() || *end != '\0' || v < min_value)
    throw InputError(at(origin, e) + "[" + e.section + "] " + e.key + " = '" + e.value +
                     "' is invalid: expected an integer >= " + std::to_string(min_value));
  return v;
}

double to_double(const std::string& origin, const IniEntry& e) {
  char* end = nullptr;
  const double v = std::strtod(e.value.c_str(), &end);
  if (e.value.empty() || *end != '\0' || !(v > 0))
    throw InputError(at(origin, e) + "[" + e.section + "] " + e.key + " = '" + e.value +
                     "' is invalid: expected a number > 0");
  return v;
}

bool plain_word(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == ',' || c == '&' ||
           c == '|' || c == '[' || c == ']';
  });
}

}  // namespace

long parse_slurm_time(const std::string& t) {
  if (t.empty()) return -1;
  long days = 0;
  std::string rest = t;
  const auto dash = t.find('-');
  std::vector<long> parts;
  auto number = [](const std::string& s, long& out) {
    if (s.empty() || s.size() > 6 || !std::all_of(s.begin(), s.end(), ::isdigit)) return false;
    out = std::stol(s);
    return true;
  };
  if (dash != std::string::npos) {
    if (!number(t.substr(0, dash), days)) return -1;
    rest = t.substr(dash + 1);
  }
  size_t start = 0;
  while (true) {
    const auto colon = rest.find(':', start);
    long v = 0;
    if (!number(rest.substr(start, colon == std::string::npos ? std::string::npos : colon - start), v)) return -1;
    parts.push_back(v);
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  if (parts.size() > 3) return -1;
  if (dash != std::string::npos) {  // D-HH[:MM[:SS]]
    long s = days * 86400 + parts[0] * 3600;
    if (parts.size() > 1) s += parts[1] * 60;
    if (parts.size() > 2) s += parts[2];
    return s;
  }
  if (parts.size() == 1) return parts[0] * 60;                    // MM
  if (parts.size() == 2) return parts[0] * 60 + parts[1];          // MM:SS
  return parts[0] * 3600 + parts[1] * 60 + parts[2];               // HH:MM:SS
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

const FactSource* Allocation::source_of(const std::string& key) const {
  for (const FactSource& s : sources)
    if (s.key == key) return &s;
  return nullptr;
}

namespace {

const char* const kAllocationKeys[] = {"name", "account", "partition", "qos", "constraint", "gpus_per_node",
                                       "cores_per_node", "ranks_per_node", "memory_per_node", "time_limit",
                                       "signal_warning_s", "array_throttle", "launcher", "srun_mpi", "module",
                                       "setup", "analysis_time_limit"};
const char* const kHardwareKeys[] = {"gpu", "gpu_memory_gb", "gpu_peak_tflops", "nvlink_gbps", "network_gbps",
                                     "network"};

bool one_of(const std::string& key, const char* const* begin, const char* const* end) {
  return std::find(begin, end, key) != end;
}

// `URL verified YYYY-MM-DD` or `unverified: note`.
FactSource parse_source(const std::string& origin, const IniEntry& e) {
  const std::string where = at(origin, e) + "[sources] " + e.key + ": ";
  const auto dot = e.key.find('.');
  const std::string section = e.key.substr(0, dot), key = dot == std::string::npos ? "" : e.key.substr(dot + 1);
  const bool known = (section == "allocation" && one_of(key, std::begin(kAllocationKeys), std::end(kAllocationKeys))) ||
                     (section == "hardware" && one_of(key, std::begin(kHardwareKeys), std::end(kHardwareKeys))) ||
                     (section == "throughput" && key == "model_flops_per_s_per_rank");
  if (!known)
    throw InputError(where + "names no fact; expected allocation.<key>, hardware.<key> or "
                             "throughput.model_flops_per_s_per_rank");
  FactSource s;
  s.key = e.key;
  if (e.value.rfind("unverified:", 0) == 0) {
    s.unverified = trim(e.value.substr(11));
    if (s.unverified.empty()) throw InputError(where + "'unverified:' needs a note saying what could not be checked");
    return s;
  }
  const auto space = e.value.find(' ');
  const std::string url = e.value.substr(0, space);
  const std::string rest = space == std::string::npos ? "" : trim(e.value.substr(space));
  const bool date_ok = rest.size() == 19 && rest.rfind("verified ", 0) == 0 && [&] {
    const std::string d = rest.substr(9);
    for (std::size_t i = 0; i < d.size(); ++i) {
      if ((i == 4 || i == 7) ? d[i] != '-' : !std::isdigit(static_cast<unsigned char>(d[i]))) return false;
    }
    return true;
  }();
  if ((url.rfind("https://", 0) != 0 && url.rfind("http://", 0) != 0) || !date_ok)
    throw InputError(where + "'" + e.value + "' is invalid: expected 'URL verified YYYY-MM-DD' or 'unverified: note'");
  s.url = url;
  s.verified_on = rest.substr(9);
  return s;
}

}  // namespace

Allocation parse_allocation(const std::string& text, const std::string& origin) {
  Allocation a;
  a.file = origin;
  bool have_time = false, have_cores = false, have_throughput = false, have_ranks = false;
  std::vector<std::string> hardware_keys;
  for (const auto& e : parse_ini(text, origin)) {
    const std::string where = at(origin, e);
    if (e.section == "hardware") {
      a.hardware.present = true;
      hardware_keys.push_back(e.key);
      auto positive = [&](double& field) {
        char* end = nullptr;
        const double v = std::strtod(e.value.c_str(), &end);
        if (e.value.empty() || *end != '\0' || !(v > 0))
          throw InputError(where + "[hardware] " + e.key + " = '" + e.value + "' is invalid: expected a number > 0");
        field = v;
      };
      auto word = [&](std::string& field) {
        if (e.value.empty() || !plain_word(e.value))
          throw InputError(where + "[hardware] " + e.key + " = '" + e.value +
                           "' is invalid: letters, digits and _ - . only");
        field = e.value;
      };
      if (e.key == "gpu") word(a.hardware.gpu);
      else if (e.key == "network") word(a.hardware.network);
      else if (e.key == "gpu_memory_gb") positive(a.hardware.gpu_memory_gb);
      else if (e.key == "gpu_peak_tflops") positive(a.hardware.gpu_peak_tflops);
      else if (e.key == "nvlink_gbps") positive(a.hardware.nvlink_gbps);
      else if (e.key == "network_gbps") positive(a.hardware.network_gbps);
      else
        throw InputError(where + "unknown key '" + e.key +
                         "' in [hardware] (allowed: gpu gpu_memory_gb gpu_peak_tflops nvlink_gbps network_gbps network)");
      continue;
    }
    if (e.section == "sources") {
      a.sources.push_back(parse_source(origin, e));
      continue;
    }
    if (e.section == "allocation") {
      auto word = [&](std::string& field) {
        if (!plain_word(e.value))
          throw InputError(where + "[allocation] " + e.key + " = '" + e.value +
                           "' is invalid: letters, digits and _ - . , & | [ ] only");
        field = e.value;
      };
      if (e.key == "name") word(a.name);
      else if (e.key == "account") word(a.account);
      else if (e.key == "partition") word(a.partition);
      else if (e.key == "qos") word(a.qos);
      else if (e.key == "constraint") word(a.constraint);
      else if (e.key == "gpus_per_node") a.gpus_per_node = int(to_long(origin, e, 0));
      else if (e.key == "cores_per_node") a.cores_per_node = int(to_long(origin, e, 1)), have_cores = true;
      else if (e.key == "ranks_per_node") a.ranks_per_node = int(to_long(origin, e, 1)), have_ranks = true;
      else if (e.key == "memory_per_node") a.memory_per_node_mb = to_long(origin, e, 0);
      else if (e.key == "time_limit" || e.key == "analysis_time_limit") {
        const long s = parse_slurm_time(e.value);
        if (s <= 0)
          throw InputError(where + "[allocation] " + e.key + " = '" + e.value +
                           "' is invalid: expected Slurm time MM, HH:MM:SS or D-HH:MM:SS");
        if (e.key == "time_limit") a.time_limit = e.value, a.time_limit_s = s, have_time = true;
        else a.analysis_time_limit = e.value;
      } else if (e.key == "signal_warning_s") a.signal_warning_s = int(to_long(origin, e, 0));
      else if (e.key == "array_throttle") a.array_throttle = int(to_long(origin, e, 0));
      else if (e.key == "launcher") {
        if (e.value != "srun" && e.value != "mpirun")
          throw InputError(where + "[allocation] launcher = '" + e.value + "' is invalid: allowed: srun | mpirun");
        a.launcher = e.value;
      } else if (e.key == "srun_mpi") word(a.srun_mpi);
      else if (e.key == "module") a.modules.push_back(e.value);
      else if (e.key == "setup") a.setup.push_back(e.value);
      else
        throw InputError(where + "unknown key '" + e.key +
                         "' in [allocation] (allowed: name account partition qos constraint gpus_per_node "
                         "cores_per_node ranks_per_node memory_per_node time_limit signal_warning_s "
                         "array_throttle launcher srun_mpi module setup analysis_time_limit)");
    } else if (e.section == "throughput") {
      if (e.key != "model_flops_per_s_per_rank")
        throw InputError(where + "unknown key '" + e.key + "' in [throughput] (allowed: model_flops_per_s_per_rank)");
      a.model_flops_per_s_per_rank = to_double(origin, e);
      have_throughput = true;
    } else if (e.section == "parameters") {
      a.parameters.emplace_back(e.key, e.value);
      a.parameter_lines.push_back(e.line);
    } else {
      throw InputError(where + "unknown section [" + e.section +
                       "] (allowed: [allocation] [throughput] [parameters] [hardware] [sources])");
    }
  }
  if (!have_time) throw InputError(origin + ": [allocation] time_limit is missing (e.g. time_limit = 24:00:00)");
  if (!have_cores) throw InputError(origin + ": [allocation] cores_per_node is missing");
  if (!have_throughput)
    throw InputError(origin + ": [throughput] model_flops_per_s_per_rank is missing (needed for cost estimates)");
  if (!have_ranks) a.ranks_per_node = a.gpus_per_node > 0 ? a.gpus_per_node : std::min(2, a.cores_per_node);
  if (a.gpus_per_node > 0 && a.ranks_per_node > a.gpus_per_node)
    throw InputError(origin + ": [allocation] ranks_per_node = " + std::to_string(a.ranks_per_node) +
                     " is invalid: more ranks than gpus_per_node = " + std::to_string(a.gpus_per_node) +
                     " (one GPU per rank)");
  if (a.signal_warning_s >= a.time_limit_s)
    throw InputError(origin + ": [allocation] signal_warning_s = " + std::to_string(a.signal_warning_s) +
                     " is invalid: must be shorter than time_limit = " + a.time_limit);
  for (const std::string& key : hardware_keys) {
    if (!a.source_of("hardware." + key))
      throw InputError(origin + ": [hardware] " + key + " has no [sources] line (hardware." + key +
                       " = URL verified YYYY-MM-DD, or unverified: note)");
  }
  if (a.name.empty()) a.name = "allocation";
  return a;
}

Allocation read_allocation(const std::string& path) { return parse_allocation(read_text_file(path), path); }

}  // namespace finemoe::sweep
