#pragma once
// Token shards in llm.c's format: a header of 256 int32 (magic 20240520, version 1, token count,
// the rest zero), then the tokens as uint16. Byte-level text uses tokens 0..255.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace finemoe {

constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersion = 1;
constexpr std::size_t kShardHeaderInts = 256;
constexpr std::size_t kShardHeaderBytes = kShardHeaderInts * sizeof(int32_t);

// A shard opened read-only (memory-mapped) and validated: magic, version, the file size against
// the token count, and every token below `vocab`. Any failure throws InputError naming the file
// and what is wrong. Move-only.
class Shard {
 public:
  Shard(const std::string& path, int vocab);
  ~Shard();
  Shard(Shard&& other) noexcept;
  Shard& operator=(Shard&& other) noexcept;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const uint16_t* tokens() const { return tokens_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();

  std::string path_;
  void* map_ = nullptr;
  std::size_t map_bytes_ = 0;
  const uint16_t* tokens_ = nullptr;
  std::size_t size_ = 0;
};

// Writes one shard incrementally: the header is written with a zero count, tokens are appended,
// and close() fills in the count. A writer destroyed without close() removes its partial file,
// so an interrupted run never leaves a shard that looks valid.
class ShardWriter {
 public:
  explicit ShardWriter(const std::string& path);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  void append(const uint16_t* tokens, std::size_t count);
  void close();
  std::size_t count() const { return count_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  std::size_t count_ = 0;
};

// Writes `count` tokens as one complete shard.
void write_shard(const std::string& path, const uint16_t* tokens, std::size_t count);

}  // namespace finemoe
