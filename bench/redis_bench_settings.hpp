#pragma once
// What a run of tradeagg_redis_bench is set to: the two numbers main reads from the environment
// (TRADEAGG_REDIS_BENCH_SECONDS, TRADEAGG_STREAM_BENCH_TRADES) and the fixed settings it reports
// beside them in the benchmark context. Every benchmark group reads them from here.

#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "bench_stream.hpp"

namespace bench {

/// Commands in flight on a baseline's connection.
inline constexpr std::size_t pipeline_depth = 100;

inline constexpr std::string_view key_prefix = "tradeagg";

/// Wall time of one iteration, from TRADEAGG_REDIS_BENCH_SECONDS; set in main.
inline double run_seconds = 2.0;

/// Reads TRADEAGG_REDIS_BENCH_SECONDS: a number of seconds in (0, 3600]. Empty if malformed.
inline std::optional<double> seconds_from_env() {
    const char* text = std::getenv("TRADEAGG_REDIS_BENCH_SECONDS");
    if (text == nullptr || *text == '\0') {
        return 2.0;
    }
    const std::string_view v(text);
    double value = 0.0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), value);
    if (ec != std::errc{} || end != v.data() + v.size() || !(value > 0.0) || value > 3'600.0) {
        return std::nullopt;
    }
    return value;
}

// ---------------------------------------------------------------------------------------------
// The stream benchmarks (BM_stream_*).

inline constexpr std::size_t stream_partitions = 4;
/// The consumer's default. A consumer renews its leases between rounds (and between a
/// rebuild's chunks), not during one: a TTL not much longer than a round (about half a second
/// here with the larger rounds, more on a loaded machine) would lose leases mid-run. A long TTL
/// only delays the split between two instances (by up to two thirds of it), which happens
/// before the clock starts.
inline constexpr std::chrono::milliseconds stream_lease_ttl{5'000};
/// Entries read per partition per round, by the consumers (STREAM_READ_COUNT's default) and
/// the baseline.
inline constexpr std::size_t stream_read_count = 4'096;
/// Trades per entry of the packed-entry runs (`/entry_trades:<n>`).
inline constexpr std::size_t stream_packed_entry_trades = 100;

/// "BM_stream_read_baseline", and "/entry_trades:<n>" for packed entries.
inline std::string stream_read_baseline_name(std::size_t entry_trades) {
    return "BM_stream_read_baseline" +
           (entry_trades == 1 ? std::string() : "/entry_trades:" + std::to_string(entry_trades));
}
/// A few seconds a run: one instance ingests about 22 k trades/s on the 2-core machine this was
/// written on (the baseline reads some 380 k/s).
inline constexpr std::size_t default_stream_trades = 150'000;

/// Trades per run, from TRADEAGG_STREAM_BENCH_TRADES; set in main.
inline std::size_t stream_trades = default_stream_trades;

/// Reads TRADEAGG_STREAM_BENCH_TRADES: a count in [1,000, the stream's length]. Empty if
/// malformed.
inline std::optional<std::size_t> stream_trades_from_env() {
    const char* text = std::getenv("TRADEAGG_STREAM_BENCH_TRADES");
    if (text == nullptr || *text == '\0') {
        return default_stream_trades;
    }
    const std::string_view v(text);
    std::size_t value = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), value);
    if (ec != std::errc{} || end != v.data() + v.size() || value < 1'000 ||
        value > bench_stream_config.trades) {
        return std::nullopt;
    }
    return value;
}

} // namespace bench
