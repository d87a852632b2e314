#pragma once
// LayerNorm with a gain and a bias (no weight decay on either).
#include <string>
#include <vector>

#include "backend/compute.h"
#include "model/parameters.h"

namespace finemoe {

template <typename T>
class LayerNorm {
 public:
  static constexpr double kEps = 1e-5;  // PyTorch's default
  // Registers `{prefix}.weight` (ones) and `{prefix}.bias` (zeros), each [dim].
  LayerNorm(ParameterStore<T>& store, const std::string& prefix, int block, int dim);
  // x: [rows, dim]; x must stay valid until backward (the model keeps it).
  void forward(const T* x, T* y, int64_t rows);
  // Accumulates (+=) into dx and into the gain and bias gradients.
  void backward(const T* dy, T* dx);
  // The same with the forward's input given again (a kept copy: the forward's buffer was reused).
  void backward(const T* dy, T* dx, const T* x);

 private:
  ParameterStore<T>& store_;
  ParamHandle weight_, bias_;
  int dim_;
  const T* x_ = nullptr;
  int64_t rows_ = 0;
  DeviceBuffer<T> mean_, rstd_;
};

}  // namespace finemoe
