#pragma once
// Progress lines a person can follow (rank 0): step, loss, learning rate, tokens/s, ETA.
#include <cstdint>
#include <string>

namespace finemoe {

std::string format_duration(double seconds);
std::string format_count(double value);  // 12.3k, 4.5M

class ProgressPrinter {
 public:
  ProgressPrinter(int64_t total_steps, bool quiet) : total_(total_steps), quiet_(quiet) {}
  void step(int64_t step, double loss, double lr, double grad_norm, double tokens_per_s,
            double seconds_per_step);
  void eval(int64_t step, double loss);
  void message(const std::string& text);

 private:
  int64_t total_;
  bool quiet_;
};

}  // namespace finemoe
