// Bad parameter input, as a user meets it: finemoe-train exits with code 2 before any work, and
// the one message (printed once, by one rank, however many ranks run) names the file, the key,
// the bad value and what is allowed.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <sys/stat.h>

#include <array>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>

namespace {

namespace fs = std::filesystem;

struct Result {
  int exit_code = -1;
  std::string output;
};

// FINEMOE_TRAIN_BIN in the environment replaces the binary (e.g. a sanitizer build).
std::string train_binary() {
  const char* env = std::getenv("FINEMOE_TRAIN_BIN");
  return env && *env ? env : FINEMOE_TRAIN_BIN;
}

Result run(const std::string& args, int ranks = 1) {
  std::string cmd = ranks > 0 ? std::string(FINEMOE_MPIEXEC) + " -np " + std::to_string(ranks) +
                                    " --oversubscribe " + train_binary() + " " + args
                              : train_binary() + " " + args;
  cmd = "timeout 120 " + cmd + " 2>&1";
  Result r;
  FILE* pipe = popen(cmd.c_str(), "r");
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) r.output.append(buf.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class CliErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("finemoe_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "data");
    // A one-byte file passes the existence check and fails as a shard (BadShard).
    std::ofstream(dir_ / "data" / "train.bin") << "x";
    std::ofstream(dir_ / "data" / "val.bin") << "x";
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A valid small parameter file plus `extra` lines appended to the given section.
  std::string write(const std::string& name, const std::string& section, const std::string& extra) {
    std::string text =
        "[model]\nd_model = 32\nn_blocks = 1\nn_heads = 2\ncontext = 16\n"
        "[moe]\nexpansion_rate = 4\ngranularity = 2\ngroup_size = 4\n"
        "[train]\nsteps = 2\nbatch_size = 8\n"
        "[data]\ntrain = " + (dir_ / "data" / "train.bin").string() + "\nval = " +
        (dir_ / "data" / "val.bin").string() + "\n[output]\ndir = " + (dir_ / "run").string() + "\n";
    if (!extra.empty()) {
      const std::string header = "[" + section + "]\n";
      const auto pos = text.find(header);
      if (pos == std::string::npos) text += header + extra + "\n";
      else text.insert(pos + header.size(), extra + "\n");
    }
    const fs::path path = dir_ / name;
    std::ofstream(path) << text;
    return path.string();
  }

  void expect_rejected(const Result& r, const std::vector<std::string>& fragments) {
    EXPECT_EQ(r.exit_code, 2) << r.output;
    for (const auto& f : fragments) EXPECT_NE(r.output.find(f), std::string::npos) << "missing '" << f << "' in:\n" << r.output;
    // One message, from one rank.
    const std::regex line("finemoe-train: error");
    EXPECT_EQ(std::distance(std::sregex_iterator(r.output.begin(), r.output.end(), line), std::sregex_iterator()), 1)
        << r.output;
    EXPECT_FALSE(fs::exists(dir_ / "run" / "record.h5")) << "work started despite bad input";
  EXPECT_EQ(r.output.find("MPI_ABORT"), std::string::npos) << "an input error must end every rank cleanly";
  }

  fs::path dir_;
};

TEST_F(CliErrors, UnknownKeySuggestsNearest) {
  const auto f = write("a.ini", "model", "d_modle = 64");
  expect_rejected(run(f), {f, "unknown key 'model.d_modle'", "did you mean 'model.d_model'"});
}

TEST_F(CliErrors, UnknownCommandLineKey) {
  const auto f = write("b.ini", "", "");
  expect_rejected(run(f + " --train.step=10"), {"on the command line", "'train.step'", "did you mean 'train.steps'"});
}

TEST_F(CliErrors, WrongType) {
  const auto f = write("c.ini", "model", "vocab = lots");
  expect_rejected(run(f), {f, "model.vocab = 'lots'", "expected integer"});
}

TEST_F(CliErrors, WrongBoolean) {
  const auto f = write("d.ini", "moe", "enabled = maybe");
  expect_rejected(run(f), {f, "moe.enabled = 'maybe'", "true|false"});
}

TEST_F(CliErrors, OutOfRange) {
  const auto f = write("e.ini", "train", "lr = -0.1");
  expect_rejected(run(f), {f, "train.lr = -0.1 is invalid", "must be > 0"});
}

TEST_F(CliErrors, HeadsMustDivideWidth) {
  const auto f = write("f.ini", "", "");
  expect_rejected(run(f + " --model.n_heads=3"),
                  {f, "model.d_model = 32 is invalid: must be divisible by model.n_heads = 3"});
}

TEST_F(CliErrors, GranularityMustDivideFfnWidth) {
  const auto f = write("g.ini", "", "");
  expect_rejected(run(f + " --moe.granularity=5"),
                  {"moe.granularity = 5 is invalid", "must divide d_ff = 4 * model.d_model = 128"});
}

TEST_F(CliErrors, UnknownRouting) {
  const auto f = write("h.ini", "moe", "routing = top2");
  expect_rejected(run(f), {f, "moe.routing = 'top2'", "allowed: expert_choice | token_choice"});
}

TEST_F(CliErrors, ExpertChoiceGroupMustBeMultipleOfE) {
  const auto f = write("i.ini", "", "");
  expect_rejected(run(f + " --moe.group_size=2"), {"moe.group_size = 2 is invalid", "multiple of moe.expansion_rate = 4"});
}

TEST_F(CliErrors, ExpertsMustSplitOverExpertParallel) {
  const auto f = write("j.ini", "parallel", "expert_parallel = 3");
  expect_rejected(run(f), {f, "parallel.expert_parallel = 3", "must divide n_experts = E * G = 8"});
}

TEST_F(CliErrors, WorldMustBeEpTimesDp) {
  const auto f = write("k.ini", "parallel", "expert_parallel = 4");
  expect_rejected(run(f, 2), {"parallel.expert_parallel = 4", "must divide the world size 2 (world = EP x DP)"});
}

TEST_F(CliErrors, BatchMustSplitOverRanks) {
  const auto f = write("l.ini", "", "");
  expect_rejected(run(f + " --train.batch_size=4 --moe.group_size=4 --train.eval_sequences=4", 8),
                  {"train.batch_size = 4", "divisible by the world size 8"});
}

TEST_F(CliErrors, PrecisionPerBackend) {
  const auto f = write("m.ini", "train", "precision = fp16");
  expect_rejected(run(f), {f, "train.precision = 'fp16'", "allowed: fp64 | fp32 | bf16"});
}

TEST_F(CliErrors, MissingDataFile) {
  const auto f = write("n.ini", "", "");
  expect_rejected(run(f + " --data.train=/no/such/shards", 2), {"data.train = '/no/such/shards'", "no such file"});
}

TEST_F(CliErrors, BadShard) {
  const auto f = write("r.ini", "", "");
  expect_rejected(run(f, 2), {"data.train", (dir_ / "data" / "train.bin").string(), "too short"});
}

TEST_F(CliErrors, MissingParameterFile) {
  expect_rejected(run((dir_ / "absent.ini").string()), {"cannot open parameter file", "absent.ini"});
}

TEST_F(CliErrors, DuplicateKey) {
  const auto f = write("o.ini", "model", "n_blocks = 3");
  expect_rejected(run(f), {f, "model.n_blocks", "more than once"});
}

TEST_F(CliErrors, NoTrainingLength) {
  const auto f = write("p.ini", "", "");
  expect_rejected(run(f + " --train.steps=0"), {"train.steps = 0", "train.tokens > 0"});
}

TEST_F(CliErrors, FourRanksPrintOnce) {
  const auto f = write("q.ini", "", "");
  expect_rejected(run(f + " --model.d_model=-8", 4),
                  {"on the command line: model.d_model = -8 is invalid: must be > 0"});
}

// Issue 19: sizes that cannot fit are refused before any tensor exists, naming the keys, within
// a second or two (n_blocks = 1e7 used to run for minutes before std::bad_alloc).
TEST_F(CliErrors, SizesThatCannotFitAreRefusedAtOnce) {
  const auto f = write("mem.ini", "", "");
  struct Case {
    std::string args;
    std::vector<std::string> fragments;
  };
  for (const Case& c : std::vector<Case>{
           {"--model.n_blocks=10000000", {"per rank", "is available", "model.n_blocks"}},
           {"--model.d_model=1048576 --model.n_heads=1", {"per rank", "is available", "model.d_model"}},
           {"--train.batch_size=1048576 --train.eval_sequences=1048576", {"per rank", "train.batch_size"}},
           {"--moe.expansion_rate=65536 --moe.granularity=65536 --model.d_model=65536",
            {"moe.granularity = 65536 is invalid", "E * G = 4294967296"}}}) {
    SCOPED_TRACE(c.args);
    const auto start = std::chrono::steady_clock::now();
    expect_rejected(run(f + " " + c.args, 2), c.fragments);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 20);
  }
}

TEST_F(CliErrors, NonFiniteNumbersAndNegativeSeed) {
  const auto f = write("nf.ini", "", "");
  for (const char* key : {"train.lr", "train.eps", "moe.capacity_factor", "train.weight_decay"})
    expect_rejected(run(f + " --" + key + "=inf --moe.routing=token_choice"),
                    {std::string(key) + " = inf is invalid", "finite"});
  expect_rejected(run(f + " --train.seed=-1"), {"train.seed = '-1'", "non-negative integer"});
}

TEST_F(CliErrors, ParameterFileThatIsADirectory) {
  fs::create_directories(dir_ / "params.d");
  expect_rejected(run((dir_ / "params.d").string()), {(dir_ / "params.d").string(), "not a regular file"});
}

TEST_F(CliErrors, FifoAsDataFileIsRefusedNotWaitedOn) {
  const auto f = write("fifo.ini", "", "");
  const fs::path fifo = dir_ / "data" / "pipe.bin";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  const auto start = std::chrono::steady_clock::now();
  expect_rejected(run(f + " --data.train=" + fifo.string(), 2), {"data.train", fifo.string(), "not a regular file"});
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 20);
}

