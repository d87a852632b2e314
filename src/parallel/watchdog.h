#pragma once
// Watchdog for collectives that never complete (parallel.watchdog_s). A rank that stops taking
// part in the collectives (stuck in a loop, a dead device, a deadlock) leaves every other rank
// waiting forever inside MPI; this turns the silent hang into a report and MPI_Abort.
//
// Design (one thread per rank, one side communicator):
//   - The trainer marks the phases of its step that hold collectives: `auto p = wd.phase("step 5:
//     forward, backward and gradient reduction")`. Every rank passes the same phases in the same
//     order, so a phase's sequence number identifies it on every rank.
//   - Each rank's watchdog thread wakes every ~0.1 s (MPI_THREAD_MULTIPLE; it only uses its own
//     duplicate of the world communicator). It answers status queries from other ranks' watchdogs
//     (MPI_Iprobe + a small non-blocking reply: sequence number, phase name, inside or after it,
//     since when), and checks its own rank: inside one phase for longer than the limit?
//   - On a timeout it queries every other rank, waits a few seconds for the answers (answering
//     the others' queries meanwhile: all waiting ranks time out at about the same time), and
//     prints one report to stderr: the phase it waits in and, for every rank that has not entered
//     that phase, "missing: rank R (...)" with where that rank is (the last phase it left and how
//     long ago, or the earlier phase it is stuck in); a rank that does not answer is listed as
//     missing too. Then MPI_Abort ends the whole job (exit code 1). The run record stays
//     `running` (classified incomplete) and the run can resume from its last checkpoint.
//   - The limit covers a whole phase, computation included: set it well above the slowest step.
//   - Disabled for timeout <= 0 and for a world of one rank. Without MPI_THREAD_MULTIPLE the
//     thread cannot query the others: the report then names the phase only.
//
// Test hook: with FINEMOE_TEST_STALL_RANK=r and FINEMOE_TEST_STALL_STEP=s in the environment,
// stall_for_test(s) on world rank r sleeps for an hour (tests of the watchdog itself).
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <thread>

namespace finemoe {

class Watchdog {
 public:
  // Collective over `world` (duplicates it). timeout_s <= 0 disables the watchdog.
  Watchdog(MPI_Comm world, double timeout_s);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  bool enabled() const { return thread_.joinable(); }

  // A phase of collectives; the watchdog times it from construction to destruction.
  class Phase {
   public:
    ~Phase() {
      if (owner_) owner_->leave();
    }
    Phase(Phase&& other) noexcept : owner_(other.owner_) { other.owner_ = nullptr; }
    Phase(const Phase&) = delete;
    Phase& operator=(const Phase&) = delete;
    Phase& operator=(Phase&&) = delete;

   private:
    friend class Watchdog;
    explicit Phase(Watchdog* owner) : owner_(owner) {}
    Watchdog* owner_;
  };
  [[nodiscard]] Phase phase(const std::string& name);

  // The test hook (see above); does nothing unless the environment asks for it.
  void stall_for_test(int64_t step) const;

  // What a rank reports about itself (exposed for tests).
  struct Status {
    int64_t seq = 0;        // phases entered so far (the current one included)
    bool inside = false;    // inside phase `seq`, or after it
    double seconds = 0;     // since entering (inside) or leaving it
    std::string name;       // its name
  };
  Status status() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct PendingReply;
  void leave();
  void run();
  void answer_queries();
  void report_and_abort(const Status& mine);

  MPI_Comm side_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  bool can_query_ = false;
  double timeout_s_ = 0;
  int stall_rank_ = -1;
  int64_t stall_step_ = -1;

  mutable std::mutex mutex_;
  int64_t seq_ = 0;
  bool inside_ = false;
  std::string name_ = "start-up";
  Clock::time_point since_ = Clock::now();

  std::mutex wake_mutex_;
  std::condition_variable wake_;
  std::atomic<bool> stop_{false};
  std::list<PendingReply> pending_;  // the watchdog thread's replies in flight
  std::thread thread_;
};

}  // namespace finemoe
