#pragma once
// The local experts of one MoE layer: y = act(x W1_e) W2_e for the rows grouped per expert
// (swiglu: W1_e has 2 d_expert columns [gate | up]).
// Each product is one grouped GEMM over the experts (ops::grouped_gemm): on the CPU the experts run
// in parallel, one BLAS thread each (at high granularity the per-expert GEMMs are small, and
// threading inside them wastes most of the cores); on the GPU one batched cuBLAS call.
#include <cstdint>
#include <vector>

#include "backend/compute.h"
#include "backend/kept_activation.h"
#include "backend/ops.h"
#include "model/layer_support.h"

namespace finemoe::moe {

// Buffers one layer's experts need only inside its forward or its backward: shared by the MoE
// layers of a model (one layer runs at a time), so they cost one layer's worth, not n_blocks'.
template <typename T>
struct ExpertScratch {
  DeviceBuffer<T> activated, dactivated;  // [rows, d_expert]
  DeviceBuffer<T> dhidden;                // [rows, pre_width(d_expert)]
  DeviceBuffer<T> hidden_work;            // bf16 activation storage: the pre-activations in fp32
  // bf16 operands, packed for their products: [rows, d_model] the input rows (the backward: dy,
  // then the rows); [rows, pre_width] the activations, then (the backward) the pre-activation gradient.
  DeviceBuffer<Bfloat16> rows16, hidden16;
};

template <typename T>
class GroupedExperts {
 public:
  // strided: expert choice, whose local experts mostly get the same rows: then the first product and
  // the activation run as one strided call (ops::gemm_activation: the epilogue where the backend has one).
  GroupedExperts(int n_local, int d_model, int d_expert, FfnActivation activation, bool strided);
  // x: rows grouped per local expert, counts[j] rows for expert j; w1 [n_local, d_model, pre_width],
  // w2 [n_local, d_expert, d_model]; y: same rows as x. Keeps only the hidden pre-activations.
  void forward(ops::Operand<T> w1, ops::Operand<T> w2, const T* x, const std::vector<int64_t>& counts, T* y,
               ExpertScratch<T>& scratch);
  // x: the same rows as the forward's (re-gathered by the caller); dy -> dx (overwritten); dw1,
  // dw2 accumulated (+=). The activations are recomputed from the kept pre-activations.
  void backward(ops::Operand<T> w1, ops::Operand<T> w2, const T* x, const T* dy, T* dx, T* dw1, T* dw2,
                ExpertScratch<T>& scratch);

 private:
  // With strided experts, an elementwise activation and the same rows for every local expert: those
  // rows; else 0 (the grouped products and the separate activation).
  int equal_rows() const;
  // The problems of make(expert, first row, rows) for the experts with rows.
  template <typename MakeProblem>
  const std::vector<ops::GemmProblem<T>>& per_expert(const MakeProblem& make);

  int n_local_, d_model_, d_expert_;
  FfnActivation activation_;
  bool strided_;
  int d_pre_;  // columns of W1 and of the pre-activations
  std::vector<int64_t> offsets_;  // first row of each local expert; offsets_[n_local_] = rows
  std::vector<ops::GemmProblem<T>> problems_;
  KeptActivation<T> hidden_;  // [rows, d_pre_], kept for backward
};

}  // namespace finemoe::moe
