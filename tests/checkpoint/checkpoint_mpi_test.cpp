// mpi-ranks: 2 4
// Checkpoints across parallel layouts (docs/DESIGN.md section 5): tensors sharded by hand (along
// dim 0, along dim 1, along the head dim of a [1, H, 1, d_h] bias, replicated) and caches split
// over dp and sp (both sp layouts: the caches are stored in global position order) are saved
// collectively from every layout that fits the world and loaded into every other one; each rank
// must get exactly its hyperslab, a replicated tensor must come from its one writer, and a refusal
// on one rank must be a refusal on all. Then training resumes in another layout with the same
// losses (float32 summation order, relative 1e-5).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "checkpoint/checkpoint_reader.h"
#include "checkpoint/checkpoint_writer.h"
#include "kernels/error.h"
#include "layers/init.h"
#include "parallel/mpi_comm.h"
#include "parallel/sequence_layout.h"

namespace tls {
namespace {

std::vector<Layout> layouts_of_world() {
  int world = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  std::vector<Layout> out;
  for (int tp : {1, 2, 4})
    for (int sp : {1, 2, 4})
      if (world % (tp * sp) == 0) {
        out.push_back({tp, sp, world / (tp * sp)});
        if (sp > 1) out.push_back({tp, sp, world / (tp * sp), SpOrder::zigzag});
      }
  return out;
}

Topology topology_of(const Layout& l) {
  Topology t = make_mpi_topology(l.tp, l.sp);
  t.layout.sp_order = l.sp_order;
  return t;
}

std::string describe(const Layout& l) {
  return "(tp " + std::to_string(l.tp) + ", sp " + std::to_string(l.sp) + ", dp " +
         std::to_string(l.dp) + (l.sp_order == SpOrder::zigzag ? ", zigzag)" : ")");
}

// A directory every rank agrees on (rank 0's process id), removed by rank 0.
class SharedDir {
 public:
  SharedDir() {
    long id = static_cast<long>(::getpid());
    MPI_Bcast(&id, 1, MPI_LONG, 0, MPI_COMM_WORLD);
    path_ =
        (std::filesystem::temp_directory_path() / ("tls_ckpt_mpi_" + std::to_string(id))).string();
    if (rank() == 0) std::filesystem::create_directories(path_);
    MPI_Barrier(MPI_COMM_WORLD);
  }
  ~SharedDir() {
    MPI_Barrier(MPI_COMM_WORLD);
    std::error_code ignored;
    if (rank() == 0) std::filesystem::remove_all(path_, ignored);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  static int rank() {
    int r = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
  }

 private:
  std::string path_;
};

// The value every checkpoint must hold at flat index g of tensor `id`.
double expected(int id, int64_t g) { return 1000.0 * id + 0.25 * static_cast<double>(g); }

// Flat global indices of a local cache [B_local, M_local, kWidth]'s elements: its rows are the
// rank's runs of positions (parallel/sequence_layout.h).
std::vector<int64_t> cache_indices(const Topology& t, int64_t batch, int64_t mem, int64_t width) {
  const int64_t b = batch / t.layout.dp, m = mem / t.layout.sp;
  const SequenceLayout layout = SequenceLayout::of(t.layout, mem);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < b; ++i)
    for (int64_t r = 0; r < m; ++r)
      for (int64_t e = 0; e < width; ++e)
        out.push_back(((t.dp_rank * b + i) * mem + layout.global_position(t.sp_rank, r)) * width +
                      e);
  return out;
}

// Flat global indices of a hyperslab's elements, in the local (row-major) order.
std::vector<int64_t> global_indices(const Hyperslab& s) {
  std::vector<int64_t> out, idx(s.count.size(), 0);
  int64_t n = 1;
  for (int64_t c : s.count) n *= c;
  for (int64_t k = 0; k < n; ++k) {
    int64_t g = 0;
    for (size_t i = 0; i < idx.size(); ++i) g = g * s.shape[i] + s.start[i] + idx[i];
    out.push_back(g);
    for (size_t i = idx.size(); i-- > 0;) {
      if (++idx[i] < s.count[i]) break;
      idx[i] = 0;
    }
  }
  return out;
}

struct Spec {
  const char* name;
  std::vector<int64_t> shape;
  int split_dim;  // -1: replicated over tp
};
const std::vector<Spec> kSpecs = {{"col.weight", {8, 6}, 0},
                                  {"row.weight", {8, 12}, 1},
                                  {"attn.r_r_bias", {1, 4, 1, 2}, 1},
                                  {"norm.weight", {5}, -1}};
constexpr int64_t kBatch = 4, kMem = 8, kWidth = 3;

// Parameters, moments and caches of one layout, filled with the expected values (or with junk
// where `junk_if_not_writer` and this rank is not the tensor's writer).
struct HandModel {
  std::vector<Parameter> params;
  std::vector<Tensor> exp_avg, exp_avg_sq, caches;
  CheckpointContents contents;

