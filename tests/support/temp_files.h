// Temporary files for tests: a unique path under the system temp directory, removed when the
// TempFile goes out of scope. Used to write small corpora and non-HDF5 files.
#pragma once

#include <string>

namespace tls::testing {

class TempFile {
 public:
  // Creates the file with `contents` (bytes, written as they are).
  explicit TempFile(const std::string& contents, const std::string& suffix = ".bin");
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace tls::testing
