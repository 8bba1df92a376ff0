// Jinja values with Python's str(), repr(), truthiness, equality and json.dumps.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "text/jinja.h"
#include "text/unicode.h"

namespace qft::jinja {

Value Value::none() {
  Value value;
  value.type_ = Type::None;
  return value;
}
Value::Value(bool b) : type_(Type::Bool), data_(b) {}
Value::Value(int64_t i) : type_(Type::Int), data_(i) {}
Value::Value(double d) : type_(Type::Float), data_(d) {}
Value::Value(std::string s) : type_(Type::String), data_(std::move(s)) {}
Value::Value(List list) : type_(Type::List), data_(std::make_shared<List>(std::move(list))) {}
Value::Value(Dict dict) : type_(Type::Dict), data_(std::make_shared<Dict>(std::move(dict))) {}

Value Value::tuple(List items) {
  Value value(std::move(items));
  value.tuple_ = true;
  return value;
}

Value Value::namespace_of(Dict attributes) {
  Value value(std::move(attributes));
  value.type_ = Type::Namespace;
  return value;
}

Value Value::function(Function function) {
  Value value;
  value.type_ = Type::Function;
  value.data_ = std::make_shared<Function>(std::move(function));
  return value;
}

Value Value::from_json(const nlohmann::ordered_json& json) {
  switch (json.type()) {
    case nlohmann::ordered_json::value_t::null: return none();
    case nlohmann::ordered_json::value_t::boolean: return Value(json.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value(json.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: return Value(static_cast<int64_t>(json.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return Value(json.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(json.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List list;
      for (const auto& item : json) list.push_back(from_json(item));
      return Value(std::move(list));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict dict;
      for (const auto& [key, item] : json.items()) dict.emplace_back(key, from_json(item));
      return Value(std::move(dict));
    }
    default: throw TemplateError("a JSON value of an unsupported kind (binary) in the template's context");
  }
}

double Value::number() const {
  if (type_ == Type::Int) return static_cast<double>(integer());
  if (type_ == Type::Bool) return boolean() ? 1 : 0;
  return std::get<double>(data_);
}

const Value* Value::find(const std::string& key) const {
  if (!is_mapping()) return nullptr;
  for (const auto& [name, value] : dict()) {
    if (name == key) return &value;
  }
  return nullptr;
}

bool Value::truthy() const {
  switch (type_) {
    case Type::Undefined:
    case Type::None: return false;
    case Type::Bool: return boolean();
    case Type::Int: return integer() != 0;
    case Type::Float: return number() != 0;
    case Type::String: return !string().empty();
    case Type::List: return !list().empty();
    case Type::Dict: return !dict().empty();
    case Type::Namespace:
    case Type::Function: return true;
  }
  return false;
}

const char* Value::type_name() const {
  switch (type_) {
    case Type::Undefined: return "undefined";
    case Type::None: return "none";
    case Type::Bool: return "bool";
    case Type::Int: return "int";
    case Type::Float: return "float";
    case Type::String: return "str";
    case Type::List: return "list";
    case Type::Dict: return "dict";
    case Type::Namespace: return "namespace";
    case Type::Function: return "function";
  }
  return "?";
}

namespace {

// Python's repr(float): the shortest digits that round-trip, scientific
// notation below 1e-4 and from 1e16.
std::string float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[64];
  auto [end, error] = std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::scientific);
  std::string scientific(buffer, end);  // d.ddde±XX
  const size_t e = scientific.find('e');
  const int exponent = std::stoi(scientific.substr(e + 1));
  std::string digits = scientific.substr(0, e);
  const bool negative = digits[0] == '-';
  if (negative) digits.erase(0, 1);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  std::string text;
  if (exponent < -4 || exponent >= 16) {
    text = digits.substr(0, 1);
    if (digits.size() > 1) text += "." + digits.substr(1);
    char suffix[16];
    std::snprintf(suffix, sizeof suffix, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    text += suffix;
  } else if (exponent < 0) {
    text = "0." + std::string(-exponent - 1, '0') + digits;
  } else {
    if (digits.size() <= static_cast<size_t>(exponent) + 1) digits.append(exponent + 1 - digits.size(), '0');
    text = digits.substr(0, exponent + 1) + ".";
    text += digits.size() > static_cast<size_t>(exponent) + 1 ? digits.substr(exponent + 1) : "0";
  }
  return negative ? "-" + text : text;
}

// Python's repr(str): single quotes unless the text holds ' and no ".
std::string string_repr(const std::string& text) {
  const bool double_quotes = text.find('\'') != std::string::npos && text.find('"') == std::string::npos;
  const char quote = double_quotes ? '"' : '\'';
  std::string out(1, quote);
  for (const unsigned char c : text) {
    if (c == '\\') out += "\\\\";
    else if (c == quote) out += std::string("\\") + static_cast<char>(c);
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) {
      char escape[8];
      std::snprintf(escape, sizeof escape, "\\x%02x", c);
      out += escape;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + quote;
}

}  // namespace

std::string Value::str() const {
  switch (type_) {
    case Type::Undefined: return "";
    case Type::String: return string();
    default: return repr();
  }
}

std::string Value::repr() const {
  switch (type_) {
    case Type::Undefined: return "";
    case Type::None: return "None";
    case Type::Bool: return boolean() ? "True" : "False";
    case Type::Int: return std::to_string(integer());
    case Type::Float: return float_repr(number());
    case Type::String: return string_repr(string());
    case Type::List: {
      std::string out = tuple_ ? "(" : "[";
      for (size_t i = 0; i < list().size(); ++i) out += (i ? ", " : "") + list()[i].repr();
      return out + (!tuple_ ? "]" : list().size() == 1 ? ",)" : ")");
    }
    case Type::Dict:
    case Type::Namespace: {
      std::string out = type_ == Type::Namespace ? "<Namespace {" : "{";
      for (size_t i = 0; i < dict().size(); ++i) {
        out += (i ? ", " : "") + string_repr(dict()[i].first) + ": " + dict()[i].second.repr();
      }
      return out + (type_ == Type::Namespace ? "}>" : "}");
    }
    case Type::Function: return "<function>";
  }
  return "";
}

bool operator==(const Value& a, const Value& b) {
  using Type = Value::Type;
  const auto numeric = [](const Value& v) { return v.is_number() || v.type() == Type::Bool; };
  if (numeric(a) && numeric(b)) {
    if (a.type() != Type::Float && b.type() != Type::Float) {
      const auto as_int = [](const Value& v) { return v.type() == Type::Bool ? int64_t{v.boolean()} : v.integer(); };
      return as_int(a) == as_int(b);
    }
    return a.number() == b.number();
  }
  if (a.type() != b.type()) return false;
  switch (a.type()) {
    case Type::Undefined:
    case Type::None: return true;
    case Type::String: return a.string() == b.string();
    case Type::List: return a.list() == b.list();
    case Type::Dict: {
      if (a.dict().size() != b.dict().size()) return false;
      for (const auto& [key, value] : a.dict()) {
        const Value* other = b.find(key);
        if (!other || !(*other == value)) return false;
      }
      return true;
    }
    default: return &a == &b;
  }
}

namespace {

void json_string(std::string& out, const std::string& text, bool ensure_ascii) {
  out += '"';
  size_t pos = 0;
  while (pos < text.size()) {
    const unsigned char c = text[pos];
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c == '\b') out += "\\b";
    else if (c == '\f') out += "\\f";
    else if (c < 0x20 || (ensure_ascii && c >= 0x7f)) {
      if (c < 0x80) {
        char escape[8];
        std::snprintf(escape, sizeof escape, "\\u%04x", c);
        out += escape;
      } else {
        char32_t code = text::next_code_point(text, pos);
        char escape[16];
        if (code >= 0x10000) {
          code -= 0x10000;
          std::snprintf(escape, sizeof escape, "\\u%04x\\u%04x", 0xd800 + (code >> 10), 0xdc00 + (code & 0x3ff));
        } else {
          std::snprintf(escape, sizeof escape, "\\u%04x", static_cast<unsigned>(code));
        }
        out += escape;
        continue;
      }
    } else {
      out += static_cast<char>(c);
    }
    ++pos;
  }
  out += '"';
}

void json_value(std::string& out, const Value& value, int indent, bool sort_keys, bool ensure_ascii, int level) {
  const auto newline = [&](int depth) {
    if (indent >= 0) out += "\n" + std::string(static_cast<size_t>(indent) * depth, ' ');
  };
  const char* item_separator = indent >= 0 ? "," : ", ";
  switch (value.type()) {
    case Value::Type::None: out += "null"; return;
    case Value::Type::Bool: out += value.boolean() ? "true" : "false"; return;
    case Value::Type::Int: out += std::to_string(value.integer()); return;
    case Value::Type::Float: {
      const double number = value.number();
      out += std::isnan(number) ? "NaN" : std::isinf(number) ? (number > 0 ? "Infinity" : "-Infinity") : value.repr();
      return;
    }
    case Value::Type::String: json_string(out, value.string(), ensure_ascii); return;
    case Value::Type::List: {
      if (value.list().empty()) { out += "[]"; return; }
      out += "[";
      for (size_t i = 0; i < value.list().size(); ++i) {
        if (i) out += item_separator;
        newline(level + 1);
        json_value(out, value.list()[i], indent, sort_keys, ensure_ascii, level + 1);
      }
      newline(level);
      out += "]";
      return;
    }
    case Value::Type::Dict: {
      if (value.dict().empty()) { out += "{}"; return; }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& item : value.dict()) items.push_back(&item);
      if (sort_keys) std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      out += "{";
      for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += item_separator;
        newline(level + 1);
        json_string(out, items[i]->first, ensure_ascii);
        out += ": ";
        json_value(out, items[i]->second, indent, sort_keys, ensure_ascii, level + 1);
      }
      newline(level);
      out += "}";
      return;
    }
    default: throw TemplateError(std::string("Object of type ") + value.type_name() + " is not JSON serializable");
  }
}

}  // namespace

std::string to_json(const Value& value, int indent, bool sort_keys, bool ensure_ascii) {
  std::string out;
  json_value(out, value, indent, sort_keys, ensure_ascii, 0);
  return out;
}

}  // namespace qft::jinja
