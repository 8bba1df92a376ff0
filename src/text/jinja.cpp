// The Jinja evaluator: statements, expressions, filters, tests, the methods
// of str/dict that templates call, and transformers' globals.
#include "text/jinja.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <functional>
#include <map>
#include <unordered_map>

#include "text/jinja_parse.h"
#include "text/unicode.h"

namespace qft::jinja {
namespace {

constexpr size_t kMaxIterations = 1'000'000;  // loop iterations in one render
constexpr int kMaxDepth = 64;                 // nested macro calls
constexpr size_t kMaxOutput = size_t{64} << 20;

enum class Flow { Normal, Break, Continue };

// ---- strings by code point, as Python's str ----

std::vector<std::string> code_points(const std::string& text) {
  std::vector<std::string> chars;
  for (std::string_view c : text::utf8_chars(text)) chars.emplace_back(c);
  return chars;
}

bool python_space(char32_t c) { return text::is_white_space(c) || (c >= 0x1c && c <= 0x1f); }

// str.strip / lstrip / rstrip: `chars` (a set of code points) or whitespace.
std::string strip(const std::string& text, const Value& chars, bool left, bool right) {
  const std::vector<std::string_view> all = text::utf8_chars(text);
  std::vector<std::string_view> set;
  if (chars.is_string()) set = text::utf8_chars(chars.string());
  const auto strippable = [&](std::string_view c) {
    if (chars.is_string()) return std::find(set.begin(), set.end(), c) != set.end();
    size_t pos = 0;
    return python_space(text::next_code_point(c, pos));
  };
  size_t begin = 0, end = all.size();
  if (left) while (begin < end && strippable(all[begin])) ++begin;
  if (right) while (end > begin && strippable(all[end - 1])) --end;
  if (begin == end) return "";
  return std::string(all[begin].data(), all[end - 1].data() + all[end - 1].size() - all[begin].data());
}

std::vector<std::string> split(const std::string& text, const Value& separator, int64_t max_splits) {
  std::vector<std::string> parts;
  if (separator.is_string()) {
    const std::string& sep = separator.string();
    size_t begin = 0;
    for (size_t found; (max_splits < 0 || static_cast<int64_t>(parts.size()) < max_splits) &&
                       (found = text.find(sep, begin)) != std::string::npos;
         begin = found + sep.size()) {
      parts.push_back(text.substr(begin, found - begin));
    }
    parts.push_back(text.substr(begin));
    return parts;
  }
  std::string word;
  bool in_word = false;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t start = pos;
    const char32_t c = text::next_code_point(text, pos);
    if (python_space(c) && (max_splits < 0 || static_cast<int64_t>(parts.size()) < max_splits)) {
      if (in_word) parts.push_back(word);
      word.clear();
      in_word = false;
    } else {
      if (!in_word && python_space(c)) continue;
      word.append(text, start, pos - start);
      in_word = true;
    }
  }
  if (in_word) parts.push_back(strip(word, Value(), false, true));
  return parts;
}

std::string replace_all(std::string text, const std::string& from, const std::string& to, int64_t count) {
  if (from.empty()) return text;
  for (size_t pos = 0; count != 0 && (pos = text.find(from, pos)) != std::string::npos; pos += to.size(), --count) {
    text.replace(pos, from.size(), to);
  }
  return text;
}

std::string capitalize(const std::string& text) {
  const std::vector<std::string> chars = code_points(text);
  if (chars.empty()) return "";
  std::string rest;
  for (size_t i = 1; i < chars.size(); ++i) rest += chars[i];
  return text::uppercase(chars[0]) + text::lowercase(rest);
}

std::string title(const std::string& text) {
  std::string out;
  bool previous_cased = false;
  for (const std::string& c : code_points(text)) {
    const bool cased = text::lowercase(c) != text::uppercase(c);
    out += cased ? (previous_cased ? text::lowercase(c) : text::uppercase(c)) : c;
    previous_cased = cased;
  }
  return out;
}

// Python's slice of a sequence of n items: the indices taken.
std::vector<int64_t> slice_indices(int64_t n, const Value& start_value, const Value& stop_value, const Value& step_value) {
  const int64_t step = step_value.is_undefined() || step_value.is_none() ? 1 : step_value.integer();
  if (step == 0) throw Error("slice step cannot be zero");
  const auto bound = [&](const Value& value, int64_t fallback, int64_t low, int64_t high) {
    if (value.is_undefined() || value.is_none()) return fallback;
    int64_t index = value.integer();
    if (index < 0) index += n;
    return std::clamp(index, low, high);
  };
  std::vector<int64_t> indices;
  if (step > 0) {
    const int64_t start = bound(start_value, 0, 0, n), stop = bound(stop_value, n, 0, n);
    for (int64_t i = start; i < stop; i += step) indices.push_back(i);
  } else {
    const int64_t start = bound(start_value, n - 1, -1, n - 1), stop = bound(stop_value, -1, -1, n - 1);
    for (int64_t i = start; i > stop; i += step) indices.push_back(i);
  }
  return indices;
}

std::string escape_html(const std::string& text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// ---- arguments ----

class Arguments {
 public:
  Arguments(CallArgs& args, std::string what) : args_(args), what_(std::move(what)) {}

  // The argument at `index` (after the filtered value) or named `name`.
  Value get(size_t index, const char* name, Value fallback = Value()) {
    for (auto& [key, value] : args_.named) {
      if (key == name) {
        used_.push_back(key);
        return value;
      }
    }
    if (index < args_.positional.size()) {
      seen_positional_ = std::max(seen_positional_, index + 1);
      return args_.positional[index];
    }
    return fallback;
  }

  // A keyword-only argument.
  Value named(const char* name) { return get(SIZE_MAX, name); }
  // Positional arguments the callee passes on (select's test and its arguments).
  void take_rest() { seen_positional_ = args_.positional.size(); }

  // Refuses arguments the callee does not take.
  void done() const {
    if (args_.positional.size() > seen_positional_) {
      throw Error(what_ + " takes " + std::to_string(seen_positional_) + " positional argument(s), " +
                  std::to_string(args_.positional.size()) + " given");
    }
    for (const auto& [key, value] : args_.named) {
      if (std::find(used_.begin(), used_.end(), key) == used_.end()) {
        throw Error(what_ + " got an unexpected keyword argument '" + key + "'");
      }
    }
  }

 private:
  CallArgs& args_;
  std::string what_;
  size_t seen_positional_ = 0;
  std::vector<std::string> used_;
};

const std::string& as_string(const Value& value, const char* what) {
  if (!value.is_string()) throw Error(std::string(what) + " needs a string, not " + value.type_name());
  return value.string();
}

int64_t as_integer(const Value& value, const char* what) {
  if (value.type() == Value::Type::Bool) return value.boolean();
  if (value.type() != Value::Type::Int) throw Error(std::string(what) + " needs an integer, not " + value.type_name());
  return value.integer();
}

Value string_list(const std::vector<std::string>& parts) {
  List list;
  for (const std::string& part : parts) list.emplace_back(part);
  return Value(std::move(list));
}

// Items when iterating: a list's items, a dict's keys, a string's characters.
List iterate(const Value& value) {
  switch (value.type()) {
    case Value::Type::Undefined: return {};
    case Value::Type::List: return value.list();
    case Value::Type::Dict: {
      List keys;
      for (const auto& [key, item] : value.dict()) keys.emplace_back(key);
      return keys;
    }
    case Value::Type::String: return string_list(code_points(value.string())).list();
    default: throw Error(std::string("'") + value.type_name() + "' object is not iterable");
  }
}

int compare(const Value& a, const Value& b) {
  const auto numeric = [](const Value& v) { return v.is_number() || v.type() == Value::Type::Bool; };
  if (numeric(a) && numeric(b)) return a.number() < b.number() ? -1 : a.number() > b.number() ? 1 : 0;
  if (a.is_string() && b.is_string()) return a.string().compare(b.string()) < 0 ? -1 : a.string() == b.string() ? 0 : 1;
  if (a.type() == Value::Type::List && b.type() == Value::Type::List) {
    for (size_t i = 0; i < std::min(a.list().size(), b.list().size()); ++i) {
      if (!(a.list()[i] == b.list()[i])) return compare(a.list()[i], b.list()[i]);
    }
    return a.list().size() < b.list().size() ? -1 : a.list().size() > b.list().size() ? 1 : 0;
  }
  throw Error(std::string("'<' not supported between instances of '") + a.type_name() + "' and '" + b.type_name() + "'");
}

bool contains(const Value& container, const Value& item) {
  switch (container.type()) {
    case Value::Type::String:
      return container.string().find(as_string(item, "'in <string>'")) != std::string::npos;
    case Value::Type::List: return std::find(container.list().begin(), container.list().end(), item) != container.list().end();
    case Value::Type::Dict:
    case Value::Type::Namespace: return item.is_string() && container.find(item.string());
    default: throw Error(std::string("argument of type '") + container.type_name() + "' is not iterable");
  }
}

int64_t length(const Value& value) {
  switch (value.type()) {
    case Value::Type::Undefined: return 0;
    case Value::Type::String: return static_cast<int64_t>(text::utf8_chars(value.string()).size());
    case Value::Type::List: return static_cast<int64_t>(value.list().size());
    case Value::Type::Dict: return static_cast<int64_t>(value.dict().size());
    default: throw Error(std::string("object of type '") + value.type_name() + "' has no len()");
  }
}

// Jinja's getattr: an item of a dict, an attribute of a namespace; undefined otherwise.
Value attribute(const Value& object, const std::string& name) {
  if (object.is_undefined()) throw Error("undefined value has no attribute '" + name + "'");
  if (const Value* found = object.find(name)) return *found;
  return Value();
}

Value item(const Value& object, const Value& key) {
  if (object.is_undefined()) throw Error("undefined value is not subscriptable");
  if (key.is_string()) return attribute(object, key.string());
  if (key.type() != Value::Type::Int && key.type() != Value::Type::Bool) return Value();
  int64_t index = as_integer(key, "an index");
  if (object.type() == Value::Type::List) {
    const int64_t n = static_cast<int64_t>(object.list().size());
    if (index < 0) index += n;
    return index >= 0 && index < n ? object.list()[index] : Value();
  }
  if (object.is_string()) {
    const std::vector<std::string> chars = code_points(object.string());
    const int64_t n = static_cast<int64_t>(chars.size());
    if (index < 0) index += n;
    return index >= 0 && index < n ? Value(chars[index]) : Value();
  }
  return Value();
}

// An attribute path "a.b" (map/selectattr/sort's attribute=).
Value attribute_path(const Value& object, const std::string& path) {
  Value value = object;
  for (const std::string& part : split(path, Value("."), -1)) {
    value = !part.empty() && part.size() < 19 && std::all_of(part.begin(), part.end(), ::isdigit) ? item(value, Value(static_cast<int64_t>(std::stoll(part))))
                                                                              : attribute(value, part);
  }
  return value;
}

Value arithmetic(const std::string& op, const Value& a, const Value& b) {
  using Type = Value::Type;
  if (op == "~") return Value(a.str() + b.str());
  if (a.is_undefined() || b.is_undefined()) throw Error("an undefined value in '" + op + "'");
  const auto numeric = [](const Value& v) { return v.is_number() || v.type() == Type::Bool; };
  const bool integers = (a.type() == Type::Int || a.type() == Type::Bool) && (b.type() == Type::Int || b.type() == Type::Bool);
  if (numeric(a) && numeric(b)) {
    const int64_t x = integers ? as_integer(a, "") : 0, y = integers ? as_integer(b, "") : 0;
    const double u = a.number(), v = b.number();
    if (op == "+") return integers ? Value(x + y) : Value(u + v);
    if (op == "-") return integers ? Value(x - y) : Value(u - v);
    if (op == "*") return integers ? Value(x * y) : Value(u * v);
    if ((op == "/" || op == "//" || op == "%") && v == 0) throw Error("division by zero");
    if (op == "/") return Value(u / v);
    if (op == "//") {
      if (integers) return Value(x / y - ((x % y != 0) && ((x < 0) != (y < 0)) ? 1 : 0));
      return Value(std::floor(u / v));
    }
    if (op == "%") {
      if (integers) return Value(((x % y) + y) % y);
      return Value(u - v * std::floor(u / v));
    }
    if (op == "**") {
      const double power = std::pow(u, v);
      return integers && y >= 0 && std::fabs(power) < 9e18 ? Value(static_cast<int64_t>(std::llround(power))) : Value(power);
    }
  }
  if (op == "+" && a.is_string() && b.is_string()) return Value(a.string() + b.string());
  if (op == "+" && a.type() == Type::List && b.type() == Type::List) {
    List joined = a.list();
    joined.insert(joined.end(), b.list().begin(), b.list().end());
    return Value(std::move(joined));
  }
  if (op == "*" && (a.is_string() || a.type() == Type::List) && b.type() == Type::Int) {
    if (b.integer() * std::max<int64_t>(1, length(a)) > static_cast<int64_t>(kMaxOutput)) throw Error("the repetition is too long");
    if (a.is_string()) {
      std::string out;
      for (int64_t i = 0; i < b.integer(); ++i) out += a.string();
      return Value(std::move(out));
    }
    List out;
    for (int64_t i = 0; i < b.integer(); ++i) out.insert(out.end(), a.list().begin(), a.list().end());
    return Value(std::move(out));
  }
  throw Error("unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" + b.type_name() + "'");
}

// ---- tests ----

bool test(const std::string& name, const Value& value, CallArgs& args) {
  Arguments a(args, "test " + name);
  bool result = false;
  const auto other = [&] { return a.get(0, "other"); };
  if (name == "defined") result = !value.is_undefined();
  else if (name == "undefined") result = value.is_undefined();
  else if (name == "none") result = value.is_none();
  else if (name == "boolean") result = value.type() == Value::Type::Bool;
  else if (name == "true") result = value.type() == Value::Type::Bool && value.boolean();
  else if (name == "false") result = value.type() == Value::Type::Bool && !value.boolean();
  else if (name == "integer") result = value.type() == Value::Type::Int;
  else if (name == "float") result = value.type() == Value::Type::Float;
  else if (name == "number") result = value.is_number() || value.type() == Value::Type::Bool;
  else if (name == "string") result = value.is_string();
  else if (name == "mapping") result = value.type() == Value::Type::Dict;
  else if (name == "iterable") result = value.is_string() || value.type() == Value::Type::List || value.type() == Value::Type::Dict || value.is_undefined();
  else if (name == "sequence") result = value.is_string() || value.type() == Value::Type::List || value.type() == Value::Type::Dict;
  else if (name == "callable") result = value.type() == Value::Type::Function;
  else if (name == "sameas") result = value.type() == other().type() && value == other();
  else if (name == "equalto" || name == "eq" || name == "==") result = value == other();
  else if (name == "ne" || name == "!=") result = !(value == other());
  else if (name == "lt" || name == "lessthan" || name == "<") result = compare(value, other()) < 0;
  else if (name == "le" || name == "<=") result = compare(value, other()) <= 0;
  else if (name == "gt" || name == "greaterthan" || name == ">") result = compare(value, other()) > 0;
  else if (name == "ge" || name == ">=") result = compare(value, other()) >= 0;
  else if (name == "in") result = contains(a.get(0, "seq"), value);
  else if (name == "odd") result = as_integer(value, "odd") % 2 != 0;
  else if (name == "even") result = as_integer(value, "even") % 2 == 0;
  else if (name == "divisibleby") result = as_integer(value, "divisibleby") % as_integer(a.get(0, "num"), "divisibleby") == 0;
  else if (name == "lower") result = value.is_string() && text::lowercase(value.string()) == value.string() && text::uppercase(value.string()) != value.string();
  else if (name == "upper") result = value.is_string() && text::uppercase(value.string()) == value.string() && text::lowercase(value.string()) != value.string();
  else throw Error("no test named '" + name + "'");
  a.done();
  return result;
}

// The test and its arguments that select/reject take after the value.
bool apply_test_arguments(const Value& value, CallArgs& args, size_t first) {
  if (args.positional.size() <= first) return value.truthy();
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + first + 1, args.positional.end());
  return test(as_string(args.positional[first], "select/reject"), value, rest);
}

// ---- methods of dicts and strings ----

Value dict_method(const Value& object, const std::string& name, Arguments& a) {
  if (name == "get") {
    const Value key = a.get(0, "key");
    const Value* found = key.is_string() ? object.find(key.string()) : nullptr;
    return found ? *found : a.get(1, "default", Value::none());
  }
  List out;  // items, keys or values
  for (const auto& [key, value] : object.dict()) {
    out.push_back(name == "items" ? Value::tuple(List{Value(key), value}) : name == "keys" ? Value(key) : value);
  }
  return Value(std::move(out));
}

// One string method called: its name, the string, its arguments.
struct MethodCall {
  const std::string& name;
  const std::string& text;
  Arguments& a;
};

Value method_startswith(const MethodCall& m) {
  const Value prefix = m.a.get(0, "prefix");
  List candidates = prefix.type() == Value::Type::List ? prefix.list() : List{prefix};
  bool matched = false;
  for (const Value& candidate : candidates) {
    const std::string& p = as_string(candidate, m.name.c_str());
    matched = matched || (m.name == "startswith" ? m.text.compare(0, p.size(), p) == 0
                                                 : m.text.size() >= p.size() &&
                                                       m.text.compare(m.text.size() - p.size(), p.size(), p) == 0);
  }
  return Value(matched);
}

Value method_split(const MethodCall& m) {
  const Value separator = m.a.get(0, "sep");
  if (separator.is_string() && separator.string().empty()) throw Error("empty separator");
  const Value max_splits = m.a.get(1, "maxsplit", Value(int64_t{-1}));
  return string_list(split(m.text, separator, as_integer(max_splits, "split")));
}

Value method_replace(const MethodCall& m) {
  const std::string from = as_string(m.a.get(0, "old"), "replace"), to = as_string(m.a.get(1, "new"), "replace");
  return Value(replace_all(m.text, from, to, as_integer(m.a.get(2, "count", Value(int64_t{-1})), "replace")));
}

Value method_find(const MethodCall& m) {
  const std::string needle = as_string(m.a.get(0, "sub"), m.name.c_str());
  const size_t found = m.text.find(needle);
  return Value(found == std::string::npos ? int64_t{-1} : length(Value(m.text.substr(0, found))));
}

Value method_count(const MethodCall& m) {
  const std::string needle = as_string(m.a.get(0, "sub"), m.name.c_str());
  int64_t count = 0;
  for (size_t pos = m.text.find(needle); pos != std::string::npos;
       pos = m.text.find(needle, pos + std::max<size_t>(1, needle.size()))) {
    ++count;
  }
  return Value(count);
}

Value method_join(const MethodCall& m) {
  std::string out;
  const List items = iterate(m.a.get(0, "iterable"));
  for (size_t i = 0; i < items.size(); ++i) out += (i ? m.text : "") + as_string(items[i], "join");
  return Value(std::move(out));
}

// isdigit and isspace: every code point is one (and there is one).
Value method_is(const MethodCall& m) {
  bool all = !m.text.empty();
  size_t pos = 0;
  while (all && pos < m.text.size()) {
    const char32_t c = text::next_code_point(m.text, pos);
    all = m.name == "isdigit" ? (c >= '0' && c <= '9') : python_space(c);
  }
  return Value(all);
}

Value string_method(const std::string& text, const std::string& name, Arguments& a) {
  using Method = Value (*)(const MethodCall&);
  static const std::map<std::string, Method> methods = {
      {"startswith", method_startswith},
      {"endswith", method_startswith},
      {"strip", [](const MethodCall& m) { return Value(strip(m.text, m.a.get(0, "chars"), true, true)); }},
      {"lstrip", [](const MethodCall& m) { return Value(strip(m.text, m.a.get(0, "chars"), true, false)); }},
      {"rstrip", [](const MethodCall& m) { return Value(strip(m.text, m.a.get(0, "chars"), false, true)); }},
      {"split", method_split},
      {"upper", [](const MethodCall& m) { return Value(text::uppercase(m.text)); }},
      {"lower", [](const MethodCall& m) { return Value(text::lowercase(m.text)); }},
      {"title", [](const MethodCall& m) { return Value(title(m.text)); }},
      {"capitalize", [](const MethodCall& m) { return Value(capitalize(m.text)); }},
      {"replace", method_replace},
      {"find", method_find},
      {"count", method_count},
      {"join", method_join},
      {"isdigit", method_is},
      {"isspace", method_is},
  };
  const auto found = methods.find(name);
  if (found == methods.end()) throw Error("str has no method '" + name + "' here");
  return found->second({name, text, a});
}

// ---- filters ----

// One filter applied: its name, the filtered value, its arguments, and
// `by_name` to apply another filter (what map's first argument names).
struct FilterCall {
  const std::string& name;
  const Value& value;
  Arguments& a;
  CallArgs& args;
  std::function<Value(const std::string&, const Value&, CallArgs&)> by_name;
};

Value filter_tojson(const FilterCall& f) {
  const bool ensure_ascii = f.a.get(0, "ensure_ascii", Value(false)).truthy();
  const Value indent = f.a.get(1, "indent", Value::none());
  if (!f.a.get(2, "separators", Value::none()).is_none()) throw Error("tojson's separators are not supported");
  const bool sort_keys = f.a.get(3, "sort_keys", Value(false)).truthy();
  return Value(to_json(f.value, indent.is_none() ? -1 : static_cast<int>(as_integer(indent, "tojson indent")), sort_keys,
                       ensure_ascii));
}

Value filter_items(const FilterCall& f) {
  if (f.value.is_undefined()) return Value(List{});
  if (f.value.type() != Value::Type::Dict) throw Error("items needs a dict, not " + std::string(f.value.type_name()));
  List out;
  for (const auto& [key, item] : f.value.dict()) out.push_back(Value::tuple(List{Value(key), item}));
  return Value(std::move(out));
}

Value filter_dictsort(const FilterCall& f) {
  if (f.value.type() != Value::Type::Dict) throw Error("dictsort needs a dict");
  List out = filter_items(f).list();
  std::stable_sort(out.begin(), out.end(), [](const Value& x, const Value& y) { return compare(x.list()[0], y.list()[0]) < 0; });
  return Value(std::move(out));
}

Value filter_join(const FilterCall& f) {
  const std::string separator = f.a.get(0, "d", Value("")).str();
  const Value attribute_name = f.a.get(1, "attribute");
  std::string out;
  const List items = iterate(f.value);
  for (size_t i = 0; i < items.size(); ++i) {
    out += (i ? separator : "") + (attribute_name.is_undefined() ? items[i] : attribute_path(items[i], attribute_name.str())).str();
  }
  return Value(std::move(out));
}

Value filter_default(const FilterCall& f) {
  const Value fallback = f.a.get(0, "default_value", Value(""));
  const bool boolean = f.a.get(1, "boolean", Value(false)).truthy();
  return f.value.is_undefined() || (boolean && !f.value.truthy()) ? fallback : f.value;
}

Value filter_replace(const FilterCall& f) {
  const std::string from = f.a.get(0, "old").str(), to = f.a.get(1, "new").str();
  const Value count = f.a.get(2, "count", Value::none());
  return Value(replace_all(f.value.str(), from, to, count.is_none() ? -1 : as_integer(count, "replace")));
}

Value filter_first_or_last(const FilterCall& f) {
  const List items = iterate(f.value);
  if (items.empty()) return Value();
  return f.name == "first" ? items.front() : items.back();
}

Value filter_reverse(const FilterCall& f) {
  if (f.value.is_string()) {
    std::vector<std::string> chars = code_points(f.value.string());
    std::string out;
    for (auto c = chars.rbegin(); c != chars.rend(); ++c) out += *c;
    return Value(std::move(out));
  }
  List items = iterate(f.value);
  std::reverse(items.begin(), items.end());
  return Value(std::move(items));
}

Value filter_unique(const FilterCall& f) {
  List out;
  for (const Value& item : iterate(f.value)) {
    if (std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
  }
  return Value(std::move(out));
}

Value filter_sort(const FilterCall& f) {
  const bool reverse = f.a.get(0, "reverse", Value(false)).truthy();
  f.a.get(1, "case_sensitive");
  const Value attribute_name = f.a.get(2, "attribute");
  List items = iterate(f.value);
  const auto key = [&](const Value& v) { return attribute_name.is_undefined() ? v : attribute_path(v, attribute_name.str()); };
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    return reverse ? compare(key(y), key(x)) < 0 : compare(key(x), key(y)) < 0;
  });
  return Value(std::move(items));
}

