// BM_redis_end_to_end/<policy>: the library's Redis sink behind a pipeline.
//
// One producer pushes the stream's tokens, prices and sizes as fast as the pipeline takes them,
// as a live feed (event time follows the wall clock; see `live_trade`), for `run_seconds`; then the
// pipeline stops (its final flush) and the sink writes what is pending. The clock runs from the
// first push until Redis has acknowledged everything: trades_per_second is trades persisted per
// second, end to end; applied_trades_per_second counts until the pipeline has applied them.
// A probe thread (lag_probe.hpp) measures the lag from a trade to its effect being visible in
// Redis: every 5 ms it pushes a trade for token PROBE and polls PROBE's latest hash until that
// trade shows.
// Outside the clock, a pipeline into a memory_sink takes the same trades and Redis is compared
// with it key by key and field by field (every candle, rolling window and latest trade, and no
// other key); a difference is a benchmark error.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include <tradeagg/pipeline.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/redis/config.hpp>
#include <tradeagg/redis/sink.hpp>
#include <tradeagg/runtime_config.hpp>
#include <tradeagg/sink/memory_sink.hpp>
#include <tradeagg/trade.hpp>

#include "bench_stream.hpp"
#include "lag_probe.hpp"
#include "pipelined_connection.hpp"
#include "redis_bench_settings.hpp"
#include "redis_benchmarks.hpp"
#include "redis_keyspace.hpp" // tests/: Redis compared with a memory_sink
#include "redis_target.hpp"

namespace bench {
namespace {

/// The n-th trade of the stream repeated without end, at event time `ts`: a live feed, whose
/// event time advances with the wall clock however fast trades come. (Replaying the stream's
/// own times 100x faster than they happened would open 100x more candles per second than a
/// live feed of the same rate, and measure that instead.) Pass k's ids are shifted by k times
/// the stream's length, so ids stay unique.
tradeagg::trade live_trade(const synthetic::stream& s, std::size_t n, tradeagg::timestamp_ms ts) {
    const std::vector<tradeagg::trade>& trades = s.trades();
    tradeagg::trade t = trades[n % trades.size()];
    t.ts_ms = ts;
    t.id += static_cast<std::uint64_t>(n / trades.size()) * trades.size();
    return t;
}

/// Trades are pushed in chunks of this many, all of one chunk at one event time.
constexpr std::size_t push_chunk = 256;

double percentile(std::vector<double> v, double q) {
    if (v.empty()) {
        return 0.0;
    }
    std::sort(v.begin(), v.end());
    return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1))];
}

/// The same trades through a pipeline into memory, then Redis compared with it.
template <class Policy>
std::string check_against_memory(const synthetic::stream& s,
                                 const std::vector<tradeagg::timestamp_ms>& chunk_times,
                                 const std::vector<tradeagg::trade>& probes,
                                 const tradeagg::redis::redis_config& where) {
    tradeagg::runtime_config rc;
    tradeagg::pipeline<Policy, tradeagg::memory_sink> p{rc};
    p.start();
    std::vector<tradeagg::token_id> ids;
    for (const std::string& n : s.names()) {
        ids.push_back(p.intern(n).id);
    }
    const tradeagg::token_id probe = p.intern(probe_token).id;
    auto producer = p.make_producer();
    for (std::size_t c = 0; c < chunk_times.size(); ++c) {
        for (std::size_t i = 0; i < push_chunk; ++i) {
            tradeagg::trade t = live_trade(s, c * push_chunk + i, chunk_times[c]);
            t.token = ids[t.token];
            (void)producer.push(t);
        }
    }
    for (tradeagg::trade t : probes) {
        t.token = probe;
        (void)producer.push(t);
    }
    p.stop();
    std::size_t keys = 0;
    const tradeagg::testing::mismatch_log log = tradeagg::testing::compare_redis_with(
        where.host, where.port, p.sink(), std::string(key_prefix), Policy::intervals, &keys);
    if (log.count != 0) {
        return std::to_string(log.count) + " differences between Redis and the reference, e.g. " +
               log.first.front();
    }
    return {};
}

