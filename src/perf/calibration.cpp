#include "perf/calibration.h"

// Boost.PropertyTree's ptree trips GCC 12's -Wdangling-pointer inside its own header (a false
// positive in ptree_implementation.hpp); silenced for these headers only.
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#pragma GCC diagnostic ignored "-Wdangling-pointer"
#endif
#include <boost/property_tree/json_parser.hpp>
#include <boost/property_tree/ptree.hpp>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cmath>
#include <sstream>

#include "util/check.h"

namespace finemoe::perf {
namespace {

namespace pt = boost::property_tree;

pt::ptree read_json(const std::string& path) {
  pt::ptree tree;
  try {
    pt::read_json(path, tree);
  } catch (const pt::json_parser_error& e) {
    throw InputError(path + ": not a finemoe-bench JSON file: " + e.message() + " (line " + std::to_string(e.line()) + ")");
  }
  return tree;
}

double number(const pt::ptree& node, const std::string& key, const std::string& path) {
  const auto v = node.get_optional<std::string>(key);
  if (!v) throw InputError(path + ": field '" + key + "' is missing");
  std::size_t used = 0;
  double x = 0;
  try {
    x = std::stod(*v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != v->size() || !std::isfinite(x)) {
    throw InputError(path + ": field '" + key + "' = '" + *v + "' is not a finite number");
  }
  return x;
}

std::string describe_source(const std::string& path, const pt::ptree& tree) {
  std::string s = "measured by finemoe-bench " + tree.get<std::string>("bench", "?") + ": " + path;
  if (const auto dev = tree.get_optional<std::string>("device_name")) s += " (" + *dev + ")";
  return s;
}

void expect_bench(const pt::ptree& tree, const std::string& path, const std::string& kind) {
  const std::string got = tree.get<std::string>("bench", "");
  if (got != kind) {
    throw InputError(path + ": field 'bench' = '" + got + "', expected '" + kind + "' (finemoe-bench " + kind + " --json-out)");
  }
}

}  // namespace

void apply_allocation(Machine& m, const sweep::Allocation& a) {
  const std::string file = "allocation " + a.file;
  const auto cite = [&](const std::string& key) {
    const sweep::FactSource* s = a.source_of(key);
    if (!s) return std::string();
    return s->url.empty() ? " (unverified: " + s->unverified + ")" : " (" + s->url + ", verified " + s->verified_on + ")";
  };
  m.gpus_per_node = a.gpus_per_node > 0 ? a.gpus_per_node : std::max(1, a.ranks_per_node);
  m.provenance["gpus_per_node"] = file + (a.gpus_per_node > 0 ? " [allocation] gpus_per_node" + cite("allocation.gpus_per_node")
                                                                : " [allocation] ranks_per_node (no GPUs)");
  if (!a.hardware.present) return;
  const sweep::Hardware& h = a.hardware;
  if (h.gpu_peak_tflops > 0) {
    m.peak = h.gpu_peak_tflops * 1e12;
    m.provenance["peak"] = file + " [hardware] gpu_peak_tflops" + cite("hardware.gpu_peak_tflops");
  }
  if (h.gpu_memory_gb > 0) {
    m.mem_bytes = h.gpu_memory_gb * 1e9;
    m.provenance["mem_bytes"] = file + " [hardware] gpu_memory_gb" + cite("hardware.gpu_memory_gb");
  }
  if (h.nvlink_gbps > 0) {
    m.nv_beta = h.nvlink_gbps * 1e9 * kNvlinkAllToAllEfficiency;
    m.provenance["nv_beta"] = file + " [hardware] nvlink_gbps" + cite("hardware.nvlink_gbps") +
                              " x 1/3 (documented default all-to-all efficiency)";
  }
  if (h.network_gbps > 0) {
    m.ib_beta = h.network_gbps * 1e9 * kNetworkAllToAllEfficiency;
    m.provenance["ib_beta"] = file + " [hardware] network_gbps" + cite("hardware.network_gbps") +
                              " x 0.4 (documented default all-to-all efficiency)";
  }
}

std::string bench_kind(const std::string& path) { return read_json(path).get<std::string>("bench", ""); }

void calibrate_from_peak_json(Machine& m, const std::string& path, const std::string& precision) {
  const pt::ptree tree = read_json(path);
  expect_bench(tree, path, "gpu-peak");
  const double tflops = number(tree, "peak_tflops." + precision, path);
  if (!(tflops > 0)) throw InputError(path + ": peak_tflops." + precision + " must be positive");
  m.dense_eff = tflops * 1e12 / m.peak;
  m.provenance["dense_eff"] = describe_source(path, tree) + ": peak_tflops." + precision + " / peak";
}

void calibrate_from_expert_gemm_json(Machine& m, const std::string& path, const std::string& precision,
                                     const std::string& gemm_path) {
  const pt::ptree tree = read_json(path);
  expect_bench(tree, path, "gpu-expert-gemm");
  std::vector<std::pair<double, double>> table;
  for (const auto& [unused, prec] : tree.get_child("precisions", pt::ptree())) {
    if (prec.get<std::string>("precision", "") != precision) continue;
    for (const auto& [unused2, row] : prec.get_child("rows", pt::ptree())) {
      if (!row.get_optional<std::string>(gemm_path + "_tflops")) continue;  // the path was not run
      const double de = number(row, "d_expert", path), tf = number(row, gemm_path + "_tflops", path);
      if (de > 0 && tf > 0) table.push_back({de, tf * 1e12 / m.peak});
    }
  }
  if (table.empty()) {
    throw InputError(path + ": no rows with precision '" + precision + "' and field '" + gemm_path + "_tflops'");
  }
  std::sort(table.begin(), table.end());
  m.expert_eff = table;
  m.provenance["expert_eff"] = describe_source(path, tree) + ": " + precision + " " + gemm_path + "_tflops / peak per d_expert";
}

void calibrate_from_alltoall_json(Machine& m, const std::string& path, const std::string& dtype) {
  const pt::ptree tree = read_json(path);
  expect_bench(tree, path, "gpu-alltoall");
  const double k = number(tree, "ranks", path);
  if (k < 2) throw InputError(path + ": ranks = " + std::to_string(int(k)) + ": an all-to-all needs at least 2 GPUs to calibrate");
  std::vector<double> xs, ys;
  for (const auto& [unused, row] : tree.get_child("rows", pt::ptree())) {
    if (row.get<std::string>("dtype", "") != dtype) continue;
    xs.push_back(number(row, "bytes_per_rank", path) * (k - 1) / k);  // bytes that leave the GPU
    ys.push_back(number(row, "alltoall_s", path));
  }
  if (xs.size() < 2) throw InputError(path + ": fewer than 2 rows of dtype '" + dtype + "' to fit a line through");
  const double n = double(xs.size());
  double mx = 0, my = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) mx += xs[i] / n, my += ys[i] / n;
  double sxy = 0, sxx = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) sxy += (xs[i] - mx) * (ys[i] - my), sxx += (xs[i] - mx) * (xs[i] - mx);
  if (!(sxx > 0) || !(sxy > 0)) throw InputError(path + ": the all-to-all times do not grow with the bytes; no line to fit");
  const double slope = sxy / sxx;
  m.nv_beta = 1 / slope;
  m.nv_alpha = std::max(my - slope * mx, 0.0) / (k - 1);
  const std::string src = describe_source(path, tree) + ": least squares over " + std::to_string(xs.size()) + " " + dtype +
                          " rows, " + std::to_string(int(k)) + " GPUs";
  m.provenance["nv_beta"] = src;
  m.provenance["nv_alpha"] = src;
}