Value filter_int(const FilterCall& f) {
  const Value& value = f.value;
  if (value.type() == Value::Type::Float) return Value(static_cast<int64_t>(value.number()));
  if (value.type() == Value::Type::Int || value.type() == Value::Type::Bool) return Value(as_integer(value, "int"));
  try {
    return Value(static_cast<int64_t>(std::stoll(strip(value.str(), Value(), true, true))));
  } catch (const std::exception&) {
    return f.a.get(0, "default", Value(int64_t{0}));
  }
}

Value filter_float(const FilterCall& f) {
  if (f.value.is_number()) return Value(f.value.number());
  try {
    return Value(std::stod(f.value.str()));
  } catch (const std::exception&) {
    return f.a.get(0, "default", Value(0.0));
  }
}

Value filter_abs(const FilterCall& f) {
  if (f.value.type() == Value::Type::Int) return Value(f.value.integer() < 0 ? -f.value.integer() : f.value.integer());
  if (f.value.type() == Value::Type::Float) return Value(std::fabs(f.value.number()));
  throw Error("abs needs a number");
}

Value filter_round(const FilterCall& f) {
  const int64_t precision = as_integer(f.a.get(0, "precision", Value(int64_t{0})), "round");
  const std::string method_name = f.a.get(1, "method", Value("common")).str();
  const double scale = std::pow(10.0, static_cast<double>(precision)), x = f.value.number() * scale;
  const double rounded = method_name == "ceil" ? std::ceil(x) : method_name == "floor" ? std::floor(x) : std::round(x);
  return Value(rounded / scale);
}