TEST_F(CliErrors, OutputDirThatIsAFileOrUnderOne) {
  const auto f = write("od.ini", "", "");
  const fs::path file = dir_ / "a_file";
  std::ofstream(file) << "keep me\n";
  expect_rejected(run(f + " --output.dir=" + file.string()), {"output.dir", file.string(), "not a directory"});
  expect_rejected(run(f + " --output.dir=" + (file / "run").string()),
                  {"output.dir", file.string() + " is an existing file"});
  std::ifstream in(file);
  std::string text;
  std::getline(in, text);
  EXPECT_EQ(text, "keep me");
}

TEST(Cli, HelpAndPrintConfigRoundTrip) {
  const Result help = run("--help", 0);
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.output.find("--moe.granularity arg (=1)"), std::string::npos) << help.output;
  const std::string ini = std::string(FINEMOE_SOURCE_DIR) + "/inputs/cpu-tiny.ini";
  const Result printed = run(ini + " --print-config --model.d_model=96", 0);
  ASSERT_EQ(printed.exit_code, 0) << printed.output;
  EXPECT_NE(printed.output.find("[model]\nd_model = 96\n"), std::string::npos) << printed.output;
  const fs::path saved = fs::path(::testing::TempDir()) / "printed.ini";
  std::ofstream(saved) << printed.output;
  const Result again = run(saved.string() + " --print-config", 0);
  EXPECT_EQ(again.output, printed.output);
}

}  // namespace
