#pragma once
#include <cstdint>

namespace finemoe {

// Linear warm-up over round(warmup_fraction * total) steps (at least one when the fraction is
// positive), then cosine decay from peak to final over the remaining steps.
class LrSchedule {
 public:
  LrSchedule(double peak, double final_lr, double warmup_fraction, int64_t total_steps);
  // Learning rate for the optimizer step with 0-based index `step`.
  double at(int64_t step) const;
  int64_t warmup_steps() const { return warmup_; }

 private:
  double peak_, final_;
  int64_t warmup_, total_;
};

}  // namespace finemoe
