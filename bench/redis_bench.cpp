// tradeagg's Redis benchmark: writing trade aggregates to a real Redis.
//
// The baselines are what one writes without this library: every trade becomes Redis work of
// its own, for each of the seven candles it falls in (1s 1m 5m 15m 1h 4h 1d, the intervals of
// tradeagg::throughput_policy), into hashes
//
//     tradeagg:{<token>}:candle:<interval>:<open_time_ms>
//
// with the fields open high low close volume quote_volume trades taker_buy_volume
// taker_buy_quote_volume vwap open_time close_time first_trade_id last_trade_id. The braces
// are a cluster hash tag: every key of one token lands in the same slot, so one script may
// touch all of them.
//
//   BM_redis_per_trade_lua      one EVALSHA per trade (the script is loaded once with SCRIPT
//                               LOAD); the script updates the seven hashes, reading high and
//                               low to keep them exact.
//   BM_redis_per_trade_hincr    no script: HSETNX, HINCRBYFLOAT, HINCRBY and HSET per trade per
//                               interval (about 49 commands per trade).
//   BM_redis_end_to_end/<policy>  the library's Redis sink behind a pipeline (see below):
//                               trades persisted per second, and the lag to visibility.
//   BM_stream_read_baseline     partition-stream ingest's ceiling: one thread XREADGROUPs,
//                               parses and XACKs 4 partition streams on a Redis Cluster; no
//                               aggregation, no writes.
//   BM_stream_ingest/instances:<n>  1 or 2 stream_consumer<throughput_policy> instances in this
//                               process consume the same 4 streams, aggregate, write every
//                               token's hashes with the fenced script, and acknowledge;
//                               reading 4,096 entries per partition per round (the default),
//                               and, as .../read_count:32768, eight times as many.
//   BM_key_write                Redis's own CPU per key written, plainly and by the fenced
//                               token-write script, in the same run (key_write_bench.cpp).
//
// Both per-trade baselines pipeline 100 commands deep on one blocking hiredis connection: append
// 100 commands, then read their 100 replies, each checked not to be an error.
//
// The BM_redis_* trades are the stream every benchmark consumes (stream.hpp: 1,048,576 trades,
// 10,000 tokens, Zipf popularity), sent in order from its start. Each iteration runs for a fixed
// wall time (TRADEAGG_REDIS_BENCH_SECONDS, default 2; it also stops at the end of the stream)
// on a database emptied with FLUSHDB first; the time reported is that window, from the first
// command appended to the last reply read (manual time), and the counters trades_per_second
// and commands_per_second are computed over it. Outside the clock, each run reads back the
// seven candles of the last trade's token that hold that trade and checks them against what
// the client sent (trades, open, high, low, close, volume, quote_volume); a mismatch is a
// benchmark error.
//
// The stream benchmarks (BM_stream_*) take the first TRADEAGG_STREAM_BENCH_TRADES
// trades of the same stream (default 150,000; at most its 1,048,576) over its 10,000 tokens,
// partitioned among 4 streams as producers do (partition_of), and run once over them per
// iteration: the clock runs from the moment every entry is in its stream until every entry is
// acknowledged (manual time); trades_per_second is computed over it, token_writes_per_second too
// for the consumers. They always use a Redis Cluster of their own, 3 masters on free 127.0.0.1
// ports (tests/redis_cluster.hpp; needs redis-cli), started on first use and stopped at exit,
// whatever REDIS_ADDR says; every master is FLUSHALL'd before each run. Outside the clock, each
// run is checked: every entry read and acknowledged once, and after ingest the cluster holds
// exactly what a memory pipeline given the same trades holds; a difference is a benchmark error.
// The instances, the benchmark's thread and the three redis-servers share the machine's cores:
// on a small machine two instances contend with Redis for CPU rather than adding their own.
//
// Which Redis, for BM_redis_*: REDIS_ADDR (host:port, with REDIS_PASSWORD and REDIS_DB when set, as
// the sink reads them) if set; its database is FLUSHDB'd before every run, so never point it at
// data you want to keep. Otherwise the benchmark starts a redis-server of its own on a free
// 127.0.0.1 port (no persistence, in a temporary directory), on first use, and stops it at exit.
//
// Run: bench/run (prints "Redis" and "Streams" tables after the main one), or
//   tradeagg_redis_bench --benchmark_repetitions=5
//   tradeagg_redis_bench --benchmark_filter=BM_stream --benchmark_repetitions=3
// A quick smoke run:
//   TRADEAGG_REDIS_BENCH_SECONDS=0.2 TRADEAGG_STREAM_BENCH_TRADES=20000 tradeagg_redis_bench
//
// Where things are: one file per benchmark group: redis_per_trade_bench.cpp (its writers in
// per_trade_writers.hpp, its keys in candle_keys.hpp), redis_end_to_end_bench.cpp (its probe in
// lag_probe.hpp), stream_read_baseline_bench.cpp and stream_ingest_bench.cpp (their cluster and
// streams in partition_streams.hpp), key_write_bench.cpp; what they share, in
// redis_bench_settings.hpp (the settings above), redis_benchmarks.hpp (registration, errors),
// redis_target.hpp (which Redis) and pipelined_connection.hpp; this file is main.

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include <benchmark/benchmark.h>

