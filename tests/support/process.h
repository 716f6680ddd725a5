// Running the tls_dist binary from a test: a shell command with a time limit, its exit status
// and its output (stdout and stderr together). Used by the program and launch tests.
#pragma once

#include <string>

namespace tls::testing {

struct ProcessResult {
  int exit_code = -1;  // 124: killed by the time limit
  std::string output;
  double seconds = 0;
};

// Runs `command` under `bash -c` with `timeout seconds`, environment for Open MPI as root set.
ProcessResult run_command(const std::string& command, int timeout_seconds = 300);
std::string tls_dist_binary();
std::string source_path(const std::string& relative);
// A fresh empty directory under the build tree's Testing/ folder.
std::string scratch_dir(const std::string& name);
std::string read_file(const std::string& path);
// The last non-empty line of text.
std::string last_line(const std::string& text);

}  // namespace tls::testing
