#include "runtime/signals.h"

#include <csignal>

namespace tls {
namespace {
volatile std::sig_atomic_t g_signal = 0;
void on_signal(int sig) { g_signal = sig; }
}  // namespace

void install_stop_handlers() {
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
}

bool stop_signalled() { return g_signal != 0; }

int stop_signal() { return static_cast<int>(g_signal); }

}  // namespace tls
