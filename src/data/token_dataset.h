#pragma once
// Several shards presented as one token stream.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/shard.h"

namespace finemoe {

// The shard files a dataset spec names: a shard file, a directory (every `*.bin` directly
// inside, sorted by name) or a glob pattern (matches sorted). Throws InputError when the spec
// names nothing.
std::vector<std::string> resolve_shard_files(const std::string& spec);

class TokenDataset {
 public:
  // Opens and validates every shard of `spec` against `vocab` (see Shard). `what` names the
  // dataset in messages ("data.train"). Throws InputError when the spec names no shard or the
  // shards hold no token.
  TokenDataset(const std::string& spec, int vocab, const std::string& what = "dataset");

  std::size_t size() const { return total_; }
  int vocab() const { return vocab_; }
  const std::string& spec() const { return spec_; }
  const std::string& what() const { return what_; }
  const std::vector<Shard>& shards() const { return shards_; }

  uint16_t at(std::size_t index) const;
  // Tokens [begin, begin + count) of the stream, across shard boundaries, as int32.
  void copy(std::size_t begin, std::size_t count, int32_t* out) const;

 private:
  std::string spec_;
  std::string what_;
  int vocab_ = 0;
  std::vector<Shard> shards_;
  std::vector<std::size_t> starts_;  // stream index of each shard's first token, then the total
  std::size_t total_ = 0;
};

}  // namespace finemoe
