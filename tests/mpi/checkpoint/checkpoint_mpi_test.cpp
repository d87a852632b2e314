// Checkpoints across rank layouts: a synthetic store (replicated tensors and 8 global experts)
// filled with values that are a pure function of (tensor, global element, quantity, salt), so what
// a rank must hold after loading is known independently of who wrote it.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "parallel/mpi_check.h"
#include "parallel/process_grid.h"
#include "util/check.h"
#include "util/rng.h"

namespace finemoe {
namespace {

namespace fs = std::filesystem;

constexpr int kGlobalExperts = 8;

int world_rank() {
  int r = 0;
  MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &r));
  return r;
}

int world_size() {
  int n = 0;
  MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &n));
  return n;
}

void world_barrier() { MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD)); }

std::vector<int> divisors(int n) {
  std::vector<int> d;
  for (int k = 1; k <= n; ++k)
    if (n % k == 0) d.push_back(k);
  return d;
}

// A fresh directory shared by all ranks (rank 0 creates it, everybody gets its name).
class SharedTempDir {
 public:
  SharedTempDir() {
    char name[4096] = {};
    if (world_rank() == 0) {
      const char* base = std::getenv("TMPDIR");
      std::string templ = std::string(base && *base ? base : "/tmp") + "/finemoe_ckpt_XXXXXX";
      FINEMOE_CHECK(templ.size() < sizeof name, "TMPDIR too long");
      std::strcpy(name, templ.c_str());
      FINEMOE_CHECK(mkdtemp(name) != nullptr, "mkdtemp " << templ);
    }
    MPI_CHECK(MPI_Bcast(name, sizeof name, MPI_CHAR, 0, MPI_COMM_WORLD));
    path_ = name;
  }
  ~SharedTempDir() {
    world_barrier();
    std::error_code ec;
    if (world_rank() == 0) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Which model the test builds; the variants differ from the base in one way each.
enum class Variant { base, wider_expert, extra_tensor, more_experts, dense };

template <typename T>
void add_specs(ParameterStore<T>& store, int ep_size, int ep_rank, Variant variant = Variant::base) {
  const int global = variant == Variant::more_experts ? 2 * kGlobalExperts : kGlobalExperts;
  const int local = global / ep_size;
  const int64_t first = int64_t(ep_rank) * local;
  const auto replicated = [&](const std::string& name, std::vector<int64_t> shape, int block) {
    ParamSpec s;
    s.name = name;
    s.shape = std::move(shape);
    s.block = block;
    s.init = ParamInit::normal(0.02);
    store.add(s);
  };
  const auto expert = [&](const std::string& name, std::vector<int64_t> shape, int block) {
    ParamSpec s;
    s.name = name;
    s.shape = std::move(shape);
    s.shape.insert(s.shape.begin(), local);
    s.group = ParamGroup::expert;
    s.block = block;
    s.first_global_expert = first;
    s.init = ParamInit::normal(0.02);
    store.add(s);
  };
  replicated("embed.weight", {16, 8}, -1);
  replicated("blocks.0.ln.gain", {8}, 0);
  if (variant == Variant::dense) {
    replicated("blocks.0.ffn.w_in", {8, 32}, 0);
    return;
  }
  replicated("blocks.0.router.weight", {8, global}, 0);
  expert("blocks.0.moe.w_in", {8, variant == Variant::wider_expert ? 7 : 6}, 0);
  expert("blocks.0.moe.w_out", {6, 8}, 0);
  expert("blocks.1.moe.w_in", {8, 6}, 1);
  if (variant == Variant::extra_tensor) replicated("head.bias", {16}, -1);
}

// Quantity q (0 value, 1 first moment, 2 second moment) of a tensor's global element j.
template <typename T>
T pattern(const std::string& name, int q, int64_t j, int64_t salt) {
  const uint64_t key = hash_combine(hash_string(name), uint64_t(q) * 1000003u + uint64_t(salt));
  return static_cast<T>(2 * uniform_open(key, uint64_t(j)) - 1);
}

template <typename T>
T* quantity(ParameterStore<T>& store, OptimizerState<T>& opt, int i, int q) {
  const ParamSpec& s = store.spec(i);
  const int g = static_cast<int>(s.group);
  T* base = q == 0 ? store.values(s.group).data() : (q == 1 ? opt.m[g] : opt.v[g]).data();
  return base + store.offset(i);
}

int64_t global_base(const ParamSpec& s) {
  return s.group == ParamGroup::expert ? s.first_global_expert * s.numel_per_expert() : 0;
}

template <typename T>
void fill(ParameterStore<T>& store, OptimizerState<T>& opt, int64_t salt) {
  for (int i = 0; i < store.count(); ++i)
    for (int q = 0; q < 3; ++q) {
      T* p = quantity(store, opt, i, q);
      for (int64_t j = 0; j < store.spec(i).numel(); ++j)
        p[j] = pattern<T>(store.spec(i).name, q, global_base(store.spec(i)) + j, salt);
    }
}

// Number of elements (over all tensors and quantities) that differ bit-wise from the pattern.
template <typename T>
int64_t mismatches(ParameterStore<T>& store, OptimizerState<T>& opt, int64_t salt) {
  int64_t bad = 0;
  for (int i = 0; i < store.count(); ++i)
    for (int q = 0; q < 3; ++q) {
      const T* p = quantity(store, opt, i, q);
      for (int64_t j = 0; j < store.spec(i).numel(); ++j) {
        const T want = pattern<T>(store.spec(i).name, q, global_base(store.spec(i)) + j, salt);
        bad += std::memcmp(&p[j], &want, sizeof(T)) != 0;
      }
    }
  return bad;
}

template <typename T>
struct Model {
  ParameterStore<T> store;
  OptimizerState<T> opt;
  Model(const ProcessGrid& grid, Variant variant = Variant::base) {
    add_specs(store, grid.ep_size(), grid.ep_rank(), variant);
    store.allocate(99);
    opt.resize_like(store);
  }
};

TrainProgress progress_at(int64_t step) {
  TrainProgress p;
  p.step = step;
  p.tokens = step * 2048;
  p.seed = 0xfedcba9876543210ULL;
  p.wall_time_s = 1234.5678901234567 + double(step);
  p.restarts = 3;
  return p;
}

template <typename T>
void save_at(const std::string& dir, ProcessGrid& grid, int64_t step, int keep = 5) {
  Model<T> m(grid);
  fill(m.store, m.opt, step);
  save_checkpoint(dir, m.store, m.opt, progress_at(step), grid, keep);
}

// Loads into a fresh model; expects step `step` with its pattern everywhere on this rank.
template <typename T>
std::string load_expecting(const std::string& dir, ProcessGrid& grid, int64_t step) {
  Model<T> m(grid);
  std::string report;
  const auto progress = load_latest_checkpoint(dir, m.store, m.opt, grid, &report);
  EXPECT_TRUE(progress.has_value()) << report;
  if (!progress) return report;
  const TrainProgress want = progress_at(step);
  EXPECT_EQ(progress->step, want.step);
  EXPECT_EQ(progress->tokens, want.tokens);
  EXPECT_EQ(progress->seed, want.seed);
  EXPECT_EQ(std::memcmp(&progress->wall_time_s, &want.wall_time_s, sizeof(double)), 0);
  EXPECT_EQ(progress->restarts, want.restarts);
  EXPECT_EQ(mismatches(m.store, m.opt, step), 0) << "rank " << grid.rank() << " ep " << grid.ep_size();
  return report;
}

std::set<std::string> entries(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
  return names;
}

// The same text on every rank of the world.
void expect_same_everywhere(const std::string& text) {
  const uint64_t h = hash_string(text);
  uint64_t lo = h, hi = h;
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD));
  MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD));
  EXPECT_EQ(lo, hi) << "ranks disagree: " << text;
}

