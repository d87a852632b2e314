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

// Contiguous pieces of one buffer, grouped by peer rank: the pieces exchanged with rank r are
// blocks[first[r]] .. blocks[first[r + 1] - 1], in order. Offsets and counts are in units (see
// Communicator::all_to_all_blocks).
struct BlockLayout {
  struct Block {
    int64_t offset = 0;
    int64_t count = 0;
  };
  std::vector<Block> blocks;
  std::vector<size_t> first;  // size() + 1 entries, first[0] == 0

  void clear(int ranks) {
    blocks.clear();
    first.assign(size_t(ranks) + 1, 0);
  }
  // Appends a piece for rank r; pieces must be added rank by rank (r never decreases).
  void add(int r, int64_t offset, int64_t count) {
    blocks.push_back({offset, count});
    for (size_t q = size_t(r) + 1; q < first.size(); ++q) first[q] = blocks.size();
  }
  size_t pieces(int r) const { return first[size_t(r) + 1] - first[size_t(r)]; }
  const Block& piece(int r, size_t k) const { return blocks[first[size_t(r)] + k]; }
};

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
  // All-to-all of pieces placed anywhere in the buffers: the k-th piece this rank sends to rank r
  // (send_layout's k-th piece for r) fills the k-th piece that r receives from this rank
  // (r's recv_layout's k-th piece for this rank), so their counts must agree on both sides (e.g.
  // after an all_to_all of the counts); empty pieces are allowed and move nothing. Offsets and
  // counts are in units of `unit` elements of `type` (rows of a row-major matrix: unit = width).
  // Pieces to and from this rank are copied locally. Lets a caller receive every (source, block)
  // straight into its final place instead of receiving rank-contiguous blocks and regrouping them.
  // Buffer parts not covered by a recv piece are left unchanged.
  virtual void all_to_all_blocks(const void* send, const BlockLayout& send_layout, void* recv,
                                 const BlockLayout& recv_layout, DType type, int64_t unit) = 0;

  template <typename T>
  void all_reduce_sum(T* data, size_t count) { all_reduce_sum(data, count, dtype_of<T>()); }
  template <typename T>
  T sum(T value) { all_reduce_sum(&value, 1, dtype_of<T>()); return value; }
  template <typename T>
  T max(T value) { all_reduce_max(&value, 1, dtype_of<T>()); return value; }
};

}  // namespace finemoe
