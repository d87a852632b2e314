#include "model/moe/token_rows.h"

#include "backend/device_dispatch.h"
#include "model/moe/dispatcher.h"
#ifdef FINEMOE_WITH_CUDA
#include "kernels/permute.h"
#endif

namespace finemoe::moe::rows {

template <typename T>
void gather(const T* x, const int32_t* rows, int64_t n, int width, T* out) {
  FINEMOE_ON_DEVICE_RETURN(cuda::gather_rows<float>(x, rows, n, width, out, ops::device::compute_stream()))
  gather_rows<T>(x, rows, n, width, out);
}

template <typename T>
void combine(const T* back, const int32_t* rows, const T* gate, int64_t n, int width, T* y) {
  FINEMOE_ON_DEVICE_RETURN(cuda::combine_rows<float>(back, rows, gate, n, width, y, ops::device::compute_stream()))
  combine_rows<T>(back, rows, gate, n, width, y);
}

template <typename T>
void combine_backward(const T* dy, const T* back, const int32_t* rows, const T* gate, int64_t n, int width,
                      T* dback, T* dgate) {
  FINEMOE_ON_DEVICE_RETURN(cuda::combine_rows_backward<float>(dy, back, rows, gate, n, width, dback, dgate,
                                                            ops::device::compute_stream()))
  combine_rows_backward<T>(dy, back, rows, gate, n, width, dback, dgate);
}

template <typename T>
void scatter_add(const T* dout, const int32_t* rows, int64_t n, int width, T* dx) {
  FINEMOE_ON_DEVICE_RETURN(cuda::scatter_add_rows<float>(dout, rows, n, width, dx, ops::device::compute_stream()))
  scatter_add_rows<T>(dout, rows, n, width, dx);
}


#define FINEMOE_TOKEN_ROWS(T)                                                                        \
  template void gather<T>(const T*, const int32_t*, int64_t, int, T*);                              \
  template void combine<T>(const T*, const int32_t*, const T*, int64_t, int, T*);                   \
  template void combine_backward<T>(const T*, const T*, const int32_t*, const T*, int64_t, int, T*, T*); \
  template void scatter_add<T>(const T*, const int32_t*, int64_t, int, T*);
FINEMOE_TOKEN_ROWS(float)
FINEMOE_TOKEN_ROWS(double)
#undef FINEMOE_TOKEN_ROWS

}  // namespace finemoe::moe::rows
