#pragma once
// Steps that can fail on some ranks only (a file one rank cannot read, a record rank 0 refuses)
// must not leave the other ranks waiting in the next collective: every rank runs the step, then
// all agree whether anyone failed, and every rank leaves with the same exit code.
#include <stdexcept>
#include <string>

#include "parallel/communicator.h"

namespace finemoe {

// Thrown on every rank when a step failed anywhere. Only the lowest failing rank is the
// reporter: its what() is the original message; the others say which rank failed.
class AgreedFailure : public std::runtime_error {
 public:
  AgreedFailure(const std::string& what, int exit_code, bool reporter)
      : std::runtime_error(what), exit_code_(exit_code), reporter_(reporter) {}
  int exit_code() const { return exit_code_; }
  bool reporter() const { return reporter_; }

 private:
  int exit_code_;
  bool reporter_;
};

// Runs `step` on every rank of `comm` (collective). A failure anywhere becomes AgreedFailure on
// every rank, with exit code 2 for InputError and 1 for other errors.
template <typename F>
void run_agreed(Communicator& comm, F&& step);

// The lowest rank that reports `failed`, with the exit code it asked for; {-1, 0} if none.
std::pair<int, int> lowest_failure(Communicator& comm, bool failed, int exit_code);

}  // namespace finemoe

#include "util/check.h"

template <typename F>
void finemoe::run_agreed(Communicator& comm, F&& step) {
  std::string message;
  int code = 0;
  try {
    step();
  } catch (const InputError& e) {
    message = e.what(), code = 2;
  } catch (const std::exception& e) {
    message = e.what(), code = 1;
  }
  const auto [rank, exit_code] = lowest_failure(comm, code != 0, code);
  if (rank < 0) return;
  if (rank == comm.rank()) throw AgreedFailure(message, exit_code, true);
  throw AgreedFailure("rank " + std::to_string(rank) + " failed", exit_code, false);
}