#include <tradeagg/redis/keys.hpp>

#include "bench_stream.hpp"
#include "redis_bench_settings.hpp"
#include "redis_benchmarks.hpp"

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
        return 1;
    }
    const std::optional<double> seconds = bench::seconds_from_env();
    if (!seconds) {
        std::fprintf(stderr, "tradeagg_redis_bench: TRADEAGG_REDIS_BENCH_SECONDS must be a "
                             "number of seconds in (0, 3600], e.g. 2 or 0.2\n");
        return 2;
    }
    bench::run_seconds = *seconds;
    const std::optional<std::size_t> trades = bench::stream_trades_from_env();
    if (!trades) {
        std::fprintf(stderr,
                     "tradeagg_redis_bench: TRADEAGG_STREAM_BENCH_TRADES must be a number of "
                     "trades in [1000, %zu], e.g. 150000\n",
                     bench::bench_stream_config.trades);
        return 2;
    }
    bench::stream_trades = *trades;
    const char* addr = std::getenv("REDIS_ADDR");
    benchmark::AddCustomContext("redis", addr != nullptr && *addr != '\0'
                                             ? std::string("REDIS_ADDR=") + addr
                                             : std::string("own redis-server on 127.0.0.1"));
    tradeagg::redis::number_text seconds_text;
    seconds_text.set(bench::run_seconds);
    benchmark::AddCustomContext("run_seconds", std::string(seconds_text.view()));
    benchmark::AddCustomContext("pipeline_depth", std::to_string(bench::pipeline_depth));
    benchmark::AddCustomContext("stream_trades", std::to_string(bench::bench_stream_config.trades));
    benchmark::AddCustomContext("stream_tokens", std::to_string(bench::bench_stream_config.tokens));
    benchmark::AddCustomContext("stream_zipf_s", "1.0");
    benchmark::AddCustomContext("streams_cluster", "own 3 masters on 127.0.0.1");
    benchmark::AddCustomContext("streams_partitions", std::to_string(bench::stream_partitions));
    benchmark::AddCustomContext("streams_trades", std::to_string(bench::stream_trades));
    benchmark::AddCustomContext("streams_read_count", std::to_string(bench::stream_read_count));
    benchmark::AddCustomContext("streams_lease_ttl_ms",
                                std::to_string(bench::stream_lease_ttl.count()));

    bench::register_redis_per_trade();
    bench::register_redis_end_to_end();
    bench::register_stream_read_baseline();
    bench::register_stream_ingest();
    bench::register_stream_takeover();
    bench::register_key_write();

    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    if (bench::failed_benchmarks != 0) {
        std::fprintf(stderr, "tradeagg_redis_bench: %d benchmark run(s) reported an error\n",
                     bench::failed_benchmarks);
        return 1;
    }
    return 0;
}
