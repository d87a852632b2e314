// The order in which a training step issues its collectives, recorded on every rank through
// recording communicators wrapped around the step's own (TrainingEngine's test hook). NCCL needs
// the same operations in the same order on every rank of a communicator, and one GPU cannot run
// NCCL on 2 ranks, so the order is checked here on the CPU: the host code that issues the
// collectives (model, dispatcher, gradient sync) is the one the GPU runs, whichever communicator
// carries them. On 2 ranks (EP 2) and 4 ranks (EP 2 x DP 2), expert choice and token choice:
// One test (SameOrderOnEveryRankAndReductionsOverlapTheBackward) checks, on one recorded step:
//   same order: every communicator's sequence of operations (with element counts of the
//     fixed-size ones) is identical on every rank that shares it;
//   overlap: the gradient reduction is started block
//     by block, each block's before the backward exchanges of the block below (the overlap of
//     block b's reduction with block b-1's backward), none on the expert group that carries the
//     exchanges (its own communicator: the world or the data group);
// Runtime under 1 s on 2 and 4 ranks when quiet; on 4 ranks oversubscribed on 2 busy cores up to
// about 30 s (TIMEOUT 300).
#include <gtest/gtest.h>

#include <sstream>

#include "training_harness.h"

namespace finemoe {
namespace {
using namespace test;

// What one rank issued, in order: "<communicator> <operation> [count]".
struct IssueLog {
  std::vector<std::string> entries;
  void add(const std::string& comm, const std::string& op, int64_t count = -1) {
    entries.push_back(comm + " " + op + (count >= 0 ? " " + std::to_string(count) : ""));
  }
};

class RecordingCommunicator final : public Communicator {
 public:
  RecordingCommunicator(Communicator& inner, std::string name, IssueLog& log)
      : inner_(inner), name_(std::move(name)), log_(log) {}
  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  void barrier() override { log_.add(name_, "barrier"), inner_.barrier(); }
  void all_reduce_sum(void* d, size_t n, DType t) override {
    log_.add(name_, "all_reduce_sum", int64_t(n));
    inner_.all_reduce_sum(d, n, t);
  }
  void all_reduce_max(void* d, size_t n, DType t) override {
    log_.add(name_, "all_reduce_max", int64_t(n));
    inner_.all_reduce_max(d, n, t);
  }
  std::unique_ptr<PendingCollective> start_all_reduce_sum(void* d, size_t n, DType t) override {
    log_.add(name_, "start_all_reduce_sum", int64_t(n));
    return inner_.start_all_reduce_sum(d, n, t);
  }
  void broadcast(void* d, size_t n, DType t, int root) override {
    log_.add(name_, "broadcast", int64_t(n));
    inner_.broadcast(d, n, t, root);
  }
  void all_gather(const void* s, void* r, size_t n, DType t) override {
    log_.add(name_, "all_gather", int64_t(n));
    inner_.all_gather(s, r, n, t);
  }
  void all_to_all(const void* s, void* r, size_t n, DType t) override {
    log_.add(name_, "all_to_all", int64_t(n));
    inner_.all_to_all(s, r, n, t);
  }
  void all_to_all_v(const void* s, const std::vector<int64_t>& sc, void* r, const std::vector<int64_t>& rc,
                    DType t) override {
    log_.add(name_, "all_to_all_v");  // counts differ between ranks (token choice)
    inner_.all_to_all_v(s, sc, r, rc, t);
  }
  void all_to_all_blocks(const void* s, const BlockLayout& sl, void* r, const BlockLayout& rl, DType t,
                         int64_t unit) override {
    log_.add(name_, "all_to_all_blocks");
    inner_.all_to_all_blocks(s, sl, r, rl, t, unit);
  }

