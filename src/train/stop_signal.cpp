#include "train/stop_signal.h"

#include <signal.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstring>

#include "util/check.h"

namespace finemoe {
namespace {

// Written only by the handler (async-signal-safe: a lock-free store to a sig_atomic_t).
volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void record_stop_signal(int signo) { g_stop_signal = signo; }

}  // namespace

void install_stop_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = record_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  for (int signo : {SIGUSR1, SIGTERM})
    if (sigaction(signo, &action, nullptr) != 0)
      throw RuntimeFailure(std::string("cannot install the handler for ") + strsignal(signo) + ": " +
                           std::strerror(errno));
}

int stop_signal_received() { return g_stop_signal; }

bool stop_requested_anywhere(Communicator& world) {
  const int32_t mine = g_stop_signal != 0 ? 1 : 0;
  return world.max(mine) != 0;
}

void clear_stop_request() { g_stop_signal = 0; }

}  // namespace finemoe
