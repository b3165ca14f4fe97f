// libFuzzer target for the aggregator server's trade parser (examples/aggregator_server/
// trade_parser.hpp). Every input is parsed as a JSON array and as NDJSON. Whatever the input:
// the parser (its scanner first) and its reference (Boost.JSON alone) give the same verdict,
// the same trades bit for bit and the same error; a refusal leaves the batch empty with a
// printable reason, and an acceptance holds only trades that pass tradeagg::validate and that
// come back unchanged when written out as JSON objects and parsed again (in both formats). A
// broken invariant aborts, which libFuzzer reports as a crash with the input that caused it.

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include <tradeagg/trade.hpp>

#include "trade_parser.hpp"

namespace {

// Small enough that inputs of a few kilobytes reach the limit.
constexpr std::size_t max_trades = 32;

[[noreturn]] void broken(const char* invariant, std::string_view detail = {}) {
    std::fprintf(stderr, "fuzz_trade_parser: broken invariant: %s %.*s\n", invariant,
                 static_cast<int>(detail.size()), detail.data());
    std::abort();
}

void append_double(std::string& out, double d) {
    // Shortest form that reads back as the same double.
    char buf[64];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);
    if (ec != std::errc{}) {
        broken("to_chars failed");
    }
    out.append(buf, end);
}

void append_trade(std::string& out, const tradeagg::trade_view& t) {
    out += "{\"token\":\"";
    for (const char c : t.token) {
        if (c == '"' || c == '\\') {
            out += '\\';
        }
        out += c;
    }
    out += "\",\"price\":";
    append_double(out, t.price);
    out += ",\"quantity\":";
    append_double(out, t.quantity);
    out += ",\"side\":\"";
    out += tradeagg::to_string(t.taker);
    out += "\",\"ts\":";
    out += std::to_string(t.ts_ms);
    out += ",\"id\":";
    out += std::to_string(t.id);
    out += '}';
}

void check_round_trip(const aggregator::trade_batch& batch, aggregator::body_format fmt) {
    std::string body = fmt == aggregator::body_format::json_array ? "[" : "";
    for (std::size_t i = 0; i < batch.size(); ++i) {
        if (fmt == aggregator::body_format::json_array && i > 0) {
            body += ',';
        }
        append_trade(body, batch[i]);
        if (fmt == aggregator::body_format::ndjson) {
            body += '\n';
        }
    }
    if (fmt == aggregator::body_format::json_array) {
        body += ']';
    }
    aggregator::trade_batch again;
    aggregator::parse_error err;
    if (!aggregator::parse_trades(body, fmt, again, err, max_trades)) {
        broken("a re-serialised batch is refused:", err.reason);
    }
    if (again.size() != batch.size()) {
        broken("a re-serialised batch has another size");
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
        if (again[i] != batch[i]) {
            broken("a re-serialised trade reads back different:", body);
        }
    }
}

/// The scanner-first parse (`batch`, `ok`, `err`) against Boost.JSON alone on the same input.
void check_reference(std::string_view input, aggregator::body_format fmt,
                     const aggregator::trade_batch& batch, bool ok,
                     const aggregator::parse_error& err) {
    aggregator::trade_batch reference;
    aggregator::parse_error reference_err;
    const bool reference_ok =
        aggregator::detail::parse_trades_with(input, fmt, reference, reference_err, max_trades,
                                              aggregator::detail::parse_path::json_only);
    if (ok != reference_ok) {
        broken("the scanner and Boost.JSON disagree on accepting:", input);
    }
    if (!ok) {
        if (err.index != reference_err.index || err.reason != reference_err.reason) {
            broken("the scanner and Boost.JSON word the error differently:", err.reason);
        }
        return;
    }
    if (batch.trades() != reference.trades()) {
        broken("the scanner and Boost.JSON read the trades differently:", input);
    }
}

void check(std::string_view input, aggregator::body_format fmt, aggregator::trade_batch& batch) {
    aggregator::parse_error err;
    const bool ok = aggregator::parse_trades(input, fmt, batch, err, max_trades);
    check_reference(input, fmt, batch, ok, err);
    if (!ok) {
        if (!batch.empty()) {
            broken("a refused body left trades in the batch");
        }
        if (err.reason.empty()) {
            broken("a refusal without a reason");
        }
        for (const char c : err.reason) {
            if (c < ' ' || c > '~') {
                broken("a reason with a byte outside printable ASCII");
            }
        }
        if (err.index > max_trades) {
            broken("an error index beyond max_trades");
        }
        return;
    }
    if (batch.size() > max_trades) {
        broken("more than max_trades trades accepted");
    }
    for (const tradeagg::trade_view& t : batch) {
        const tradeagg::reject_reason r = tradeagg::validate(t);
        if (r != tradeagg::reject_reason::none) {
            broken("an accepted trade fails tradeagg::validate:", tradeagg::to_string(r));
        }
    }
    check_round_trip(batch, aggregator::body_format::json_array);
    check_round_trip(batch, aggregator::body_format::ndjson);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    // One batch for both parses, as a server connection reuses it.
    aggregator::trade_batch batch;
    check(input, aggregator::body_format::json_array, batch);
    check(input, aggregator::body_format::ndjson, batch);
    return 0;
}
