// BM_redis_per_trade_lua and BM_redis_per_trade_hincr: what one writes without this library,
// every trade Redis work of its own (see redis_bench.cpp for the keys and fields, and
// per_trade_writers.hpp for what each sends).

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>
#include <hiredis/hiredis.h>

#include <tradeagg/interval.hpp>
#include <tradeagg/redis/config.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/trade.hpp>

#include "bench_stream.hpp"
#include "candle_keys.hpp"
#include "per_trade_writers.hpp"
#include "pipelined_connection.hpp"
#include "redis_bench_settings.hpp"
#include "redis_benchmarks.hpp"
#include "redis_target.hpp"

namespace bench {
namespace {

using tradeagg::redis::number_text;

// ---------------------------------------------------------------------------------------------
// The check after each run: the candles of one token, as the client sent them.

/// What the trades sent for one candle add up to.
struct expected_candle {
    std::uint64_t trades = 0;
    double open = 0.0; ///< first to arrive
    double high = 0.0;
    double low = 0.0;
    double close = 0.0; ///< latest to arrive
    double volume = 0.0;
    double quote_volume = 0.0;
};

bool same_sum(double expected, std::string_view text) {
    const double got = std::strtod(std::string(text).c_str(), nullptr);
    return std::abs(got - expected) <= 1e-9 * std::max(std::abs(expected), 1.0);
}

/// Reads back the candles (every interval) of the last trade sent and compares them with what
/// the first `sent` trades add up to. Empty if they agree, otherwise what differs.
std::string check_candles(pipelined_connection& conn, const synthetic::stream& s,
                          std::size_t sent) {
    if (sent == 0) {
        return "no trade was sent";
    }
    const std::vector<tradeagg::trade>& trades = s.trades();
    const tradeagg::trade& last = trades[sent - 1];
    candle_keys keys;
    keys.build(s.names()[last.token], last.ts_ms);

    std::array<expected_candle, interval_count> want{};
    for (std::size_t k = 0; k < sent; ++k) {
        const tradeagg::trade& t = trades[k];
        if (t.token != last.token) {
            continue;
        }
        for (std::size_t i = 0; i < interval_count; ++i) {
            if (tradeagg::bucket_open(t.ts_ms, bench_intervals[i].count()) != keys.open_time(i)) {
                continue;
            }
            expected_candle& e = want[i];
            if (e.trades++ == 0) {
                e.open = e.high = e.low = t.price;
            }
            e.high = std::max(e.high, t.price);
            e.low = std::min(e.low, t.price);
            e.close = t.price;
            e.volume += t.quantity;
            e.quote_volume += t.price * t.quantity;
        }
    }

    for (std::size_t i = 0; i < interval_count; ++i) {
        const std::string& key = keys.key(i);
        const reply_ptr r = conn.command(
            {"HMGET", key, "trades", "open", "high", "low", "close", "volume", "quote_volume"});
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 7) {
            return key + ": HMGET did not return 7 fields";
        }
        std::array<std::string, 7> got;
        for (std::size_t f = 0; f < got.size(); ++f) {
            if (r->element[f]->type != REDIS_REPLY_STRING) {
                return key + ": a field is missing";
            }
            got[f].assign(r->element[f]->str, r->element[f]->len);
        }
        const expected_candle& e = want[i];
        number_text n;
        n.set(static_cast<std::uint64_t>(e.trades));
        if (got[0] != n.view()) {
            return key + ": trades = " + got[0] + ", but the client sent " + std::string(n.view());
        }
        const std::array<std::pair<const char*, double>, 4> prices{
            {{"open", e.open}, {"high", e.high}, {"low", e.low}, {"close", e.close}}};
        for (std::size_t p = 0; p < prices.size(); ++p) {
            n.set(prices[p].second);
            if (got[1 + p] != n.view()) {
                return key + ": " + prices[p].first + " = " + got[1 + p] + ", expected " +
                       std::string(n.view());
            }
        }
        if (!same_sum(e.volume, got[5]) || !same_sum(e.quote_volume, got[6])) {
            return key + ": volume or quote_volume differs from the client's sum";
        }
    }
    return {};
}

// ---------------------------------------------------------------------------------------------
// The per-trade baselines' loop.

template <class Writer>
void bm_redis_per_trade(benchmark::State& state) {
    const std::string name(Writer::name);
    std::size_t sent = 0;
    std::uint64_t commands = 0;
    double seconds = 0.0;
    const bool ran = run_or_fail(state, name, [&] {
        const synthetic::stream& s = bench_stream();
        const std::vector<tradeagg::trade>& trades = s.trades();
        const std::vector<std::string>& names = s.names();
        const tradeagg::redis::redis_config& where = target();
        const auto duration = std::chrono::duration<double>(run_seconds);
        for (auto _ : state) {
            // Outside the clock: an empty database, a fresh connection, the writer's setup.
            pipelined_connection conn(where, pipeline_depth);
            (void)conn.command({"FLUSHDB"});
            Writer writer;
            writer.prepare(conn);

            const auto t0 = bench_clock::now();
            const auto deadline = t0 + std::chrono::duration_cast<bench_clock::duration>(duration);
            sent = 0;
            while (sent < trades.size() && bench_clock::now() < deadline) {
                const tradeagg::trade& t = trades[sent];
                writer.write(conn, t, names[t.token]);
                ++sent;
            }
            conn.drain();
            const auto t1 = bench_clock::now();
            seconds = seconds_between(t0, t1);
            commands = conn.commands();
            state.SetIterationTime(seconds);

            if (check_failed(state, name, check_candles(conn, s, sent))) {
                break;
            }
        }
    });
    if (!ran) {
        return;
    }
    report_trades(state, sent, seconds);
    state.counters["commands_per_second"] = static_cast<double>(commands) / seconds;
    state.counters["commands_per_trade"] =
        static_cast<double>(commands) / static_cast<double>(sent);
}

} // namespace

void register_redis_per_trade() {
    configure(
        benchmark::RegisterBenchmark("BM_redis_per_trade_lua", bm_redis_per_trade<lua_writer>));
    configure(
        benchmark::RegisterBenchmark("BM_redis_per_trade_hincr", bm_redis_per_trade<hincr_writer>));
}

} // namespace bench
