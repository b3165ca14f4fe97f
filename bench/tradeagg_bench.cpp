// tradeagg's benchmark: the three shipped policies side by side, against the bare transport they
// are built on and against the implementation one writes without thinking about performance.
//
// Every benchmark consumes the same stream: 1,048,576 trades over 10,000 tokens with Zipf
// (s = 1) popularity, generated once before anything is timed (see stream.hpp). Each iteration
// moves the whole stream from one producer thread to one consumer thread, and its time runs
// from the first trade offered to the last one fully processed (manual time, wall clock).
//
//   BM_transport_spsc               a bare Boost.Lockfree SPSC ring of ingress records, one
//                                   push and one pop per trade: the ceiling of the transport.
//   BM_naive                        std::deque + mutex + condition variable, string-keyed
//                                   unordered_map, candles in std::map per interval.
//   BM_pipeline/<policy>            tradeagg::pipeline<Policy, null_sink>, one shard, the
//                                   benchmark thread pushing through a producer handle in
//                                   chunks of 256; the clock stops when stop() has drained.
//   BM_pipeline_hot/throughput_policy  the same on a 100-token stream: token state in cache.
//
// Ratios between them are what matters (bench/run prints them); absolute numbers depend on the
// machine. Run: bench/run, or tradeagg_bench --benchmark_repetitions=5.

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>
#include <boost/lockfree/spsc_queue.hpp>

#include <tradeagg/tradeagg.hpp>

#include "stream.hpp"

