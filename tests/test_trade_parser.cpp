// The aggregator server's parser of `POST /trades` bodies: JSON arrays and NDJSON, every
// rejection with its trade index and reason, and the lifetime of the parsed batch.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <tradeagg/trade.hpp>

#include "trade_parser.hpp"

using aggregator::body_format;
using aggregator::parse_error;
using aggregator::parse_trades;
using aggregator::trade_batch;

namespace {

constexpr std::size_t no_limit = std::numeric_limits<std::size_t>::max();

/// A trade object: the default trade with some fields' JSON text replaced (or added, for a name
/// the default lacks) and some removed.
std::string trade_json(std::vector<std::pair<std::string, std::string>> changes = {},
                       std::vector<std::string> drop = {}) {
    std::vector<std::pair<std::string, std::string>> fields{
        {"token", "\"SOL\""}, {"price", "123.45"},     {"quantity", "2.5"},
        {"side", "\"buy\""},  {"ts", "1732867200123"}, {"id", "42"}};
    for (auto& [name, text] : changes) {
        bool found = false;
        for (auto& field : fields) {
            if (field.first == name) {
                field.second = text;
                found = true;
            }
        }
        if (!found) {
            fields.emplace_back(name, text);
        }
    }
    std::string out = "{";
    for (const auto& [name, text] : fields) {
        if (std::find(drop.begin(), drop.end(), name) != drop.end()) {
            continue;
        }
        if (out.size() > 1) {
            out += ',';
        }
        out += '"' + name + "\":" + text;
    }
    return out + "}";
}

std::string array_of(const std::vector<std::string>& objects) {
    std::string out = "[";
    for (const auto& o : objects) {
        out += (out.size() > 1 ? "," : "") + o;
    }
    return out + "]";
}

std::string lines_of(const std::vector<std::string>& objects) {
    std::string out;
    for (const auto& o : objects) {
        out += o + "\n";
    }
    return out;
}

std::string body_of(body_format fmt, const std::vector<std::string>& objects) {
    return fmt == body_format::json_array ? array_of(objects) : lines_of(objects);
}

/// Parses a body that must fail; returns the error, and checks the batch was left empty.
parse_error rejected(std::string_view body, body_format fmt, std::size_t max_trades = no_limit) {
    trade_batch batch;
    // A batch that held trades before: a failed parse must empty it.
    parse_error err;
    REQUIRE(parse_trades(array_of({trade_json()}), body_format::json_array, batch, err, 10));
    REQUIRE(batch.size() == 1);
    err = {};
    const bool ok = parse_trades(body, fmt, batch, err, max_trades);
    CHECK_FALSE(ok);
    CHECK(batch.empty());
    CHECK(batch.trades().empty());
    return err;
}

/// The single trade a one-object body parses to; fails the test if it does not parse.
tradeagg::trade_view only_trade(trade_batch& batch, const std::string& object) {
    parse_error err;
    const bool ok = parse_trades(array_of({object}), body_format::json_array, batch, err, 1);
    INFO("reason: " << err.reason);
    REQUIRE(ok);
    REQUIRE(batch.size() == 1);
    return batch[0];
}

/// Checks that `bad`, placed third among valid trades, is refused with `reason` and index 2 in
/// both formats.
void check_rejects(const std::string& bad, std::string_view reason) {
    for (const body_format fmt : {body_format::json_array, body_format::ndjson}) {
        const std::string body = body_of(fmt, {trade_json(), trade_json(), bad, trade_json()});
        INFO("body: " << body);
        const parse_error err = rejected(body, fmt);
        CHECK(err.index == 2);
        CHECK(err.reason == reason);
    }
}

} // namespace

TEST_CASE("trade parser: a JSON array of trades") {
    const std::string body =
        R"( [ {"token": "SOL", "price": 123.45, "quantity": 2.5, "side": "buy",)"
        R"( "ts": 1732867200123, "id": 42},)"
        "\n\t{\"id\": 7, \"ts\": 0, \"side\": \"sell\", \"quantity\": 3, \"price\": 0.0001,"
        " \"token\": \"So11111111111111111111111111111111111111112\"}\r\n] \n";
    trade_batch batch;
    parse_error err;
    REQUIRE(parse_trades(body, body_format::json_array, batch, err, 2));
    REQUIRE(batch.size() == 2);
    CHECK(batch[0] ==
          tradeagg::trade_view{"SOL", 123.45, 2.5, tradeagg::side::buy, 1'732'867'200'123, 42});
    CHECK(batch[1] == tradeagg::trade_view{"So11111111111111111111111111111111111111112", 0.0001,
                                           3.0, tradeagg::side::sell, 0, 7});
    std::size_t n = 0;
    for (const tradeagg::trade_view& t : batch) {
        CHECK(tradeagg::validate(t) == tradeagg::reject_reason::none);
        ++n;
    }
    CHECK(n == 2);
}

