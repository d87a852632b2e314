#include "plan.h"

#include <cmath>
#include <cstdio>
#include <limits>

namespace finemoe::analysis {
namespace {

perf::ModelShape shape_of(const PlanSearch& s, double E, double G, double n_blocks) {
  perf::ModelShape m;
  m.name = "plan";
  m.blocks = n_blocks;
  m.d = 64 * n_blocks;
  m.context = s.context;
  m.vocab = s.vocab;
  m.moe = E > 1;
  m.E = E > 1 ? E : 1;
  m.G = E > 1 ? G : 1;
  m.batch_tokens = s.batch_tokens;
  return m;
}

void fill(PlanChoice& c, const PlanSearch& s, double E, double G, double n_blocks) {
  c.E = E;
  c.G = E > 1 ? G : 1;
  c.n_blocks = n_blocks;
  c.d_model = 64 * n_blocks;
  c.N_active = 12 * c.d_model * c.d_model * n_blocks;
  c.N_total = plan_total_params(n_blocks, E);
  c.flops = (E > 1 ? s.flops.flops_per_token(n_blocks, E, c.G) : s.flops.flops_per_token(n_blocks, 0, 1)) * c.D;
}

std::string fmt(const char* f, double a, double b = 0, double c = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a, b, c);
  return buf;
}

}  // namespace

double plan_total_params(double n_blocks, double E) {
  const double d = 64 * n_blocks;
  return d * d * (E > 1 ? 8 * E + 4 : 12) * n_blocks;
}

PlanChoice wallclock_optimal(const PlanLaw& law, const perf::Machine& m, const PlanSearch& s, double gpu_hours,
                             int fixed_nodes) {
  PlanChoice best;
  best.loss = std::numeric_limits<double>::infinity();
  const std::vector<int> nodes_list = fixed_nodes > 0 ? std::vector<int>{fixed_nodes} : s.node_counts;
  for (double E : law.expansion_rates) {
    const std::vector<double> gs = E > 1 ? law.granularities : std::vector<double>{1};
    for (double G : gs) {
      for (int nb = 1; nb <= s.max_blocks; ++nb) {
        if (E > 1 && std::fmod(4.0 * 64 * nb, G) != 0) continue;  // d_expert = 4 d / G must be whole
        const perf::ModelShape shape = shape_of(s, E, G, nb);
        for (int nodes : nodes_list) {
          const int devices = nodes * std::max(1, m.gpus_per_node);
          const perf::Prediction p = perf::best_layout(shape, m, devices);
          if (!p.fits) continue;
          const double wall_hours = gpu_hours / devices;
          const double tokens_per_s = s.batch_tokens / p.step_s;
          const double D = tokens_per_s * wall_hours * 3600;
          if (D < s.batch_tokens) continue;  // not one step
          PlanChoice c;
          c.D = D;
          fill(c, s, E, G, nb);
          c.loss = law.loss(c.N_active, c.N_total, D, E, c.G);
          if (!(c.loss < best.loss)) continue;
          c.feasible = true;
          c.nodes = nodes;
          c.devices = devices;
          c.step = p;
          c.tokens_per_s = tokens_per_s;
          c.wall_hours = wall_hours;
          c.gpu_hours = gpu_hours;
          best = c;
        }
      }
    }
  }
  return best;
}

PlanChoice cost_on_machine(const PlanLaw& law, const perf::Machine& m, const PlanSearch& s, double E, double G,
                           double n_blocks, double D, int fixed_nodes) {
  PlanChoice best;
  best.gpu_hours = std::numeric_limits<double>::infinity();
  const double nb = std::max(1.0, std::round(n_blocks));
  const perf::ModelShape shape = shape_of(s, E, G, nb);
  const std::vector<int> nodes_list = fixed_nodes > 0 ? std::vector<int>{fixed_nodes} : s.node_counts;
  for (int nodes : nodes_list) {
    const int devices = nodes * std::max(1, m.gpus_per_node);
    const perf::Prediction p = perf::best_layout(shape, m, devices);
    if (!p.fits) continue;
    const double wall_s = D / s.batch_tokens * p.step_s;
    const double gpu_hours = wall_s * devices / 3600;
    if (!(gpu_hours < best.gpu_hours)) continue;
    PlanChoice c;
    c.D = D;
    fill(c, s, E, G, nb);
    c.loss = law.loss(c.N_active, c.N_total, D, E, c.G);
    c.feasible = true;
    c.nodes = nodes;
    c.devices = devices;
    c.step = p;
    c.tokens_per_s = s.batch_tokens / p.step_s;
    c.wall_hours = wall_s / 3600;
    c.gpu_hours = gpu_hours;
    best = c;
  }
  return best;
}

std::vector<std::string> explain_difference(const PlanChoice& w, const PlanChoice& f, const perf::Machine& m) {
  std::vector<std::string> out;
  if (!f.feasible) {
    out.push_back("the FLOPs-optimal model fits on no node count searched (memory per GPU): it cannot run here");
    return out;
  }
  out.push_back(fmt("at equal GPU-hours the FLOPs-optimal choice would train %.3g tokens at MFU %.1f%%; the "
                    "wall-clock optimum trains %.3g",
                    f.D * w.gpu_hours / f.gpu_hours, 100 * f.step.mfu, w.D));
  if (f.step.comm_share > w.step.comm_share + 0.05) {
    out.push_back(fmt("communication: the FLOPs-optimal G = %g spends %.0f%% of its step in all-to-all and exposed "
                      "all-reduce, the wall-clock optimum %.0f%%",
                      f.G, 100 * f.step.comm_share, 100 * w.step.comm_share) +
                  (f.G > w.G ? " (expert choice sends every token to G experts: the all-to-all bytes grow with G)" : ""));
  }
  const double eff_f = f.E > 1 ? perf::expert_efficiency(m, 4 * f.d_model / f.G) : m.dense_eff;
  const double eff_w = w.E > 1 ? perf::expert_efficiency(m, 4 * w.d_model / w.G) : m.dense_eff;
  if (eff_f < eff_w - 0.05) {
    out.push_back(fmt("GEMM efficiency: experts of width %.0f run at %.0f%% of peak, against ", 4 * f.d_model / f.G,
                      100 * eff_f) +
                  fmt("%.0f%% at width %.0f", 100 * eff_w, 4 * w.d_model / w.G));
  }
  if (f.step.mfu < w.step.mfu * 0.9 && out.size() == 1) {
    out.push_back(fmt("MFU %.1f%% against %.1f%%: the FLOPs model counts every FLOP alike, this machine does not",
                      100 * f.step.mfu, 100 * w.step.mfu));
  }
  if (std::abs(f.loss - w.loss) < 1e-3 && f.G == w.G && f.E == w.E) {
    out.push_back("the two choices nearly coincide: on this machine FLOPs are a fair proxy for hours at this budget");
  }
  return out;
}

}  // namespace finemoe::analysis
