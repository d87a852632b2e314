// finemoe-bench: speed of finemoe's pieces against what a user would use instead, measured in the
// same run (issue 10). Subcommands:
//   expert-gemm  the experts' GEMMs (GroupedExperts) across G at fixed total FLOPs vs one dense GEMM
//   dispatch     permute + dispatch + return + combine (AllToAllDispatcher) vs MPI_Alltoall, same bytes
//   moe-layer    MoeLayer forward + backward across G (FLOPs counted by cpu::gemm)
//   step         a full TrainingEngine step: tokens/s, model FLOP/s (paper count and counted GEMMs)
//   export       initial weights, a batch and its loss, for the PyTorch peer's check (bench/reference)
//   plan         the performance model (bench/plan.h, docs/performance.md)
// Every figure is the median of --reps timed runs after --warmup runs; --json prints JSON instead
// of the table. The load average seen before and after is printed: the cores are shared.
#include <mpi.h>
#include <omp.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu/activation.h"
#include "backend/cpu/blas.h"
#include "bench_gpu.h"
#include "bench_util.h"
#include "config/config.h"
#include "data/batch_sampler.h"
#include "data/shard.h"
#include "data/token_dataset.h"
#include "model/moe/dispatcher.h"
#include "model/moe/expert_exchange.h"
#include "model/moe/experts.h"
#include "model/memory_plan.h"
#include "model/moe/moe_layer.h"
#include "parallel/mpi_check.h"
#include "parallel/process_grid.h"
#include "plan.h"
#include "train/compute_setup.h"
#include "train/engine.h"
#include "util/rng.h"

namespace finemoe::bench {
namespace {

const char* kUsage =
    "usage: finemoe-bench SUBCOMMAND [options]   (run under mpiexec for dispatch / 2-rank runs)\n"
    "  expert-gemm  [--G 1,2,4,8,16,32,64] [--d-model 1024] [--tokens 4096] [--E 8] [--schedule experts|blas]\n"
    "  dispatch     [--rows-per-expert 1,2,...,256] [--experts 64] [--d-model 1024]\n"
    "  moe-layer    [--G ...] [--d-model 1024] [--tokens 4096 per rank] [--E 8] [--context 256]\n"
    "  step         [--d-model 512] [--blocks 4] [--heads 8] [--context 256] [--vocab 8192] [--E 8] [--G 4]\n"
    "               [--batch 16] [--group-size 16] [--routing expert_choice]\n"
    "               [--device cpu|cuda] [--precision fp32|bf16] [--communicator mpi|nccl] [--cuda-graph]\n"
    "               [--peak-tflops P]   (cuda: the card's dense peak for MFU; default 989, H100 SXM bf16)\n"
    "  export       --out DIR [model options of step]   (one rank)\n"
    "  plan         see docs/performance.md (--help there)\n"
    FINEMOE_BENCH_GPU_USAGE
    "common: --reps 5 --warmup 1 --threads N (per rank; default cores / ranks) --json | --json-out FILE\n";

struct Common {
  int reps = 5;
  int warmup = 1;
  int threads = 1;
  bool json = false;
  std::string json_out;  // also write the JSON here (rank 0), table on stdout
  int rank = 0;
  int ranks = 1;
  std::vector<double> load_before;
};

// Deterministic fill in [-scale, scale): cheap, so gigabyte buffers fill fast.
void fill(std::vector<float>& v, uint64_t seed, float scale) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < int64_t(v.size()); ++i) {
    const uint64_t h = hash_combine(seed, uint64_t(i));
    v[size_t(i)] = scale * (float(double(h >> 11) * 0x1.0p-53) * 2.0f - 1.0f);
  }
}

double max_over_ranks(double v) {
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD));
  return v;
}

// Median over reps of the slowest rank's time of fn(), after warm-up runs.
template <typename Fn>
double time_median(const Common& c, Fn&& fn, std::vector<double>* all = nullptr) {
  for (int i = 0; i < c.warmup; ++i) fn();
  std::vector<double> t;
  for (int i = 0; i < c.reps; ++i) {
    MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
    const auto t0 = Clock::now();
    fn();
    t.push_back(max_over_ranks(seconds_since(t0)));
  }
  if (all) all->insert(all->end(), t.begin(), t.end());
  return median(t);
}

