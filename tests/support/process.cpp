#include "support/process.h"

#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace tls::testing {
namespace {

// The time limit guards against hangs. Under AddressSanitizer everything runs several times
// slower (the end-to-end training test: 154 s alone, over 300 s beside the multi-rank suites on
// 2 cores), so the guard is widened there rather than every test's limit tuned to it.
#if defined(__SANITIZE_ADDRESS__)
constexpr int kTimeScale = 3;
#else
constexpr int kTimeScale = 1;
#endif

}  // namespace

ProcessResult run_command(const std::string& command, int timeout_seconds) {
  timeout_seconds *= kTimeScale;
  const std::string env =
      "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
      "OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1; ";
  std::string quoted;
  for (char c : env + command) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  const std::string full =
      "timeout -k 5 " + std::to_string(timeout_seconds) + " bash -c '" + quoted + "' 2>&1";
  ProcessResult r;
  const auto start = std::chrono::steady_clock::now();
  FILE* pipe = popen(full.c_str(), "r");
  if (!pipe) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) r.output.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

std::string tls_dist_binary() { return std::string(TLS_BINARY_DIR) + "/tls_dist"; }

std::string source_path(const std::string& relative) {
  return std::string(TLS_SOURCE_DIR) + "/" + relative;
}

std::string scratch_dir(const std::string& name) {
  const std::string dir = std::string(TLS_BINARY_DIR) + "/Testing/scratch/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string last_line(const std::string& text) {
  std::istringstream in(text);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  return last;
}

}  // namespace tls::testing