 private:
  Communicator& inner_;
  std::string name_;
  IssueLog& log_;
};

// Wraps world, expert group and data group (each once, even where two are the same object).
std::function<void(StepCommunicators&)> recorder(IssueLog& log) {
  return [&log](StepCommunicators& c) {
    std::vector<std::pair<Communicator*, Communicator*>> done;
    auto wrap = [&](Communicator*& slot, const char* name) {
      for (const auto& [from, to] : done)
        if (from == slot) {
          slot = to;
          return;
        }
      auto rec = std::make_unique<RecordingCommunicator>(*slot, name, log);
      done.emplace_back(slot, rec.get());
      slot = rec.get();
      c.owned.push_back(std::move(rec));
    };
    wrap(c.world, "world");
    wrap(c.expert_group, "expert");
    wrap(c.data_group, "data");
  };
}

// The log of step 2 (after a first step that sized the buffers) on this rank.
IssueLog record_step(const Config& cfg, const Corpus& corpus) {
  IssueLog log;
  BatchSampler data(corpus.data(), kContext, cfg.train.seed, kTrainStream);
  ProcessGrid grid(MPI_COMM_WORLD, cfg.parallel.expert_parallel);
  TrainingEngine<float> engine(cfg, grid, recorder(log));
  engine.step(0, 1e-3, data);
  log.entries.clear();
  engine.step(1, 1e-3, data);
  return log;
}

std::vector<std::string> gathered(const std::string& mine) {
  int n = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  int len = int(mine.size());
  std::vector<int> lens(size_t(n), 0), offs(size_t(n), 0);
  MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD);
  int total = 0;
  for (int r = 0; r < n; ++r) offs[size_t(r)] = total, total += lens[size_t(r)];
  std::string all(size_t(total), '\0');
  MPI_Allgatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), offs.data(), MPI_CHAR, MPI_COMM_WORLD);
  std::vector<std::string> out;
  for (int r = 0; r < n; ++r) out.push_back(all.substr(size_t(offs[size_t(r)]), size_t(lens[size_t(r)])));
  return out;
}

std::vector<Config> cases() {
  std::vector<Config> out;
  for (const char* routing : {"expert_choice", "token_choice"}) {
    Case c;
    c.routing = routing;
    c.batch = 16;
    Config cfg = make_config(c, "fp32");
    cfg.model.n_blocks = 3;
    cfg.parallel.expert_parallel = 2;
    out.push_back(cfg);
  }
  return out;
}

// One recorded step per routing; both properties are checked on it.
void check_same_order(const IssueLog& log) {
  ASSERT_FALSE(log.entries.empty());
  std::ostringstream os;
  for (const auto& e : log.entries) os << e << "\n";
  const auto all = gathered(os.str());
  for (size_t r = 1; r < all.size(); ++r) EXPECT_EQ(all[r], all[0]) << "rank " << r << " vs rank 0";
}

void check_overlap(const IssueLog& log, int n_blocks) {
  // Groups of consecutive reduction starts, and the expert-group exchanges before each.
  std::vector<int> exchanges_before_group;
  int exchanges = 0;
  bool in_group = false;
  for (const std::string& e : log.entries) {
    const bool reduction = e.find("start_all_reduce_sum") != std::string::npos;
    if (reduction) {
      EXPECT_EQ(e.rfind("expert ", 0), std::string::npos) << "a gradient reduction on the expert group: " << e;
      if (!in_group) exchanges_before_group.push_back(exchanges);
      exchanges = 0;
    } else if (e.rfind("expert ", 0) == 0) {
      ++exchanges;
    }
    in_group = reduction;
  }
  // Block b's reductions start after its backward and before block b-1's backward exchanges: one
  // group per block (block 0's runs on into the embeddings', which exchange nothing), each after
  // some exchanges (the forward's and the top block's backward for the first).
  ASSERT_EQ(int(exchanges_before_group.size()), n_blocks);
  for (int g = 0; g < n_blocks; ++g)
    EXPECT_GT(exchanges_before_group[size_t(g)], 0)
        << "block " << n_blocks - 1 - g << ": the reduction of the block above must start before its backward exchanges";
  EXPECT_EQ(exchanges, 0) << "no exchange after the reductions of block 0 and the embeddings started";
}

TEST(IssueOrder, SameOrderOnEveryRankAndReductionsOverlapTheBackward) {
  if (world_size() < 2) GTEST_SKIP() << "needs 2 or more ranks";
  Corpus corpus;
  for (const Config& cfg : cases()) {
    SCOPED_TRACE(cfg.moe.routing);
    const IssueLog log = record_step(cfg, corpus);
    check_same_order(log);
    check_overlap(log, cfg.model.n_blocks);
  }
}

}  // namespace
}  // namespace finemoe
