#include "train/host_staged_communicator.h"

#include <algorithm>
#include <numeric>

#include "backend/compute.h"

namespace finemoe {
namespace {

// Bytes a layout's pieces reach into their buffer.
size_t extent_bytes(const BlockLayout& layout, DType type, int64_t unit) {
  int64_t end = 0;
  for (const BlockLayout::Block& b : layout.blocks) end = std::max(end, b.offset + b.count);
  return size_t(end) * size_t(unit) * dtype_size(type);
}

// `data` on the host: itself, or a staged copy of its first `bytes` (copied in when `load`).
uint8_t* staged(const void* data, size_t bytes, std::vector<uint8_t>& stage, bool load) {
  if (!is_device_memory(data)) return static_cast<uint8_t*>(const_cast<void*>(data));
  stage.resize(bytes);
  if (load) copy_to_host(stage.data(), static_cast<const uint8_t*>(data), bytes);
  return stage.data();
}

void unstage(void* data, const uint8_t* host, size_t bytes) {
  if (host != data) copy_to_device(static_cast<uint8_t*>(data), host, bytes);
}

class StagedPending final : public PendingCollective {
 public:
  StagedPending(void* device, std::vector<uint8_t> host, std::unique_ptr<PendingCollective> inner)
      : device_(device), host_(std::move(host)), inner_(std::move(inner)) {}
  void wait() override {
    inner_->wait();
    copy_to_device(static_cast<uint8_t*>(device_), host_.data(), host_.size());
  }

 private:
  void* device_;
  std::vector<uint8_t> host_;
  std::unique_ptr<PendingCollective> inner_;
};

}  // namespace

void HostStagedCommunicator::all_reduce_sum(void* data, size_t count, DType type) {
  const size_t bytes = count * dtype_size(type);
  uint8_t* h = staged(data, bytes, send_stage_, true);
  host_.all_reduce_sum(h, count, type);
  unstage(data, h, bytes);
}

void HostStagedCommunicator::all_reduce_max(void* data, size_t count, DType type) {
  const size_t bytes = count * dtype_size(type);
  uint8_t* h = staged(data, bytes, send_stage_, true);
  host_.all_reduce_max(h, count, type);
  unstage(data, h, bytes);
}

std::unique_ptr<PendingCollective> HostStagedCommunicator::start_all_reduce_sum(void* data, size_t count,
                                                                               DType type) {
  if (!is_device_memory(data)) return host_.start_all_reduce_sum(data, count, type);
  std::vector<uint8_t> host(count * dtype_size(type));  // lives until wait(): one per pending reduction
  copy_to_host(host.data(), static_cast<const uint8_t*>(data), host.size());
  auto inner = host_.start_all_reduce_sum(host.data(), count, type);
  return std::make_unique<StagedPending>(data, std::move(host), std::move(inner));
}

void HostStagedCommunicator::broadcast(void* data, size_t count, DType type, int root) {
  const size_t bytes = count * dtype_size(type);
  uint8_t* h = staged(data, bytes, send_stage_, rank() == root);
  host_.broadcast(h, count, type, root);
  unstage(data, h, bytes);
}

void HostStagedCommunicator::all_gather(const void* send, void* recv, size_t count, DType type) {
  const size_t bytes = count * dtype_size(type);
  const uint8_t* s = staged(send, bytes, send_stage_, true);
  uint8_t* r = staged(recv, bytes * size_t(size()), recv_stage_, false);
  host_.all_gather(s, r, count, type);
  unstage(recv, r, bytes * size_t(size()));
}

void HostStagedCommunicator::all_to_all(const void* send, void* recv, size_t count, DType type) {
  const size_t bytes = count * dtype_size(type) * size_t(size());
  const uint8_t* s = staged(send, bytes, send_stage_, true);
  uint8_t* r = staged(recv, bytes, recv_stage_, false);
  host_.all_to_all(s, r, count, type);
  unstage(recv, r, bytes);
}

void HostStagedCommunicator::all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                                          const std::vector<int64_t>& recv_counts, DType type) {
  const size_t unit = dtype_size(type);
  const size_t send_bytes = size_t(std::accumulate(send_counts.begin(), send_counts.end(), int64_t(0))) * unit;
  const size_t recv_bytes = size_t(std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t(0))) * unit;
  const uint8_t* s = staged(send, send_bytes, send_stage_, true);
  uint8_t* r = staged(recv, recv_bytes, recv_stage_, false);
  host_.all_to_all_v(s, send_counts, r, recv_counts, type);
  unstage(recv, r, recv_bytes);
}

void HostStagedCommunicator::all_to_all_blocks(const void* send, const BlockLayout& send_layout, void* recv,
                                               const BlockLayout& recv_layout, DType type, int64_t unit) {
  const size_t send_bytes = extent_bytes(send_layout, type, unit);
  const size_t recv_bytes = extent_bytes(recv_layout, type, unit);
  const uint8_t* s = staged(send, send_bytes, send_stage_, true);
  // Loaded too: parts of recv outside its pieces must come back unchanged.
  uint8_t* r = staged(recv, recv_bytes, recv_stage_, true);
  host_.all_to_all_blocks(s, send_layout, r, recv_layout, type, unit);
  unstage(recv, r, recv_bytes);
}

}  // namespace finemoe
