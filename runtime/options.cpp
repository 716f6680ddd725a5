// Reading tls_dist's command line and --config file into RunOptions, and checking it, from the
// rows of runtime/option_table.h (docs/DESIGN.md section 6).
#include "runtime/options.h"

#include <algorithm>
#include <boost/program_options.hpp>
#include <cctype>
#include <fstream>
#include <sstream>

#include "kernels/error.h"
#include "runtime/option_table.h"

namespace po = boost::program_options;

namespace tls {
namespace {

const char* const kUsage =
    "usage: tls_dist train --train-data F --save-dir D [model flags] [options]\n"
    "       tls_dist eval --checkpoint C --data F [--tokens-per-sample T] [--mem-len M]\n"
    "       tls_dist generate --checkpoint C --prompt TEXT [--max-new-bytes N]\n"
    "       tls_dist inspect C\n";

struct NamedCommand {
  const char* name;
  Command command;
};
constexpr NamedCommand kCommands[] = {{"train", Command::train},
                                      {"eval", Command::eval},
                                      {"generate", Command::generate},
                                      {"inspect", Command::inspect}};

// The row as a Boost option whose value lands in its member of `o`.
void add_option(po::options_description& section, const OptionRow& row, RunOptions& o) {
  const std::string name = row.letter ? row.flag + std::string(",") + row.letter : row.flag;
  const std::optional<std::string> fallback = default_text(row);
  po::value_semantic* value = std::visit(
      [&](const auto& b) -> po::value_semantic* {
        using B = std::decay_t<decltype(b)>;
        if constexpr (std::is_same_v<B, Field<bool>>) {
          return po::bool_switch(&b.write(o));
        } else if constexpr (std::is_same_v<B, TextField>) {
          return po::value<std::string>()->default_value(b.fallback);
        } else {
          auto* v = po::value(&b.write(o));
          return b.fallback ? v->default_value(*b.fallback, *fallback) : v;
        }
      },
      row.binding);
  section.add_options()(name.c_str(), value, row.help);
}

// The rows that any of `commands` accept, each under the caption of its group.
po::options_description options_of(Commands commands, RunOptions& o) {
  po::options_description all;
  for (Group group : kGroups) {
    po::options_description section(caption(group));
    for (const OptionRow& row : option_table())
      if (row.group == group && (row.commands & commands)) add_option(section, row, o);
    if (!section.options().empty()) all.add(section);
  }
  return all;
}

std::string help_text(const po::options_description& options) {
  std::ostringstream text;
  text << kUsage << "\n" << options;
  return text.str();
}

// Boost.Program_options (1.74) builds an error message by replacing placeholders such as
// %canonical_option% or %invalid_line% with the user's text, in a loop that never ends when that
// text itself holds the placeholder (found by tests/fuzz/options_fuzz: `--x%canonical_option%`
// and a config line holding `%invalid_line%` hung tls_dist). Boost's placeholders are
// %lower_case_name%; no option of tls_dist needs such text, so any of it is refused before Boost
// sees it (a list of Boost's names would miss the next one).
void refuse_boost_placeholders(const std::string& text, const std::string& where) {
  for (size_t open = text.find('%'); open != std::string::npos; open = text.find('%', open + 1)) {
    size_t end = open + 1;
    while (end < text.size() &&
           (std::islower(static_cast<unsigned char>(text[end])) || text[end] == '_'))
      ++end;
    if (end > open + 1 && end < text.size() && text[end] == '%')
      throw Error(where + " contains '" + text.substr(open, end - open + 1) +
                  "': text of the form %name% is not accepted");
  }
}

void require(bool ok, const std::string& message) {
  if (!ok) throw Error(message);
}

// Later flags override earlier ones (as in fairseq): keeps the last occurrence of each --flag
// with the values that follow it.
std::vector<std::string> last_occurrences(int argc, const char* const* argv) {
  std::vector<std::vector<std::string>> groups;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--", 0) == 0 || groups.empty())
      groups.push_back({arg});
    else
      groups.back().push_back(arg);
  }
  auto name_of = [](const std::string& a) { return a.substr(0, a.find('=')); };
  std::vector<std::string> out;
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::string& head = groups[g].front();
    bool overridden = false;
    if (head.rfind("--", 0) == 0)
      for (size_t later = g + 1; later < groups.size(); ++later)
        overridden |= name_of(groups[later].front()) == name_of(head);
    if (!overridden) out.insert(out.end(), groups[g].begin(), groups[g].end());
  }
  return out;
}

}  // namespace

