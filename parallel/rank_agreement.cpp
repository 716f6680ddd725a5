// throw_if_any_rank_failed: one max-reduction finds the lowest failing rank, one broadcast sends
// its message (as int32 characters, the Comm's host types).
#include "parallel/rank_agreement.h"

#include "kernels/error.h"

namespace tls {

void throw_if_any_rank_failed(Comm& comm, const std::string& error) {
  const int n = comm.size();
  if (n == 1) {
    if (!error.empty()) throw CollectiveError(error);
    return;
  }
  // The lowest failing rank r contributes n - r, the largest contribution.
  const double top = comm.allreduce_max(error.empty() ? 0.0 : static_cast<double>(n - comm.rank()));
  if (top == 0.0) return;
  const bool everyone = comm.allreduce_sum(error.empty() ? 0.0 : 1.0) == n;
  const int root = n - static_cast<int>(top);
  Tensor length = Tensor::empty({1}, DType::i32);
  length.data<int32_t>()[0] = static_cast<int32_t>(error.size());
  comm.broadcast(length, root);
  const int32_t size = length.data<int32_t>()[0];
  Tensor text = Tensor::empty({size > 0 ? size : 1}, DType::i32);
  for (int32_t i = 0; i < size && comm.rank() == root; ++i)
    text.data<int32_t>()[i] = static_cast<unsigned char>(error[static_cast<size_t>(i)]);
  comm.broadcast(text, root);
  std::string message;
  for (int32_t i = 0; i < size; ++i) message += static_cast<char>(text.data<int32_t>()[i]);
  // A problem every rank found (a bad option) needs no rank in its message.
  throw CollectiveError(everyone ? message : "rank " + std::to_string(root) + ": " + message);
}

}  // namespace tls
