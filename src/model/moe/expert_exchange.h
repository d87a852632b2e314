#pragma once
// Permute + exchange and exchange + combine, as the MoE layer runs them. A rank's own copies go
// straight between token rows and expert order (no send-order copy, no local exchange copy); only
// the copies for other ranks are staged in send order and travel. Every function walks the copies
// in send order, so sums over a token's copies are taken in the same order as the unfused
// gather_rows -> to_experts -> from_experts -> combine_rows (bit-identical results).
#include <cstdint>

#include "model/moe/dispatcher.h"

namespace finemoe::moe {

// expert[place of copy c] = x[rows[c]]; `staged` (sent_rows() x width) carries the others' rows.
template <typename T>
void dispatch_to_experts(TokenDispatcher<T>& dispatcher, const T* x, const int32_t* rows, int width, T* staged,
                         T* expert);

// y[rows[c]] += gate[c] * (expert row of copy c), the other ranks' rows returned into `staged`.
template <typename T>
void combine_from_experts(TokenDispatcher<T>& dispatcher, const T* expert, const int32_t* rows, const T* gate,
                          int width, T* staged, T* y);

// Backward of combine_from_experts (`staged` as it left it): dgate[c] = <dy[rows[c]], row c> and
// the rows' gradients gate[c] * dy[rows[c]] delivered to expert order in `dexpert`.
template <typename T>
void combine_backward_to_experts(TokenDispatcher<T>& dispatcher, const T* dy, const T* expert, const T* staged,
                                 const int32_t* rows, const T* gate, int width, T* dstaged, T* dexpert, T* dgate);

// Backward of dispatch_to_experts: dx[rows[c]] += (gradient of copy c's expert row).
template <typename T>
void scatter_add_from_experts(TokenDispatcher<T>& dispatcher, const T* dexpert, const int32_t* rows, int width,
                              T* dstaged, T* dx);

}  // namespace finemoe::moe
