#pragma once
// Checkpoint data files: a 16-byte header (magic "FMOECKPT", uint32 format version, uint32 scalar
// bytes; little-endian) followed by raw arrays. Writers track size and CRC32 for the manifest and
// fsync before they report success; the checker compares a file with its manifest entry.
#include <cstdint>
#include <string>
#include <vector>

namespace finemoe {

inline constexpr int64_t kDataHeaderBytes = 16;

class DataFileWriter {
 public:
  // Creates (or truncates) `path` and writes the header.
  DataFileWriter(const std::string& path, int scalar_bytes);
  ~DataFileWriter();
  DataFileWriter(const DataFileWriter&) = delete;
  DataFileWriter& operator=(const DataFileWriter&) = delete;

  void append(const void* data, int64_t bytes);
  int64_t bytes() const { return bytes_; }  // also the offset of the next append
  uint32_t crc32() const { return crc_; }
  // Flushes to stable storage (fsync) and closes; throws RuntimeFailure on any error.
  void finish();

 private:
  void write_buffer();

  std::string path_;
  int fd_ = -1;
  int64_t bytes_ = 0;
  uint32_t crc_ = 0;
  std::vector<char> buffer_;  // small tensors are gathered into large writes
};

class DataFileReader {
 public:
  explicit DataFileReader(const std::string& path);
  ~DataFileReader();
  DataFileReader(const DataFileReader&) = delete;
  DataFileReader& operator=(const DataFileReader&) = delete;

  // Exactly `bytes` bytes at `offset`; throws RuntimeFailure on a short read.
  void read(int64_t offset, void* out, int64_t bytes) const;

 private:
  std::string path_;
  int fd_ = -1;
};

// The outcome of checking one file against its manifest entry, as integers so ranks can exchange
// it; describe() turns it into the same sentence on every rank.
struct FileCheck {
  enum Reason : int64_t { ok = 0, unreadable = 1, size_mismatch = 2, bad_header = 3, crc_mismatch = 4 };
  int64_t reason = ok;
  int64_t detail = 0;  // unreadable: errno; size_mismatch: actual bytes; crc_mismatch: actual CRC32

  std::string describe(const std::string& path, int64_t expected_bytes, uint32_t expected_crc) const;
};

// Reads the whole file: size, header (magic, version, scalar bytes) and CRC32.
FileCheck check_data_file(const std::string& path, int64_t expected_bytes, uint32_t expected_crc,
                          int scalar_bytes);

// Writes `text` to `path` and fsyncs it (the manifest).
void write_text_file_synced(const std::string& path, const std::string& text);

// Reads a whole file; false when it cannot be opened or read.
bool read_text_file(const std::string& path, std::string* text);

// Makes a directory's entries (new files, renames) durable.
void fsync_directory(const std::string& path);

}  // namespace finemoe
