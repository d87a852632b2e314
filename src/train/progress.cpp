#include "train/progress.h"

#include <cmath>
#include <cstdio>

#include <unistd.h>

namespace finemoe {

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long s = std::lround(seconds);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lds", s);
  return buf;
}

std::string format_count(double value) {
  char buf[32];
  if (value >= 1e9) std::snprintf(buf, sizeof buf, "%.2fG", value / 1e9);
  else if (value >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", value / 1e6);
  else if (value >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", value / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", value);
  return buf;
}

ProgressPrinter::ProgressPrinter(int64_t total_steps, bool quiet)
    : total_(total_steps), quiet_(quiet), terminal_(isatty(fileno(stdout)) == 1) {}

void ProgressPrinter::end_line() {
  if (open_line_) std::printf("\n");
  open_line_ = false;
}

void ProgressPrinter::step(int64_t step, double loss, double lr, double grad_norm, double tokens_per_s,
                           double seconds_per_step) {
  if (quiet_) return;
  const int width = 20;
  const int filled = total_ > 0 ? int(width * step / total_) : 0;
  std::string bar(size_t(filled), '#');
  bar.resize(size_t(width), '.');
  std::printf("%s[%s] step %lld/%lld | loss %.4f | lr %.2e | |g| %.3f | %s tok/s | ETA %s%s", terminal_ ? "\r" : "",
              bar.c_str(),
              static_cast<long long>(step), static_cast<long long>(total_), loss, lr, grad_norm,
              format_count(tokens_per_s).c_str(),
              format_duration(seconds_per_step * double(total_ - step)).c_str(), terminal_ ? "\033[K" : "\n");
  open_line_ = terminal_;
  if (step == total_) end_line();
  std::fflush(stdout);
}

void ProgressPrinter::eval(int64_t step, double loss) {
  if (quiet_) return;
  end_line();
  std::printf("eval  step %lld | loss %.4f nats/token (%.4f bits/token)\n", static_cast<long long>(step), loss,
              loss / std::log(2.0));
  std::fflush(stdout);
}

void ProgressPrinter::message(const std::string& text) {
  if (quiet_) return;
  end_line();
  std::printf("%s\n", text.c_str());
  std::fflush(stdout);
}

}  // namespace finemoe