namespace {

using bench_clock = std::chrono::steady_clock;

double seconds_between(bench_clock::time_point from, bench_clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
}

/// The stream every benchmark consumes, generated once (in main, before any timing).
const synthetic::stream& bench_stream() {
    static const synthetic::stream s{
        synthetic::stream_config{.trades = 1'048'576, .tokens = 10'000}};
    return s;
}

/// The same generator with 100 tokens: their state stays in cache, which shows what the
/// pipeline costs when it is not waiting for memory.
const synthetic::stream& hot_stream() {
    static const synthetic::stream s{synthetic::stream_config{.trades = 1'048'576, .tokens = 100}};
    return s;
}

/// Starts a producer thread that waits for `go` before running `body`, so the consumer can
/// start the clock at the moment the first item may be offered rather than before the thread
/// has been scheduled.
class gated_thread {
public:
    template <class Body>
    explicit gated_thread(Body body)
        : thread_([this, body = std::move(body)]() mutable {
              while (!go_.load(std::memory_order_acquire)) {
                  std::this_thread::yield();
              }
              body();
          }) {}
    gated_thread(const gated_thread&) = delete;
    gated_thread& operator=(const gated_thread&) = delete;
    ~gated_thread() {
        go_.store(true, std::memory_order_release);
        thread_.join();
    }

    /// Releases the producer; returns the start time.
    bench_clock::time_point open() {
        const auto t0 = bench_clock::now();
        go_.store(true, std::memory_order_release);
        return t0;
    }

private:
    std::atomic<bool> go_{false};
    std::thread thread_;
};

// ---------------------------------------------------------------------------------------------
// BM_transport_spsc: what moving a trade between two cores costs, and nothing else.

void bm_transport_spsc(benchmark::State& state) {
    const std::vector<tradeagg::trade>& trades = bench_stream().trades();
    const std::size_t n = trades.size();
    for (auto _ : state) {
        // The pipeline's ring type, runtime-sized as the pipeline builds it.
        tradeagg::ingress_ring ring(65'536);
        gated_thread producer([&] {
            for (const tradeagg::trade& t : trades) {
                const tradeagg::ingress_record rec{t, 0};
                while (!ring.push(rec)) {
                    tradeagg::detail::cpu_relax();
                }
            }
        });
        std::uint64_t id_sum = 0;
        const auto t0 = producer.open();
        tradeagg::ingress_record rec;
        for (std::size_t got = 0; got < n;) {
            if (ring.pop(rec)) {
                id_sum += rec.t.id;
                ++got;
            } else {
                tradeagg::detail::cpu_relax();
            }
        }
        const auto t1 = bench_clock::now();
        benchmark::DoNotOptimize(id_sum);
        state.SetIterationTime(seconds_between(t0, t1));
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

// ---------------------------------------------------------------------------------------------
// BM_naive: the obvious implementation. Strings on the queue, a lock per trade, a hash of the
// token string per trade, a tree node per new bucket; the same seven candles per token.

namespace naive {

struct trade {
    std::string token;
    double price = 0.0;
    double quantity = 0.0;
    bool buy = false;
    std::int64_t ts_ms = 0;
    std::uint64_t id = 0;
};

struct candle {
    double open = 0.0;
    double high = 0.0;
    double low = 0.0;
    double close = 0.0;
    double volume = 0.0;
    double quote_volume = 0.0;
    std::uint64_t trades = 0;
    double taker_buy_volume = 0.0;
    double taker_buy_quote_volume = 0.0;
    std::int64_t first_ts = 0;
    std::uint64_t first_id = 0;
    std::int64_t last_ts = 0;
    std::uint64_t last_id = 0;
};

constexpr std::array<std::int64_t, 7> interval_ms{1'000,     60'000,     300'000,   900'000,
                                                  3'600'000, 14'400'000, 86'400'000};

struct token_state {
    std::array<std::map<std::int64_t, candle>, interval_ms.size()> candles; // by open time
};

void apply(token_state& s, const trade& t) {
    const double quote = t.price * t.quantity;
    for (std::size_t i = 0; i < interval_ms.size(); ++i) {
        const std::int64_t open_time = t.ts_ms - t.ts_ms % interval_ms[i];
        auto [it, inserted] = s.candles[i].try_emplace(open_time);
        candle& c = it->second;
        if (inserted) {
            c.open = c.high = c.low = c.close = t.price;
            c.first_ts = c.last_ts = t.ts_ms;
            c.first_id = c.last_id = t.id;
        } else {
            if (t.ts_ms < c.first_ts || (t.ts_ms == c.first_ts && t.id < c.first_id)) {
                c.open = t.price;
                c.first_ts = t.ts_ms;
                c.first_id = t.id;
            }
            if (t.ts_ms > c.last_ts || (t.ts_ms == c.last_ts && t.id > c.last_id)) {
                c.close = t.price;
                c.last_ts = t.ts_ms;
                c.last_id = t.id;
            }
            c.high = std::max(c.high, t.price);
            c.low = std::min(c.low, t.price);
        }
        c.volume += t.quantity;
        c.quote_volume += quote;
        ++c.trades;
        if (t.buy) {
            c.taker_buy_volume += t.quantity;
            c.taker_buy_quote_volume += quote;
        }
    }
}

} // namespace naive

void bm_naive(benchmark::State& state) {
    const synthetic::stream& s = bench_stream();
    const std::vector<tradeagg::trade>& trades = s.trades();
    const std::vector<std::string>& names = s.names();
    const std::size_t n = trades.size();
    for (auto _ : state) {
        std::mutex mutex;
        std::condition_variable cv;
        std::deque<naive::trade> queue;
        std::unordered_map<std::string, naive::token_state> book;
        {
            gated_thread producer([&] {
                for (const tradeagg::trade& t : trades) {
                    naive::trade nt{.token = names[t.token],
                                    .price = t.price,
                                    .quantity = t.quantity,
                                    .buy = t.taker == tradeagg::side::buy,
                                    .ts_ms = t.ts_ms,
                                    .id = t.id};
                    {
                        const std::lock_guard lock(mutex);
                        queue.push_back(std::move(nt));
                    }
                    cv.notify_one();
                }
            });
            const auto t0 = producer.open();
            for (std::size_t got = 0; got < n; ++got) {
                naive::trade t;
                {
                    std::unique_lock lock(mutex);
                    cv.wait(lock, [&] { return !queue.empty(); });
                    t = std::move(queue.front());
                    queue.pop_front();
                }
                naive::apply(book[t.token], t);
            }
            const auto t1 = bench_clock::now();
            state.SetIterationTime(seconds_between(t0, t1));
        }
        // Outside the clock: the daily candles must account for every trade.
        std::uint64_t counted = 0;
        for (const auto& [name, st] : book) {
            for (const auto& [open_time, c] : st.candles.back()) {
                counted += c.trades;
            }
        }
        if (counted != n) {
            state.SkipWithError("BM_naive: daily candles do not account for every trade");
            break;
        }
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
}

// ---------------------------------------------------------------------------------------------
// BM_pipeline/<policy>: the library, one shard, fed by the benchmark thread.
// BM_pipeline_hot/<policy>: the same on a 100-token stream whose state fits in cache.

template <class Policy, const synthetic::stream& (*Stream)() = bench_stream>
void bm_pipeline(benchmark::State& state) {
    constexpr std::size_t chunk = 256;
    const synthetic::stream& s = Stream();
    const std::size_t n = s.trades().size();
    tradeagg::pipeline_stats last;
    for (auto _ : state) {
        // Outside the clock: a fresh pipeline, its tokens interned, its worker running.
        tradeagg::runtime_config cfg;
        cfg.shards = 1;
        tradeagg::pipeline<Policy, tradeagg::null_sink> p{std::move(cfg)};
        const std::span<const tradeagg::trade> trades = s.intern_into(p);
        p.start();
        auto producer = p.make_producer();

        const auto t0 = bench_clock::now();
        for (std::size_t at = 0; at < trades.size(); at += chunk) {
            producer.push(trades.subspan(at, std::min(chunk, trades.size() - at)));
        }
        p.stop();
        const auto t1 = bench_clock::now();
        state.SetIterationTime(seconds_between(t0, t1));

        last = p.stats();
        if (last.applied != n || last.late != 0 || last.rejected != 0) {
            state.SkipWithError(
                "BM_pipeline: stats().applied != stream size (or trades were late or rejected)");
            break;
        }
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * n));
    const tradeagg::latency_summary& lat = last.apply_latency;
    state.counters["apply_p50_ns"] = lat.p50_ns;
    state.counters["apply_p90_ns"] = lat.p90_ns;
    state.counters["apply_p99_ns"] = lat.p99_ns;
    state.counters["apply_p999_ns"] = lat.p999_ns;
    state.counters["apply_max_ns"] = lat.max_ns;
    state.counters["bytes_per_active_token"] = last.bytes_per_active_token;
    state.counters["active_tokens"] = static_cast<double>(last.active_tokens);
    state.counters["token_state_bytes"] =
        static_cast<double>(tradeagg::pipeline<Policy, tradeagg::null_sink>::token_state_bytes);
}

/// One iteration is the whole stream (0.1 s to 1 s); repetitions come from the command line.
void configure(benchmark::internal::Benchmark* b) {
    b->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
}

} // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
        return 1;
    }
    const synthetic::stream& s = bench_stream(); // generated here, never inside a timing
    benchmark::AddCustomContext("stream_trades", std::to_string(s.trades().size()));
    benchmark::AddCustomContext("stream_tokens", std::to_string(s.names().size()));
    benchmark::AddCustomContext("stream_zipf_s", "1.0");

    configure(benchmark::RegisterBenchmark("BM_transport_spsc", bm_transport_spsc));
    configure(benchmark::RegisterBenchmark("BM_naive", bm_naive));
    configure(benchmark::RegisterBenchmark("BM_pipeline/throughput_policy",
                                           bm_pipeline<tradeagg::throughput_policy>));
    configure(benchmark::RegisterBenchmark("BM_pipeline/latency_policy",
                                           bm_pipeline<tradeagg::latency_policy>));
    configure(benchmark::RegisterBenchmark("BM_pipeline/memory_constrained_policy",
                                           bm_pipeline<tradeagg::memory_constrained_policy>));
    (void)hot_stream();
    configure(benchmark::RegisterBenchmark("BM_pipeline_hot/throughput_policy",
                                           bm_pipeline<tradeagg::throughput_policy, hot_stream>));

    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