template <typename T>
class CheckpointTest : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(CheckpointTest, Scalars);

TYPED_TEST(CheckpointTest, SameLayoutIsBitExactAndWritesEachExpertOnce) {
  for (int ep : divisors(world_size())) {
    SharedTempDir tmp;
    ProcessGrid grid(MPI_COMM_WORLD, ep);
    save_at<TypeParam>(tmp.path(), grid, 7);
    const std::string report = load_expecting<TypeParam>(tmp.path(), grid, 7);
    EXPECT_EQ(report, "");
    if (world_rank() == 0) {
      std::set<std::string> want = {"manifest.txt", "replicated.bin"};
      for (int k = 0; k < ep; ++k) want.insert("experts_" + std::to_string(k) + ".bin");
      EXPECT_EQ(entries(checkpoint_dir(tmp.path(), 7)), want);
      EXPECT_EQ(entries(fs::path(tmp.path()) / "checkpoints"), std::set<std::string>{"step_7"});
    }
  }
}

TYPED_TEST(CheckpointTest, LoadsIntoAnyExpertParallelLayout) {
  for (int save_ep : divisors(world_size()))
    for (int load_ep : divisors(world_size())) {
      SharedTempDir tmp;
      {
        ProcessGrid grid(MPI_COMM_WORLD, save_ep);
        save_at<TypeParam>(tmp.path(), grid, 3);
      }
      ProcessGrid grid(MPI_COMM_WORLD, load_ep);
      SCOPED_TRACE("saved with EP " + std::to_string(save_ep) + ", loaded with EP " + std::to_string(load_ep));
      EXPECT_EQ(load_expecting<TypeParam>(tmp.path(), grid, 3), "");
    }
}

