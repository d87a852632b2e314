#pragma once
// Text files to byte-level shards (vocab 256, token = byte) with a train/validation split.
//
// The files (in sorted order) form one byte stream, each document preceded by a NUL byte that
// marks the start of a document, as llm.c precedes each document with its end-of-text token.
// The stream is cut into contiguous blocks of `block_bytes`; block b goes to validation when
// floor((b + 1) f) > floor(b f) for f = val_fraction, which spreads exactly floor(n_blocks f)
// validation blocks evenly over the corpus (every topic is represented, and the split does not
// depend on how many files there are: a single large file splits as well as many small ones).
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace finemoe {

inline constexpr unsigned char kDocumentStart = 0;

struct TextPrepOptions {
  std::vector<std::string> inputs;  // files, directories (searched recursively), glob patterns
  std::string out_dir;              // shards go to out_dir/train and out_dir/val
  double val_fraction = 0.05;       // in (0, 1)
  std::size_t block_bytes = 65536;  // split granularity
  std::size_t shard_tokens = 100000000;  // tokens per shard at most
  bool overwrite = false;           // replace shards already in the output folders
};

struct TextPrepSummary {
  std::size_t documents = 0;
  std::size_t train_tokens = 0;
  std::size_t val_tokens = 0;
  std::vector<std::pair<std::string, std::size_t>> train_shards;  // path, tokens
  std::vector<std::pair<std::string, std::size_t>> val_shards;
};

// The text files the inputs name, in sorted order, each once. Throws InputError for an input that names
// nothing.
std::vector<std::string> resolve_text_files(const std::vector<std::string>& inputs);

// Whether block `block` of the stream belongs to the validation split.
bool is_validation_block(std::size_t block, double val_fraction);

// Writes the shards. Throws InputError for bad options, unreadable files, files that are not
// text (hold a NUL byte) or a corpus too small to give both splits; shards written before the
// error are removed.
TextPrepSummary prepare_text_shards(const TextPrepOptions& options);

}  // namespace finemoe
