#include "kernels/cuda_check.h"

#include <string>

#include "util/check.h"

namespace finemoe::cuda {

void cuda_fail(cudaError_t code, const char* call, const char* file, int line) {
  fail_at(file, line,
          std::string(call) + " failed: " + cudaGetErrorName(code) + ": " + cudaGetErrorString(code));
}

}  // namespace finemoe::cuda
