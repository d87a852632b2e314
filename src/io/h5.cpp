#include "io/h5.h"

#include <sys/stat.h>

#include <mutex>

#include "util/check.h"

namespace finemoe::h5 {
namespace {

[[noreturn]] void fail(const std::string& what, const std::string& where) {
  throw RuntimeFailure("HDF5: " + what + " (" + where + ")");
}

hid_t checked(hid_t id, const std::string& what, const std::string& where) {
  if (id < 0) fail(what, where);
  return id;
}

void checked_status(herr_t status, const std::string& what, const std::string& where) {
  if (status < 0) fail(what, where);
}

Id string_type() {
  Id type(H5Tcopy(H5T_C_S1), H5Tclose);
  checked(type.get(), "copy string type", "");
  checked_status(H5Tset_size(type.get(), H5T_VARIABLE), "set string size", "");
  checked_status(H5Tset_cset(type.get(), H5T_CSET_UTF8), "set string charset", "");
  return type;
}

Id scalar_space() { return Id(H5Screate(H5S_SCALAR), H5Sclose); }

hid_t file_type(Type type) { return type == Type::int64 ? H5T_STD_I64LE : H5T_IEEE_F64LE; }

// Collects names from H5Aiterate2 / H5Literate2.
herr_t collect_attribute(hid_t, const char* name, const H5A_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}
#if H5_VERSION_GE(1, 12, 0)
using LinkInfo = H5L_info2_t;
#define FINEMOE_H5LITERATE H5Literate2
#else
using LinkInfo = H5L_info_t;
#define FINEMOE_H5LITERATE H5Literate
#endif
herr_t collect_link(hid_t, const char* name, const LinkInfo*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

}  // namespace

void silence_library_errors() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

Id& Id::operator=(Id&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = other.id_;
    closer_ = other.closer_;
    other.id_ = -1;
  }
  return *this;
}

void Id::reset() {
  if (id_ >= 0 && closer_) closer_(id_);
  id_ = -1;
}

// ---------------------------------------------------------------------------------- Series

Series::Series(Id id, std::string where) : id_(std::move(id)), where_(std::move(where)) {
  Id type(checked(H5Dget_type(id_.get()), "get dataset type", where_), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type.get());
  if (cls == H5T_INTEGER) {
    type_ = Type::int64;
  } else if (cls == H5T_FLOAT) {
    type_ = Type::float64;
  } else {
    fail("dataset is neither integer nor floating point", where_);
  }
  Id space(checked(H5Dget_space(id_.get()), "get dataspace", where_), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 1) fail("dataset is not an array", where_);
  std::vector<hsize_t> dims(rank);
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  inner_.assign(dims.begin() + 1, dims.end());
  for (hsize_t d : inner_) row_size_ *= d;
}

std::size_t Series::rows() const {
  Id space(checked(H5Dget_space(id_.get()), "get dataspace", where_), H5Sclose);
  hsize_t dims[H5S_MAX_RANK];
  H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  return dims[0];
}

std::size_t Series::chunk_rows() const {
  Id props(checked(H5Dget_create_plist(id_.get()), "get creation properties", where_), H5Pclose);
  hsize_t chunk[H5S_MAX_RANK];
  checked_status(H5Pget_chunk(props.get(), H5S_MAX_RANK, chunk) < 0 ? -1 : 0, "get chunking", where_);
  return chunk[0];
}

void Series::resize(std::size_t rows) {
  std::vector<hsize_t> dims{rows};
  dims.insert(dims.end(), inner_.begin(), inner_.end());
  checked_status(H5Dset_extent(id_.get(), dims.data()), "resize dataset", where_);
}

void Series::append_raw(const void* data, std::size_t n_elements, hid_t mem_type) {
  FINEMOE_CHECK(n_elements % row_size_ == 0,
                where_ << ": appending " << n_elements << " values, rows hold " << row_size_);
  const std::size_t old_rows = rows();
  const std::size_t new_rows = n_elements / row_size_;
  if (new_rows == 0) return;
  resize(old_rows + new_rows);
  std::vector<hsize_t> start{old_rows}, count{new_rows};
  start.resize(inner_.size() + 1, 0);
  count.insert(count.end(), inner_.begin(), inner_.end());
  Id file_space(checked(H5Dget_space(id_.get()), "get dataspace", where_), H5Sclose);
  checked_status(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr,
                                     count.data(), nullptr),
                 "select rows", where_);
  Id mem_space(H5Screate_simple(int(count.size()), count.data(), nullptr), H5Sclose);
  checked_status(H5Dwrite(id_.get(), mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, data),
                 "append rows", where_);
}

