#pragma once
// The local experts of one MoE layer: y = act(x W1_e) W2_e for the rows grouped per expert.
// Each product is one grouped GEMM over the experts (ops::grouped_gemm): on the CPU the experts run
// in parallel, one BLAS thread each (at high granularity the per-expert GEMMs are small, and
// threading inside them wastes most of the cores); on the GPU one batched cuBLAS call.
#include <cstdint>
#include <vector>

#include "backend/compute.h"
#include "backend/cpu/activation.h"
#include "backend/ops.h"

namespace finemoe::moe {

template <typename T>
class GroupedExperts {
 public:
  GroupedExperts(int n_local, int d_model, int d_expert, cpu::Activation activation);
  // x: rows grouped per local expert, counts[j] rows for expert j; w1 [n_local, d_model, d_expert],
  // w2 [n_local, d_expert, d_model]; y: same rows as x. x must stay valid until backward.
  void forward(const T* w1, const T* w2, const T* x, const std::vector<int64_t>& counts, T* y);
  // dy (rows of the last forward) -> dx (overwritten); dw1, dw2 accumulated (+=).
  void backward(const T* w1, const T* w2, const T* dy, T* dx, T* dw1, T* dw2);

 private:
  // The problems of make(expert, first row, rows) for the experts with rows.
  template <typename MakeProblem>
  const std::vector<ops::GemmProblem<T>>& per_expert(const MakeProblem& make);

  int n_local_, d_model_, d_expert_;
  cpu::Activation activation_;
  const T* x_ = nullptr;
  std::vector<int64_t> offsets_;  // first row of each local expert; offsets_[n_local_] = rows
  std::vector<ops::GemmProblem<T>> problems_;
  DeviceBuffer<T> hidden_, activated_, dactivated_, dhidden_;  // [rows, d_expert]
};

}  // namespace finemoe::moe
