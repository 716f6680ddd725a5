// tls_dist inspect: a checkpoint's hyperparameters, the layout it was saved from, its step,
// parameter count and sizes.
#include <cstdio>

#include "checkpoint/hdf5_reader.h"
#include "kernels/error.h"
#include "runtime/commands.h"
#include "runtime/run_setup.h"

namespace tls {

int run_inspect(const RunOptions& o) {
  const Hdf5Reader file(o.checkpoint);
  const CheckpointInfo info = read_checkpoint_info(file);
  std::printf("checkpoint %s\n", info.path.c_str());
  std::printf("  model: %s\n", describe(info.config).c_str());
  std::printf("  saved from layout tp=%d sp=%d dp=%d, precision %s, step %lld%s%s\n",
              info.layout.tp, info.layout.sp, info.layout.dp,
              info.precision.empty() ? "?" : printable(info.precision).c_str(),
              static_cast<long long>(info.step), info.has_optimizer ? ", optimizer state" : "",
              info.checksummed ? ", Fletcher32 checksums" : "");
  int64_t total = 0;
  std::printf("  parameters:\n");
  for (const std::string& name : file.list("/model")) {
    const std::vector<int64_t> shape = file.dataset_shape("/model/" + name);
    int64_t n = 1;
    std::string dims;
    for (int64_t d : shape) {
      n *= d;
      dims += (dims.empty() ? "" : ", ") + std::to_string(d);
    }
    total += n;
    std::printf("    %-45s [%s]\n", name.c_str(), dims.c_str());
  }
  std::printf("  %lld parameters (%.2f MB in float32)\n", static_cast<long long>(total),
              static_cast<double>(total) * 4 / 1e6);
  return 0;
}

}  // namespace tls
