// Save-directory bookkeeping with std::filesystem; the atomic steps go through durable_files.
#include "checkpoint/checkpoint_dir.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <regex>
#include <set>

#include "checkpoint/background_save.h"
#include "checkpoint/durable_files.h"
#include "checkpoint/hdf5_reader.h"
#include "kernels/error.h"
#include "parallel/rank_agreement.h"

namespace tls {
namespace fs = std::filesystem;

std::string checkpoint_file_name(int64_t step) {
  return "checkpoint_" + std::to_string(step) + ".h5";
}

std::string last_checkpoint_path(const std::string& dir) {
  return (fs::path(dir) / kLastCheckpointName).string();
}

std::string best_checkpoint_path(const std::string& dir) {
  return (fs::path(dir) / kBestCheckpointName).string();
}

std::vector<int64_t> checkpoint_steps(const std::string& dir) {
  static const std::regex name("checkpoint_([0-9]+)\\.h5");
  std::vector<int64_t> steps;
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    std::smatch m;
    const std::string file = e.path().filename().string();
    if (std::regex_match(file, m, name) && e.is_regular_file()) steps.push_back(std::stoll(m[1]));
  }
  if (ec) throw Error("cannot list the save directory '" + dir + "': " + ec.message());
  std::sort(steps.begin(), steps.end());
  return steps;
}

void point_last_at(const std::string& dir, const std::string& file_name) {
  const fs::path link = fs::path(dir) / kLastCheckpointName;
  const fs::path temporary =
      fs::path(dir) / (std::string(kLastCheckpointName) + ".tmp-" + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove(temporary, ec);
  fs::create_symlink(file_name, temporary, ec);  // relative: the directory may move
  if (ec) throw Error("cannot create the link '" + temporary.string() + "': " + ec.message());
  durable_rename(temporary.string(), link.string());
}

void point_best_at(const std::string& dir, const std::string& file_name) {
  const fs::path source = fs::path(dir) / file_name;
  const fs::path temporary =
      fs::path(dir) / (std::string(kBestCheckpointName) + ".tmp-" + std::to_string(::getpid()));
  std::error_code ec;
  fs::remove(temporary, ec);
  fs::create_hard_link(source, temporary, ec);
  if (ec) {  // a file system without hard links: a complete copy under the temporary name
    ec.clear();
    fs::copy_file(source, temporary, ec);
    if (ec)
      throw Error("cannot copy '" + source.string() + "' to '" + temporary.string() +
                  "': " + ec.message());
    fsync_file(temporary.string());
  }
  durable_rename(temporary.string(), (fs::path(dir) / kBestCheckpointName).string());
}

namespace {

// The part-file prefix ("checkpoint_<N>.<token>") a checkpoint names, "" for a version-1 file;
// `readable` false when the file cannot be read (its parts are then kept).
std::string parts_named_by(const fs::path& checkpoint, bool& readable) {
  readable = true;
  try {
    Hdf5Reader file(checkpoint.string());
    return file.has_attribute("parts") ? file.string_attribute("/", "parts") : "";
  } catch (const std::exception&) {
    readable = false;
    return "";
  }
}

}  // namespace

std::vector<std::string> files_to_prune(const std::string& dir, int keep_last) {
  std::vector<std::string> out;
  std::error_code ec;
  // Temporary files of interrupted saves (ours are renamed by now; only one job owns a dir).
  static const std::regex leftover("checkpoint_(last|best|[0-9]+)\\.h5\\.tmp-[0-9]+");
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    if (std::regex_match(e.path().filename().string(), leftover)) out.push_back(e.path().string());
  }
  std::set<std::string> checkpoints;  // to delete, so their parts go too
  if (keep_last > 0) {
    std::vector<int64_t> steps = checkpoint_steps(dir);
    const fs::path last = fs::read_symlink(fs::path(dir) / kLastCheckpointName, ec);
    const size_t keep = static_cast<size_t>(std::max(keep_last, 1));
    for (size_t i = 0; i + keep < steps.size(); ++i) {
      const std::string name = checkpoint_file_name(steps[i]);
      if (name == last.filename().string()) continue;
      out.push_back((fs::path(dir) / name).string());
      checkpoints.insert(name);
    }
  }
  // Parts named by no checkpoint that stays (checkpoint_best.h5 included).
  std::set<std::string> kept;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string file = e.path().filename().string();
    if (checkpoints.count(file) != 0) continue;
    static const std::regex checkpoint("checkpoint_([0-9]+|best)\\.h5");
    if (!std::regex_match(file, checkpoint)) continue;
    bool readable = true;
    const std::string prefix = parts_named_by(e.path(), readable);
    if (!readable) return out;  // keep every part rather than guess
    kept.insert(prefix);
  }
  static const std::regex part("(checkpoint_[0-9]+\\.[0-9a-f]+)\\.part[0-9]+\\.h5");
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string file = e.path().filename().string();
    std::smatch m;
    if (std::regex_match(file, m, part) && kept.count(m[1]) == 0) out.push_back(e.path().string());
  }
  return out;
}

void delete_files(const std::string& dir, const std::vector<std::string>& files) {
  for (const std::string& file : files) {
    std::error_code ec;
    fs::remove(file, ec);
    if (ec) throw Error("cannot delete the old checkpoint file '" + file + "': " + ec.message());
  }
  fsync_directory(dir);
}

void prune_checkpoints(const std::string& dir, int keep_last) {
  delete_files(dir, files_to_prune(dir, keep_last));
}

std::string save_to_directory(const std::string& dir, int keep_last,
                              const CheckpointContents& contents, const Topology& t, Ops& ops,
                              bool best) {
  BackgroundSaver saver(t);
  saver.start(dir, keep_last, contents, ops, best);
  return saver.wait();
}

}  // namespace tls