void Series::append(const std::vector<int64_t>& values) {
  FINEMOE_CHECK(type_ == Type::int64, where_ << " holds floating-point values");
  append_raw(values.data(), values.size(), H5T_NATIVE_INT64);
}

void Series::append_one(int64_t value) { append(std::vector<int64_t>{value}); }
void Series::append_one(double value) { append(std::vector<double>{value}); }

void Series::append(const std::vector<double>& values) {
  FINEMOE_CHECK(type_ == Type::float64, where_ << " holds integers");
  append_raw(values.data(), values.size(), H5T_NATIVE_DOUBLE);
}

void Series::read_raw(void* data, hid_t mem_type) const {
  if (rows() == 0) return;
  checked_status(H5Dread(id_.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "read dataset",
                 where_);
}

std::vector<int64_t> Series::read_int64() const {
  std::vector<int64_t> out(rows() * row_size_);
  read_raw(out.data(), H5T_NATIVE_INT64);
  return out;
}

std::vector<double> Series::read_double() const {
  std::vector<double> out(rows() * row_size_);
  read_raw(out.data(), H5T_NATIVE_DOUBLE);
  return out;
}

// ------------------------------------------------------------------------------------ Node

std::string Node::child_where(const std::string& name) const {
  return where_ + (where_.back() == '/' ? "" : "/") + name;
}

bool Node::has_attribute(const std::string& name) const {
  const htri_t exists = H5Aexists(id(), name.c_str());
  checked_status(exists < 0 ? -1 : 0, "check attribute " + name, where_);
  return exists > 0;
}

void Node::remove_attribute(const std::string& name) {
  if (has_attribute(name)) checked_status(H5Adelete(id(), name.c_str()), "delete attribute " + name, where_);
}

namespace {

void write_attribute(hid_t node, const std::string& name, hid_t file_type_id, hid_t mem_type,
                     const void* value, const std::string& where) {
  if (H5Aexists(node, name.c_str()) > 0) H5Adelete(node, name.c_str());
  Id space = scalar_space();
  Id attr(checked(H5Acreate2(node, name.c_str(), file_type_id, space.get(), H5P_DEFAULT, H5P_DEFAULT),
                  "create attribute " + name, where),
          H5Aclose);
  checked_status(H5Awrite(attr.get(), mem_type, value), "write attribute " + name, where);
}

Id open_attribute(hid_t node, const std::string& name, const std::string& where) {
  if (H5Aexists(node, name.c_str()) <= 0) fail("no attribute " + name, where);
  return Id(checked(H5Aopen(node, name.c_str(), H5P_DEFAULT), "open attribute " + name, where), H5Aclose);
}

H5T_class_t attribute_class(hid_t attr, const std::string& name, const std::string& where) {
  Id type(checked(H5Aget_type(attr), "get type of attribute " + name, where), H5Tclose);
  return H5Tget_class(type.get());
}

}  // namespace

void Node::set(const std::string& name, int64_t value) {
  write_attribute(id(), name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value, where_);
}

void Node::set(const std::string& name, double value) {
  write_attribute(id(), name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value, where_);
}

void Node::set(const std::string& name, const std::string& value) {
  Id type = string_type();
  const char* ptr = value.c_str();
  write_attribute(id(), name, type.get(), type.get(), &ptr, where_);
}

int64_t Node::get_int64(const std::string& name) const {
  Id attr = open_attribute(id(), name, where_);
  if (attribute_class(attr.get(), name, where_) != H5T_INTEGER) fail("attribute " + name + " is not an integer", where_);
  int64_t value = 0;
  checked_status(H5Aread(attr.get(), H5T_NATIVE_INT64, &value), "read attribute " + name, where_);
  return value;
}

double Node::get_double(const std::string& name) const {
  Id attr = open_attribute(id(), name, where_);
  const H5T_class_t cls = attribute_class(attr.get(), name, where_);
  if (cls != H5T_FLOAT && cls != H5T_INTEGER) fail("attribute " + name + " is not a number", where_);
  double value = 0;
  checked_status(H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &value), "read attribute " + name, where_);
  return value;
}

