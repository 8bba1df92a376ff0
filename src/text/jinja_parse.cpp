// Jinja's lexer (with its whitespace control) and a recursive-descent parser
// following jinja2's grammar and operator precedence.
#include <algorithm>
#include <cctype>
#include <cstring>

#include "text/jinja_parse.h"
#include "text/unicode.h"

namespace qft::jinja {

void throw_at(const std::string& name, Position at, const std::string& message) {
  throw TemplateError(name + ":" + std::to_string(at.line) + ":" + std::to_string(at.column) + ": " + message);
}

namespace {

enum class Tok { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Integer, Float, Operator, End };

struct Token {
  Tok type;
  std::string text;  // Text's data, a name, an operator, a string's decoded value
  Position at;
  Value number;
};

bool is_space(char c) { return std::strchr(" \t\n\r\f\v", c) != nullptr && c != '\0'; }

// \r\n and \r become \n; one trailing newline goes (keep_trailing_newline=False).
std::string normalized_source(const std::string& source) {
  std::string text;
  text.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      text += '\n';
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      text += source[i];
    }
  }
  if (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

class Lexer {
 public:
  Lexer(const std::string& source, const std::string& name) : source_(normalized_source(source)), name_(name) {}

  std::vector<Token> tokens() {
    while (pos_ < source_.size()) {
      const size_t tag = next_tag(pos_);
      text(tag);
      if (tag == std::string::npos) break;
      const char kind = source_[tag + 1];
      const bool raw_end_possible = kind == '%';
      if (kind == '#') comment(tag);
      else tag_tokens(tag, kind == '{' ? Tok::VarBegin : Tok::BlockBegin);
      if (raw_end_possible) raw_block();
    }
    out_.push_back({Tok::End, "", where(source_.size()), {}});
    return std::move(out_);
  }

 private:
  Position where(size_t offset) {
    if (offset < line_scan_) line_scan_ = line_start_ = 0, line_ = 1;
    while (line_scan_ < offset && line_scan_ < source_.size()) {
      if (source_[line_scan_] == '\n') {
        ++line_;
        line_start_ = line_scan_ + 1;
      }
      ++line_scan_;
    }
    return {line_, static_cast<int>(offset - line_start_) + 1};
  }

  [[noreturn]] void error(size_t offset, const std::string& message) { throw_at(name_, where(offset), message); }

  size_t next_tag(size_t from) const {
    for (size_t i = source_.find('{', from); i != std::string::npos; i = source_.find('{', i + 1)) {
      if (i + 1 < source_.size() && std::strchr("{%#", source_[i + 1])) return i;
    }
    return std::string::npos;
  }

  // The text up to `tag`, with the whitespace control of the tags around it.
  void text(size_t tag) {
    const size_t end = tag == std::string::npos ? source_.size() : tag;
    std::string data = source_.substr(pos_, end - pos_);
    const bool line_starting = pos_ == 0 || source_[pos_ - 1] == '\n';
    if (strip_next_) {
      size_t first = 0;
      while (first < data.size() && is_space(data[first])) ++first;
      data.erase(0, first);
    }
    strip_next_ = false;
    if (tag != std::string::npos) {
      const char modifier = tag + 2 < source_.size() ? source_[tag + 2] : '\0';
      if (modifier == '-') {
        while (!data.empty() && is_space(data.back())) data.pop_back();
      } else if (modifier != '+' && source_[tag + 1] != '{') {
        // lstrip_blocks: spaces and tabs from the line's start to a block or comment.
        const size_t line_begin = data.rfind('\n') == std::string::npos ? 0 : data.rfind('\n') + 1;
        if ((line_begin > 0 || line_starting) && data.find_first_not_of(" \t", line_begin) == std::string::npos) {
          data.erase(line_begin);
        }
      }
    }
    if (!data.empty()) out_.push_back({Tok::Text, std::move(data), where(pos_), {}});
    pos_ = end;
  }

  // After a block or comment: `-` strips all following whitespace; otherwise
  // trim_blocks removes one newline (`+` keeps it).
  void after_block_end(size_t end, char modifier) {
    pos_ = end;
    if (modifier == '-') strip_next_ = true;
    else if (modifier != '+' && pos_ < source_.size() && source_[pos_] == '\n') ++pos_;
  }

  void comment(size_t tag) {
    const size_t close = source_.find("#}", tag + 2);
    if (close == std::string::npos) error(tag, "the comment is not closed (no #})");
    after_block_end(close + 2, close > tag + 2 ? source_[close - 1] : '\0');
  }

  void tag_tokens(size_t tag, Tok begin) {
    out_.push_back({begin, "", where(tag), {}});
    pos_ = tag + 2;
    if (pos_ < source_.size() && (source_[pos_] == '-' || source_[pos_] == '+')) ++pos_;
    const char* close = begin == Tok::VarBegin ? "}}" : "%}";
    int depth = 0;
    while (true) {
      while (pos_ < source_.size() && is_space(source_[pos_])) ++pos_;
      if (pos_ >= source_.size()) error(tag, std::string("the tag is not closed (no ") + close + ")");
      if (depth == 0) {
        const char modifier = source_[pos_];
        const size_t at = (modifier == '-' || modifier == '+') ? pos_ + 1 : pos_;
        if (source_.compare(at, 2, close) == 0 && (at == pos_ || begin == Tok::BlockBegin || modifier == '-')) {
          out_.push_back({begin == Tok::VarBegin ? Tok::VarEnd : Tok::BlockEnd, "", where(pos_), {}});
          if (begin == Tok::VarBegin) {
            pos_ = at + 2;
            strip_next_ = modifier == '-';
          } else {
            after_block_end(at + 2, at == pos_ ? '\0' : modifier);
          }
          return;
        }
      }
      expression_token(depth);
    }
  }

  void expression_token(int& depth) {
    const size_t start = pos_;
    const char c = source_[pos_];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      while (pos_ < source_.size() && (std::isalnum(static_cast<unsigned char>(source_[pos_])) || source_[pos_] == '_')) ++pos_;
      out_.push_back({Tok::Name, source_.substr(start, pos_ - start), where(start), {}});
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      number(start);
    } else if (c == '\'' || c == '"') {
      string_literal(start, c);
    } else {
      static const char* const operators[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<",
                                              ">",  "=",  ".",  ",",  ":",  "|",  "(", ")", "[", "]", "{", "}", ";"};
      for (const char* op : operators) {
        if (source_.compare(pos_, std::strlen(op), op) == 0) {
          pos_ += std::strlen(op);
          if (std::strchr("([{", op[0]) && op[1] == '\0') ++depth;
          if (std::strchr(")]}", op[0]) && op[1] == '\0') --depth;
          out_.push_back({Tok::Operator, op, where(start), {}});
          return;
        }
      }
      error(start, std::string("unexpected character '") + c + "'");
    }
  }

  void number(size_t start) {
    const auto digits = [&] {
      while (pos_ < source_.size() && (std::isdigit(static_cast<unsigned char>(source_[pos_])) || source_[pos_] == '_')) ++pos_;
    };
    digits();
    bool is_float = false;
    if (pos_ + 1 < source_.size() && source_[pos_] == '.' && std::isdigit(static_cast<unsigned char>(source_[pos_ + 1]))) {
      is_float = true;
      ++pos_;
      digits();
    }
    if (pos_ < source_.size() && (source_[pos_] == 'e' || source_[pos_] == 'E')) {
      size_t e = pos_ + 1;
      if (e < source_.size() && (source_[e] == '+' || source_[e] == '-')) ++e;
      if (e < source_.size() && std::isdigit(static_cast<unsigned char>(source_[e]))) {
        is_float = true;
        pos_ = e;
        digits();
      }
    }
    std::string text = source_.substr(start, pos_ - start);
    text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
    try {
      if (is_float) out_.push_back({Tok::Float, text, where(start), Value(std::stod(text))});
      else out_.push_back({Tok::Integer, text, where(start), Value(static_cast<int64_t>(std::stoll(text)))});
    } catch (const std::exception&) {
      error(start, "the number " + text + " is out of range");
    }
  }

  // A quoted string with Python's escapes (\n, \t, \\, \', \", \xNN, \uNNNN, ...).
  void string_literal(size_t start, char quote) {
    std::string value;
    ++pos_;
    while (true) {
      if (pos_ >= source_.size()) error(start, "the string is not closed");
      const char c = source_[pos_++];
      if (c == quote) break;
      if (c != '\\' || pos_ >= source_.size()) {
        value += c;
        continue;
      }
      const char e = source_[pos_++];
      const auto hex = [&](int count) {
        char32_t code = 0;
        for (int i = 0; i < count; ++i, ++pos_) {
          const char digit = pos_ < source_.size() ? source_[pos_] : '\0';
          if (!std::isxdigit(static_cast<unsigned char>(digit))) error(start, "a \\x/\\u/\\U escape needs " + std::to_string(count) + " hex digits");
          code = code * 16 + static_cast<char32_t>(std::isdigit(static_cast<unsigned char>(digit)) ? digit - '0' : std::tolower(digit) - 'a' + 10);
        }
        if (code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) error(start, "the escape is not a Unicode scalar value");
        text::append_utf8(value, code);
      };
      switch (e) {
        case 'n': value += '\n'; break;
        case 't': value += '\t'; break;
        case 'r': value += '\r'; break;
        case 'b': value += '\b'; break;
        case 'f': value += '\f'; break;
        case 'v': value += '\v'; break;
        case 'a': value += '\a'; break;
        case '0': value += '\0'; break;
        case '\\': value += '\\'; break;
        case '\'': value += '\''; break;
        case '"': value += '"'; break;
        case '\n': break;
        case 'x': hex(2); break;
        case 'u': hex(4); break;
        case 'U': hex(8); break;
        default: value += '\\'; value += e;
      }
    }
    out_.push_back({Tok::String, std::move(value), where(start), {}});
  }

  // {% raw %}...{% endraw %}: the text between, verbatim.
  void raw_block() {
    const size_t n = out_.size();
    if (n < 3 || out_[n - 3].type != Tok::BlockBegin || out_[n - 2].type != Tok::Name || out_[n - 2].text != "raw" ||
        out_[n - 1].type != Tok::BlockEnd) {
      return;
    }
    out_.resize(n - 3);
    for (size_t tag = source_.find("{%", pos_); tag != std::string::npos; tag = source_.find("{%", tag + 2)) {
      size_t i = tag + 2;
      if (i < source_.size() && (source_[i] == '-' || source_[i] == '+')) ++i;
      while (i < source_.size() && is_space(source_[i])) ++i;
      if (source_.compare(i, 6, "endraw") != 0) continue;
      std::string data = source_.substr(pos_, tag - pos_);
      if (source_[tag + 2] == '-') {
        while (!data.empty() && is_space(data.back())) data.pop_back();
      }
      if (!data.empty()) out_.push_back({Tok::Text, std::move(data), where(pos_), {}});
      pos_ = tag;
      tag_tokens(tag, Tok::BlockBegin);
      out_.resize(out_.size() - 3);
      return;
    }
    error(pos_, "{% raw %} without {% endraw %}");
  }

  std::string source_;
  const std::string& name_;
  size_t pos_ = 0;
  bool strip_next_ = false;
  std::vector<Token> out_;
  size_t line_scan_ = 0, line_start_ = 0;
  int line_ = 1;
};

class Parser {
 public:
  Parser(std::vector<Token> tokens, const std::string& name) : tokens_(std::move(tokens)), name_(name) {}

