// What every row of the option table can do with its value (runtime/option_table.h): show it as
// text, compare and copy it between two RunOptions, and check it against the row's rule.
#include <algorithm>
#include <charconv>
#include <cmath>

#include "runtime/option_table.h"

namespace tls {
namespace {

template <class T>
std::string text_of(const T& value) {
  if constexpr (std::is_same_v<T, bool>) {
    return value ? "true" : "false";
  } else if constexpr (std::is_same_v<T, std::string>) {
    return value;
  } else if constexpr (std::is_floating_point_v<T>) {
    char buffer[64];  // the shortest text that reads back as the same number
    const auto end = std::to_chars(buffer, buffer + sizeof buffer, value).ptr;
    return std::string(buffer, end);
  } else {
    return std::to_string(value);
  }
}

std::string range_text(const Rule& r) {
  if (std::isfinite(r.high)) return "lie in " + text_of(r.low) + ".." + text_of(r.high);
  if (r.low == 0) return r.low_exclusive ? "be positive" : "not be negative";
  return (r.low_exclusive ? "be above " : "be at least ") + text_of(r.low);
}

bool in_range(double x, const Rule& r) {
  return std::isfinite(x) && (r.low_exclusive ? x > r.low : x >= r.low) && x <= r.high;
}

std::string choices_text(const std::vector<std::string>& choices) {
  std::string text;
  for (size_t i = 0; i < choices.size(); ++i)
    text += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + choices[i];
  return text;
}

std::string text_violation(const OptionRow& row, const std::string& value, Command c) {
  const std::string flag = std::string("--") + row.flag;
  const Rule& r = row.rule;
  if (value.empty() && (r.required_by & bit(c)))
    return row.positional & bit(c) ? std::string(command_name(c)) + " needs a " + row.flag +
                                         " (as its argument or " + flag + ")"
                                   : flag + " is required for " + command_name(c);
  if (!r.choices.empty() && std::find(r.choices.begin(), r.choices.end(), value) == r.choices.end())
    return flag + " '" + value + "' must be " + choices_text(r.choices);
  return "";
}

}  // namespace

std::string show(const OptionRow& row, const RunOptions& o) {
  return std::visit(
      [&](const auto& b) -> std::string {
        if constexpr (std::is_same_v<std::decay_t<decltype(b)>, TextField>)
          return b.show(o);
        else
          return text_of(b.read(o));
      },
      row.binding);
}

bool same_value(const OptionRow& row, const RunOptions& a, const RunOptions& b) {
  return show(row, a) == show(row, b);
}

void copy_value(const OptionRow& row, const RunOptions& from, RunOptions& to) {
  std::visit(
      [&](const auto& b) {
        if constexpr (std::is_same_v<std::decay_t<decltype(b)>, TextField>)
          b.apply(b.show(from), to);
        else
          b.write(to) = b.read(from);
      },
      row.binding);
}

bool is_switch(const OptionRow& row) { return std::holds_alternative<Field<bool>>(row.binding); }

std::optional<std::string> default_text(const OptionRow& row) {
  return std::visit(
      [](const auto& b) -> std::optional<std::string> {
        if constexpr (std::is_same_v<std::decay_t<decltype(b)>, TextField>) {
          return b.fallback;
        } else {
          if (!b.fallback) return std::nullopt;
          return text_of(*b.fallback);
        }
      },
      row.binding);
}

std::string rule_violation(const OptionRow& row, const RunOptions& o, Command c) {
  if (!(row.commands & bit(c))) return "";
  return std::visit(
      [&](const auto& b) -> std::string {
        using B = std::decay_t<decltype(b)>;
        if constexpr (std::is_same_v<B, TextField> || std::is_same_v<B, Field<bool>>) {
          return "";  // a switch has no rule; a TextField checks its text as it reads it
        } else if constexpr (std::is_same_v<B, Field<std::string>>) {
          return text_violation(row, b.read(o), c);
        } else {
          const double x = static_cast<double>(b.read(o));
          if (in_range(x, row.rule)) return "";
          return std::string("--") + row.flag + " " + text_of(b.read(o)) + " must " +
                 (std::isfinite(x) ? range_text(row.rule) : "be a finite number");
        }
      },
      row.binding);
}

}  // namespace tls
