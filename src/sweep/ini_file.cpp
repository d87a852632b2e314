#include "sweep/ini_file.h"

#include <fstream>
#include <sstream>

#include "util/check.h"

namespace finemoe::sweep {

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  const auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == ' ' || c == '\t' || c == ',') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

std::vector<IniEntry> parse_ini(const std::string& text, const std::string& origin) {
  std::vector<IniEntry> entries;
  std::istringstream in(text);
  std::string raw, section;
  int line = 0;
  while (std::getline(in, raw)) {
    ++line;
    std::string s = trim(raw);
    if (s.empty() || s[0] == '#' || s[0] == ';') continue;
    if (s[0] == '[') {
      if (s.back() != ']')
        throw InputError(origin + ":" + std::to_string(line) + ": section line '" + s + "' has no closing ']'");
      std::string name;
      for (const auto& part : split_list(s.substr(1, s.size() - 2))) name += (name.empty() ? "" : " ") + part;
      if (name.empty()) throw InputError(origin + ":" + std::to_string(line) + ": empty section name");
      section = name;
      continue;
    }
    const auto eq = s.find('=');
    if (eq == std::string::npos)
      throw InputError(origin + ":" + std::to_string(line) + ": expected 'key = value', got '" + s + "'");
    IniEntry e;
    e.section = section;
    e.key = trim(s.substr(0, eq));
    e.value = trim(s.substr(eq + 1));
    // A trailing comment after the value (" # ..."), as in the parameter files.
    for (const char* mark : {" #", "\t#", " ;", "\t;"}) {
      const auto c = e.value.find(mark);
      if (c != std::string::npos) e.value = trim(e.value.substr(0, c));
    }
    e.line = line;
    if (e.key.empty()) throw InputError(origin + ":" + std::to_string(line) + ": missing key before '='");
    entries.push_back(e);
  }
  return entries;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InputError("error: cannot open '" + path + "'");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<IniEntry> read_ini(const std::string& path) { return parse_ini(read_text_file(path), path); }

}  // namespace finemoe::sweep
