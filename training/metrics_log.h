// Training logs (docs/DESIGN.md section 6): a human line on stdout and one JSON object per logged
// update appended to <save-dir>/metrics.jsonl (step, loss, bpc, lr, grad_norm, tokens_per_s,
// peak memory, ETA; validation lines carry "split": "valid"). Only rank 0 writes.
#pragma once

#include <cstdio>
#include <string>

#include "training/trainer.h"

namespace tls {

class MetricsLog {
 public:
  // Appends to path when is_writer (rank 0); other ranks do nothing.
  MetricsLog(const std::string& path, bool is_writer);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void train(const StepMetrics& m, double eta_seconds);
  void valid(int64_t step, double loss, int64_t tokens);
  void note(const std::string& line);  // a plain line on stdout (rank 0)

 private:
  std::FILE* file_ = nullptr;
  bool writer_ = false;
};

double peak_memory_gib();  // this process's peak resident memory

}  // namespace tls
