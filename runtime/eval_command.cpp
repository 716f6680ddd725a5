// tls_dist eval: bits per character of a checkpoint on a file (docs/DESIGN.md section 4), with its
// own --tokens-per-sample and --mem-len (the paper evaluates with longer memory), on any --sp.
// The last line of the output is `bpc <value> tokens <count>`.
#include <cstdio>

#include "parallel/mpi_comm.h"
#include "parallel/rank_agreement.h"
#include "runtime/commands.h"
#include "runtime/run_setup.h"
#include "training/evaluator.h"

namespace tls {

int run_eval(const RunOptions& o) {
  MpiComm world(MPI_COMM_WORLD, "world");
  Topology topo;
  std::unique_ptr<Ops> ops;
  ModelConfig cfg;
  DType dtype = DType::f32;
  std::string sp_note;
  throw_if_any_rank_failed(world, error_message_of([&] { topo = make_run_topology(o); }));
  throw_if_any_rank_failed(*topo.world, error_message_of([&] {
    ops = make_backend(o);
    dtype = dtype_of_precision(o.precision);
    const CheckpointInfo info = read_checkpoint_info(o.checkpoint);
    cfg = info.config;
    cfg.dropout = cfg.emb_dropout = 0;
    if (o.eval_tokens > 0) cfg.tokens_per_sample = o.eval_tokens;
    if (o.eval_mem > 0) cfg.mem_len = o.eval_mem;
    cfg.validate();
    topo.layout.sp_order = choose_sp_order(o, cfg, sp_note);
    cfg.validate_layout(topo.layout.tp, topo.layout.sp, topo.layout.sp_order);
    ByteStream check(o.data, cfg.tokens_per_sample);
  }));
  TransformerLSModel model(*ops, cfg, dtype, topo);
  CheckpointContents contents = checkpoint_contents(model, nullptr, nullptr, 0, TrainSettings());
  LoadOptions load;
  load.weights_only = true;
  load.allow_length_change = true;
  load_checkpoint(o.checkpoint, contents, topo, *ops, load);
  const EvalResult r = evaluate(model, o.data);
  if (topo.world_rank == 0) {
    if (topo.layout.sp > 1 || o.given("sp-layout")) std::printf("%s\n", sp_note.c_str());
    std::printf("eval %s on %s: T %lld, M %lld, loss %.6f nats\n", o.checkpoint.c_str(),
                o.data.c_str(), static_cast<long long>(cfg.tokens_per_sample),
                static_cast<long long>(cfg.mem_len), r.loss());
    std::printf("bpc %.12f tokens %lld\n", r.bpc(), static_cast<long long>(r.count));
  }
  return 0;
}

}  // namespace tls
