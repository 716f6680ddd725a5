#include "layers/parameter.h"

#include "kernels/error.h"

namespace tls {

Parameter& ParameterList::allocate(Ops& ops, Parameter& p, ParameterGroup group, std::string name,
                                   std::vector<int64_t> shape, std::vector<int64_t> reference_shape,
                                   DType dtype) {
  for (const auto& [g, q] : entries_)
    if (q == &p || q->name == name)
      throw Error("parameter " + name + " is declared twice in its module's list");
  p.allocate(ops, std::move(name), std::move(shape), std::move(reference_shape), dtype);
  entries_.emplace_back(group, &p);
  return p;
}

std::vector<Parameter*> ParameterList::parameters() const {
  std::vector<Parameter*> out;
  out.reserve(entries_.size());
  for (ParameterGroup group :
       {ParameterGroup::linear, ParameterGroup::head_vector, ParameterGroup::layernorm})
    for (const auto& [g, p] : entries_)
      if (g == group) out.push_back(p);
  return out;
}

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
