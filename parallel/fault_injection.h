// Fault injection for tests (off unless TLS_FAULT_INJECT is set):
// TLS_FAULT_INJECT=<point>_abort_rank<R> makes world rank R die by SIGKILL the third time it
// reaches the named point, as a node failure would. Points: "step" (between a training step's
// forward and backward), "halo" (inside a halo exchange), "save" (halfway through writing a
// checkpoint, checkpoint/checkpoint_writer), "halo_posted" (a halo exchange's transfers posted,
// not yet waited for). TLS_FAULT_INJECT=<point>_throw_rank<R> makes rank R throw a tls::Error
// there instead (an ordinary error on one rank, such as running out of memory).
// TLS_FAULT_INJECT=nonfinite_loss_from<N> poisons the loss instead (see below).
#pragma once

namespace tls {

inline constexpr const char* kFaultInjectVariable = "TLS_FAULT_INJECT";

// TLS_FAULT_INJECT=nonfinite_loss_from<N>: every training update from N on gets a NaN loss
// (to test skipping and --max-bad-steps); returns N, or -1 when not set.
int nonfinite_loss_from();

// TLS_FAULT_INJECT=<name> exactly: a switch with no rank or step (e.g. save_no_space_check).
bool fault_switch_on(const char* name);

// The world rank told to die at `point`, or -1.
int fault_rank(const char* point);
// Kills this process (or throws) if TLS_FAULT_INJECT names `point` and this world rank (on the
// third visit).
void maybe_inject_fault(const char* point, int world_rank);

}  // namespace tls