TEST_CASE("trade parser: an empty array is zero trades, an empty NDJSON body too") {
    for (const std::string_view body : {"[]", " [ ] ", "[\n]\n"}) {
        trade_batch batch;
        parse_error err;
        CHECK(parse_trades(body, body_format::json_array, batch, err, 0));
        CHECK(batch.empty());
    }
    for (const std::string_view body : {"", "\n", "\r\n\r\n", "  \n\t\n"}) {
        trade_batch batch;
        parse_error err;
        CHECK(parse_trades(body, body_format::ndjson, batch, err, 0));
        CHECK(batch.empty());
    }
    // An empty body is not a JSON array.
    const parse_error err = rejected("", body_format::json_array);
    CHECK(err.index == 0);
    CHECK(err.reason == "invalid JSON at byte 0: incomplete JSON");
}

TEST_CASE("trade parser: NDJSON with LF, CRLF, blank lines and no final newline") {
    const std::string a = trade_json({{"token", "\"A\""}, {"id", "1"}});
    const std::string b = trade_json({{"token", "\"BB\""}, {"id", "2"}});
    const std::string c = trade_json({{"token", "\"CCC\""}, {"id", "3"}});
    for (const std::string& body : {
             a + "\n" + b + "\n" + c + "\n",
             a + "\r\n" + b + "\r\n" + c + "\r\n",
             a + "\n" + b + "\n" + c,
             a + "\r\n" + b + "\r\n" + c,
             "\n\n" + a + "\n\r\n  \n" + b + "\n\t\n" + c + "\n\n",
             "  " + a + "  \n" + b + "\t\r\n" + c + " ",
         }) {
        INFO("body: " << body);
        trade_batch batch;
        parse_error err;
        REQUIRE(parse_trades(body, body_format::ndjson, batch, err, 3));
        REQUIRE(batch.size() == 3);
        CHECK(batch[0].token == "A");
        CHECK(batch[1].token == "BB");
        CHECK(batch[2].token == "CCC");
        CHECK(batch[0].id == 1);
        CHECK(batch[1].id == 2);
        CHECK(batch[2].id == 3);
    }
}

TEST_CASE("trade parser: sides as tradeagg::parse_side spells them") {
    trade_batch batch;
    for (const auto& [text, want] : std::vector<std::pair<std::string, tradeagg::side>>{
             {"\"buy\"", tradeagg::side::buy},
             {"\"BUY\"", tradeagg::side::buy},
             {"\"b\"", tradeagg::side::buy},
             {"\"B\"", tradeagg::side::buy},
             {"\"sell\"", tradeagg::side::sell},
             {"\"SELL\"", tradeagg::side::sell},
             {"\"s\"", tradeagg::side::sell},
             {"\"S\"", tradeagg::side::sell},
             {R"("s\u0065ll")", tradeagg::side::sell},
         }) {
        INFO("side: " << text);
        CHECK(only_trade(batch, trade_json({{"side", text}})).taker == want);
    }
}

TEST_CASE("trade parser: escapes in strings and keys are decoded") {
    trade_batch batch;
    CHECK(only_trade(batch, trade_json({{"token", R"("S\u004fL")"}})).token == "SOL");
    CHECK(only_trade(batch, trade_json({{"token", R"("a\/b")"}})).token == "a/b");
    CHECK(only_trade(batch, trade_json({{"token", R"("\u0041\u0042")"}})).token == "AB");
    // A key spelled with an escape is the same key.
    const std::string escaped_key =
        R"({"t\u006fken":"SOL","price":1,"quantity":1,"side":"buy","ts":1,"id":1})";
    CHECK(only_trade(batch, escaped_key).token == "SOL");
}

