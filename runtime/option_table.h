// The options of tls_dist as one table (docs/DESIGN.md section 6). Each option is one row: its
// flag (also its INI key), the member of RunOptions it sets, its default, its help text, the
// help group it is listed under, the commands that accept it and the rule its value must follow.
// The Boost description, the help text, the INI keys, the validation, "was it given explicitly"
// and the reconciling of model flags with a checkpoint are all derived from the rows, so adding
// an option means adding one row (runtime/option_table.cpp).
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "runtime/options.h"

namespace tls {

// A set of commands, one bit per Command.
using Commands = unsigned;
constexpr Commands bit(Command c) { return 1u << static_cast<unsigned>(c); }
constexpr Commands kTrain = bit(Command::train), kEval = bit(Command::eval),
                   kGenerate = bit(Command::generate), kInspect = bit(Command::inspect);
constexpr Commands kEveryCommand = kTrain | kEval | kGenerate | kInspect;

// The sections of the help text, in the order it lists them.
enum class Group { general, parallel, model, data, training, checkpoints, evaluation, generation };
constexpr Group kGroups[] = {Group::general,    Group::parallel,  Group::model,
                             Group::data,       Group::training,  Group::checkpoints,
                             Group::evaluation, Group::generation};
const char* caption(Group group);

// A member of RunOptions, reached through a path of pointers to members (e.g. &RunOptions::model,
// &ModelConfig::n_layer); reach<T, RunOptions, ...> writes it, reach<const T, const RunOptions,
// ...> reads it.
// clang-format off
template <auto... path>
using MemberType = std::remove_cvref_t<decltype((std::declval<RunOptions&>() .* ... .* path))>;
template <class T, class Options, auto... path>
T& reach(Options& o) { return (o .* ... .* path); }  // o.*path[0].*path[1]...
// clang-format on

template <class T>
struct Field {
  T& (*write)(RunOptions&);
  const T& (*read)(const RunOptions&);
  std::optional<T> fallback;  // the default; none for a switch (off unless given) or a path
};

// A value read from text by a function of its own (--adam-betas '(0.9, 0.999)').
struct TextField {
  void (*apply)(const std::string& text, RunOptions& o);  // throws tls::Error naming the flag
  std::string (*show)(const RunOptions& o);
  const char* fallback;
};

using Binding = std::variant<Field<bool>, Field<int>, Field<int64_t>, Field<uint64_t>,
                             Field<double>, Field<std::string>, TextField>;

// Binds a row to the member at `path`, with a default (a bool is a switch: no default, off).
template <auto... path>
Binding field() {
  using T = MemberType<path...>;
  return Field<T>{&reach<T, RunOptions, path...>, &reach<const T, const RunOptions, path...>,
                  std::nullopt};
}
template <auto... path>
Binding field(const MemberType<path...>& fallback) {
  using T = MemberType<path...>;
  static_assert(!std::is_same_v<T, bool>, "a switch is off unless given: it takes no default");
  return Field<T>{&reach<T, RunOptions, path...>, &reach<const T, const RunOptions, path...>,
                  fallback};
}

// The rule a row's value must follow, checked before any work. A number must lie in
// [low, high] (above low when low_exclusive) and be finite; a text must be one of `choices`
// when there are any, and not be empty for the commands in required_by.
struct Rule {
  double low = -std::numeric_limits<double>::infinity();
  bool low_exclusive = false;
  double high = std::numeric_limits<double>::infinity();
  std::vector<std::string> choices = {};
  Commands required_by = 0;
};
inline Rule any_value() { return Rule{}; }
inline Rule at_least(double low) { return Rule{.low = low}; }
inline Rule positive() { return Rule{.low = 0, .low_exclusive = true}; }
inline Rule within(double low, double high) { return Rule{.low = low, .high = high}; }
inline Rule one_of(std::vector<std::string> choices) { return Rule{.choices = std::move(choices)}; }
inline Rule required_by(Commands commands) { return Rule{.required_by = commands}; }

// How a model flag meets the hyperparameters of the checkpoint a training run resumes or
// fine-tunes from (reconcile_with_checkpoint in runtime/run_setup.h).
enum class FromCheckpoint {
  no,          // not one of the model's hyperparameters
  run_value,   // a training setting (dropout): always the run's value
  must_agree,  // the checkpoint's; the flag, when given explicitly, must agree
  length,      // like must_agree, but the flag wins when fine-tuning may change the lengths
};

struct OptionRow {
  const char* flag;  // without the dashes; the INI key too
  Group group;
  Commands commands;  // the commands that accept it
  const char* help;
  Binding binding;
  Rule rule = {};
  FromCheckpoint from_checkpoint = FromCheckpoint::no;
  Commands positional = 0;  // commands that also take it as their one positional argument
  char letter = 0;          // a one-letter alias (-h), or 0
};

// Every option of every command, grouped by Group, each group in help order. One flag may have
// one row per command (eval's --tokens-per-sample is not the model's), never two for a command.
const std::vector<OptionRow>& option_table();

// The row's value in `o` as text: what an INI line would hold, or a flag's argument.
std::string show(const OptionRow& row, const RunOptions& o);
bool same_value(const OptionRow& row, const RunOptions& a, const RunOptions& b);
void copy_value(const OptionRow& row, const RunOptions& from, RunOptions& to);
bool is_switch(const OptionRow& row);
// The row's default as text, or none (a switch, or a path without a default).
std::optional<std::string> default_text(const OptionRow& row);
// The one-line error of the row's rule for command `c`, or "" when the value follows it.
std::string rule_violation(const OptionRow& row, const RunOptions& o, Command c);

}  // namespace tls