  Parsed parse() {
    Parsed parsed;
    std::string end;
    parsed.root = body({}, end);
    parsed.has_generation = has_generation_;
    return parsed;
  }

 private:
  using ExprPtr = std::unique_ptr<Expr>;
  using NodePtr = std::unique_ptr<Node>;

  // Bounds the parser's (and so the evaluator's) recursion.
  class Nesting {
   public:
    explicit Nesting(Parser& parser) : parser_(parser) {
      if (++parser_.depth_ > kMaxNesting) parser_.error(parser_.peek(), "expressions or blocks nested too deeply");
    }
    ~Nesting() { --parser_.depth_; }

   private:
    Parser& parser_;
  };
  static constexpr int kMaxNesting = 200;

  const Token& peek(size_t ahead = 0) const { return tokens_[std::min(index_ + ahead, tokens_.size() - 1)]; }
  const Token& next() { return tokens_[std::min(index_++, tokens_.size() - 1)]; }
  [[noreturn]] void error(const Token& at, const std::string& message) { throw_at(name_, at.at, message); }

  bool is_op(const char* op, size_t ahead = 0) const {
    return peek(ahead).type == Tok::Operator && peek(ahead).text == op;
  }
  bool is_name(const char* name, size_t ahead = 0) const {
    return peek(ahead).type == Tok::Name && peek(ahead).text == name;
  }
  bool accept_op(const char* op) {
    if (!is_op(op)) return false;
    ++index_;
    return true;
  }
  bool accept_name(const char* name) {
    if (!is_name(name)) return false;
    ++index_;
    return true;
  }
  void expect_op(const char* op) {
    if (!accept_op(op)) error(peek(), std::string("expected '") + op + "'" + found());
  }
  std::string expect_name() {
    if (peek().type != Tok::Name) error(peek(), "expected a name" + found());
    return next().text;
  }
  void expect_block_end() {
    if (peek().type != Tok::BlockEnd) error(peek(), "expected the end of the statement (%})" + found());
    ++index_;
  }
  static std::string describe(const Token& token) {
    switch (token.type) {
      case Tok::End: return "the end of the template";
      case Tok::BlockEnd: return "%}";
      case Tok::VarEnd: return "}}";
      default: return "'" + token.text + "'";
    }
  }
  std::string found() const { return ", found " + describe(peek()); }

