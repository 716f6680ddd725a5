// Evaluation (docs/DESIGN.md section 4): one stream (B = 1) with the cache carried, block i with
// inputs b[iT .. iT+T) and targets b[iT+1 .. iT+T+1), so every byte after the first is predicted
// once; the final short block is right-padded and only its real targets count. With sp > 1 each
// rank evaluates its slice of every block. Bits per character = total NLL / (count ln 2).
#pragma once

#include <string>

#include "layers/model.h"

namespace tls {

struct EvalResult {
  double nll = 0;     // total, in nats
  int64_t count = 0;  // bytes predicted
  double loss() const { return count > 0 ? nll / static_cast<double>(count) : 0.0; }
  double bpc() const;
};

// max_bytes > 0 evaluates only the first max_bytes bytes of the file.
EvalResult evaluate(TransformerLSModel& model, const std::string& path, int64_t max_bytes = 0);

}  // namespace tls
