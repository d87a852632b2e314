#include "backend/compute.h"
int main() {
  finemoe::DeviceBuffer<float> b(4);
  b[0] = 1.0f;  // must not compile: no host element access
  return 0;
}
