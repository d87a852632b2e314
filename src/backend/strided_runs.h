#pragma once
// The contiguous runs of a strided batch of row-major matrices, for elementwise passes over them.
#include <cstdint>

namespace finemoe {

// f(offset, count) over the elements of `batch` row-major m x n matrices with leading dimension ld
// and batch stride `stride` (offsets in elements from the first matrix): one run when they are
// packed, one per matrix when only the rows are, else one per row.
template <typename F>
void for_each_strided_run(int m, int n, int ld, int64_t stride, int batch, F&& f) {
  if (m <= 0 || n <= 0 || batch <= 0) return;
  if (ld == n && (batch == 1 || stride == int64_t(m) * n)) return f(int64_t(0), int64_t(batch) * m * n);
  for (int b = 0; b < batch; ++b) {
    if (ld == n) {
      f(b * stride, int64_t(m) * n);
      continue;
    }
    for (int r = 0; r < m; ++r) f(b * stride + int64_t(r) * ld, int64_t(n));
  }
}

}  // namespace finemoe