Value filter_sum(const FilterCall& f) {
  Value total = f.a.get(1, "start", Value(int64_t{0}));
  for (const Value& item : iterate(f.value)) total = arithmetic("+", total, item);
  return total;
}

Value filter_min_or_max(const FilterCall& f) {
  const List items = iterate(f.value);
  if (items.empty()) return Value();
  Value best = items[0];
  for (const Value& item : items) {
    if ((f.name == "min") == (compare(item, best) < 0) && !(item == best)) best = item;
  }
  return best;
}

Value filter_indent(const FilterCall& f) {
  const Value width = f.a.get(0, "width", Value(int64_t{4}));
  const bool first = f.a.get(1, "first", Value(false)).truthy(), blank = f.a.get(2, "blank", Value(false)).truthy();
  const std::string pad = width.is_string() ? width.string() : std::string(as_integer(width, "indent"), ' ');
  std::vector<std::string> lines = split(f.value.str(), Value("\n"), -1);
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) {
    const bool indent_line = (i > 0 || first) && (blank || !strip(lines[i], Value(), true, true).empty());
    out += (i ? "\n" : "") + (indent_line ? pad : "") + lines[i];
  }
  return Value(std::move(out));
}

// select/reject by a test of the item; selectattr/rejectattr of one of its attributes.
Value filter_select(const FilterCall& f) {
  const bool of_attribute = f.name == "selectattr" || f.name == "rejectattr";
  const bool keep = f.name == "select" || f.name == "selectattr";
  const std::string path = of_attribute ? as_string(f.a.get(0, "attribute"), f.name.c_str()) : "";
  List out;
  for (const Value& item : iterate(f.value)) {
    const Value tested = of_attribute ? attribute_path(item, path) : item;
    if (apply_test_arguments(tested, f.args, of_attribute ? 1 : 0) == keep) out.push_back(item);
  }
  f.a.take_rest();
  return Value(std::move(out));
}