std::string Node::get_string(const std::string& name) const {
  Id attr = open_attribute(id(), name, where_);
  Id stored(checked(H5Aget_type(attr.get()), "get type of attribute " + name, where_), H5Tclose);
  if (H5Tget_class(stored.get()) != H5T_STRING) fail("attribute " + name + " is not a string", where_);
  if (H5Tis_variable_str(stored.get()) > 0) {
    Id type = string_type();
    char* ptr = nullptr;
    checked_status(H5Aread(attr.get(), type.get(), &ptr), "read attribute " + name, where_);
    std::string value = ptr ? ptr : "";
    H5free_memory(ptr);
    return value;
  }
  // Fixed-length strings (written by other tools) are read as they are, without padding.
  std::string value(H5Tget_size(stored.get()), '\0');
  checked_status(H5Aread(attr.get(), stored.get(), value.data()), "read attribute " + name, where_);
  return value.substr(0, value.find('\0'));
}

std::vector<std::string> Node::attribute_names() const {
  std::vector<std::string> names;
  hsize_t index = 0;
  checked_status(H5Aiterate2(id(), H5_INDEX_NAME, H5_ITER_INC, &index, collect_attribute, &names),
                 "list attributes", where_);
  return names;
}

bool Node::has_child(const std::string& name) const {
  const htri_t exists = H5Lexists(id(), name.c_str(), H5P_DEFAULT);
  checked_status(exists < 0 ? -1 : 0, "check link " + name, where_);
  return exists > 0;
}

std::vector<std::string> Node::child_names() const {
  std::vector<std::string> names;
  hsize_t index = 0;
  checked_status(FINEMOE_H5LITERATE(id(), H5_INDEX_NAME, H5_ITER_INC, &index, collect_link, &names),
                 "list children", where_);
  return names;
}