  static NodePtr node(Node::Kind kind, Position at) {
    auto n = std::make_unique<Node>();
    n->kind = kind;
    n->at = at;
    return n;
  }
  static ExprPtr expr(Expr::Kind kind, Position at) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->at = at;
    return e;
  }

  // Statements up to one of `ends` ({% endfor %}, {% else %}, ...), whose name goes to `end`.
  NodePtr body(const std::vector<std::string>& ends, std::string& end) {
    auto block = node(Node::Kind::Body, peek().at);
    while (true) {
      const Token& token = peek();
      if (token.type == Tok::End) {
        if (!ends.empty()) error(token, "the template ends inside a block (expected {% " + ends.front() + " %})");
        return block;
      }
      if (token.type == Tok::Text) {
        auto text = node(Node::Kind::Text, token.at);
        text->text = next().text;
        block->children.push_back(std::move(text));
      } else if (token.type == Tok::VarBegin) {
        ++index_;
        auto output = node(Node::Kind::Output, token.at);
        output->expr = expression();
        if (peek().type != Tok::VarEnd) error(peek(), "expected }}" + found());
        ++index_;
        block->children.push_back(std::move(output));
      } else if (token.type == Tok::BlockBegin) {
        const Token& keyword = peek(1);
        if (keyword.type == Tok::Name) {
          for (const std::string& candidate : ends) {
            if (keyword.text == candidate) {
              index_ += 2;
              end = candidate;
              return block;
            }
          }
        }
        ++index_;
        block->children.push_back(statement());
      } else {
        error(token, "unexpected token" + found());
      }
    }
  }

