// fsync/rename over POSIX calls; errno becomes part of the message.
#include "checkpoint/durable_files.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "kernels/error.h"

namespace tls {
namespace {

void fsync_path(const std::string& path, int flags, const char* what) {
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0)
    throw Error(std::string("cannot open ") + what + " '" + path +
                "' to sync it: " + std::strerror(errno));
  const int status = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  if (status != 0)
    throw Error(std::string("cannot sync ") + what + " '" + path + "': " + std::strerror(saved));
}

}  // namespace

void fsync_file(const std::string& path) { fsync_path(path, O_RDONLY, "file"); }

void fsync_directory(const std::string& dir) {
  fsync_path(dir, O_RDONLY | O_DIRECTORY, "directory");
}

std::string directory_of(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

int64_t free_bytes(const std::string& dir) {
  struct statvfs s {};
  if (::statvfs(dir.c_str(), &s) != 0) return -1;
  return static_cast<int64_t>(s.f_bavail) * static_cast<int64_t>(s.f_frsize);
}

void durable_rename(const std::string& from, const std::string& to) {
  if (std::rename(from.c_str(), to.c_str()) != 0) {
    throw Error("cannot rename '" + from + "' to '" + to + "': " + std::strerror(errno));
  }
  fsync_directory(directory_of(to));
}

}  // namespace tls
