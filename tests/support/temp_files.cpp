// TempFile: unique temporary files for tests (unique across the processes CTest runs at once).
#include "support/temp_files.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace tls::testing {

TempFile::TempFile(const std::string& contents, const std::string& suffix) {
  static std::atomic<int> counter{0};
  path_ = (std::filesystem::temp_directory_path() /
           ("tls_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + suffix))
              .string();
  std::ofstream out(path_, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  if (!out) throw std::runtime_error("cannot write temporary file " + path_);
}

TempFile::~TempFile() {
  std::error_code ignored;
  std::filesystem::remove(path_, ignored);
}

}  // namespace tls::testing