// One dense SGEMM C[m x n] = A[m x k] B[k x n] with this rank's threads in BLAS: the rate the
// rest is held against. Every rank runs it at the same time (the cores are shared alike).
struct DenseGemm {
  int m, n, k;
  std::vector<float> a, b, c;
  DenseGemm(int m_, int n_, int k_) : m(m_), n(n_), k(k_), a(size_t(m_) * k_), b(size_t(k_) * n_), c(size_t(m_) * n_) {
    fill(a, 1, 1.0f);
    fill(b, 2, 0.05f);
  }
  double flops() const { return 2.0 * m * n * k; }
  void run(int threads) {
    cpu::ScopedBlasThreads t(threads);
    cpu::gemm<float>(false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
  }
};

void print_header(const Common& c, const std::string& what) {
  if (c.rank != 0 || c.json) return;
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  auto env = [](const char* k) { return std::getenv(k) ? std::getenv(k) : "(unset)"; };
  std::printf("# finemoe-bench %s: %d rank(s) x %d thread(s), host %s, OMP_WAIT_POLICY=%s, OPENBLAS_THREAD_TIMEOUT=%s, "
              "reps %d (median), warmup %d\n",
              what.c_str(), c.ranks, c.threads, host, env("OMP_WAIT_POLICY"), env("OPENBLAS_THREAD_TIMEOUT"), c.reps,
              c.warmup);
  std::printf("# load average before: %.2f %.2f %.2f%s\n", c.load_before[0], c.load_before[1], c.load_before[2],
              c.load_before[0] >= 1.5 ? "   (BUSY MACHINE: figures provisional)" : "");
}

void json_common(Json& j, const Common& c, const std::string& what) {
  const auto after = load_average();
  j.str("bench", what).num("ranks", c.ranks).num("threads_per_rank", c.threads).num("reps", c.reps)
      .num("warmup", c.warmup).num("load_before", c.load_before[0]).num("load_after", after[0]);
  const char* wp = std::getenv("OMP_WAIT_POLICY");
  j.str("omp_wait_policy", wp ? wp : "");
  const char* bt = std::getenv("OPENBLAS_THREAD_TIMEOUT");
  j.str("openblas_thread_timeout", bt ? bt : "");
}

void emit_json(const Common& c, const Json& j) {
  if (c.rank != 0) return;
  if (c.json) std::printf("%s\n", j.text().c_str());
  if (!c.json_out.empty()) std::ofstream(c.json_out) << j.text() << "\n";
}

void print_footer(const Common& c) {
  if (c.rank != 0 || c.json) return;
  const auto after = load_average();
  std::printf("# load average after: %.2f %.2f %.2f\n", after[0], after[1], after[2]);
}

// ---------------------------------------------------------------------------------------------
// expert-gemm
int expert_gemm(const Common& c, const Options& o) {
  const int d = o.integer("d-model", 1024), tokens = o.integer("tokens", 4096), E = o.integer("E", 8);
  const std::vector<int> Gs = o.int_list("G", {1, 2, 4, 8, 16, 32, 64});
  const std::string schedule = o.str("schedule", "experts");
  const bool backward = !o.flag("forward-only");
  if (schedule != "experts" && schedule != "blas") throw std::invalid_argument("--schedule experts|blas");
  o.require_all_used();
  // Dense reference: one GEMM with the experts' forward FLOPs (2 tokens x d x 4d GEMMs).
  DenseGemm dense(tokens, 8 * d, d);
  std::vector<double> dense_times;
  time_median(c, [&] { dense.run(c.threads); }, &dense_times);
  print_header(c, "expert-gemm (" + schedule + ")");
  Json j;
  j.begin_object();
  json_common(j, c, "expert-gemm");
  j.num("d_model", d).num("tokens", tokens).num("E", E).str("schedule", schedule);
  j.begin_array("rows");
  if (c.rank == 0 && !c.json)
    std::printf("%4s %8s %8s %9s %10s %10s %10s %10s\n", "G", "experts", "d_expert", "rows/exp", "fwd_ms",
                "fwd_GF/s", "fb_GF/s", "fwd/dense");
  std::vector<double> results;
  for (int G : Gs) {
    const int n_exp = E * G, de = 4 * d / G, cap = tokens / E;
    const int64_t rows = int64_t(n_exp) * cap;
    std::vector<float> x(size_t(rows) * d), y(size_t(rows) * d), w1(size_t(n_exp) * d * de), w2(w1.size());
    fill(x, 3, 1.0f);
    fill(w1, 4, 0.03f);
    fill(w2, 5, 0.03f);
    std::vector<int64_t> counts(size_t(n_exp), cap);
    moe::GroupedExperts<float> ex(n_exp, d, de, cpu::Activation::relu, /*strided=*/true);  // expert choice
    moe::ExpertScratch<float> scratch;
    std::vector<float> hidden(size_t(rows) * de);
    const double fwd_flops = 4.0 * double(rows) * d * de;
    double t_fwd = 0;
    if (schedule == "experts") {
      t_fwd = time_median(c, [&] { ex.forward(w1.data(), w2.data(), x.data(), counts, y.data(), scratch); });
    } else {
      // What the experts would do with BLAS threads inside each (small) GEMM, one expert at a time.
      t_fwd = time_median(c, [&] {
        cpu::ScopedBlasThreads t(c.threads);
        for (int e = 0; e < n_exp; ++e) {
          const int64_t r0 = int64_t(e) * cap;
          float* h = hidden.data() + r0 * de;
          cpu::gemm<float>(false, false, cap, de, d, 1.0f, x.data() + r0 * d, d, w1.data() + size_t(e) * d * de, de,
                           0.0f, h, de);
          cpu::activation_forward(h, h, int64_t(cap) * de, cpu::Activation::relu);
          cpu::gemm<float>(false, false, cap, d, de, 1.0f, h, de, w2.data() + size_t(e) * d * de, d, 0.0f,
                           y.data() + r0 * d, d);
        }
      });
    }
    double t_fb = 0;
    if (backward && schedule == "experts") {
      std::vector<float> dw1(w1.size(), 0.0f), dw2(w2.size(), 0.0f);
      std::vector<float>& dy = x;  // any values: the GEMMs cost the same
      std::vector<float> dx(size_t(rows) * d);
      ex.forward(w1.data(), w2.data(), x.data(), counts, y.data(), scratch);
      const double t_b = time_median(
          c, [&] { ex.backward(w1.data(), w2.data(), x.data(), dy.data(), dx.data(), dw1.data(), dw2.data(), scratch); });
      t_fb = t_fwd + t_b;
    }
    const double dense_rate = dense.flops() / median(dense_times);
    const double r_fwd = fwd_flops / t_fwd, r_fb = t_fb > 0 ? 3 * fwd_flops / t_fb : 0;
    results.push_back(r_fwd);
    if (c.rank == 0 && !c.json)
      std::printf("%4d %8d %8d %9d %10.2f %10.1f %10.1f %10.3f\n", G, n_exp, de, cap, 1e3 * t_fwd, r_fwd * 1e-9,
                  r_fb * 1e-9, r_fwd / dense_rate);
    j.begin_object().num("G", G).num("experts", n_exp).num("d_expert", de).num("rows_per_expert", cap)
        .num("fwd_s", t_fwd).num("fwd_flops", fwd_flops).num("fwd_gflops", r_fwd * 1e-9)
        .num("fwd_bwd_s", t_fb).num("fwd_bwd_gflops", r_fb * 1e-9).num("fwd_vs_dense", r_fwd / dense_rate)
        .num("fwd_bwd_vs_dense", r_fb / dense_rate).end_object();
  }
  // The dense GEMM again after the sweep: the reference is the median over both passes, and the
  // spread says how steady the machine was.
  time_median(c, [&] { dense.run(c.threads); }, &dense_times);
  const double dense_rate = dense.flops() / median(dense_times);
  j.end_array();
  j.num("dense_m", dense.m).num("dense_n", dense.n).num("dense_k", dense.k).num("dense_gflops", dense_rate * 1e-9);
  j.num("dense_gflops_min", dense.flops() / *std::max_element(dense_times.begin(), dense_times.end()) * 1e-9);
  j.num("dense_gflops_max", dense.flops() / *std::min_element(dense_times.begin(), dense_times.end()) * 1e-9);
  j.end_object();
  emit_json(c, j);
  if (c.rank == 0) {
    if (!c.json)
      std::printf("# dense SGEMM %dx%dx%d, %d thread(s): %.1f GFLOP/s (median of %zu, before and after the sweep)\n",
                  dense.m, dense.n, dense.k, c.threads, dense_rate * 1e-9, dense_times.size());
  }
  print_footer(c);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// dispatch
int dispatch(const Common& c, const Options& o) {
  const int d = o.integer("d-model", 1024), n_experts = o.integer("experts", 64), G = o.integer("G", 8);
  const std::vector<int> rpes = o.int_list("rows-per-expert", {1, 2, 4, 8, 16, 32, 64, 128, 256});
  o.require_all_used();
  if (n_experts % c.ranks) throw std::invalid_argument("--experts must be divisible by the ranks");
  MpiCommunicator world(MPI_COMM_WORLD);
  print_header(c, "dispatch");
  Json j;
  j.begin_object();
  json_common(j, c, "dispatch");
  j.num("d_model", d).num("experts", n_experts).begin_array("rows");
  if (c.rank == 0 && !c.json)
    std::printf("%8s %10s %11s %11s %11s %9s %9s %11s\n", "rows/exp", "MB/rank", "alltoall2_ms", "exchange_ms",
                "disp+comb_ms", "exch/a2a", "full/a2a", "a2a_GB/s");
  for (int rpe : rpes) {
    const int64_t copies = int64_t(n_experts) * rpe;
    const int64_t tokens = std::max<int64_t>(1, copies / G);
    std::vector<float> x(size_t(tokens) * d), y(size_t(tokens) * d), x_send(size_t(copies) * d),
        x_exp(size_t(copies) * d), y_back(size_t(copies) * d), gate(size_t(copies), 0.5f), a2a_out(size_t(copies) * d);
    fill(x, 11 + c.rank, 1.0f);
    std::vector<int32_t> rows(static_cast<size_t>(copies));
    for (int64_t i = 0; i < copies; ++i) rows[size_t(i)] = int32_t(i % tokens);
    std::vector<int64_t> per_expert(size_t(n_experts), rpe);
    moe::AllToAllDispatcher<float> disp(&world, n_experts);
    const double bytes = double(copies) * d * sizeof(float);  // per rank, one direction
    const int per_peer = int(copies * d / c.ranks);
    const double t_a2a = time_median(c, [&] {
      MPI_CHECK(MPI_Alltoall(x_send.data(), per_peer, MPI_FLOAT, a2a_out.data(), per_peer, MPI_FLOAT, MPI_COMM_WORLD));
      MPI_CHECK(MPI_Alltoall(a2a_out.data(), per_peer, MPI_FLOAT, x_exp.data(), per_peer, MPI_FLOAT, MPI_COMM_WORLD));
    });
    disp.plan(per_expert);
    const double t_exch = time_median(c, [&] {
      disp.to_experts(x_send.data(), x_exp.data(), d);
      disp.from_experts(x_exp.data(), y_back.data(), d);
    });
    // As the MoE layer runs it: own copies straight between token rows and expert order.
    const double t_full = time_median(c, [&] {
      disp.plan(per_expert);
      moe::dispatch_to_experts(disp, x.data(), rows.data(), d, x_send.data(), x_exp.data());
      std::fill(y.begin(), y.end(), 0.0f);
      moe::combine_from_experts(disp, x_exp.data(), rows.data(), gate.data(), d, y_back.data(), y.data());
    });
    if (c.rank == 0 && !c.json)
      std::printf("%8d %10.2f %11.3f %11.3f %11.3f %9.3f %9.3f %11.2f\n", rpe, bytes / 1e6, 1e3 * t_a2a, 1e3 * t_exch,
                  1e3 * t_full, t_a2a / t_exch, t_a2a / t_full, 2 * bytes / t_a2a * 1e-9);
    j.begin_object().num("rows_per_expert", rpe).num("bytes_per_rank", bytes).num("alltoall_x2_s", t_a2a)
        .num("exchange_s", t_exch).num("dispatch_combine_s", t_full).num("exchange_vs_alltoall", t_a2a / t_exch)
        .num("dispatch_combine_vs_alltoall", t_a2a / t_full).num("alltoall_gbps", 2 * bytes / t_a2a * 1e-9).end_object();
  }
  j.end_array().end_object();
  emit_json(c, j);
  print_footer(c);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// moe-layer
int moe_layer(const Common& c, const Options& o) {
  const int d = o.integer("d-model", 1024), tokens = o.integer("tokens", 4096), E = o.integer("E", 8);
  const int context = o.integer("context", 256);
  const std::vector<int> Gs = o.int_list("G", {1, 2, 4, 8, 16, 32, 64});
  const std::string routing = o.str("routing", "expert_choice");
  const int n_seq = tokens / context;
  if (n_seq * context != tokens) throw std::invalid_argument("--tokens must be a multiple of --context");
  ProcessGrid grid(MPI_COMM_WORLD, c.ranks);
  DenseGemm dense(tokens, 8 * d, d);
  std::vector<double> dense_times;
  time_median(c, [&] { dense.run(c.threads); }, &dense_times);
  print_header(c, "moe-layer (" + routing + ", EP = " + std::to_string(c.ranks) + ", " + std::to_string(tokens) +
                      " tokens per rank)");
  Json j;
  j.begin_object();
  json_common(j, c, "moe-layer");
  j.num("d_model", d).num("tokens_per_rank", tokens).num("E", E).str("routing", routing).begin_array("rows");
  if (c.rank == 0 && !c.json)
    std::printf("%4s %8s %8s %9s %9s %9s %9s %9s %9s %10s %9s\n", "G", "experts", "d_expert", "fwd_ms", "bwd_ms",
                "GF/s", "vs_dense", "router%", "a2a%", "experts%", "other%");
  for (int G : Gs) {
    Config cfg;
    cfg.model.d_model = d;
    cfg.model.context = context;
    cfg.moe.expansion_rate = E;
    cfg.moe.granularity = G;
    cfg.moe.routing = routing;
    cfg.moe.group_size = std::min(16, n_seq);
    cfg.moe.output_layernorm = true;
    ParameterStore<float> store;
    MoeComms comms;
    comms.expert_group = &grid.expert_group();
    MoeLayer<float> layer(cfg, 0, store, comms, grid.ep_rank(), grid.ep_size());
    store.allocate(1);
    TokenBatch batch;
    batch.n_seq = n_seq;
    batch.context = context;
    batch.first_global_seq = int64_t(c.rank) * n_seq;
    batch.loss_scale = 1.0 / (double(tokens) * c.ranks);
    std::vector<float> x(size_t(tokens) * d), y(x.size()), dy(x.size()), dx(x.size());
    fill(x, 21 + c.rank, 1.0f);
    fill(dy, 31 + c.rank, 1e-3f);
    std::vector<double> tf, tb, tr, ta, te;
    for (int i = 0; i < c.warmup; ++i) {
      layer.forward(x.data(), y.data(), batch);
      layer.backward(dy.data(), dx.data());
    }
    int64_t flops = 0;
    for (int i = 0; i < c.reps; ++i) {
      layer.reset_stats();
      MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
      const int64_t f0 = cpu::gemm_flops().total();
      auto t0 = Clock::now();
      layer.forward(x.data(), y.data(), batch);
      tf.push_back(max_over_ranks(seconds_since(t0)));
      t0 = Clock::now();
      layer.backward(dy.data(), dx.data());
      tb.push_back(max_over_ranks(seconds_since(t0)));
      flops = cpu::gemm_flops().total() - f0;
      const FeedForwardStats& st = layer.stats();
      tr.push_back(st.router_time_s);
      ta.push_back(st.alltoall_time_s);
      te.push_back(st.expert_gemm_time_s);
    }
    const double t_f = median(tf), t_b = median(tb), t = t_f + t_b;
    const double rate = double(flops) / t;
    const double dense_rate = dense.flops() / median(dense_times);
    const double p_r = median(tr) / t, p_a = median(ta) / t, p_e = median(te) / t;
    if (c.rank == 0 && !c.json)
      std::printf("%4d %8d %8d %9.1f %9.1f %9.1f %9.3f %9.1f %9.1f %10.1f %9.1f\n", G, E * G, 4 * d / G, 1e3 * t_f,
                  1e3 * t_b, rate * 1e-9, rate / dense_rate, 100 * p_r, 100 * p_a, 100 * p_e,
                  100 * (1 - p_r - p_a - p_e));
    j.begin_object().num("G", G).num("experts", E * G).num("d_expert", 4 * d / G).num("fwd_s", t_f).num("bwd_s", t_b)
        .num("gemm_flops_per_rank", double(flops)).num("gflops", rate * 1e-9).num("vs_dense", rate / dense_rate)
        .num("router_s", median(tr)).num("alltoall_s", median(ta)).num("experts_s", median(te)).end_object();
  }
  time_median(c, [&] { dense.run(c.threads); }, &dense_times);
  j.end_array().num("dense_gflops", dense.flops() / median(dense_times) * 1e-9).end_object();
  emit_json(c, j);
  if (c.rank == 0) {
    if (!c.json)
      std::printf("# dense SGEMM %dx%dx%d per rank, %d thread(s): %.1f GFLOP/s; GF/s = counted GEMM FLOPs per rank / "
                  "(fwd + bwd); router%% includes selection and permutation\n",
                  dense.m, dense.n, dense.k, c.threads, dense.flops() / median(dense_times) * 1e-9);
  }
  print_footer(c);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// step and export: the benchmark model
Config step_config(const Options& o) {
  Config cfg;
  cfg.model.d_model = o.integer("d-model", 512);
  cfg.model.n_blocks = o.integer("blocks", 4);
  cfg.model.n_heads = o.integer("heads", 8);
  cfg.model.context = o.integer("context", 256);
  cfg.model.vocab = o.integer("vocab", 8192);
  cfg.model.activation = o.str("activation", "relu");
  cfg.model.init_scale = o.num("init-scale", 0.1);
  cfg.moe.enabled = !o.flag("dense");
  cfg.moe.expansion_rate = o.integer("E", 8);
  cfg.moe.granularity = o.integer("G", 4);
  cfg.moe.routing = o.str("routing", "expert_choice");
  cfg.moe.group_size = o.integer("group-size", 16);
  cfg.moe.output_layernorm = true;
  cfg.train.device = o.str("device", "cpu");
  cfg.train.precision = o.str("precision", "fp32");
  cfg.parallel.communicator = o.str("communicator", "mpi");
  cfg.train.cuda_graph = o.flag("cuda-graph");
  cfg.train.seed = uint64_t(o.integer("seed", 1));
  cfg.train.batch_size = o.integer("batch", 16);
  cfg.train.steps = 1000;
  cfg.train.lr = 2e-4;
  cfg.train.final_lr = 2e-5;
  return cfg;
}

// A synthetic corpus (uniform tokens; speed does not depend on the text), written by rank 0.
std::string write_corpus(const Common& c, int vocab) {
  int64_t id = c.rank == 0 ? int64_t(::getpid()) : 0;
  MPI_CHECK(MPI_Bcast(&id, 1, MPI_INT64_T, 0, MPI_COMM_WORLD));
  const std::string path = (std::filesystem::temp_directory_path() / ("finemoe_bench_" + std::to_string(id) + ".bin")).string();
  if (c.rank == 0) {
    std::vector<uint16_t> tokens(1 << 20);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = uint16_t(hash_combine(42, i) % uint64_t(vocab));
    write_shard(path, tokens.data(), tokens.size());
  }
  MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD));
  return path;
}

int step(const Common& c, const Options& o) {
  const Config cfg = step_config(o);
  const std::string corpus = write_corpus(c, cfg.model.vocab);
  TokenDataset data(corpus, cfg.model.vocab, "data.train");
  BatchSampler sampler(data, cfg.model.context, cfg.train.seed, kTrainStream);
  ProcessGrid grid(MPI_COMM_WORLD, cfg.moe.enabled ? c.ranks : 1);
  const std::string device = setup_compute(cfg, grid);
  const bool gpu = cfg.train.device == "cuda";
  auto engine = std::make_unique<TrainingEngine<float>>(cfg, grid);
  const double counted_per_token = engine->count_flops_per_token(sampler);
  const ModelCounts counts = engine->model().counts();
  const double head_params = double(cfg.model.d_model) * cfg.model.vocab;
  // The paper's Eq. 10 (6 per active non-embedding weight + 14 per router weight) and the same
  // plus the output projection's 6 d V, which every MFU convention counts.
  const double paper_per_token = counts.flops_per_token();
  const double model_per_token = paper_per_token + 6 * head_params;
  // MFU's FLOPs (the throughput issue's definition, docs/performance.md): the model's plus causal
  // attention's score and value products, 2 x 2 T d per token per block forward, halved by the
  // mask, times 3 for forward and backward: 6 T d per token per block.
  const double mfu_per_token =
      model_per_token + 6.0 * cfg.model.n_blocks * double(cfg.model.context) * cfg.model.d_model;
  const int dn = o.integer("dense-n", 4096);
  DenseGemm dense(dn, dn, std::max(1, dn / 4));
  std::vector<double> dense_times;
  if (!gpu) time_median(c, [&] { dense.run(c.threads); }, &dense_times);
  print_header(c, "step");
  std::vector<double> losses;
  int64_t s = 0;
  std::vector<double> step_times;
  const double t_step = time_median(c, [&] { losses.push_back(engine->step(s++, 2e-4, sampler).loss); }, &step_times);
  // The phase times of one more step, uncaptured when --cuda-graph replays the others.
  engine->time_next_step();
  losses.push_back(engine->step(s++, 2e-4, sampler).loss);
  const StepMetrics m = engine->metrics();
  const std::string graph = cuda_graph_status(cfg, grid.world_size());
  // Measured peak of the model's buffers (the allocator's accounting: the pool's requests on a GPU)
  // against the memory plan without its stated allowances (the CUDA context, cuBLAS, NCCL).
  const MemoryPlan plan = plan_memory(cfg, c.ranks, gpu);
  const double planned = plan.total() - plan.category_total("allowance");
  const double peak = double(buffer_memory_use().peak_bytes);
  // The reference rate: a dense SGEMM measured here on the CPU; the card's dense peak on a GPU (MFU).
  if (!gpu) time_median(c, [&] { dense.run(c.threads); }, &dense_times);
  const double dense_rate = gpu ? o.num("peak-tflops", 989.0) * 1e12 : dense.flops() / median(dense_times);
  const double tokens = double(cfg.tokens_per_step());
  const double tps = tokens / t_step;
  const double model_rate = model_per_token * tps / c.ranks;      // per rank
  const double mfu = mfu_per_token * tps / c.ranks / dense_rate;
  const double paper_rate = paper_per_token * tps / c.ranks;
  const double counted_rate = counted_per_token * tps / c.ranks;   // per rank (every rank's tokens alike)
  std::filesystem::remove(corpus);
  if (c.rank == 0 && !c.json) {
    std::printf("model: d_model %d, blocks %d, heads %d, context %d, vocab %d, %s E %d G %d (%d experts, d_expert %d), "
                "batch %d x %d = %.0f tokens, EP %d\n",
                cfg.model.d_model, cfg.model.n_blocks, cfg.model.n_heads, cfg.model.context, cfg.model.vocab,
                cfg.moe.enabled ? cfg.moe.routing.c_str() : "dense", cfg.moe.expansion_rate, cfg.moe.granularity,
                cfg.n_experts(), cfg.d_expert(), cfg.train.batch_size, cfg.model.context, tokens, grid.ep_size());
    std::printf("params: N_total %.3gM, N_active %.3gM, router %.3gM, embedding+head %.3gM\n", counts.n_total() * 1e-6,
                counts.n_active() * 1e-6, counts.n_router() * 1e-6, counts.n_embedding() * 1e-6);
    std::printf("step: %.3f s (median of %d; min %.3f max %.3f)  ->  %.0f tokens/s, loss %.4f\n", t_step, c.reps,
                *std::min_element(step_times.begin(), step_times.end()),
                *std::max_element(step_times.begin(), step_times.end()), tps, losses.back());
    std::printf("FLOPs/token: paper Eq.10 %.4g, + head 6dV = model %.4g, counted GEMMs %.4g\n",
                paper_per_token, model_per_token, counted_per_token);
    std::printf("device: %s, %s; cuda graph %s\n", device.c_str(), cfg.train.precision.c_str(), graph.c_str());
    std::printf("per rank: model %.1f GFLOP/s (paper count %.1f), counted GEMMs %.1f GFLOP/s; %s %.1f "
                "GFLOP/s -> model/dense %.3f (MFU on a GPU), counted/dense %.3f\n",
                model_rate * 1e-9, paper_rate * 1e-9, counted_rate * 1e-9, gpu ? "card peak" : "dense SGEMM",
                dense_rate * 1e-9,
                model_rate / dense_rate, counted_rate / dense_rate);
    if (gpu)
      std::printf("MFU %.3f: (Eq.10 + 6dV + causal attention 6 T d n_blocks = %.4g FLOPs/token) x tokens/s / "
                  "%.0f TFLOP/s per GPU\n", mfu, mfu_per_token, dense_rate * 1e-12);
    std::printf("memory peak: %.2f GiB measured, %.2f GiB planned (%.3f; plan with allowances %.2f GiB)\n",
                peak / double(1 << 30), planned / double(1 << 30), peak / planned, plan.total() / double(1 << 30));
    std::printf("last step, slowest rank: all-to-all %.3f s, expert GEMMs %.3f s, router %.3f s\n", m.alltoall_time_s,
                m.expert_gemm_time_s, m.router_time_s);
  }
  {
    Json j;
    j.begin_object();
    json_common(j, c, "step");
    j.num("d_model", cfg.model.d_model).num("n_blocks", cfg.model.n_blocks).num("n_heads", cfg.model.n_heads)
        .num("context", cfg.model.context).num("vocab", cfg.model.vocab).num("E", cfg.moe.expansion_rate)
        .num("G", cfg.moe.granularity).num("moe", cfg.moe.enabled).num("batch", cfg.train.batch_size)
        .num("ep", grid.ep_size()).num("tokens_per_step", tokens).num("step_s", t_step).num("tokens_per_s", tps)
        .num("n_total", double(counts.n_total())).num("n_active", double(counts.n_active()))
        .num("paper_flops_per_token", paper_per_token).num("model_flops_per_token", model_per_token)
        .num("counted_flops_per_token", counted_per_token)
        .num("model_gflops_per_rank", model_rate * 1e-9).num("paper_gflops_per_rank", paper_rate * 1e-9)
        .num("counted_gflops_per_rank", counted_rate * 1e-9).num("dense_gflops_per_rank", dense_rate * 1e-9)
        .num("model_vs_dense", model_rate / dense_rate).num("counted_vs_dense", counted_rate / dense_rate)
        .num("alltoall_s", m.alltoall_time_s).num("expert_gemm_s", m.expert_gemm_time_s).num("router_s", m.router_time_s)
        .num("loss", losses.back()).str("device", device).str("precision", cfg.train.precision)
        .str("cuda_graph", graph).num("peak_bytes", peak).num("planned_bytes", planned)
        .num("mfu_flops_per_token", mfu_per_token).num("mfu", mfu);
    j.end_object();
    emit_json(c, j);
  }
  print_footer(c);
  return 0;
}

// Writes DIR/manifest.json, DIR/weights.bin (float32, registration order), DIR/inputs.bin and
// DIR/targets.bin (int32 [batch, context]) and the loss of that batch in finemoe (fp32).
int export_state(const Common& c, const Options& o) {
  if (c.ranks != 1) throw std::invalid_argument("export runs on one rank");
  const std::string out = o.str("out", "");
  if (out.empty()) throw std::invalid_argument("export needs --out DIR");
  const Config cfg = step_config(o);
  std::filesystem::create_directories(out);
  const std::string corpus = write_corpus(c, cfg.model.vocab);
  TokenDataset data(corpus, cfg.model.vocab, "data.train");
  BatchSampler sampler(data, cfg.model.context, cfg.train.seed, kTrainStream);
  ProcessGrid grid(MPI_COMM_WORLD, 1);
  TrainingEngine<float> engine(cfg, grid);
  const int n_seq = cfg.train.batch_size, ctx = cfg.model.context;
  std::vector<int32_t> inputs(size_t(n_seq) * ctx), targets(inputs.size());
  sampler.fill(0, 0, n_seq, inputs.data(), targets.data());
  TokenBatch batch;
  batch.n_seq = n_seq;
  batch.context = ctx;
  batch.loss_scale = 1.0 / (double(n_seq) * ctx);
  const double loss = engine.model().forward_loss(inputs.data(), targets.data(), batch) / double(n_seq * ctx);
  std::filesystem::remove(corpus);
  auto& store = engine.store();
  std::ofstream w(out + "/weights.bin", std::ios::binary);
  Json j;
  j.begin_object().str("generator", "finemoe-bench export").num("loss", loss).num("n_seq", n_seq);
  j.begin_object("config").num("d_model", cfg.model.d_model).num("n_blocks", cfg.model.n_blocks)
      .num("n_heads", cfg.model.n_heads).num("context", ctx).num("vocab", cfg.model.vocab)
      .str("activation", cfg.model.activation).num("moe", cfg.moe.enabled).num("E", cfg.moe.expansion_rate)
      .num("G", cfg.moe.granularity).str("routing", cfg.moe.routing).num("group_size", cfg.moe.group_size)
      .num("capacity_factor", cfg.moe.capacity_factor).num("output_layernorm", cfg.moe.output_layernorm)
      .num("tied", cfg.model.tied_embeddings).num("init_scale", cfg.model.init_scale).end_object();
  j.begin_array("params");
  int64_t offset = 0;
  const std::vector<float> host_values[2] = {to_host(store.values(ParamGroup::replicated)),
                                             to_host(store.values(ParamGroup::expert))};
  for (int i = 0; i < store.count(); ++i) {
    const ParamSpec& sp = store.spec(i);
    const float* v = host_values[static_cast<int>(sp.group)].data() + store.offset(i);
    w.write(reinterpret_cast<const char*>(v), std::streamsize(sp.numel() * sizeof(float)));
    j.begin_object().str("name", sp.name).begin_array("shape");
    for (int64_t s : sp.shape) j.num("", double(s));
    j.end_array().num("offset", double(offset)).num("std", sp.init.std).end_object();
    offset += sp.numel();
  }
  j.end_array().end_object();
  std::ofstream(out + "/inputs.bin", std::ios::binary)
      .write(reinterpret_cast<const char*>(inputs.data()), std::streamsize(inputs.size() * 4));
  std::ofstream(out + "/targets.bin", std::ios::binary)
      .write(reinterpret_cast<const char*>(targets.data()), std::streamsize(targets.size() * 4));
  std::ofstream(out + "/manifest.json") << j.text() << "\n";
  std::printf("exported %d tensors (%lld floats) to %s; finemoe fp32 loss %.6f\n", store.count(), (long long)offset,
              out.c_str(), loss);
  return 0;
}

}  // namespace
}  // namespace finemoe::bench

