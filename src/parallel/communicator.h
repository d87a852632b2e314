#pragma once
// Collective operations over one group of ranks. The MPI implementation carries host buffers;
// a device implementation (NCCL) plugs in behind the same interface.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace finemoe {

enum class DType { f32, f64, i32, i64, u8 };

template <typename T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }

size_t dtype_size(DType t);

// A started non-blocking collective; wait() completes it.
class PendingCollective {
 public:
  virtual ~PendingCollective() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  virtual void barrier() = 0;
  virtual void all_reduce_sum(void* data, size_t count, DType type) = 0;
  virtual void all_reduce_max(void* data, size_t count, DType type) = 0;
  virtual std::unique_ptr<PendingCollective> start_all_reduce_sum(void* data, size_t count, DType type) = 0;
  virtual void broadcast(void* data, size_t count, DType type, int root) = 0;
  // Every rank contributes `count` elements; recv holds size() * count, in rank order.
  virtual void all_gather(const void* send, void* recv, size_t count, DType type) = 0;
  // Equal blocks of `count` elements to and from every rank.
  virtual void all_to_all(const void* send, void* recv, size_t count, DType type) = 0;
  // Blocks of per-rank element counts; displacements are the prefix sums of the counts.
  virtual void all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                            const std::vector<int64_t>& recv_counts, DType type) = 0;

  template <typename T>
  void all_reduce_sum(T* data, size_t count) { all_reduce_sum(data, count, dtype_of<T>()); }
  template <typename T>
  T sum(T value) { all_reduce_sum(&value, 1, dtype_of<T>()); return value; }
  template <typename T>
  T max(T value) { all_reduce_max(&value, 1, dtype_of<T>()); return value; }
};

}  // namespace finemoe
