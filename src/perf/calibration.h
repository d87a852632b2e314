#pragma once
// Calibrating the performance model (perf_model.h): from an allocation file's [allocation] and
// [hardware] sections, and from the JSON of the finemoe-bench benchmarks (bench/bench_gpu.cpp
// keeps their schema):
//   gpu-peak         peak_tflops.<precision>: the dense GEMM rate -> dense_eff = rate / peak
//   gpu-expert-gemm  precisions[].rows[]: d_expert, <path>_tflops -> expert_eff = rate / peak
//   gpu-alltoall     rows[]: bytes_per_rank, alltoall_s over `ranks` GPUs of one node -> a
//                    least-squares line t = alpha (k - 1) + bytes (k - 1) / k / beta: nv_alpha, nv_beta
//   expert-gemm      (CPU) rows[]: d_expert, fwd_bwd_vs_dense -> expert_eff = ratio x dense_eff
// Each sets machine.provenance for what it changed. InputError names the file and the field.
#include <string>

#include "perf/perf_model.h"
#include "sweep/allocation.h"

namespace finemoe::perf {

// All-to-all efficiency of a link's peak (NVLink about 1/3, network about 0.4; docs/performance.md):
// applied to the allocation's peak bandwidths until gpu-alltoall measures the tier.
constexpr double kNvlinkAllToAllEfficiency = 1.0 / 3.0;
constexpr double kNetworkAllToAllEfficiency = 0.4;

// gpus_per_node (or ranks_per_node without GPUs) and, with [hardware], peak, memory, nv_beta
// and ib_beta.
void apply_allocation(Machine& m, const sweep::Allocation& a);

// Which benchmark wrote a JSON file (its "bench" field).
std::string bench_kind(const std::string& path);
void calibrate_from_peak_json(Machine& m, const std::string& path, const std::string& precision = "bf16");
// path: batched (expert choice, strided-batched) or grouped (token choice).
void calibrate_from_expert_gemm_json(Machine& m, const std::string& path, const std::string& precision = "bf16",
                                     const std::string& gemm_path = "batched");
void calibrate_from_alltoall_json(Machine& m, const std::string& path, const std::string& dtype = "bf16");
// The CPU `finemoe-bench expert-gemm --json`: efficiency = fwd_bwd_vs_dense (or fwd_vs_dense) x dense_eff.
void calibrate_from_cpu_expert_gemm_json(Machine& m, const std::string& path);
// Any of the above by its "bench" field.
void calibrate_from_json(Machine& m, const std::string& path);

}  // namespace finemoe::perf
