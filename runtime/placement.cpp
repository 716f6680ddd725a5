#include "runtime/placement.h"

#include <algorithm>
#include <set>

namespace tls {

std::string cpu_list(std::vector<int> cpus) {
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  std::string out;
  for (size_t i = 0; i < cpus.size();) {
    size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(cpus[i]);
    if (j > i) {
      out += '-';
      out += std::to_string(cpus[j]);
    }
    i = j + 1;
  }
  return out;
}

namespace {

std::string rank_list(const std::vector<int>& ranks) {
  std::string out;
  for (int r : ranks) {
    if (!out.empty()) out += ',';
    out += std::to_string(r);
  }
  return out;
}

bool overlap(const std::vector<int>& a, const std::vector<int>& b) {
  const std::set<int> s(a.begin(), a.end());
  return std::any_of(b.begin(), b.end(), [&](int c) { return s.count(c) > 0; });
}

}  // namespace

std::string placement_warning(const std::string& node, const std::vector<RankPlacement>& ranks,
                              int node_cpus) {
  if (ranks.empty()) return "";
  std::vector<int> all_ranks, cramped;
  std::set<int> covered;
  int threads = 0, most_threads = 0;
  for (const RankPlacement& r : ranks) {
    all_ranks.push_back(r.rank);
    covered.insert(r.cpus.begin(), r.cpus.end());
    threads += r.threads;
    most_threads = std::max(most_threads, r.threads);
    if (static_cast<int>(r.cpus.size()) < r.threads) cramped.push_back(r.rank);
  }
  bool shared = false;
  for (size_t i = 0; i < ranks.size() && !shared; ++i)
    for (size_t j = i + 1; j < ranks.size() && !shared; ++j)
      shared = overlap(ranks[i].cpus, ranks[j].cpus);
  const bool crowded = shared && static_cast<int>(covered.size()) < threads;
  if (cramped.empty() && !crowded) return "";

  const int n = static_cast<int>(ranks.size());
  std::string line = "tls_dist: warning: node " + node + " (ranks " + rank_list(all_ranks) + "): ";
  if (!cramped.empty()) {
    const RankPlacement& r = *std::find_if(ranks.begin(), ranks.end(), [&](const RankPlacement& p) {
      return p.rank == cramped.front();
    });
    line += "rank(s) " + rank_list(cramped) + " may run on fewer CPUs than their threads (rank " +
            std::to_string(r.rank) + ": " + std::to_string(r.threads) + " threads on CPU(s) " +
            cpu_list(r.cpus) + "), so threads share cores";
  } else {
    line += "the ranks' CPU masks overlap and cover " + std::to_string(covered.size()) +
            " CPU(s) (" + cpu_list({covered.begin(), covered.end()}) + ") for " +
            std::to_string(threads) + " threads together, so threads share cores";
  }
  if (n * most_threads > node_cpus)
    line += "; the node has " + std::to_string(node_cpus) + " CPU(s) for " + std::to_string(n) +
            " rank(s) x " + std::to_string(most_threads) + " threads: lower OMP_NUM_THREADS to " +
            std::to_string(std::max(1, node_cpus / n)) + " or start fewer ranks per node";
  else
    line += "; bind each rank to cores of its own: mpirun --map-by ppr:" + std::to_string(n) +
            ":node:PE=" + std::to_string(most_threads) +
            " (or --bind-to none), srun --cpus-per-task=" + std::to_string(most_threads);
  return line;
}

}  // namespace tls
