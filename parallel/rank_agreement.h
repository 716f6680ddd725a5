// Agreeing on failure across ranks (docs/DESIGN.md section 5: a save or load either succeeds on
// every rank or is refused on every rank). A damaged chunk or a failed rename is seen by one rank;
// the others must refuse too, with the same one-line message, instead of hanging or going on.
#pragma once

#include <string>

#include "parallel/comm.h"

namespace tls {

// Collective over `comm`. If any rank passes a non-empty `error`, every rank throws tls::Error
// with the message of the lowest such rank (prefixed with "rank R: " when comm has several
// ranks). Returns normally on every rank otherwise.
void throw_if_any_rank_failed(Comm& comm, const std::string& error);

// Runs f(), turning a tls::Error (or other std::exception) it throws into the returned message.
template <class F>
std::string error_message_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace tls