  NodePtr statement() {
    const Nesting nesting(*this);
    const Token& keyword = peek();
    if (keyword.type != Tok::Name) error(keyword, "expected a statement name" + found());
    const std::string name = next().text;
    if (name == "if") return if_statement(keyword.at);
    if (name == "for") return for_statement(keyword.at);
    if (name == "set") return set_statement(keyword.at);
    if (name == "macro") return macro_statement(keyword.at);
    if (name == "break" || name == "continue") {
      expect_block_end();
      return node(name == "break" ? Node::Kind::Break : Node::Kind::Continue, keyword.at);
    }
    if (name == "generation") {
      expect_block_end();
      has_generation_ = true;
      auto generation = node(Node::Kind::Generation, keyword.at);
      std::string end;
      generation->children.push_back(body({"endgeneration"}, end));
      expect_block_end();
      return generation;
    }
    if (name == "include" || name == "import" || name == "from" || name == "extends") {
      error(keyword, "{% " + name + " %} is not allowed: a chat template cannot read other files");
    }
    error(keyword, "the statement {% " + name + " %} is not supported");
  }

  NodePtr if_statement(Position at) {
    auto branch = node(Node::Kind::If, at);
    branch->conditions.push_back(expression());
    expect_block_end();
    while (true) {
      std::string end;
      branch->children.push_back(body({"elif", "else", "endif"}, end));
      if (end == "elif") {
        branch->conditions.push_back(expression());
        expect_block_end();
      } else if (end == "else") {
        expect_block_end();
        branch->children.push_back(body({"endif"}, end));
        expect_block_end();
        return branch;
      } else {
        expect_block_end();
        return branch;
      }
    }
  }

