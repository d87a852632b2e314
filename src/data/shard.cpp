#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <sstream>
#include <utility>

#include "util/check.h"

namespace finemoe {
namespace {

[[noreturn]] void bad_shard(const std::string& path, const std::string& what) {
  throw InputError("shard '" + path + "': " + what);
}

std::string errno_text() { return std::strerror(errno); }

// Closes a descriptor on every path out of the constructor.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

Shard::Shard(const std::string& path, int vocab) : path_(path) {
  FINEMOE_CHECK(vocab > 0 && vocab <= 65536, "vocab " << vocab << " does not fit uint16 tokens");
  // Checked before opening: opening a FIFO blocks until a writer appears.
  struct stat path_st {};
  if (::stat(path.c_str(), &path_st) == 0 && !S_ISREG(path_st.st_mode)) bad_shard(path, "not a regular file");
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) bad_shard(path, "cannot open: " + errno_text());
  FdCloser closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) bad_shard(path, "cannot stat: " + errno_text());
  if (!S_ISREG(st.st_mode)) bad_shard(path, "not a regular file");
  const auto file_bytes = static_cast<std::size_t>(st.st_size);
  if (file_bytes < kShardHeaderBytes) {
    std::ostringstream os;
    os << "file has " << file_bytes << " bytes, too short for the " << kShardHeaderBytes
       << "-byte header (truncated or not a shard)";
    bad_shard(path, os.str());
  }
  void* map = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) bad_shard(path, "cannot map: " + errno_text());
  map_ = map;
  map_bytes_ = file_bytes;
  // From here the destructor does not run if we throw, so release the mapping first.
  try {
    int32_t header[kShardHeaderInts];
    std::memcpy(header, map, kShardHeaderBytes);
    if (header[0] != kShardMagic) {
      std::ostringstream os;
      os << "wrong magic number " << header[0] << " (expected " << kShardMagic
         << "; not an llm.c token shard)";
      bad_shard(path, os.str());
    }
    if (header[1] != kShardVersion) {
      std::ostringstream os;
      os << "unsupported version " << header[1] << " (expected " << kShardVersion
         << ", uint16 tokens)";
      bad_shard(path, os.str());
    }
    if (header[2] < 0) {
      std::ostringstream os;
      os << "negative token count " << header[2] << " in the header";
      bad_shard(path, os.str());
    }
    const auto count = static_cast<std::size_t>(header[2]);
    const std::size_t expected = kShardHeaderBytes + count * sizeof(uint16_t);
    if (file_bytes != expected) {
      std::ostringstream os;
      os << "header says " << count << " tokens (" << expected << " bytes with the header) but the file has "
         << file_bytes << " bytes" << (file_bytes < expected ? " (truncated)" : " (trailing data)");
      bad_shard(path, os.str());
    }
    tokens_ = reinterpret_cast<const uint16_t*>(static_cast<const char*>(map) + kShardHeaderBytes);
    size_ = count;
    for (std::size_t i = 0; i < size_; ++i) {
      if (tokens_[i] >= vocab) {
        std::ostringstream os;
        os << "token " << tokens_[i] << " at position " << i << " is out of range for vocab "
           << vocab << " (allowed 0.." << vocab - 1 << ")";
        bad_shard(path, os.str());
      }
    }
  } catch (...) {
    release();
    throw;
  }
}

Shard::~Shard() { release(); }

Shard::Shard(Shard&& other) noexcept
    : path_(std::move(other.path_)),
      map_(std::exchange(other.map_, nullptr)),
      map_bytes_(std::exchange(other.map_bytes_, 0)),
      tokens_(std::exchange(other.tokens_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

Shard& Shard::operator=(Shard&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    tokens_ = std::exchange(other.tokens_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void Shard::release() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
  tokens_ = nullptr;
  size_ = 0;
}

ShardWriter::ShardWriter(const std::string& path) : path_(path) {
  file_ = std::fopen(path.c_str(), "wb");
  if (file_ == nullptr) throw InputError("cannot create shard '" + path + "': " + errno_text());
  const int32_t header[kShardHeaderInts] = {kShardMagic, kShardVersion, 0};
  if (std::fwrite(header, sizeof(int32_t), kShardHeaderInts, file_) != kShardHeaderInts) {
    const std::string reason = errno_text();
    std::fclose(file_);  // the destructor does not run for a constructor that throws
    std::remove(path.c_str());
    throw InputError("cannot write shard '" + path + "': " + reason);
  }
}

ShardWriter::~ShardWriter() {
  if (file_ != nullptr) {
    std::fclose(file_);
    std::remove(path_.c_str());
  }
}

void ShardWriter::append(const uint16_t* tokens, std::size_t count) {
  FINEMOE_CHECK(file_ != nullptr, "append to closed shard " << path_);
  if (count_ + count > static_cast<std::size_t>(std::numeric_limits<int32_t>::max())) {
    std::ostringstream os;
    os << "shard '" << path_ << "' would hold " << count_ + count
       << " tokens; the int32 header allows at most " << std::numeric_limits<int32_t>::max();
    throw InputError(os.str());
  }
  if (std::fwrite(tokens, sizeof(uint16_t), count, file_) != count) {
    throw InputError("cannot write shard '" + path_ + "': " + errno_text());
  }
  count_ += count;
}

void ShardWriter::close() {
  FINEMOE_CHECK(file_ != nullptr, "shard " << path_ << " closed twice");
  const auto count = static_cast<int32_t>(count_);
  const bool ok = std::fseek(file_, 2 * sizeof(int32_t), SEEK_SET) == 0 &&
                  std::fwrite(&count, sizeof(count), 1, file_) == 1;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!ok || !closed) {
    std::remove(path_.c_str());
    throw InputError("cannot write shard '" + path_ + "': " + errno_text());
  }
}

void write_shard(const std::string& path, const uint16_t* tokens, std::size_t count) {
  ShardWriter writer(path);
  writer.append(tokens, count);
  writer.close();
}

}  // namespace finemoe
