// Writes finemoe's initial state of every reference case (tests/reference/README.md): the
// configuration, the tokens and every parameter tensor by name, as ParameterStore::allocate
// initialises them. tests/reference/reference.py reads this file and builds the PyTorch model
// from these weights.
//   usage: finemoe_reference_initial_state OUT.h5
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "io/h5.h"
#include "reference_cases.h"

namespace finemoe::reference {
namespace {

// A [shape[0], shape[1:]...] dataset holding values, in one chunk.
template <typename V>
void write_tensor(h5::Node& node, const std::string& name, h5::Type type, const std::vector<int64_t>& shape,
                  const std::vector<V>& values) {
  const std::vector<hsize_t> inner(shape.begin() + 1, shape.end());
  h5::Series series = node.create_series(name, type, inner, hsize_t(shape[0]));
  series.append(values);
}

void write_case(h5::File& file, const ReferenceCase& c) {
  h5::Group group = file.create_group(c.name);
  h5::Group config = group.create_group("config");
  for (const auto& [key, value] : reference_config_items(c.config)) config.set(key, value);
  const TokenBatch batch = reference_batch(c);
  group.set("n_seq", int64_t(c.n_seq));
  group.set("loss_scale", batch.loss_scale);
  const std::vector<int64_t> token_shape{c.n_seq, c.config.model.context};
  for (const std::string stream : {"inputs", "targets"}) {
    const std::vector<int32_t> tokens = reference_tokens(c, stream);
    write_tensor(group, stream, h5::Type::int64, token_shape, std::vector<int64_t>(tokens.begin(), tokens.end()));
  }

  ParameterStore<double> store;
  const auto model = make_reference_model(c.config, store);
  allocate_reference_weights(c, store);
  std::vector<std::string> names;
  h5::Group weights = group.create_group("weights");
  for (int i = 0; i < store.count(); ++i) {
    const ParamSpec& spec = store.spec(i);
    const double* v = store.values(spec.group).data() + store.offset(i);
    write_tensor(weights, spec.name, h5::Type::float64, spec.shape, std::vector<double>(v, v + spec.numel()));
    names.push_back(spec.name);
  }
  group.write_strings("parameter_names", names);
}

}  // namespace
}  // namespace finemoe::reference

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " OUT.h5\n";
    return 2;
  }
  try {
    finemoe::h5::File file = finemoe::h5::File::create(argv[1]);
    for (const auto& c : finemoe::reference::reference_cases()) finemoe::reference::write_case(file, c);
  } catch (const std::exception& e) {
    std::cerr << argv[0] << ": " << e.what() << "\n";
    return 2;
  }
  return 0;
}
