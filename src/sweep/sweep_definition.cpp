#include "sweep/sweep_definition.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <set>

#include "sweep/ini_file.h"
#include "util/check.h"

namespace fs = std::filesystem;

namespace finemoe::sweep {

bool valid_label(const std::string& s) {
  if (s.empty() || s[0] == '.' || s[0] == '-') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '+' || c == '-';
  });
}

Override parse_override(const std::string& text, const std::string& where) {
  const auto eq = text.find('=');
  const std::string key = eq == std::string::npos ? "" : trim(text.substr(0, eq));
  const std::string value = eq == std::string::npos ? "" : trim(text.substr(eq + 1));
  if (key.empty() || key.find('.') == std::string::npos || value.empty())
    throw InputError(where + ": '" + text + "' is not a setting: expected section.key=value (e.g. moe.granularity=4)");
  return {key, value};
}

SweepDefinition parse_sweep(const std::string& text, const std::string& origin) {
  SweepDefinition def;
  def.file = origin;
  const auto entries = parse_ini(text, origin);
  bool have_base = false, have_output = false;
  std::set<std::string> axis_names;
  for (const auto& e : entries) {
    const std::string where = origin + ":" + std::to_string(e.line);
    if (e.section == "sweep") {
      if (e.key == "name") {
        if (!valid_label(e.value)) throw InputError(where + ": [sweep] name = '" + e.value + "' is invalid: letters, digits and . _ + - only");
        def.name = e.value;
      } else if (e.key == "base") {
        const fs::path p = e.value;
        def.base = p.is_absolute() ? p.string() : (fs::path(origin).parent_path() / p).lexically_normal().string();
        have_base = true;
      } else if (e.key == "output") {
        if (e.value.empty() || e.value.find_first_of(" \t") != std::string::npos)
          throw InputError(where + ": [sweep] output = '" + e.value + "' is invalid: a folder without spaces");
        def.output = e.value;
        have_output = true;
      } else if (e.key == "ranks") {
        char* end = nullptr;
        const long r = std::strtol(e.value.c_str(), &end, 10);
        if (e.value.empty() || *end || r < 1 || r > 1000000)
          throw InputError(where + ": [sweep] ranks = '" + e.value + "' is invalid: expected an integer >= 1");
        def.ranks = int(r);
      } else if (e.key == "set") {
        def.set.push_back(parse_override(e.value, where + ": [sweep] set"));
      } else if (e.key == "name_format") {
        def.name_format = e.value;
      } else if (e.key == "description") {
      } else {
        throw InputError(where + ": unknown key '" + e.key +
                         "' in [sweep] (allowed: name base output ranks set name_format description)");
      }
      continue;
    }
    if (e.section.rfind("axis ", 0) == 0) {
      const std::string name = e.section.substr(5);
      if (!valid_label(name)) throw InputError(where + ": axis name '" + name + "' is invalid: letters, digits and . _ + - only");
      if (def.axes.empty() || def.axes.back().name != name) {
        if (!axis_names.insert(name).second)
          throw InputError(where + ": axis '" + name + "' is defined twice in " + origin);
        Axis axis;
        axis.name = name;
        axis.line = e.line;
        def.axes.push_back(axis);
      }
      Axis& axis = def.axes.back();
      const std::string in_axis = where + ": axis '" + name + "'";
      if (e.key == "point") {
        const auto colon = e.value.find(':');
        if (colon == std::string::npos)
          throw InputError(in_axis + ": point '" + e.value + "' is invalid: expected 'LABEL: key=value key=value ...'");
        AxisPoint p;
        p.label = trim(e.value.substr(0, colon));
        p.line = e.line;
        if (!valid_label(p.label))
          throw InputError(in_axis + ": point label '" + p.label + "' is invalid: letters, digits and . _ + - only");
        for (const auto& item : split_list(e.value.substr(colon + 1)))
          p.overrides.push_back(parse_override(item, in_axis + ", point '" + p.label + "'"));
        if (p.overrides.empty()) throw InputError(in_axis + ", point '" + p.label + "': sets nothing");
        axis.points.push_back(p);
      } else if (e.key == "key") {
        // Stored until `values` arrives.
        if (!axis.points.empty() && axis.points.back().label.empty())
          throw InputError(in_axis + ": 'key' given twice before 'values'");
        AxisPoint pending;
        pending.overrides.emplace_back(e.value, "");
        pending.line = e.line;
        axis.points.push_back(pending);
      } else if (e.key == "values") {
        if (axis.points.empty() || !axis.points.back().label.empty())
          throw InputError(in_axis + ": 'values' needs a 'key = section.key' line before it");
        const std::string key = axis.points.back().overrides.front().first;
        axis.points.pop_back();
        const auto values = split_list(e.value);
        if (values.empty()) throw InputError(in_axis + ": 'values' is empty");
        for (const auto& v : values) {
          AxisPoint p;
          p.label = name + v;
          p.line = e.line;
          if (!valid_label(p.label))
            throw InputError(in_axis + ": value '" + v + "' makes the label '" + p.label +
                             "', which is invalid (letters, digits and . _ + - only); use 'point = LABEL: " + key + "=" + v + "'");
          p.overrides.emplace_back(key, v);
          axis.points.push_back(p);
        }
      } else {
        throw InputError(where + ": unknown key '" + e.key + "' in [axis " + name + "] (allowed: point, or key + values)");
      }
      continue;
    }
    throw InputError(where + ": unknown section [" + e.section + "] (allowed: [sweep], [axis NAME])");
  }
  for (const auto& axis : def.axes) {
    if (axis.points.empty() || axis.points.back().label.empty())
      throw InputError(origin + ":" + std::to_string(axis.line) + ": axis '" + axis.name + "' has no points");
    std::set<std::string> labels;
    for (const auto& p : axis.points)
      if (!labels.insert(p.label).second)
        throw InputError(origin + ":" + std::to_string(p.line) + ": axis '" + axis.name + "': point '" + p.label +
                         "' is given twice (duplicate point)");
  }
  if (!have_base) throw InputError(origin + ": [sweep] base is missing (the parameter file every run starts from)");
  if (!have_output) throw InputError(origin + ": [sweep] output is missing (the folder for the runs)");
  if (def.name.empty()) def.name = fs::path(origin).stem().string();
  return def;
}

SweepDefinition read_sweep(const std::string& path) { return parse_sweep(read_text_file(path), path); }

}  // namespace finemoe::sweep