TYPED_TEST(CheckpointTest, LoadsOnFewerRanks) {
  const int n = world_size();
  SharedTempDir tmp;
  {
    ProcessGrid grid(MPI_COMM_WORLD, n);
    save_at<TypeParam>(tmp.path(), grid, 11);
  }
  for (int ranks : divisors(n)) {
    MPI_Comm sub;
    MPI_CHECK(MPI_Comm_split(MPI_COMM_WORLD, world_rank() < ranks ? 0 : MPI_UNDEFINED, world_rank(), &sub));
    if (sub != MPI_COMM_NULL) {
      for (int ep : divisors(ranks)) {
        ProcessGrid grid(sub, ep);
        SCOPED_TRACE("loaded on " + std::to_string(ranks) + " ranks with EP " + std::to_string(ep));
        EXPECT_EQ(load_expecting<TypeParam>(tmp.path(), grid, 11), "");
      }
      MPI_CHECK(MPI_Comm_free(&sub));
    }
    world_barrier();
  }
}

// Damages step_20 in one way, then expects step_10 to load and the report to name the damage.
template <typename T>
void expect_fallback(int ep, const std::string& damaged_file, void (*damage)(const fs::path&),
                     const std::vector<std::string>& report_mentions) {
  SharedTempDir tmp;
  ProcessGrid grid(MPI_COMM_WORLD, ep);
  save_at<T>(tmp.path(), grid, 10);
  save_at<T>(tmp.path(), grid, 20);
  const fs::path file = fs::path(checkpoint_dir(tmp.path(), 20)) / damaged_file;
  if (world_rank() == 0) damage(file);
  world_barrier();
  const std::string report = load_expecting<T>(tmp.path(), grid, 10);
  EXPECT_NE(report.find("step_20 rejected: "), std::string::npos) << report;
  for (const auto& m : report_mentions) EXPECT_NE(report.find(m), std::string::npos) << "'" << m << "' in " << report;
  expect_same_everywhere(report);
  // Saving step 20 again replaces the damaged copy, which then loads.
  save_at<T>(tmp.path(), grid, 20);
  EXPECT_EQ(load_expecting<T>(tmp.path(), grid, 20), "");
}

void truncate_by_one(const fs::path& f) { fs::resize_file(f, fs::file_size(f) - 1); }

void flip_middle_byte(const fs::path& f) {
  std::fstream io(f, std::ios::in | std::ios::out | std::ios::binary);
  const auto pos = static_cast<std::streamoff>(fs::file_size(f) / 2);
  io.seekg(pos);
  char c = 0;
  io.get(c);
  io.seekp(pos);
  io.put(static_cast<char>(c ^ 0x10));
}

void remove_file(const fs::path& f) { fs::remove(f); }

TYPED_TEST(CheckpointTest, TruncatedExpertFileFallsBackToPreviousCheckpoint) {
  const int ep = world_size();
  const std::string victim = "experts_" + std::to_string(ep - 1) + ".bin";
  expect_fallback<TypeParam>(ep, victim, truncate_by_one, {"step_20/" + victim, "truncated"});
}

TYPED_TEST(CheckpointTest, FlippedByteFallsBackToPreviousCheckpoint) {
  const int ep = world_size();
  expect_fallback<TypeParam>(ep, "replicated.bin", flip_middle_byte, {"step_20/replicated.bin", "CRC32", "corrupt"});
  const std::string victim = "experts_" + std::to_string(ep - 1) + ".bin";
  expect_fallback<TypeParam>(ep, victim, flip_middle_byte, {"step_20/" + victim, "corrupt"});
}

TYPED_TEST(CheckpointTest, DamagedOrMissingManifestFallsBackToPreviousCheckpoint) {
  expect_fallback<TypeParam>(1, "manifest.txt", flip_middle_byte, {"step_20/manifest.txt", "checksum mismatch"});
  expect_fallback<TypeParam>(1, "manifest.txt", truncate_by_one, {"step_20/manifest.txt"});
  expect_fallback<TypeParam>(1, "manifest.txt", remove_file, {"step_20/manifest.txt", "missing"});
}

