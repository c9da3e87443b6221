// Unit checks of the library's internals that the C interface cannot reach directly: the JSON
// reader and the numerics edge cases. Links the sources, not the shared library.
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include "json.hpp"
#include "numerics.hpp"

static int failures = 0;
#define CHECK(cond)                                                   \
  do {                                                                \
    bool ok_ = (cond);                                                \
    std::printf("%s %s\n", ok_ ? "ok  " : "FAIL", #cond);             \
    if (!ok_) ++failures;                                             \
  } while (0)

static bool parse_fails(const std::string& text) {
  try {
    limbseg::json::parse(text);
  } catch (const limbseg::json::ParseError&) {
    return true;
  }
  return false;
}

int main() {
  using limbseg::json::parse;
  auto v = parse(R"( {"a": [1, -2.5e-3, 0.5, 99.5], "s": "x\"\\\/\u00e9\ud83d\ude00", "t": true, "n": null, "o": {}} )");
  const auto& a = v.at("a").as_array("a");
  CHECK(a.size() == 4 && a[0].as_int("a") == 1 && a[1].number == -2.5e-3 && a[2].number == 0.5 && a[3].number == 99.5);
  CHECK(v.at("s").string == "x\"\\/\xc3\xa9\xf0\x9f\x98\x80");
  CHECK(v.at("t").boolean && v.at("n").is_null() && v.find("missing") == nullptr);
  CHECK(std::isnan(parse("NaN").number) && parse("-Infinity").number < 0 && std::isinf(parse("Infinity").number));
  CHECK(parse("0.1").number == 0.1 && parse("1e308").number == 1e308);  // correctly rounded
  CHECK(parse_fails("{\"a\": 1,}") && parse_fails("[1 2]") && parse_fails("\"open") && parse_fails("01x") &&
        parse_fails("{} extra") && parse_fails(std::string(100, '[')) && parse_fails("1e999"));
  CHECK(parse_fails("{\"a\": 1.5}") == false && [] {
    try {
      parse("{\"a\": 1.5}").at("a").as_int("a");
    } catch (const limbseg::json::ParseError&) {
      return true;
    }
    return false;
  }());

  using limbseg::normalise;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  CHECK(normalise(nan, 0.f, 10.f) == 0.f && normalise(inf, 0.f, 10.f) == 1.f && normalise(-inf, 0.f, 10.f) == 0.f);
  CHECK(normalise(5.f, 0.f, 10.f) == 0.5f && normalise(-3.f, 0.f, 10.f) == 0.f && normalise(30.f, 0.f, 10.f) == 1.f);

  const float vals[] = {nan, 3.f, inf, 1.f, 2.f, -inf, 4.f};
  auto w = limbseg::intensity_window_float32(vals, 7, 0.0, 100.0);
  CHECK(w.lo == 1.f && w.hi == 4.f && !w.constant());
  const float none[] = {nan, inf};
  CHECK(limbseg::intensity_window_float32(none, 2, 0.5, 99.5).constant());
  const int16_t ints[] = {-32768, 5, 5, 32767};
  auto wi = limbseg::intensity_window_int16(ints, 4, 0.0, 100.0);
  CHECK(wi.lo == -32768.f && wi.hi == 32767.f);
  // nearest rank: n = 4, q = 50 -> floor(0.5 * 3 + 0.5) = 2 -> third smallest
  CHECK(limbseg::intensity_window_int16(ints, 4, 50.0, 50.0).lo == 5.f);

  limbseg::AxisTable one(1, 5);  // a single sample spreads everywhere with weight 0
  CHECK(one.i0[0] == 0 && one.i1[4] == 0 && one.w[2] == 0.f);
  limbseg::AxisTable half(4, 2);  // src = (d + 0.5) * 2 - 0.5 = 0.5, 2.5
  CHECK(half.i0[0] == 0 && half.i1[0] == 1 && half.w[0] == 0.5f && half.i0[1] == 2 && half.w[1] == 0.5f);
  std::printf("%d failure(s)\n", failures);
  return failures ? 1 : 0;
}
