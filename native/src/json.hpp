// A small JSON reader for the model metadata (RFC 8259 values; numbers parsed exactly like Python's
// float(), i.e. correctly rounded, independent of the C locale). Read-only tree, no writer.
#pragma once

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace limbseg::json {

struct ParseError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Value {
 public:
  enum class Kind { Null, Bool, Number, String, Array, Object };

  Kind kind = Kind::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Value> array;
  std::map<std::string, Value> object;

  bool is_null() const { return kind == Kind::Null; }
  // Typed access; throws ParseError naming `what` when the kind is wrong or the key is missing.
  const Value& at(const std::string& key) const;
  const Value* find(const std::string& key) const;  // nullptr when absent
  double as_number(const char* what) const;
  long long as_int(const char* what) const;          // a number with no fractional part
  const std::string& as_string(const char* what) const;
  const std::vector<Value>& as_array(const char* what) const;
};

// Parse a complete document; trailing non-space text is an error. Nesting deeper than 64 is refused.
Value parse(std::string_view text);

}  // namespace limbseg::json
