// Finite-difference gradient checking in float64 for the layer tests: perturb sampled elements
// of a CPU tensor by +-eps, evaluate the scalar loss twice, and compare the central difference
// with the analytic gradient.
#pragma once

#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/ops.h"

namespace tls::testing {

// Fills x (float64, CPU) with normal(mean, stddev) values.
void fill_normal(Tensor& x, std::mt19937_64& rng, double mean = 0.0, double stddev = 1.0);

// Largest |analytic - numeric| / max(scale, |numeric|) over `samples` random elements of x
// (every element when x is small). `loss` must recompute the loss from scratch.
double max_gradient_error(Tensor& x, const Tensor& analytic, const std::function<double()>& loss,
                          std::mt19937_64& rng, int samples = 24, double eps = 1e-5,
                          double scale = 1e-3);

// max |a - b| / max |b|: error relative to the reference's scale (infinite on a size mismatch).
double relative_error(const std::vector<double>& a, const std::vector<double>& b);

// sum(out * probe): a scalar loss whose gradient w.r.t. out is probe.
double dot(const Tensor& out, const Tensor& probe);

}  // namespace tls::testing
