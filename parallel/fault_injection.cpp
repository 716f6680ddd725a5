#include "parallel/fault_injection.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "runtime/error.h"

namespace tls {

int fault_rank(const char* point) {
  const char* value = std::getenv(kFaultInjectVariable);
  const std::string prefix = std::string(point) + "_abort_rank";
  if (value == nullptr || std::string(value).rfind(prefix, 0) != 0) return -1;
  return std::atoi(value + prefix.size());
}

bool fault_switch_on(const char* name) {
  const char* value = std::getenv(kFaultInjectVariable);
  return value != nullptr && std::string(value) == name;
}

int nonfinite_loss_from() {
  const char* value = std::getenv(kFaultInjectVariable);
  const std::string prefix = "nonfinite_loss_from";
  if (value == nullptr || std::string(value).rfind(prefix, 0) != 0) return -1;
  return std::atoi(value + prefix.size());
}

void maybe_inject_fault(const char* point, int world_rank) {
  const char* value = std::getenv(kFaultInjectVariable);
  const std::string throw_prefix = std::string(point) + "_throw_rank";
  if (value != nullptr && std::string(value).rfind(throw_prefix, 0) == 0 &&
      std::atoi(value + throw_prefix.size()) == world_rank) {
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
