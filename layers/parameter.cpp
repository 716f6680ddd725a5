#include "layers/parameter.h"

#include "kernels/error.h"

namespace tls {

std::vector<double> shard_of(const Parameter& p, const std::vector<double>& full) {
  int64_t total = 1;
  for (int64_t s : p.full_shape) total *= s;
  if (static_cast<int64_t>(full.size()) != total)
    throw Error("parameter " + p.name + ": " + std::to_string(full.size()) +
                " values given for a tensor of " + std::to_string(total));
  if (!p.tp_sharded()) return full;
  const size_t rank = p.full_shape.size();
  std::vector<double> out;
  out.reserve(static_cast<size_t>(p.value.numel()));
  std::vector<int64_t> index(rank, 0);  // position inside the hyperslab
  for (int64_t n = 0; n < p.value.numel(); ++n) {
    int64_t flat = 0;
    for (size_t d = 0; d < rank; ++d) flat = flat * p.full_shape[d] + p.shard_start[d] + index[d];
    out.push_back(full[static_cast<size_t>(flat)]);
    for (size_t d = rank; d-- > 0;) {  // odometer over the hyperslab, last dimension fastest
      if (++index[d] < p.shard_count[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

}  // namespace tls
