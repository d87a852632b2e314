#include <vector>

#include "backend/compute.h"
int main() {
  finemoe::DeviceBuffer<float> b(4);
  std::vector<float> v(b.begin(), b.end());  // must not compile: no host iterators
  finemoe::DeviceBuffer<float> c = b;         // nor an implicit copy
  return int(v.size());
}
