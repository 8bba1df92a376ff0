#pragma once
// A sandboxed interpreter for the Jinja subset that chat templates use, with
// the environment transformers renders them in (trim_blocks, lstrip_blocks,
// loop controls, raise_exception, strftime_now, a non-escaping tojson, the
// {% generation %} block). There is no Jinja library for C++ in Debian.
//
// Values follow Python's semantics where the output depends on them: str() of
// None/True/lists/dicts, truthiness, `and`/`or` returning an operand, string
// indexing by code point, json.dumps's layout. Nothing outside the context's
// dicts, lists and strings can be reached; loops, recursion and output size
// are bounded. Anything unsupported is a TemplateError naming the template's
// line and column.
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "core/error.h"

namespace qft::jinja {

// A template that cannot be parsed or rendered: "NAME:LINE:COL: what".
struct TemplateError : Error {
  using Error::Error;
};
// The template's own raise_exception(message): what() is the message alone.
struct RaisedError : Error {
  using Error::Error;
};

class Value;
using List = std::vector<Value>;
using Dict = std::vector<std::pair<std::string, Value>>;  // insertion-ordered, as Python's dict
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> named;
};
using Function = std::function<Value(CallArgs&)>;

class Value {
 public:
  enum class Type { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Function };

  Value() = default;  // undefined
  static Value none();
  Value(bool b);
  Value(int64_t i);
  Value(int i) : Value(static_cast<int64_t>(i)) {}
  Value(double d);
  Value(std::string s);
  Value(const char* s) : Value(std::string(s)) {}
  Value(List list);
  Value(Dict dict);
  static Value tuple(List items);  // a List that prints as Python's tuple
  static Value namespace_of(Dict attributes);
  static Value function(Function function);
  static Value from_json(const nlohmann::ordered_json& json);  // objects keep their order

  Type type() const { return type_; }
  bool is_undefined() const { return type_ == Type::Undefined; }
  bool is_none() const { return type_ == Type::None; }
  bool is_string() const { return type_ == Type::String; }
  bool is_number() const { return type_ == Type::Int || type_ == Type::Float; }
  bool is_mapping() const { return type_ == Type::Dict || type_ == Type::Namespace; }

  bool boolean() const { return std::get<bool>(data_); }
  int64_t integer() const { return std::get<int64_t>(data_); }
  double number() const;  // Int or Float as double
  const std::string& string() const { return std::get<std::string>(data_); }
  const List& list() const { return *std::get<std::shared_ptr<List>>(data_); }
  const Dict& dict() const { return *std::get<std::shared_ptr<Dict>>(data_); }
  Dict& mutable_dict() { return *std::get<std::shared_ptr<Dict>>(data_); }
  const Function& callable() const { return *std::get<std::shared_ptr<Function>>(data_); }

  const Value* find(const std::string& key) const;  // a dict's or namespace's item
  bool truthy() const;                              // Python's bool()
  std::string str() const;                          // Python's str() ('' for undefined)
  std::string repr() const;                         // Python's repr()
  const char* type_name() const;

 private:
  Type type_ = Type::Undefined;
  bool tuple_ = false;
  std::variant<std::monostate, bool, int64_t, double, std::string, std::shared_ptr<List>, std::shared_ptr<Dict>,
               std::shared_ptr<Function>>
      data_;
};

bool operator==(const Value& a, const Value& b);

// Python's json.dumps(value, ensure_ascii=..., indent=indent, sort_keys=...) (indent < 0: none).
std::string to_json(const Value& value, int indent = -1, bool sort_keys = false, bool ensure_ascii = false);

struct Node;

// Byte ranges of the output written inside {% generation %} blocks.
using Spans = std::vector<std::pair<size_t, size_t>>;

class Template {
 public:
  // Parses `source` (transformers' environment); throws TemplateError.
  Template(const std::string& source, std::string name);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with `context` (a Dict) as the global variables; `generation`,
  // when given, receives the spans of {% generation %} blocks.
  std::string render(const Value& context, Spans* generation = nullptr) const;
  bool has_generation_blocks() const { return has_generation_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::shared_ptr<const Node> root_;
  bool has_generation_ = false;
};

}  // namespace qft::jinja
