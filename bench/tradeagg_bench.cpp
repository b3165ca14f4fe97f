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
//
// BM_memory_churn/<policy> is different: not a throughput race but a memory test (see the
// comment above it and churn.hpp). One million short-lived tokens over 30 days of event time,
// two shards, trades pushed as trade_views (the string path), the clock advanced every
// simulated minute; it reports resident memory, arena bytes, evictions and reclamation cost
// as counters, and bench/run prints them in a second table with their own bars.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>
#include <boost/lockfree/spsc_queue.hpp>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <tradeagg/tradeagg.hpp>

#include "bench_stream.hpp"
#include "churn.hpp"

namespace {

using bench::bench_clock;
using bench::bench_stream;
using bench::bench_stream_config;
using bench::seconds_between;

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

// ---------------------------------------------------------------------------------------------
// BM_memory_churn/<policy>: does memory come back when tokens stop trading?
//
// The stream (churn.hpp): 1,000,000 distinct tokens (every second one a 44-character mint
// address, the others "T000001" and so on), each trading 2..4 times within 3 s of event time
// and never again; the bursts advance steadily over 30 days of event time (one every 2.6 s).
// A token's state is spent (`token_state::spent_at`: its day candle final and its rolling
// window empty, at most 24 h plus the allowed lateness after its last trade) and released by
// the next reclamation, so about 33,000 tokens (a day's worth) are live, plus those spent
// since the last reclamation (the GC target decides how many). The benchmark thread
// is the one producer: it pushes every trade as a `trade_view` (interning the string, as an
// HTTP server would) through a `producer` handle, and calls `advance_time(event time - 5 s)`
// each time event time enters a new minute, like a server ticking its clock. Two shards (the
// machine has two cores), the null sink, the policy's default runtime config otherwise;
// memory_constrained_policy's soft limit is set explicitly to 256 MiB, which is its default,
// and at that limit its `wait_for_room` makes push wait instead of refusing.
//
// Timed (real time): from the first push until every accepted trade has been applied. Outside
// the clock: building the pipeline, and the final phase (advance the clock 3 days past the
// last trade, `reclaim_now()`, read the final numbers).
//
// Counters (MB means MiB):
//   rss_before_mb      the process's resident set once the pipeline is built and started and
//                      the producer's rings exist, before the first trade.
//   peak_rss_mb        the highest resident set seen while streaming, sampled every 10,000
//                      trades and once when the stream has drained.
//   final_rss_mb       the resident set after the 3-day clock jump and a `reclaim_now()` (which
//                      evicts spent tokens, compacts the arenas and calls malloc_trim).
//   final_vs_before    final_rss_mb / rss_before_mb.
//   vmhwm_mb           VmHWM: the process's peak resident set since it started, so it includes
//                      earlier benchmarks in the same process; for reference only.
//   arena_peak_mb      highest `stats().arena_reserved_bytes` (token-state arenas plus rolling
//                      rings, free chunks included) among the samples.
//   heap_inuse_peak_mb, heap_inuse_final_mb   `stats().heap_inuse_bytes`: the library's own
//                      live bytes (token state, rings, token table, buffers).
//   bytes_per_active_token  the highest `arena_live_bytes / active_tokens` among the samples:
//                      token state including its rolling ring, all seven intervals (a shard
//                      publishes its token count and bytes together, at each flush).
//   token_state_bytes  the fixed part of a token's state (`pipeline<...>::token_state_bytes`).
//   peak_active_tokens, tokens_evicted, reclamations (over the run, the final one included).
//   gc_cpu_fraction    reclamation CPU time / process CPU time, both as deltas over the run
//                      (first push to the end of the final reclamation), not since start.
//   trades_per_second  accepted trades / timed seconds (also reported as items_per_second);
//                      the timed part includes the ~300 samples (a few milliseconds).
//   rejected, rejected_memory_limit, rejected_active_token_limit, rejected_token_limit, late
//                      pushes refused, by reason, and trades taken too late to merge. All must be
//                      0 for the run to mean anything: a refused trade never costs memory.
//   interned_tokens, final_active_tokens, tokens_released,
//   table_final_mb, arena_final_mb, buffer_final_mb, ingress_mb   what is left after the
//                      final reclamation: names in the token table, states, names the table
//                      forgot, and the library's bytes by kind (`pipeline_stats` fields).
//   malloc_in_use_final_mb, malloc_free_final_mb   glibc's mallinfo2 after the final
//                      reclamation: bytes the whole process has allocated and not freed, and
//                      free bytes the allocator keeps (resident or not): what separates
//                      final_rss_mb from the library's own count.
//   final_rss_after_trim_mb   the resident set after the benchmark itself calls malloc_trim
//                      once more, after final_rss_mb was read: memory the allocator could give
//                      back but still held when the library's reclamation returned.
//   samples            how many samples were taken.
//
// What RSS means here: the resident set of the whole process, as the operating system counts
// it. It includes the benchmark's own data (the stream's names, ~28 MB, built before
// rss_before; in a run of every benchmark, also the other benchmarks' streams, ~90 MB, built
// earlier and kept), Google Benchmark, the C++ runtime, thread stacks, and memory the allocator
// (glibc malloc) keeps mapped after the library freed it: freed memory below the top of a heap,
// or in a worker thread's arena, can stay resident. It also includes what earlier benchmarks in
// the same process left in the allocator (the benchmark calls malloc_trim before building each
// pipeline to keep that small), so compare rss_before with final, not across benchmarks. It is
// what a container's memory limit sees; the library's own accounting is heap_inuse / arena_*.

/// The churn stream's names, built once, on first use (before the first churn benchmark's clock).
const churn::stream& churn_stream() {
    static const churn::stream s{churn::churn_config{}};
    return s;
}

constexpr double bytes_per_mib = 1024.0 * 1024.0;

double mib(std::size_t bytes) {
    return static_cast<double>(bytes) / bytes_per_mib;
}

/// Waits until every accepted trade has been applied (or counted late) and every shard's clock
/// has reached `clock`. Polls `stats()`.
template <class Pipeline>
void wait_until_applied(const Pipeline& p, tradeagg::timestamp_ms clock) {
    for (;;) {
        const tradeagg::pipeline_stats st = p.stats();
        bool done = st.applied + st.late == st.accepted;
        for (const tradeagg::shard_stats& sh : st.shards) {
            done = done && sh.clock >= clock;
        }
        if (done) {
            return;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
}

/// Bytes the C allocator has handed out and not had back (`in_use`), and free bytes it holds
/// (`free`, resident or not), over all its arenas; zeros where unknown.
struct malloc_bytes {
    std::size_t in_use = 0;
    std::size_t free = 0;
};
malloc_bytes read_malloc_bytes() {
    malloc_bytes m;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    const struct mallinfo2 mi = ::mallinfo2();
    m.in_use = mi.uordblks + mi.hblkhd;
    m.free = mi.fordblks;
#endif
    return m;
}

template <class Policy>
void bm_memory_churn(benchmark::State& state) {
    using pipeline_type = tradeagg::pipeline<Policy, tradeagg::null_sink>;
    constexpr std::size_t sample_every = 10'000;                     // trades between samples
    constexpr tradeagg::timestamp_ms tick_ms = 60'000;               // the producer's clock tick
    constexpr tradeagg::timestamp_ms clock_lag_ms = 5'000;           // advance_time(now - 5 s)
    constexpr tradeagg::timestamp_ms final_jump_ms = 3 * 86'400'000; // 3 days past the end
    const churn::stream& s = churn_stream();                         // outside any clock

    std::uint64_t accepted = 0;
    for (auto _ : state) {
        state.PauseTiming();
        {
            tradeagg::runtime_config cfg;
            cfg.shards = 2;
            if constexpr (std::is_same_v<Policy, tradeagg::memory_constrained_policy>) {
                static_assert(Policy::memory_limit_mb == 256, "the limit the bar assumes");
                cfg.memory_limit_mb = 256; // its default, spelled out: the bar depends on it
            }
            // What earlier benchmarks freed is not this one's baseline.
            tradeagg::detail::return_free_memory_to_system();
            auto p = std::make_unique<pipeline_type>(std::move(cfg));
            p->start();
            auto producer = p->make_producer();

            std::array<std::uint64_t, tradeagg::reject_reason_count> rejected{};
            std::size_t offered = 0;
            const tradeagg::process_stats before = tradeagg::read_process_stats();
            const double reclaim_cpu_before = p->stats().reclaim_cpu_seconds;
            std::size_t peak_rss = before.resident_bytes;
            std::size_t arena_peak = 0;
            std::size_t heap_inuse_peak = 0;
            std::size_t peak_active = 0;
            double bytes_per_token_peak = 0.0;
            std::size_t samples = 0;
            const auto sample = [&] {
                const tradeagg::process_stats ps = tradeagg::read_process_stats();
                const tradeagg::pipeline_stats st = p->stats();
                ++samples;
                peak_rss = std::max(peak_rss, ps.resident_bytes);
                arena_peak = std::max(arena_peak, st.arena_reserved_bytes);
                heap_inuse_peak = std::max(heap_inuse_peak, st.heap_inuse_bytes);
                peak_active = std::max(peak_active, st.active_tokens);
                bytes_per_token_peak = std::max(bytes_per_token_peak, st.bytes_per_active_token);
            };

            tradeagg::timestamp_ms next_tick = s.config().start_ms + tick_ms;
            tradeagg::timestamp_ms last_clock = std::numeric_limits<tradeagg::timestamp_ms>::min();
            bool clock_failed = false;

            state.ResumeTiming();
            const auto t0 = bench_clock::now();
            s.for_each_trade([&](const tradeagg::trade_view& t) {
                if (t.ts_ms >= next_tick) {
                    // Event time entered a new minute: tick the clock, 5 s behind it.
                    last_clock = t.ts_ms - clock_lag_ms;
                    clock_failed = clock_failed || producer.advance_time(last_clock) !=
                                                       tradeagg::reject_reason::none;
                    next_tick = (t.ts_ms / tick_ms + 1) * tick_ms;
                }
                const tradeagg::reject_reason r = producer.push(t);
                ++rejected[static_cast<std::size_t>(r)];
                if (++offered % sample_every == 0) {
                    sample();
                }
            });
            wait_until_applied(*p, last_clock);
            const auto t1 = bench_clock::now();
            state.PauseTiming();
            sample();

            // Outside the clock: every token is now spent; give everything back and measure.
            const tradeagg::timestamp_ms final_clock = s.last_ms() + final_jump_ms;
            clock_failed =
                clock_failed || producer.advance_time(final_clock) != tradeagg::reject_reason::none;
            wait_until_applied(*p, final_clock);
            const auto report = p->reclaim_now();
            const tradeagg::process_stats after = tradeagg::read_process_stats();
            const malloc_bytes heap_after = read_malloc_bytes();
            // Diagnostic only, after every figure above: what one more malloc_trim, called
            // here once the library is done, would give back.
            tradeagg::detail::return_free_memory_to_system();
            const std::size_t rss_trimmed = tradeagg::read_process_stats().resident_bytes;
            const tradeagg::pipeline_stats& fin = report.after;

            accepted = rejected[static_cast<std::size_t>(tradeagg::reject_reason::none)];
            std::uint64_t refused = 0;
            for (std::size_t r = 1; r < rejected.size(); ++r) {
                refused += rejected[r];
            }
            const auto reason = [&](tradeagg::reject_reason r) {
                return static_cast<double>(rejected[static_cast<std::size_t>(r)]);
            };
            const double cpu = after.cpu_seconds - before.cpu_seconds;

            state.counters["rss_before_mb"] = mib(before.resident_bytes);
            state.counters["peak_rss_mb"] = mib(peak_rss);
            state.counters["final_rss_mb"] = mib(after.resident_bytes);
            state.counters["final_vs_before"] = static_cast<double>(after.resident_bytes) /
                                                static_cast<double>(before.resident_bytes);
            state.counters["vmhwm_mb"] = mib(after.peak_resident_bytes);
            state.counters["arena_peak_mb"] = mib(arena_peak);
            state.counters["heap_inuse_peak_mb"] = mib(heap_inuse_peak);
            state.counters["heap_inuse_final_mb"] = mib(fin.heap_inuse_bytes);
            state.counters["bytes_per_active_token"] = bytes_per_token_peak;
            state.counters["token_state_bytes"] =
                static_cast<double>(pipeline_type::token_state_bytes);
            state.counters["peak_active_tokens"] = static_cast<double>(peak_active);
            state.counters["tokens_evicted"] = static_cast<double>(fin.tokens_evicted);
            state.counters["reclamations"] = static_cast<double>(fin.reclamations);
            state.counters["gc_cpu_fraction"] =
                cpu > 0.0 ? (fin.reclaim_cpu_seconds - reclaim_cpu_before) / cpu : 0.0;
            state.counters["trades_per_second"] =
                static_cast<double>(accepted) / seconds_between(t0, t1);
            state.counters["rejected"] = static_cast<double>(refused);
            state.counters["rejected_memory_limit"] = reason(tradeagg::reject_reason::memory_limit);
            state.counters["rejected_active_token_limit"] =
                reason(tradeagg::reject_reason::active_token_limit);
            state.counters["rejected_token_limit"] = reason(tradeagg::reject_reason::token_limit);
            state.counters["late"] = static_cast<double>(fin.late);
            state.counters["interned_tokens"] = static_cast<double>(fin.interned_tokens);
            state.counters["tokens_released"] = static_cast<double>(fin.tokens_released);
            state.counters["final_active_tokens"] = static_cast<double>(fin.active_tokens);
            state.counters["table_final_mb"] = mib(fin.table_bytes);
            state.counters["arena_final_mb"] = mib(fin.arena_reserved_bytes);
            state.counters["buffer_final_mb"] = mib(fin.buffer_bytes);
            state.counters["ingress_mb"] = mib(fin.ingress_bytes);
            state.counters["malloc_in_use_final_mb"] = mib(heap_after.in_use);
            state.counters["malloc_free_final_mb"] = mib(heap_after.free);
            state.counters["final_rss_after_trim_mb"] = mib(rss_trimmed);
            state.counters["samples"] = static_cast<double>(samples);
            state.counters["stream_tokens"] = static_cast<double>(s.tokens());
            state.counters["stream_trades"] = static_cast<double>(s.trades());

            if (clock_failed) {
                state.SkipWithError("BM_memory_churn: advance_time was refused");
            } else if (fin.applied + fin.late != accepted) {
                state.SkipWithError("BM_memory_churn: stats().applied + late != accepted pushes");
            }
            // Not a benchmark error: refused pushes are reported (rejected_*) and bench/run
            // prints a failed bar, so the numbers stay visible.
        } // still outside the clock: the producer, then the pipeline, are destroyed here
        state.ResumeTiming();
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(accepted));
}

/// One iteration streams 1M tokens (several seconds); repetitions come from the command line.
void configure_churn(benchmark::internal::Benchmark* b) {
    b->Iterations(1)->Unit(benchmark::kMillisecond)->UseRealTime();
}

} // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
        return 1;
    }
    // The streams are generated on first use, before the first clock that needs them.
    benchmark::AddCustomContext("stream_trades", std::to_string(bench_stream_config.trades));
    benchmark::AddCustomContext("stream_tokens", std::to_string(bench_stream_config.tokens));
    benchmark::AddCustomContext("stream_zipf_s", "1.0");

