#pragma once
// A thin RAII wrapper over the HDF5 C API: files, groups, attributes (int64, double, string),
// string datasets and extendible chunked datasets that grow along their first dimension.
// Files use the default (earliest) format and no SWMR: flushed after each append, such a file
// survives a SIGKILL without repair (docs/run-record.md).
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace finemoe::h5 {

// Owns one HDF5 identifier and closes it with the matching H5*close.
class Id {
 public:
  using Closer = herr_t (*)(hid_t);
  Id() = default;
  Id(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Id() { reset(); }
  Id(Id&& other) noexcept : id_(other.id_), closer_(other.closer_) { other.id_ = -1; }
  Id& operator=(Id&& other) noexcept;
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset();

 private:
  hid_t id_ = -1;
  Closer closer_ = nullptr;
};

enum class Type { int64, float64 };

// A dataset of shape (rows, inner...) that grows along rows; chunked, so it can also shrink.
class Series {
 public:
  Series(Id id, std::string where);
  const std::string& where() const { return where_; }
  Type type() const { return type_; }
  std::size_t rows() const;
  // Elements per row: the product of the inner dimensions.
  std::size_t row_size() const { return row_size_; }
  const std::vector<hsize_t>& inner_dims() const { return inner_; }
  // Rows per chunk (storage grows a chunk at a time).
  std::size_t chunk_rows() const;
  void append(const std::vector<int64_t>& row_major_rows);
  void append(const std::vector<double>& row_major_rows);
  void append_one(int64_t value);  // one row of a 1-D series
  void append_one(double value);
  void resize(std::size_t rows);
  std::vector<int64_t> read_int64() const;
  std::vector<double> read_double() const;

 private:
  void append_raw(const void* data, std::size_t n_elements, hid_t mem_type);
  void read_raw(void* data, hid_t mem_type) const;
  Id id_;
  std::string where_;
  Type type_;
  std::vector<hsize_t> inner_;
  std::size_t row_size_ = 1;
};

class Group;

// A file or group: both hold attributes and children.
class Node {
 public:
  const std::string& where() const { return where_; }
  hid_t id() const { return id_.get(); }

  bool has_attribute(const std::string& name) const;
  void set(const std::string& name, int64_t value);
  void set(const std::string& name, double value);
  void set(const std::string& name, const std::string& value);
  void set(const std::string& name, const char* value) { set(name, std::string(value)); }
  void remove_attribute(const std::string& name);
  int64_t get_int64(const std::string& name) const;
  double get_double(const std::string& name) const;
  std::string get_string(const std::string& name) const;
  std::vector<std::string> attribute_names() const;

  bool has_child(const std::string& name) const;
  std::vector<std::string> child_names() const;
  Group create_group(const std::string& name);
  Group open_group(const std::string& name) const;
  void remove_child(const std::string& name);

  // Scalar and 1-D variable-length UTF-8 string datasets (for text longer than an attribute).
  void write_text(const std::string& name, const std::string& text);
  std::string read_text(const std::string& name) const;
  void write_strings(const std::string& name, const std::vector<std::string>& values);
  std::vector<std::string> read_strings(const std::string& name) const;

  // An empty extendible dataset of shape (0, inner...), chunked chunk_rows rows at a time.
  Series create_series(const std::string& name, Type type, const std::vector<hsize_t>& inner = {},
                       hsize_t chunk_rows = 256);
  Series open_series(const std::string& name) const;

 protected:
  Node(Id id, std::string where) : id_(std::move(id)), where_(std::move(where)) {}
  std::string child_where(const std::string& name) const;
  Id id_;
  std::string where_;  // "file.h5:/group" for messages
};

class Group : public Node {
 public:
  Group(Id id, std::string where) : Node(std::move(id), std::move(where)) {}
};

class File : public Node {
 public:
  // Creates (truncating) a file in the default format.
  static File create(const std::string& path);
  // Opens an existing file; throws InputError naming the file when it is missing or not HDF5.
  static File open(const std::string& path, bool writable);
  const std::string& path() const { return path_; }
  void flush();

 private:
  File(Id id, std::string path) : Node(std::move(id), path + ":/"), path_(std::move(path)) {}
  std::string path_;
};

// Turns off HDF5's automatic error-stack printing: failures are reported by our exceptions.
void silence_library_errors();

}  // namespace finemoe::h5