template <typename T>
std::string incompatible_load_error(const std::string& dir, ProcessGrid& grid, Variant variant) {
  Model<T> m(grid, variant);
  try {
    load_latest_checkpoint(dir, m.store, m.opt, grid, nullptr);
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no InputError for variant " << static_cast<int>(variant);
  return "";
}

TYPED_TEST(CheckpointTest, DenseModelHasNoExpertFiles) {
  SharedTempDir tmp;
  ProcessGrid grid(MPI_COMM_WORLD, world_size());
  {
    Model<TypeParam> m(grid, Variant::dense);
    fill(m.store, m.opt, 2);
    save_checkpoint(tmp.path(), m.store, m.opt, progress_at(2), grid, 1);
  }
  Model<TypeParam> m(grid, Variant::dense);
  std::string report;
  const auto progress = load_latest_checkpoint(tmp.path(), m.store, m.opt, grid, &report);
  ASSERT_TRUE(progress.has_value()) << report;
  EXPECT_EQ(progress->step, 2);
  EXPECT_EQ(mismatches(m.store, m.opt, 2), 0);
  if (world_rank() == 0) {
    EXPECT_EQ(entries(checkpoint_dir(tmp.path(), 2)), (std::set<std::string>{"manifest.txt", "replicated.bin"}));
  }
  // A MoE model cannot resume from it.
  const std::string error = incompatible_load_error<TypeParam>(tmp.path(), grid, Variant::base);
  EXPECT_NE(error.find("n_experts is 0 in the checkpoint, 8 in this run"), std::string::npos) << error;
}

TYPED_TEST(CheckpointTest, PruneKeepsTheNewestAndDropsAnAbandonedFuture) {
  SharedTempDir tmp;
  ProcessGrid grid(MPI_COMM_WORLD, world_size());
  const fs::path root = fs::path(tmp.path()) / "checkpoints";
  for (int step = 1; step <= 5; ++step) save_at<TypeParam>(tmp.path(), grid, step, 2);
  if (world_rank() == 0) {
    EXPECT_EQ(entries(root), (std::set<std::string>{"step_4", "step_5"}));
  }
  // A run resumed from an older checkpoint: what lies beyond the step it writes is gone.
  save_at<TypeParam>(tmp.path(), grid, 3, 2);
  if (world_rank() == 0) {
    EXPECT_EQ(entries(root), (std::set<std::string>{"step_3"}));
  }
  EXPECT_EQ(load_expecting<TypeParam>(tmp.path(), grid, 3), "");
}

TYPED_TEST(CheckpointTest, LeftoverTemporaryDirectoryIsIgnored) {
  SharedTempDir tmp;
  ProcessGrid grid(MPI_COMM_WORLD, 1);
  save_at<TypeParam>(tmp.path(), grid, 5);
  const fs::path root = fs::path(tmp.path()) / "checkpoints";
  if (world_rank() == 0) {
    // A complete-looking copy under the temporary name of a newer step (a save killed just before
    // its rename), and a newer directory without a manifest (damaged by hand or by the file system).
    fs::copy(root / "step_5", root / "step_9.tmp");
    fs::create_directory(root / "step_8");
  }
  world_barrier();
  const std::string report = load_expecting<TypeParam>(tmp.path(), grid, 5);
  EXPECT_EQ(report.find("step_9"), std::string::npos) << report;
  EXPECT_NE(report.find("step_8 rejected: "), std::string::npos) << report;
  save_at<TypeParam>(tmp.path(), grid, 6, 2);
  if (world_rank() == 0) {
    EXPECT_EQ(entries(root), (std::set<std::string>{"step_5", "step_6"}));
  }
}

TYPED_TEST(CheckpointTest, NoCheckpointGivesNothing) {
  SharedTempDir tmp;
  ProcessGrid grid(MPI_COMM_WORLD, 1);
  Model<TypeParam> m(grid);
  std::string report;
  EXPECT_FALSE(load_latest_checkpoint(tmp.path(), m.store, m.opt, grid, &report).has_value());
  EXPECT_EQ(report, "");
}

TYPED_TEST(CheckpointTest, DifferentModelIsInputErrorNamingTheKey) {
  SharedTempDir tmp;
  ProcessGrid grid(MPI_COMM_WORLD, world_size());
  save_at<TypeParam>(tmp.path(), grid, 4);
  const auto expect_mentions = [](const std::string& error, const std::vector<std::string>& words) {
    for (const auto& w : words) EXPECT_NE(error.find(w), std::string::npos) << "'" << w << "' in " << error;
    expect_same_everywhere(error);
  };
  expect_mentions(incompatible_load_error<TypeParam>(tmp.path(), grid, Variant::wider_expert),
                  {"step_4/manifest.txt", "blocks.0.moe.w_in", "[8, 6]", "[8, 7]"});
  expect_mentions(incompatible_load_error<TypeParam>(tmp.path(), grid, Variant::extra_tensor),
                  {"head.bias", "not in the checkpoint"});
  expect_mentions(incompatible_load_error<TypeParam>(tmp.path(), grid, Variant::more_experts),
                  {"n_experts is 8 in the checkpoint, 16 in this run"});
  using Other = std::conditional_t<std::is_same_v<TypeParam, float>, double, float>;
  expect_mentions(incompatible_load_error<Other>(tmp.path(), grid, Variant::base), {"precision"});
}

}  // namespace
}  // namespace finemoe
