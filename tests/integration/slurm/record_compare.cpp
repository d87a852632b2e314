// record_compare A.h5 B.h5: exit 0 when both run records are completed and hold the same training
// run: the same /train rows (step, tokens, loss, bit for bit), the same evaluations and the same
// /final losses. Prints each record's resume count and the first difference. Used by the Slurm
// requeue test (a run stopped by USR1, requeued and resumed against an uninterrupted one).
#include <cstdio>
#include <cstring>
#include <string>

#include "io/run_record.h"
#include "util/check.h"

using namespace finemoe;

namespace {

bool same(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: record_compare A.h5 B.h5\n");
    return 2;
  }
  try {
    for (int i = 1; i <= 2; ++i) {
      const RecordCheck c = RunRecordReader::classify(argv[i]);
      if (c.state != RecordState::completed) {
        std::printf("%s is %s: %s\n", argv[i], to_string(c.state).c_str(), c.reason.c_str());
        return 1;
      }
    }
    RunRecordReader a(argv[1]), b(argv[2]);
    std::printf("%s: resume_count %lld\n%s: resume_count %lld\n", argv[1], static_cast<long long>(a.resume_count()),
                argv[2], static_cast<long long>(b.resume_count()));
    const auto ta = a.train(), tb = b.train();
    if (ta.size() != tb.size()) {
      std::printf("different number of /train rows: %zu and %zu\n", ta.size(), tb.size());
      return 1;
    }
    for (size_t r = 0; r < ta.size(); ++r)
      if (ta[r].step != tb[r].step || ta[r].tokens != tb[r].tokens || !same(ta[r].loss, tb[r].loss) ||
          !same(ta[r].grad_norm, tb[r].grad_norm)) {
        std::printf("/train row %zu differs: step %lld loss %.17g |g| %.17g vs step %lld loss %.17g |g| %.17g\n", r,
                    static_cast<long long>(ta[r].step), ta[r].loss, ta[r].grad_norm, static_cast<long long>(tb[r].step),
                    tb[r].loss, tb[r].grad_norm);
        return 1;
      }
    const auto ea = a.eval(), eb = b.eval();
    if (ea.size() != eb.size()) {
      std::printf("different number of /eval rows: %zu and %zu\n", ea.size(), eb.size());
      return 1;
    }
    for (size_t r = 0; r < ea.size(); ++r)
      if (ea[r].step != eb[r].step || !same(ea[r].loss, eb[r].loss)) {
        std::printf("/eval row %zu differs: %.17g vs %.17g\n", r, ea[r].loss, eb[r].loss);
        return 1;
      }
    const auto fa = a.final_values(), fb = b.final_values();
    if (!fa || !fb || !same(fa->eval_loss, fb->eval_loss) || !same(fa->smoothed_train_loss, fb->smoothed_train_loss) ||
        fa->tokens != fb->tokens) {
      std::printf("/final differs: eval %.17g vs %.17g, smoothed train %.17g vs %.17g\n", fa ? fa->eval_loss : -1.0,
                  fb ? fb->eval_loss : -1.0, fa ? fa->smoothed_train_loss : -1.0, fb ? fb->smoothed_train_loss : -1.0);
      return 1;
    }
    std::printf("same run: %zu train rows, final eval loss %.17g, smoothed train loss %.17g\n", ta.size(),
                fa->eval_loss, fa->smoothed_train_loss);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "record_compare: %s\n", e.what());
    return 2;
  }
}
