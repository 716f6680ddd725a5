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

// Text from a file (an attribute, a name) as it may appear inside a one-line message: control
// and non-ASCII bytes escaped (\n, \xNN), at most max_chars characters of it kept.
inline std::string printable(const std::string& text, size_t max_chars = 64) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (out.size() >= max_chars) return out + "...";
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\n')
      out += "\\n";
    else if (c == '\\')
      out += "\\\\";
    else if (c >= 0x20 && c < 0x7f)
      out += static_cast<char>(c);
    else
      out += std::string("\\x") + hex[c >> 4] + hex[c & 15];
  }
  return out;
}

}  // namespace tls
