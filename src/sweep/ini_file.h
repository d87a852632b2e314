#pragma once
// A small INI reader for sweep definitions and allocation files: `[section]`, `key = value`,
// `#` or `;` comments, repeated keys kept in order, each entry with its line number so errors can
// point at it. (Parameter files themselves go through Boost.Program_options, config/options.h.)
#include <string>
#include <vector>

namespace finemoe::sweep {

struct IniEntry {
  std::string section;  // text inside [ ], trimmed, inner white space collapsed to one space
  std::string key;
  std::string value;    // trimmed; may be empty
  int line = 0;
};

// Throws InputError "ORIGIN:LINE: ..." on a line that is neither a section, a key = value pair,
// a comment nor blank.
std::vector<IniEntry> parse_ini(const std::string& text, const std::string& origin);
// Reads and parses a file; InputError naming it when it cannot be read.
std::vector<IniEntry> read_ini(const std::string& path);
std::string read_text_file(const std::string& path);

std::string trim(const std::string& s);
// Splits on white space and commas.
std::vector<std::string> split_list(const std::string& s);

}  // namespace finemoe::sweep