TEST_CASE("trade parser: numbers, big integers and ranges that are accepted") {
    trade_batch batch;
    // Integers are numbers too.
    CHECK(only_trade(batch, trade_json({{"price", "7"}})).price == 7.0);
    CHECK(only_trade(batch, trade_json({{"quantity", "18446744073709551615"}})).quantity ==
          18446744073709551615.0);
    // Beyond 64 bits Boost.JSON hands over a double: still a valid price.
    CHECK(only_trade(batch, trade_json({{"price", "123456789012345678901234567890"}})).price ==
          123456789012345678901234567890.0);
    CHECK(only_trade(batch, trade_json({{"price", "1.5e-300"}})).price == 1.5e-300);
    CHECK(only_trade(batch, trade_json({{"price", "2E3"}})).price == 2000.0);
    CHECK(only_trade(batch, trade_json({{"id", "0"}})).id == 0);
    CHECK(only_trade(batch, trade_json({{"id", "9223372036854775808"}})).id ==
          9'223'372'036'854'775'808ULL);
    CHECK(only_trade(batch, trade_json({{"id", "18446744073709551615"}})).id ==
          std::numeric_limits<std::uint64_t>::max());
    CHECK(only_trade(batch, trade_json({{"ts", "0"}})).ts_ms == 0);
    CHECK(only_trade(batch, trade_json({{"ts", "-0"}})).ts_ms == 0);
    CHECK(only_trade(batch, trade_json({{"ts", "253402300799999"}})).ts_ms ==
          tradeagg::max_timestamp_ms);
    // A whole number written as a double is an integer.
    CHECK(only_trade(batch, trade_json({{"ts", "1.732867200123e12"}})).ts_ms == 1'732'867'200'123);
    CHECK(only_trade(batch, trade_json({{"ts", "1732867200123.0"}})).ts_ms == 1'732'867'200'123);
}

TEST_CASE("trade parser: decimals are rounded to the nearest double") {
    // Shortest round-trip forms that Boost.JSON 1.81 alone parses one or two ulp off.
    trade_batch batch;
    CHECK(only_trade(batch, trade_json({{"price", "1.4114900000000001E4"}})).price ==
          1.4114900000000001E4);
    CHECK(only_trade(batch, trade_json({{"price", "2.0935246666666666E4"}})).price ==
          2.0935246666666666E4);
    CHECK(only_trade(batch, trade_json({{"quantity", "1.9736009999999998E5"}})).quantity ==
          1.9736009999999998E5);
    CHECK(only_trade(batch, trade_json({{"price", "0.30000000000000004"}})).price == 0.1 + 0.2);
}

TEST_CASE("trade parser: invalid prices and quantities") {
    check_rejects(trade_json({{"price", "0"}}), "price_not_positive");
    check_rejects(trade_json({{"price", "-0"}}), "price_not_positive");
    check_rejects(trade_json({{"price", "-0.0"}}), "price_not_positive");
    check_rejects(trade_json({{"price", "-1.5"}}), "price_not_positive");
    check_rejects(trade_json({{"price", "-18446744073709551616"}}), "price_not_positive");
    check_rejects(trade_json({{"price", "1e-400"}}), "price_not_positive");
    check_rejects(trade_json({{"price", "1e400"}}), "price_not_finite");
    check_rejects(trade_json({{"price", "-1e400"}}), "price_not_finite");
    check_rejects(trade_json({{"quantity", "0"}}), "quantity_not_positive");
    check_rejects(trade_json({{"quantity", "-2"}}), "quantity_not_positive");
    check_rejects(trade_json({{"quantity", "1E+400"}}), "quantity_not_finite");
    for (const std::string text :
         {"\"1.5\"", "\"NaN\"", "null", "true", "false", "[]", "{}", "[1]", R"({"v":1})"}) {
        check_rejects(trade_json({{"price", text}}), "field 'price' must be a number");
        check_rejects(trade_json({{"quantity", text}}), "field 'quantity' must be a number");
    }
}

TEST_CASE("trade parser: NaN-looking and other non-JSON numbers are syntax errors") {
    const auto check_syntax_error = [](const std::string& field, const std::string& text) {
        const std::string body = "[" + trade_json({{field, text}}) + "]";
        INFO("body: " << body);
        const parse_error err = rejected(body, body_format::json_array);
        CHECK(err.index == 0);
        CHECK(err.reason.starts_with("invalid JSON at byte "));
        CHECK(err.reason.ends_with(": syntax error"));
    };
    for (const std::string text :
         {"NaN", "nan", "Infinity", "-Infinity", "inf", "+1", ".5", "1.", "1e", "--1", "1x"}) {
        check_syntax_error("price", text);
        check_syntax_error("ts", text);
    }
    // A leading zero ends the number, so "01" is the number 0 and then garbage: 0 is a valid
    // ts, which lets the garbage be found; as a price, 0 is refused before.
    check_syntax_error("ts", "01");
    check_syntax_error("ts", "0x10");
    check_rejects(trade_json({{"price", "01"}}), "price_not_positive");
}

