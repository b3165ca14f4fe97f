// The concurrent pipeline against the single-threaded reference model, for every policy, with
// one to four producer threads.

#include <cstddef>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <tradeagg/tradeagg.hpp>

#include "compare.hpp"
#include "reference_model.hpp"
#include "trade_stream.hpp"

using namespace tradeagg;
using namespace tradeagg::testing;

namespace {

enum class partition { by_token, round_robin };

/// Runs the stream through a pipeline with `producers` threads. With `by_token`, each token
/// belongs to one producer (so each token's arrival order is the stream's); with
/// `round_robin`, consecutive trades go to different producers and interleave freely.
template <class Policy>
void run_pipeline(pipeline<Policy, memory_sink>& p, const trade_stream& s, std::size_t producers,
                  partition mode) {
    std::vector<token_id> ids;
    for (const std::string& name : s.names) {
        const auto r = p.intern(name);
        REQUIRE(r.reason == reject_reason::none);
        ids.push_back(r.id);
    }
    std::vector<std::vector<trade>> work(producers);
    for (std::size_t i = 0; i < s.arrivals.size(); ++i) {
        const stream_trade& st = s.arrivals[i];
        trade t = st.t;
        t.token = ids[st.token_index];
        const std::size_t who =
            mode == partition::by_token ? st.token_index % producers : i % producers;
        work[who].push_back(t);
    }
    p.start();
    std::vector<std::thread> threads;
    for (std::size_t w = 0; w < producers; ++w) {
        threads.emplace_back([&p, &work, w] {
            auto handle = p.make_producer();
            const std::vector<trade>& mine = work[w];
            // Every path is exercised: the handle's single and bulk pushes share one ring and
            // keep order; the third producer uses the shared multi-producer queue only (mixing
            // the two paths for one token would let the worker reorder them).
            const bool shared_queue = w == 2;
            std::size_t i = 0;
            while (i < mine.size()) {
                const std::size_t n = std::min<std::size_t>(1 + (i % 97), mine.size() - i);
                if (shared_queue) {
                    (void)p.push(mine[i]);
                    ++i;
                } else if (i % 2 == 0) {
                    handle.push(std::span<const trade>(mine.data() + i, n));
                    i += n;
                } else {
                    (void)handle.push(mine[i]);
                    ++i;
                }
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    p.stop();
}

template <class Policy>
reference_model<Policy> reference_for(const trade_stream& s) {
    reference_model<Policy> ref;
    for (const stream_trade& st : s.arrivals) {
        ref.push(s.names[st.token_index], st.t);
    }
    return ref;
}

} // namespace

template <class Policy>
void check_against_reference(const stream_options& o) {
    const trade_stream s = make_stream(o);
    const auto ref = reference_for<Policy>(s);
    REQUIRE(ref.late_total() > 0);

    for (std::size_t producers = 1; producers <= 4; ++producers) {
        for (std::size_t shards : {std::size_t{1}, std::size_t{2}}) {
            CAPTURE(producers);
            CAPTURE(shards);
            std::mutex late_mutex;
            late_counts late;
            runtime_config cfg;
            cfg.shards = shards;
            cfg.ring_capacity = 512; // small rings: backpressure happens too
            cfg.on_late_trade = [&](const late_trade& l) {
                const std::lock_guard lock(late_mutex);
                ++late[std::string(l.token)];
            };
            pipeline<Policy, memory_sink> p{cfg};
            run_pipeline(p, s, producers, partition::by_token);
            const pipeline_stats st = p.stats();
            CHECK(st.accepted == s.arrivals.size());
            CHECK(st.applied + st.late == s.arrivals.size());
            CHECK(st.late == ref.late_total());
            CHECK(st.rejected == 0);
            CHECK(st.queue_depth() == 0);
            const mismatch_log log = compare_with_reference(p.sink(), ref, &late);
            INFO(log.text());
            CHECK(log.count == 0);
        }
    }
}

TEST_CASE_TEMPLATE("pipeline equals the reference model, late trades included", Policy,
                   throughput_policy, latency_policy, memory_constrained_policy) {
    SUBCASE("dense: many trades per millisecond, across a UTC midnight") {
        stream_options o;
        o.trades = 30'000;
        o.ms_per_trade = 30; // 15 minutes: every interval's boundary at midnight is crossed
        check_against_reference<Policy>(o);
    }
    SUBCASE("long: two and a half days, rolling windows slide and expire") {
        stream_options o;
        o.tokens = 20;
        o.trades = 20'000;
        o.ms_per_trade = 11'000;
        o.late_fraction = 0.03;
        o.late_delay_ms = 900'000;
        check_against_reference<Policy>(o);
    }
    SUBCASE("burst: thousands of trades within a second") {
        stream_options o;
        o.trades = 60'000;
        o.ms_per_trade = 0.1;
        o.late_delay_ms = 4'000; // the stream spans 6 s: delayed trades still find it moving
        check_against_reference<Policy>(o);
    }
}

TEST_CASE_TEMPLATE("candles do not depend on how producers interleave", Policy, throughput_policy,
                   latency_policy, memory_constrained_policy) {
    // Every trade within 400 ms of the others: none can be late whatever the interleaving, so
    // the result must be exactly the reference's although each token's trades arrive in an
    // order decided by the scheduler.
    stream_options o;
    o.tokens = 50;
    o.trades = 20'000;
    o.ms_per_trade = 0.02;
    o.late_fraction = 0.0;
    o.max_jitter_ms = 0;
    const trade_stream s = make_stream(o);
    const auto ref = reference_for<Policy>(s);
    REQUIRE(ref.late_total() == 0);
    for (std::size_t producers = 2; producers <= 4; ++producers) {
        CAPTURE(producers);
        runtime_config cfg;
        cfg.shards = 2;
        pipeline<Policy, memory_sink> p{cfg};
        run_pipeline(p, s, producers, partition::round_robin);
        CHECK(p.stats().applied == s.arrivals.size());
        const mismatch_log log = compare_with_reference(p.sink(), ref);
        INFO(log.text());
        CHECK(log.count == 0);
    }
}

TEST_CASE_TEMPLATE("final candles do not depend on when flushes happen", Policy, throughput_policy,
                   latency_policy, memory_constrained_policy) {
    // One token's state driven directly, collected after every k trades: whatever k, the
    // latest version of every candle must be the reference's. (Through the pipeline, flush
    // timing depends on the scheduler; here every cadence is tried deterministically.)
    stream_options o;
    o.tokens = 6;
    o.trades = 12'000;
    o.ms_per_trade = 6'000;
    o.late_fraction = 0.03;
    o.late_delay_ms = 900'000;
    o.max_jitter_ms = 900;
    const trade_stream s = make_stream(o);
    for (const std::size_t every : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{7},
                                    std::size_t{50}, std::size_t{1'000'000}}) {
        CAPTURE(every);
        reference_model<Policy> ref;
        memory_sink sink;
        late_counts late;
        for (std::size_t token = 0; token < s.names.size(); ++token) {
            detail::token_state<Policy> state(static_cast<token_id>(token), s.names[token]);
            std::vector<candle_update> candles;
            std::vector<token_update> tokens;
            std::size_t bytes = 0;
            std::size_t applied = 0;
            const auto flush = [&] {
                tokens.push_back(state.collect(candles));
                sink.consume(flush_batch{0, candles, tokens});
                candles.clear();
                tokens.clear();
            };
            for (const stream_trade& st : s.arrivals) {
                if (st.token_index != token) {
                    continue;
                }
                ref.push(s.names[token], st.t);
                if (state.is_late(st.t)) {
                    ++late[s.names[token]];
                    continue;
                }
                state.apply(st.t, candles, bytes);
                if (++applied % every == 0) {
                    flush();
                }
            }
            flush();
            state.rolling.clear(bytes);
        }
        const mismatch_log log = compare_with_reference(sink, ref, &late);
        INFO(log.text());
        CHECK(log.count == 0);
    }
}
