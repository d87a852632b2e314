// Every parameter file shipped under inputs/ (sweep definitions and allocation files aside) is
// valid: `finemoe-train FILE --dry-run --ranks EP` accepts it and prints the paper's counts, and
// the N_total it prints equals the paper's formula d^2 (8E + 4) n_blocks (12 d^2 n_blocks dense).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "config/options.h"

namespace {

namespace fs = std::filesystem;

std::vector<fs::path> parameter_files() {
  std::vector<fs::path> files;
  const fs::path inputs = fs::path(FINEMOE_SOURCE_DIR) / "inputs";
  for (const auto& entry : fs::recursive_directory_iterator(inputs)) {
    if (!entry.is_regular_file() || entry.path().extension() != ".ini") continue;
    const std::string rel = fs::relative(entry.path(), inputs).string();
    if (rel.rfind("sweeps/", 0) == 0 || rel.rfind("allocations/", 0) == 0) continue;
    files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::pair<int, std::string> run(const std::string& cmd) {
  std::string out;
  FILE* pipe = popen((cmd + " 2>&1").c_str(), "r");
  std::array<char, 4096> buf{};
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(Inputs, EveryParameterFilePassesDryRun) {
  const auto files = parameter_files();
  ASSERT_GE(files.size(), 2u) << "inputs/ should hold parameter files";
  for (const auto& file : files) {
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    const finemoe::Config cfg = finemoe::parse_config_text(text.str(), file.string());
    const int ep = cfg.parallel.expert_parallel;
    if (cfg.train.device == "cuda" && !FINEMOE_CUDA_BUILT) {
      // Without the CUDA backend the file must be refused, naming the key.
      const auto [code, out] = run(std::string(FINEMOE_TRAIN_BIN) + " " + file.string() + " --dry-run --ranks " +
                                   std::to_string(ep));
      EXPECT_EQ(code, 2) << file << "\n" << out;
      EXPECT_NE(out.find("train.device"), std::string::npos) << out;
      continue;
    }
    const auto [code, out] = run(std::string(FINEMOE_TRAIN_BIN) + " " + file.string() + " --dry-run --ranks " +
                                 std::to_string(ep));
    EXPECT_EQ(code, 0) << file << "\n" << out;
    std::smatch m;
    const std::string text_out = out;
    ASSERT_TRUE(std::regex_search(text_out, m, std::regex("N_total \\(paper\\)\\s+(\\d+)"))) << file << "\n" << out;
    const int64_t d = cfg.model.d_model, E = cfg.moe.expansion_rate;
    const int64_t expected = cfg.moe.enabled ? d * d * (8 * E + 4) * cfg.model.n_blocks : 12 * d * d * cfg.model.n_blocks;
    EXPECT_EQ(std::stoll(m[1].str()), expected) << file;
  }
}

}  // namespace
