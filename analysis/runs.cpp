#include "runs.h"

#include <glob.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "io/run_record.h"
#include "util/check.h"

namespace finemoe::analysis {

namespace fs = std::filesystem;

LossSource parse_loss_source(const std::string& text) {
  if (text == "eval") return LossSource::eval;
  if (text == "smoothed_train") return LossSource::smoothed_train;
  throw InputError("--loss: '" + text + "' is not eval or smoothed_train");
}

std::string to_string(LossSource source) {
  return source == LossSource::eval ? "eval" : "smoothed_train";
}

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> paths;
  for (const auto& input : inputs) {
    std::error_code ec;
    if (fs::is_directory(input, ec)) {
      const std::size_t before = paths.size();
      for (const auto& entry : fs::recursive_directory_iterator(input)) {
        if (entry.is_regular_file() && entry.path().extension() == ".h5") paths.push_back(entry.path().string());
      }
      if (paths.size() == before) throw InputError(input + ": directory holds no .h5 run records");
    } else if (fs::exists(input, ec)) {
      paths.push_back(input);
    } else {
      glob_t matches{};
      const int rc = glob(input.c_str(), 0, nullptr, &matches);
      if (rc == 0) {
        for (std::size_t i = 0; i < matches.gl_pathc; ++i) paths.emplace_back(matches.gl_pathv[i]);
      }
      globfree(&matches);
      if (rc != 0) throw InputError(input + ": no such file, directory or matching glob");
    }
  }
  std::sort(paths.begin(), paths.end());
  paths.erase(std::unique(paths.begin(), paths.end()), paths.end());
  return paths;
}

std::string run_variant(const std::vector<std::pair<std::string, std::string>>& config, bool moe) {
  auto value = [&](const std::string& key, const std::string& absent) {
    for (const auto& [k, v] : config)
      if (k == key) return v;
    return absent;  // written before the key existed: the model then had its default
  };
  std::string v = value("model.activation", "relu") == "swiglu" ? "ffn=swiglu" : "ffn=ungated";
  if (!moe) return v;
  v = "moe.shared_experts=" + value("moe.shared_experts", "0") + " " + v;
  if (value("moe.routing", "expert_choice") == "token_choice") v += " moe.balance=" + value("moe.balance", "aux_loss");
  return v;
}

void check_one_variant(const std::vector<Run>& runs, const std::string& law, bool allow_mixed) {
  std::vector<std::pair<std::string, std::string>> seen;  // variant, first record
  for (const Run& r : runs)
    if (std::none_of(seen.begin(), seen.end(), [&](const auto& s) { return s.first == r.variant; }))
      seen.emplace_back(r.variant, r.path);
  if (seen.size() <= 1 || allow_mixed) return;
  std::ostringstream os;
  os << "the " << law << " runs differ in options that change the model (" << seen.size()
     << " variants), so one scaling law would mix different models:";
  for (const auto& [variant, path] : seen) os << "\n  " << variant << "  (e.g. " << path << ")";
  os << "\nfit each variant on its own (give only its records), or pass --mix-variants to fit them under one law";
  throw InputError(os.str());
}

RunSet load_runs(const std::vector<std::string>& paths, LossSource source) {
  RunSet set;
  for (const auto& path : paths) {
    const RecordCheck check = RunRecordReader::classify(path);
    if (check.state != RecordState::completed) {
      set.skipped.push_back({path, to_string(check.state), check.reason});
      continue;
    }
    const RunRecordReader reader(path);
    const ModelInfo model = reader.model();
    const FinalInfo fin = *reader.final_values();
    Run run;
    run.path = path;
    run.moe = reader.run().moe_enabled;
    run.N = double(model.N_total);
    run.D = double(fin.tokens);
    run.G = run.moe ? double(model.G) : 1.0;
    run.E = run.moe ? model.E : 0;
    run.d_model = model.d_model;
    run.n_blocks = model.n_blocks;
    run.variant = run_variant(reader.run().config, run.moe);
    run.loss = source == LossSource::eval ? fin.eval_loss : fin.smoothed_train_loss;
    const char* loss_name = source == LossSource::eval ? "/final eval_loss" : "/final smoothed_train_loss";
    if (!std::isfinite(run.loss) || run.loss <= 0) {
      std::ostringstream os;
      os << path << ": " << loss_name << " = " << run.loss
         << " in a completed record; the fit needs a positive finite loss (fix or remove the record)";
      throw InputError(os.str());
    }
    (run.moe ? set.moe : set.dense).push_back(run);
  }
  return set;
}

}  // namespace finemoe::analysis
