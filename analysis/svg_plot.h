#pragma once
// A small SVG line and scatter plot writer (log or linear axes), enough for the analysis plots.
#include <string>
#include <vector>

namespace finemoe::analysis {

struct PlotSeries {
  std::string label;  // legend entry; empty = none
  std::vector<double> x, y;
  bool line = false;  // connected line; otherwise markers
  int color = -1;     // palette index; -1 = the series' own index
  bool dashed = false;
};

// How tick labels are written: plain numbers (3.5, 1e+20 -> 1e20), or counts with SI-like
// suffixes (135M, 2.1B, 4.4T).
enum class TickFormat { plain, count };

struct PlotSpec {
  std::string title, x_label, y_label;
  std::string note;  // a line under the title (e.g. how to read the plot)
  bool log_x = false, log_y = false;
  bool log2_x = false, log2_y = false;  // log axes ticked at powers of two (granularity)
  TickFormat x_format = TickFormat::plain, y_format = TickFormat::plain;
  bool diagonal = false;  // draw y = x (observed vs predicted)
  std::vector<PlotSeries> series;
};

// Writes the plot; series points that cannot be drawn (non-finite, or <= 0 on a log axis) are
// left out. RuntimeFailure when the file cannot be written.
void write_svg_plot(const std::string& path, const PlotSpec& spec);

}  // namespace finemoe::analysis
