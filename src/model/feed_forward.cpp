#include "model/feed_forward.h"

namespace finemoe {

void FeedForwardStats::clear() { *this = FeedForwardStats{}; }

}  // namespace finemoe
