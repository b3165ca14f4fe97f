// The trade parser's fast path (examples/aggregator_server/trade_scanner.hpp) against its
// reference, Boost.JSON alone: on the same inputs, the same verdict, the same trades and the
// same error (index and reason). Hand-written edge cases first, then a deterministic stream of
// mutated bodies; fuzz/fuzz_trade_parser.cpp runs the same comparison on what libFuzzer finds.

#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <doctest/doctest.h>

#include <tradeagg/trade.hpp>

#include "trade_parser.hpp"

using aggregator::body_format;
using aggregator::parse_error;
using aggregator::trade_batch;
using aggregator::detail::parse_path;
using aggregator::detail::parse_trades_with;
using aggregator::detail::trade_scanner;

namespace {

constexpr std::size_t max_trades = 8;

/// Parses `body` both ways and checks they agree in everything.
void agree(std::string_view body, body_format fmt) {
    trade_batch fast;
    trade_batch reference;
    parse_error fast_err;
    parse_error reference_err;
    const bool fast_ok =
        parse_trades_with(body, fmt, fast, fast_err, max_trades, parse_path::scanner_first);
    const bool reference_ok =
        parse_trades_with(body, fmt, reference, reference_err, max_trades, parse_path::json_only);
    INFO("body: " << std::string(body));
    INFO("format: " << (fmt == body_format::json_array ? "json array" : "ndjson"));
    REQUIRE(fast_ok == reference_ok);
    if (!fast_ok) {
        CHECK(fast_err.index == reference_err.index);
        CHECK(fast_err.reason == reference_err.reason);
        CHECK(fast.empty());
        return;
    }
    // Accepted prices and quantities are positive and finite: equal doubles have equal bits.
    CHECK(fast.trades() == reference.trades());
}

/// The scanner's own verdict on one line: true if it read it (and then the reference must
/// read it to the same trade).
bool scanned(std::string_view line) {
    trade_batch batch;
    const bool ok = trade_scanner::read_line(line, batch, max_trades);
    if (ok) {
        trade_scanner::finish(batch);
        trade_batch reference;
        parse_error err;
        INFO("line: " << std::string(line));
        REQUIRE(parse_trades_with(line, body_format::ndjson, reference, err, max_trades,
                                  parse_path::json_only));
        REQUIRE(reference.size() == 1);
        CHECK(batch[0] == reference[0]);
    } else {
        CHECK(batch.empty());
    }
    return ok;
}

std::string object(std::string_view token, std::string_view price, std::string_view quantity,
                   std::string_view side, std::string_view ts, std::string_view id) {
    std::string o = "{\"token\":";
    o.append(token).append(",\"price\":").append(price).append(",\"quantity\":");
    o.append(quantity).append(",\"side\":").append(side).append(",\"ts\":").append(ts);
    return o.append(",\"id\":").append(id).append("}");
}

const std::string plain = object("\"SOL\"", "123.45", "2.5", "\"buy\"", "1732867200123", "42");

} // namespace

TEST_CASE("trade scanner: reads plainly written trades itself, as Boost.JSON reads them") {
    CHECK(scanned(plain));
    CHECK(scanned("  " + plain + " \r"));
    CHECK(
        scanned("{ \"id\" : 7 ,\t\"ts\":0, \"side\":\"S\", \"quantity\":1e-3, \"price\":"
                "197360.10000000001, \"token\":\"So11111111111111111111111111111111111111112\"}"));
    CHECK(scanned(object("\"A\"", "1", "18446744073709551616", "\"sell\"", "253402300799999",
                         "18446744073709551615")));
    CHECK(scanned(object("\"A\"", "5E-324", "1.7976931348623157e308", "\"b\"", "1", "0")));
    trade_batch batch;
    CHECK(trade_scanner::read_array("[" + plain + ",\n" + plain + "]", batch, max_trades));
    CHECK(batch.size() == 2);
}