  HandModel(const Topology& t, bool fill, bool junk_if_not_writer) {
    params.resize(kSpecs.size());
    for (size_t i = 0; i < kSpecs.size(); ++i) {
      Parameter& p = params[i];
      p.name = kSpecs[i].name;
      p.full_shape = kSpecs[i].shape;
      if (kSpecs[i].split_dim >= 0 && t.layout.tp > 1) {
        const int64_t n = p.full_shape[static_cast<size_t>(kSpecs[i].split_dim)] / t.layout.tp;
        p.shard_along(kSpecs[i].split_dim, t.tp_rank * n, n);
      }
      const std::vector<int64_t> g = global_indices(parameter_slab(p));
      const bool junk = junk_if_not_writer && !t.writes_parameter(p.tp_sharded());
      p.value = make(g, static_cast<int>(i), fill, junk);
      exp_avg.push_back(make(g, 10 + static_cast<int>(i), fill, junk));
      exp_avg_sq.push_back(make(g, 20 + static_cast<int>(i), fill, junk));
    }
    for (int l = 0; l < 2; ++l) {
      Tensor local = Tensor::zeros({kBatch / t.layout.dp, kMem / t.layout.sp, kWidth}, DType::f32);
      const std::vector<int64_t> g = cache_indices(t, kBatch, kMem, kWidth);
      Tensor cache =
          make(g, 30 + l, fill, false).view({kBatch / t.layout.dp, kMem / t.layout.sp, kWidth});
      // Every tp rank holds the cache and writes the share [lo, hi) of its memory rows: junk
      // elsewhere shows that no rank writes rows it does not own.
      const int64_t m = cache.dim(1), lo = m * t.tp_rank / t.layout.tp,
                    hi = m * (t.tp_rank + 1) / t.layout.tp;
      if (junk_if_not_writer)
        for (int64_t b = 0; b < cache.dim(0); ++b)
          for (int64_t r = 0; r < m; ++r)
            if (r < lo || r >= hi)
              for (int64_t e = 0; e < kWidth; ++e)
                cache.data<float>()[(b * m + r) * kWidth + e] = -777.0f;
      caches.push_back(cache);
    }
    contents.config.n_layer = 2;
    contents.config.mem_len = kMem;
    contents.config.d_model = kWidth;
    for (Parameter& p : params) contents.params.push_back(&p);
    contents.exp_avg = &exp_avg;
    contents.exp_avg_sq = &exp_avg_sq;
    contents.caches = &caches;
    contents.training.batch_size = kBatch;
    contents.step = 42;
  }

  static Tensor make(const std::vector<int64_t>& g, int id, bool fill, bool junk) {
    Tensor x = Tensor::zeros({static_cast<int64_t>(g.size())}, DType::f32);
    for (size_t k = 0; k < g.size() && fill; ++k)
      x.data<float>()[k] = static_cast<float>(junk ? -777.0 : expected(id, g[k]));
    return x;
  }

