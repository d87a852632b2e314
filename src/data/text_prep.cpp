#include "data/text_prep.h"

#include <glob.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <limits>
#include <memory>
#include <sstream>
#include <system_error>

#include "data/shard.h"
#include "util/check.h"

namespace finemoe {
namespace fs = std::filesystem;

namespace {

std::vector<std::string> files_under(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file()) files.push_back(it->path().string());
  }
  if (ec) throw InputError("cannot read directory '" + dir + "': " + ec.message());
  return files;
}

std::vector<std::string> glob_matches(const std::string& pattern) {
  glob_t matches{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &matches);
  std::vector<std::string> paths;
  if (rc == 0) {
    for (std::size_t i = 0; i < matches.gl_pathc; ++i) paths.emplace_back(matches.gl_pathv[i]);
  }
  ::globfree(&matches);
  if (rc != 0 && rc != GLOB_NOMATCH) throw InputError("cannot expand the pattern '" + pattern + "'");
  return paths;
}

// Consecutive shards of one split: <dir>/<name>_000000.bin, ...
class ShardSeries {
 public:
  ShardSeries(std::string dir, std::string name, std::size_t shard_tokens)
      : dir_(std::move(dir)), name_(std::move(name)), shard_tokens_(shard_tokens) {}

  void append(const unsigned char* bytes, std::size_t n) {
    while (n > 0) {
      if (!writer_) open_next();
      const std::size_t take = std::min({n, shard_tokens_ - writer_->count(), kChunk});
      for (std::size_t i = 0; i < take; ++i) chunk_[i] = bytes[i];
      writer_->append(chunk_, take);
      total_ += take;
      bytes += take;
      n -= take;
      if (writer_->count() == shard_tokens_) finish_current();
    }
  }

  void finish() {
    if (writer_) finish_current();
  }

  // Removes every shard this series wrote (after an error).
  void remove_written() {
    writer_.reset();
    for (const auto& shard : written_) std::remove(shard.first.c_str());
  }

  const std::vector<std::pair<std::string, std::size_t>>& written() const { return written_; }
  std::size_t total() const { return total_; }

 private:
  static constexpr std::size_t kChunk = 1 << 16;

  void open_next() {
    std::ostringstream file;
    file << name_ << "_" << std::setw(6) << std::setfill('0') << written_.size() << ".bin";
    writer_ = std::make_unique<ShardWriter>((fs::path(dir_) / file.str()).string());
  }

  void finish_current() {
    writer_->close();
    written_.emplace_back(writer_->path(), writer_->count());
    writer_.reset();
  }

  std::string dir_;
  std::string name_;
  std::size_t shard_tokens_;
  std::unique_ptr<ShardWriter> writer_;
  std::vector<std::pair<std::string, std::size_t>> written_;
  std::size_t total_ = 0;
  uint16_t chunk_[kChunk];
};

// Routes the byte stream to the two series block by block.
class SplitWriter {
 public:
  SplitWriter(const TextPrepOptions& o, const std::string& train_dir, const std::string& val_dir)
      : block_bytes_(o.block_bytes),
        val_fraction_(o.val_fraction),
        train_(train_dir, "train", o.shard_tokens),
        val_(val_dir, "val", o.shard_tokens) {}

  void write(const unsigned char* bytes, std::size_t n) {
    while (n > 0) {
      const std::size_t block = position_ / block_bytes_;
      const std::size_t take = std::min(n, block_bytes_ - position_ % block_bytes_);
      (is_validation_block(block, val_fraction_) ? val_ : train_).append(bytes, take);
      position_ += take;
      bytes += take;
      n -= take;
    }
  }

  ShardSeries& train() { return train_; }
  ShardSeries& val() { return val_; }

 private:
  std::size_t block_bytes_;
  double val_fraction_;
  std::size_t position_ = 0;
  ShardSeries train_;
  ShardSeries val_;
};

void check_options(const TextPrepOptions& o) {
  std::ostringstream os;
  if (!(o.val_fraction > 0.0 && o.val_fraction < 1.0)) {
    os << "--val-fraction " << o.val_fraction << " is out of range (allowed: 0 < f < 1)";
  } else if (o.block_bytes == 0) {
    os << "--block-bytes must be at least 1";
  } else if (o.shard_tokens == 0 ||
             o.shard_tokens > static_cast<std::size_t>(std::numeric_limits<int32_t>::max())) {
    os << "--shard-tokens " << o.shard_tokens << " is out of range (allowed: 1 .. "
       << std::numeric_limits<int32_t>::max() << ", the int32 header's limit)";
  } else if (o.out_dir.empty()) {
    os << "no output folder given (--out DIR)";
  }
  if (!os.str().empty()) throw InputError(os.str());
}

