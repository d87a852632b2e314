#include "checkpoint/checkpoint.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <memory>
#include <vector>

#include "checkpoint/data_file.h"
#include "checkpoint/manifest.h"
#include "util/check.h"

namespace finemoe {
namespace {

namespace fs = std::filesystem;

constexpr const char* kManifestName = "manifest.txt";
constexpr const char* kReplicatedFile = "replicated.bin";

template <typename T>
const char* precision_name();
template <>
const char* precision_name<float>() { return "f32"; }
template <>
const char* precision_name<double>() { return "f64"; }

std::string step_name(int64_t step) { return "step_" + std::to_string(step); }

// "step_<digits>" (no leading zeros) -> step; anything else -> -1.
int64_t parse_step_name(const std::string& name) {
  const std::string prefix = "step_";
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0 || name.size() > prefix.size() + 18)
    return -1;
  for (size_t i = prefix.size(); i < name.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  if (name[prefix.size()] == '0' && name.size() > prefix.size() + 1) return -1;
  return std::stoll(name.substr(prefix.size()));
}

bool is_temporary_name(const std::string& name) {
  return name.size() > 9 && name.compare(0, 5, "step_") == 0 && name.compare(name.size() - 4, 4, ".tmp") == 0;
}

template <typename F>
std::string capture_error(F&& f) {
  try {
    f();
    return {};
  } catch (const std::exception& e) {
    return e.what();
  }
}

std::string broadcast_string(Communicator& comm, std::string s, int root) {
  int64_t n = static_cast<int64_t>(s.size());
  comm.broadcast(&n, 1, DType::i64, root);
  s.resize(static_cast<size_t>(n));
  if (n > 0) comm.broadcast(s.data(), static_cast<size_t>(n), DType::u8, root);
  return s;
}

// Collective: when any rank's step failed, every rank throws the lowest failing rank's message,
// so no rank is left waiting in a later collective.
void agree_or_throw(Communicator& comm, const std::string& local_error) {
  const int32_t mine = local_error.empty() ? 0 : comm.size() - comm.rank();
  const int32_t top = comm.max(mine);
  if (top == 0) return;
  const int root = comm.size() - top;
  throw RuntimeFailure("checkpoint: rank " + std::to_string(root) + ": " + broadcast_string(comm, local_error, root));
}

// The model as the checkpoint describes it; collective over the expert group (global expert
// counts are the sums of the local ones).
template <typename T>
ModelDescription describe_model(const ParameterStore<T>& store, ProcessGrid& grid) {
  ModelDescription d;
  d.precision = precision_name<T>();
  std::vector<int64_t> local_experts;
  for (int i = 0; i < store.count(); ++i) {
    const ParamSpec& s = store.spec(i);
    FINEMOE_CHECK(!s.name.empty() && std::none_of(s.name.begin(), s.name.end(),
                                                  [](unsigned char c) { return std::isspace(c); }),
                  "parameter name '" << s.name << "' is empty or holds white space");
    TensorDescription t{s.name, s.group, 1, s.shape};
    if (s.group == ParamGroup::expert) {
      t.shape_per_expert.erase(t.shape_per_expert.begin());
      local_experts.push_back(s.experts());
    }
    d.tensors.push_back(std::move(t));
  }
  if (!local_experts.empty()) grid.expert_group().all_reduce_sum(local_experts.data(), local_experts.size());
  size_t k = 0;
  for (auto& t : d.tensors) {
    if (t.group != ParamGroup::expert) continue;
    t.experts = local_experts[k++];
    d.n_experts = std::max(d.n_experts, t.experts);
  }
  return d;
}

// This rank's experts of tensor i: [first, end). A replicated tensor is expert 0 of 1.
std::pair<int64_t, int64_t> local_expert_range(const ParamSpec& s) {
  if (s.group != ParamGroup::expert) return {0, 1};
  return {s.first_global_expert, s.first_global_expert + s.experts()};
}

template <typename T>
void check_optimizer_shape(const ParameterStore<T>& store, const OptimizerState<T>& opt) {
  for (int g = 0; g < 2; ++g) {
    const size_t n = store.values(static_cast<ParamGroup>(g)).size();
    FINEMOE_CHECK(opt.m[g].size() == n && opt.v[g].size() == n, "optimizer state is not laid out like the store");
  }
}

// The store's values and AdamW moments on the host, [group][values, m, v]: one transfer each.
template <typename T>
struct HostState {
  std::vector<T> data[2][3];
};

template <typename T>
HostState<T> download_state(const ParameterStore<T>& store, const OptimizerState<T>& opt) {
  HostState<T> h;
  for (int g = 0; g < 2; ++g) {
    h.data[g][0] = to_host(store.values(static_cast<ParamGroup>(g)));
    h.data[g][1] = to_host(opt.m[g]);
    h.data[g][2] = to_host(opt.v[g]);
  }
  return h;
}

// Appends tensor i's values, first and second moments; returns the segment's offset.
template <typename T>
int64_t append_tensor(DataFileWriter& out, const ParameterStore<T>& store, const HostState<T>& host, int i) {
  const ParamSpec& s = store.spec(i);
  const int g = static_cast<int>(s.group);
  const int64_t offset = out.bytes();
  const int64_t bytes = s.numel() * static_cast<int64_t>(sizeof(T));
  for (int q = 0; q < 3; ++q) out.append(host.data[g][q].data() + store.offset(i), bytes);
  return offset;
}

// After step `written` was renamed into place: keep it and the newest keep-1 older ones; remove
// newer ones (a timeline the run abandoned when it resumed before them) and leftover .tmp.
void prune(const fs::path& root, int64_t written, int keep) {
  std::vector<int64_t> older;
  std::vector<fs::path> doomed;
  for (const auto& entry : fs::directory_iterator(root)) {
    const std::string name = entry.path().filename().string();
    const int64_t step = parse_step_name(name);
    if (step >= 0 && step < written) older.push_back(step);
    else if (step > written || is_temporary_name(name)) doomed.push_back(entry.path());
  }
  std::sort(older.rbegin(), older.rend());
  for (size_t i = static_cast<size_t>(keep - 1); i < older.size(); ++i) doomed.push_back(root / step_name(older[i]));
  for (const auto& p : doomed) fs::remove_all(p);
}

// A resume continues the saved run: every key both the checkpoint and this run list must agree.
void check_settings(const CheckpointSettings& saved, const CheckpointSettings& current, const std::string& path) {
  for (const auto& [key, now] : current)
    for (const auto& [saved_key, then] : saved)
      if (key == saved_key && now != then)
        throw InputError("error: cannot resume from " + path + ": it was saved with " + key + " = " + then +
                         ", this run has " + key + " = " + now + "; a resume cannot change " + key +
                         " (keep " + then + ", or start a new run in another output.dir)");
}

std::vector<int64_t> list_steps_newest_first(const fs::path& root) {
  std::vector<int64_t> steps;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return steps;
  for (const auto& entry : fs::directory_iterator(root)) {
    const int64_t step = parse_step_name(entry.path().filename().string());
    if (step >= 0 && entry.is_directory()) steps.push_back(step);
  }
  std::sort(steps.rbegin(), steps.rend());
  return steps;
}

// Collective: every file is checked by one rank (round robin); returns "" or the reasons.
std::string verify_files(const Manifest& m, const fs::path& dir, Communicator& world) {
  int64_t mine[3] = {-1, FileCheck::ok, 0};  // file index, reason, detail of this rank's first failure
  for (size_t i = static_cast<size_t>(world.rank()); i < m.files.size(); i += static_cast<size_t>(world.size())) {
    const FileEntry& f = m.files[i];
    const FileCheck c = check_data_file((dir / f.name).string(), f.bytes, f.crc32, m.scalar_bytes());
    if (c.reason != FileCheck::ok) {
      mine[0] = static_cast<int64_t>(i);
      mine[1] = c.reason;
      mine[2] = c.detail;
      break;
    }
  }
  std::vector<int64_t> all(3 * static_cast<size_t>(world.size()));
  world.all_gather(mine, all.data(), 3, DType::i64);
  std::string reasons;
  for (size_t i = 0; i < m.files.size(); ++i)
    for (int r = 0; r < world.size(); ++r)
      if (all[3 * r] == static_cast<int64_t>(i)) {
        const FileEntry& f = m.files[i];
        const FileCheck c{all[3 * r + 1], all[3 * r + 2]};
        reasons += (reasons.empty() ? "" : "; ") + c.describe((dir / f.name).string(), f.bytes, f.crc32);
      }
  return reasons;
}

// Reads this rank's part of every tensor: the replicated ones whole, its experts' slices.
template <typename T>
void read_state(const Manifest& m, const fs::path& dir, ParameterStore<T>& store, OptimizerState<T>& opt) {
  // Read into host copies, uploaded only once every tensor was found: a damaged checkpoint leaves
  // the store as it was.
  HostState<T> host;
  for (int g = 0; g < 2; ++g)
    for (auto& part : host.data[g]) part.resize(store.values(static_cast<ParamGroup>(g)).size());
  std::map<std::string, std::unique_ptr<DataFileReader>> readers;
  const auto reader = [&](const std::string& file) -> DataFileReader& {
    auto& r = readers[file];
    if (!r) r = std::make_unique<DataFileReader>((dir / file).string());
    return *r;
  };
  for (int i = 0; i < store.count(); ++i) {
    const ParamSpec& s = store.spec(i);
    const int g = static_cast<int>(s.group);
    T* targets[3] = {host.data[g][0].data() + store.offset(i), host.data[g][1].data() + store.offset(i),
                     host.data[g][2].data() + store.offset(i)};
    const auto [lo, hi] = local_expert_range(s);
    const int64_t per = s.numel_per_expert();
    int64_t covered = 0;
    for (const Segment& seg : m.segments) {
      if (seg.tensor != s.name) continue;
      const int64_t a = std::max(lo, seg.first_expert), b = std::min(hi, seg.first_expert + seg.experts);
      if (a >= b) continue;
      for (int q = 0; q < 3; ++q) {
        const int64_t src = seg.offset + (q * seg.experts + (a - seg.first_expert)) * per * int64_t(sizeof(T));
        reader(seg.file).read(src, targets[q] + (a - lo) * per, (b - a) * per * int64_t(sizeof(T)));
      }
      covered += b - a;
    }
    FINEMOE_CHECK(covered == hi - lo, "tensor " << s.name << ": experts " << lo << ".." << hi - 1
                                                << " are not all in the checkpoint");
  }
  for (int g = 0; g < 2; ++g) {
    to_device(store.values(static_cast<ParamGroup>(g)), host.data[g][0]);
    to_device(opt.m[g], host.data[g][1]);
    to_device(opt.v[g], host.data[g][2]);
  }
}

}  // namespace

std::string checkpoint_dir(const std::string& run_dir, int64_t step) {
  return (fs::path(run_dir) / "checkpoints" / step_name(step)).string();
}

std::vector<int64_t> list_checkpoint_steps(const std::string& run_dir) {
  return list_steps_newest_first(fs::path(run_dir) / "checkpoints");
}

std::string clean_interrupted_saves(const std::string& run_dir) {
  const fs::path root = fs::path(run_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return {};
  const std::string replaced_suffix = ".replaced.tmp";
  std::string report;
  std::vector<fs::path> leftovers;
  for (const auto& entry : fs::directory_iterator(root))
    if (is_temporary_name(entry.path().filename().string())) leftovers.push_back(entry.path());
  std::sort(leftovers.begin(), leftovers.end());
  for (const fs::path& p : leftovers) {
    const std::string name = p.filename().string();
    if (name.size() > replaced_suffix.size() &&
        name.compare(name.size() - replaced_suffix.size(), replaced_suffix.size(), replaced_suffix) == 0) {
      const fs::path original = root / name.substr(0, name.size() - replaced_suffix.size());
      if (parse_step_name(original.filename().string()) >= 0 && !fs::exists(original)) {
        fs::rename(p, original);
        report += p.string() + ": a re-save was interrupted; restored as " + original.filename().string() + "\n";
        continue;
      }
    }
    fs::remove_all(p);
    report += p.string() + ": left by an interrupted save; removed\n";
  }
  if (!report.empty()) fsync_directory(root.string());
  return report;
}

template <typename T>
void save_checkpoint(const std::string& run_dir, const ParameterStore<T>& store, const OptimizerState<T>& opt,
                     const TrainProgress& progress, ProcessGrid& grid, int keep, const CheckpointSettings& settings) {
  FINEMOE_CHECK(keep >= 1, "keep_checkpoints must be >= 1, got " << keep);
  FINEMOE_CHECK(store.allocated(), "checkpoint of an unallocated parameter store");
  check_optimizer_shape(store, opt);
  Communicator& world = grid.world();
  const bool root_rank = world.rank() == 0;

  Manifest manifest;
  manifest.progress = progress;
  manifest.model = describe_model(store, grid);
  manifest.saved_world_size = grid.world_size();
  manifest.saved_expert_parallel = grid.ep_size();
  manifest.settings = settings;

  const fs::path root = fs::path(run_dir) / "checkpoints";
  const fs::path final_dir = root / step_name(progress.step);
  const fs::path tmp_dir = root / (step_name(progress.step) + ".tmp");

  std::string error;
  if (root_rank)
    error = capture_error([&] {
      fs::create_directories(root);
      fs::remove_all(tmp_dir);
      fs::create_directory(tmp_dir);
    });
  agree_or_throw(world, error);

  // Everybody writes in parallel: rank 0 the replicated state, dp_rank 0 its experts.
  std::vector<int> expert_tensors;
  for (int i = 0; i < store.count(); ++i)
    if (store.spec(i).group == ParamGroup::expert) expert_tensors.push_back(i);
  const bool writes_experts = grid.dp_rank() == 0 && !expert_tensors.empty();
  const std::string expert_file = "experts_" + std::to_string(grid.ep_rank()) + ".bin";
  const HostState<T> host = root_rank || writes_experts ? download_state(store, opt) : HostState<T>{};
  // What this rank wrote, exchanged so rank 0 can write the manifest: wrote an expert file, ep_rank,
  // bytes, CRC32, then (first expert, experts, offset) per expert tensor.
  std::vector<int64_t> record(4 + 3 * expert_tensors.size(), 0);
  error = capture_error([&] {
    if (root_rank) {
      DataFileWriter out((tmp_dir / kReplicatedFile).string(), sizeof(T));
      for (int i = 0; i < store.count(); ++i)
        if (store.spec(i).group == ParamGroup::replicated)
          manifest.segments.push_back(Segment{kReplicatedFile, store.spec(i).name, 0, 1,
                                              append_tensor(out, store, host, i)});
      manifest.files.push_back(FileEntry{kReplicatedFile, out.bytes(), out.crc32()});
      out.finish();
    }
    if (writes_experts) {
      DataFileWriter out((tmp_dir / expert_file).string(), sizeof(T));
      for (size_t k = 0; k < expert_tensors.size(); ++k) {
        const ParamSpec& s = store.spec(expert_tensors[k]);
        record[4 + 3 * k] = s.first_global_expert;
        record[5 + 3 * k] = s.experts();
        record[6 + 3 * k] = append_tensor(out, store, host, expert_tensors[k]);
      }
      record[0] = 1;
      record[1] = grid.ep_rank();
      record[2] = out.bytes();
      record[3] = out.crc32();
      out.finish();
    }
  });
  agree_or_throw(world, error);

  std::vector<int64_t> records(record.size() * static_cast<size_t>(world.size()));
  world.all_gather(record.data(), records.data(), record.size(), DType::i64);

  if (root_rank)
    error = capture_error([&] {
      for (int r = 0; r < world.size(); ++r) {
        const int64_t* rec = records.data() + record.size() * static_cast<size_t>(r);
        if (rec[0] == 0) continue;
        const std::string name = "experts_" + std::to_string(rec[1]) + ".bin";
        manifest.files.push_back(FileEntry{name, rec[2], static_cast<uint32_t>(rec[3])});
        for (size_t k = 0; k < expert_tensors.size(); ++k)
          manifest.segments.push_back(Segment{name, store.spec(expert_tensors[k]).name, rec[4 + 3 * k],
                                              rec[5 + 3 * k], rec[6 + 3 * k]});
      }
      // Checks the segments cover every expert exactly once before the checkpoint goes live.
      const std::string text = format_manifest(manifest);
      parse_manifest(text, (tmp_dir / kManifestName).string());
      write_text_file_synced((tmp_dir / kManifestName).string(), text);
      fsync_directory(tmp_dir.string());
      const fs::path replaced = root / (step_name(progress.step) + ".replaced.tmp");
      if (fs::exists(final_dir)) {
        fs::remove_all(replaced);
        fs::rename(final_dir, replaced);
      }
      fs::rename(tmp_dir, final_dir);
      fsync_directory(root.string());
      prune(root, progress.step, keep);
    });
  agree_or_throw(world, error);
}

template <typename T>
std::optional<TrainProgress> load_latest_checkpoint(const std::string& run_dir, ParameterStore<T>& store,
                                                    OptimizerState<T>& opt, ProcessGrid& grid, std::string* report,
                                                    const CheckpointSettings& settings) {
  FINEMOE_CHECK(store.allocated(), "loading a checkpoint into an unallocated parameter store");
  Communicator& world = grid.world();
  const bool root_rank = world.rank() == 0;
  const ModelDescription model = describe_model(store, grid);
  const fs::path root = fs::path(run_dir) / "checkpoints";

  // Rank 0 lists and reads; everybody decides on the same broadcast text.
  std::vector<int64_t> steps;
  std::string error;
  if (root_rank) error = capture_error([&] { steps = list_steps_newest_first(root); });
  agree_or_throw(world, error);
  int64_t n_steps = static_cast<int64_t>(steps.size());
  world.broadcast(&n_steps, 1, DType::i64, 0);
  steps.resize(static_cast<size_t>(n_steps));
  if (n_steps > 0) world.broadcast(steps.data(), steps.size(), DType::i64, 0);

  for (const int64_t step : steps) {
    const fs::path dir = root / step_name(step);
    const std::string manifest_path = (dir / kManifestName).string();
    std::string text;
    int32_t readable = root_rank ? read_text_file(manifest_path, &text) : 0;
    world.broadcast(&readable, 1, DType::i32, 0);
    text = broadcast_string(world, text, 0);

    std::string rejection;
    Manifest m;
    if (!readable) {
      rejection = manifest_path + ": missing or unreadable (the checkpoint was not completed)";
    } else {
      try {
        m = parse_manifest(text, manifest_path);
      } catch (const CorruptCheckpoint& e) {
        rejection = e.what();
      }
    }
    if (rejection.empty() && m.progress.step != step)
      rejection = manifest_path + ": records step " + std::to_string(m.progress.step) + ", not " +
                  std::to_string(step);
    if (rejection.empty()) {
      check_settings(m.settings, settings, manifest_path);
      check_compatible(m.model, model, manifest_path);
      rejection = verify_files(m, dir, world);
    }
    if (!rejection.empty()) {
      if (report) *report += step_name(step) + " rejected: " + rejection + "\n";
      continue;
    }
    opt.resize_like(store);
    error = capture_error([&] { read_state(m, dir, store, opt); });
    agree_or_throw(world, error);
    return m.progress;
  }
  return std::nullopt;
}

template void save_checkpoint<float>(const std::string&, const ParameterStore<float>&, const OptimizerState<float>&,
                                     const TrainProgress&, ProcessGrid&, int, const CheckpointSettings&);
template void save_checkpoint<double>(const std::string&, const ParameterStore<double>&,
                                      const OptimizerState<double>&, const TrainProgress&, ProcessGrid&, int,
                                      const CheckpointSettings&);
template std::optional<TrainProgress> load_latest_checkpoint<float>(const std::string&, ParameterStore<float>&,
                                                                    OptimizerState<float>&, ProcessGrid&,
                                                                    std::string*, const CheckpointSettings&);
template std::optional<TrainProgress> load_latest_checkpoint<double>(const std::string&, ParameterStore<double>&,
                                                                     OptimizerState<double>&, ProcessGrid&,
                                                                     std::string*, const CheckpointSettings&);

}  // namespace finemoe