void calibrate_from_cpu_expert_gemm_json(Machine& m, const std::string& path) {
  const pt::ptree tree = read_json(path);
  expect_bench(tree, path, "expert-gemm");
  std::vector<std::pair<double, double>> table;
  for (const auto& [unused, row] : tree.get_child("rows", pt::ptree())) {
    const double de = number(row, "d_expert", path);
    const bool both = bool(row.get_optional<std::string>("fwd_bwd_vs_dense"));
    const double r = number(row, both ? "fwd_bwd_vs_dense" : "fwd_vs_dense", path);
    if (de > 0 && r > 0) table.push_back({de, r * m.dense_eff});
  }
  if (table.empty()) throw InputError(path + " holds no expert-gemm rows");
  std::sort(table.begin(), table.end());
  m.expert_eff = table;
  m.provenance["expert_eff"] = describe_source(path, tree) + ": fwd_bwd_vs_dense x dense_eff per d_expert";
}

void calibrate_from_json(Machine& m, const std::string& path) {
  const std::string kind = bench_kind(path);
  if (kind == "gpu-peak") return calibrate_from_peak_json(m, path);
  if (kind == "gpu-expert-gemm") return calibrate_from_expert_gemm_json(m, path);
  if (kind == "gpu-alltoall") return calibrate_from_alltoall_json(m, path);
  if (kind == "expert-gemm") return calibrate_from_cpu_expert_gemm_json(m, path);
  throw InputError(path + ": field 'bench' = '" + kind +
                   "' is not a benchmark the model calibrates from (gpu-peak, gpu-expert-gemm, gpu-alltoall, expert-gemm)");
}

}  // namespace finemoe::perf