    configure(benchmark::RegisterBenchmark("BM_transport_spsc", bm_transport_spsc));
    configure(benchmark::RegisterBenchmark("BM_naive", bm_naive));
    configure(benchmark::RegisterBenchmark("BM_pipeline/throughput_policy",
                                           bm_pipeline<tradeagg::throughput_policy>));
    configure(benchmark::RegisterBenchmark("BM_pipeline/latency_policy",
                                           bm_pipeline<tradeagg::latency_policy>));
    configure(benchmark::RegisterBenchmark("BM_pipeline/memory_constrained_policy",
                                           bm_pipeline<tradeagg::memory_constrained_policy>));
    configure(benchmark::RegisterBenchmark("BM_pipeline_hot/throughput_policy",
                                           bm_pipeline<tradeagg::throughput_policy, hot_stream>));
    // Their stream (the names, ~28 MB) is built by the first of them to run, before its clock.
    configure_churn(benchmark::RegisterBenchmark("BM_memory_churn/throughput_policy",
                                                 bm_memory_churn<tradeagg::throughput_policy>));
    configure_churn(benchmark::RegisterBenchmark("BM_memory_churn/latency_policy",
                                                 bm_memory_churn<tradeagg::latency_policy>));
    configure_churn(
        benchmark::RegisterBenchmark("BM_memory_churn/memory_constrained_policy",
                                     bm_memory_churn<tradeagg::memory_constrained_policy>));

    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
