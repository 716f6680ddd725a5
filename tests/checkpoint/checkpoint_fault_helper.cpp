// A program the fault-injection test spawns under `mpiexec -n 2` (not a test itself): saves a
// tiny model, initialised with seed <step>, as <dir>/checkpoint_<step>.h5 with --keep-last 2,
// data parallel over the world (so rank 0 writes the parameters and every rank its cache rows),
// in the background as training does: start the save, then poll once per 10 ms "step" until it
// is complete. TLS_FAULT_INJECT in the environment makes a rank die at one of the writer's
// points (checkpoint/checkpoint_writer.h, checkpoint/background_save.h).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "checkpoint/background_save.h"
#include "layers/init.h"
#include "parallel/mpi_comm.h"

int main(int argc, char** argv) {
  tls::mpi_initialize(&argc, &argv);
  if (argc != 3) {
    std::fprintf(stderr, "usage: checkpoint_fault_helper DIR STEP\n");
    return 2;
  }
  try {
    const int64_t step = std::atoll(argv[2]);
    tls::Topology t = tls::make_mpi_topology(1, 1);
    auto ops = tls::make_cpu_ops();
    tls::ModelConfig cfg;
    cfg.n_layer = 2;
    cfg.d_model = 16;
    cfg.n_head = 2;
    cfg.d_inner = 32;
    cfg.chunk_size = 4;
    cfg.window_len = 8;
    cfg.mem_len = cfg.tokens_per_sample = 16;
    tls::TransformerLSModel model(*ops, cfg, tls::DType::f32, t);
    tls::initialize_parameters(*ops, model, static_cast<uint64_t>(step));
    tls::AdamW optimizer(*ops, model.parameters(), {});
    tls::TrainSettings settings;
    settings.batch_size = 2 * t.layout.dp;
    tls::ModelState state = model.initial_state(2);
    tls::BackgroundSaver saver(t);
    saver.start(argv[1], 2, tls::checkpoint_contents(model, &optimizer, &state, step, settings),
                *ops);
    while (saver.poll().empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