int main(int argc, char** argv) {
  using namespace finemoe;
  using namespace finemoe::bench;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(kUsage, stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string sub = argv[1];
  if (sub == "plan") {
    try {
      return run_plan(argc, argv);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "finemoe-bench plan: error: %s\n", e.what());
      return 2;
    }
  }
  if (is_gpu_subcommand(sub)) return run_gpu(argc, argv);  // bench/bench_gpu.h
  MpiSession mpi(&argc, &argv);
  Common c;
  MPI_Comm_rank(MPI_COMM_WORLD, &c.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &c.ranks);
  c.load_before = load_average();
  try {
    const Options o(argc, argv, 2);
    c.reps = o.integer("reps", 5);
    c.warmup = o.integer("warmup", 1);
    c.json = o.flag("json");
    c.json_out = o.str("json-out", "");
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    c.threads = o.integer("threads", int(std::max(1L, cores / c.ranks)));
    omp_set_num_threads(c.threads);
    cpu::set_blas_threads(c.threads);
    int rc = 0;
    auto check_unused = [&] {
      const auto unused = o.unused();
      if (!unused.empty()) throw std::invalid_argument("unknown option --" + unused.front());
    };
    if (sub == "expert-gemm") {
      if (c.ranks != 1) throw std::invalid_argument("expert-gemm runs on one rank");
      // Read every option before running so a typo fails at once.
      rc = expert_gemm(c, o);
    } else if (sub == "dispatch") {
      rc = dispatch(c, o);
    } else if (sub == "moe-layer") {
      rc = moe_layer(c, o);
    } else if (sub == "step") {
      rc = step(c, o);
    } else if (sub == "export") {
      rc = export_state(c, o);
    } else {
      std::fputs(kUsage, stderr);
      return 2;
    }
    check_unused();
    return rc;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "finemoe-bench %s: error: %s\n", sub.c_str(), e.what());
    if (c.ranks > 1) MPI_Abort(MPI_COMM_WORLD, 2);
    return 2;
  }
}