  std::vector<std::string> assignment_targets() {
    std::vector<std::string> targets;
    const bool parenthesised = accept_op("(");
    do targets.push_back(expect_name());
    while (accept_op(","));
    if (parenthesised) expect_op(")");
    return targets;
  }

  NodePtr for_statement(Position at) {
    auto loop = node(Node::Kind::For, at);
    loop->targets = assignment_targets();
    if (!accept_name("in")) error(peek(), "expected 'in'" + found());
    loop->expr = conditional(/*allow_condition=*/false);
    if (accept_name("if")) loop->condition = conditional(false);
    if (is_name("recursive")) error(peek(), "recursive loops are not supported");
    expect_block_end();
    std::string end;
    loop->children.push_back(body({"else", "endfor"}, end));
    if (end == "else") {
      expect_block_end();
      loop->children.push_back(body({"endfor"}, end));
    } else {
      loop->children.push_back(node(Node::Kind::Body, at));
    }
    expect_block_end();
    return loop;
  }

  NodePtr set_statement(Position at) {
    auto set = node(Node::Kind::Set, at);
    if (peek().type == Tok::Name && is_op(".", 1)) {
      set->text = next().text;
      ++index_;
      set->targets.push_back(expect_name());  // namespace attribute
      expect_op("=");
      set->expr = expression();
      set->conditions.push_back(nullptr);  // marks the namespace form
      expect_block_end();
      return set;
    }
    set->targets = assignment_targets();
    if (accept_op("=")) {
      set->expr = tuple_or_expression();
      expect_block_end();
      return set;
    }
    if (set->targets.size() != 1) error(peek(), "a block set assigns one name");
    expect_block_end();
    std::string end;
    set->children.push_back(body({"endset"}, end));
    expect_block_end();
    return set;
  }

  NodePtr macro_statement(Position at) {
    auto macro = node(Node::Kind::Macro, at);
    macro->text = expect_name();
    expect_op("(");
    while (!accept_op(")")) {
      macro->targets.push_back(expect_name());
      macro->conditions.push_back(accept_op("=") ? expression() : nullptr);
      if (!is_op(")")) expect_op(",");
    }
    expect_block_end();
    std::string end;
    macro->children.push_back(body({"endmacro"}, end));
    expect_block_end();
    return macro;
  }

  // ---- expressions (jinja2's precedence, loosest first) ----

  ExprPtr expression() {
    const Nesting nesting(*this);
    return conditional(true);
  }

  ExprPtr tuple_or_expression() {
    const Position at = peek().at;
    ExprPtr first = expression();
    if (!is_op(",")) return first;
    auto tuple = expr(Expr::Kind::Tuple, at);
    tuple->children.push_back(std::move(first));
    while (accept_op(",")) tuple->children.push_back(expression());
    return tuple;
  }

  ExprPtr conditional(bool allow_condition) {
    ExprPtr value = or_expression();
    while (allow_condition && is_name("if")) {
      const Position at = next().at;
      auto choice = expr(Expr::Kind::Conditional, at);
      choice->children.push_back(or_expression());
      choice->children.push_back(std::move(value));
      choice->children.push_back(accept_name("else") ? conditional(true) : nullptr);
      value = std::move(choice);
    }
    return value;
  }

  ExprPtr binary(std::string op, ExprPtr left, ExprPtr right, Position at) {
    auto node = expr(Expr::Kind::Binary, at);
    node->name = std::move(op);
    node->children.push_back(std::move(left));
    node->children.push_back(std::move(right));
    return node;
  }

