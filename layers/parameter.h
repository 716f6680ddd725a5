// A trainable tensor: its reference name and shape (the state_dict key of docs/DESIGN.md section
// 5), the values this rank holds and their gradient; and ParameterList, where a module declares
// each of its parameters once: declaring allocates the tensor and registers it, and the module's
// parameters() (what the optimizer, the gradient reduction and the checkpoint see) is the list.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "kernels/ops.h"

namespace tls {

struct Parameter {
  std::string name;                 // e.g. "layers.0.attn.proj_key.weight"
  std::vector<int64_t> full_shape;  // the reference's shape, e.g. [1, H, 1, d_h] for r_r_bias
  Tensor value;                     // local values (for one process: the whole tensor)
  Tensor grad;                      // same shape as value; backward accumulates into it
  // Tensor-parallel sharding, declared next to the parameter: this rank holds the hyperslab
  // [shard_start, shard_start + shard_count) of full_shape (row-major), i.e. value is that block
  // flattened. Empty shard_start: the whole tensor (replicated over tp).
  std::vector<int64_t> shard_start, shard_count;

  bool tp_sharded() const { return !shard_start.empty(); }
  // Declares that this rank holds `count` entries from `start` along dimension `dim` of the
  // reference shape (column-parallel weights: dim 0; row-parallel: dim 1; head-split biases:
  // the head dimension).
  void shard_along(int dim, int64_t start, int64_t count) {
    shard_start.assign(full_shape.size(), 0);
    shard_count = full_shape;
    shard_start[static_cast<size_t>(dim)] = start;
    shard_count[static_cast<size_t>(dim)] = count;
  }

  // A free-standing parameter (no list): modules declare theirs through ParameterList::allocate.
  void allocate(Ops& ops, std::string param_name, std::vector<int64_t> shape,
                std::vector<int64_t> reference_shape, DType dtype) {
    name = std::move(param_name);
    full_shape = reference_shape.empty() ? shape : std::move(reference_shape);
    value = ops.zeros(shape, dtype);
    grad = ops.zeros(shape, dtype);
  }
  bool defined() const { return value.defined(); }
};

// Where a parameter stands in its list. The list's order is what the optimizer's flat buffers
// and the gradient norm's sum follow, so it is fixed: every linear layer's weight and bias, then
// the attention's per-head vectors, then the LayerNorms, each group in declaration order.
enum class ParameterGroup { linear, head_vector, layernorm };

// The parameters of one module and the modules it contains, each registered where it is
// allocated. It holds pointers to the modules' Parameter members, so a module with a list is
// neither copied nor moved.
class ParameterList {
 public:
  ParameterList() = default;
  ParameterList(const ParameterList&) = delete;
  ParameterList& operator=(const ParameterList&) = delete;

  // Allocates `p` (zeros of the local `shape`; `reference_shape` is the checkpoint's, empty: the
  // same) under `name` and registers it. A name or a tensor registered twice is an error.
  Parameter& allocate(Ops& ops, Parameter& p, ParameterGroup group, std::string name,
                      std::vector<int64_t> shape, std::vector<int64_t> reference_shape,
                      DType dtype);
  // Grouped as ParameterGroup says, each group in declaration order.
  std::vector<Parameter*> parameters() const;
  size_t size() const { return entries_.size(); }

 private:
  std::vector<std::pair<ParameterGroup, Parameter*>> entries_;
};

// This rank's hyperslab of a whole tensor given in row-major order (the whole tensor when the
// parameter is not sharded): for loading full weights into a sharded parameter.
std::vector<double> shard_of(const Parameter& p, const std::vector<double>& full);

}  // namespace tls
