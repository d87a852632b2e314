#include "data/token_dataset.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <sstream>
#include <system_error>

#include "util/check.h"

namespace finemoe {
namespace fs = std::filesystem;

namespace {

bool has_glob_characters(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

std::vector<std::string> glob_files(const std::string& pattern) {
  glob_t matches{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &matches);
  std::vector<std::string> files;
  if (rc == 0) {
    for (std::size_t i = 0; i < matches.gl_pathc; ++i) files.emplace_back(matches.gl_pathv[i]);
  }
  ::globfree(&matches);
  if (rc != 0 && rc != GLOB_NOMATCH) throw InputError("cannot expand the pattern '" + pattern + "'");
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

std::vector<std::string> resolve_shard_files(const std::string& spec) {
  if (spec.empty()) throw InputError("no shard file, directory or pattern given (empty path)");
  std::error_code ec;
  const fs::file_status status = fs::status(spec, ec);
  if (fs::is_directory(status)) {
    std::vector<std::string> files;
    for (const auto& entry : fs::directory_iterator(spec)) {
      if (entry.path().extension() == ".bin" && entry.is_regular_file()) files.push_back(entry.path().string());
    }
    if (files.empty()) throw InputError("directory '" + spec + "' holds no shard (*.bin)");
    std::sort(files.begin(), files.end());
    return files;
  }
  if (fs::exists(status)) return {spec};
  if (has_glob_characters(spec)) {
    std::vector<std::string> files = glob_files(spec);
    if (files.empty()) throw InputError("no file matches the pattern '" + spec + "'");
    return files;
  }
  throw InputError("shard path '" + spec + "' does not exist (expected a shard file, a directory of *.bin shards or a glob pattern)");
}

TokenDataset::TokenDataset(const std::string& spec, int vocab, const std::string& what)
    : spec_(spec), what_(what), vocab_(vocab) {
  std::vector<std::string> files;
  try {
    files = resolve_shard_files(spec);
  } catch (const InputError& e) {
    throw InputError(what + ": " + e.what());
  }
  shards_.reserve(files.size());
  for (const std::string& file : files) {
    try {
      shards_.emplace_back(file, vocab);
    } catch (const InputError& e) {
      throw InputError(what + ": " + e.what());
    }
    starts_.push_back(total_);
    total_ += shards_.back().size();
  }
  starts_.push_back(total_);
  if (total_ == 0) throw InputError(what + ": the shards of '" + spec + "' hold no token");
}

uint16_t TokenDataset::at(std::size_t index) const {
  FINEMOE_CHECK(index < total_, "token " << index << " of a stream of " << total_);
  const auto it = std::upper_bound(starts_.begin(), starts_.end(), index);
  const auto shard = static_cast<std::size_t>(it - starts_.begin()) - 1;
  return shards_[shard].tokens()[index - starts_[shard]];
}

void TokenDataset::copy(std::size_t begin, std::size_t count, int32_t* out) const {
  FINEMOE_CHECK(begin <= total_ && count <= total_ - begin,
                "tokens [" << begin << ", " << begin + count << ") of a stream of " << total_);
  if (count == 0) return;
  // The shard holding `begin` (empty shards have equal starts; upper_bound skips them).
  auto shard = static_cast<std::size_t>(std::upper_bound(starts_.begin(), starts_.end(), begin) - starts_.begin()) - 1;
  std::size_t local = begin - starts_[shard];
  while (count > 0) {
    const std::size_t n = std::min(count, shards_[shard].size() - local);
    const uint16_t* src = shards_[shard].tokens() + local;
    for (std::size_t i = 0; i < n; ++i) out[i] = src[i];
    out += n;
    count -= n;
    ++shard;
    local = 0;
  }
}

}  // namespace finemoe
