#pragma once
// The Jinja syntax tree, and the lexer + parser that build it (jinja_parse.cpp);
// jinja.cpp evaluates it.
#include <memory>
#include <string>
#include <vector>

#include "text/jinja.h"

namespace qft::jinja {

struct Position {
  int line = 1, column = 1;
};

struct Expr {
  enum class Kind {
    Literal,      // value
    Name,         // name
    List,         // children: items
    Tuple,        // children: items
    Dict,         // children: key, value, key, value, ...
    GetAttr,      // children[0].name
    GetItem,      // children[0][children[1]]
    Slice,        // children[0][children[1]:children[2]:children[3]] (null: omitted)
    Call,         // children[0](children[1..], keywords: the last keywords.size())
    Filter,       // children[0] | name(children[1..])
    Test,         // children[0] is [not] name(children[1..])
    Unary,        // op children[0]: "-", "+", "not"
    Binary,       // children[0] op children[1]: + - * / // % ** ~ and or in notin == != < <= > >=
    Conditional,  // children[1] if children[0] else children[2] (null: undefined)
  };
  Kind kind;
  Position at;
  Value value;
  std::string name;  // Name, GetAttr, Filter, Test; the operator of Unary/Binary
  bool negated = false;
  std::vector<std::string> keywords;  // names of the trailing keyword arguments
  std::vector<std::unique_ptr<Expr>> children;
};

struct Node {
  enum class Kind {
    Body,        // children
    Text,        // text
    Output,      // {{ expr }}
    If,          // conditions[i] → children[i]; children.back() is the else body when longer
    For,         // targets in expr [if condition]: children[0] body, children[1] else body
    Set,         // targets (or target.attribute) = expr; a block set when expr is null (children[0])
    Macro,       // name(targets = defaults) children[0]
    Break,
    Continue,
    Generation,  // children[0]
  };
  Kind kind;
  Position at;
  std::string text;                  // Text; Macro's and Set's name; Set's namespace attribute
  std::vector<std::string> targets;  // For/Set names; Macro parameters
  std::unique_ptr<Expr> expr;        // Output, For iterable, Set value
  std::unique_ptr<Expr> condition;   // For filter
  std::vector<std::unique_ptr<Expr>> conditions;  // If; Macro defaults (null: none)
  std::vector<std::unique_ptr<Node>> children;
};

struct Parsed {
  std::unique_ptr<Node> root;
  bool has_generation = false;
};

// transformers' environment: trim_blocks, lstrip_blocks, no trailing newline kept.
Parsed parse_template(const std::string& source, const std::string& name);

[[noreturn]] void throw_at(const std::string& name, Position at, const std::string& message);

}  // namespace qft::jinja
