#include "layers/init.h"

#include <string>
#include <vector>

#include "kernels/counter_rng.h"

namespace tls {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_layernorm(const std::string& name) {
  return name.find(".norm1.") != std::string::npos || name.find(".norm2.") != std::string::npos ||
         name.find(".dual_ln_") != std::string::npos;
}

}  // namespace

void initialize_parameters(Ops& ops, TransformerLSModel& model, uint64_t seed) {
  for (Parameter* p : model.parameters()) {
    const std::string& name = p->name;
    int64_t total = 1;
    for (int64_t n : p->full_shape) total *= n;
    std::vector<double> values(static_cast<size_t>(total), 0.0);  // the whole tensor
    const bool is_bias = ends_with(name, ".bias");
    if (!is_bias) {
      const double mean = is_layernorm(name) ? 1.0 : 0.0;
      const uint64_t key = rng::stream_key(seed, 0, rng::name_id(name));
      for (size_t i = 0; i < values.size(); ++i) values[i] = mean + kInitStd * rng::normal(key, i);
    }
    ops.from_host(p->value, shard_of(*p, values));
  }
}

}  // namespace tls
