#include "train/gradient_sync.h"

#include <cmath>

#include "backend/ops.h"

namespace finemoe {

template <typename T>
GradientSync<T>::GradientSync(ParameterStore<T>& store, const StepCommunicators& comms, int n_blocks)
    : store_(store), comms_(comms), squares_(2) {
  for (int b = -1; b < n_blocks; ++b) started_.emplace_back(b, false);
}

template <typename T>
void GradientSync<T>::start_ranges(ParamGroup g, int block, Communicator& comm) {
  if (comm.size() == 1) return;
  for (const auto& [begin, end] : store_.block_ranges(g, block)) {
    T* data = store_.grads(g).data() + begin;
    pending_.push_back(comm.start_all_reduce_sum(data, size_t(end - begin), dtype_of<T>()));
  }
}

template <typename T>
void GradientSync<T>::start_block(int block) {
  auto& entry = started_.at(size_t(block + 1));
  if (entry.second) return;
  entry.second = true;
  start_ranges(ParamGroup::replicated, block, *comms_.world);
  start_ranges(ParamGroup::expert, block, *comms_.data_group);
}

template <typename T>
void GradientSync<T>::finish() {
  for (auto& [block, started] : started_)
    if (!started) start_block(block);
  for (auto& p : pending_) p->wait();
  pending_.clear();
  for (auto& entry : started_) entry.second = false;
}

template <typename T>
void GradientSync<T>::compute_squares() {
  const auto& rep = store_.grads(ParamGroup::replicated);
  const auto& exp = store_.grads(ParamGroup::expert);
  ops::sum_of_squares(rep.data(), int64_t(rep.size()), squares_.data());
  ops::sum_of_squares(exp.data(), int64_t(exp.size()), squares_.data() + 1);
}

template <typename T>
double GradientSync<T>::global_norm() {
  compute_squares();
  double host[2];
  copy_to_host(host, squares_.data(), 2);  // the step's one wait for the norm
  // Replicas of an expert hold identical reduced gradients: sum over the EP group only.
  const double expert_sq = comms_.expert_group_host->sum(host[1]);
  return std::sqrt(host[0] + expert_sq);
}

template class GradientSync<float>;
template class GradientSync<double>;

}  // namespace finemoe
