#pragma once
// A sweep definition (inputs/sweeps/*.ini): a base parameter file and axes; the runs are the
// cross product of the axes' points.
//
//   [sweep]
//   name = tiny-cpu                      # names the sweep's jobs
//   base = ../cpu-tiny.ini               # parameter file every run starts from (relative to this file)
//   output = runs/sweeps/tiny-cpu        # run <name> writes <output>/<name>/record.h5
//   ranks = 2                            # MPI ranks per run
//   set = train.eval_interval=0          # repeated: applied to every run
//   name_format = {shape}-{ffn}-{tokens} # optional; default: the points' labels joined by '-'
//
//   [axis shape]                         # named points, each setting several keys
//   point = s64: model.d_model=64 model.n_blocks=2 model.n_heads=4
//   point = s96: model.d_model=96 model.n_blocks=2 model.n_heads=4
//
//   [axis G]                             # one key, a list of values; labels G1, G2, ...
//   key = moe.granularity
//   values = 1 2 4
//
// Precedence, lowest first: base file, the allocation's [parameters], `set`, the axes in order,
// finemoe-sweep --set. Labels: letters, digits and . _ + - only.
#include <string>
#include <utility>
#include <vector>

namespace finemoe::sweep {

using Override = std::pair<std::string, std::string>;  // key, value

struct AxisPoint {
  std::string label;
  std::vector<Override> overrides;
  int line = 0;
};

struct Axis {
  std::string name;
  std::vector<AxisPoint> points;
  int line = 0;
};

struct SweepDefinition {
  std::string file;
  std::string name;
  std::string base;  // resolved relative to the sweep file's folder
  std::string output;
  int ranks = 1;
  std::vector<Override> set;
  std::string name_format;
  std::vector<Axis> axes;
};

SweepDefinition parse_sweep(const std::string& text, const std::string& origin);
SweepDefinition read_sweep(const std::string& path);

// "key=value" -> {key, value}; InputError naming `where` when malformed.
Override parse_override(const std::string& text, const std::string& where);

bool valid_label(const std::string& s);

}  // namespace finemoe::sweep
