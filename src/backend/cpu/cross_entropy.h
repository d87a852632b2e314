#pragma once
// Softmax + cross-entropy over the vocabulary, fused with its gradient.
#include <cstdint>

namespace finemoe::cpu {

// Returns the sum over rows of -log softmax(logits[r])[targets[r]] (accumulated in double).
// If dlogits is not null it receives dscale * (softmax(logits[r]) - onehot(targets[r])), the
// gradient of dscale * (that sum); dlogits may alias logits.
template <typename T>
double softmax_cross_entropy(T* dlogits, const T* logits, const int32_t* targets, int64_t rows, int vocab,
                             T dscale);

}  // namespace finemoe::cpu
