#include "parallel/watchdog.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <list>
#include <sstream>
#include <vector>

#include "parallel/mpi_check.h"

namespace finemoe {
namespace {

constexpr int kQueryTag = 1;
constexpr int kReplyTag = 2;

// A status on the wire: fixed size, so every message is one small eager send.
struct WireStatus {
  int64_t seq;
  int64_t inside;
  double seconds;
  char name[232];
};
static_assert(sizeof(WireStatus) == 256, "fixed-size status message");

WireStatus to_wire(const Watchdog::Status& s) {
  WireStatus w{};
  w.seq = s.seq;
  w.inside = s.inside ? 1 : 0;
  w.seconds = s.seconds;
  std::strncpy(w.name, s.name.c_str(), sizeof w.name - 1);
  return w;
}

long env_long(const char* name, long fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  return end && *end == '\0' ? x : fallback;
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", s);
  return buf;
}

}  // namespace

Watchdog::Watchdog(MPI_Comm world, double timeout_s) : timeout_s_(timeout_s) {
  MPI_CHECK(MPI_Comm_rank(world, &rank_));
  MPI_CHECK(MPI_Comm_size(world, &size_));
  stall_rank_ = int(env_long("FINEMOE_TEST_STALL_RANK", -1));
  stall_step_ = env_long("FINEMOE_TEST_STALL_STEP", -1);
  if (timeout_s <= 0 || size_ == 1) return;
  int provided = MPI_THREAD_SINGLE;
  MPI_CHECK(MPI_Query_thread(&provided));
  can_query_ = provided == MPI_THREAD_MULTIPLE;
  MPI_CHECK(MPI_Comm_dup(world, &side_));
  thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  if (!thread_.joinable()) return;
  stop_ = true;
  wake_.notify_all();
  thread_.join();
  // Freeing a communicator is collective; on an error path (one rank unwinding towards
  // MPI_Abort) it must not wait for the others, so the communicator is left to MPI_Finalize.
  if (std::uncaught_exceptions() == 0) MPI_Comm_free(&side_);
}

Watchdog::Phase Watchdog::phase(const std::string& name) {
  if (!enabled()) return Phase(nullptr);
  std::lock_guard<std::mutex> lock(mutex_);
  ++seq_;
  inside_ = true;
  name_ = name;
  since_ = Clock::now();
  return Phase(this);
}

void Watchdog::leave() {
  std::lock_guard<std::mutex> lock(mutex_);
  inside_ = false;
  since_ = Clock::now();
}

Watchdog::Status Watchdog::status() const {
  std::lock_guard<std::mutex> lock(mutex_);
  Status s;
  s.seq = seq_;
  s.inside = inside_;
  s.seconds = std::chrono::duration<double>(Clock::now() - since_).count();
  s.name = name_;
  return s;
}

void Watchdog::stall_for_test(int64_t step) const {
  if (rank_ != stall_rank_ || step != stall_step_) return;
  std::fprintf(stderr, "rank %d: FINEMOE_TEST_STALL_RANK: stalling before step %lld\n", rank_, (long long)step);
  std::fflush(stderr);
  for (int i = 0; i < 3600; ++i) std::this_thread::sleep_for(std::chrono::seconds(1));
}

// A reply in flight (its buffer stays put until the send completes).
struct Watchdog::PendingReply {
  WireStatus status;
  MPI_Request request = MPI_REQUEST_NULL;
};

void Watchdog::answer_queries() {
  auto& pending = pending_;
  for (auto it = pending.begin(); it != pending.end();) {
    int done = 0;
    MPI_CHECK(MPI_Test(&it->request, &done, MPI_STATUS_IGNORE));
    it = done ? pending.erase(it) : std::next(it);
  }
  for (;;) {
    int flag = 0;
    MPI_Status st;
    MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, kQueryTag, side_, &flag, &st));
    if (!flag) return;
    int64_t their_seq = 0;
    MPI_CHECK(MPI_Recv(&their_seq, 1, MPI_INT64_T, st.MPI_SOURCE, kQueryTag, side_, MPI_STATUS_IGNORE));
    pending.push_back(PendingReply{to_wire(status()), MPI_REQUEST_NULL});
    MPI_CHECK(MPI_Isend(&pending.back().status, sizeof(WireStatus), MPI_BYTE, st.MPI_SOURCE, kReplyTag, side_,
                        &pending.back().request));
  }
}

