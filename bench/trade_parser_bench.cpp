// The aggregator server's parser of POST /trades bodies (examples/aggregator_server/
// trade_parser.hpp), on the bodies the load generator sends: 1,000 trades a request over
// 10,000 Zipf-popular tokens, as NDJSON and as a JSON array. Each body is parsed by the
// server's path (the scanner first, Boost.JSON for what it gives up on) and by the reference
// path (Boost.JSON alone), in the same process; bench/run prints the ratio. Before it measures,
// it checks that both paths read every body, and alike (it throws, and exits non-zero, if not).
//
//   build/release/bench/tradeagg_parser_bench --benchmark_format=json

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <benchmark/benchmark.h>

#include "../examples/loadgen/request_pool.hpp"
#include "trade_parser.hpp"

namespace {

using aggregator::body_format;
using aggregator::detail::parse_path;

constexpr std::size_t trades_per_body = 1'000;
constexpr std::size_t bodies = 64;

/// The load generator's request bodies in one format, stamped as it stamps them.
std::vector<std::string> loadgen_bodies(loadgen::body_format format) {
    synthetic::stream_config cfg;
    cfg.trades = trades_per_body * bodies;
    cfg.tokens = 10'000;
    cfg.zipf_s = 1.0;
    cfg.seed = 42;
    const synthetic::stream market(cfg);
    // One trade in a hundred up to 2 s late, as the load generator's defaults.
    std::vector<std::uint32_t> delays(cfg.trades, 0);
    for (std::size_t k = 0; k < delays.size(); k += 100) {
        delays[k] = static_cast<std::uint32_t>(1 + (k * 7919) % 2'000);
    }
    loadgen::request_pool pool(market, 0, cfg.trades, trades_per_body, format, delays);
    std::vector<std::string> out;
    const std::int64_t now = 1'796'601'600'000; // 2026-12-07
    for (std::size_t b = 0; b < pool.batches(); ++b) {
        const auto body = pool.stamp(b, now, 1);
        out.emplace_back(body.data(), body.size());
    }
    // Both paths must read every body, and read it alike, or the comparison means nothing.
    const body_format fmt =
        format == loadgen::body_format::ndjson ? body_format::ndjson : body_format::json_array;
    for (const std::string& body : out) {
        aggregator::trade_batch fast;
        aggregator::trade_batch reference;
        aggregator::parse_error err;
        if (!aggregator::detail::parse_trades_with(body, fmt, fast, err, trades_per_body,
                                                   parse_path::scanner_first) ||
            !aggregator::detail::parse_trades_with(body, fmt, reference, err, trades_per_body,
                                                   parse_path::json_only)) {
            throw std::runtime_error("a load generator body was refused: " + err.reason);
        }
        if (fast.trades() != reference.trades()) {
            throw std::runtime_error("the two paths read a load generator trade differently");
        }
    }
    return out;
}

const std::vector<std::string>& bodies_in(body_format fmt) {
    static const std::vector<std::string> ndjson = loadgen_bodies(loadgen::body_format::ndjson);
    static const std::vector<std::string> json = loadgen_bodies(loadgen::body_format::json);
    return fmt == body_format::ndjson ? ndjson : json;
}

void BM_parse(benchmark::State& state, body_format fmt, parse_path path) {
    const std::vector<std::string>& input = bodies_in(fmt);
    aggregator::trade_batch batch;
    aggregator::parse_error err;
    std::size_t next = 0;
    std::int64_t trades = 0;
    std::int64_t bytes = 0;
    for (auto _ : state) {
        const std::string& body = input[next];
        next = (next + 1) % input.size();
        (void)aggregator::detail::parse_trades_with(body, fmt, batch, err, trades_per_body, path);
        benchmark::DoNotOptimize(batch.trades().data());
        trades += static_cast<std::int64_t>(batch.size());
        bytes += static_cast<std::int64_t>(body.size());
    }
    state.SetItemsProcessed(trades);
    state.SetBytesProcessed(bytes);
}

} // namespace

BENCHMARK_CAPTURE(BM_parse, ndjson_json_only, body_format::ndjson, parse_path::json_only);
BENCHMARK_CAPTURE(BM_parse, ndjson_scanner_first, body_format::ndjson, parse_path::scanner_first);
BENCHMARK_CAPTURE(BM_parse, json_array_json_only, body_format::json_array, parse_path::json_only);
BENCHMARK_CAPTURE(BM_parse, json_array_scanner_first, body_format::json_array,
                  parse_path::scanner_first);

BENCHMARK_MAIN();