TEST_CASE("trade scanner: gives up on everything else, which Boost.JSON then reads or refuses") {
    // Valid, but not plain: escapes, a number Boost.JSON reads differently, non-ASCII.
    CHECK_FALSE(scanned(object("\"S\\u004fL\"", "1", "1", "\"buy\"", "1", "1")));
    CHECK_FALSE(scanned("{\"t\\u006fken\":\"SOL\",\"price\":1,\"quantity\":1,\"side\":\"buy\","
                        "\"ts\":1,\"id\":1}"));
    CHECK_FALSE(scanned(object("\"A\"", "1", "1", "\"buy\"", "1e3", "1")));
    CHECK_FALSE(scanned(object("\"A\"", "1", "1", "\"buy\"", "1.0", "1")));
    CHECK_FALSE(scanned(object("\"A\"", "1E400", "1", "\"buy\"", "1", "1")));
    CHECK_FALSE(scanned(object("\"A\"", "1e-400", "1", "\"buy\"", "1", "1")));
    // Invalid: every refusal is Boost.JSON's.
    for (const std::string& bad : std::vector<std::string>{
             object("\"A\"", "0", "1", "\"buy\"", "1", "1"),
             object("\"A\"", "-0", "1", "\"buy\"", "1", "1"),
             object("\"A\"", "-1", "1", "\"buy\"", "1", "1"),
             object("\"A\"", "01", "1", "\"buy\"", "1", "1"),
             object("\"A\"", "1.", "1", "\"buy\"", "1", "1"),
             object("\"A\"", ".5", "1", "\"buy\"", "1", "1"),
             object("\"A\"", "1e", "1", "\"buy\"", "1", "1"),
             object("\"A\"", "+1", "1", "\"buy\"", "1", "1"),
             object("\"A\"", "NaN", "1", "\"buy\"", "1", "1"),
             object("\"A\"", "\"1\"", "1", "\"buy\"", "1", "1"),
             object("\"A\"", "1", "1", "\"hold\"", "1", "1"),
             object("\"A\"", "1", "1", "\"buy \"", "1", "1"),
             object("\"A\"", "1", "1", "\"buy\"", "-1", "1"),
             object("\"A\"", "1", "1", "\"buy\"", "253402300800000", "1"),
             object("\"A\"", "1", "1", "\"buy\"", "1", "-1"),
             object("\"A\"", "1", "1", "\"buy\"", "1", "18446744073709551616"),
             object("\"A\"", "1", "1", "\"buy\"", "1", "1.5"),
             object("\"\"", "1", "1", "\"buy\"", "1", "1"),
             object("\"A B\"", "1", "1", "\"buy\"", "1", "1"),
             object("\"{A}\"", "1", "1", "\"buy\"", "1", "1"),
             object("\"" + std::string(65, 'A') + "\"", "1", "1", "\"buy\"", "1", "1"),
             object("\"A\"", "1", "1", "\"buy\"", "1", "1 2"),
             object("\"A\"", "true", "1", "null", "[1]", "{}"),
             plain + ",",
             plain + " x",
             "{" + plain.substr(1, plain.size() - 2) + ",}",
             "{" + plain.substr(1, plain.size() - 2) + ",\"id\":1}",
             "{" + plain.substr(1, plain.size() - 2) + ",\"qty\":1}",
             "{\"token\":\"A\"}",
             "{}",
             "[]",
         }) {
        CHECK_FALSE(scanned(bad));
        agree(bad, body_format::ndjson);
        agree("[" + bad + "]", body_format::json_array);
        agree(plain + "\n" + bad + "\n" + plain, body_format::ndjson);
    }
}

TEST_CASE("trade scanner: bodies in both formats agree with Boost.JSON, limit and blanks too") {
    std::string lines;
    std::string array = "[";
    for (int i = 0; i < 8; ++i) {
        lines += plain + (i % 2 == 0 ? "\r\n" : "\n\n  \n");
        array += (i > 0 ? " , " : "") + plain;
    }
    agree(lines, body_format::ndjson);
    agree(array + "]", body_format::json_array);
    agree(lines + plain, body_format::ndjson);                 // one over max_trades
    agree(array + "," + plain + "]", body_format::json_array); // one over max_trades
    agree("", body_format::ndjson);
    agree("  [ ]  ", body_format::json_array);
    agree("[" + plain + "] [", body_format::json_array);
    agree(plain + plain, body_format::ndjson);
}

TEST_CASE("trade scanner: 100,000 mutated bodies read alike by both paths") {
    // Mutations of plain bodies: bytes replaced, inserted or deleted, drawn from what JSON
    // and the fields are made of, so that most stay near the plain shape.
    const std::string alphabet = "{}[],:\" \t\r\n\\-+.eE0123456789truefalsnl"
                                 "tokenpricequantitysidetsidbuysellSOL\x01\x7f\xc3\xa9";
    std::mt19937_64 rng(20261207);
    std::uint64_t scanned_whole = 0;
    for (int round = 0; round < 100'000; ++round) {
        const bool array = (round & 1) != 0;
        std::string body = array ? "[" + plain + "," + plain + "]" : plain + "\n" + plain + "\n";
        const int edits = 1 + static_cast<int>(rng() % 3);
        for (int e = 0; e < edits; ++e) {
            const std::size_t at = rng() % (body.size() + 1);
            const char c = alphabet[rng() % alphabet.size()];
            switch (rng() % 3) {
            case 0:
                if (at < body.size()) {
                    body[at] = c;
                }
                break;
            case 1:
                body.insert(body.begin() + static_cast<std::ptrdiff_t>(at), c);
                break;
            default:
                if (at < body.size()) {
                    body.erase(at, 1);
                }
                break;
            }
        }
        const body_format fmt = array ? body_format::json_array : body_format::ndjson;
        agree(body, fmt);
        trade_batch batch;
        if (array && trade_scanner::read_array(body, batch, max_trades)) {
            ++scanned_whole;
        }
    }
    // Edits that keep a body plain (a digit for a digit, a space added) leave it to the
    // scanner: the comparison covered the scanner's own acceptances, not only its give-ups.
    CHECK(scanned_whole > 1'000);
}
