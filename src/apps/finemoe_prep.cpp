// finemoe-prep: text files to byte-level token shards (llm.c format) with a train/validation split.
#include <boost/program_options.hpp>

#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "data/text_prep.h"
#include "util/check.h"

namespace po = boost::program_options;

namespace {

constexpr const char* kUsage =
    "usage: finemoe-prep [options] --out DIR INPUT...\n"
    "Turns text files (files, folders searched recursively, glob patterns) into byte-level token\n"
    "shards (vocab 256, token = byte; each document starts with a NUL byte) in llm.c's format:\n"
    "DIR/train/train_NNNNNN.bin and DIR/val/val_NNNNNN.bin. The byte stream is cut into blocks of\n"
    "--block-bytes and a --val-fraction of the blocks, spread evenly, goes to validation.\n";

void print_split(const char* name, const std::vector<std::pair<std::string, std::size_t>>& shards,
                 std::size_t tokens, std::size_t total) {
  std::printf("%s: %zu tokens (%.2f%%) in %zu shard%s\n", name, tokens, 100.0 * double(tokens) / double(total),
              shards.size(), shards.size() == 1 ? "" : "s");
  for (const auto& [path, count] : shards) std::printf("  %s  %zu tokens\n", path.c_str(), count);
}

int run(int argc, char** argv) {
  finemoe::TextPrepOptions options;
  po::options_description named("options");
  named.add_options()
    ("help,h", "show this help")
    ("out", po::value<std::string>(&options.out_dir), "output folder (required)")
    ("val-fraction", po::value<double>(&options.val_fraction)->default_value(options.val_fraction),
     "fraction of the blocks that go to validation, 0 < f < 1")
    ("block-bytes", po::value<std::size_t>(&options.block_bytes)->default_value(options.block_bytes),
     "size of the contiguous blocks the split assigns")
    ("shard-tokens", po::value<std::size_t>(&options.shard_tokens)->default_value(options.shard_tokens),
     "tokens per shard at most")
    ("overwrite", po::bool_switch(&options.overwrite), "replace shards already in DIR/train and DIR/val");
  po::options_description hidden;
  hidden.add_options()("input", po::value<std::vector<std::string>>(&options.inputs));
  po::options_description all;
  all.add(named).add(hidden);
  po::positional_options_description positional;
  positional.add("input", -1);

  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw finemoe::InputError(std::string("finemoe-prep: ") + e.what() + " (see --help)");
  }
  if (vm.count("help")) {
    std::cout << kUsage << named;
    return 0;
  }
  if (options.out_dir.empty()) throw finemoe::InputError("finemoe-prep: --out DIR is required (see --help)");

  const finemoe::TextPrepSummary s = finemoe::prepare_text_shards(options);
  const std::size_t total = s.train_tokens + s.val_tokens;
  std::printf("finemoe-prep: %zu documents, %zu bytes, blocks of %zu bytes\n", s.documents, total,
              options.block_bytes);
  print_split("train", s.train_shards, s.train_tokens, total);
  print_split("val", s.val_shards, s.val_tokens, total);
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return finemoe::run_tool("finemoe-prep", run, argc, argv); }
