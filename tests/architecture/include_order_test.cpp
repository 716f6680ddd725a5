// The folders' dependency order (docs/DESIGN.md section 2):
//   kernels -> parallel -> layers -> training -> checkpoint -> runtime
// A source file may include project headers from its own folder and from folders before it in
// this order, never from one after it. Each folder is also its own CMake library that links only
// the folders before it, so an upward call fails to link; this test names the offending line.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace tls {
namespace {

const std::vector<std::string> kOrder = {"kernels",  "parallel",   "layers",
                                         "training", "checkpoint", "runtime"};

// The position of a top-level folder in the dependency order, -1 for folders outside it.
int rank_of(const std::vector<std::string>& order, const std::string& folder) {
  const auto it = std::find(order.begin(), order.end(), folder);
  return it == order.end() ? -1 : static_cast<int>(it - order.begin());
}

// Every `#include "folder/..."` in the library folders under `root` that points at a folder
// later in `order`, as "file:line: includes header".
std::vector<std::string> upward_includes(const fs::path& root,
                                         const std::vector<std::string>& order) {
  static const std::regex include_line(R"(^\s*#\s*include\s*"([^"/]+)/[^"]*")");
  std::vector<std::string> found;
  for (const std::string& folder : order) {
    if (!fs::exists(root / folder)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(root / folder)) {
      if (!entry.is_regular_file()) continue;
      const std::string ext = entry.path().extension().string();
      if (ext != ".h" && ext != ".cpp" && ext != ".cu" && ext != ".cuh" && ext != ".inc") continue;
      std::ifstream in(entry.path());
      std::string line;
      for (int n = 1; std::getline(in, line); ++n) {
        std::smatch m;
        if (!std::regex_search(line, m, include_line)) continue;
        if (rank_of(order, m[1].str()) > rank_of(order, folder))
          found.push_back(fs::relative(entry.path(), root).string() + ":" + std::to_string(n) +
                          ": includes " + m[1].str() + "/ (" + folder + " comes before " +
                          m[1].str() + ")");
      }
    }
  }
  return found;
}

TEST(IncludeOrder, NoFolderIncludesAFolderAfterIt) {
  const fs::path root = TLS_SOURCE_DIR;
  ASSERT_TRUE(fs::exists(root / "kernels" / "tensor.h")) << "source tree not found at " << root;
  for (const std::string& v : upward_includes(root, kOrder)) ADD_FAILURE() << v;
}

// The check must see a planted upward include: a copy of a kernel header that includes the
// runtime's options, in a scratch tree laid out like the repository.
TEST(IncludeOrder, CatchesAPlantedUpwardInclude) {
  const fs::path scratch =
      fs::temp_directory_path() / ("tls_include_order_" + std::to_string(::getpid()));
  fs::create_directories(scratch / "kernels" / "cpu");
  fs::create_directories(scratch / "runtime");
  std::ofstream(scratch / "runtime" / "options.h") << "#pragma once\n";
  std::ofstream(scratch / "kernels" / "cpu" / "gemm.cpp")
      << "#include \"kernels/tensor.h\"\n#include <vector>\n  #include \"runtime/options.h\"\n";
  std::ofstream(scratch / "runtime" / "main.cpp") << "#include \"kernels/tensor.h\"\n";
  const std::vector<std::string> found = upward_includes(scratch, kOrder);
  fs::remove_all(scratch);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_NE(found[0].find("kernels/cpu/gemm.cpp:3"), std::string::npos) << found[0];
}

}  // namespace
}  // namespace tls