TEST_CASE("trade parser: invalid sides") {
    for (const std::string text : {"\"hold\"", "\"\"", "\"Buy\"", "\"buyy\"", "\"sells\"", "\"bu\"",
                                   "\"sell \"", "0", "1", "null", "true", "[]", "{}"}) {
        check_rejects(trade_json({{"side", text}}), "unknown_side");
    }
}

TEST_CASE("trade parser: invalid tokens") {
    check_rejects(trade_json({{"token", "\"\""}}), "empty_token");
    check_rejects(trade_json({{"token", '"' + std::string(65, 'A') + '"'}}), "token_too_long");
    check_rejects(trade_json({{"token", '"' + std::string(1000, 'A') + '"'}}), "token_too_long");
    // Escapes count as the bytes they decode to: 64 of them fit, 65 do not.
    std::string escaped;
    for (int i = 0; i < 64; ++i) {
        escaped += "\\u0041";
    }
    trade_batch batch;
    CHECK(only_trade(batch, trade_json({{"token", '"' + escaped + '"'}})).token ==
          std::string(64, 'A'));
    check_rejects(trade_json({{"token", '"' + escaped + "B\""}}), "token_too_long");
    for (const std::string text :
         {R"("SO L")", R"("SO{L")", R"("SO}L")", R"("{SOL}")", R"("S\u0001L")", R"("S\nL")",
          R"("S\tL")", R"("\u0000")", R"("S\u007fL")", R"("\u00e9")", "\"\xc3\xa9\""}) {
        check_rejects(trade_json({{"token", text}}), "invalid_token");
    }
    for (const std::string text : {"5", "null", "true", "[\"SOL\"]", R"({"SOL":1})"}) {
        check_rejects(trade_json({{"token", text}}), "field 'token' must be a string");
    }
}

TEST_CASE("trade parser: invalid timestamps") {
    for (const std::string text :
         {"-1", "253402300800000", "9223372036854775807", "9223372036854775808",
          "18446744073709551615", "18446744073709551616", "1e400", "-1e400", "-1.0", "1e15"}) {
        check_rejects(trade_json({{"ts", text}}), "timestamp_out_of_range");
    }
    for (const std::string text :
         {"1732867200123.5", "0.5", "1e-3", "\"1732867200123\"", "null", "true", "[]", "{}"}) {
        check_rejects(trade_json({{"ts", text}}), "field 'ts' must be an integer");
    }
}

TEST_CASE("trade parser: invalid ids") {
    for (const std::string text :
         {"-1", "-9223372036854775808", "1.5", "42.0", "1e3", "18446744073709551616", "1e400",
          "\"42\"", "null", "false", "[]", "{}"}) {
        check_rejects(trade_json({{"id", text}}), "field 'id' must be an unsigned 64-bit integer");
    }
}

TEST_CASE("trade parser: missing, duplicate and unknown fields") {
    for (const std::string name : {"token", "price", "quantity", "side", "ts", "id"}) {
        check_rejects(trade_json({}, {name}), "missing field '" + name + "'");
        // A duplicate with the same, valid value is refused too.
        const std::string value = name == "token" ? "\"SOL\"" : name == "side" ? "\"buy\"" : "1";
        std::string twice = trade_json();
        twice.insert(1, '"' + name + "\":" + value + ",");
        check_rejects(twice, "duplicate field '" + name + "'");
    }
    // The first missing field in the order token, price, quantity, side, ts, id is named.
    check_rejects("{}", "missing field 'token'");
    check_rejects(trade_json({}, {"quantity", "id"}), "missing field 'quantity'");
    check_rejects(trade_json({{"qty", "1"}}), "unknown field 'qty'");
    check_rejects(trade_json({{"Price", "1"}}), "unknown field 'Price'");
    check_rejects(trade_json({{"", "1"}}), "unknown field ''");
    check_rejects(trade_json({{"a\\u0001'b", "1"}}), "unknown field 'a??b'");
    check_rejects(trade_json({{std::string(40, 'k'), "1"}}),
                  "unknown field '" + std::string(32, 'k') + "...'");
}

