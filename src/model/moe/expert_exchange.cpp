#include "model/moe/expert_exchange.h"

#include "backend/ops.h"
#include "model/moe/token_rows.h"

namespace finemoe::moe {
namespace {

// Where run `r`'s rows live: at their expert-order place if own, else in send order in `staged`.
template <typename P>
P rows_of(const SendRun& r, P staged, P expert, int width) {
  return r.own() ? expert + r.expert_row * width : staged + r.send_row * width;
}

// The staged exchanges are collective: every rank of a group of several takes part, whether or
// not it has rows for the others.
template <typename T>
bool exchanges(const TokenDispatcher<T>& dispatcher) {
  return dispatcher.group_size() > 1;
}

}  // namespace

template <typename T>
void dispatch_to_experts(TokenDispatcher<T>& dispatcher, const T* x, const int32_t* rows, int width, T* staged,
                         T* expert) {
  for (const SendRun& r : dispatcher.send_runs())
    rows::gather(x, rows + r.send_row, r.rows, width, rows_of(r, staged, expert, width));
  if (!exchanges(dispatcher)) return;
  dispatcher.to_experts_staged(staged, expert, width);
}

template <typename T>
void combine_from_experts(TokenDispatcher<T>& dispatcher, const T* expert, const int32_t* rows, const T* gate,
                          int width, T* staged, T* y) {
  if (exchanges(dispatcher)) dispatcher.from_experts_staged(expert, staged, width);
  for (const SendRun& r : dispatcher.send_runs())
    rows::combine(rows_of<const T*>(r, staged, expert, width), rows + r.send_row, gate + r.send_row, r.rows,
                  width, y);
}

template <typename T>
void combine_backward_to_experts(TokenDispatcher<T>& dispatcher, const T* dy, const T* expert, const T* staged,
                                 const int32_t* rows, const T* gate, int width, T* dstaged, T* dexpert, T* dgate) {
  for (const SendRun& r : dispatcher.send_runs())
    rows::combine_backward(dy, rows_of(r, staged, expert, width), rows + r.send_row,
                           gate + r.send_row, r.rows, width, rows_of(r, dstaged, dexpert, width),
                           dgate + r.send_row);
  if (!exchanges(dispatcher)) return;
  dispatcher.to_experts_staged(dstaged, dexpert, width);
}

template <typename T>
void scatter_add_from_experts(TokenDispatcher<T>& dispatcher, const T* dexpert, const int32_t* rows, int width,
                              T* dstaged, T* dx) {
  if (exchanges(dispatcher)) dispatcher.from_experts_staged(dexpert, dstaged, width);
  for (const SendRun& r : dispatcher.send_runs())
    rows::scatter_add(rows_of<const T*>(r, dstaged, dexpert, width), rows + r.send_row, r.rows, width, dx);
}

#define FINEMOE_EXPERT_EXCHANGE(T)                                                                                  \
  template void dispatch_to_experts<T>(TokenDispatcher<T>&, const T*, const int32_t*, int, T*, T*);                \
  template void combine_from_experts<T>(TokenDispatcher<T>&, const T*, const int32_t*, const T*, int, T*, T*);     \
  template void combine_backward_to_experts<T>(TokenDispatcher<T>&, const T*, const T*, const T*, const int32_t*, \
                                               const T*, int, T*, T*, T*);                                         \
  template void scatter_add_from_experts<T>(TokenDispatcher<T>&, const T*, const int32_t*, int, T*, T*);
FINEMOE_EXPERT_EXCHANGE(float)
FINEMOE_EXPERT_EXCHANGE(double)
#undef FINEMOE_EXPERT_EXCHANGE

}  // namespace finemoe::moe
