// The pipeline's life cycle and flow control: draining on stop, backpressure, producers,
// late-trade reporting, sink failures, statistics.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <tradeagg/tradeagg.hpp>

using namespace tradeagg;
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
    CHECK(p.push(trade_view{"SOL", 1.0, 1.0, side::buy, 1'000, 1}) == reject_reason::none);
    while (calls.load() == 0) {
        std::this_thread::sleep_for(1ms);
    }
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