  ExprPtr or_expression() {
    ExprPtr left = and_expression();
    while (is_name("or")) {
      const Position at = next().at;
      left = binary("or", std::move(left), and_expression(), at);
    }
    return left;
  }

  ExprPtr and_expression() {
    ExprPtr left = not_expression();
    while (is_name("and")) {
      const Position at = next().at;
      left = binary("and", std::move(left), not_expression(), at);
    }
    return left;
  }

  ExprPtr not_expression() {
    const Nesting nesting(*this);
    if (is_name("not")) {
      auto negation = expr(Expr::Kind::Unary, next().at);
      negation->name = "not";
      negation->children.push_back(not_expression());
      return negation;
    }
    return comparison();
  }

  ExprPtr comparison() {
    ExprPtr left = math1();
    ExprPtr chain;
    while (true) {
      const Position at = peek().at;
      std::string op;
      if (peek().type == Tok::Operator && (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
                                           peek().text == ">" || peek().text == "<=" || peek().text == ">=")) {
        op = next().text;
      } else if (is_name("in")) {
        ++index_;
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        index_ += 2;
        op = "notin";
      } else {
        break;
      }
      ExprPtr right = math1();
      if (chain) error(peek(), "chained comparisons are not supported");
      chain = binary(op, std::move(left), std::move(right), at);
      left = nullptr;
    }
    return chain ? std::move(chain) : std::move(left);
  }

  ExprPtr math1() {
    ExprPtr left = concat();
    while (is_op("+") || is_op("-")) {
      const Token& op = next();
      left = binary(op.text, std::move(left), concat(), op.at);
    }
    return left;
  }

  ExprPtr concat() {
    ExprPtr left = math2();
    while (is_op("~")) {
      const Position at = next().at;
      left = binary("~", std::move(left), math2(), at);
    }
    return left;
  }

