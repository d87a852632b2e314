#pragma once
// Output projection to the vocabulary and the cross-entropy loss.
#include <cstdint>
#include <vector>

#include "backend/compute.h"
#include "model/parameters.h"

namespace finemoe {

template <typename T>
class OutputHead {
 public:
  // Tied: logits = x E^T with the token table E [vocab, d] (nothing registered). Untied: registers
  // `head.weight` [d, vocab] (block -1, std sqrt(init_scale / d)) and logits = x W.
  OutputHead(ParameterStore<T>& store, int d, int vocab, double init_scale);
  OutputHead(ParameterStore<T>& store, int d, int vocab, ParamHandle tied_token_table);
  // x: [rows, d], kept (must stay valid until backward). Returns the sum over rows of the
  // cross-entropy against targets. With grad, keeps dlogits = dscale * d(sum)/d(logits) for backward.
  // The sum is added to *loss_sum (one double in compute-backend memory).
  void forward(const T* x, const int32_t* targets, int64_t rows, bool grad, T dscale, double* loss_sum);
  // dx [rows, d] overwritten; the output matrix's gradient accumulated.
  void backward(T* dx);
  const T* logits() const { return logits_.data(); }

 private:
  ParameterStore<T>& store_;
  ParamHandle weight_;
  bool tied_;
  int d_, vocab_;
  const T* x_ = nullptr;
  int64_t rows_ = 0;
  DeviceBuffer<T> logits_, dlogits_;
  DeviceBuffer<Bfloat16> dlogits16_;  // bf16 operands: dlogits packed once for the backward's two products
};

}  // namespace finemoe
