// Graceful stop: SIGTERM or SIGUSR1 (Slurm's --signal before the time limit, a user's kill)
// sets a flag; the training loop asks, at each step boundary, whether any rank received one,
// so every rank saves the same checkpoint and exits 0 together.
#pragma once

#include "parallel/comm.h"

namespace tls {

void install_stop_handlers();
// Collective over `world`: true on every rank if any rank was signalled.
bool stop_requested(Comm& world);
int stop_signal();  // the signal received, 0 if none

}  // namespace tls
