// The one error type of tls_dist. Its message is a complete sentence for the user: it names the
// option, file, dataset or rank and the rule broken. Errors travel up to main, which prints the
// message on one line and exits non-zero.
#pragma once

#include <stdexcept>
#include <string>

namespace tls {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// An error every rank of the job throws together (after agreeing on it collectively), so main
// prints it once and exits without aborting the job.
class CollectiveError : public Error {
 public:
  explicit CollectiveError(const std::string& message) : Error(message) {}
};

}  // namespace tls
