#pragma once
// Parameter files and command lines (Boost.Program_options): `[section] key = value` is the
// option `section.key`; the command line (`--section.key=value`) overrides the file.
#include <string>
#include <vector>

#include "config/config.h"

namespace finemoe {

struct CommandLine {
  Config config;
  bool help = false;
  bool print_config = false;
  bool dry_run = false;
  int dry_run_ranks = 0;  // --ranks: size the dry run for this many ranks (0 = those running)
  bool quiet = false;
  bool resume = false;  // --resume: same as train.resume = auto
  std::string help_text;
};

// Parses argv (program name first). Throws InputError naming the file, the key, the bad value
// and what is allowed. Does not check the layout against the world size (see validate.h).
CommandLine parse_command_line(int argc, const char* const* argv);

// Parses a parameter file's text alone (for tools that read parameter files: sweeps, tests).
Config parse_config_text(const std::string& text, const std::string& origin);

// Every option with its default and meaning.
std::string options_help();

}  // namespace finemoe
