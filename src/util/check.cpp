#include "util/check.h"

namespace finemoe {

void fail_at(const char* file, int line, const std::string& what) {
  std::ostringstream os;
  os << file << ":" << line << ": " << what;
  throw RuntimeFailure(os.str());
}

}  // namespace finemoe