  // Counts the elements that differ from the expected values.
  int mismatches(const Topology& t) const {
    int bad = 0;
    auto check_indices = [&](const Tensor& x, const std::vector<int64_t>& g, int id) {
      for (size_t k = 0; k < g.size(); ++k)
        if (x.data<float>()[k] != static_cast<float>(expected(id, g[k]))) ++bad;
    };
    auto check = [&](const Tensor& x, const Hyperslab& s, int id) {
      check_indices(x, global_indices(s), id);
    };
    for (size_t i = 0; i < params.size(); ++i) {
      check(params[i].value, parameter_slab(params[i]), static_cast<int>(i));
      check(exp_avg[i], parameter_slab(params[i]), 10 + static_cast<int>(i));
      check(exp_avg_sq[i], parameter_slab(params[i]), 20 + static_cast<int>(i));
    }
    for (int l = 0; l < 2; ++l)
      check_indices(caches[static_cast<size_t>(l)], cache_indices(t, kBatch, kMem, kWidth), 30 + l);
    return bad;
  }
};

TEST(CheckpointLayouts, EveryLayoutLoadsWhatEveryLayoutSaved) {
  auto ops = make_cpu_ops();
  SharedDir dir;
  for (const Layout& from : layouts_of_world()) {
    Topology saver = topology_of(from);
    HandModel saved(saver, true, true);
    const std::string path = dir.file("from_" + std::to_string(from.tp) + std::to_string(from.sp) +
                                      sp_order_name(from.sp_order));
    save_checkpoint(path, saved.contents, saver, *ops);
    if (saver.world_rank == 0) {  // whole tensors, read serially
      Hdf5Reader file(path);
      std::vector<double> col = file.read_doubles("/model/col.weight");
      for (size_t g = 0; g < col.size(); ++g) ASSERT_EQ(col[g], expected(0, g));
      EXPECT_EQ(file.int_attribute("/", "tp"), from.tp);
    }
    for (const Layout& to : layouts_of_world()) {
      SCOPED_TRACE("saved from " + describe(from) + ", loaded into " + describe(to));
      Topology loader = topology_of(to);
      HandModel loaded(loader, false, false);
      loaded.contents.step = 0;
      CheckpointInfo info = load_checkpoint(path, loaded.contents, loader, *ops);
      EXPECT_EQ(loaded.contents.step, 42);
      EXPECT_EQ(info.layout.tp, from.tp);
      EXPECT_EQ(info.layout.dp, from.dp);
      EXPECT_EQ(loaded.mismatches(loader), 0) << "on world rank " << loader.world_rank;
    }
  }
}

TEST(CheckpointLayouts, ARefusalOnOneRankIsARefusalOnAll) {
  auto ops = make_cpu_ops();
  SharedDir dir;
  Topology t = make_mpi_topology(1, 1);
  HandModel saved(t, true, false);
  save_checkpoint(dir.file("c.h5"), saved.contents, t, *ops);
  HandModel loaded(t, false, false);
  if (t.world_rank == 1) loaded.params[0].value = Tensor::zeros({7}, DType::f32);  // wrong size
  std::string message;
  try {
    load_checkpoint(dir.file("c.h5"), loaded.contents, t, *ops);
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(
      message.find("rank 1: checkpoint '" + dir.file("c.h5") + "': dataset '/model/col.weight'"),
      std::string::npos)
      << message;
}

// Training resumed in another layout continues with the same losses.
TEST(CheckpointLayouts, TrainingResumesInAnotherLayout) {
  auto ops = make_cpu_ops();
  SharedDir dir;
  ModelConfig cfg;
  cfg.n_layer = 2;
  cfg.d_model = 32;
  cfg.n_head = 4;
  cfg.d_inner = 48;
  cfg.tokens_per_sample = cfg.mem_len = 32;
  cfg.window_len = 8;
  cfg.chunk_size = 4;
  cfg.chunk_rank = 2;
  cfg.dropout = 0.1;
  TrainSettings settings;
  settings.batch_size = 4;
  settings.seed = 3;
  settings.optimizer.lr = 3e-3;
  settings.optimizer.warmup_updates = 2;
  settings.optimizer.clip_norm = 0.5;
  ByteCorpus corpus(std::string(TLS_TEST_DATA_DIR) + "/english.txt", settings.batch_size,
                    cfg.tokens_per_sample);
  std::vector<Layout> layouts;
  for (const Layout& l : layouts_of_world())
    if (l.sp_order == SpOrder::contiguous || cfg.zigzag_fits(l.sp)) layouts.push_back(l);
  int changes = 0, orders = 0;
  for (size_t i = 0; i < layouts.size(); ++i) {
    const Layout& from = layouts[i];
    const Layout& to = layouts[(i + 1) % layouts.size()];
    Topology t_from = topology_of(from);
    TransformerLSModel straight(*ops, cfg, DType::f32, t_from);
    initialize_parameters(*ops, straight, 7);
    Trainer trainer(*ops, straight, corpus, settings);
    std::vector<double> losses;
    const std::string path = dir.file("resume_" + std::to_string(i) + ".h5");
    for (int step = 1; step <= 6; ++step) {
      losses.push_back(trainer.train_step().loss);
      if (step == 3)
        save_checkpoint(path,
                        checkpoint_contents(straight, &trainer.optimizer(), &trainer.state(),
                                            trainer.update(), settings),
                        t_from, *ops);
    }
    SCOPED_TRACE("saved in " + describe(from) + ", resumed in " + describe(to));
    Topology t_to = topology_of(to);
    TransformerLSModel resumed(*ops, cfg, DType::f32, t_to);
    Trainer second(*ops, resumed, corpus, settings);
    CheckpointContents c =
        checkpoint_contents(resumed, &second.optimizer(), &second.state(), 0, settings);
    load_checkpoint(path, c, t_to, *ops);
    second.set_update(c.step);
    for (int step = 4; step <= 6; ++step) {
      const double loss = second.train_step().loss, want = losses[static_cast<size_t>(step - 1)];
      EXPECT_NEAR(loss, want, 1e-5 * want) << "update " << step;
    }
    if (from.tp != to.tp || from.sp != to.sp) ++changes;
    if (from.sp_order != to.sp_order) ++orders;
  }
  EXPECT_GE(changes, 3);
  EXPECT_GE(orders, 2);  // zigzag to contiguous and back
}

}  // namespace
}  // namespace tls
