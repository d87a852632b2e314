#pragma once
// Check macros that name file and line; errors carry a message meant for a person.
#include <sstream>
#include <stdexcept>
#include <string>

namespace finemoe {

// Bad user input (parameter files, command lines, data, checkpoints): reported, exit code 2.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A failure inside the program or a library call it made.
class RuntimeFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail_at(const char* file, int line, const std::string& what);

// The main() of a serial command-line tool: runs `body`, reporting an InputError as
// "<tool>: <message>" (the tool named once) with exit code 2 and any other exception as "<tool>: fatal: <message>" with 1.
int run_tool(const char* tool, int (*body)(int, char**), int argc, char** argv);

}  // namespace finemoe

#define FINEMOE_CHECK(cond, msg)                                                   \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      std::ostringstream finemoe_check_os_;                                        \
      finemoe_check_os_ << "check failed: " #cond ": " << msg;                    \
      ::finemoe::fail_at(__FILE__, __LINE__, finemoe_check_os_.str());             \
    }                                                                              \
  } while (0)
