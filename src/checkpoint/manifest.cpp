#include "checkpoint/manifest.h"

#include <zlib.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>

#include "util/check.h"

namespace finemoe {
namespace {

constexpr const char* kMagicKey = "finemoe-checkpoint";
constexpr const char* kCrcKey = "manifest_crc32";

uint32_t crc_of(const std::string& s) {
  return static_cast<uint32_t>(
      crc32_z(0L, reinterpret_cast<const Bytef*>(s.data()), static_cast<z_size_t>(s.size())));
}

std::string hex32(uint32_t v) {
  char buf[9];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

const char* group_name(ParamGroup g) { return g == ParamGroup::expert ? "expert" : "replicated"; }

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

// Reads one line's whitespace-separated fields and reports errors with the line number.
class LineParser {
 public:
  LineParser(const std::string& path, int line, const std::string& text) : path_(path), line_(line) {
    std::istringstream is(text);
    for (std::string f; is >> f;) fields_.push_back(f);
  }
  const std::string& key() const { return fields_.at(0); }
  bool empty() const { return fields_.empty(); }
  size_t size() const { return fields_.size(); }

  void expect_fields(size_t n) const {
    if (fields_.size() != n) fail("'" + key() + "' needs " + std::to_string(n - 1) + " value(s)");
  }
  void expect_at_least(size_t n) const {
    if (fields_.size() < n) fail("'" + key() + "' needs at least " + std::to_string(n - 1) + " value(s)");
  }
  const std::string& text(size_t i) const { return fields_.at(i); }

  template <typename I>
  I integer(size_t i, I min_value) const {
    const std::string& f = fields_.at(i);
    I v{};
    const auto [end, ec] = std::from_chars(f.data(), f.data() + f.size(), v);
    if (ec != std::errc() || end != f.data() + f.size() || v < min_value)
      fail("'" + key() + "': '" + f + "' is not an integer >= " + std::to_string(min_value));
    return v;
  }
  double real(size_t i) const {
    const std::string& f = fields_.at(i);
    double v = 0;
    const auto [end, ec] = std::from_chars(f.data(), f.data() + f.size(), v);
    if (ec != std::errc() || end != f.data() + f.size()) fail("'" + key() + "': '" + f + "' is not a number");
    return v;
  }
  uint32_t hex(size_t i) const {
    const std::string& f = fields_.at(i);
    uint32_t v = 0;
    const auto [end, ec] = std::from_chars(f.data(), f.data() + f.size(), v, 16);
    if (ec != std::errc() || end != f.data() + f.size() || f.size() != 8)
      fail("'" + key() + "': '" + f + "' is not 8 hex digits");
    return v;
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw CorruptCheckpoint(path_ + ":" + std::to_string(line_) + ": " + what);
  }

 private:
  const std::string& path_;
  int line_;
  std::vector<std::string> fields_;
};

bool safe_file_name(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name != "." && name != "..";
}

// Segments must name listed files and tensors, lie inside their file, and cover each tensor's
// global experts exactly once.
void check_segments(const Manifest& m, const std::string& path) {
  const int64_t scalar = m.scalar_bytes();
  std::map<std::string, std::vector<const Segment*>> by_tensor;
  for (const Segment& s : m.segments) {
    const FileEntry* f = m.find_file(s.file);
    const TensorDescription* t = m.model.find(s.tensor);
    if (!f) throw CorruptCheckpoint(path + ": segment of '" + s.tensor + "' names unlisted file '" + s.file + "'");
    if (!t) throw CorruptCheckpoint(path + ": segment names unknown tensor '" + s.tensor + "'");
    // In checked arithmetic: a manifest with a valid CRC may still hold absurd numbers.
    int64_t bytes = 0, end = 0;
    const bool overflow = s.experts < 1 || t->numel_per_expert() < 0 ||
                          __builtin_mul_overflow(s.experts, t->numel_per_expert(), &bytes) ||
                          __builtin_mul_overflow(bytes, 3 * scalar, &bytes) ||
                          __builtin_add_overflow(s.offset, bytes, &end);
    if (overflow || s.offset < 0 || end > f->bytes)
      throw CorruptCheckpoint(path + ": segment of '" + s.tensor + "' (experts " + std::to_string(s.first_expert) +
                              ".." + std::to_string(s.first_expert + s.experts - 1) + ") lies outside " + s.file);
    by_tensor[s.tensor].push_back(&s);
  }
  for (const TensorDescription& t : m.model.tensors) {
    auto& segs = by_tensor[t.name];
    std::sort(segs.begin(), segs.end(),
              [](const Segment* a, const Segment* b) { return a->first_expert < b->first_expert; });
    int64_t next = 0;
    bool contiguous = true;
    for (const Segment* s : segs) {
      contiguous = contiguous && s->first_expert == next && !__builtin_add_overflow(next, s->experts, &next);
      if (!contiguous) break;
    }
    if (!contiguous || next != t.experts)
      throw CorruptCheckpoint(path + ": the segments of tensor '" + t.name + "' do not cover its " +
                              std::to_string(t.experts) + " expert(s) exactly once");
  }
}

}  // namespace

// -1 when the product does not fit (only a damaged manifest describes such a tensor).
int64_t TensorDescription::numel_per_expert() const {
  int64_t n = 1;
  for (int64_t d : shape_per_expert)
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
  return n;
}

const TensorDescription* ModelDescription::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

int Manifest::scalar_bytes() const { return model.precision == "f64" ? 8 : 4; }

const FileEntry* Manifest::find_file(const std::string& name) const {
  for (const auto& f : files)
    if (f.name == name) return &f;
  return nullptr;
}

std::string format_manifest(const Manifest& m) {
  std::ostringstream os;
  char wall[40];
  std::snprintf(wall, sizeof wall, "%.17g", m.progress.wall_time_s);  // round-trips exactly
  os << kMagicKey << " " << kCheckpointFormatVersion << "\n"
     << "step " << m.progress.step << "\n"
     << "tokens " << m.progress.tokens << "\n"
     << "seed " << m.progress.seed << "\n"
     << "wall_time_s " << wall << "\n"
     << "restarts " << m.progress.restarts << "\n"
     << "precision " << m.model.precision << "\n"
     << "n_experts " << m.model.n_experts << "\n"
     << "saved_world_size " << m.saved_world_size << "\n"
     << "saved_expert_parallel " << m.saved_expert_parallel << "\n";
  for (const auto& t : m.model.tensors) {
    os << "tensor " << t.name << " " << group_name(t.group) << " " << t.experts << " " << t.shape_per_expert.size();
    for (int64_t d : t.shape_per_expert) os << " " << d;
    os << "\n";
  }
  for (const auto& f : m.files) os << "file " << f.name << " " << f.bytes << " " << hex32(f.crc32) << "\n";
  for (const auto& s : m.segments)
    os << "segment " << s.file << " " << s.tensor << " " << s.first_expert << " " << s.experts << " " << s.offset
       << "\n";
  for (const auto& [key, value] : m.settings) os << "setting " << key << " " << value << "\n";
  std::string body = os.str();
  return body + kCrcKey + " " + hex32(crc_of(body)) + "\n";
}

Manifest parse_manifest(const std::string& text, const std::string& path) {
  // The last line holds the CRC32 of everything before it.
  const std::string crc_line_start = std::string("\n") + kCrcKey + " ";
  const size_t crc_pos = text.rfind(crc_line_start);
  if (text.empty()) throw CorruptCheckpoint(path + ": empty");
  if (crc_pos == std::string::npos || text.back() != '\n')
    throw CorruptCheckpoint(path + ": incomplete (no final '" + std::string(kCrcKey) + "' line)");
  const std::string body = text.substr(0, crc_pos + 1);
  {
    const int crc_line_no = static_cast<int>(std::count(body.begin(), body.end(), '\n')) + 1;
    LineParser crc_line(path, crc_line_no, text.substr(crc_pos + 1));
    crc_line.expect_fields(2);
    const uint32_t stored = crc_line.hex(1);
    if (stored != crc_of(body))
      throw CorruptCheckpoint(path + ": checksum mismatch (CRC32 " + hex32(crc_of(body)) + ", recorded " +
                              hex32(stored) + ")");
  }

  Manifest m;
  std::set<std::string> seen;
  std::istringstream is(body);
  std::string raw;
  int line_no = 0;
  while (std::getline(is, raw)) {
    ++line_no;
    LineParser line(path, line_no, raw);
    if (line.empty()) continue;
    const std::string& key = line.key();
    if (line_no == 1) {
      if (key != kMagicKey) line.fail("not a finemoe checkpoint manifest");
      line.expect_fields(2);
      const int version = line.integer<int>(1, 1);
      if (version != kCheckpointFormatVersion)
        throw InputError(path + ": checkpoint format version " + std::to_string(version) + "; this build reads " +
                         std::to_string(kCheckpointFormatVersion));
      continue;
    }
    const bool repeatable = key == "tensor" || key == "file" || key == "segment" || key == "setting";
    if (!repeatable && !seen.insert(key).second) line.fail("'" + key + "' given twice");
    if (key == "step") {
      line.expect_fields(2);
      m.progress.step = line.integer<int64_t>(1, 0);
    } else if (key == "tokens") {
      line.expect_fields(2);
      m.progress.tokens = line.integer<int64_t>(1, 0);
    } else if (key == "seed") {
      line.expect_fields(2);
      m.progress.seed = line.integer<uint64_t>(1, 0);
    } else if (key == "wall_time_s") {
      line.expect_fields(2);
      m.progress.wall_time_s = line.real(1);
    } else if (key == "restarts") {
      line.expect_fields(2);
      m.progress.restarts = line.integer<int64_t>(1, 0);
    } else if (key == "precision") {
      line.expect_fields(2);
      m.model.precision = line.text(1);
      if (m.model.precision != "f32" && m.model.precision != "f64") line.fail("precision must be f32 or f64");
    } else if (key == "n_experts") {
      line.expect_fields(2);
      m.model.n_experts = line.integer<int64_t>(1, 0);
    } else if (key == "saved_world_size") {
      line.expect_fields(2);
      m.saved_world_size = line.integer<int>(1, 1);
    } else if (key == "saved_expert_parallel") {
      line.expect_fields(2);
      m.saved_expert_parallel = line.integer<int>(1, 1);
    } else if (key == "tensor") {
      line.expect_at_least(5);
      TensorDescription t;
      t.name = line.text(1);
      if (line.text(2) == "expert") t.group = ParamGroup::expert;
      else if (line.text(2) != "replicated") line.fail("tensor group must be replicated or expert");
      t.experts = line.integer<int64_t>(3, 1);
      const size_t ndim = line.integer<size_t>(4, 0);
      line.expect_fields(5 + ndim);
      for (size_t d = 0; d < ndim; ++d) t.shape_per_expert.push_back(line.integer<int64_t>(5 + d, 0));
      if (m.model.find(t.name)) line.fail("tensor '" + t.name + "' listed twice");
      if (t.group == ParamGroup::replicated && t.experts != 1) line.fail("a replicated tensor has 1 expert");
      m.model.tensors.push_back(std::move(t));
    } else if (key == "file") {
      line.expect_fields(4);
      FileEntry f{line.text(1), line.integer<int64_t>(2, 0), line.hex(3)};
      if (!safe_file_name(f.name)) line.fail("'" + f.name + "' is not a plain file name");
      if (m.find_file(f.name)) line.fail("file '" + f.name + "' listed twice");
      m.files.push_back(std::move(f));
    } else if (key == "segment") {
      line.expect_fields(6);
      m.segments.push_back(Segment{line.text(1), line.text(2), line.integer<int64_t>(3, 0),
                                   line.integer<int64_t>(4, 1), line.integer<int64_t>(5, 0)});
    } else if (key == "setting") {
      line.expect_fields(3);
      for (const auto& kv : m.settings)
        if (kv.first == line.text(1)) line.fail("setting '" + kv.first + "' given twice");
      m.settings.emplace_back(line.text(1), line.text(2));
    } else {
      line.fail("unknown key '" + key + "'");
    }
  }
  for (const char* required : {"step", "tokens", "seed", "wall_time_s", "restarts", "precision", "n_experts",
                               "saved_world_size", "saved_expert_parallel"})
    if (!seen.count(required)) throw CorruptCheckpoint(path + ": '" + required + "' is missing");
  check_segments(m, path);
  return m;
}

void check_compatible(const ModelDescription& saved, const ModelDescription& current, const std::string& path) {
  const std::string prefix = path + ": the checkpoint is of a different model: ";
  if (saved.precision != current.precision)
    throw InputError(prefix + "precision is " + saved.precision + " in the checkpoint, " + current.precision +
                     " in this run");
  if (saved.n_experts != current.n_experts)
    throw InputError(prefix + "n_experts is " + std::to_string(saved.n_experts) + " in the checkpoint, " +
                     std::to_string(current.n_experts) + " in this run");
  for (const TensorDescription& c : current.tensors) {
    const TensorDescription* s = saved.find(c.name);
    if (!s) throw InputError(prefix + "tensor '" + c.name + "' is in this run's model but not in the checkpoint");
    if (s->group != c.group)
      throw InputError(prefix + "tensor '" + c.name + "' is " + group_name(s->group) + " in the checkpoint, " +
                       group_name(c.group) + " in this run");
    if (s->experts != c.experts)
      throw InputError(prefix + "tensor '" + c.name + "' has " + std::to_string(s->experts) +
                       " experts in the checkpoint, " + std::to_string(c.experts) + " in this run");
    if (s->shape_per_expert != c.shape_per_expert)
      throw InputError(prefix + "tensor '" + c.name + "' has shape per expert " + shape_text(s->shape_per_expert) +
                       " in the checkpoint, " + shape_text(c.shape_per_expert) + " in this run");
  }
  for (const TensorDescription& s : saved.tensors)
    if (!current.find(s.name))
      throw InputError(prefix + "tensor '" + s.name + "' is in the checkpoint but not in this run's model");
}

}  // namespace finemoe
