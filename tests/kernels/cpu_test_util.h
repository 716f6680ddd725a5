// Shared helpers of the CPU kernel tests: a typed fixture over float/double holding a CpuOps,
// random non-zero tensors, host round trips, closeness checks and central finite differences.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/error.h"
#include "kernels/ops.h"

namespace tls::test {

// Values of magnitude in [0.1, 1] with a random sign: never zero.
inline std::vector<double> random_nonzero(int64_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> mag(0.1, 1.0);
  std::bernoulli_distribution neg(0.5);
  std::vector<double> v(static_cast<size_t>(n));
  for (auto& x : v) x = neg(gen) ? -mag(gen) : mag(gen);
  return v;
}

// Every element: |got - want| <= tol * max(1, |want|).
inline void expect_close(const std::vector<double>& got, const std::vector<double>& want,
                         double tol, const std::string& what = "") {
  ASSERT_EQ(got.size(), want.size()) << what;
  int failures = 0;
  for (size_t i = 0; i < got.size() && failures < 10; ++i) {
    const double bound = tol * std::max(1.0, std::abs(want[i]));
    if (!(std::abs(got[i] - want[i]) <= bound)) {
      ADD_FAILURE() << what << " element " << i << ": got " << got[i] << ", want " << want[i];
      ++failures;
    }
  }
}

// Central differences of a scalar function of a host vector, d loss / d x_i.
inline std::vector<double> numeric_grad(std::vector<double> x,
                                        const std::function<double(const std::vector<double>&)>& f,
                                        double h = 1e-6) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f(x);
    x[i] = x0 - h;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Runs f and expects a tls::Error whose message contains `needle`.
template <class F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected a tls::Error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

template <class T>
class KernelTest : public ::testing::Test {
 public:
  static constexpr DType dt = dtype_of<T>();
  static constexpr bool is_f64 = std::is_same_v<T, double>;
  // Tolerance of a kernel against a double-precision loop on the same (rounded) inputs.
  static constexpr double tol = is_f64 ? 1e-12 : 1e-5;
  // Tolerance of an analytic gradient against finite differences (float64 only).
  static constexpr double fd_tol = 1e-6;

  std::unique_ptr<Ops> ops = make_cpu_ops();

  Tensor tensor(const std::vector<int64_t>& shape, const std::vector<double>& values) {
    Tensor t = ops->empty(shape, dt);
    ops->from_host(t, values);
    return t;
  }
  Tensor rand(const std::vector<int64_t>& shape, uint32_t seed) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return tensor(shape, random_nonzero(n, seed));
  }
  Tensor zeros(const std::vector<int64_t>& shape) { return ops->zeros(shape, dt); }
  Tensor ids(const std::vector<int32_t>& values) {
    Tensor t = ops->empty({static_cast<int64_t>(values.size())}, DType::i32);
    std::copy(values.begin(), values.end(), t.data<int32_t>());
    return t;
  }
  std::vector<double> host(const Tensor& t) { return ops->to_host(t); }
};

using FloatTypes = ::testing::Types<float, double>;

}  // namespace tls::test
