#pragma once
// Checkpoints under <run_dir>/checkpoints/step_<N>/, independent of the EP x DP layout: replicated
// tensors and their AdamW moments are written once (world rank 0), expert tensors by global expert
// id by the ranks with dp_rank 0; nobody gathers the model. Format and guarantees:
// docs/checkpoints.md.
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "model/parameters.h"
#include "parallel/process_grid.h"
#include "train/train_state.h"

namespace finemoe {

// <run_dir>/checkpoints/step_<step>
std::string checkpoint_dir(const std::string& run_dir, int64_t step);

// Configuration keys a resume cannot change, with their values (config_resume_items): written to
// the manifest, compared on load.
using CheckpointSettings = std::vector<std::pair<std::string, std::string>>;

// The steps of the checkpoint directories under <run_dir>/checkpoints (step_<N>, whatever their
// state), newest first; leftovers of interrupted saves (*.tmp) do not count.
std::vector<int64_t> list_checkpoint_steps(const std::string& run_dir);

// Not collective (rank 0 calls it before anyone counts or loads checkpoints). Finishes or undoes saves a kill
// interrupted: a step_<N>.replaced.tmp whose step_<N> is missing (killed between the two renames
// of a re-save) becomes step_<N> again; every other *.tmp goes. Returns one line per action.
std::string clean_interrupted_saves(const std::string& run_dir);

// Collective over grid.world(). Writes step_<progress.step>.tmp/ in parallel, then rank 0 writes
// the manifest (sizes, CRC32s), fsyncs and renames it to step_<N> (replacing an older copy of the
// same step), and prunes: the newest `keep` checkpoints up to this step stay, newer ones (left from
// a timeline that resumed before them) and leftover .tmp directories go. Any rank's failure
// throws RuntimeFailure on every rank.
template <typename T>
void save_checkpoint(const std::string& run_dir, const ParameterStore<T>& store, const OptimizerState<T>& opt,
                     const TrainProgress& progress, ProcessGrid& grid, int keep,
                     const CheckpointSettings& settings = {});

// Collective over grid.world(). Loads the newest valid checkpoint into `store` (allocated) and
// `opt` (resized like the store), every rank reading the replicated state and the experts it owns
// in the current layout. Damaged checkpoints (missing or corrupt manifest, missing, truncated or
// corrupt data files) are skipped; each one adds a line naming the file and the reason to
// `report` (when not null; the same on every rank). Returns the saved progress (the caller counts
// the restart), or nullopt when no valid checkpoint exists. A checkpoint of a different model, or
// one whose recorded settings differ from `settings` (a key both list), throws InputError naming
// the key that differs.
template <typename T>
std::optional<TrainProgress> load_latest_checkpoint(const std::string& run_dir, ParameterStore<T>& store,
                                                    OptimizerState<T>& opt, ProcessGrid& grid, std::string* report,
                                                    const CheckpointSettings& settings = {});

}  // namespace finemoe
