#include "checkpoint/data_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "checkpoint/manifest.h"
#include "util/check.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoint files are little-endian; this build targets a big-endian machine"
#endif

namespace finemoe {
namespace {

constexpr char kMagic[8] = {'F', 'M', 'O', 'E', 'C', 'K', 'P', 'T'};
constexpr int64_t kChunkBytes = int64_t(1) << 24;  // CRC and I/O work in chunks this large

[[noreturn]] void io_fail(const std::string& what, const std::string& path, int err) {
  throw RuntimeFailure(what + " " + path + ": " + std::strerror(err));
}

uint32_t crc_update(uint32_t crc, const void* data, int64_t bytes) {
  return static_cast<uint32_t>(crc32_z(crc, static_cast<const Bytef*>(data), static_cast<z_size_t>(bytes)));
}

void header_bytes(int scalar_bytes, unsigned char out[kDataHeaderBytes]) {
  const uint32_t version = kCheckpointFormatVersion;
  const uint32_t scalar = static_cast<uint32_t>(scalar_bytes);
  std::memcpy(out, kMagic, 8);
  std::memcpy(out + 8, &version, 4);
  std::memcpy(out + 12, &scalar, 4);
}

void write_all(int fd, const void* data, int64_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, static_cast<size_t>(std::min(bytes, kChunkBytes)));
    if (n < 0) {
      if (errno == EINTR) continue;
      io_fail("cannot write", path, errno);
    }
    p += n;
    bytes -= n;
  }
}

// Bytes read before end of file or an error; errno is set when it stopped on an error.
int64_t read_upto(int fd, int64_t offset, void* out, int64_t bytes) {
  char* p = static_cast<char*>(out);
  int64_t done = 0;
  errno = 0;
  while (done < bytes) {
    const ssize_t n = ::pread(fd, p + done, static_cast<size_t>(std::min(bytes - done, kChunkBytes)), offset + done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += n;
  }
  return done;
}

int open_retrying(const char* path, int flags, mode_t mode = 0) {
  int fd;
  do fd = ::open(path, flags | O_CLOEXEC, mode);
  while (fd < 0 && errno == EINTR);
  return fd;
}

std::string hex32(uint32_t v) {
  char buf[11];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

}  // namespace

DataFileWriter::DataFileWriter(const std::string& path, int scalar_bytes) : path_(path) {
  fd_ = open_retrying(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd_ < 0) io_fail("cannot create", path, errno);
  unsigned char header[kDataHeaderBytes];
  header_bytes(scalar_bytes, header);
  append(header, kDataHeaderBytes);
}

DataFileWriter::~DataFileWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void DataFileWriter::append(const void* data, int64_t bytes) {
  FINEMOE_CHECK(fd_ >= 0, "append to finished file " << path_);
  const char* p = static_cast<const char*>(data);
  if (int64_t(buffer_.size()) + bytes <= kChunkBytes) {
    buffer_.insert(buffer_.end(), p, p + bytes);
  } else {
    write_buffer();
    write_all(fd_, data, bytes, path_);
  }
  for (int64_t done = 0; done < bytes; done += kChunkBytes)
    crc_ = crc_update(crc_, p + done, std::min(bytes - done, kChunkBytes));
  bytes_ += bytes;
}

void DataFileWriter::write_buffer() {
  write_all(fd_, buffer_.data(), int64_t(buffer_.size()), path_);
  buffer_.clear();
}

void DataFileWriter::finish() {
  write_buffer();
  if (::fsync(fd_) != 0) io_fail("cannot fsync", path_, errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) io_fail("cannot close", path_, errno);
}

DataFileReader::DataFileReader(const std::string& path) : path_(path) {
  fd_ = open_retrying(path.c_str(), O_RDONLY);
  if (fd_ < 0) io_fail("cannot open", path, errno);
}

DataFileReader::~DataFileReader() {
  if (fd_ >= 0) ::close(fd_);
}

void DataFileReader::read(int64_t offset, void* out, int64_t bytes) const {
  const int64_t got = read_upto(fd_, offset, out, bytes);
  if (got == bytes) return;
  if (errno != 0) io_fail("cannot read", path_, errno);
  throw RuntimeFailure("cannot read " + path_ + ": " + std::to_string(bytes) + " bytes at offset " +
                       std::to_string(offset) + " run past the end of the file");
}

std::string FileCheck::describe(const std::string& path, int64_t expected_bytes, uint32_t expected_crc) const {
  switch (reason) {
    case ok: return path + ": ok";
    case unreadable: return path + ": cannot be read (" + std::strerror(static_cast<int>(detail)) + ")";
    case size_mismatch:
      return path + ": " + std::to_string(detail) + " bytes, the manifest records " + std::to_string(expected_bytes) +
             (detail < expected_bytes ? " (truncated)" : " (wrong size)");
    case bad_header: return path + ": bad header (not a finemoe checkpoint data file of this version and precision)";
    case crc_mismatch:
      return path + ": CRC32 " + hex32(static_cast<uint32_t>(detail)) + ", the manifest records " +
             hex32(expected_crc) + " (corrupt)";
  }
  return path + ": unknown check result " + std::to_string(reason);
}

FileCheck check_data_file(const std::string& path, int64_t expected_bytes, uint32_t expected_crc,
                          int scalar_bytes) {
  const int fd = open_retrying(path.c_str(), O_RDONLY);
  if (fd < 0) return {FileCheck::unreadable, errno};
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return {FileCheck::unreadable, errno};
  if (st.st_size != expected_bytes) return {FileCheck::size_mismatch, static_cast<int64_t>(st.st_size)};

  unsigned char expected_header[kDataHeaderBytes], header[kDataHeaderBytes];
  header_bytes(scalar_bytes, expected_header);
  std::vector<char> buf(static_cast<size_t>(std::min(expected_bytes, kChunkBytes)));
  uint32_t crc = 0;
  for (int64_t offset = 0; offset < expected_bytes;) {
    const int64_t want = std::min(expected_bytes - offset, kChunkBytes);
    const int64_t got = read_upto(fd, offset, buf.data(), want);
    if (got != want) {
      if (errno != 0) return {FileCheck::unreadable, errno};
      return {FileCheck::size_mismatch, offset + got};
    }
    if (offset == 0) std::memcpy(header, buf.data(), static_cast<size_t>(std::min(want, kDataHeaderBytes)));
    crc = crc_update(crc, buf.data(), got);
    offset += got;
  }
  if (expected_bytes < kDataHeaderBytes || std::memcmp(header, expected_header, kDataHeaderBytes) != 0)
    return {FileCheck::bad_header, 0};
  if (crc != expected_crc) return {FileCheck::crc_mismatch, static_cast<int64_t>(crc)};
  return {};
}

void write_text_file_synced(const std::string& path, const std::string& text) {
  const int fd = open_retrying(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) io_fail("cannot create", path, errno);
  try {
    write_all(fd, text.data(), static_cast<int64_t>(text.size()), path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    io_fail("cannot fsync", path, err);
  }
  if (::close(fd) != 0) io_fail("cannot close", path, errno);
}

bool read_text_file(const std::string& path, std::string* text) {
  const int fd = open_retrying(path.c_str(), O_RDONLY);
  if (fd < 0) return false;
  text->clear();
  char buf[65536];
  bool ok = true;
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ok = false;
    if (n <= 0) break;
    text->append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return ok;
}

void fsync_directory(const std::string& path) {
  const int fd = open_retrying(path.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) io_fail("cannot open directory", path, errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) io_fail("cannot fsync directory", path, err);
}

}  // namespace finemoe
