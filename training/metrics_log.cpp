#include "training/metrics_log.h"

#include <sys/resource.h>

#include <cmath>

#include "kernels/error.h"

namespace tls {

double peak_memory_gib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / (1024.0 * 1024.0);
}

MetricsLog::MetricsLog(const std::string& path, bool is_writer) : writer_(is_writer) {
  if (!writer_) return;
  file_ = std::fopen(path.c_str(), "a");
  if (!file_) throw Error("cannot open " + path + " for appending metrics");
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

static std::string eta_text(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  const long t = std::lround(s);
  std::snprintf(buf, sizeof buf, "%ldh%02ldm%02lds", t / 3600, t / 60 % 60, t % 60);
  return buf;
}

void MetricsLog::train(const StepMetrics& m, double eta_seconds) {
  if (!writer_) return;
  const double mem = peak_memory_gib();
  std::printf(
      "step %lld | loss %.4f | bpc %.4f | lr %.3g | gnorm %.3f | tok/s %.0f | mem %.2f GiB | eta "
      "%s%s\n",
      static_cast<long long>(m.step), m.loss, m.bpc, m.lr, m.grad_norm, m.tokens_per_s, mem,
      eta_text(eta_seconds).c_str(), m.skipped ? " | SKIPPED (non-finite)" : "");
  std::fflush(stdout);
  std::fprintf(
      file_,
      "{\"step\": %lld, \"loss\": %.17g, \"bpc\": %.17g, \"lr\": %.17g, \"grad_norm\": %.17g, "
      "\"tokens_per_s\": %.6g, \"peak_mem_gib\": %.4f, \"eta_s\": %.1f%s}\n",
      static_cast<long long>(m.step), m.loss, m.bpc, m.lr, m.grad_norm, m.tokens_per_s, mem,
      std::isfinite(eta_seconds) ? eta_seconds : -1.0, m.skipped ? ", \"skipped\": true" : "");
  std::fflush(file_);
}

void MetricsLog::valid(int64_t step, double loss, int64_t tokens) {
  if (!writer_) return;
  const double bpc = loss / std::log(2.0);
  std::printf("valid at step %lld | loss %.4f | bpc %.4f | tokens %lld\n",
              static_cast<long long>(step), loss, bpc, static_cast<long long>(tokens));
  std::fflush(stdout);
  std::fprintf(
      file_,
      "{\"step\": %lld, \"split\": \"valid\", \"loss\": %.17g, \"bpc\": %.17g, \"tokens\": %lld}\n",
      static_cast<long long>(step), loss, bpc, static_cast<long long>(tokens));
  std::fflush(file_);
}

void MetricsLog::note(const std::string& line) {
  if (!writer_) return;
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

}  // namespace tls
