#include "svg_plot.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>

#include "util/check.h"

namespace finemoe::analysis {
namespace {

constexpr double kWidth = 720, kHeight = 480;
constexpr double kLeft = 80, kRight = 170, kTop = 40, kBottom = 60;
const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                               "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"};

struct Axis {
  bool log = false;
  double lo = 0, hi = 1;  // in plot coordinates (log10 for log axes)
  double to_plot(double v) const { return log ? std::log10(v) : v; }
  bool drawable(double v) const { return std::isfinite(v) && (!log || v > 0); }
};

std::string escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

std::string format_tick(double v) {
  std::ostringstream os;
  os.precision(3);
  os << v;
  return os.str();
}

std::vector<double> ticks(const Axis& axis) {
  std::vector<double> out;  // in data units
  if (axis.log) {
    for (double e = std::ceil(axis.lo); e <= axis.hi + 1e-9; e += 1) out.push_back(std::pow(10.0, e));
    if (out.size() < 2) {  // a narrow log range: linear ticks inside it
      out.clear();
      const double lo = std::pow(10.0, axis.lo), hi = std::pow(10.0, axis.hi);
      for (int i = 0; i <= 4; ++i) out.push_back(lo + (hi - lo) * i / 4);
    }
    return out;
  }
  const double span = axis.hi - axis.lo;
  const double raw = span / 5;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double step = raw / mag < 2 ? 2 * mag : raw / mag < 5 ? 5 * mag : 10 * mag;
  for (double t = std::ceil(axis.lo / step) * step; t <= axis.hi + 1e-9 * span; t += step) out.push_back(t);
  return out;
}

void fit_range(Axis& axis, const std::vector<double>& values) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (double v : values) {
    if (!axis.drawable(v)) continue;
    lo = std::min(lo, axis.to_plot(v));
    hi = std::max(hi, axis.to_plot(v));
  }
  if (!std::isfinite(lo)) lo = 0, hi = 1;
  if (hi - lo < 1e-12) lo -= 0.5, hi += 0.5;
  const double pad = 0.04 * (hi - lo);
  axis.lo = lo - pad;
  axis.hi = hi + pad;
}

}  // namespace

void write_svg_plot(const std::string& path, const PlotSpec& spec) {
  Axis xa, ya;
  xa.log = spec.log_x;
  ya.log = spec.log_y;
  std::vector<double> xs, ys;
  for (const auto& s : spec.series) {
    xs.insert(xs.end(), s.x.begin(), s.x.end());
    ys.insert(ys.end(), s.y.begin(), s.y.end());
  }
  if (spec.diagonal) {  // same range on both axes
    std::vector<double> both = xs;
    both.insert(both.end(), ys.begin(), ys.end());
    xs = ys = both;
  }
  fit_range(xa, xs);
  fit_range(ya, ys);
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  const auto px = [&](double v) { return kLeft + (xa.to_plot(v) - xa.lo) / (xa.hi - xa.lo) * pw; };
  const auto py = [&](double v) { return kTop + ph - (ya.to_plot(v) - ya.lo) / (ya.hi - ya.lo) * ph; };

  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << kLeft + pw / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
      << escape(spec.title) << "</text>\n"
      << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << pw << "\" height=\"" << ph
      << "\" fill=\"none\" stroke=\"black\"/>\n";
  for (double t : ticks(xa)) {
    svg << "<line x1=\"" << px(t) << "\" x2=\"" << px(t) << "\" y1=\"" << kTop << "\" y2=\"" << kTop + ph
        << "\" stroke=\"#ddd\"/><text x=\"" << px(t) << "\" y=\"" << kTop + ph + 16
        << "\" text-anchor=\"middle\">" << format_tick(t) << "</text>\n";
  }
  for (double t : ticks(ya)) {
    svg << "<line x1=\"" << kLeft << "\" x2=\"" << kLeft + pw << "\" y1=\"" << py(t) << "\" y2=\"" << py(t)
        << "\" stroke=\"#ddd\"/><text x=\"" << kLeft - 6 << "\" y=\"" << py(t) + 4
        << "\" text-anchor=\"end\">" << format_tick(t) << "</text>\n";
  }
  svg << "<text x=\"" << kLeft + pw / 2 << "\" y=\"" << kHeight - 18 << "\" text-anchor=\"middle\">"
      << escape(spec.x_label) << "</text>\n<text transform=\"translate(18," << kTop + ph / 2
      << ") rotate(-90)\" text-anchor=\"middle\">" << escape(spec.y_label) << "</text>\n";
  if (spec.diagonal) {
    const double lo = std::max(xa.lo, ya.lo), hi = std::min(xa.hi, ya.hi);
    const auto from_plot = [&](double v) { return xa.log ? std::pow(10.0, v) : v; };
    svg << "<line x1=\"" << px(from_plot(lo)) << "\" y1=\"" << py(from_plot(lo)) << "\" x2=\"" << px(from_plot(hi))
        << "\" y2=\"" << py(from_plot(hi)) << "\" stroke=\"#888\" stroke-dasharray=\"4 3\"/>\n";
  }
  for (std::size_t i = 0; i < spec.series.size(); ++i) {
    const PlotSeries& s = spec.series[i];
    const char* color = kColors[i % std::size(kColors)];
    if (s.line) {
      svg << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.5\" points=\"";
      for (std::size_t k = 0; k < s.x.size(); ++k) {
        if (xa.drawable(s.x[k]) && ya.drawable(s.y[k])) svg << px(s.x[k]) << "," << py(s.y[k]) << " ";
      }
      svg << "\"/>\n";
    } else {
      for (std::size_t k = 0; k < s.x.size(); ++k) {
        if (xa.drawable(s.x[k]) && ya.drawable(s.y[k])) {
          svg << "<circle cx=\"" << px(s.x[k]) << "\" cy=\"" << py(s.y[k]) << "\" r=\"3.5\" fill=\"" << color
              << "\" fill-opacity=\"0.75\"/>\n";
        }
      }
    }
    const double ly = kTop + 14 + 18 * double(i);
    svg << "<rect x=\"" << kWidth - kRight + 12 << "\" y=\"" << ly - 9 << "\" width=\"12\" height=\""
        << (s.line ? 3 : 10) << "\" fill=\"" << color << "\"/><text x=\"" << kWidth - kRight + 30 << "\" y=\""
        << ly << "\">" << escape(s.label) << "</text>\n";
  }
  svg << "</svg>\n";
  std::ofstream out(path);
  out << svg.str();
  if (!out) throw RuntimeFailure(path + ": cannot write plot");
}

}  // namespace finemoe::analysis
