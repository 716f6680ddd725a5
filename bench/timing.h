// Timing for the benches. On a shared machine other work only ever adds time, so the steadiest
// estimate of what a piece of work costs is its fastest run.
#pragma once

#include <algorithm>
#include <chrono>

namespace tls::bench {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Seconds of one call to f.
template <class F>
double seconds_of(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return seconds_since(t0);
}

// The fastest of `reps` calls to f (reps >= 1), after one untimed call that warms caches and
// first-touches memory.
template <class F>
double fastest_seconds(int reps, F&& f) {
  f();
  double fastest = seconds_of(f);
  for (int i = 1; i < reps; ++i) fastest = std::min(fastest, seconds_of(f));
  return fastest;
}

}  // namespace tls::bench
