#include "runtime/placement_check.h"

#include <mpi.h>
#include <sched.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "runtime/placement.h"

namespace tls {

namespace {

constexpr int kMaskBytes = CPU_SETSIZE / 8;

// This rank as the node's first rank receives it: world rank, threads, then the mask's bytes.
std::vector<uint8_t> this_rank(int threads) {
  std::vector<uint8_t> record(8 + kMaskBytes, 0);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const int32_t fields[2] = {rank, threads};
  std::copy(reinterpret_cast<const uint8_t*>(fields), reinterpret_cast<const uint8_t*>(fields) + 8,
            record.begin());
  cpu_set_t mask;
  CPU_ZERO(&mask);
  // Unknown affinity: all CPUs, which never warns on its own.
  if (sched_getaffinity(0, sizeof mask, &mask) != 0)
    for (int c = 0; c < CPU_SETSIZE; ++c) CPU_SET(c, &mask);
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &mask)) record[8 + c / 8] |= static_cast<uint8_t>(1u << (c % 8));
  return record;
}

RankPlacement from_record(const uint8_t* record) {
  int32_t fields[2];
  std::copy(record, record + 8, reinterpret_cast<uint8_t*>(fields));
  RankPlacement p;
  p.rank = fields[0];
  p.threads = fields[1];
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (record[8 + c / 8] & (1u << (c % 8))) p.cpus.push_back(c);
  return p;
}

}  // namespace

void warn_about_placement(int threads) {
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int node_rank = 0, node_size = 1;
  MPI_Comm_rank(node, &node_rank);
  MPI_Comm_size(node, &node_size);
  const std::vector<uint8_t> mine = this_rank(threads);
  const int bytes = static_cast<int>(mine.size());
  std::vector<uint8_t> all(node_rank == 0 ? static_cast<size_t>(bytes) * node_size : 0);
  MPI_Gather(mine.data(), bytes, MPI_BYTE, all.data(), bytes, MPI_BYTE, 0, node);
  MPI_Comm_free(&node);
  if (node_rank != 0) return;
  std::vector<RankPlacement> ranks;
  for (int r = 0; r < node_size; ++r) ranks.push_back(from_record(all.data() + r * bytes));
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  std::string name = host;
  // Slurm may run several nodes on one host (the tests do): name the node Slurm means.
  if (const char* slurm = std::getenv("SLURMD_NODENAME")) name = slurm;
  const std::string line =
      placement_warning(name, ranks, static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN)));
  if (!line.empty()) std::cerr << line << std::endl;
}

}  // namespace tls
