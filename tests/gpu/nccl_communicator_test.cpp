// The NCCL communicator on device buffers, and device selection; run under mpiexec (written for any
// rank count; on a one-GPU machine NCCL runs at world size 1, where all-to-all is the identity).
#include <mpi.h>

#include <numeric>

#include "gpu_test_support.h"
#include "parallel/nccl_communicator.h"
#include "util/check.h"

namespace finemoe::gpu_test {
namespace {

class NcclCommunicatorTest : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    cuda::select_device(MPI_COMM_WORLD, -1);
    comm_ = std::make_unique<NcclCommunicator>(MPI_COMM_WORLD);
  }
  std::unique_ptr<NcclCommunicator> comm_;
};

TEST_F(NcclCommunicatorTest, SelectsTheNodeLocalDeviceOrTheOverride) {
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int local = 0;
  MPI_Comm_rank(node, &local);
  MPI_Comm_free(&node);
  const int count = cuda::cuda_device_count();
  EXPECT_EQ(cuda::select_device(MPI_COMM_WORLD, -1), local % count);
  EXPECT_EQ(cuda::select_device(MPI_COMM_WORLD, count - 1), count - 1);
  EXPECT_THROW(cuda::select_device(MPI_COMM_WORLD, count), InputError);
  cuda::select_device(MPI_COMM_WORLD, -1);
}

TEST_F(NcclCommunicatorTest, AllToAllVDeliversEachBlock) {
  const int P = comm_->size(), me = comm_->rank();
  // Rank s sends (s + r) % 3 + 1 rows of 5 values to rank r; value = 1000 s + 100 r + index.
  auto rows = [](int s, int r) { return int64_t((s + r) % 3 + 1); };
  std::vector<int64_t> send_counts(P), recv_counts(P);
  std::vector<float> send, expected;
  for (int r = 0; r < P; ++r) {
    send_counts[r] = rows(me, r) * 5;
    recv_counts[r] = rows(r, me) * 5;
    for (int64_t i = 0; i < send_counts[r]; ++i) send.push_back(float(1000 * me + 100 * r + i));
    for (int64_t i = 0; i < recv_counts[r]; ++i) expected.push_back(float(1000 * r + 100 * me + i));
  }
  auto dev_send = on_device(send);
  cuda::DeviceBuffer<float> dev_recv(expected.size());
  comm_->all_to_all_v(dev_send.data(), send_counts, dev_recv.data(), recv_counts, DType::f32);
  CUDA_CHECK(cudaStreamSynchronize(comm_->stream()));
  EXPECT_EQ(dev_recv.download(), expected);
  if (P == 1) {
    EXPECT_EQ(dev_recv.download(), send);  // the identity
  }
}

TEST_F(NcclCommunicatorTest, AllToAllOnHostCountsIsStaged) {
  const int P = comm_->size(), me = comm_->rank();
  std::vector<int64_t> send(P), recv(P);
  for (int r = 0; r < P; ++r) send[r] = 10 * me + r;
  comm_->all_to_all(send.data(), recv.data(), 1, DType::i64);
  for (int r = 0; r < P; ++r) EXPECT_EQ(recv[r], 10 * r + me);
}

TEST_F(NcclCommunicatorTest, AllReduceBlockingAndStarted) {
  const int P = comm_->size(), me = comm_->rank();
  const size_t n = 1000;
  std::vector<float> x(n), sum(n, 0.0f);
  for (size_t i = 0; i < n; ++i) x[i] = float(me + 1) * float(i);
  for (int r = 0; r < P; ++r)
    for (size_t i = 0; i < n; ++i) sum[i] += float(r + 1) * float(i);
  auto dev_x = on_device(x);
  comm_->all_reduce_sum(dev_x.data(), n, DType::f32);
  CUDA_CHECK(cudaStreamSynchronize(comm_->stream()));
  EXPECT_EQ(dev_x.download(), sum);

  auto dev_y = on_device(x);
  auto pending = comm_->start_all_reduce_sum(dev_y.data(), n, DType::f32);
  pending->wait();
  CUDA_CHECK(cudaStreamSynchronize(comm_->stream()));
  EXPECT_EQ(dev_y.download(), sum);

  EXPECT_EQ(comm_->sum(int64_t(me + 1)), int64_t(P) * (P + 1) / 2);  // host value, staged
  EXPECT_EQ(comm_->max(double(me)), double(P - 1));
}

TEST_F(NcclCommunicatorTest, BroadcastAllGatherBarrier) {
  const int P = comm_->size(), me = comm_->rank();
  std::vector<int32_t> mine(4, me), gathered_expected;
  for (int r = 0; r < P; ++r) gathered_expected.insert(gathered_expected.end(), 4, r);
  auto dev_mine = on_device(mine);
  cuda::DeviceBuffer<int32_t> dev_all(size_t(4) * P);
  comm_->all_gather(dev_mine.data(), dev_all.data(), 4, DType::i32);
  comm_->broadcast(dev_mine.data(), 4, DType::i32, P - 1);
  comm_->barrier();
  EXPECT_EQ(dev_all.download(), gathered_expected);
  EXPECT_EQ(dev_mine.download(), std::vector<int32_t>(4, P - 1));
}

TEST_F(NcclCommunicatorTest, SplitFormsGroupsByColor) {
  const int P = comm_->size(), me = comm_->rank();
  // Expert-parallel-like groups of two consecutive ranks (one group of one at P = 1).
  auto group = comm_->split(me / 2, me);
  ASSERT_TRUE(group);
  EXPECT_EQ(group->size(), std::min(2, P - (me / 2) * 2));
  EXPECT_EQ(group->rank(), me % 2);
  EXPECT_EQ(group->sum(int32_t(1)), group->size());
}

}  // namespace
}  // namespace finemoe::gpu_test