Value filter_map(const FilterCall& f) {
  const Value attribute_name = f.a.named("attribute");
  List out;
  if (!attribute_name.is_undefined()) {
    const Value fallback = f.a.named("default");
    for (const Value& item : iterate(f.value)) {
      Value found = attribute_path(item, attribute_name.str());
      out.push_back(found.is_undefined() ? fallback : found);
    }
    return Value(std::move(out));
  }
  if (f.args.positional.empty()) throw Error("map needs a filter name or attribute=");
  const std::string filter_name = as_string(f.args.positional[0], "map");
  for (const Value& item : iterate(f.value)) {
    CallArgs rest;
    rest.positional.assign(f.args.positional.begin() + 1, f.args.positional.end());
    out.push_back(f.by_name(filter_name, item, rest));
  }
  f.a.take_rest();
  return Value(std::move(out));
}

// Every filter by name.
Value apply_filter(const FilterCall& f) {
  using Filter = Value (*)(const FilterCall&);
  static const std::map<std::string, Filter> filters = {
      {"trim", [](const FilterCall& f) { return Value(strip(f.value.str(), f.a.get(0, "chars"), true, true)); }},
      {"tojson", filter_tojson},
      {"length", [](const FilterCall& f) { return Value(length(f.value)); }},
      {"count", [](const FilterCall& f) { return Value(length(f.value)); }},
      {"items", filter_items},
      {"dictsort", filter_dictsort},
      {"join", filter_join},
      {"default", filter_default},
      {"d", filter_default},
      {"upper", [](const FilterCall& f) { return Value(text::uppercase(f.value.str())); }},
      {"lower", [](const FilterCall& f) { return Value(text::lowercase(f.value.str())); }},
      {"capitalize", [](const FilterCall& f) { return Value(capitalize(f.value.str())); }},
      {"title", [](const FilterCall& f) { return Value(title(f.value.str())); }},
      {"string", [](const FilterCall& f) { return Value(f.value.str()); }},
      {"safe", [](const FilterCall& f) { return f.value; }},
      {"e", [](const FilterCall& f) { return Value(escape_html(f.value.str())); }},
      {"escape", [](const FilterCall& f) { return Value(escape_html(f.value.str())); }},
      {"replace", filter_replace},
      {"first", filter_first_or_last},
      {"last", filter_first_or_last},
      {"list", [](const FilterCall& f) { return Value(iterate(f.value)); }},
      {"reverse", filter_reverse},
      {"unique", filter_unique},
      {"sort", filter_sort},
      {"int", filter_int},
      {"float", filter_float},
      {"abs", filter_abs},
      {"round", filter_round},
      {"sum", filter_sum},
      {"min", filter_min_or_max},
      {"max", filter_min_or_max},
      {"indent", filter_indent},
      {"select", filter_select},
      {"reject", filter_select},
      {"selectattr", filter_select},
      {"rejectattr", filter_select},
      {"map", filter_map},
  };
  const auto found = filters.find(f.name);
  if (found == filters.end()) throw Error("no filter named '" + f.name + "'");
  return found->second(f);
}