void Watchdog::run() {
  const auto poll = std::chrono::duration<double>(std::clamp(timeout_s_ / 10, 0.01, 0.1));
  while (!stop_) {
    if (can_query_) answer_queries();
    const Status mine = status();
    if (mine.inside && mine.seconds >= timeout_s_) report_and_abort(mine);
    std::unique_lock<std::mutex> lock(wake_mutex_);
    wake_.wait_for(lock, poll, [this] { return stop_.load(); });
  }
  for (auto& p : pending_) {
    MPI_Cancel(&p.request);
    MPI_Request_free(&p.request);
  }
  pending_.clear();
}

void Watchdog::report_and_abort(const Status& mine) {
  std::ostringstream os;
  os << "finemoe watchdog on rank " << rank_ << ": " << quoted(mine.name) << " has not completed after "
     << seconds_text(mine.seconds) << " (parallel.watchdog_s = " << timeout_s_ << "); aborting the job\n";
  if (!can_query_) {
    os << "  (MPI without MPI_THREAD_MULTIPLE: the other ranks cannot be asked where they are)\n";
  } else {
    // Ask every other rank where it is; keep answering the others' questions while waiting.
    std::vector<WireStatus> replies(static_cast<size_t>(size_));
    std::vector<MPI_Request> recv(size_t(size_), MPI_REQUEST_NULL), send(size_t(size_), MPI_REQUEST_NULL);
    std::vector<int> answered(size_t(size_), 0);
    int64_t query = mine.seq;
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      MPI_CHECK(MPI_Irecv(&replies[r], sizeof(WireStatus), MPI_BYTE, r, kReplyTag, side_, &recv[r]));
      MPI_CHECK(MPI_Isend(&query, 1, MPI_INT64_T, r, kQueryTag, side_, &send[r]));
    }
    const double wait_s = std::clamp(timeout_s_, 1.0, 5.0);
    const auto start = Clock::now();
    int outstanding = size_ - 1;
    while (outstanding > 0 && std::chrono::duration<double>(Clock::now() - start).count() < wait_s) {
      answer_queries();
      for (int r = 0; r < size_; ++r) {
        if (r == rank_ || answered[r]) continue;
        MPI_CHECK(MPI_Test(&recv[r], &answered[r], MPI_STATUS_IGNORE));
        if (answered[r]) --outstanding;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::vector<int> with_us;
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      if (!answered[r]) {
        os << "  missing: rank " << r << " (no answer within " << seconds_text(wait_s) << ")\n";
        continue;
      }
      const WireStatus& s = replies[r];
      const std::string name(s.name, strnlen(s.name, sizeof s.name));
      if (s.seq > mine.seq || (s.seq == mine.seq && s.inside)) {
        with_us.push_back(r);
      } else if (s.seq == mine.seq) {
        os << "  rank " << r << " has done its part of it (left " << seconds_text(s.seconds) << " ago)\n";
      } else if (s.inside) {
        os << "  missing: rank " << r << " (still inside " << quoted(name) << " for " << seconds_text(s.seconds)
           << ")\n";
      } else {
        os << "  missing: rank " << r << " (outside any collective: left " << quoted(name) << " "
           << seconds_text(s.seconds) << " ago)\n";
      }
    }
    if (!with_us.empty()) {
      os << "  waiting in it or later as well: rank" << (with_us.size() > 1 ? "s" : "");
      for (size_t i = 0; i < with_us.size(); ++i) os << (i ? ", " : " ") << with_us[i];
      os << "\n";
    }
  }
  std::fputs(os.str().c_str(), stderr);
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
}

}  // namespace finemoe
