#pragma once
// Progress a person can follow (rank 0): step, loss, learning rate, tokens/s, ETA. On a terminal
// the bar is redrawn in place; in a log file each update is its own line.
#include <cstdint>
#include <string>

namespace finemoe {

std::string format_duration(double seconds);
std::string format_count(double value);  // 12.3k, 4.5M

class ProgressPrinter {
 public:
  ProgressPrinter(int64_t total_steps, bool quiet);
  void step(int64_t step, double loss, double lr, double grad_norm, double tokens_per_s,
            double seconds_per_step);
  void eval(int64_t step, double loss);
  void message(const std::string& text);

 private:
  void end_line();

  int64_t total_;
  bool quiet_;
  bool terminal_;
  bool open_line_ = false;  // a bar drawn in place awaits its newline
};

}  // namespace finemoe
