#include "parallel/mpi_communicator.h"

#include <climits>
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

}  // namespace finemoe
