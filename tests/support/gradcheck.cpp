#include "support/gradcheck.h"

#include <algorithm>
#include <cmath>

namespace tls::testing {

void fill_normal(Tensor& x, std::mt19937_64& rng, double mean, double stddev) {
  std::normal_distribution<double> dist(mean, stddev);
  double* p = x.data<double>();
  for (int64_t i = 0; i < x.numel(); ++i) p[i] = dist(rng);
}

double max_gradient_error(Tensor& x, const Tensor& analytic, const std::function<double()>& loss,
                          std::mt19937_64& rng, int samples, double eps, double scale) {
  double* p = x.data<double>();
  const double* g = analytic.data<double>();
  const int64_t n = x.numel();
  std::vector<int64_t> picks;
  if (n <= samples) {
    for (int64_t i = 0; i < n; ++i) picks.push_back(i);
  } else {
    std::uniform_int_distribution<int64_t> pick(0, n - 1);
    for (int i = 0; i < samples; ++i) picks.push_back(pick(rng));
  }
  double worst = 0;
  for (int64_t i : picks) {
    const double saved = p[i];
    p[i] = saved + eps;
    const double up = loss();
    p[i] = saved - eps;
    const double down = loss();
    p[i] = saved;
    const double numeric = (up - down) / (2 * eps);
    worst = std::max(worst, std::abs(g[i] - numeric) / std::max(scale, std::abs(numeric)));
  }
  return worst;
}

double dot(const Tensor& out, const Tensor& probe) {
  const double* a = out.data<double>();
  const double* b = probe.data<double>();
  double s = 0;
  for (int64_t i = 0; i < out.numel(); ++i) s += a[i] * b[i];
  return s;
}

double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return INFINITY;
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

}  // namespace tls::testing
