// finemoe-bigram: the count-based bigram baseline (add-k smoothing) fitted on training shards and
// scored on validation shards.
#include <boost/program_options.hpp>

#include <cmath>
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include "data/bigram.h"
#include "data/token_dataset.h"
#include "util/check.h"

namespace po = boost::program_options;

namespace {

constexpr const char* kUsage =
    "usage: finemoe-bigram --train SHARDS --val SHARDS [options]\n"
    "Fits a bigram model P(b|a) = (c(a,b) + k) / (c(a) + k V) on the training shards and prints\n"
    "its cross-entropy on the validation shards (SHARDS: a shard file, a folder of *.bin or a\n"
    "glob). For byte-level shards (vocab 256) bits per token are bits per byte.\n";

int run(int argc, char** argv) {
  std::string train;
  std::string val;
  int vocab = 256;
  double k = 1.0;
  po::options_description named("options");
  named.add_options()
    ("help,h", "show this help")
    ("train", po::value<std::string>(&train), "training shards (required)")
    ("val", po::value<std::string>(&val), "validation shards (required)")
    ("vocab", po::value<int>(&vocab)->default_value(vocab), "vocabulary size, 1..65536")
    ("k", po::value<double>(&k)->default_value(k), "add-k smoothing constant, k > 0");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, named), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw finemoe::InputError(std::string("finemoe-bigram: ") + e.what() + " (see --help)");
  }
  if (vm.count("help")) {
    std::cout << kUsage << named;
    return 0;
  }
  if (train.empty() || val.empty()) throw finemoe::InputError("finemoe-bigram: --train and --val are required (see --help)");
  if (vocab < 1 || vocab > 65536) {
    throw finemoe::InputError("finemoe-bigram: --vocab " + std::to_string(vocab) + " is out of range (allowed: 1..65536)");
  }

  const finemoe::TokenDataset train_data(train, vocab, "--train");
  const finemoe::TokenDataset val_data(val, vocab, "--val");
  finemoe::BigramModel model(vocab, k);
  model.fit(train_data);
  const double train_nats = model.cross_entropy(train_data);
  const double val_nats = model.cross_entropy(val_data);
  std::printf("bigram, add-k = %g, vocab %d: fitted on %zu train tokens, scored on %zu val tokens\n", k, vocab,
              train_data.size(), val_data.size());
  std::printf("train cross-entropy: %.4f nats/token = %.4f bits/token\n", train_nats, train_nats / std::log(2.0));
  std::printf("val cross-entropy:   %.4f nats/token = %.4f bits/token%s\n", val_nats, val_nats / std::log(2.0),
              vocab == 256 ? " (bits/byte for byte-level shards)" : "");
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return finemoe::run_tool("finemoe-bigram", run, argc, argv); }