const char* command_name(Command c) {
  for (const NamedCommand& n : kCommands)
    if (n.command == c) return n.name;
  return "help";
}

bool RunOptions::given(const std::string& flag) const {
  return std::find(flags_given.begin(), flags_given.end(), flag) != flags_given.end();
}

RunOptions read_options(int argc, const char* const* argv) {
  RunOptions o;
  const std::string command = argc >= 2 ? argv[1] : "";
  if (command.empty() || command == "--help" || command == "-h" || command == "help") {
    RunOptions scratch;
    o.help_text = help_text(options_of(kEveryCommand, scratch));
    return o;
  }
  const auto named = std::find_if(std::begin(kCommands), std::end(kCommands),
                                  [&](const NamedCommand& n) { return command == n.name; });
  if (named == std::end(kCommands))
    throw Error("unknown command '" + command + "': expected train, eval, generate or inspect");
  o.command = named->command;
  const Commands mine = bit(o.command);
  const po::options_description all = options_of(mine, o);

  for (int i = 2; i < argc; ++i)
    refuse_boost_placeholders(argv[i], "argument '" + std::string(argv[i]) + "'");
  po::positional_options_description positional;
  for (const OptionRow& row : option_table())
    if (row.positional & mine) positional.add(row.flag, 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(last_occurrences(argc, argv))
                  .options(all)
                  .positional(positional)
                  .run(),
              vm);
    if (vm.count("config")) {
      const std::string path = vm["config"].as<std::string>();
      std::ifstream file(path);
      if (!file) throw Error("--config " + path + ": cannot open the file");
      std::ostringstream text;
      text << file.rdbuf();
      refuse_boost_placeholders(text.str(), "--config " + path);
      std::istringstream in(text.str());
      try {
        po::store(po::parse_config_file(in, all, false),
                  vm);  // the command line, stored first, wins
      } catch (const po::error& e) {
        throw Error("--config " + path + ": " + e.what());
      }
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw Error(std::string(e.what()) + " (tls_dist " + command + " --help lists the options)");
  }
  for (const OptionRow& row : option_table()) {
    const bool off = is_switch(row) && show(row, o) == "false";
    if ((row.commands & mine) && vm.count(row.flag) && !vm[row.flag].defaulted() && !off)
      o.flags_given.push_back(row.flag);
  }
  if (o.help) {
    o.command = Command::help;
    o.help_text = help_text(all);
    return o;
  }
  for (const OptionRow& row : option_table())
    if (const auto* text = std::get_if<TextField>(&row.binding); text && (row.commands & mine))
      text->apply(vm[row.flag].as<std::string>(), o);
  o.training.seed = o.seed;
  return o;
}

void validate_options(const RunOptions& o) {
  if (o.command == Command::help) return;
  for (const OptionRow& row : option_table())
    if (const std::string message = rule_violation(row, o, o.command); !message.empty())
      throw Error(message);
  // The rules between options.
  require(!o.allow_tf32 || o.device == "cuda", "--allow-tf32 needs --device cuda");
  require(!o.allow_tf32 || o.precision == "fp32",
          "--allow-tf32 applies to --precision fp32, not " + o.precision);
  if (o.command == Command::train) {
    require(o.validate_interval == 0 || !o.valid_data.empty(),
            "--validate-interval needs --valid-data");
    if (o.finetune_from.empty()) o.model.validate();
  }
}

RunOptions parse_options(int argc, const char* const* argv) {
  RunOptions o = read_options(argc, argv);
  validate_options(o);
  return o;
}

}  // namespace tls
