#include "data/batch_sampler.h"

#include <algorithm>
#include <sstream>

#include "util/check.h"
#include "util/rng.h"

namespace finemoe {

BatchSampler::BatchSampler(const TokenDataset& data, int context, uint64_t seed, std::string_view stream)
    : data_(data), context_(context), key_(hash_combine(seed, hash_string(stream))) {
  FINEMOE_CHECK(context > 0, "context " << context);
  if (data.size() < static_cast<std::size_t>(context) + 1) {
    std::ostringstream os;
    os << data.what() << ": '" << data.spec() << "' holds " << data.size()
       << " tokens; sequences of model.context = " << context << " need at least " << context + 1;
    throw InputError(os.str());
  }
  n_offsets_ = data.size() - static_cast<uint64_t>(context);
}

uint64_t BatchSampler::offset(uint64_t step, uint64_t global_seq) const {
  // Modulo bias is below n_offsets / 2^64, far under anything a test or a run could see.
  return hash_combine(hash_combine(key_, step), global_seq) % n_offsets_;
}

void BatchSampler::fill(uint64_t step, uint64_t first_global_seq, int count, int32_t* inputs,
                        int32_t* targets) const {
  const auto ctx = static_cast<std::size_t>(context_);
  for (int j = 0; j < count; ++j) {
    const uint64_t start = offset(step, first_global_seq + static_cast<uint64_t>(j));
    int32_t* in = inputs + static_cast<std::size_t>(j) * ctx;
    int32_t* out = targets + static_cast<std::size_t>(j) * ctx;
    data_.copy(start, ctx, in);
    std::copy(in + 1, in + ctx, out);
    out[ctx - 1] = data_.at(start + ctx);
  }
}

}  // namespace finemoe
