#include "parallel/sequence_layout.h"

#include "kernels/error.h"

namespace tls {

SequenceLayout::SequenceLayout(SpOrder order, int sp, int64_t tokens)
    : order_(order), sp_(sp), tokens_(tokens) {
  if (sp < 1 || tokens % slices() != 0)
    throw Error(std::string("sequence layout ") + sp_order_name(order) + ": " +
                std::to_string(tokens) + " positions do not split into " +
                std::to_string(slices()) + " equal slices over sp " + std::to_string(sp));
}

std::vector<int> SequenceLayout::slices_of(int rank) const {
  if (order_ == SpOrder::zigzag) return {rank, 2 * sp_ - 1 - rank};
  return {rank};
}

int SequenceLayout::owner(int slice) const {
  return order_ == SpOrder::zigzag && slice >= sp_ ? 2 * sp_ - 1 - slice : slice;
}

int SequenceLayout::local_index(int slice) const {
  return order_ == SpOrder::zigzag && slice >= sp_ ? 1 : 0;
}

std::vector<Segment> SequenceLayout::segments(int rank) const {
  std::vector<Segment> out;
  const int64_t n = slice_length();
  int64_t row0 = 0;
  for (int g : slices_of(rank)) {
    out.push_back({row0, g * n, n});
    row0 += n;
  }
  return out;
}

int64_t SequenceLayout::global_position(int rank, int64_t row) const {
  const int64_t n = slice_length();
  return slices_of(rank)[static_cast<size_t>(row / n)] * n + row % n;
}

const char* sp_order_name(SpOrder order) {
  return order == SpOrder::zigzag ? "zigzag" : "contiguous";
}

}  // namespace tls
