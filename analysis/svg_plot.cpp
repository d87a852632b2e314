#include "svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include "util/check.h"

namespace finemoe::analysis {
namespace {

constexpr double kWidth = 760, kHeight = 500;
constexpr double kLeft = 80, kRight = 190, kTop = 56, kBottom = 60;
const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                               "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"};

struct Axis {
  bool log = false, log2 = false;
  TickFormat format = TickFormat::plain;
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

// 3 significant digits, exponents without '+' and leading zeros: 1e+20 -> 1e20, 2.5e-05 -> 2.5e-5.
std::string short_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  std::string text = buf;
  const std::size_t e = text.find('e');
  if (e == std::string::npos) return text;
  std::string mantissa = text.substr(0, e), exponent = text.substr(e + 1);
  std::string sign;
  if (exponent[0] == '+' || exponent[0] == '-') {
    if (exponent[0] == '-') sign = "-";
    exponent = exponent.substr(1);
  }
  while (exponent.size() > 1 && exponent[0] == '0') exponent = exponent.substr(1);
  return mantissa + "e" + sign + exponent;
}

std::string format_tick(double v, TickFormat format) {
  if (format == TickFormat::count) {
    const double a = std::abs(v);
    if (a >= 1e12) return short_number(v / 1e12) + "T";
    if (a >= 1e9) return short_number(v / 1e9) + "B";
    if (a >= 1e6) return short_number(v / 1e6) + "M";
    if (a >= 1e3) return short_number(v / 1e3) + "k";
  }
  if (std::abs(v) < 1e-12) return "0";
  return short_number(v);
}

std::vector<double> linear_ticks(double lo, double hi) {
  std::vector<double> out;
  const double span = hi - lo;
  const double raw = span / 5;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double step = raw / mag <= 1 ? mag : raw / mag <= 2 ? 2 * mag : raw / mag <= 5 ? 5 * mag : 10 * mag;
  for (double t = std::ceil(lo / step) * step; t <= hi + 1e-9 * span; t += step) out.push_back(t);
  return out;
}

std::vector<double> ticks(const Axis& axis) {
  if (!axis.log) return linear_ticks(axis.lo, axis.hi);
  const double lo = std::pow(10.0, axis.lo), hi = std::pow(10.0, axis.hi);
  std::vector<double> out;  // in data units
  if (axis.log2) {  // powers of two, every other one when there are many
    const int first = int(std::ceil(std::log2(lo) - 1e-9)), last = int(std::floor(std::log2(hi) + 1e-9));
    const int step = last - first > 10 ? 2 : 1;
    for (int e = first; e <= last; e += step) out.push_back(std::ldexp(1.0, e));
    if (out.size() >= 2) return out;
    out.clear();
  }
  // Powers of ten (every 2nd or 3rd over wide ranges), else 1-2-5 or 1..9 per decade, else linear.
  const int e_lo = int(std::floor(axis.lo)), e_hi = int(std::ceil(axis.hi));
  const auto inside = [&](double v) { return v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9); };
  const int decades = int(std::floor(axis.hi + 1e-9) - std::ceil(axis.lo - 1e-9)) + 1;
  if (decades >= 3) {
    const int step = decades > 16 ? 3 : decades > 8 ? 2 : 1;
    for (int e = e_lo; e <= e_hi; ++e) {
      if (e % step == 0 && inside(std::pow(10.0, e))) out.push_back(std::pow(10.0, e));
    }
    return out;
  }
  for (int e = e_lo; e <= e_hi; ++e) {
    for (double m : {1, 2, 5}) {
      if (inside(m * std::pow(10.0, e))) out.push_back(m * std::pow(10.0, e));
    }
  }
  return out.size() >= 3 ? out : linear_ticks(lo, hi);
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
  xa.log = spec.log_x || spec.log2_x;
  ya.log = spec.log_y || spec.log2_y;
  xa.log2 = spec.log2_x;
  ya.log2 = spec.log2_y;
  xa.format = spec.x_format;
  ya.format = spec.y_format;
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
  const auto color_of = [&spec](std::size_t i) {
    const int c = spec.series[i].color >= 0 ? spec.series[i].color : int(i);
    return kColors[std::size_t(c) % std::size(kColors)];
  };

  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << kLeft + pw / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">"
      << escape(spec.title) << "</text>\n";
  if (!spec.note.empty()) {
    svg << "<text x=\"" << kLeft + pw / 2 << "\" y=\"40\" text-anchor=\"middle\" font-size=\"11\" fill=\"#555\">"
        << escape(spec.note) << "</text>\n";
  }
  svg << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << pw << "\" height=\"" << ph
      << "\" fill=\"none\" stroke=\"black\"/>\n";
  for (double t : ticks(xa)) {
    svg << "<line x1=\"" << px(t) << "\" x2=\"" << px(t) << "\" y1=\"" << kTop << "\" y2=\"" << kTop + ph
        << "\" stroke=\"#ddd\"/><text x=\"" << px(t) << "\" y=\"" << kTop + ph + 16
        << "\" text-anchor=\"middle\">" << format_tick(t, xa.format) << "</text>\n";
  }
  for (double t : ticks(ya)) {
    svg << "<line x1=\"" << kLeft << "\" x2=\"" << kLeft + pw << "\" y1=\"" << py(t) << "\" y2=\"" << py(t)
        << "\" stroke=\"#ddd\"/><text x=\"" << kLeft - 6 << "\" y=\"" << py(t) + 4
        << "\" text-anchor=\"end\">" << format_tick(t, ya.format) << "</text>\n";
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
  // Lines first, markers on top; clipped to the plot area.
  svg << "<clipPath id=\"area\"><rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << pw << "\" height=\""
      << ph << "\"/></clipPath>\n<g clip-path=\"url(#area)\">\n";
  for (int pass = 0; pass < 2; ++pass) {
    for (std::size_t i = 0; i < spec.series.size(); ++i) {
      const PlotSeries& s = spec.series[i];
      if (s.line != (pass == 0)) continue;
      if (s.line) {
        svg << "<polyline fill=\"none\" stroke=\"" << color_of(i) << "\" stroke-width=\"1.6\""
            << (s.dashed ? " stroke-dasharray=\"6 4\"" : "") << " points=\"";
        for (std::size_t k = 0; k < s.x.size(); ++k) {
          if (xa.drawable(s.x[k]) && ya.drawable(s.y[k])) svg << px(s.x[k]) << "," << py(s.y[k]) << " ";
        }
        svg << "\"/>\n";
      } else {
        for (std::size_t k = 0; k < s.x.size(); ++k) {
          if (xa.drawable(s.x[k]) && ya.drawable(s.y[k])) {
            svg << "<circle cx=\"" << px(s.x[k]) << "\" cy=\"" << py(s.y[k]) << "\" r=\"3.5\" fill=\"" << color_of(i)
                << "\" fill-opacity=\"0.75\"/>\n";
          }
        }
      }
    }
  }
  svg << "</g>\n";
  // Legend: a marker for marker series, a (dashed) line for line series; a marker series whose
  // colour also has an unlabelled line series gets the line through its marker.
  double ly = kTop + 10;
  const double lx = kWidth - kRight + 14;
  for (std::size_t i = 0; i < spec.series.size(); ++i) {
    const PlotSeries& s = spec.series[i];
    if (s.label.empty()) continue;
    bool with_line = s.line;
    for (std::size_t j = 0; j < spec.series.size() && !with_line; ++j) {
      with_line = j != i && spec.series[j].line && spec.series[j].label.empty() &&
                  std::string(color_of(j)) == color_of(i);
    }
    if (with_line) {
      svg << "<line x1=\"" << lx << "\" x2=\"" << lx + 20 << "\" y1=\"" << ly - 4 << "\" y2=\"" << ly - 4
          << "\" stroke=\"" << color_of(i) << "\" stroke-width=\"1.6\""
          << (s.line && s.dashed ? " stroke-dasharray=\"6 4\"" : "") << "/>";
    }
    if (!s.line) {
      svg << "<circle cx=\"" << lx + 10 << "\" cy=\"" << ly - 4 << "\" r=\"3.5\" fill=\"" << color_of(i) << "\"/>";
    }
    svg << "<text x=\"" << lx + 26 << "\" y=\"" << ly << "\">" << escape(s.label) << "</text>\n";
    ly += 18;
  }
  svg << "</svg>\n";
  std::ofstream out(path);
  out << svg.str();
  if (!out) throw RuntimeFailure(path + ": cannot write plot");
}

}  // namespace finemoe::analysis
