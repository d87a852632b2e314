#pragma once
// Small helpers of finemoe-bench: timing, medians, the machine's load, a JSON writer and option
// parsing. Header-only, used by src/apps/finemoe_bench.cpp and bench/plan.cpp.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace finemoe::bench {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// 1-, 5- and 15-minute load averages (other people's builds share these cores: the bench reports
// the load it saw so a figure taken on a busy machine can be recognised).
inline std::vector<double> load_average() {
  std::ifstream f("/proc/loadavg");
  double a = -1, b = -1, c = -1;
  f >> a >> b >> c;
  return {a, b, c};
}

// Options: --key value or --flag; positional arguments kept in order.
class Options {
 public:
  Options(int argc, char** argv, int first) {
    for (int i = first; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) == 0) {
        std::string key = a.substr(2), value = "true";
        const auto eq = key.find('=');
        if (eq != std::string::npos) {
          value = key.substr(eq + 1);
          key = key.substr(0, eq);
        } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
          value = argv[++i];
        }
        values_[key] = value;
      } else {
        positional_.push_back(a);
      }
    }
  }
  bool has(const std::string& k) const { return values_.count(k) > 0; }
  // Throws naming the first option no read so far used: called once a subcommand has read its
  // options and before it runs, so a typo fails at once instead of after a full benchmark.
  void require_all_used() const {
    const auto u = unused();
    if (!u.empty()) throw std::invalid_argument("unknown option --" + u.front());
  }
  std::string str(const std::string& k, const std::string& def) const {
    auto it = values_.find(k);
    used_.push_back(k);
    return it == values_.end() ? def : it->second;
  }
  double num(const std::string& k, double def) const {
    auto it = values_.find(k);
    used_.push_back(k);
    if (it == values_.end()) return def;
    char* end = nullptr;
    const double v = std::strtod(it->second.c_str(), &end);
    if (end == it->second.c_str() || *end) throw std::invalid_argument("--" + k + ": not a number: " + it->second);
    return v;
  }
  int integer(const std::string& k, int def) const { return static_cast<int>(num(k, def)); }
  bool flag(const std::string& k) const {
    used_.push_back(k);
    auto it = values_.find(k);
    return it != values_.end() && it->second != "false" && it->second != "0";
  }
  std::vector<int> int_list(const std::string& k, const std::vector<int>& def) const {
    used_.push_back(k);
    auto it = values_.find(k);
    if (it == values_.end()) return def;
    std::vector<int> out;
    std::stringstream ss(it->second);
    std::string item;
    while (std::getline(ss, item, ',')) out.push_back(std::stoi(item));
    return out;
  }
  // Options given but never asked for (typos): an error, listed.
  std::vector<std::string> unused() const {
    std::vector<std::string> out;
    for (const auto& kv : values_)
      if (std::find(used_.begin(), used_.end(), kv.first) == used_.end()) out.push_back(kv.first);
    return out;
  }
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
  mutable std::vector<std::string> used_;
};

// A minimal JSON writer: objects and arrays of numbers and strings.
class Json {
 public:
  Json& begin_object(const std::string& key = "") { open(key, '{'); return *this; }
  Json& end_object() { close('}'); return *this; }
  Json& begin_array(const std::string& key = "") { open(key, '['); return *this; }
  Json& end_array() { close(']'); return *this; }
  Json& num(const std::string& key, double v) {
    comma(key);
    char buf[64];
    if (v != v || v == 1.0 / 0.0 || v == -1.0 / 0.0) {
      out_ << "null";
    } else {
      // Integers (counts, offsets) exactly; other numbers to 7 significant digits.
      if (v == double(static_cast<long long>(v)) && v < 9e15 && v > -9e15)
        std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
      else
        std::snprintf(buf, sizeof buf, "%.7g", v);
      out_ << buf;
    }
    return *this;
  }
  Json& str(const std::string& key, const std::string& v) {
    comma(key);
    out_ << '"';
    for (char c : v) {
      if (c == '"' || c == '\\') out_ << '\\' << c;
      else if (c == '\n') out_ << "\\n";
      else out_ << c;
    }
    out_ << '"';
    return *this;
  }
  std::string text() const { return out_.str(); }

 private:
  void comma(const std::string& key) {
    if (!first_.empty()) {
      if (!first_.back()) out_ << ", ";
      first_.back() = false;
    }
    if (!key.empty()) out_ << '"' << key << "\": ";
  }
  void open(const std::string& key, char c) {
    comma(key);
    out_ << c;
    first_.push_back(true);
  }
  void close(char c) {
    out_ << c;
    first_.pop_back();
  }
  std::ostringstream out_;
  std::vector<bool> first_;
};

}  // namespace finemoe::bench
