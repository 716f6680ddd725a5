// Graceful stop: SIGTERM or SIGUSR1 (Slurm's --signal before the time limit, a user's kill)
// sets a flag; the training loop asks, at each step boundary, whether any rank received one,
// so every rank saves the same checkpoint and exits 0 together.
#pragma once

namespace tls {

void install_stop_handlers();
// Whether this process was signalled. The training loop sums it over the world in its per-step
// allreduce, so every rank stops at the same step.
bool stop_signalled();
int stop_signal();  // the signal received, 0 if none

}  // namespace tls
