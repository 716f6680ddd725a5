// libFuzzer target: tls::parse_options (flags and INI --config files).
//
// Input format (text, so seeds are readable): lines are argv tokens; the first line picks the
// command (used as is when it is train, eval, generate, inspect or help, otherwise one of those
// chosen from its bytes, or the raw token itself to reach the unknown-command path). A line
// "%%INI%%" ends the tokens: the rest of the input is written to a file passed as
// "--config <file>" (appended to argv, or in place of a token "@INI"). NUL bytes stay inside
// tokens (argv strings end at them, as they would on a real command line).
//
// The contract: parse_options returns or throws tls::Error. Any other exception, a crash or a
// sanitizer report is a bug.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>
#include <typeinfo>
#include <vector>

#include "kernels/error.h"
#include "runtime/options.h"

namespace {

const char* const kCommands[] = {"train", "eval", "generate", "inspect", "help"};

std::string ini_path() {
  static const std::string path = "/tmp/tls_options_fuzz_" + std::to_string(getpid()) + ".ini";
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const std::string marker = "%%INI%%\n";
  const size_t at = input.find(marker);
  const std::string flags = input.substr(0, at);
  std::vector<std::string> tokens;
  size_t begin = 0;
  while (begin <= flags.size() && !flags.empty()) {
    size_t end = flags.find('\n', begin);
    if (end == std::string::npos) end = flags.size();
    tokens.push_back(flags.substr(begin, end - begin));
    begin = end + 1;
  }
  if (tokens.size() > 200) tokens.resize(200);

  std::string command = tokens.empty() ? std::string() : tokens.front();
  bool known = false;
  for (const char* c : kCommands) known |= command == c;
  if (!known && !command.empty()) {
    unsigned sum = 0;
    for (char c : command) sum += static_cast<unsigned char>(c);
    if (sum % 6 != 5) command = kCommands[sum % 5];  // else: the raw token, an unknown command
  }

  std::vector<std::string> args = {"tls_dist"};
  if (!tokens.empty()) args.push_back(command);
  bool placed = false;
  for (size_t i = 1; i < tokens.size(); ++i) {
    if (at != std::string::npos && tokens[i] == "@INI") {
      args.push_back(ini_path());
      placed = true;
    } else {
      args.push_back(tokens[i]);
    }
  }
  if (at != std::string::npos) {
    std::ofstream ini(ini_path(), std::ios::binary | std::ios::trunc);
    ini << input.substr(at + marker.size());
    if (!placed) {
      args.push_back("--config");
      args.push_back(ini_path());
    }
  }
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);

  try {
    tls::RunOptions options = tls::parse_options(static_cast<int>(args.size()), argv.data());
    (void)options;
  } catch (const tls::Error& e) {
    // Expected: one line naming the option.
    const std::string message = e.what();
    if (message.empty() || message.find('\n') != std::string::npos) {
      std::fprintf(stderr, "options_fuzz: tls::Error not one line: '%s'\n", message.c_str());
      std::abort();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "options_fuzz: escaped exception %s: %s\n", typeid(e).name(), e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "options_fuzz: escaped exception of unknown type\n");
    std::abort();
  }
  return 0;
}
