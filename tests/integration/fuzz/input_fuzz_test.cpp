// Input fuzzer (issue 19): finemoe-train fed mutated parameter files, command lines, token shards,
// checkpoints and records, one class of damage per case. Every case must end in one of two ways:
//   - exit 2 with one "finemoe-train: error" message naming the file or key (the fragments listed);
//   - a documented recovery with its message (a damaged checkpoint falls back to the previous
//     one; an odd but valid shard trains): exit 0.
// Never a signal, an abort (MPI_ABORT, "fatal") or a sanitizer report, and no pre-existing file
// changes: inputs never, and nothing at all when the run is refused (checksums before and after).
// FINEMOE_TRAIN_BIN in the environment runs the cases against another build (an ASan+UBSan one:
// scripts/fuzz-sanitized.sh).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <zlib.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "data/shard.h"

namespace finemoe {
namespace {

namespace fs = std::filesystem;

std::string train_binary() {
  const char* env = std::getenv("FINEMOE_TRAIN_BIN");
  return env && *env ? env : FINEMOE_TRAIN_BIN;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_text(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary | std::ios::trunc) << s; }

std::map<std::string, uLong> checksums(const fs::path& dir) {
  std::map<std::string, uLong> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string s = read_text(e.path());
    out[e.path().string()] = crc32(0L, reinterpret_cast<const Bytef*>(s.data()), uInt(s.size()));
  }
  return out;
}

const std::string kIni =
    "[model]\nd_model = 16\nn_blocks = 1\nn_heads = 2\ncontext = 16\nvocab = 64\n"
    "[moe]\nexpansion_rate = 4\ngranularity = 2\nrouting = token_choice\ntop_k = 1\ngroup_size = 4\n"
    "[train]\nprecision = fp64\nseed = 3\nsteps = 4\nbatch_size = 8\nlr = 1e-2\nfinal_lr = 1e-3\n"
    "eval_interval = 0\neval_sequences = 8\nthreads = 1\n"
    "[data]\ntrain = data/train.bin\nval = data/val.bin\n"
    "[output]\ndir = run\nlog_interval = 1\ncheckpoint_interval = 1\nkeep_checkpoints = 3\n";

void shard_bytes(const fs::path& p, int32_t magic, int32_t version, int32_t count, const std::vector<uint16_t>& tokens) {
  std::vector<int32_t> header(256, 0);
  header[0] = magic, header[1] = version, header[2] = count;
  std::string s(reinterpret_cast<const char*>(header.data()), 1024);
  s.append(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 2);
  write_text(p, s);
}
std::vector<uint16_t> tokens(size_t n) {
  std::vector<uint16_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = uint16_t((i * 7 + i / 13) % 64);
  return t;
}

// A case: prepares its directory (cwd of the run) and returns the arguments after the binary.
struct Case {
  std::string name;
  std::function<std::string(const fs::path&)> setup;
  int exit_code;                       // 2: refused; 0: recovered
  std::vector<std::string> fragments;  // must all appear in the output
};

std::vector<Case> cases() {
  std::vector<Case> c;
  const auto param = [&](std::string key, std::string value, std::vector<std::string> fragments) {
    const std::string section = key.substr(0, key.find('.')), name = key.substr(key.find('.') + 1);
    c.push_back({"param " + key + " = '" + value + "'",
                 [=](const fs::path& d) {
                   std::string text = kIni;
                   const std::regex line("\n" + name + " = [^\n]*");
                   const auto header = "[" + section + "]\n";
                   if (std::regex_search(text, line)) text = std::regex_replace(text, line, "\n" + name + " = " + value);
                   else if (text.find(header) != std::string::npos)
                     text.insert(text.find(header) + header.size(), name + " = " + value + "\n");
                   else text += header + name + " = " + value + "\n";
                   write_text(d / "p.ini", text);
                   return std::string("p.ini");
                 },
                 2, fragments});
  };
  // Parameter-file values: wrong types, out of range, non-finite, overflowing.
  param("model.d_model", "abc", {"p.ini", "model.d_model", "expected integer"});
  param("model.d_model", "99999999999999999999", {"p.ini", "model.d_model"});
  param("model.d_model", "0", {"p.ini", "model.d_model", "must be > 0"});
  param("model.n_heads", "3", {"model.d_model", "divisible by model.n_heads"});
  param("model.vocab", "70000", {"p.ini", "model.vocab", "[2, 65536]"});
  param("model.context", "-16", {"p.ini", "model.context"});
  param("model.init_scale", "nan", {"p.ini", "model.init_scale"});
  param("model.activation", "swish", {"p.ini", "model.activation", "relu | gelu"});
  param("model.tied_embeddings", "perhaps", {"p.ini", "model.tied_embeddings", "true|false"});
  param("moe.granularity", "3", {"moe.granularity", "must divide"});
  param("moe.granularity", "2147483647", {"moe.granularity"});
  param("moe.expansion_rate", "-1", {"p.ini", "moe.expansion_rate"});
  param("moe.capacity_factor", "inf", {"p.ini", "moe.capacity_factor", "finite"});
  param("moe.capacity_factor", "-0.5", {"p.ini", "moe.capacity_factor"});
  param("moe.top_k", "99", {"p.ini", "moe.top_k"});
  param("moe.routing", "hash", {"p.ini", "moe.routing", "expert_choice | token_choice"});
  param("moe.group_size", "0", {"p.ini", "moe.group_size"});
  param("moe.aux_loss_weight", "-inf", {"p.ini", "moe.aux_loss_weight"});
  param("train.lr", "inf", {"p.ini", "train.lr", "finite"});
  param("train.lr", "1e999", {"p.ini", "train.lr"});
  param("train.eps", "inf", {"p.ini", "train.eps", "finite"});
  param("train.beta1", "1", {"p.ini", "train.beta1", "[0, 1)"});
  param("train.weight_decay", "nan", {"p.ini", "train.weight_decay"});
  param("train.seed", "-1", {"p.ini", "train.seed", "non-negative integer"});
  param("train.steps", "-4", {"p.ini", "train.steps"});
  param("train.batch_size", "7", {"p.ini", "moe.group_size", "must divide the micro-batch"});
  param("train.precision", "fp8", {"p.ini", "train.precision"});
  param("train.device", "tpu", {"p.ini", "train.device"});
  param("train.resume", "maybe", {"p.ini", "train.resume"});
  param("train.eval_sequences", "5", {"p.ini", "train.eval_sequences"});
  param("parallel.expert_parallel", "3", {"parallel.expert_parallel"});
  param("parallel.watchdog_s", "inf", {"p.ini", "parallel.watchdog_s", "finite"});
  param("output.log_interval", "0", {"p.ini", "output.log_interval"});
  param("output.keep_checkpoints", "0", {"p.ini", "output.keep_checkpoints"});
  param("model.n_blocks", "10000000", {"per rank", "is available", "model.n_blocks"});

  const auto file = [&](std::string name, std::string text, std::vector<std::string> fragments) {
    c.push_back({"parameter file: " + name, [=](const fs::path& d) {
                   write_text(d / "p.ini", text);
                   return std::string("p.ini");
                 },
                 2, fragments});
  };
  // Parameter-file structure.
  file("unknown key", kIni + "[model]\nwidth = 3\n", {"p.ini", "unknown key 'model.width'"});
  file("unknown section", kIni + "[optimizer]\nlr = 1\n", {"p.ini", "unknown key 'optimizer.lr'"});
  file("duplicate key", kIni + "[model]\nd_model = 32\n", {"p.ini", "model.d_model", "more than once"});
  file("line without '='", kIni + "[model]\nd_model 32\n", {"p.ini"});
  file("binary garbage", std::string("\x7f" "ELF\x02\x01\x01\0\0\0", 10) + "\xff\xfe[[[", {"p.ini"});
  file("empty", "", {"train.steps", "(the default) is invalid"});
  file("unterminated section", "[model\nd_model = 16\n", {"p.ini"});
  c.push_back({"parameter file is a directory", [](const fs::path& d) {
                 fs::create_directories(d / "conf.d");
                 return std::string("conf.d");
               }, 2, {"conf.d", "not a regular file"}});
  c.push_back({"parameter file missing", [](const fs::path&) { return std::string("absent.ini"); }, 2,
               {"absent.ini", "cannot open parameter file"}});

  const auto cli = [&](std::string args, std::vector<std::string> fragments) {
    c.push_back({"command line: " + args, [=](const fs::path& d) {
                   write_text(d / "p.ini", kIni);
                   return "p.ini " + args;
                 },
                 2, fragments});
  };
  // Command lines.
  cli("--train.step=3", {"on the command line", "unknown key 'train.step'"});
  cli("--ranks=2", {"--ranks", "needs --dry-run"});
  cli("--dry-run --ranks=0", {"--ranks", ">= 1"});
  cli("--train.steps", {"on the command line"});
  cli("--model.d_model=1e3", {"model.d_model = '1e3'", "expected integer"});
  cli("--train.seed=-7", {"train.seed = '-7'", "non-negative integer"});
  cli("--output.dir=p.ini", {"output.dir", "not a directory"});
  cli("--output.dir=p.ini/run", {"output.dir", "p.ini is an existing file"});
  cli("--moe.expansion_rate=65536 --moe.granularity=65536", {"moe.granularity", "E * G"});
  cli("--data.train=data/*.nothing", {"data.train", "no such file"});
  cli("--train.batch_size=1048576 --train.eval_sequences=1048576", {"per rank", "is available", "train.batch_size"});
  cli("--" + std::string(5000, 'x') + "=1", {"on the command line", "unknown key"});

  const auto shard = [&](std::string name, std::function<void(const fs::path&)> make, int code,
                         std::vector<std::string> fragments) {
    c.push_back({"shard: " + name, [=](const fs::path& d) {
                   write_text(d / "p.ini", kIni);
                   make(d / "data" / "train.bin");
                   return std::string("p.ini");
                 },
                 code, fragments});
  };
  // Token shards.
  shard("empty", [](const fs::path& p) { write_text(p, ""); }, 2, {"data.train", "train.bin", "too short"});
  shard("header cut", [](const fs::path& p) { write_text(p, std::string(100, '\0')); }, 2, {"train.bin", "too short"});
  shard("wrong magic", [](const fs::path& p) { shard_bytes(p, 1234, 1, 4096, tokens(4096)); }, 2,
        {"train.bin", "wrong magic"});
  shard("wrong version", [](const fs::path& p) { shard_bytes(p, 20240520, 7, 4096, tokens(4096)); }, 2,
        {"train.bin", "version"});
  shard("negative count", [](const fs::path& p) { shard_bytes(p, 20240520, 1, -5, tokens(4096)); }, 2,
        {"train.bin", "negative token count"});
  shard("count larger than the file", [](const fs::path& p) { shard_bytes(p, 20240520, 1, 9999, tokens(4096)); }, 2,
        {"train.bin"});
  shard("count smaller than the file", [](const fs::path& p) { shard_bytes(p, 20240520, 1, 100, tokens(4096)); }, 2,
        {"train.bin"});
  shard("count near 2^31", [](const fs::path& p) { shard_bytes(p, 20240520, 1, 2147483647, tokens(16)); }, 2,
        {"train.bin"});
  shard("token beyond vocab", [](const fs::path& p) {
          auto t = tokens(4096);
          t[77] = 64;
          shard_bytes(p, 20240520, 1, 4096, t);
        }, 2, {"train.bin", "out of range for vocab"});
  shard("fewer tokens than one sequence", [](const fs::path& p) { shard_bytes(p, 20240520, 1, 8, tokens(8)); }, 2,
        {"data.train"});
  shard("odd but valid: exactly enough tokens, all one value", [](const fs::path& p) {
          shard_bytes(p, 20240520, 1, 17, std::vector<uint16_t>(17, 63));
        }, 0, {"done:"});
  shard("FIFO", [](const fs::path& p) {
          fs::remove(p);
          mkfifo(p.c_str(), 0600);
        }, 2, {"train.bin", "not a regular file"});
  shard("a directory named train.bin", [](const fs::path& p) {
          fs::remove(p);
          fs::create_directories(p);
        }, 2, {"data.train"});

  // Checkpoints of a stopped run (steps 1-2 checkpointed): damage the newest; the run must fall
  // back to step_1 and complete, or (nothing usable) refuse.
  const auto ckpt = [&](std::string name, std::function<void(const fs::path&)> damage, int code,
                        std::vector<std::string> fragments) {
    c.push_back({"checkpoint: " + name, [=](const fs::path& d) {
                   write_text(d / "p.ini", kIni);
                   fs::copy(d / ".." / "stopped", d / "run", fs::copy_options::recursive);
                   damage(d / "run" / "checkpoints");
                   return std::string("p.ini --resume");
                 },
                 code, fragments});
  };
  const auto flip = [](const fs::path& p, size_t at) {
    std::string s = read_text(p);
    s[at % s.size()] = char(s[at % s.size()] ^ 0x5a);
    write_text(p, s);
  };
  ckpt("manifest cut in half", [](const fs::path& k) {
         const std::string s = read_text(k / "step_2" / "manifest.txt");
         write_text(k / "step_2" / "manifest.txt", s.substr(0, s.size() / 2));
       }, 0, {"step_2 rejected", "resumed from checkpoint at step 1"});
  ckpt("manifest byte flipped", [&](const fs::path& k) { flip(k / "step_2" / "manifest.txt", 40); }, 0,
       {"step_2 rejected", "checksum", "resumed from checkpoint at step 1"});
  ckpt("manifest empty", [](const fs::path& k) { write_text(k / "step_2" / "manifest.txt", ""); }, 0,
       {"step_2 rejected", "resumed from checkpoint at step 1"});
  ckpt("manifest missing", [](const fs::path& k) { fs::remove(k / "step_2" / "manifest.txt"); }, 0,
       {"step_2 rejected", "resumed from checkpoint at step 1"});
  ckpt("data file missing", [](const fs::path& k) { fs::remove(k / "step_2" / "replicated.bin"); }, 0,
       {"step_2 rejected", "replicated.bin", "resumed from checkpoint at step 1"});
  ckpt("data file truncated", [](const fs::path& k) { fs::resize_file(k / "step_2" / "experts_0.bin", 100); }, 0,
       {"step_2 rejected", "(truncated)", "resumed from checkpoint at step 1"});
  ckpt("data file byte flipped", [&](const fs::path& k) { flip(k / "step_2" / "replicated.bin", 3000); }, 0,
       {"step_2 rejected", "(corrupt)", "resumed from checkpoint at step 1"});
  ckpt("data file grown", [](const fs::path& k) { std::ofstream(k / "step_2" / "replicated.bin", std::ios::app) << "x"; }, 0,
       {"step_2 rejected", "(wrong size)", "resumed from checkpoint at step 1"});
  ckpt("data header replaced", [](const fs::path& k) {
         std::string s = read_text(k / "step_2" / "replicated.bin");
         s.replace(0, 8, "NOTACKPT");
         write_text(k / "step_2" / "replicated.bin", s);
       }, 0, {"step_2 rejected", "resumed from checkpoint at step 1"});
  ckpt("a data file is a directory", [](const fs::path& k) {
         fs::remove(k / "step_2" / "experts_0.bin");
         fs::create_directories(k / "step_2" / "experts_0.bin");
       }, 0, {"step_2 rejected", "resumed from checkpoint at step 1"});
  ckpt("step directory is a file", [](const fs::path& k) {
         fs::remove_all(k / "step_2");
         write_text(k / "step_2", "not a directory");
       }, 0, {"resumed from checkpoint at step 1"});
  ckpt("only a stale .tmp", [](const fs::path& k) {
         fs::remove_all(k / "step_1");
         fs::rename(k / "step_2", k / "step_2.tmp");
       }, 0, {"interrupted save", "starting at step 0"});
  ckpt("every checkpoint damaged", [](const fs::path& k) {
         write_text(k / "step_1" / "manifest.txt", "x");
         write_text(k / "step_2" / "manifest.txt", "y");
       }, 2, {"none of its checkpoints is usable", "output.overwrite"});
  ckpt("checkpoints directory is a file", [](const fs::path& k) {
         fs::remove_all(k);
         write_text(k, "not a directory");
       }, 2, {"checkpoints", "not a directory"});

  // Records in output.dir.
  const auto record = [&](std::string name, bool resume, std::function<void(const fs::path&)> make,
                          std::vector<std::string> fragments) {
    c.push_back({"record: " + name + (resume ? " (--resume)" : ""), [=](const fs::path& d) {
                   write_text(d / "p.ini", kIni);
                   if (resume) fs::copy(d / ".." / "stopped", d / "run", fs::copy_options::recursive);
                   else fs::create_directories(d / "run");
                   make(d / "run" / "record.h5");
                   return std::string(resume ? "p.ini --resume" : "p.ini");
                 },
                 2, fragments});
  };
  record("text file", false, [](const fs::path& p) { write_text(p, "my notes\n"); }, {"record.h5", "not a run record"});
  record("empty file", false, [](const fs::path& p) { write_text(p, ""); }, {"record.h5", "not a run record"});
  record("directory", false, [](const fs::path& p) { fs::create_directories(p / "x"); }, {"record.h5"});
  record("HDF5 header only", false, [](const fs::path& p) { write_text(p, std::string("\x89HDF\r\n\x1a\n", 8) + std::string(200, '\0')); },
         {"record.h5", "not a run record"});
  record("truncated", true, [](const fs::path& p) { fs::resize_file(p, fs::file_size(p) / 2); },
         {"record.h5", "cannot resume this run record"});
  record("byte-flipped superblock", true, [&](const fs::path& p) { flip(p, 20); }, {"record.h5"});
  record("replaced by text", true, [](const fs::path& p) { write_text(p, "gone"); },
         {"record.h5", "cannot resume this run record"});
  return c;
}

struct Outcome {
  int exit_code;
  std::string output;
};

Outcome run_in(const fs::path& dir, const std::string& args) {
  const std::string cmd = "cd '" + dir.string() + "' && exec timeout -s KILL 60 " + train_binary() + " " + args +
                          " > out.log 2>&1";
  const int status = std::system(cmd.c_str());
  Outcome o;
  o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  o.output = read_text(dir / "out.log");
  fs::remove(dir / "out.log");
  return o;
}

TEST(InputFuzz, EveryDamagedInputIsRefusedOrRecovered) {
  for (const char* kv : {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", "OMP_NUM_THREADS=1",
                         "OPENBLAS_NUM_THREADS=1", "OMP_WAIT_POLICY=passive", "UBSAN_OPTIONS=print_stacktrace=1"}) {
    const std::string s(kv);
    ::setenv(s.substr(0, s.find('=')).c_str(), s.substr(s.find('=') + 1).c_str(), 0);
  }
  const fs::path root = fs::absolute(fs::path(::testing::TempDir())) / ("finemoe_fuzz_" + std::to_string(::getpid()));
  fs::remove_all(root);
  const auto fresh = [&](const fs::path& d) {
    fs::create_directories(d / "data");
    const auto t = tokens(4096);
    write_shard((d / "data" / "train.bin").string(), t.data(), t.size());
    write_shard((d / "data" / "val.bin").string(), t.data(), 1024);
  };
  // A run stopped after two checkpointed steps, for the checkpoint and record cases.
  {
    const fs::path d = root / "stopped_src";
    fresh(d);
    write_text(d / "p.ini", kIni);
    const Outcome o = run_in(d, "p.ini --train.stop_after=2");
    ASSERT_EQ(o.exit_code, 75) << o.output;
    fs::rename(d / "run", root / "stopped");
  }
  const std::vector<Case> all = cases();
  std::printf("%zu input classes\n", all.size());
  EXPECT_GE(all.size(), 60u);
  std::mutex mu;
  std::vector<std::string> failures;
  std::atomic<size_t> next{0};
  const auto worker = [&] {
    for (size_t i; (i = next++) < all.size();) {
      const Case& c = all[i];
      const fs::path d = root / ("case" + std::to_string(i));
      fresh(d);
      const std::string args = c.setup(d);
      const auto before = checksums(d);
      const Outcome o = run_in(d, args + (c.exit_code == 0 ? "" : " --quiet"));
      std::vector<std::string> why;
      if (o.exit_code != c.exit_code) why.push_back("exit " + std::to_string(o.exit_code) + ", want " + std::to_string(c.exit_code));
      for (const auto& f : c.fragments)
        if (o.output.find(f) == std::string::npos) why.push_back("no '" + f + "'");
      for (const char* bad : {"MPI_ABORT", "fatal", "runtime error:", "AddressSanitizer", "LeakSanitizer", "terminate called"})
        if (o.output.find(bad) != std::string::npos) why.push_back(std::string("output holds '") + bad + "'");
      if (o.exit_code == 2) {
        const std::regex line("finemoe-train: error");
        if (std::distance(std::sregex_iterator(o.output.begin(), o.output.end(), line), std::sregex_iterator()) != 1)
          why.push_back("not exactly one error message");
      }
      const auto after = checksums(d);
      for (const auto& [path, sum] : before) {
        const bool input = path.find("/run/") == std::string::npos;
        const auto it = after.find(path);
        if ((input || o.exit_code != 0) && (it == after.end() || it->second != sum))
          why.push_back(path + " changed or disappeared");
      }
      std::lock_guard<std::mutex> lock(mu);
      if (why.empty()) {
        fs::remove_all(d);
        continue;
      }
      std::string all_why;
      for (const auto& w : why) all_why += "\n    " + w;
      failures.push_back(c.name + ":" + all_why + "\n  output:\n" + o.output.substr(0, 2000));
    }
  };
  std::vector<std::thread> pool;
  for (int i = 0; i < 4; ++i) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  for (const auto& f : failures) ADD_FAILURE() << f;
  std::printf("%zu of %zu classes refused or recovered as documented\n", all.size() - failures.size(), all.size());
  if (failures.empty()) fs::remove_all(root);
}

}  // namespace
}  // namespace finemoe
