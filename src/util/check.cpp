#include "util/check.h"

#include <iostream>

namespace finemoe {

void fail_at(const char* file, int line, const std::string& what) {
  std::ostringstream os;
  os << file << ":" << line << ": " << what;
  throw RuntimeFailure(os.str());
}

int run_tool(const char* tool, int (*body)(int, char**), int argc, char** argv) {
  try {
    return body(argc, argv);
  } catch (const InputError& e) {
    const std::string what = e.what(), named = std::string(tool) + ":";
    std::cerr << (what.rfind(named, 0) == 0 ? "" : named + " ") << what << "\n";  // named once
    return 2;
  } catch (const std::exception& e) {
    std::cerr << tool << ": fatal: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace finemoe