// Creates `dir` and clears it of shards (with overwrite) or refuses to mix with old ones.
void prepare_output_dir(const std::string& dir, bool overwrite) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw InputError("cannot create output folder '" + dir + "': " + ec.message());
  std::vector<fs::path> old;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".bin") old.push_back(entry.path());
  }
  if (old.empty()) return;
  if (!overwrite) {
    throw InputError("output folder '" + dir + "' already holds shards (" + old.front().string() +
                     ", ...); pass --overwrite to replace them");
  }
  for (const auto& path : old) fs::remove(path);
}

}  // namespace

bool is_validation_block(std::size_t block, double val_fraction) {
  return std::floor(double(block + 1) * val_fraction) > std::floor(double(block) * val_fraction);
}

std::vector<std::string> resolve_text_files(const std::vector<std::string>& inputs) {
  if (inputs.empty()) throw InputError("no input text files given");
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    std::error_code ec;
    const fs::file_status status = fs::status(input, ec);
    std::vector<std::string> found;
    if (fs::is_directory(status)) {
      found = files_under(input);
      if (found.empty()) throw InputError("input folder '" + input + "' holds no file");
    } else if (fs::is_regular_file(status)) {
      found = {input};
    } else if (fs::exists(status)) {
      throw InputError("input '" + input + "' is neither a regular file nor a folder");
    } else if (input.find_first_of("*?[") != std::string::npos) {
      for (const std::string& match : glob_matches(input)) {
        if (fs::is_directory(match)) {
          const std::vector<std::string> inside = files_under(match);
          found.insert(found.end(), inside.begin(), inside.end());
        } else if (fs::is_regular_file(match)) {
          found.push_back(match);
        }
      }
      if (found.empty()) throw InputError("no file matches the input pattern '" + input + "'");
    } else {
      throw InputError("input '" + input + "' does not exist");
    }
    files.insert(files.end(), found.begin(), found.end());
  }
  // A file named twice (a folder and a file in it, overlapping patterns) is one document.
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  return files;
}

TextPrepSummary prepare_text_shards(const TextPrepOptions& options) {
  check_options(options);
  const std::vector<std::string> files = resolve_text_files(options.inputs);

  // Both splits must be non-empty; decide before writing anything.
  std::size_t stream_bytes = 0;
  for (const std::string& file : files) stream_bytes += 1 + fs::file_size(file);
  const std::size_t n_blocks = (stream_bytes + options.block_bytes - 1) / options.block_bytes;
  bool any_val = false;
  for (std::size_t b = 0; b < n_blocks && !any_val; ++b) any_val = is_validation_block(b, options.val_fraction);
  if (!any_val) {
    std::ostringstream os;
    os << "the inputs give " << stream_bytes << " bytes = " << n_blocks << " blocks of "
       << options.block_bytes << " bytes, and --val-fraction " << options.val_fraction
       << " takes no whole block for validation; lower --block-bytes or add text";
    throw InputError(os.str());
  }

  const std::string train_dir = (fs::path(options.out_dir) / "train").string();
  const std::string val_dir = (fs::path(options.out_dir) / "val").string();
  prepare_output_dir(train_dir, options.overwrite);
  prepare_output_dir(val_dir, options.overwrite);

  auto split = std::make_unique<SplitWriter>(options, train_dir, val_dir);  // large buffers
  std::vector<unsigned char> buffer(1 << 20);
  try {
    for (const std::string& file : files) {
      std::unique_ptr<std::FILE, int (*)(std::FILE*)> in(std::fopen(file.c_str(), "rb"), &std::fclose);
      if (!in) throw InputError("cannot read '" + file + "': " + std::strerror(errno));
      split->write(&kDocumentStart, 1);
      std::size_t offset = 0;
      for (;;) {
        const std::size_t n = std::fread(buffer.data(), 1, buffer.size(), in.get());
        if (n == 0) break;
        if (const void* nul = std::memchr(buffer.data(), 0, n)) {
          std::ostringstream os;
          os << "input '" << file << "' holds a NUL byte at offset "
             << offset + std::size_t(static_cast<const unsigned char*>(nul) - buffer.data())
             << ": not a text file";
          throw InputError(os.str());
        }
        split->write(buffer.data(), n);
        offset += n;
      }
      if (std::ferror(in.get())) throw InputError("cannot read '" + file + "': " + std::strerror(errno));
    }
    split->train().finish();
    split->val().finish();
  } catch (...) {
    split->train().remove_written();
    split->val().remove_written();
    throw;
  }

  TextPrepSummary summary;
  summary.documents = files.size();
  summary.train_tokens = split->train().total();
  summary.val_tokens = split->val().total();
  summary.train_shards = split->train().written();
  summary.val_shards = split->val().written();
  return summary;
}

}  // namespace finemoe