template <class Policy>
void bm_redis_end_to_end(benchmark::State& state) {
    const std::string name = "BM_redis_end_to_end";
    std::size_t pushed = 0;
    double persisted_seconds = 0.0;
    double applied_seconds = 0.0;
    tradeagg::redis::sink_stats sink_stats;
    std::vector<double> lags;
    const bool ran = run_or_fail(state, name, [&] {
        const synthetic::stream& s = bench_stream();
        tradeagg::redis::redis_config where = target();
        where.key_prefix = std::string(key_prefix);
        const auto duration = std::chrono::duration<double>(run_seconds);
        for (auto _ : state) {
            {
                pipelined_connection conn(where, 1);
                (void)conn.command({"FLUSHDB"});
            }
            tradeagg::redis::redis_sink sink(where);
            tradeagg::runtime_config rc;
            tradeagg::pipeline<Policy, tradeagg::redis::redis_sink&> p{rc, sink};
            std::vector<tradeagg::token_id> ids;
            for (const std::string& n : s.names()) {
                ids.push_back(p.intern(n).id);
            }
            p.start();
            const tradeagg::timestamp_ms start_ms = s.trades().front().ts_ms;
            std::atomic<tradeagg::timestamp_ms> stream_time{start_ms};
            lag_probe probe(p, where, stream_time);
            auto producer = p.make_producer();
            std::array<tradeagg::trade, push_chunk> chunk{};
            std::vector<tradeagg::timestamp_ms> chunk_times;
            const auto t0 = bench_clock::now();
            const auto deadline = t0 + std::chrono::duration_cast<bench_clock::duration>(duration);
            pushed = 0;
            for (auto now = t0; now < deadline; now = bench_clock::now()) {
                const tradeagg::timestamp_ms ts =
                    start_ms +
                    std::chrono::duration_cast<std::chrono::milliseconds>(now - t0).count();
                stream_time.store(ts, std::memory_order_relaxed);
                for (std::size_t i = 0; i < chunk.size(); ++i) {
                    chunk[i] = live_trade(s, pushed + i, ts);
                    chunk[i].token = ids[chunk[i].token];
                }
                const std::size_t n = producer.push(std::span<const tradeagg::trade>(chunk));
                if (n != chunk.size()) {
                    throw std::runtime_error("the pipeline refused a trade");
                }
                pushed += n;
                chunk_times.push_back(ts);
            }
            probe.stop_pushing();
            p.stop();
            const auto t_applied = bench_clock::now();
            const tradeagg::redis::stop_report report = sink.stop(std::chrono::seconds(120));
            const auto t_persisted = bench_clock::now();
            probe.stop(std::chrono::seconds(5)); // every probe is in Redis by now
            applied_seconds = seconds_between(t0, t_applied);
            persisted_seconds = seconds_between(t0, t_persisted);
            state.SetIterationTime(persisted_seconds);
            sink_stats = report.stats;
            lags = probe.lags_ms();
            if (!probe.error().empty()) {
                skip_with_error(state, name + ": probe: " + probe.error());
                break;
            }
            if (!report.complete) {
                skip_with_error(state, name + ": " + std::to_string(report.unwritten) +
                                           " keys not written: " + report.stats.last_error);
                break;
            }
            if (check_failed(state, name,
                             check_against_memory<Policy>(s, chunk_times, probe.trades(), where))) {
                break;
            }
        }
    });
    if (!ran) {
        return;
    }
    report_trades(state, pushed, persisted_seconds);
    state.counters["applied_trades_per_second"] = static_cast<double>(pushed) / applied_seconds;
    state.counters["commands_per_second"] =
        static_cast<double>(sink_stats.commands_sent) / persisted_seconds;
    state.counters["commands_per_trade"] =
        static_cast<double>(sink_stats.commands_sent) / static_cast<double>(pushed);
    state.counters["updates_coalesced"] = static_cast<double>(sink_stats.updates_coalesced);
    state.counters["updates_written"] = static_cast<double>(sink_stats.updates_written);
    state.counters["lag_p50_ms"] = percentile(lags, 0.50);
    state.counters["lag_p99_ms"] = percentile(lags, 0.99);
    state.counters["lag_samples"] = static_cast<double>(lags.size());
}

} // namespace

void register_redis_end_to_end() {
    configure(benchmark::RegisterBenchmark("BM_redis_end_to_end/throughput_policy",
                                           bm_redis_end_to_end<tradeagg::throughput_policy>));
    configure(benchmark::RegisterBenchmark("BM_redis_end_to_end/latency_policy",
                                           bm_redis_end_to_end<tradeagg::latency_policy>));
    configure(
        benchmark::RegisterBenchmark("BM_redis_end_to_end/memory_constrained_policy",
                                     bm_redis_end_to_end<tradeagg::memory_constrained_policy>));
}

} // namespace bench
