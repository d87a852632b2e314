#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace finemoe {

LrSchedule::LrSchedule(double peak, double final_lr, double warmup_fraction, int64_t total_steps)
    : peak_(peak), final_(final_lr), total_(total_steps) {
  warmup_ = static_cast<int64_t>(std::llround(warmup_fraction * double(total_steps)));
  if (warmup_fraction > 0) warmup_ = std::max<int64_t>(warmup_, 1);
  warmup_ = std::min(warmup_, total_steps);
}

double LrSchedule::at(int64_t step) const {
  if (step < warmup_) return peak_ * double(step + 1) / double(warmup_);
  const int64_t decay_steps = total_ - warmup_;
  if (decay_steps <= 1) return final_;
  const double progress = std::min(1.0, double(step - warmup_) / double(decay_steps - 1));
  return final_ + 0.5 * (peak_ - final_) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace finemoe
