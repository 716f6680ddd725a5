// The option table of tls_dist (runtime/option_table.h, docs/DESIGN.md section 6), row by row:
// every flag reaches its member from the command line and from an INI file, the defaults are
// the settings structs', no command has a flag twice, the help lists every row under its group,
// and a wrong flag or value is refused with one line that names the flag.
#include "runtime/options.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "runtime/option_table.h"
#include "runtime/run_setup.h"
#include "support/temp_files.h"

namespace tls {
namespace {

using testing::TempFile;

constexpr Command kAll[] = {Command::train, Command::eval, Command::generate, Command::inspect};

std::vector<const char*> argv_of(const std::vector<std::string>& args) {
  std::vector<const char*> argv = {"tls_dist"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  return argv;
}

RunOptions read(const std::vector<std::string>& args) {
  const std::vector<const char*> argv = argv_of(args);
  return read_options(static_cast<int>(argv.size()) - 1, argv.data());
}

// The message parse_options throws for `args`, or "" when it accepts them.
std::string refusal(const std::vector<std::string>& args) {
  const std::vector<const char*> argv = argv_of(args);
  try {
    parse_options(static_cast<int>(argv.size()) - 1, argv.data());
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// What the rows of `c` require, so that parse_options reaches the rule under test.
std::vector<std::string> with_required(Command c) {
  std::vector<std::string> args = {command_name(c)};
  for (const OptionRow& row : option_table())
    if (row.rule.required_by & bit(c)) args.insert(args.end(), {"--" + std::string(row.flag), "x"});
  return args;
}

// A value for the row other than its default, as show() writes it ("true" for a switch).
std::string sample(const OptionRow& row) {
  if (is_switch(row)) return "true";
  if (std::holds_alternative<TextField>(row.binding)) return "(0.5, 0.25)";
  if (!row.rule.choices.empty()) return row.rule.choices.back();
  if (std::holds_alternative<Field<std::string>>(row.binding))
    return "sample-" + std::string(row.flag);
  if (std::holds_alternative<Field<double>>(row.binding)) return "0.375";
  return "7";
}

std::vector<std::string> flag_args(const OptionRow& row, const std::string& value) {
  std::vector<std::string> args = {"--" + std::string(row.flag)};
  if (!is_switch(row)) args.push_back(value);
  return args;
}

std::string where(const OptionRow& row, Command c) {
  return std::string("--") + row.flag + " of " + command_name(c);
}

TEST(OptionsTest, EveryRowParsesFromTheCommandLine) {
  const TempFile empty_ini("", ".ini");
  for (const OptionRow& row : option_table()) {
    // --config must name a readable file; its value is that path.
    const std::string value = row.flag == std::string("config") ? empty_ini.path() : sample(row);
    for (Command c : kAll) {
      if (!(row.commands & bit(c))) continue;
      std::vector<std::string> args = {command_name(c)};
      for (const std::string& a : flag_args(row, value)) args.push_back(a);
      const RunOptions o = read(args);
      EXPECT_EQ(show(row, o), value) << where(row, c);
      EXPECT_TRUE(o.given(row.flag)) << where(row, c);
    }
  }
}

TEST(OptionsTest, EveryRowParsesFromAnIniFile) {
  for (const OptionRow& row : option_table()) {
    if (row.flag == std::string("config")) continue;  // an INI file does not name another
    const TempFile ini(std::string(row.flag) + " = " + sample(row) + "\n", ".ini");
    for (Command c : kAll) {
      if (!(row.commands & bit(c))) continue;
      const RunOptions o = read({command_name(c), "--config", ini.path()});
      EXPECT_EQ(show(row, o), sample(row)) << where(row, c);
      EXPECT_TRUE(o.given(row.flag)) << where(row, c);
    }
  }
}

TEST(OptionsTest, TheCommandLineWinsOverTheIniFileAndLaterFlagsOverEarlierOnes) {
  const TempFile ini("n-layer = 3\nd-model = 96\n", ".ini");
  const RunOptions o = read(
      {"train", "--config", ini.path(), "--n-layer", "5", "--d-model", "32", "--d-model", "48"});
  EXPECT_EQ(o.model.n_layer, 5);
  EXPECT_EQ(o.model.d_model, 48);
}

TEST(OptionsTest, InspectTakesItsCheckpointAsItsArgument) {
  EXPECT_EQ(read({"inspect", "run/checkpoint_last.h5"}).checkpoint, "run/checkpoint_last.h5");
  EXPECT_EQ(refusal({"inspect"}), "inspect needs a checkpoint (as its argument or --checkpoint)");
}

TEST(OptionsTest, DefaultsAreTheSettingsStructsDefaults) {
  const RunOptions defaults;
  for (const OptionRow& row : option_table()) {
    if (const std::optional<std::string> text = default_text(row)) {
      EXPECT_EQ(*text, show(row, defaults)) << row.flag;
    } else if (!is_switch(row)) {
      EXPECT_EQ(show(row, defaults), "") << row.flag;
    }
  }
  // Read without flags, each member holds its row's default; a switch is off.
  for (Command c : kAll) {
    const RunOptions o = read({command_name(c)});
    EXPECT_TRUE(o.flags_given.empty()) << command_name(c);
    for (const OptionRow& row : option_table()) {
      if (!(row.commands & bit(c))) continue;
      EXPECT_EQ(show(row, o), default_text(row).value_or(is_switch(row) ? "false" : ""))
          << where(row, c);
    }
  }
}

TEST(OptionsTest, NoCommandHasAFlagTwice) {
  for (Command c : kAll) {
    std::set<std::string> flags;
    std::set<char> letters;
    for (const OptionRow& row : option_table()) {
      if (!(row.commands & bit(c))) continue;
      EXPECT_TRUE(flags.insert(row.flag).second) << where(row, c) << " is declared twice";
      if (row.letter) {
        EXPECT_TRUE(letters.insert(row.letter).second) << where(row, c);
      }
    }
  }
}

TEST(OptionsTest, EveryRowIsWellFormed) {
  for (const OptionRow& row : option_table()) {
    const std::string flag = row.flag;
    EXPECT_FALSE(flag.empty());
    EXPECT_TRUE(std::all_of(flag.begin(), flag.end(), [](char ch) {
      return (ch >= 'a' && ch <= 'z') || ch == '-' || (ch >= '0' && ch <= '9');
    })) << flag;
    EXPECT_NE(row.commands & kEveryCommand, 0u) << flag << " belongs to no command";
    EXPECT_NE(std::string(row.help), "") << flag;
    EXPECT_EQ(row.rule.required_by & ~row.commands, 0u) << flag;
    EXPECT_EQ(row.positional & ~row.commands, 0u) << flag;
    if (row.from_checkpoint != FromCheckpoint::no) {
      EXPECT_EQ(row.group, Group::model) << flag;
    }
  }
}

// The option lines of the help's section `group` (from "<caption>:" to the next blank line):
// Boost starts each with two spaces, then "--flag" or "-h [ --help ]".
std::vector<std::string> option_lines(const std::string& help, Group group) {
  std::vector<std::string> lines;
  const std::string head = std::string(caption(group)) + ":\n";
  const size_t begin = help.find(head);
  if (begin == std::string::npos) return lines;
  std::istringstream in(help.substr(begin + head.size()));
  std::string line;
  while (std::getline(in, line) && !line.empty())
    if (line.rfind("  -", 0) == 0) lines.push_back(line);
  return lines;
}

bool lists(const std::string& line, const OptionRow& row) {
  const std::string flag = std::string("--") + row.flag;
  return line.rfind("  " + flag + " ", 0) == 0 || line == "  " + flag ||
         (row.letter && line.rfind(std::string("  -") + row.letter + " [ " + flag + " ]", 0) == 0);
}

// Each row that `shown` accept is listed once, under its group's caption.
void expect_help_lists(const std::string& help, Commands shown, const std::string& name) {
  size_t rows = 0, lines = 0;
  for (Group group : kGroups) lines += option_lines(help, group).size();
  for (const OptionRow& row : option_table()) {
    if (!(row.commands & shown)) continue;
    ++rows;
    for (Group group : kGroups) {
      const std::vector<std::string> section = option_lines(help, group);
      const auto n = std::count_if(section.begin(), section.end(),
                                   [&](const std::string& line) { return lists(line, row); });
      const bool same_flag_elsewhere =
          std::any_of(option_table().begin(), option_table().end(), [&](const OptionRow& other) {
            return &other != &row && other.group == group && (other.commands & shown) &&
                   other.flag == std::string(row.flag);
          });
      EXPECT_EQ(n, (group == row.group) + same_flag_elsewhere)
          << name << ": --" << row.flag << " under " << caption(group) << "\n"
          << help;
    }
  }
  EXPECT_EQ(lines, rows) << name << "\n" << help;
}

TEST(OptionsTest, HelpListsEveryRowUnderItsGroup) {
  const RunOptions all = read({});
  EXPECT_EQ(all.command, Command::help);
  expect_help_lists(all.help_text, kEveryCommand, "tls_dist");
  for (Command c : kAll) {
    const RunOptions o = read({command_name(c), "--help"});
    EXPECT_EQ(o.command, Command::help);
    expect_help_lists(o.help_text, bit(c), std::string("tls_dist ") + command_name(c));
  }
}

bool one_line_naming(const std::string& message, const std::string& flag) {
  return !message.empty() && message.find('\n') == std::string::npos &&
         message.find(flag) != std::string::npos;
}

TEST(OptionsTest, AnUnknownFlagIsRefusedWithOneLineNamingIt) {
  for (Command c : kAll) {
    const std::string m = refusal({command_name(c), "--bogus", "3"});
    EXPECT_TRUE(one_line_naming(m, "--bogus")) << m;
  }
  // A flag of another command is unknown to this one.
  for (const OptionRow& row : option_table())
    for (Command c : kAll) {
      bool known = false;
      for (const OptionRow& other : option_table())
        known |= (other.commands & bit(c)) && other.flag == std::string(row.flag);
      if (known) continue;
      std::vector<std::string> args = {command_name(c)};
      for (const std::string& a : flag_args(row, sample(row))) args.push_back(a);
      const std::string m = refusal(args);
      EXPECT_TRUE(one_line_naming(m, "--" + std::string(row.flag))) << where(row, c) << ": " << m;
    }
}

TEST(OptionsTest, AMalformedValueIsRefusedWithOneLineNamingTheFlag) {
  const TempFile ini_of_text("n-layer = many\n", ".ini");
  for (const OptionRow& row : option_table())
    for (Command c : kAll) {
      if (!(row.commands & bit(c))) continue;
      const std::string flag = "--" + std::string(row.flag);
      std::string m;
      if (is_switch(row))
        m = refusal({command_name(c), flag + "=maybe"});
      else if (!std::holds_alternative<Field<std::string>>(row.binding))
        m = refusal({command_name(c), flag, "many"});
      else
        continue;  // any text is a string
      EXPECT_TRUE(one_line_naming(m, flag)) << where(row, c) << ": " << m;
    }
  const std::string m = refusal({"train", "--config", ini_of_text.path()});
  EXPECT_TRUE(one_line_naming(m, "n-layer")) << m;
  EXPECT_NE(m.find(ini_of_text.path()), std::string::npos) << m;
}

// Values against the row's rule: a number just outside [low, high] (and, for a real number,
// infinity), or a text that is none of the choices.
std::vector<std::string> against_rule(const OptionRow& row) {
  const Rule& r = row.rule;
  if (!r.choices.empty()) return {"nonsense"};
  if (is_switch(row) || std::holds_alternative<TextField>(row.binding) ||
      std::holds_alternative<Field<std::string>>(row.binding))
    return {};
  const bool real = std::holds_alternative<Field<double>>(row.binding);
  auto text = [&](double x) {
    return real ? std::to_string(x) : std::to_string(static_cast<long long>(x));
  };
  std::vector<std::string> values;
  if (std::isfinite(r.low)) values.push_back(text(r.low_exclusive ? r.low : r.low - 1));
  if (std::isfinite(r.high)) values.push_back(text(r.high + 1));
  if (real && !values.empty()) values.push_back("inf");
  return values;
}

TEST(OptionsTest, AValueAgainstItsRuleIsRefusedWithOneLineNamingTheFlagAndTheRule) {
  size_t checked = 0;
  for (const OptionRow& row : option_table())
    for (Command c : kAll) {
      if (!(row.commands & bit(c))) continue;
      const std::string flag = "--" + std::string(row.flag);
      for (const std::string& value : against_rule(row)) {
        std::vector<std::string> args = with_required(c);
        args.insert(args.end(), {flag, value});
        const std::string m = refusal(args);
        EXPECT_EQ(m.rfind(flag + " ", 0), 0u) << where(row, c) << " " << value << ": " << m;
        EXPECT_NE(m.find(" must "), std::string::npos) << m;
        EXPECT_EQ(m.find('\n'), std::string::npos) << m;
        ++checked;
      }
    }
  EXPECT_GT(checked, 20u);
  EXPECT_EQ(refusal({"train", "--train-data", "x", "--save-dir", "y", "--device", "tpu"}),
            "--device 'tpu' must be cpu or cuda");
  EXPECT_EQ(refusal({"generate", "--checkpoint", "c", "--top-k", "257"}),
            "--top-k 257 must lie in 0..256");
  EXPECT_EQ(refusal({"generate", "--checkpoint", "c", "--temperature", "nan"}),
            "--temperature nan must be a finite number");
  EXPECT_EQ(refusal({"train", "--train-data", "x", "--save-dir", "y", "--adam-betas", "(0.9, 1)"}),
            "--adam-betas '(0.9, 1)' must lie in [0, 1)");
}

TEST(OptionsTest, EveryRequiredFlagIsNamedWhenMissing) {
  for (const OptionRow& row : option_table())
    for (Command c : kAll) {
      if (!(row.rule.required_by & bit(c))) continue;
      std::vector<std::string> args = {command_name(c)};
      for (const OptionRow& other : option_table())
        if (other.flag != std::string(row.flag) && (other.rule.required_by & bit(c)))
          args.insert(args.end(), {"--" + std::string(other.flag), "x"});
      const std::string m = refusal(args);
      EXPECT_TRUE(one_line_naming(m, row.flag)) << where(row, c) << ": " << m;
      EXPECT_TRUE(refusal(with_required(c)).empty()) << command_name(c);
    }
  EXPECT_EQ(refusal({"train", "--save-dir", "y"}), "--train-data is required for train");
}

TEST(OptionsTest, ModelFlagsMeetTheCheckpointAsTheirRowsSay) {
  CheckpointInfo info;
  info.path = "saved.h5";
  info.config = read({"train"}).model;
  for (const OptionRow& row : option_table()) {
    if (row.from_checkpoint == FromCheckpoint::no) continue;
    std::vector<std::string> args = {"train"};
    for (const std::string& a : flag_args(row, sample(row))) args.push_back(a);
    const RunOptions o = read(args);
    for (bool fine_tuning : {false, true}) {
      RunOptions result;
      std::string message;
      try {
        result.model = reconcile_with_checkpoint(o, info, fine_tuning);
      } catch (const Error& e) {
        message = e.what();
      }
      const bool the_runs = row.from_checkpoint == FromCheckpoint::run_value ||
                            (row.from_checkpoint == FromCheckpoint::length && fine_tuning);
      if (the_runs) {
        EXPECT_EQ(message, "") << row.flag;
        EXPECT_EQ(show(row, result), sample(row)) << row.flag;
      } else {
        EXPECT_EQ(message, "--" + std::string(row.flag) + " " + sample(row) + " differs from " +
                               show(row, read({"train"})) +
                               " in checkpoint saved.h5 (the model's hyperparameters come from "
                               "the checkpoint)")
            << row.flag;
      }
    }
  }
  // A flag left at its default takes the checkpoint's value.
  info.config.n_layer = 9;
  EXPECT_EQ(reconcile_with_checkpoint(read({"train"}), info, false).n_layer, 9);
}

// --sp-layout (runtime/run_setup.h): zigzag by default where each half-slice T/(2 sp) is at
// least w and a multiple of c, else contiguous, with the reason in the start-up note; asking for
// zigzag where it does not fit is a one-line error naming the option and the rule.
TEST(OptionsTest, SpLayoutIsZigzagWhereItFitsAndAnExplicitOneMustFit) {
  ModelConfig cfg;  // T = M = 64, w = 16, c = 8
  cfg.tokens_per_sample = cfg.mem_len = 64;
  cfg.window_len = 16;
  cfg.chunk_size = 8;
  auto order = [&](const std::vector<std::string>& args, std::string& note) {
    std::vector<std::string> all = {"train"};
    all.insert(all.end(), args.begin(), args.end());
    return choose_sp_order(read(all), cfg, note);
  };
  std::string note;
  EXPECT_EQ(order({"--sp", "2"}, note), SpOrder::zigzag);
  EXPECT_NE(note.find("zigzag"), std::string::npos) << note;
  EXPECT_EQ(order({"--sp", "4"}, note), SpOrder::contiguous);  // half-slices of 8 < w
  EXPECT_NE(note.find("half-slices of 8, shorter than --window-len 16"), std::string::npos) << note;
  EXPECT_EQ(order({"--sp", "1"}, note), SpOrder::contiguous);
  EXPECT_NE(note.find("needs --sp of at least 2"), std::string::npos) << note;
  EXPECT_EQ(order({"--sp", "2", "--sp-layout", "contiguous"}, note), SpOrder::contiguous);
  EXPECT_EQ(order({"--sp", "2", "--sp-layout", "zigzag"}, note), SpOrder::zigzag);
  try {
    order({"--sp", "4", "--sp-layout", "zigzag"}, note);
    ADD_FAILURE() << "zigzag with half-slices shorter than the window was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "--sp-layout zigzag: --tokens-per-sample 64 over --sp 4 gives half-slices of 8, "
              "shorter than --window-len 16");
  }
  cfg.chunk_size = 16;
  cfg.tokens_per_sample = cfg.mem_len = 96;
  EXPECT_EQ(order({"--sp", "2"}, note), SpOrder::contiguous);  // half-slices of 24, c = 16
  EXPECT_NE(note.find("not a multiple of --chunk-size 16"), std::string::npos) << note;
  EXPECT_NE(refusal({"train", "--sp-layout", "diagonal"}), "");
}

}  // namespace
}  // namespace tls
