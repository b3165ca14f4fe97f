#pragma once
// The benchmark groups of tradeagg_redis_bench, one .cpp file each, and what they share with
// main: how a benchmark is registered, and how it reports an error.

#include <cstdint>
#include <exception>
#include <string>

#include <benchmark/benchmark.h>

namespace bench {

/// Benchmarks that reported an error; main's exit status, so a smoke run fails on one.
inline int failed_benchmarks = 0;

inline void skip_with_error(benchmark::State& state, const std::string& message) {
    ++failed_benchmarks;
    state.SkipWithError(message.c_str());
}

/// Runs a benchmark's iterations; an exception from them fails the benchmark with
/// "`name`: what". Returns false then.
template <class Run>
bool run_or_fail(benchmark::State& state, const std::string& name, Run&& run) {
    try {
        run();
        return true;
    } catch (const std::exception& e) {
        skip_with_error(state, name + ": " + e.what());
        return false;
    }
}

/// A check's verdict: an empty `wrong` passes; otherwise the benchmark fails with
/// "`name`: `wrong`". Returns true if it failed.
inline bool check_failed(benchmark::State& state, const std::string& name,
                         const std::string& wrong) {
    if (wrong.empty()) {
        return false;
    }
    skip_with_error(state, name + ": " + wrong);
    return true;
}

/// What every benchmark here reports: the trades it moved, as items and as the `trades` and
/// `trades_per_second` counters.
inline void report_trades(benchmark::State& state, std::uint64_t trades, double seconds) {
    state.SetItemsProcessed(static_cast<std::int64_t>(trades));
    state.counters["trades_per_second"] = static_cast<double>(trades) / seconds;
    state.counters["trades"] = static_cast<double>(trades);
}

/// One iteration is one run (`run_seconds` of writing, or one pass over the streams);
/// repetitions come from the command line.
inline void configure(benchmark::internal::Benchmark* b) {
    b->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
}

/// BM_redis_per_trade_lua and BM_redis_per_trade_hincr (redis_per_trade_bench.cpp).
void register_redis_per_trade();
/// BM_redis_end_to_end/<policy>, one per shipped policy (redis_end_to_end_bench.cpp).
void register_redis_end_to_end();
/// BM_stream_read_baseline, and /entry_trades:<n> (stream_read_baseline_bench.cpp).
void register_stream_read_baseline();
/// BM_stream_ingest/instances:<n>, with single and packed entries, and with the larger read
/// count (stream_ingest_bench.cpp).
void register_stream_ingest();
/// BM_stream_takeover (stream_takeover_bench.cpp).
void register_stream_takeover();
/// BM_key_write (key_write_bench.cpp).
void register_key_write();

} // namespace bench
