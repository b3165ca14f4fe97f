// Candles, lateness, the rolling window, compensated sums, the latency histogram and the arena.

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include <doctest/doctest.h>

#include <tradeagg/tradeagg.hpp>

using namespace tradeagg;

namespace {

trade make(timestamp_ms ts, std::uint64_t id, double price, double qty = 1.0, side s = side::buy) {
    return trade{0, s, price, qty, ts, id};
}

struct evicted_log {
    std::vector<candle_update> items;
    void push_back(const candle_update& u) { items.push_back(u); }
};

} // namespace

TEST_CASE("compensated sums keep small additions to a large total") {
    detail::compensated_sum s;
    s.add(1e16);
    for (int i = 0; i < 10'000; ++i) {
        s.add(1.0);
    }
    CHECK(s.value() == 1e16 + 10'000.0);
    double naive = 1e16;
    for (int i = 0; i < 10'000; ++i) {
        naive += 1.0;
    }
    CHECK(naive != 1e16 + 10'000.0); // the error compensation exists to remove
}

TEST_CASE("a candle is the same whatever order its trades arrive in") {
    std::vector<trade> trades;
    std::mt19937_64 rng(7);
    for (std::uint64_t i = 0; i < 200; ++i) {
        trades.push_back(make(60'000 + static_cast<timestamp_ms>(rng() % 60'000), 1000 + rng() % 50,
                              10.0 + static_cast<double>(rng() % 1000) / 100.0,
                              0.5 + static_cast<double>(rng() % 10),
                              (rng() & 1) != 0 ? side::buy : side::sell));
    }
    const auto build = [](const std::vector<trade>& ts) {
        detail::candle_accumulator c;
        c.reset(ts[0]);
        for (std::size_t i = 1; i < ts.size(); ++i) {
            c.add(ts[i]);
        }
        return c.snapshot(60'000, 60'000, false);
    };
    const candle a = build(trades);
    for (int round = 0; round < 5; ++round) {
        std::shuffle(trades.begin(), trades.end(), rng);
        const candle b = build(trades);
        CHECK(a.open == b.open);
        CHECK(a.close == b.close);
        CHECK(a.high == b.high);
        CHECK(a.low == b.low);
        CHECK(a.first_trade_id == b.first_trade_id);
        CHECK(a.last_trade_id == b.last_trade_id);
        CHECK(a.trades == b.trades);
        CHECK(a.volume == doctest::Approx(b.volume).epsilon(1e-12));
    }
    const auto earliest = *std::min_element(trades.begin(), trades.end(), [](auto& x, auto& y) {
        return x.ts_ms != y.ts_ms ? x.ts_ms < y.ts_ms : x.id < y.id;
    });
    CHECK(a.open == earliest.price);
    CHECK(a.first_trade_id == earliest.id);
    CHECK(a.open_time == 60'000);
    CHECK(a.close_time == 119'999);
    CHECK(a.vwap() == doctest::Approx(a.quote_volume / a.volume));
}

TEST_CASE("equal event times are ordered by trade id") {
    detail::candle_accumulator c;
    c.reset(make(500, 9, 3.0));
    c.add(make(500, 2, 1.0));
    c.add(make(500, 5, 2.0));
    const candle k = c.snapshot(0, 1000, false);
    CHECK(k.open == 1.0);
    CHECK(k.first_trade_id == 2);
    CHECK(k.close == 3.0);
    CHECK(k.last_trade_id == 9);
}

TEST_CASE(
    "lateness: within the allowed lateness a closed bucket updates, beyond it the trade is late") {
    // throughput_policy: finest interval 1 s, allowed lateness 2 s.
    using state = detail::token_state<throughput_policy>;
    state s(0, "T");
    evicted_log ev;
    std::size_t bytes = 0;
    s.apply(make(10'500, 1, 100.0), ev, bytes);
    s.apply(make(12'100, 2, 101.0), ev, bytes); // closes the 10 s bucket
    const auto one_second = [&](timestamp_ms open) -> const detail::bucket_slot* {
        for (std::size_t i = 0; i < state::layout::finest_slots; ++i) {
            if (s.slots[i].open_time == open) {
                return &s.slots[i];
            }
        }
        return nullptr;
    };
    REQUIRE(one_second(10'000) != nullptr);
    CHECK(s.is_closed(10'000, 0));
    CHECK_FALSE(s.is_closed(12'000, 0));

    // Watermark 12 100: the 10 s bucket ended at 11 000, 1 100 ms ago: still accepted.
    const trade within = make(10'900, 3, 99.0);
    CHECK_FALSE(s.is_late(within));
    s.apply(within, ev, bytes);
    CHECK(one_second(10'000)->acc.ohlc.trades == 2);
    CHECK(s.is_closed(10'000, 0));

    // Watermark 13 000: the 10 s bucket ended 2 000 ms ago: late.
    s.apply(make(13'000, 4, 102.0), ev, bytes);
    CHECK(s.is_late(make(10'999, 5, 98.0)));
    CHECK_FALSE(s.is_late(make(11'000, 6, 98.0)));
    // Bucket 13 s took bucket 10 s's slot (three 1 s slots): 10 s is final and was handed over.
    REQUIRE(ev.items.size() == 1);
    CHECK(ev.items[0].data.open_time == 10'000);
    CHECK(ev.items[0].data.trades == 2);
    CHECK(ev.items[0].data.closed);
}

TEST_CASE("a bucket pushed out of its slot before a flush is handed over, closed") {
    using state = detail::token_state<latency_policy>; // 1 s lateness: two 1 s slots
    state s(0, "T");
    evicted_log ev;
    std::size_t bytes = 0;
    s.apply(make(1'000, 1, 10.0), ev, bytes);
    s.apply(make(5'000, 2, 11.0), ev, bytes); // bucket 5 s takes bucket 1 s's slot
    REQUIRE(ev.items.size() == 1);
    CHECK(ev.items[0].data.open_time == 1'000);
    CHECK(ev.items[0].data.closed);
    CHECK(ev.items[0].interval_index == 0);
}

TEST_CASE("rolling window: 24 hours of sub-buckets, sliding with the watermark") {
    detail::rolling_window<60'000, 86'400'000> w;
    std::size_t bytes = 0;
    const auto add = [&](const trade& t, timestamp_ms watermark) {
        detail::ohlc_accumulator part;
        part.reset(t, t.price * t.quantity);
        w.merge(t.ts_ms / 60'000, part, watermark, bytes);
    };
    const timestamp_ms day = 86'400'000;
    add(make(0, 1, 10.0, 1.0), 0);
    add(make(30'000, 2, 20.0, 2.0), 30'000);
    add(make(day - 1, 3, 15.0, 3.0), day - 1);
    rolling_stats r = w.stats(day - 1);
    CHECK(r.trades == 3);
    CHECK(r.open == 10.0);
    CHECK(r.last == 15.0);
    CHECK(r.high == 20.0);
    CHECK(r.low == 10.0);
    CHECK(r.volume == 6.0);
    CHECK(r.vwap == doctest::Approx((10.0 + 40.0 + 45.0) / 6.0));
    CHECK(r.price_change == 5.0);
    CHECK(r.price_change_percent == doctest::Approx(50.0));
    CHECK(r.window_start == 0);

    // One minute later the first sub-bucket (both early trades) has left the window.
    add(make(day + 60'000, 4, 16.0, 1.0), day + 60'000);
    r = w.stats(day + 60'000);
    CHECK(r.trades == 2);
    CHECK(r.open == 15.0);
    CHECK(r.window_start == 120'000);
    CHECK(bytes == w.allocated_bytes());
    CHECK(bytes > 0);

    // A later part of the same sub-bucket folds into it: its close becomes the window's last.
    add(make(day + 60'500, 5, 14.0, 1.0), day + 60'500);
    r = w.stats(day + 60'500);
    CHECK(r.trades == 3);
    CHECK(r.open == 15.0);
    CHECK(r.last == 14.0);
    CHECK(r.low == 14.0);

    // Parts not merged yet are included by the caller's visitor.
    detail::ohlc_accumulator pending;
    pending.reset(make(day + 61'000, 6, 30.0, 1.0), 30.0);
    r = w.stats(day + 61'000, [&](auto&& take) { take((day + 61'000) / 60'000, pending); });
    CHECK(r.trades == 4);
    CHECK(r.open == 15.0);
    CHECK(r.high == 30.0);
    CHECK(r.last == 30.0);
    w.clear(bytes);
    CHECK(bytes == 0);
}

TEST_CASE("latency histogram percentiles are within one sub-bucket") {
    latency_histogram h;
    for (std::uint64_t v = 1; v <= 10'000; ++v) {
        h.record(v * 100); // 100 ns .. 1 ms, uniform
    }
    const latency_summary s = h.summary();
    CHECK(s.samples == 10'000);
    CHECK(s.p50_ns >= 500'000 * 0.99);
    CHECK(s.p50_ns <= 500'000 * 1.07);
    CHECK(s.p99_ns >= 990'000 * 0.99);
    CHECK(s.p99_ns <= 990'000 * 1.07);
    CHECK(s.max_ns == 1'000'000);
    // The counts behind it, as a cumulative histogram exports them.
    const latency_histogram::counts c = h.read();
    CHECK(c.samples() == 10'000);
    CHECK(c.sum_ns == 100 * (10'000ull * 10'001 / 2));
    CHECK(c.max_ns == 1'000'000);
    CHECK(c.at_most(0) == 0);
    CHECK(c.at_most(1'000'000) < 10'000); // 1 ms lies inside a bucket: counted at its top
    CHECK(c.at_most(latency_histogram::upper_bound_of(latency_histogram::index_of(1'000'000))) ==
          10'000);
    CHECK(c.at_most(std::uint64_t{1} << 40) == 10'000);
    // Never more than the samples at or below the bound; at least those 1/16 octave below it.
    for (std::uint64_t bound : {1'000ull, 250'000ull, 500'000ull, 999'999ull}) {
        CAPTURE(bound);
        CHECK(c.at_most(bound) <= bound / 100);
        CHECK(c.at_most(bound) >= bound * 15 / 16 / 100);
    }
    latency_histogram::counts twice = c;
    h.accumulate(twice);
    CHECK(twice.samples() == 20'000);
    CHECK(twice.sum_ns == 2 * c.sum_ns);
    CHECK(twice.summary().p50_ns == s.p50_ns);
    for (std::uint64_t v : {0ull, 1ull, 15ull, 16ull, 17ull, 1'000ull, 123'456'789ull}) {
        const std::size_t i = latency_histogram::index_of(v);
        CHECK(latency_histogram::upper_bound_of(i) >= v);
        if (i > 0) {
            CHECK(latency_histogram::upper_bound_of(i - 1) < v);
        }
    }
}

TEST_CASE("arena counts what it takes from the system and what is live") {
    struct thing {
        double a[8];
    };
    arena<thing> a(4096, 16384);
    CHECK(a.reserved_bytes() == 0);
    std::vector<thing*> items;
    for (int i = 0; i < 100; ++i) {
        items.push_back(a.create());
    }
    CHECK(a.live_objects() == 100);
    CHECK(a.live_bytes() == 100 * arena<thing>::object_size);
    CHECK(a.reserved_bytes() >= a.live_bytes());
    const std::size_t reserved = a.reserved_bytes();
    for (thing* t : items) {
        a.destroy(t);
    }
    CHECK(a.live_objects() == 0);
    CHECK(a.reserved_bytes() == reserved); // kept for reuse until a reclamation
    for (int i = 0; i < 100; ++i) {
        items[static_cast<std::size_t>(i)] = a.create();
    }
    CHECK(a.reserved_bytes() == reserved); // reused, nothing new taken
    for (thing* t : items) {
        a.destroy(t);
    }

    arena<thing> pre(4096, 4096, 500);
    CHECK(pre.reserved_bytes() >= 500 * arena<thing>::object_size);
    CHECK(pre.live_objects() == 0);
}