// ---- the renderer ----

class Renderer {
 public:
  Renderer(const std::string& name, const Value& context, Spans* spans) : name_(name), context_(context), spans_(spans) {
    if (!context.is_mapping()) throw TemplateError(name + ": the context must be a dict");
    scopes_.emplace_back();
    out_ = &output_;
  }

  std::string run(const Node& root) {
    if (exec(root) != Flow::Normal) throw_at(name_, root.at, "break/continue outside a loop");
    return std::move(output_);
  }

 private:
  using Scope = std::unordered_map<std::string, Value>;

  [[noreturn]] void error(Position at, const std::string& message) { throw_at(name_, at, message); }

  void write(const std::string& text) {
    if (out_->size() + text.size() > kMaxOutput) throw TemplateError(name_ + ": the output exceeds 64 MiB");
    *out_ += text;
  }

  Value lookup(const std::string& name) {
    for (auto scope = scopes_.rbegin(); scope != scopes_.rend(); ++scope) {
      if (auto found = scope->find(name); found != scope->end()) return found->second;
    }
    if (const Value* found = context_.find(name)) return *found;
    return builtin(name);
  }

  Value builtin(const std::string& name) {
    if (name == "raise_exception") {
      return Value::function([](CallArgs& args) -> Value {
        throw RaisedError(args.positional.empty() ? "" : args.positional[0].str());
      });
    }
    if (name == "strftime_now") {
      return Value::function([](CallArgs& args) {
        Arguments a(args, "strftime_now");
        const std::string format = as_string(a.get(0, "format"), "strftime_now");
        a.done();
        const std::time_t now = std::time(nullptr);
        std::tm local{};
        localtime_r(&now, &local);
        char buffer[256];
        return Value(std::string(buffer, std::strftime(buffer, sizeof buffer, format.c_str(), &local)));
      });
    }
    if (name == "namespace" || name == "dict") {
      const bool is_namespace = name == "namespace";
      return Value::function([is_namespace](CallArgs& args) {
        Dict attributes;
        for (const Value& positional : args.positional) {
          if (positional.type() != Value::Type::Dict) throw Error("namespace()/dict() takes keyword arguments or a dict");
          attributes.insert(attributes.end(), positional.dict().begin(), positional.dict().end());
        }
        for (auto& [key, value] : args.named) attributes.emplace_back(key, value);
        return is_namespace ? Value::namespace_of(std::move(attributes)) : Value(std::move(attributes));
      });
    }
    if (name == "range") {
      return Value::function([](CallArgs& args) {
        if (args.positional.empty() || args.positional.size() > 3 || !args.named.empty()) throw Error("range takes 1 to 3 integers");
        int64_t start = 0, stop, step = 1;
        if (args.positional.size() == 1) {
          stop = as_integer(args.positional[0], "range");
        } else {
          start = as_integer(args.positional[0], "range");
          stop = as_integer(args.positional[1], "range");
          if (args.positional.size() == 3) step = as_integer(args.positional[2], "range");
        }
        if (step == 0) throw Error("range() arg 3 must not be zero");
        List values;
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
          if (values.size() >= kMaxIterations) throw Error("range() is too long");
          values.emplace_back(i);
        }
        return Value(std::move(values));
      });
    }
    return Value();
  }

  void assign(const std::string& name, Value value) { scopes_.back()[name] = std::move(value); }

  void assign_targets(const std::vector<std::string>& targets, const Value& value, Position at) {
    if (targets.size() == 1) return assign(targets[0], value);
    if (value.type() != Value::Type::List || value.list().size() != targets.size()) {
      error(at, "cannot unpack " + std::string(value.type_name()) + " into " + std::to_string(targets.size()) + " names");
    }
    for (size_t i = 0; i < targets.size(); ++i) assign(targets[i], value.list()[i]);
  }

  // ---- statements ----

  Flow exec(const Node& node) {
    switch (node.kind) {
      case Node::Kind::Body:
        for (const auto& child : node.children) {
          if (const Flow flow = exec(*child); flow != Flow::Normal) return flow;
        }
        return Flow::Normal;
      case Node::Kind::Text: write(node.text); return Flow::Normal;
      case Node::Kind::Output: write(eval(*node.expr).str()); return Flow::Normal;
      case Node::Kind::If:
        for (size_t i = 0; i < node.conditions.size(); ++i) {
          if (eval(*node.conditions[i]).truthy()) return exec(*node.children[i]);
        }
        return node.children.size() > node.conditions.size() ? exec(*node.children.back()) : Flow::Normal;
      case Node::Kind::For: return exec_for(node);
      case Node::Kind::Set: exec_set(node); return Flow::Normal;
      case Node::Kind::Macro: define_macro(node); return Flow::Normal;
      case Node::Kind::Break: return Flow::Break;
      case Node::Kind::Continue: return Flow::Continue;
      case Node::Kind::Generation: {
        const size_t begin = out_->size();
        const Flow flow = exec(*node.children[0]);
        if (spans_ && out_ == &output_) spans_->emplace_back(begin, out_->size());
        return flow;
      }
    }
    return Flow::Normal;
  }

  Flow exec_for(const Node& node) {
    List items;
    try {
      items = iterate(eval(*node.expr));
    } catch (const Error& e) {
      if (dynamic_cast<const TemplateError*>(&e) || dynamic_cast<const RaisedError*>(&e)) throw;
      error(node.expr->at, e.what());
    }
    if (node.condition) {
      List kept;
      for (const Value& item : items) {
        scopes_.emplace_back();
        assign_targets(node.targets, item, node.at);
        const bool keep = eval(*node.condition).truthy();
        scopes_.pop_back();
        if (keep) kept.push_back(item);
      }
      items = std::move(kept);
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      if (++iterations_ > kMaxIterations) error(node.at, "more than 1000000 loop iterations");
      scopes_.emplace_back();
      assign_targets(node.targets, items[i], node.at);
      assign("loop", loop_object(items, i));
      const Flow flow = exec(*node.children[0]);
      scopes_.pop_back();
      if (flow == Flow::Break) break;
    }
    if (n == 0) return exec(*node.children[1]);
    return Flow::Normal;
  }

  static Value loop_object(const List& items, int64_t i) {
    const int64_t n = static_cast<int64_t>(items.size());
    Dict loop{{"index", Value(i + 1)},       {"index0", Value(i)},           {"revindex", Value(n - i)},
              {"revindex0", Value(n - i - 1)}, {"first", Value(i == 0)},      {"last", Value(i == n - 1)},
              {"length", Value(n)},             {"depth", Value(int64_t{1})}, {"depth0", Value(int64_t{0})},
              {"previtem", i > 0 ? items[i - 1] : Value()}, {"nextitem", i + 1 < n ? items[i + 1] : Value()}};
    loop.emplace_back("cycle", Value::function([i](CallArgs& args) {
      if (args.positional.empty()) throw Error("loop.cycle() needs at least one value");
      return args.positional[static_cast<size_t>(i) % args.positional.size()];
    }));
    return Value(std::move(loop));
  }

  void exec_set(const Node& node) {
    if (!node.conditions.empty()) {  // {% set ns.attribute = value %}
      Value target = lookup(node.text);
      if (target.type() != Value::Type::Namespace) error(node.at, "'" + node.text + "' is not a namespace; only namespace attributes can be set");
      const Value value = eval(*node.expr);
      for (auto& [key, existing] : target.mutable_dict()) {
        if (key == node.targets[0]) {
          existing = value;
          return;
        }
      }
      target.mutable_dict().emplace_back(node.targets[0], value);
      return;
    }
    if (node.expr) return assign_targets(node.targets, eval(*node.expr), node.at);
    assign(node.targets[0], Value(capture(*node.children[0])));
  }

  std::string capture(const Node& body) {
    std::string buffer;
    std::string* saved = out_;
    out_ = &buffer;
    try {
      const Flow flow = exec(body);
      out_ = saved;
      if (flow != Flow::Normal) error(body.at, "break/continue outside a loop");
    } catch (...) {
      out_ = saved;
      throw;
    }
    return buffer;
  }

  void define_macro(const Node& node) {
    assign(node.text, Value::function([this, &node](CallArgs& args) { return call_macro(node, args); }));
  }

  Value call_macro(const Node& node, CallArgs& args) {
    if (depth_ >= kMaxDepth) error(node.at, "macros nested deeper than 64 calls");
    if (args.positional.size() > node.targets.size()) error(node.at, "macro '" + node.text + "' takes " + std::to_string(node.targets.size()) + " arguments");
    Scope scope;
    for (size_t i = 0; i < node.targets.size(); ++i) {
      Value value;
      if (i < args.positional.size()) value = args.positional[i];
      else if (node.conditions[i]) value = eval(*node.conditions[i]);
      scope[node.targets[i]] = value;
    }
    for (auto& [key, value] : args.named) {
      if (std::find(node.targets.begin(), node.targets.end(), key) == node.targets.end()) {
        error(node.at, "macro '" + node.text + "' has no parameter '" + key + "'");
      }
      scope[key] = value;
    }
    ++depth_;
    scopes_.push_back(std::move(scope));
    std::string text;
    try {
      text = capture(*node.children[0]);
    } catch (...) {
      scopes_.pop_back();
      --depth_;
      throw;
    }
    scopes_.pop_back();
    --depth_;
    return Value(std::move(text));
  }

  // ---- expressions ----

  Value eval(const Expr& e) {
    try {
      return evaluate(e);
    } catch (const TemplateError&) {
      throw;
    } catch (const RaisedError&) {
      throw;
    } catch (const Error& failure) {
      error(e.at, failure.what());
    } catch (const std::logic_error& failure) {  // std::string's and std::sto*'s
      error(e.at, failure.what());
    }
  }

  CallArgs call_arguments(const Expr& e, size_t first) {
    CallArgs args;
    const size_t named_from = e.children.size() - e.keywords.size();
    for (size_t i = first; i < named_from; ++i) args.positional.push_back(eval(*e.children[i]));
    for (size_t i = 0; i < e.keywords.size(); ++i) args.named.emplace_back(e.keywords[i], eval(*e.children[named_from + i]));
    return args;
  }

  Value evaluate(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::Literal: return e.value;
      case Expr::Kind::Name: return lookup(e.name);
      case Expr::Kind::List:
      case Expr::Kind::Tuple: {
        List items;
        for (const auto& child : e.children) items.push_back(eval(*child));
        return e.kind == Expr::Kind::Tuple ? Value::tuple(std::move(items)) : Value(std::move(items));
      }
      case Expr::Kind::Dict: {
        Dict dict;
        for (size_t i = 0; i < e.children.size(); i += 2) {
          const Value key = eval(*e.children[i]);
          if (!key.is_string()) error(e.children[i]->at, "dict keys must be strings here");
          Value value = eval(*e.children[i + 1]);
          auto existing = std::find_if(dict.begin(), dict.end(), [&](auto& entry) { return entry.first == key.string(); });
          if (existing != dict.end()) existing->second = std::move(value);
          else dict.emplace_back(key.string(), std::move(value));
        }
        return Value(std::move(dict));
      }
      case Expr::Kind::GetAttr: {
        const Value object = eval(*e.children[0]);
        if (!e.name.empty() && std::isdigit(static_cast<unsigned char>(e.name[0]))) return item(object, Value(static_cast<int64_t>(std::stoll(e.name))));
        if (object.is_undefined()) throw Error(undefined_name(*e.children[0]) + " is undefined (reading ." + e.name + ")");
        return attribute(object, e.name);
      }
      case Expr::Kind::GetItem: {
        const Value object = eval(*e.children[0]);
        if (object.is_undefined()) throw Error(undefined_name(*e.children[0]) + " is undefined (reading an item)");
        return item(object, eval(*e.children[1]));
      }
      case Expr::Kind::Slice: return slice(e);
      case Expr::Kind::Call: return call(e);
      case Expr::Kind::Filter: {
        const Value value = eval(*e.children[0]);
        CallArgs args = call_arguments(e, 1);
        return filter(e.name, value, args);
      }
      case Expr::Kind::Test: {
        const Value value = eval(*e.children[0]);
        CallArgs args = call_arguments(e, 1);
        return Value(test(e.name, value, args) != e.negated);
      }
      case Expr::Kind::Unary: {
        const Value value = eval(*e.children[0]);
        if (e.name == "not") return Value(!value.truthy());
        if (!value.is_number() && value.type() != Value::Type::Bool) throw Error("bad operand type for unary " + e.name + ": '" + value.type_name() + "'");
        if (e.name == "+") return value;
        return value.type() == Value::Type::Float ? Value(-value.number()) : Value(-as_integer(value, "-"));
      }
      case Expr::Kind::Binary: return binary(e);
      case Expr::Kind::Conditional:
        if (eval(*e.children[0]).truthy()) return eval(*e.children[1]);
        return e.children[2] ? eval(*e.children[2]) : Value();
    }
    return Value();
  }

  static std::string undefined_name(const Expr& e) {
    if (e.kind == Expr::Kind::Name) return "'" + e.name + "'";
    if (e.kind == Expr::Kind::GetAttr) return "'" + e.name + "'";
    return "the value";
  }

  Value binary(const Expr& e) {
    const std::string& op = e.name;
    const Value left = eval(*e.children[0]);
    if (op == "and") return left.truthy() ? eval(*e.children[1]) : left;
    if (op == "or") return left.truthy() ? left : eval(*e.children[1]);
    const Value right = eval(*e.children[1]);
    if (op == "==") return Value(left == right);
    if (op == "!=") return Value(!(left == right));
    if (op == "<") return Value(compare(left, right) < 0);
    if (op == "<=") return Value(compare(left, right) <= 0);
    if (op == ">") return Value(compare(left, right) > 0);
    if (op == ">=") return Value(compare(left, right) >= 0);
    if (op == "in") return Value(contains(right, left));
    if (op == "notin") return Value(!contains(right, left));
    return arithmetic(op, left, right);
  }

  Value slice(const Expr& e) {
    const Value object = eval(*e.children[0]);
    Value bounds[3];
    for (int i = 0; i < 3; ++i) {
      if (e.children[i + 1]) bounds[i] = eval(*e.children[i + 1]);
      if (!bounds[i].is_undefined() && !bounds[i].is_none() && bounds[i].type() != Value::Type::Int) {
        throw Error("slice indices must be integers or none");
      }
    }
    if (object.type() == Value::Type::List) {
      List out;
      for (int64_t i : slice_indices(static_cast<int64_t>(object.list().size()), bounds[0], bounds[1], bounds[2])) {
        out.push_back(object.list()[i]);
      }
      return Value(std::move(out));
    }
    if (object.is_string()) {
      const std::vector<std::string> chars = code_points(object.string());
      std::string out;
      for (int64_t i : slice_indices(static_cast<int64_t>(chars.size()), bounds[0], bounds[1], bounds[2])) out += chars[i];
      return Value(std::move(out));
    }
    throw Error(std::string("'") + object.type_name() + "' object is not subscriptable");
  }

  Value call(const Expr& e) {
    const Expr& callee = *e.children[0];
    if (callee.kind == Expr::Kind::GetAttr) {
      const Value object = eval(*callee.children[0]);
      if (object.is_string() || object.type() == Value::Type::Dict) {
        CallArgs args = call_arguments(e, 1);
        return method(object, callee.name, args);
      }
      const Value function = attribute(object, callee.name);
      if (function.type() != Value::Type::Function) throw Error("'" + callee.name + "' is not callable");
      CallArgs args = call_arguments(e, 1);
      return function.callable()(args);
    }
    const Value function = eval(callee);
    if (function.type() != Value::Type::Function) {
      throw Error(function.is_undefined() ? undefined_name(callee) + " is undefined" : undefined_name(callee) + " is not callable");
    }
    CallArgs args = call_arguments(e, 1);
    return function.callable()(args);
  }

  // The methods of str and dict that templates call.
  Value method(const Value& object, const std::string& name, CallArgs& args) {
    Arguments a(args, name + "()");
    if (object.type() == Value::Type::Dict && name != "items" && name != "keys" && name != "values" && name != "get") {
      const Value* found = object.find(name);  // a callable the context put in the dict
      if (!found || found->type() != Value::Type::Function) throw Error("dict has no method '" + name + "'");
      return found->callable()(args);
    }
    Value result = object.type() == Value::Type::Dict ? dict_method(object, name, a) : string_method(object.string(), name, a);
    a.done();
    return result;
  }

  Value filter(const std::string& name, const Value& value, CallArgs& args) {
    Arguments a(args, "filter " + name);
    const FilterCall call{name, value, a, args,
                          [this](const std::string& other, const Value& item, CallArgs& rest) { return filter(other, item, rest); }};
    Value result = apply_filter(call);
    a.done();
    return result;
  }

  const std::string& name_;
  const Value& context_;
  Spans* spans_;
  std::vector<Scope> scopes_;
  std::string output_;
  std::string* out_;
  size_t iterations_ = 0;
  int depth_ = 0;
};

}  // namespace

Template::Template(const std::string& source, std::string name) : name_(std::move(name)) {
  Parsed parsed = parse_template(source, name_);
  root_ = std::move(parsed.root);
  has_generation_ = parsed.has_generation;
}

Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const Value& context, Spans* generation) const {
  return Renderer(name_, context, generation).run(*root_);
}

}  // namespace qft::jinja
