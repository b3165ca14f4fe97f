// The pipeline's life cycle and flow control: draining on stop, backpressure, producers,
// late-trade reporting, sink failures, statistics, resync.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include <doctest/doctest.h>

#include <tradeagg/tradeagg.hpp>

#include "compare.hpp"
#include "reference_model.hpp"
#include "trade_stream.hpp"

using namespace tradeagg;
using namespace tradeagg::testing;
using namespace std::chrono_literals;

namespace {

/// Total trades over every token's daily candles: each accepted trade is in exactly one.
std::uint64_t trades_in_sink(const memory_sink& sink) {
    std::uint64_t n = 0;
    for (const std::string& token : sink.tokens()) {
        for (const candle& c : sink.candles(token, intervals::d1)) {
            n += c.trades;
        }
    }
    return n;
}

std::vector<token_id> intern_tokens(auto& p, int count) {
    std::vector<token_id> ids;
    for (int i = 0; i < count; ++i) {
        ids.push_back(p.intern("TOK" + std::to_string(i)).id);
    }
    return ids;
}

} // namespace

TEST_CASE_TEMPLATE("stop() drains every accepted trade into the sink", Policy, throughput_policy,
                   latency_policy, memory_constrained_policy) {
    memory_sink sink;
    std::atomic<std::uint64_t> late{0};
    runtime_config cfg;
    cfg.shards = 2;
    cfg.ring_capacity = 256;
    cfg.on_late_trade = [&late](const late_trade&) { late.fetch_add(1); };
    {
        pipeline<Policy, memory_sink&> p{cfg, sink};
        const auto ids = intern_tokens(p, 64);
        p.start();
        std::vector<std::thread> producers;
        for (int w = 0; w < 3; ++w) {
            producers.emplace_back([&p, &ids, w] {
                auto h = p.make_producer();
                for (int i = 0; i < 20'000; ++i) {
                    const trade t{ids[static_cast<std::size_t>(i * 7 + w) % ids.size()],
                                  side::sell,
                                  10.0 + i % 13,
                                  1.0,
                                  1'000'000 + i,
                                  static_cast<std::uint64_t>(w * 100'000 + i)};
                    REQUIRE(h.push(t) == reject_reason::none);
                }
            });
        }
        for (auto& t : producers) {
            t.join();
        }
        // No stop(): the destructor must drain as well.
    }
    // Producers interleave on shared tokens, so some trades may arrive beyond the allowed
    // lateness; each accepted trade is either in the candles or counted late.
    CHECK(trades_in_sink(sink) + late.load() == 60'000);
}

TEST_CASE("a pipeline stopped without start() still delivers what was pushed") {
    pipeline<throughput_policy, memory_sink> p{runtime_config{}};
    CHECK(p.push(trade_view{"SOL", 1.0, 1.0, side::buy, 5'000, 1}) == reject_reason::none);
    auto h = p.make_producer();
    CHECK(h.push(trade_view{"SOL", 2.0, 1.0, side::buy, 5'001, 2}) == reject_reason::none);
    p.stop();
    CHECK(trades_in_sink(p.sink()) == 2);
    CHECK_THROWS_AS(p.start(), std::logic_error);
    p.stop(); // idempotent
}

TEST_CASE("start() twice is an error") {
    pipeline<throughput_policy> p{runtime_config{}};
    p.start();
    CHECK_THROWS_AS(p.start(), std::logic_error);
}

TEST_CASE_TEMPLATE("a full ring: try_push refuses, push waits, a slow sink loses nothing", Policy,
                   throughput_policy, latency_policy, memory_constrained_policy) {
    std::atomic<int> batches{0};
    callback_sink slow([&batches](const flush_batch&) {
        ++batches;
        std::this_thread::sleep_for(2ms);
    });
    runtime_config cfg;
    cfg.ring_capacity = 16;
    cfg.batch_width = 4;
    cfg.flush_interval = 1ms;
    pipeline<Policy, callback_sink&> p{cfg, slow};
    const auto ids = intern_tokens(p, 8);
    const auto nth = [&ids](int i) {
        return trade{ids[static_cast<std::size_t>(i) % ids.size()],
                     side::buy,
                     1.0,
                     1.0,
                     10'000 + i,
                     static_cast<std::uint64_t>(i)};
    };
    auto h = p.make_producer();

    // Not started yet, so nothing drains: the ring fills and try_push must refuse.
    std::uint64_t accepted = 0;
    std::uint64_t refused = 0;
    for (int i = 0; i < 32; ++i) {
        const push_result r = h.try_push(nth(i));
        CHECK(r.reason == reject_reason::none);
        (r ? accepted : refused) += 1;
    }
    CHECK(accepted <= 16);
    CHECK(refused >= 16);

    // push() into the full ring waits; the pipeline starts only once it is seen waiting, and
    // then every trade goes through a sink that sleeps on every batch.
    std::thread pusher([&h, &nth] {
        for (int i = 32; i < 2'000; ++i) {
            REQUIRE(h.push(nth(i)) == reject_reason::none);
        }
    });
    while (p.stats().backpressure_waits == 0) {
        std::this_thread::yield();
    }
    p.start();
    pusher.join();
    accepted += 2'000 - 32;
    p.stop();

    const pipeline_stats st = p.stats();
    CHECK(st.full_rejections == refused);
    CHECK(st.backpressure_waits > 0);
    CHECK(st.accepted == accepted);
    CHECK(st.applied == accepted);
    CHECK(batches.load() >= 1);
}

TEST_CASE("bulk try_push stops at the first full ring and tells where to resume") {
    callback_sink stalled([](const flush_batch&) { std::this_thread::sleep_for(5ms); });
    runtime_config cfg;
    cfg.ring_capacity = 8;
    cfg.batch_width = 1;
    pipeline<memory_constrained_policy, callback_sink&> p{cfg, stalled};
    const token_id id = p.intern("SOL").id;
    std::vector<trade> batch;
    for (int i = 0; i < 200; ++i) {
        // Every tenth trade is invalid and counted as rejected exactly once.
        batch.push_back(trade{id, side::buy, i % 10 == 9 ? -1.0 : 1.0, 1.0, 1'000 + i,
                              static_cast<std::uint64_t>(i)});
    }
    auto h = p.make_producer();
    std::size_t done = h.try_push(batch); // not started: the ring fills and stays full
    CHECK(done < batch.size());
    CHECK(done >= 8);
    p.start();
    while (done < batch.size()) {
        done += h.try_push(std::span<const trade>(batch).subspan(done));
        std::this_thread::yield();
    }
    p.stop();
    const pipeline_stats st = p.stats();
    CHECK(st.accepted == 180);
    CHECK(st.applied == 180);
    CHECK(st.rejected == 20);
    CHECK(st.rejected_by_reason[static_cast<std::size_t>(reject_reason::price_not_positive)] == 20);
}

TEST_CASE("stop() while producers push: every push reported accepted reaches the sink") {
    runtime_config cfg;
    cfg.shards = 2;
    cfg.ring_capacity = 64;
    pipeline<throughput_policy, memory_sink> p{cfg};
    const auto ids = intern_tokens(p, 16);
    p.start();
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> producers;
    for (int w = 0; w < 3; ++w) {
        producers.emplace_back([&, w] {
            auto h = p.make_producer();
            while (!go.load()) {
                std::this_thread::yield();
            }
            std::vector<trade> chunk;
            for (std::uint64_t i = 0;; i += 8) {
                chunk.clear();
                for (std::uint64_t k = 0; k < 8; ++k) {
                    chunk.push_back(trade{ids[(i + k) % ids.size()], side::buy, 1.0, 1.0,
                                          static_cast<timestamp_ms>(1'000'000 + i + k),
                                          static_cast<std::uint64_t>(w) << 40 | (i + k)});
                }
                if (w == 2) { // the shared queue path, one at a time
                    for (const trade& t : chunk) {
                        const reject_reason r = p.push(t);
                        if (r == reject_reason::stopped) {
                            return;
                        }
                        accepted += 1;
                    }
                    continue;
                }
                const std::size_t n = h.push(chunk);
                accepted += n;
                if (n < chunk.size()) {
                    return; // stopped
                }
            }
        });
    }
    go = true;
    while (p.stats().accepted < 10'000) { // stop mid-stream, whatever the machine's speed
        std::this_thread::yield();
    }
    p.stop();
    for (auto& t : producers) {
        t.join();
    }
    const pipeline_stats st = p.stats();
    CHECK(accepted.load() > 0);
    CHECK(st.accepted == accepted.load());
    CHECK(st.applied + st.late == accepted.load()); // producers race on tokens: some are late
    CHECK(trades_in_sink(p.sink()) == st.applied);
    CHECK(st.rejected_by_reason[static_cast<std::size_t>(reject_reason::stopped)] > 0);
}

TEST_CASE("late trades are counted per token, reported to the callback, never merged") {
    std::mutex m;
    std::vector<late_trade> reported;
    std::vector<std::string> names;
    runtime_config cfg;
    cfg.on_late_trade = [&](const late_trade& l) {
        const std::lock_guard lock(m);
        reported.push_back(l);
        names.emplace_back(l.token);
    };
    pipeline<throughput_policy, memory_sink> p{cfg}; // 2 s allowed lateness
    p.start();
    auto h = p.make_producer();
    CHECK(h.push(trade_view{"SOL", 10.0, 1.0, side::buy, 100'000, 1}) == reject_reason::none);
    CHECK(h.push(trade_view{"SOL", 11.0, 1.0, side::buy, 105'000, 2}) == reject_reason::none);
    CHECK(h.push(trade_view{"SOL", 99.0, 1.0, side::buy, 100'500, 3}) == reject_reason::none);
    CHECK(h.push(trade_view{"SOL", 12.0, 1.0, side::buy, 103'500, 4}) == reject_reason::none);
    p.stop();
    const pipeline_stats st = p.stats();
    CHECK(st.accepted == 4);
    CHECK(st.late == 1);
    CHECK(st.applied == 3);
    REQUIRE(reported.size() == 1);
    CHECK(reported[0].t.id == 3);
    CHECK(reported[0].watermark == 105'000);
    CHECK(names[0] == "SOL");
    const auto minute = p.sink().candles("SOL", intervals::m1);
    REQUIRE(minute.size() == 1);
    CHECK(minute[0].trades == 3);
    CHECK(minute[0].high == 12.0); // the late 99.0 was not merged
}

namespace {
struct two_producers : throughput_policy {
    static constexpr std::size_t max_producers = 2;
};
} // namespace

TEST_CASE("producer handles are limited by the policy and recycled") {
    pipeline<two_producers, memory_sink> p{runtime_config{}};
    p.start();
    {
        auto a = p.make_producer();
        auto b = p.make_producer();
        CHECK_THROWS_AS((void)p.make_producer(), std::length_error);
        CHECK(p.stats().producers == 2);
        CHECK(a.push(trade_view{"A", 1.0, 1.0, side::buy, 1'000, 1}) == reject_reason::none);
        auto moved = std::move(b);
        CHECK(moved.push(trade_view{"A", 1.0, 1.0, side::buy, 1'001, 2}) == reject_reason::none);
    }
    CHECK(p.stats().producers == 0);
    auto again = p.make_producer(); // a recycled slot keeps its ring and its counters
    CHECK(again.push(trade_view{"A", 1.0, 1.0, side::buy, 1'002, 3}) == reject_reason::none);
    p.stop();
    CHECK(p.stats().accepted == 3);
    CHECK(trades_in_sink(p.sink()) == 3);
}

namespace {

/// Pushes one trade and waits until the sink has been called.
template <class Pipeline>
void push_until_consumed(Pipeline& p, const std::atomic<int>& calls) {
    CHECK(p.push(trade_view{"SOL", 1.0, 1.0, side::buy, 1'000, 1}) == reject_reason::none);
    while (calls.load() == 0) {
        std::this_thread::sleep_for(1ms);
    }
}

} // namespace

TEST_CASE("a throwing sink is counted and the worker carries on") {
    std::atomic<int> calls{0};
    callback_sink flaky([&calls](const flush_batch&) {
        if (calls++ == 0) {
            throw std::runtime_error("sink down");
        }
    });
    runtime_config cfg;
    cfg.flush_interval = 1ms;
    pipeline<throughput_policy, callback_sink&> p{cfg, flaky};
    p.start();
    push_until_consumed(p, calls);
    CHECK(p.push(trade_view{"SOL", 1.0, 1.0, side::buy, 2'000, 2}) == reject_reason::none);
    p.stop();
    CHECK(p.stats().sink_errors == 1);
    CHECK(calls.load() >= 2);
    CHECK(p.stats().applied == 2);
}

TEST_CASE_TEMPLATE("coalescing: a hot token yields one update per interval per flush", Policy,
                   throughput_policy, latency_policy, memory_constrained_policy) {
    runtime_config cfg;
    cfg.flush_interval = std::chrono::milliseconds{60'000}; // only the final flush
    pipeline<Policy, memory_sink> p{cfg};
    const token_id id = p.intern("HOT").id;
    auto h = p.make_producer();
    std::vector<trade> burst;
    for (int i = 0; i < 10'000; ++i) {
        burst.push_back(trade{id, side::buy, 1.0 + i % 3, 1.0, 3'600'000 + i % 500,
                              static_cast<std::uint64_t>(i)});
    }
    p.start();
    CHECK(h.push(burst) == burst.size());
    p.stop();
    const pipeline_stats st = p.stats();
    CHECK(st.applied == 10'000);
    CHECK(st.token_updates == st.flushes);
    CHECK(st.candle_updates <= st.flushes * Policy::intervals.size());
    CHECK(p.sink().candles("HOT", intervals::s1).size() == 1);
}

/// throughput_policy handing changes over whenever its rings run dry.
struct idle_emitting_throughput : throughput_policy {
    using emit = emit_when_idle;
};

TEST_CASE_TEMPLATE("idle emission: each change reaches the sink once, without waiting for a tick",
                   Policy, latency_policy, idle_emitting_throughput) {
    runtime_config cfg;
    cfg.flush_interval = std::chrono::milliseconds{60'000}; // no tick while the test runs
    std::mutex m;
    std::map<std::string, std::vector<std::uint64_t>> seen; // token -> latest ids handed over
    pipeline<Policy, callback_sink> p{cfg, callback_sink([&](const flush_batch& b) {
                                          const std::lock_guard lock(m);
                                          for (const token_update& u : b.tokens) {
                                              seen[std::string(u.name)].push_back(u.latest.id);
                                          }
                                      })};
    const token_id a = p.intern("A").id;
    const token_id b = p.intern("B").id;
    p.start();
    auto h = p.make_producer();
    const auto last_of = [&](const std::string& token) -> std::uint64_t {
        const std::lock_guard lock(m);
        const auto it = seen.find(token);
        return it == seen.end() || it->second.empty() ? 0 : it->second.back();
    };
    std::vector<std::uint64_t> b_ids;
    for (std::uint64_t r = 1; r <= 50; ++r) {
        const auto ts = static_cast<timestamp_ms>(3'600'000 + r);
        if (r % 2 == 0) {
            REQUIRE(h.push(trade{b, side::sell, 2.0, 1.0, ts, r}) == reject_reason::none);
            b_ids.push_back(r);
        }
        REQUIRE(h.push(trade{a, side::buy, 1.0, 1.0, ts, r}) == reject_reason::none);
        // Idle emission hands A over long before the 60 s tick; the deadline only keeps a
        // broken build from hanging.
        const auto deadline = std::chrono::steady_clock::now() + 30s;
        while (last_of("A") != r && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(50us);
        }
        REQUIRE(last_of("A") == r);
    }
    p.stop(); // nothing changed since the last hand-over: the final flush adds nothing
    std::vector<std::uint64_t> a_ids(50);
    for (std::uint64_t r = 1; r <= 50; ++r) {
        a_ids[r - 1] = r;
    }
    const std::lock_guard lock(m);
    CHECK(seen["A"] == a_ids); // every change once, in order, none repeated
    CHECK(seen["B"] == b_ids); // B changed before A each time: handed over with it, once
    CHECK(p.stats().token_updates == a_ids.size() + b_ids.size());
}

TEST_CASE("emission on the tick: a quiet pipeline holds changes until the tick or stop()") {
    runtime_config cfg;
    cfg.flush_interval = std::chrono::milliseconds{60'000};
    std::atomic<int> updates{0};
    pipeline<throughput_policy, callback_sink> p{cfg, callback_sink([&](const flush_batch& b) {
                                                     updates.fetch_add(
                                                         static_cast<int>(b.tokens.size()));
                                                 })};
    const token_id a = p.intern("A").id;
    p.start();
    auto h = p.make_producer();
    REQUIRE(h.push(trade{a, side::buy, 1.0, 1.0, 3'600'000, 1}) == reject_reason::none);
    for (int i = 0; i < 200 && !h.drained(); ++i) {
        std::this_thread::sleep_for(1ms);
    }
    std::this_thread::sleep_for(20ms); // applied by now, and held: the tick is a minute away
    CHECK(updates.load() == 0);
    p.stop();
    CHECK(updates.load() == 1);
}

TEST_CASE_TEMPLATE("a slow sink shows in the hand-over times, which every flush records", Policy,
                   throughput_policy, latency_policy) {
    std::atomic<int> calls{0};
    callback_sink slow([&calls](const flush_batch&) {
        ++calls;
        std::this_thread::sleep_for(3ms);
    });
    runtime_config cfg;
    cfg.flush_interval = 1ms;
    pipeline<Policy, callback_sink&> p{cfg, slow};
    p.start();
    push_until_consumed(p, calls);
    p.stop();
    const latency_histogram::counts c = p.handover_counts();
    const pipeline_stats st = p.stats();
    CHECK(st.flushes >= 1);
    // Ticks with nothing to hand over are timed too: at least one sample per batch handed.
    CHECK(c.samples() >= 1);
    CHECK(st.handovers.samples == c.samples());
    CHECK(c.max_ns >= 3'000'000);
    CHECK(st.handovers.max_ns >= 3e6);
    CHECK(st.handovers.p50_ns <= st.handovers.max_ns);
}

TEST_CASE("worker_cpus pins each shard's worker to its CPU, round robin") {
    const std::vector<unsigned> allowed = detail::allowed_cpus();
    REQUIRE(!allowed.empty());
    runtime_config cfg;
    cfg.shards = 3;
    cfg.worker_cpus = {allowed.back()};
    std::mutex mutex;
    std::vector<std::vector<unsigned>> seen(3);
    callback_sink record([&](const flush_batch& b) {
        const std::lock_guard lock(mutex);
        seen[b.shard] = detail::allowed_cpus(); // the worker's own affinity
    });
    pipeline<throughput_policy, callback_sink&> p{cfg, record};
    p.start();
    for (int i = 0; i < 30; ++i) {
        CHECK(p.push(trade_view{"T" + std::to_string(i), 1.0, 1.0, side::buy, 1'000, 1}) ==
              reject_reason::none);
    }
    p.stop();
    const pipeline_stats st = p.stats();
    const std::lock_guard lock(mutex);
    for (std::size_t s = 0; s < 3; ++s) {
        CHECK(st.shards[s].pinned_cpu == static_cast<int>(allowed.back()));
        if (st.shards[s].applied > 0) {
            CHECK(seen[s] == std::vector<unsigned>{allowed.back()});
        }
    }
    pipeline<throughput_policy, null_sink> unpinned{runtime_config{}};
    unpinned.start();
    unpinned.stop();
    CHECK(unpinned.stats().shards[0].pinned_cpu == -1);
}

TEST_CASE("an idle spin_then_yield worker naps, and a push wakes it") {
    runtime_config cfg;
    cfg.shards = 2;
    cfg.flush_interval = 1ms;
    std::atomic<int> batches{0};
    pipeline<throughput_policy, callback_sink> p{
        cfg, callback_sink([&](const flush_batch&) { ++batches; })};
    p.start();
    std::this_thread::sleep_for(50ms); // past the spins and yields
    // Two workers spinning or yielding for 300 ms would take about 600 ms of CPU.
    const double before = read_process_stats().cpu_seconds;
    std::this_thread::sleep_for(300ms);
    const double idle_cpu = read_process_stats().cpu_seconds - before;
    CHECK(idle_cpu < 0.15);
    auto h = p.make_producer();
    CHECK(h.push(trade_view{"SOL", 1.0, 1.0, side::buy, 1'000, 1}) == reject_reason::none);
    for (int i = 0; i < 1'000 && batches.load() == 0; ++i) {
        std::this_thread::sleep_for(1ms);
    }
    CHECK(batches.load() > 0);
    CHECK(p.stats().applied == 1);
    p.stop();
}

TEST_CASE("statistics describe the run") {
    runtime_config cfg;
    cfg.shards = 2;
    pipeline<latency_policy, null_sink> p{cfg};
    const auto ids = intern_tokens(p, 100);
    p.start();
    auto h = p.make_producer();
    for (int i = 0; i < 50'000; ++i) {
        (void)h.push(trade{ids[static_cast<std::size_t>(i) % ids.size()], side::buy, 1.0, 1.0,
                           1'000'000 + i, static_cast<std::uint64_t>(i)});
    }
    p.stop();
    const pipeline_stats st = p.stats();
    CHECK(st.policy == "latency_policy");
    CHECK(st.accepted == 50'000);
    CHECK(st.active_tokens == 100);
    CHECK(st.interned_tokens == 100);
    CHECK(st.shards.size() == 2);
    CHECK(st.shards[0].active_tokens + st.shards[1].active_tokens == 100);
    CHECK(st.shards[0].applied > 0);
    CHECK(st.shards[1].applied > 0);
    CHECK(st.queue_depth() == 0);
    CHECK(st.apply_latency.samples == 50'000 / latency_policy::latency_sample_every);
    CHECK(st.apply_latency.p50_ns > 0);
    CHECK(st.apply_latency.p50_ns <= st.apply_latency.p99_ns);
    CHECK(st.apply_latency.p99_ns <= st.apply_latency.max_ns);
    CHECK(st.arena_live_bytes >= 100 * pipeline<latency_policy>::token_state_bytes);
    CHECK(st.arena_reserved_bytes >= st.arena_live_bytes);
    CHECK(st.bytes_per_active_token >=
          static_cast<double>(pipeline<latency_policy>::token_state_bytes));
    CHECK(st.ingress_bytes > 0);
    CHECK(st.table_bytes > 0);
    CHECK(st.flushes > 0);
}

namespace {

/// Polls `done` until it holds or 60 s pass (a hung worker fails the test, not the run).
template <class F>
bool wait_for(F&& done) {
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (!done()) {
        if (std::chrono::steady_clock::now() >= deadline) {
            return false;
        }
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

bool same_latest(const latest_trade& a, const latest_trade& b) {
    return a.price == b.price && a.quantity == b.quantity && a.taker == b.taker &&
           a.ts_ms == b.ts_ms && a.id == b.id;
}

bool same_rolling(const rolling_stats& a, const rolling_stats& b) {
    return a.window_start == b.window_start && a.window_end == b.window_end && a.open == b.open &&
           a.high == b.high && a.low == b.low && a.last == b.last && a.volume == b.volume &&
           a.quote_volume == b.quote_volume && a.vwap == b.vwap && a.trades == b.trades &&
           a.price_change == b.price_change && a.price_change_percent == b.price_change_percent;
}

/// The reference's candle, as the pipeline should report it (sums to rounding).
bool equals_reference(const candle& got, const candle& want) {
    return got.open_time == want.open_time && got.close_time == want.close_time &&
           got.open == want.open && got.high == want.high && got.low == want.low &&
           got.close == want.close && got.trades == want.trades &&
           got.first_trade_id == want.first_trade_id && got.last_trade_id == want.last_trade_id &&
           got.closed == want.closed && close_enough(got.volume, want.volume) &&
           close_enough(got.quote_volume, want.quote_volume) &&
           close_enough(got.taker_buy_volume, want.taker_buy_volume) &&
           close_enough(got.taker_buy_quote_volume, want.taker_buy_quote_volume);
}

/// (token, interval width in ms, open time)
using candle_key = std::tuple<std::string, std::int64_t, timestamp_ms>;

/// Every update in the order it arrived, and the latest version of each in a memory_sink.
class recording_sink {
public:
    struct candle_record {
        candle_key key;
        candle data;
    };
    struct token_record {
        std::string token;
        latest_trade latest;
        rolling_stats rolling;
    };
    struct log {
        std::vector<candle_record> candles;
        std::vector<token_record> tokens;
    };

    void consume(const flush_batch& batch) {
        latest_.consume(batch);
        const std::lock_guard lock(mutex_);
        for (const candle_update& u : batch.candles) {
            log_.candles.push_back(
                {candle_key{std::string(u.name), u.width.count(), u.data.open_time}, u.data});
        }
        for (const token_update& u : batch.tokens) {
            log_.tokens.push_back({std::string(u.name), u.latest, u.rolling});
        }
    }

    [[nodiscard]] log snapshot() const {
        const std::lock_guard lock(mutex_);
        return log_;
    }
    [[nodiscard]] const memory_sink& latest() const { return latest_; }

private:
    memory_sink latest_;
    mutable std::mutex mutex_;
    log log_;
};

} // namespace

TEST_CASE_TEMPLATE("resync() hands the sink again every candle and token the pipeline holds",
                   Policy, throughput_policy, latency_policy, memory_constrained_policy) {
    stream_options o;
    o.tokens = 150; // more than latency_policy's flush_threshold: its resync takes batches
    o.trades = 20'000;
    o.ms_per_trade = 30; // 10 minutes across a UTC midnight: every interval holds a bucket
    const trade_stream s = make_stream(o);
    reference_model<Policy> ref;
    for (const stream_trade& st : s.arrivals) {
        ref.push(s.names[st.token_index], st.t);
    }
    REQUIRE(ref.late_total() > 0);

    std::mutex late_mutex;
    late_counts late;
    runtime_config cfg;
    cfg.shards = 2;
    cfg.on_late_trade = [&](const late_trade& l) {
        const std::lock_guard lock(late_mutex);
        ++late[std::string(l.token)];
    };
    recording_sink sink;
    pipeline<Policy, recording_sink&> p{cfg, sink};
    std::vector<token_id> ids;
    for (const std::string& name : s.names) {
        ids.push_back(p.intern(name).id);
    }
    std::vector<trade> trades;
    for (const stream_trade& st : s.arrivals) {
        trades.push_back(st.t);
        trades.back().token = ids[st.token_index];
    }
    p.start();
    auto h = p.make_producer(); // one producer: each token's arrival order is the stream's
    const std::span<const trade> all(trades);
    const std::size_t half = trades.size() / 2;
    CHECK(h.push(all.first(half)) == half);
    p.resync(); // while trades flow: must change no result
    CHECK(h.push(all.subspan(half)) == trades.size() - half);
    REQUIRE(wait_for([&] {
        const pipeline_stats st = p.stats();
        return st.applied + st.late == trades.size();
    }));
    // A flush on every shard after the last trade: nothing is left to emit, so all the
    // pipeline hands over from now on comes from the resync. That flush also served the
    // first resync, if no earlier one did.
    (void)p.reclaim_now();
    CHECK(p.stats().resyncs == cfg.shards);
    REQUIRE(p.stats().active_tokens == ref.tokens().size());

    const recording_sink::log before = sink.snapshot();
    std::map<candle_key, candle> latest_before;
    for (const auto& r : before.candles) {
        latest_before[r.key] = r.data;
    }
    std::map<std::string, recording_sink::token_record> token_before;
    for (const auto& r : before.tokens) {
        token_before[r.token] = r;
    }

    p.resync();
    REQUIRE(wait_for([&] { return p.stats().resyncs == 2 * cfg.shards; }));
    const recording_sink::log after_log = sink.snapshot();
    const std::span<const recording_sink::candle_record> resent =
        std::span(after_log.candles).subspan(before.candles.size());
    const std::span<const recording_sink::token_record> resent_tokens =
        std::span(after_log.tokens).subspan(before.tokens.size());

    // What the pipeline holds: every candle not yet final at its token's watermark.
    std::map<candle_key, candle> held;
    for (const auto& [name, data] : ref.tokens()) {
        for (const interval width : Policy::intervals) {
            for (const candle& c : ref.candles(name, width)) {
                if (data.watermark <
                    c.open_time + width.count() + Policy::allowed_lateness.count()) {
                    held[candle_key{name, width.count(), c.open_time}] = c;
                }
            }
        }
    }
    // At least one candle per interval per token: the bucket holding its latest trade.
    REQUIRE(held.size() >= ref.tokens().size() * Policy::intervals.size());

    mismatch_log problems;
    const auto where = [](const candle_key& k) {
        return std::get<0>(k) + " " + std::to_string(std::get<1>(k)) + " ms @" +
               std::to_string(std::get<2>(k));
    };
    std::map<candle_key, int> times_resent;
    for (const auto& r : resent) {
        ++times_resent[r.key];
        const auto was = latest_before.find(r.key);
        if (was == latest_before.end() || r.data != was->second) {
            problems.add(where(r.key) + ": differs from its latest version before the resync");
        }
        const auto want = held.find(r.key);
        if (want == held.end()) {
            problems.add(where(r.key) + ": resent, but final (or unknown to the reference)");
        } else if (!equals_reference(r.data, want->second)) {
            problems.add(where(r.key) + ": differs from the reference");
        }
    }
    for (const auto& [key, c] : held) {
        const auto it = times_resent.find(key);
        const int n = it == times_resent.end() ? 0 : it->second;
        if (n != 1) {
            problems.add(where(key) + ": resent " + std::to_string(n) + " times, want once");
        }
    }
    std::map<std::string, int> tokens_resent;
    for (const auto& r : resent_tokens) {
        ++tokens_resent[r.token];
        const auto was = token_before.find(r.token);
        if (was == token_before.end() || !same_latest(r.latest, was->second.latest) ||
            !same_rolling(r.rolling, was->second.rolling)) {
            problems.add(r.token + ": token update differs from its version before the resync");
        } else if (!same_latest(r.latest, ref.latest(r.token)) ||
                   r.rolling.trades != ref.rolling(r.token).trades ||
                   !close_enough(r.rolling.volume, ref.rolling(r.token).volume)) {
            problems.add(r.token + ": token update differs from the reference");
        }
    }
    for (const auto& [name, data] : ref.tokens()) {
        const auto it = tokens_resent.find(name);
        const int n = it == tokens_resent.end() ? 0 : it->second;
        if (n != 1) {
            problems.add(name + ": token update resent " + std::to_string(n) + " times");
        }
    }
    CHECK(tokens_resent.size() == ref.tokens().size());
    INFO(problems.text());
    CHECK(problems.count == 0);

    // The resyncs changed nothing: the final result is the reference's.
    p.stop();
    const pipeline_stats st = p.stats();
    CHECK(st.resyncs == 2 * cfg.shards);
    CHECK(st.late == ref.late_total());
    const mismatch_log final_log = compare_with_reference(sink.latest(), ref, &late);
    INFO(final_log.text());
    CHECK(final_log.count == 0);
}

namespace {

/// Names every token the same, for a token_book driven without a pipeline.
struct one_name_table {
    [[nodiscard]] std::string_view name(token_id) const noexcept { return "BOOK"; }
    void set_has_state(token_id, bool) noexcept {}
};

/// One collect of a book: the retired candles before it, then what it collected.
struct collected {
    std::vector<candle_update> candles;
    std::vector<token_update> tokens;
};

bool same_collect(const collected& a, const collected& b) {
    if (a.candles.size() != b.candles.size() || a.tokens.size() != b.tokens.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.candles.size(); ++i) {
        const candle_update& x = a.candles[i];
        const candle_update& y = b.candles[i];
        if (x.token != y.token || x.interval_index != y.interval_index || x.data != y.data) {
            return false;
        }
    }
    for (std::size_t i = 0; i < a.tokens.size(); ++i) {
        const token_update& x = a.tokens[i];
        const token_update& y = b.tokens[i];
        if (x.token != y.token || !same_latest(x.latest, y.latest) ||
            !same_rolling(x.rolling, y.rolling)) {
            return false;
        }
    }
    return true;
}

} // namespace

TEST_CASE_TEMPLATE("mark_all_dirty: the next collect emits all a book holds, later ones as before",
                   Policy, throughput_policy, latency_policy, memory_constrained_policy) {
    // Two books take the same trades and collect at the same points; before every fifth
    // collect one of them is marked all dirty. Every other collect must be the same in both,
    // and a marked one must emit exactly the candles still held, at their latest values. A
    // collect every few trades leaves most tokens unchanged between two collects, so a
    // marked collect that emitted only changed tokens or buckets would be caught.
    stream_options o;
    o.tokens = 20;
    o.trades = 12'000;
    o.ms_per_trade = 200; // 40 minutes: finest buckets retire into stored coarse ones
    o.late_fraction = 0.03;
    o.late_delay_ms = 900'000;
    o.max_jitter_ms = 900; // several finest buckets open at once
    const trade_stream s = make_stream(o);
    using state = detail::token_state<Policy>;
    one_name_table table;
    token_book<Policy> plain;
    token_book<Policy> marked;
    constexpr token_id never_traded = 100;
    (void)plain.get(never_traded, table); // state without a trade: nothing to emit
    (void)marked.get(never_traded, table);
    collected plain_out;
    collected marked_out;
    std::map<std::tuple<token_id, std::uint32_t, timestamp_ms>, candle> latest;
    std::size_t collects = 0;
    std::size_t resyncs = 0;
    std::size_t held_seen = 0; // candles a marked collect had to emit, summed
    mismatch_log problems;

    const auto collect = [&] {
        const bool resync = ++collects % 5 == 0;
        // Candles retired since the last collect come first; the same in both books.
        const std::size_t retired = marked_out.candles.size();
        if (resync) {
            marked.mark_all_dirty();
            // In slices of two tokens, as a shard hands a resync over.
            while (marked.collect(marked_out.candles, marked_out.tokens, 2) > 0) {
            }
        } else {
            marked.collect(marked_out.candles, marked_out.tokens);
        }
        plain.collect(plain_out.candles, plain_out.tokens);
        for (const candle_update& u : plain_out.candles) {
            latest[{u.token, u.interval_index, u.data.open_time}] = u.data;
        }
        if (!resync) {
            if (!same_collect(plain_out, marked_out)) {
                problems.add("collect " + std::to_string(collects) + " differs");
            }
        } else {
            ++resyncs;
            // Final candles cannot be held again (they were handed over on retiring).
            std::erase_if(latest, [&](const auto& entry) {
                const state* st = marked.find(std::get<0>(entry.first));
                const std::int64_t width = Policy::intervals[std::get<1>(entry.first)].count();
                return st == nullptr || st->watermark >= entry.second.open_time + width +
                                                             Policy::allowed_lateness.count();
            });
            collected plain_retired;
            collected marked_retired;
            plain_retired.candles.assign(
                plain_out.candles.begin(),
                plain_out.candles.begin() +
                    static_cast<std::ptrdiff_t>(std::min(retired, plain_out.candles.size())));
            marked_retired.candles.assign(marked_out.candles.begin(),
                                          marked_out.candles.begin() +
                                              static_cast<std::ptrdiff_t>(retired));
            if (!same_collect(plain_retired, marked_retired)) {
                problems.add("collect " + std::to_string(collects) + ": retired candles differ");
            }
            marked_out.candles.erase(marked_out.candles.begin(),
                                     marked_out.candles.begin() +
                                         static_cast<std::ptrdiff_t>(retired));
            // Exactly the candles still held: not final at the token's watermark.
            std::map<std::tuple<token_id, std::uint32_t, timestamp_ms>, int> want;
            for (const auto& entry : latest) {
                want[entry.first] = 0;
            }
            held_seen += want.size();
            for (const candle_update& u : marked_out.candles) {
                const auto key = std::make_tuple(u.token, u.interval_index, u.data.open_time);
                const auto it = want.find(key);
                if (it == want.end() || ++it->second > 1 || u.data != latest[key]) {
                    problems.add("collect " + std::to_string(collects) + ": token " +
                                 std::to_string(u.token) + " interval " +
                                 std::to_string(u.interval_index) + " @" +
                                 std::to_string(u.data.open_time) + " unexpected or differs");
                }
            }
            for (const auto& [key, n] : want) {
                if (n != 1) {
                    problems.add("collect " + std::to_string(collects) + ": a held candle of " +
                                 std::to_string(std::get<0>(key)) + " missing");
                }
            }
            std::size_t traded = 0;
            for (token_id t = 0; t < s.names.size(); ++t) {
                traded += marked.find(t) != nullptr ? 1 : 0;
            }
            if (marked_out.tokens.size() != traded) {
                problems.add("collect " + std::to_string(collects) + ": " +
                             std::to_string(marked_out.tokens.size()) + " token updates, want " +
                             std::to_string(traded));
            }
            for (const token_update& u : marked_out.tokens) {
                if (u.token == never_traded) {
                    problems.add("a token that never traded was emitted");
                }
            }
        }
        plain_out = {};
        marked_out = {};
    };

    for (std::size_t i = 0; i < s.arrivals.size(); ++i) {
        const stream_trade& st = s.arrivals[i];
        const auto id = static_cast<token_id>(st.token_index);
        state& a = plain.get(id, table);
        state& b = marked.get(id, table);
        if (!a.is_late(st.t)) {
            a.apply(st.t, plain_out.candles, plain.rolling_bytes());
            plain.mark_dirty(a);
        }
        if (!b.is_late(st.t)) {
            b.apply(st.t, marked_out.candles, marked.rolling_bytes());
            marked.mark_dirty(b);
        }
        if (i % 7 == 6) {
            collect();
        }
    }
    collect();
    CHECK(resyncs >= 300);
    CHECK(held_seen >= resyncs * o.tokens * Policy::intervals.size() / 2);
    INFO(problems.text());
    CHECK(problems.count == 0);

    // A state that took no trade has nothing to mark.
    token_book<Policy> empty;
    (void)empty.get(0, table);
    empty.mark_all_dirty();
    CHECK(empty.dirty_count() == 0);
}

namespace {

/// A sink that takes a resync handler, as the Redis sink does, and calls it when told to (as
/// its I/O thread would on finding the server empty), or from its first `consume`.
class resyncing_sink {
public:
    explicit resyncing_sink(bool resync_from_consume = false)
        : resync_from_consume_(resync_from_consume) {}

    void consume(const flush_batch& batch) {
        token_updates_.fetch_add(batch.tokens.size());
        const std::lock_guard lock(mutex_);
        if (!handler_) {
            consumed_without_handler_ = true;
        } else if (resync_from_consume_ && !resynced_from_consume_) {
            resynced_from_consume_ = true;
            handler_();
        }
    }

    void set_resync_handler(std::function<void()> handler) {
        const std::lock_guard lock(mutex_);
        handler_ = std::move(handler);
        ++handler_sets_;
    }

    /// Calls the handler; false if there is none.
    bool resync() {
        const std::lock_guard lock(mutex_);
        if (!handler_) {
            return false;
        }
        handler_();
        return true;
    }

    [[nodiscard]] bool has_handler() const {
        const std::lock_guard lock(mutex_);
        return static_cast<bool>(handler_);
    }
    [[nodiscard]] int handler_sets() const {
        const std::lock_guard lock(mutex_);
        return handler_sets_;
    }
    [[nodiscard]] bool consumed_without_handler() const {
        const std::lock_guard lock(mutex_);
        return consumed_without_handler_;
    }
    [[nodiscard]] std::size_t token_updates() const { return token_updates_.load(); }

private:
    const bool resync_from_consume_;
    mutable std::mutex mutex_;
    std::function<void()> handler_;
    int handler_sets_ = 0;
    bool consumed_without_handler_ = false;
    bool resynced_from_consume_ = false;
    std::atomic<std::size_t> token_updates_{0};
};

} // namespace

TEST_CASE("a sink with set_resync_handler can resync for exactly the pipeline's lifetime") {
    runtime_config cfg;
    cfg.shards = 2;
    SUBCASE("set at construction, called from another thread, cleared at destruction") {
        resyncing_sink sink;
        {
            pipeline<latency_policy, resyncing_sink&> p{cfg, sink};
            CHECK(sink.has_handler());
            CHECK(sink.handler_sets() == 1);
            p.start();
            for (int i = 0; i < 3; ++i) {
                CHECK(p.push(trade_view{"T" + std::to_string(i), 1.0, 1.0, side::buy, 5'000,
                                        static_cast<std::uint64_t>(i)}) == reject_reason::none);
            }
            REQUIRE(wait_for([&] { return p.stats().applied == 3; }));
            (void)p.reclaim_now(); // flushed: no token changes from now on
            const std::size_t before = sink.token_updates();
            CHECK(before == 3);
            bool called = false;
            std::thread io([&] { called = sink.resync(); });
            io.join();
            CHECK(called);
            REQUIRE(wait_for([&] { return p.stats().resyncs == cfg.shards; }));
            CHECK(sink.token_updates() == before + 3); // every token again
        }
        CHECK(!sink.has_handler());
        CHECK(sink.handler_sets() == 2);
        CHECK(!sink.resync());
        CHECK(!sink.consumed_without_handler());
    }
    SUBCASE("called from consume, served by the worker; cleared by stop() after the last flush") {
        // One shard, and no flush but those asked for and the final one, so every count is
        // exact.
        cfg.shards = 1;
        cfg.flush_interval = 60s;
        resyncing_sink sink(true);
        pipeline<throughput_policy, resyncing_sink&> p{cfg, sink};
        const auto push = [&p](int i) {
            return p.push(trade_view{"T" + std::to_string(i), 1.0, 1.0, side::buy, 5'000,
                                     static_cast<std::uint64_t>(i)});
        };
        for (int i = 0; i < 4; ++i) {
            CHECK(push(i) == reject_reason::none);
        }
        p.start();
        CHECK(sink.resync()); // its batch makes the sink ask again, from `consume`
        REQUIRE(wait_for([&] { return p.stats().resyncs == 2; }));
        CHECK(sink.token_updates() == 8);
        for (int i = 4; i < 6; ++i) { // handed over only by the final flush
            CHECK(push(i) == reject_reason::none);
        }
        p.stop();
        CHECK(sink.token_updates() == 10);
        CHECK(!sink.consumed_without_handler()); // the final flush came before the clearing
        CHECK(!sink.has_handler());
        CHECK(sink.handler_sets() == 2);
        CHECK(p.stats().resyncs == 2);
    }
}

TEST_CASE("resync() after stop() is harmless, before start() it waits for the workers") {
    runtime_config cfg;
    cfg.shards = 2;
    pipeline<memory_constrained_policy, memory_sink> p{cfg};
    for (int i = 0; i < 4; ++i) {
        CHECK(p.push(trade_view{"T" + std::to_string(i), 1.0, 1.0, side::buy, 5'000,
                                static_cast<std::uint64_t>(i)}) == reject_reason::none);
    }
    SUBCASE("after stop()") {
        p.start();
        p.stop();
        const pipeline_stats before = p.stats();
        CHECK(before.resyncs == 0);
        p.resync();
        p.resync();
        std::this_thread::sleep_for(20ms);
        const pipeline_stats after = p.stats();
        CHECK(after.resyncs == 0);
        CHECK(after.flushes == before.flushes);
        CHECK(p.sink().candle_updates() == before.candle_updates);
        CHECK(p.sink().token_updates() == before.token_updates);
    }
    SUBCASE("before start()") {
        p.resync();
        p.resync(); // served by the same resync
        p.start();
        p.stop();
        CHECK(p.stats().resyncs == cfg.shards);
        CHECK(trades_in_sink(p.sink()) == 4);
    }
}

TEST_CASE("producer::try_push(trade_view) interns, never waits, and reports a full ring") {
    runtime_config cfg;
    cfg.ring_capacity = 8;
    pipeline<throughput_policy, memory_sink> p{cfg};
    auto h = p.make_producer();
    CHECK(h.drained());
    std::size_t accepted = 0;
    push_result last;
    for (std::uint64_t i = 0; i < 100; ++i) { // not started: the ring fills and stays full
        last = h.try_push(
            trade_view{"SOL", 10.0, 1.0, side::buy, 1'000 + static_cast<timestamp_ms>(i), i});
        if (!last) {
            break;
        }
        ++accepted;
    }
    CHECK(last.full);
    CHECK(last.reason == reject_reason::none);
    CHECK(accepted >= 8);
    CHECK(accepted < 100);
    CHECK(h.try_push(trade_view{"S{L", 10.0, 1.0, side::buy, 1'000, 1}).reason ==
          reject_reason::invalid_token);
    CHECK(h.try_push(trade_view{"SOL", -1.0, 1.0, side::buy, 1'000, 1}).reason ==
          reject_reason::price_not_positive);
    CHECK_FALSE(h.drained());
    p.start();
    for (int i = 0; i < 10'000 && !h.drained(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    CHECK(h.drained());
    p.stop();
    const auto c = p.sink().candles("SOL", intervals::s1);
    REQUIRE(c.size() == 1);
    CHECK(c[0].trades == accepted);
    CHECK(h.try_push(trade_view{"SOL", 10.0, 1.0, side::buy, 2'000, 1}).reason ==
          reject_reason::stopped);
}
