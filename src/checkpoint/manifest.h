#pragma once
// The manifest of a checkpoint directory (manifest.txt): training progress, a description of the
// model, the data files with their sizes and CRC32s, and where each tensor's values and AdamW
// moments lie in those files. Plain text so a person can read it; the format is in
// docs/checkpoints.md.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/parameters.h"
#include "train/train_state.h"

namespace finemoe {

inline constexpr int kCheckpointFormatVersion = 1;

// A checkpoint that cannot be used because it is damaged (truncated, corrupt, incomplete); the
// loader falls back to an older one. A checkpoint of a different model is an InputError instead.
class CorruptCheckpoint : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One tensor as the model defines it, independent of the rank layout.
struct TensorDescription {
  std::string name;
  ParamGroup group = ParamGroup::replicated;
  int64_t experts = 1;                      // global experts (1 for replicated tensors)
  std::vector<int64_t> shape_per_expert;    // the shape without the expert dimension

  int64_t numel_per_expert() const;
};

struct ModelDescription {
  std::string precision;  // scalar type of values and moments: f32 | f64
  int64_t n_experts = 0;  // global experts of the expert tensors (0 without any)
  std::vector<TensorDescription> tensors;  // in the order of the parameter store

  const TensorDescription* find(const std::string& name) const;
};

struct FileEntry {
  std::string name;  // relative to the checkpoint directory
  int64_t bytes = 0;
  uint32_t crc32 = 0;
};

// Global experts [first_expert, first_expert + experts) of one tensor, stored at byte `offset` of
// `file`: values, then first moments, then second moments, each experts * numel_per_expert
// scalars. A replicated tensor is one segment with first_expert 0 and experts 1.
struct Segment {
  std::string file;
  std::string tensor;
  int64_t first_expert = 0;
  int64_t experts = 0;
  int64_t offset = 0;
};

struct Manifest {
  TrainProgress progress;
  ModelDescription model;
  int saved_world_size = 0;       // informational: the layout that wrote it
  int saved_expert_parallel = 0;
  std::vector<FileEntry> files;
  std::vector<Segment> segments;
  // Configuration keys a resume cannot change and their values ("setting KEY VALUE" lines; absent
  // from manifests written before they were recorded).
  std::vector<std::pair<std::string, std::string>> settings;

  int scalar_bytes() const;
  const FileEntry* find_file(const std::string& name) const;
};

// The manifest text, ending with a line holding the CRC32 of everything before it.
std::string format_manifest(const Manifest& m);

// Parses and checks a manifest (its own CRC, every key, segments that reference listed files and
// tensors, lie inside the files and cover each tensor's experts exactly once). `path` names the
// file in messages. Throws CorruptCheckpoint.
Manifest parse_manifest(const std::string& text, const std::string& path);

// Throws InputError naming the first key or tensor that differs between the checkpoint's model
// (read from `path`) and the current one.
void check_compatible(const ModelDescription& saved, const ModelDescription& current,
                      const std::string& path);

}  // namespace finemoe
