#pragma once
// A tensor the forward keeps for the backward, stored as compute_settings().activation_storage says:
//   full: the tensor itself; the forward writes it in place (no copy);
//   bf16: the forward writes a working buffer shared by the layers of one kind (one runs at a
//         time), keep() stores it rounded to bfloat16 in 2 bytes a value, and restore() expands
//         that into a working buffer for the backward, which thus sees the rounded values.
// The same calls run on both backends, so the CPU's bf16 storage is the GPU's reference.
#include <cstddef>

#include "backend/bf16.h"
#include "backend/compute.h"
#include "backend/ops.h"

namespace finemoe {

template <typename T>
class KeptActivation {
 public:
  // The buffer the forward writes n values into.
  T* forward_buffer(size_t n, DeviceBuffer<T>& working) {
    n_ = n;
    working_ = ensure_size(bf16_activation_storage() ? working : full_, n);
    return working_;
  }
  // After the forward wrote forward_buffer's values: stores them (bf16 storage; full keeps them in place).
  void keep() {
    if (bf16_activation_storage()) ops::pack_bf16(ensure_size(packed_, n_), working_, int64_t(n_));
  }
  // Keeps n values the layer does not own: their copy, or their bf16 copy.
  void keep_copy(const T* src, size_t n) {
    n_ = n;
    if (bf16_activation_storage())
      ops::pack_bf16(ensure_size(packed_, n), src, int64_t(n));
    else
      ops::copy(ensure_size(full_, n), src, int64_t(n));
  }
  // The kept values for the backward: the tensor itself, or its bf16 copy expanded into working.
  const T* restore(DeviceBuffer<T>& working) {
    if (!bf16_activation_storage()) return full_.data();
    T* out = ensure_size(working, n_);
    ops::unpack_bf16(out, packed_.data(), int64_t(n_));
    return out;
  }
  // The kept values (the forward's, or restore()'s) as a product's operand, after keep() or
  // keep_copy(): with bf16 operands its bf16 copy too, which the products then read.
  ops::Operand<T> operand(const T* values) const { return {values, rounded_copy()}; }
  // The kept values as a product's operand in the backward: with bf16 operands the stored bf16 copy
  // itself, without expanding it; otherwise restore(working).
  ops::Operand<T> backward_operand(DeviceBuffer<T>& working) {
    if (bf16_operands()) return {nullptr, packed_.data()};
    return {restore(working)};
  }
  size_t size() const { return n_; }

 private:
  const Bfloat16* rounded_copy() const { return bf16_operands() ? packed_.data() : nullptr; }

  size_t n_ = 0;
  T* working_ = nullptr;
  DeviceBuffer<T> full_;
  DeviceBuffer<Bfloat16> packed_;
};

}  // namespace finemoe
