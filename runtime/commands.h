// The four commands of tls_dist (docs/DESIGN.md section 6), each in its own file. They run on every
// rank and throw tls::Error with a one-line message; main prints it and exits non-zero.
#pragma once

#include "runtime/options.h"

namespace tls {

int run_train(const RunOptions& options);
int run_eval(const RunOptions& options);
int run_generate(const RunOptions& options);
int run_inspect(const RunOptions& options);

}  // namespace tls
