#include "backend/compute.h"
int main() {
  finemoe::DeviceBuffer<float> b(4);
  float sum = 0;
  for (float x : b) sum += x;  // must not compile: no host iteration
  return int(sum);
}