Group Node::create_group(const std::string& name) {
  return Group(Id(checked(H5Gcreate2(id(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                          "create group " + name, where_),
                  H5Gclose),
               child_where(name));
}

Group Node::open_group(const std::string& name) const {
  if (!has_child(name)) fail("no group " + name, where_);
  return Group(Id(checked(H5Gopen2(id(), name.c_str(), H5P_DEFAULT), "open group " + name, where_), H5Gclose),
               child_where(name));
}

void Node::remove_child(const std::string& name) {
  if (has_child(name)) checked_status(H5Ldelete(id(), name.c_str(), H5P_DEFAULT), "delete " + name, where_);
}

void Node::write_text(const std::string& name, const std::string& text) {
  remove_child(name);
  Id type = string_type();
  Id space = scalar_space();
  Id dset(checked(H5Dcreate2(id(), name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT,
                             H5P_DEFAULT),
                  "create dataset " + name, where_),
          H5Dclose);
  const char* ptr = text.c_str();
  checked_status(H5Dwrite(dset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &ptr),
                 "write dataset " + name, where_);
}

std::string Node::read_text(const std::string& name) const {
  const std::vector<std::string> values = read_strings(name);
  if (values.size() != 1) fail("dataset " + name + " is not one string", where_);
  return values[0];
}

void Node::write_strings(const std::string& name, const std::vector<std::string>& values) {
  remove_child(name);
  Id type = string_type();
  const hsize_t n = values.size();
  Id space(H5Screate_simple(1, &n, nullptr), H5Sclose);
  Id dset(checked(H5Dcreate2(id(), name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT,
                             H5P_DEFAULT),
                  "create dataset " + name, where_),
          H5Dclose);
  std::vector<const char*> ptrs;
  for (const auto& v : values) ptrs.push_back(v.c_str());
  if (n > 0) {
    checked_status(H5Dwrite(dset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()),
                   "write dataset " + name, where_);
  }
}

std::vector<std::string> Node::read_strings(const std::string& name) const {
  if (!has_child(name)) fail("no dataset " + name, where_);
  const std::string where = child_where(name);
  Id dset(checked(H5Dopen2(id(), name.c_str(), H5P_DEFAULT), "open dataset", where), H5Dclose);
  Id stored(checked(H5Dget_type(dset.get()), "get dataset type", where), H5Tclose);
  if (H5Tget_class(stored.get()) != H5T_STRING || H5Tis_variable_str(stored.get()) <= 0) {
    fail("dataset is not variable-length text", where);
  }
  Id space(checked(H5Dget_space(dset.get()), "get dataspace", where), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  std::vector<char*> ptrs(std::size_t(std::max<hssize_t>(n, 0)), nullptr);
  Id type = string_type();
  if (n > 0) {
    checked_status(H5Dread(dset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()),
                   "read dataset", where);
  }
  std::vector<std::string> values;
  for (char* p : ptrs) {
    values.emplace_back(p ? p : "");
    H5free_memory(p);
  }
  return values;
}

Series Node::create_series(const std::string& name, Type type, const std::vector<hsize_t>& inner,
                           hsize_t chunk_rows) {
  std::vector<hsize_t> dims{0}, max_dims{H5S_UNLIMITED}, chunk{chunk_rows};
  for (hsize_t d : inner) {
    dims.push_back(d);
    max_dims.push_back(d);
    chunk.push_back(std::max<hsize_t>(d, 1));
  }
  Id space(H5Screate_simple(int(dims.size()), dims.data(), max_dims.data()), H5Sclose);
  Id props(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  checked_status(H5Pset_chunk(props.get(), int(chunk.size()), chunk.data()), "set chunking", where_);
  Id dset(checked(H5Dcreate2(id(), name.c_str(), file_type(type), space.get(), H5P_DEFAULT, props.get(),
                             H5P_DEFAULT),
                  "create dataset " + name, where_),
          H5Dclose);
  return Series(std::move(dset), child_where(name));
}

Series Node::open_series(const std::string& name) const {
  if (!has_child(name)) fail("no dataset " + name, where_);
  return Series(Id(checked(H5Dopen2(id(), name.c_str(), H5P_DEFAULT), "open dataset " + name, where_), H5Dclose),
                child_where(name));
}

// ------------------------------------------------------------------------------------ File

File File::create(const std::string& path) {
  silence_library_errors();
  const hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (id < 0) throw InputError(path + ": cannot create HDF5 file (check the folder exists and is writable)");
  return File(Id(id, H5Fclose), path);
}

File File::open(const std::string& path, bool writable) {
  silence_library_errors();
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) throw InputError(path + ": no such file");
  if (H5Fis_hdf5(path.c_str()) <= 0) throw InputError(path + ": not an HDF5 file (or damaged beyond reading)");
  const hid_t id = H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) {
    throw InputError(path + ": cannot open HDF5 file" + std::string(writable ? " for writing" : "") +
                     " (damaged, locked by another writer, or not permitted)");
  }
  return File(Id(id, H5Fclose), path);
}

void File::flush() { checked_status(H5Fflush(id(), H5F_SCOPE_GLOBAL), "flush", path_); }

}  // namespace finemoe::h5
