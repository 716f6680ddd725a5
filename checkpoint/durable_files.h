// The file-system steps that make a save atomic and durable (docs/DESIGN.md section 5: a crash
// during a save leaves the previous checkpoint intact): fsync a file's data, rename it into place
// (atomic within one directory), fsync the directory so the new name survives a power loss.
// Every failure is a tls::Error naming the path and the system's reason.
#pragma once

#include <cstdint>
#include <string>

namespace tls {

void fsync_file(const std::string& path);
void fsync_directory(const std::string& dir);
// rename(from, to) followed by an fsync of to's directory. Replaces `to` atomically.
void durable_rename(const std::string& from, const std::string& to);
// The directory part of a path ("." for a bare file name).
std::string directory_of(const std::string& path);
// Bytes an unprivileged writer may still use on the file system holding `dir` (statvfs's
// f_bavail), or -1 when the system cannot say.
int64_t free_bytes(const std::string& dir);

}  // namespace tls
