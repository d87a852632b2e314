#include "checkpoint/data_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#include "util/check.h"

namespace finemoe {
namespace {

namespace fs = std::filesystem;

class DataFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "finemoe_datafile_XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    path_ = (dir_ / "experts_0.bin").string();
    for (int i = 0; i < 1000; ++i) values_.push_back(1.0 / (i + 1));
    DataFileWriter out(path_, sizeof(double));
    EXPECT_EQ(out.bytes(), kDataHeaderBytes);
    out.append(values_.data(), 600 * sizeof(double));
    out.append(values_.data() + 600, 400 * sizeof(double));
    bytes_ = out.bytes();
    crc_ = out.crc32();
    out.finish();
  }
  void TearDown() override { fs::remove_all(dir_); }

  FileCheck check(int scalar_bytes = 8) const { return check_data_file(path_, bytes_, crc_, scalar_bytes); }

  fs::path dir_;
  std::string path_;
  std::vector<double> values_;
  int64_t bytes_ = 0;
  uint32_t crc_ = 0;
};

TEST_F(DataFileTest, WrittenFileChecksAndReadsBack) {
  EXPECT_EQ(bytes_, kDataHeaderBytes + 1000 * 8);
  EXPECT_EQ(int64_t(fs::file_size(path_)), bytes_);
  EXPECT_EQ(check().reason, FileCheck::ok);
  DataFileReader in(path_);
  std::vector<double> back(10);
  in.read(kDataHeaderBytes + 595 * 8, back.data(), 10 * 8);  // across the two appends
  for (int i = 0; i < 10; ++i) EXPECT_EQ(back[i], values_[595 + i]);
  EXPECT_THROW(in.read(bytes_ - 8, back.data(), 16), RuntimeFailure);
}

TEST_F(DataFileTest, TruncatedFileIsNamedAndCalledTruncated) {
  fs::resize_file(path_, bytes_ - 3);
  const FileCheck c = check();
  EXPECT_EQ(c.reason, FileCheck::size_mismatch);
  EXPECT_EQ(c.detail, bytes_ - 3);
  const std::string why = c.describe(path_, bytes_, crc_);
  EXPECT_NE(why.find(path_ + ": " + std::to_string(bytes_ - 3) + " bytes, the manifest records " +
                     std::to_string(bytes_) + " (truncated)"),
            std::string::npos)
      << why;
}

TEST_F(DataFileTest, FlippedByteIsACrcMismatch) {
  {
    std::fstream io(path_, std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(5000);
    io.put('\x7f');
  }
  const FileCheck c = check();
  EXPECT_EQ(c.reason, FileCheck::crc_mismatch);
  const std::string why = c.describe(path_, bytes_, crc_);
  EXPECT_NE(why.find(path_ + ": CRC32 0x"), std::string::npos) << why;
  EXPECT_NE(why.find("(corrupt)"), std::string::npos) << why;
}

TEST_F(DataFileTest, OtherPrecisionIsABadHeader) {
  const FileCheck c = check(4);
  EXPECT_EQ(c.reason, FileCheck::bad_header);
  EXPECT_NE(c.describe(path_, bytes_, crc_).find("bad header"), std::string::npos);
}

TEST_F(DataFileTest, MissingFileIsUnreadable) {
  fs::remove(path_);
  const FileCheck c = check();
  EXPECT_EQ(c.reason, FileCheck::unreadable);
  EXPECT_EQ(c.detail, ENOENT);
  EXPECT_EQ(c.describe(path_, bytes_, crc_), path_ + ": cannot be read (No such file or directory)");
  EXPECT_THROW(DataFileReader{path_}, RuntimeFailure);
}

TEST_F(DataFileTest, TextFilesRoundTrip) {
  const std::string p = (dir_ / "manifest.txt").string();
  write_text_file_synced(p, "step 3\n");
  std::string text;
  ASSERT_TRUE(read_text_file(p, &text));
  EXPECT_EQ(text, "step 3\n");
  EXPECT_FALSE(read_text_file((dir_ / "absent.txt").string(), &text));
  fsync_directory(dir_.string());
  EXPECT_THROW(fsync_directory((dir_ / "absent").string()), RuntimeFailure);
}

}  // namespace
}  // namespace finemoe
