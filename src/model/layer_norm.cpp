#include "model/layer_norm.h"

#include "backend/ops.h"
#include "model/layer_support.h"

namespace finemoe {

template <typename T>
LayerNorm<T>::LayerNorm(ParameterStore<T>& store, const std::string& prefix, int block, int dim)
    : store_(store), dim_(dim) {
  ParamSpec w{prefix + ".weight", {dim}, ParamGroup::replicated, ParamInit::ones(), block};
  w.weight_decay = false;
  ParamSpec b{prefix + ".bias", {dim}, ParamGroup::replicated, ParamInit::zeros(), block};
  b.weight_decay = false;
  weight_ = store.add(std::move(w));
  bias_ = store.add(std::move(b));
}

template <typename T>
void LayerNorm<T>::forward(const T* x, T* y, int64_t rows) {
  x_ = x;
  rows_ = rows;
  ops::layernorm_forward<T>(y, ensure_size(mean_, rows), ensure_size(rstd_, rows), x, store_.value(weight_),
                            store_.value(bias_), rows, dim_, T(kEps));
}

template <typename T>
void LayerNorm<T>::backward(const T* dy, T* dx) {
  backward(dy, dx, x_);
}

template <typename T>
void LayerNorm<T>::backward(const T* dy, T* dx, const T* x) {
  ops::layernorm_backward<T>(dx, store_.grad(weight_), store_.grad(bias_), dy, x, store_.value(weight_),
                             mean_.data(), rstd_.data(), rows_, dim_);
}

template class LayerNorm<float>;
template class LayerNorm<double>;

}  // namespace finemoe
