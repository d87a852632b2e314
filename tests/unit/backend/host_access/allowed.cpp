// The control: the named transfers compile (so a failure of the others is the accessor's absence).
#include <vector>

#include "backend/compute.h"

int main() {
  finemoe::DeviceBuffer<float> b(4);
  std::vector<float> host(4, 1.0f);
  finemoe::copy_to_device(b.data(), host.data(), host.size());
  return int(finemoe::to_host(b).size()) - 4;
}