  ExprPtr math2() {
    ExprPtr left = power();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& op = next();
      left = binary(op.text, std::move(left), power(), op.at);
    }
    return left;
  }

  ExprPtr power() {
    ExprPtr left = unary(true);
    while (is_op("**")) {
      const Position at = next().at;
      left = binary("**", std::move(left), unary(true), at);
    }
    return left;
  }

  ExprPtr unary(bool with_filter) {
    const Nesting nesting(*this);
    ExprPtr value;
    if (is_op("-") || is_op("+")) {
      const Token& op = next();
      value = expr(Expr::Kind::Unary, op.at);
      value->name = op.text;
      value->children.push_back(unary(false));
    } else {
      value = postfix(primary());
    }
    return with_filter ? filters(std::move(value)) : std::move(value);
  }

  ExprPtr primary() {
    const Token& token = peek();
    switch (token.type) {
      case Tok::String: {
        auto literal = expr(Expr::Kind::Literal, token.at);
        std::string text = next().text;
        while (peek().type == Tok::String) text += next().text;  // adjacent literals join
        literal->value = Value(std::move(text));
        return literal;
      }
      case Tok::Integer:
      case Tok::Float: {
        auto literal = expr(Expr::Kind::Literal, token.at);
        literal->value = next().number;
        return literal;
      }
      case Tok::Name: {
        const std::string& name = token.text;
        auto literal = expr(Expr::Kind::Literal, token.at);
        if (name == "true" || name == "True") literal->value = Value(true);
        else if (name == "false" || name == "False") literal->value = Value(false);
        else if (name == "none" || name == "None") literal->value = Value::none();
        else {
          auto variable = expr(Expr::Kind::Name, token.at);
          variable->name = next().text;
          return variable;
        }
        ++index_;
        return literal;
      }
      case Tok::Operator:
        if (token.text == "(") return parenthesised();
        if (token.text == "[") return list_literal();
        if (token.text == "{") return dict_literal();
        break;
      default: break;
    }
    error(token, "unexpected " + describe(token));
  }

  ExprPtr parenthesised() {
    const Position at = next().at;
    if (accept_op(")")) return expr(Expr::Kind::Tuple, at);
    ExprPtr first = expression();
    if (accept_op(")")) return first;
    auto tuple = expr(Expr::Kind::Tuple, at);
    tuple->children.push_back(std::move(first));
    while (accept_op(",")) {
      if (is_op(")")) break;
      tuple->children.push_back(expression());
    }
    expect_op(")");
    return tuple;
  }

  ExprPtr list_literal() {
    auto list = expr(Expr::Kind::List, next().at);
    while (!accept_op("]")) {
      list->children.push_back(expression());
      if (!is_op("]")) expect_op(",");
    }
    return list;
  }

  ExprPtr dict_literal() {
    auto dict = expr(Expr::Kind::Dict, next().at);
    while (!accept_op("}")) {
      dict->children.push_back(expression());
      expect_op(":");
      dict->children.push_back(expression());
      if (!is_op("}")) expect_op(",");
    }
    return dict;
  }

  // Call arguments after '(' up to ')': positional, then name=value.
  void arguments(Expr& call) {
    while (!accept_op(")")) {
      if (peek().type == Tok::Name && is_op("=", 1)) {
        call.keywords.push_back(next().text);
        ++index_;
        call.children.push_back(expression());
      } else {
        if (!call.keywords.empty()) error(peek(), "a positional argument after a keyword argument");
        call.children.push_back(expression());
      }
      if (!is_op(")")) expect_op(",");
    }
  }

  ExprPtr postfix(ExprPtr value) {
    while (true) {
      const Position at = peek().at;
      if (accept_op(".")) {
        auto attribute = expr(Expr::Kind::GetAttr, at);
        if (peek().type == Tok::Integer) attribute->name = next().text;
        else attribute->name = expect_name();
        attribute->children.push_back(std::move(value));
        value = std::move(attribute);
      } else if (accept_op("[")) {
        value = subscript(std::move(value), at);
      } else if (accept_op("(")) {
        auto call = expr(Expr::Kind::Call, at);
        call->children.push_back(std::move(value));
        arguments(*call);
        value = std::move(call);
      } else {
        return value;
      }
    }
  }

  ExprPtr subscript(ExprPtr value, Position at) {
    ExprPtr parts[3];
    int colons = 0;
    while (!accept_op("]")) {
      if (accept_op(":")) {
        if (++colons > 2) error(peek(), "a slice takes at most two ':'");
        continue;
      }
      if (parts[colons]) expect_op("]");
      parts[colons] = expression();
    }
    if (colons == 0) {
      if (!parts[0]) error(peek(), "an empty subscript");
      auto item = expr(Expr::Kind::GetItem, at);
      item->children.push_back(std::move(value));
      item->children.push_back(std::move(parts[0]));
      return item;
    }
    auto slice = expr(Expr::Kind::Slice, at);
    slice->children.push_back(std::move(value));
    for (auto& part : parts) slice->children.push_back(std::move(part));
    return slice;
  }

  ExprPtr filters(ExprPtr value) {
    while (true) {
      if (is_op("|")) {
        auto filter = expr(Expr::Kind::Filter, next().at);
        filter->name = expect_name();
        filter->children.push_back(std::move(value));
        if (accept_op("(")) arguments(*filter);
        value = std::move(filter);
      } else if (is_name("is")) {
        auto test = expr(Expr::Kind::Test, next().at);
        test->negated = accept_name("not");
        test->name = expect_name();
        test->children.push_back(std::move(value));
        if (accept_op("(")) {
          arguments(*test);
        } else if (peek().type == Tok::String || peek().type == Tok::Integer || peek().type == Tok::Float ||
                   (peek().type == Tok::Name && !is_name("else") && !is_name("or") && !is_name("and") &&
                    !is_name("if") && !is_name("not") && !is_name("in") && !is_name("is"))) {
          test->children.push_back(postfix(primary()));
        }
        value = std::move(test);
      } else {
        return value;
      }
    }
  }

  std::vector<Token> tokens_;
  const std::string& name_;
  size_t index_ = 0;
  bool has_generation_ = false;
  int depth_ = 0;
};

}  // namespace

Parsed parse_template(const std::string& source, const std::string& name) {
  if (const auto bad = text::invalid_utf8_offset(source)) {
    throw TemplateError(name + ": invalid UTF-8 at byte " + std::to_string(*bad));
  }
  return Parser(Lexer(source, name).tokens(), name).parse();
}

}  // namespace qft::jinja
