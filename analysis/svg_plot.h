#pragma once
// A small SVG line and scatter plot writer (log or linear axes), enough for the analysis plots.
#include <string>
#include <vector>

namespace finemoe::analysis {

struct PlotSeries {
  std::string label;
  std::vector<double> x, y;
  bool line = false;  // connected line; otherwise markers
};

struct PlotSpec {
  std::string title, x_label, y_label;
  bool log_x = false, log_y = false;
  bool diagonal = false;  // draw y = x (observed vs predicted)
  std::vector<PlotSeries> series;
};

// Writes the plot; series points that cannot be drawn (non-finite, or <= 0 on a log axis) are
// left out. RuntimeFailure when the file cannot be written.
void write_svg_plot(const std::string& path, const PlotSpec& spec);

}  // namespace finemoe::analysis
