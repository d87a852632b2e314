#include "parallel/mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "parallel/mpi_check.h"
#include "util/check.h"

namespace finemoe {

void mpi_fail(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  std::ostringstream os;
  os << call << " failed: " << std::string(text, len);
  fail_at(file, line, os.str());
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
  }
  return 0;
}

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i32: return MPI_INT32_T;
    case DType::i64: return MPI_INT64_T;
    case DType::u8: return MPI_UINT8_T;
  }
  return MPI_DATATYPE_NULL;
}

namespace {

class MpiPending final : public PendingCollective {
 public:
  explicit MpiPending(MPI_Request r) : request_(r) {}
  ~MpiPending() override {
    if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }
  void wait() override { MPI_CHECK(MPI_Wait(&request_, MPI_STATUS_IGNORE)); }

 private:
  MPI_Request request_;
};

int as_int(size_t n) {
  FINEMOE_CHECK(n <= static_cast<size_t>(INT_MAX), "MPI count " << n << " exceeds INT_MAX");
  return static_cast<int>(n);
}

constexpr int kBlocksTag = 7301;
constexpr int64_t kMaxMessageElems = int64_t(1) << 30;  // elements per message: fits an int

// Pieces exchanged with one peer travel as one message each when they average at least this many
// bytes (FINEMOE_A2A_PIECE_BYTES overrides; it must be the same on every rank). Below, per-message
// costs (a rendezvous each) outweigh the extra pack / unpack copy of one message per peer.
int64_t piece_message_bytes() {
  static const int64_t bytes = [] {
    const char* e = std::getenv("FINEMOE_A2A_PIECE_BYTES");
    return e && *e ? int64_t(std::atoll(e)) : int64_t(64) << 10;
  }();
  return bytes;
}

struct PeerPieces {
  int64_t units = 0;      // total
  int64_t non_empty = 0;  // pieces with a count > 0
  bool adjacent = true;   // the non-empty pieces follow each other in the buffer
  int64_t start = 0;      // offset of the first non-empty piece
};

PeerPieces peer_pieces(const BlockLayout& layout, int r) {
  PeerPieces p;
  int64_t next = -1;
  for (size_t k = 0; k < layout.pieces(r); ++k) {
    const auto& b = layout.piece(r, k);
    FINEMOE_CHECK(b.count >= 0 && b.offset >= 0, "all_to_all_blocks: negative piece");
    if (b.count == 0) continue;
    if (p.non_empty == 0) p.start = b.offset;
    else if (b.offset != next) p.adjacent = false;
    next = b.offset + b.count;
    p.units += b.count;
    ++p.non_empty;
  }
  return p;
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm) : comm_(comm) {
  MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  MPI_CHECK(MPI_Comm_size(comm_, &size_));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::barrier() { MPI_CHECK(MPI_Barrier(comm_)); }

void MpiCommunicator::all_reduce_sum(void* data, size_t count, DType type) {
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data, as_int(count), mpi_type(type), MPI_SUM, comm_));
}

void MpiCommunicator::all_reduce_max(void* data, size_t count, DType type) {
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data, as_int(count), mpi_type(type), MPI_MAX, comm_));
}

std::unique_ptr<PendingCollective> MpiCommunicator::start_all_reduce_sum(void* data, size_t count,
                                                                         DType type) {
  MPI_Request request;
  MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, as_int(count), mpi_type(type), MPI_SUM, comm_, &request));
  return std::make_unique<MpiPending>(request);
}

void MpiCommunicator::broadcast(void* data, size_t count, DType type, int root) {
  MPI_CHECK(MPI_Bcast(data, as_int(count), mpi_type(type), root, comm_));
}

void MpiCommunicator::all_gather(const void* send, void* recv, size_t count, DType type) {
  MPI_CHECK(MPI_Allgather(send, as_int(count), mpi_type(type), recv, as_int(count), mpi_type(type), comm_));
}

void MpiCommunicator::all_to_all(const void* send, void* recv, size_t count, DType type) {
  MPI_CHECK(MPI_Alltoall(send, as_int(count), mpi_type(type), recv, as_int(count), mpi_type(type), comm_));
}

void MpiCommunicator::all_to_all_v(const void* send, const std::vector<int64_t>& send_counts, void* recv,
                                   const std::vector<int64_t>& recv_counts, DType type) {
  FINEMOE_CHECK(send_counts.size() == size_t(size_) && recv_counts.size() == size_t(size_),
                "all_to_all_v needs one count per rank");
  std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
  size_t s_off = 0, r_off = 0;
  for (int r = 0; r < size_; ++r) {
    sc[r] = as_int(send_counts[r]);
    rc[r] = as_int(recv_counts[r]);
    sd[r] = as_int(s_off);
    rd[r] = as_int(r_off);
    s_off += send_counts[r];
    r_off += recv_counts[r];
  }
  MPI_CHECK(MPI_Alltoallv(send, sc.data(), sd.data(), mpi_type(type), recv, rc.data(), rd.data(),
                          mpi_type(type), comm_));
}