TEST_CASE("trade parser: the top level must be an array of objects, or objects per line") {
    for (const std::string_view body :
         {R"({"token":"SOL"})", "5", "\"trades\"", "null", "true", "[[]]", "[5]", "[null]"}) {
        INFO("body: " << body);
        const parse_error err = rejected(body, body_format::json_array);
        CHECK(err.index == 0);
        CHECK(err.reason == (body.starts_with('[') ? "expected a trade object"
                                                   : "expected a JSON array of trade objects"));
    }
    const std::string good = trade_json();
    {
        const parse_error err =
            rejected("[" + good + "," + good + ",\"x\"]", body_format::json_array);
        CHECK(err.index == 2);
        CHECK(err.reason == "expected a trade object");
    }
    for (const std::string& bad :
         std::vector<std::string>{"[" + good + "]", "5", "\"x\"", "null", "[]"}) {
        const parse_error err = rejected(good + "\n" + bad + "\n", body_format::ndjson);
        CHECK(err.index == 1);
        CHECK(err.reason == "expected a trade object");
    }
}

TEST_CASE("trade parser: deep nesting is refused at its first level") {
    const std::string deep_arrays = std::string(10'000, '[') + std::string(10'000, ']');
    {
        const parse_error err = rejected(deep_arrays, body_format::json_array);
        CHECK(err.index == 0);
        CHECK(err.reason == "expected a trade object");
    }
    {
        const parse_error err = rejected(deep_arrays, body_format::ndjson);
        CHECK(err.index == 0);
        CHECK(err.reason == "expected a trade object");
    }
    std::string deep_objects;
    for (int i = 0; i < 10'000; ++i) {
        deep_objects += "{\"a\":";
    }
    deep_objects += "1" + std::string(10'000, '}');
    check_rejects(trade_json({{"price", deep_arrays}}), "field 'price' must be a number");
    check_rejects(trade_json({{"token", deep_objects}}), "field 'token' must be a string");
    {
        const parse_error err = rejected("[" + deep_objects + "]", body_format::json_array);
        CHECK(err.reason == "unknown field 'a'");
    }
}

TEST_CASE("trade parser: syntax errors name the byte offset and the trade being parsed") {
    const std::string good = trade_json();
    SUBCASE("a stray comma") {
        const std::string body = "[" + good + ",{\"token\":\"SOL\",}]";
        const parse_error err = rejected(body, body_format::json_array);
        CHECK(err.index == 1);
        CHECK(err.reason ==
              "invalid JSON at byte " + std::to_string(body.find(",}") + 1) + ": syntax error");
    }
    SUBCASE("a trailing comma in the array") {
        const std::string body = "[" + good + "," + good + ",]";
        const parse_error err = rejected(body, body_format::json_array);
        CHECK(err.index == 2);
        CHECK(err.reason ==
              "invalid JSON at byte " + std::to_string(body.size() - 1) + ": syntax error");
    }
    SUBCASE("garbage after the array") {
        const std::string body = "[" + good + "]  x";
        const parse_error err = rejected(body, body_format::json_array);
        CHECK(err.index == 1);
        CHECK(err.reason == "invalid JSON at byte " + std::to_string(body.size() - 1) +
                                ": extra data after the array");
        const parse_error twice = rejected("[][]", body_format::json_array);
        CHECK(twice.reason == "invalid JSON at byte 2: extra data after the array");
    }
    SUBCASE("two objects on one NDJSON line") {
        const std::string body = good + "\n" + good + " " + good + "\n";
        const parse_error err = rejected(body, body_format::ndjson);
        CHECK(err.index == 2);
        CHECK(err.reason == "invalid JSON at byte " + std::to_string(2 * good.size() + 2) +
                                ": extra data after the trade object");
    }
    SUBCASE("an object spread over two NDJSON lines") {
        const std::string body = good + "\r\n{\"token\":\"SOL\",\r\n\"price\":1}\r\n";
        const parse_error err = rejected(body, body_format::ndjson);
        CHECK(err.index == 1);
        // The second line ends at its LF, the offset reported as incomplete.
        CHECK(err.reason == "invalid JSON at byte " + std::to_string(body.find(",\r\n") + 2) +
                                ": incomplete JSON");
    }
    SUBCASE("an offset in a later NDJSON line counts from the body's start") {
        const std::string body = good + "\n\n" + good + "\n{\"token\" \"SOL\"}\n";
        const parse_error err = rejected(body, body_format::ndjson);
        CHECK(err.index == 2);
        CHECK(err.reason == "invalid JSON at byte " + std::to_string(body.find(" \"SOL\"}") + 1) +
                                ": syntax error");
    }
    SUBCASE("invalid UTF-8 in a string") {
        const std::string body = "[" + good + ",{\"token\":\"S\xff" + "L\"}]";
        const parse_error err = rejected(body, body_format::json_array);
        CHECK(err.index == 1);
        CHECK(err.reason ==
              "invalid JSON at byte " + std::to_string(body.find('\xff')) + ": syntax error");
        const parse_error overlong = rejected("{\"token\":\"\xc0\xaf\"}", body_format::ndjson);
        CHECK(overlong.reason.ends_with(": syntax error"));
    }
    SUBCASE("a raw control character in a string") {
        const std::string body = "[{\"token\":\"S\tL\"}]";
        const parse_error err = rejected(body, body_format::json_array);
        CHECK(err.reason == "invalid JSON at byte 12: syntax error");
    }
    SUBCASE("comments and single quotes are not JSON") {
        for (const std::string body : {"[/* c */]", "[] // c", "[{'token':'SOL'}]"}) {
            const parse_error err = rejected(body, body_format::json_array);
            CHECK(err.reason.starts_with("invalid JSON at byte "));
        }
    }
}

TEST_CASE("trade parser: truncated input") {
    const std::string good = trade_json();
    const std::string body = array_of({good, good, good});
    // Every proper prefix fails; the index counts the trades completed before the cut.
    for (std::size_t cut = 0; cut < body.size(); ++cut) {
        const std::string prefix = body.substr(0, cut);
        CAPTURE(prefix);
        const parse_error err = rejected(prefix, body_format::json_array);
        // Trade k ends (its '}' consumed) at byte (k + 1) * (good.size() + 1).
        CHECK(err.index == std::min<std::size_t>(cut / (good.size() + 1), 3));
        // "incomplete JSON", or "syntax error" for a number cut after its '.' or 'e'.
        CHECK(err.reason.starts_with("invalid JSON at byte " + std::to_string(cut) + ": "));
    }
    const std::string lines = lines_of({good, good});
    for (std::size_t cut = good.size() + 2; cut < lines.size() - 1; ++cut) {
        const std::string prefix = lines.substr(0, cut);
        CAPTURE(prefix);
        const parse_error err = rejected(prefix, body_format::ndjson);
        CHECK(err.index == 1);
        CHECK(err.reason.starts_with("invalid JSON at byte " + std::to_string(cut) + ": "));
    }
}

TEST_CASE("trade parser: max_trades") {
    const std::string good = trade_json();
    for (const body_format fmt : {body_format::json_array, body_format::ndjson}) {
        trade_batch batch;
        parse_error err;
        CHECK(parse_trades(body_of(fmt, {good, good, good}), fmt, batch, err, 3));
        CHECK(batch.size() == 3);
        const parse_error over = rejected(body_of(fmt, {good, good, good, good}), fmt, 3);
        CHECK(over.index == 3);
        CHECK(over.reason == "too many trades (max 3)");
        const parse_error none = rejected(body_of(fmt, {good}), fmt, 0);
        CHECK(none.index == 0);
        CHECK(none.reason == "too many trades (max 0)");
    }
    // The limit is checked as a trade begins, before its (here invalid) content.
    const parse_error err =
        rejected(body_of(body_format::ndjson, {good, "{\"x\":1}"}), body_format::ndjson, 1);
    CHECK(err.index == 1);
    CHECK(err.reason == "too many trades (max 1)");
}

TEST_CASE("trade parser: a batch of 10k trades in both formats") {
    constexpr std::size_t n = 10'000;
    std::vector<std::string> objects;
    std::vector<std::string> tokens;
    objects.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
        // Tokens of 1 to 64 bytes, so that their offsets in the batch's storage vary.
        tokens.push_back("T" + std::to_string(i) + std::string(i % 60, 'x'));
        objects.push_back(trade_json({{"token", '"' + tokens.back() + '"'},
                                      {"price", std::to_string(i + 1) + ".25"},
                                      {"quantity", std::to_string(i % 7 + 1)},
                                      {"side", i % 3 == 0 ? "\"sell\"" : "\"buy\""},
                                      {"ts", std::to_string(1'732'867'200'000 + i)},
                                      {"id", std::to_string(i)}}));
    }
    for (const body_format fmt : {body_format::json_array, body_format::ndjson}) {
        trade_batch batch;
        parse_error err;
        {
            // The body is gone before the trades are read: the tokens must not point into it.
            std::string body = body_of(fmt, objects);
            REQUIRE(parse_trades(body, fmt, batch, err, n));
            body.assign(body.size(), '#');
        }
        REQUIRE(batch.size() == n);
        std::size_t mismatches = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const tradeagg::trade_view want{
                tokens[i],
                static_cast<double>(i + 1) + 0.25,
                static_cast<double>(i % 7 + 1),
                i % 3 == 0 ? tradeagg::side::sell : tradeagg::side::buy,
                static_cast<tradeagg::timestamp_ms>(1'732'867'200'000 + i),
                i};
            if (batch[i] != want || tradeagg::validate(batch[i]) != tradeagg::reject_reason::none) {
                ++mismatches;
            }
        }
        CHECK(mismatches == 0);
        const parse_error over = rejected(body_of(fmt, objects), fmt, n - 1);
        CHECK(over.index == n - 1);
    }
}

