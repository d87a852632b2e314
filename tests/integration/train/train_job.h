#pragma once
// Running finemoe-train as a user does, for the integration tests: a job under mpiexec in its own
// process group with its output in a log file. FINEMOE_TRAIN_BIN in the environment replaces the
// binary the tests were built against (e.g. a sanitizer build: scripts/fuzz-sanitized.sh).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace finemoe::test_support {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

inline std::string train_binary() {
  const char* env = std::getenv("FINEMOE_TRAIN_BIN");
  return env && *env ? env : FINEMOE_TRAIN_BIN;
}

inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

inline std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A started `finemoe-train` under mpiexec (its own process group), output to a log file.
class Job {
 public:
  Job(const std::string& args, int ranks, const fs::path& log, int timeout_s) : log_(log) {
    const std::string cmd = "exec timeout -s KILL " + std::to_string(timeout_s) + " " + FINEMOE_MPIEXEC + " -np " +
                            std::to_string(ranks) + " --oversubscribe " + train_binary() + " " + args + " > '" +
                            log.string() + "' 2>&1";
    start_ = Clock::now();
    pid_ = fork();
    if (pid_ == 0) {
      setpgid(0, 0);
      execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~Job() {
    if (pid_ > 0) {
      kill(-pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  // Exit code (-signal when killed by one).
  int wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    elapsed_ = seconds_since(start_);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
  }
  // The rank processes: every descendant of the job whose command is finemoe-train.
  std::vector<pid_t> ranks() const {
    std::vector<pid_t> out, todo{pid_};
    while (!todo.empty()) {
      const pid_t p = todo.back();
      todo.pop_back();
      for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(p) + "/task")) {
        std::istringstream children(read_text(task.path() / "children"));
        for (pid_t c; children >> c;) {
          todo.push_back(c);
          if (read_text("/proc/" + std::to_string(c) + "/cmdline").find("finemoe-train") != std::string::npos &&
              read_text("/proc/" + std::to_string(c) + "/comm").find("finemoe-train") != std::string::npos)
            out.push_back(c);
        }
      }
    }
    return out;
  }
  double elapsed() const { return elapsed_; }
  std::string output() const { return read_text(log_); }

 private:
  fs::path log_;
  pid_t pid_ = -1;
  Clock::time_point start_;
  double elapsed_ = 0;
};

struct Result {
  int exit_code = -1;
  std::string output;
  double seconds = 0;
};

}  // namespace finemoe::test_support