void MpiCommunicator::all_to_all_blocks(const void* send, const BlockLayout& send_layout, void* recv,
                                        const BlockLayout& recv_layout, DType type, int64_t unit) {
  FINEMOE_CHECK(send_layout.first.size() == size_t(size_) + 1 && recv_layout.first.size() == size_t(size_) + 1,
                "all_to_all_blocks needs pieces grouped by " << size_ << " ranks");
  FINEMOE_CHECK(unit >= 1, "all_to_all_blocks: unit " << unit);
  const size_t unit_bytes = size_t(unit) * dtype_size(type);
  const MPI_Datatype mt = mpi_type(type);
  const int64_t threshold = piece_message_bytes();
  const auto* s = static_cast<const uint8_t*>(send);
  auto* d = static_cast<uint8_t*>(recv);
  // Whether the pieces between a pair travel one message each: a function of their counts only,
  // which both ends share (this rank's send pieces to r are r's receive pieces from it).
  const auto per_piece = [&](const PeerPieces& p) {
    return p.non_empty > 1 && int64_t(p.units * unit_bytes) >= threshold * p.non_empty;
  };
  const auto post = [&](bool is_send, const uint8_t* at, int64_t units, int r) {
    int64_t n = units * unit;
    while (n > 0) {
      const int c = int(std::min(n, kMaxMessageElems));
      requests_.emplace_back();
      if (is_send)
        MPI_CHECK(MPI_Isend(at, c, mt, r, kBlocksTag, comm_, &requests_.back()));
      else
        MPI_CHECK(MPI_Irecv(const_cast<uint8_t*>(at), c, mt, r, kBlocksTag, comm_, &requests_.back()));
      at += size_t(c) * dtype_size(type);
      n -= c;
    }
  };
  // Scratch for packed messages whose pieces are not adjacent, sized before any pointer into it.
  std::vector<PeerPieces> sp(static_cast<size_t>(size_)), rp(static_cast<size_t>(size_));
  std::vector<size_t> pack_at(static_cast<size_t>(size_), 0), unpack_at(static_cast<size_t>(size_), SIZE_MAX);
  size_t pack_bytes = 0, unpack_bytes = 0;
  for (int r = 0; r < size_; ++r) {
    if (r == rank_) continue;
    sp[r] = peer_pieces(send_layout, r);
    rp[r] = peer_pieces(recv_layout, r);
    if (!per_piece(sp[r]) && !sp[r].adjacent) {
      pack_at[r] = pack_bytes;
      pack_bytes += size_t(sp[r].units) * unit_bytes;
    }
    if (!per_piece(rp[r]) && !rp[r].adjacent) {
      unpack_at[r] = unpack_bytes;
      unpack_bytes += size_t(rp[r].units) * unit_bytes;
    }
  }
  if (pack_scratch_.size() < pack_bytes) pack_scratch_.resize(pack_bytes);
  if (unpack_scratch_.size() < unpack_bytes) unpack_scratch_.resize(unpack_bytes);
  requests_.clear();
  // Receives first (peers in ring order from this rank), then sends, then the local pieces while
  // the messages are under way.
  for (int i = 1; i < size_; ++i) {
    const int r = (rank_ + size_ - i) % size_;
    const PeerPieces& p = rp[r];
    if (p.units == 0) continue;
    if (per_piece(p)) {
      for (size_t k = 0; k < recv_layout.pieces(r); ++k) {
        const auto& b = recv_layout.piece(r, k);
        if (b.count > 0) post(false, d + size_t(b.offset) * unit_bytes, b.count, r);
      }
    } else if (p.adjacent) {
      post(false, d + size_t(p.start) * unit_bytes, p.units, r);
    } else {
      post(false, unpack_scratch_.data() + unpack_at[r], p.units, r);
    }
  }
  for (int i = 1; i < size_; ++i) {
    const int r = (rank_ + i) % size_;
    const PeerPieces& p = sp[r];
    if (p.units == 0) continue;
    if (per_piece(p)) {
      for (size_t k = 0; k < send_layout.pieces(r); ++k) {
        const auto& b = send_layout.piece(r, k);
        if (b.count > 0) post(true, s + size_t(b.offset) * unit_bytes, b.count, r);
      }
    } else if (p.adjacent) {
      post(true, s + size_t(p.start) * unit_bytes, p.units, r);
    } else {
      uint8_t* at = pack_scratch_.data() + pack_at[r];
      for (size_t k = 0; k < send_layout.pieces(r); ++k) {
        const auto& b = send_layout.piece(r, k);
        const size_t bytes = size_t(b.count) * unit_bytes;
        if (bytes) std::memcpy(at, s + size_t(b.offset) * unit_bytes, bytes);
        at += bytes;
      }
      post(true, pack_scratch_.data() + pack_at[r], p.units, r);
    }
  }
  FINEMOE_CHECK(send_layout.pieces(rank_) == recv_layout.pieces(rank_),
                "all_to_all_blocks: " << send_layout.pieces(rank_) << " pieces to self, "
                                      << recv_layout.pieces(rank_) << " from self");
  for (size_t k = 0; k < send_layout.pieces(rank_); ++k) {
    const auto& a = send_layout.piece(rank_, k);
    const auto& b = recv_layout.piece(rank_, k);
    FINEMOE_CHECK(a.count == b.count, "all_to_all_blocks: piece " << k << " to self has " << a.count
                                                                   << " units, received as " << b.count);
    if (a.count > 0) std::memcpy(d + size_t(b.offset) * unit_bytes, s + size_t(a.offset) * unit_bytes,
                                 size_t(a.count) * unit_bytes);
  }
  if (!requests_.empty())
    MPI_CHECK(MPI_Waitall(int(requests_.size()), requests_.data(), MPI_STATUSES_IGNORE));
  for (int r = 0; r < size_; ++r) {
    if (r == rank_ || unpack_at[r] == SIZE_MAX) continue;
    const uint8_t* at = unpack_scratch_.data() + unpack_at[r];
    for (size_t k = 0; k < recv_layout.pieces(r); ++k) {
      const auto& b = recv_layout.piece(r, k);
      const size_t bytes = size_t(b.count) * unit_bytes;
      if (bytes) std::memcpy(d + size_t(b.offset) * unit_bytes, at, bytes);
      at += bytes;
    }
  }
}

}  // namespace finemoe