TEST_CASE("trade parser: a reused batch keeps its capacity and its views stay valid") {
    trade_batch batch;
    parse_error err;
    std::vector<std::string> big;
    for (int i = 0; i < 1000; ++i) {
        big.push_back(trade_json({{"token", "\"BIG" + std::to_string(i) + "\""}}));
    }
    REQUIRE(parse_trades(array_of(big), body_format::json_array, batch, err, 1000));
    const std::size_t capacity = batch.trades().capacity();
    CHECK(capacity >= 1000);

    batch.clear();
    CHECK(batch.empty());
    CHECK(batch.trades().capacity() == capacity);

    // A smaller batch into the same storage: views point at the new tokens.
    REQUIRE(parse_trades(
        lines_of({trade_json({{"token", "\"ONE\""}}), trade_json({{"token", "\"TWO\""}})}),
        body_format::ndjson, batch, err, 10));
    REQUIRE(batch.size() == 2);
    CHECK(batch[0].token == "ONE");
    CHECK(batch[1].token == "TWO");
    CHECK(batch.trades().capacity() == capacity);

    // A failed parse empties the batch but keeps the capacity.
    CHECK_FALSE(parse_trades("[{]", body_format::json_array, batch, err, 10));
    CHECK(batch.empty());
    CHECK(batch.trades().capacity() == capacity);

    // The tokens grow their buffer while parsing (one 64-byte token per trade, from a small
    // start): the views are built afterwards, so none points into a freed buffer.
    std::vector<std::string> long_tokens;
    for (int i = 0; i < 3000; ++i) {
        std::string token = std::to_string(i);
        token += std::string(64 - token.size(), 'L');
        long_tokens.push_back(trade_json({{"token", '"' + token + '"'}}));
    }
    trade_batch fresh;
    REQUIRE(parse_trades(array_of(long_tokens), body_format::json_array, fresh, err, 3000));
    std::size_t wrong = 0;
    for (int i = 0; i < 3000; ++i) {
        const std::string_view token = fresh[static_cast<std::size_t>(i)].token;
        if (token.size() != 64 || !token.starts_with(std::to_string(i) + "L")) {
            ++wrong;
        }
    }
    CHECK(wrong == 0);
}

TEST_CASE("trade parser: a moved batch keeps its views, even for short tokens") {
    trade_batch first;
    parse_error err;
    REQUIRE(parse_trades(array_of({trade_json({{"token", "\"AB\""}})}), body_format::json_array,
                         first, err, 1));
    trade_batch second = std::move(first);
    // Reusing the moved-from batch must not touch the storage the moved trades point into.
    REQUIRE(parse_trades(array_of({trade_json({{"token", "\"ZZ\""}})}), body_format::json_array,
                         first, err, 1)); // NOLINT(bugprone-use-after-move): reuse is allowed
    REQUIRE(second.size() == 1);
    CHECK(second[0].token == "AB");
    CHECK(first[0].token == "ZZ");

    trade_batch third;
    third = std::move(second);
    REQUIRE(third.size() == 1);
    CHECK(third[0].token == "AB");
}
