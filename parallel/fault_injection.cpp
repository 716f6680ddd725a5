#include "parallel/fault_injection.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "kernels/error.h"

namespace tls {

namespace {

// The number after `prefix` when TLS_FAULT_INJECT starts with it, else -1.
int number_after(const std::string& prefix) {
  const char* value = std::getenv(kFaultInjectVariable);
  if (value == nullptr || std::string(value).rfind(prefix, 0) != 0) return -1;
  return std::atoi(value + prefix.size());
}

}  // namespace

int fault_rank(const char* point) { return number_after(std::string(point) + "_abort_rank"); }

bool fault_switch_on(const char* name) {
  const char* value = std::getenv(kFaultInjectVariable);
  return value != nullptr && std::string(value) == name;
}

int nonfinite_loss_from() { return number_after("nonfinite_loss_from"); }

void maybe_inject_fault(const char* point, int world_rank) {
  if (number_after(std::string(point) + "_throw_rank") == world_rank) {
    static std::map<std::string, int> throws;
    if (++throws[point] == 3)
      throw Error(std::string(kFaultInjectVariable) + ": rank " + std::to_string(world_rank) +
                  " fails at " + point);
    return;
  }
  if (fault_rank(point) != world_rank) return;
  static std::map<std::string, int> visits;
  if (++visits[point] < 3) return;
  std::fprintf(stderr, "%s: rank %d dies at %s\n", kFaultInjectVariable, world_rank, point);
  std::fflush(stderr);
  std::raise(SIGKILL);
}

}  // namespace tls
