// Memory that comes back: the event-time clock, eviction of spent tokens (and that it loses
// nothing), reclamation cadence, the soft memory limit and the active-token cap.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <tradeagg/tradeagg.hpp>

using namespace tradeagg;

namespace {

constexpr timestamp_ms midnight = 1'732'924'800'000; // 2024-11-30T00:00:00Z
constexpr timestamp_ms hour = 3'600'000;
constexpr timestamp_ms day = 24 * hour;

/// Polls `done` for up to ten seconds (workers run on their own schedule).
template <class F>
bool eventually(F&& done) {
    for (int i = 0; i < 10'000; ++i) {
        if (done()) {
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return done();
}

/// One event of a churn stream: a trade, or the clock moving (`clock` set).
struct churn_event {
    bool clock = false;
    std::size_t token = 0;
    trade_view t;
};

struct churn_stream {
    std::vector<std::string> names;
    std::vector<churn_event> events;       ///< in arrival order
    std::size_t returning_after_spent = 0; ///< tokens that come back once surely evictable
};

/// Tokens trade a burst, go idle, and some come back: soon (their state still live), or days
/// later (long after it could be released). A few trades arrive an hour late. The clock follows
/// the arrivals five seconds behind, every ten minutes of event time.
churn_stream make_churn(std::size_t tokens, std::uint64_t seed) {
    churn_stream s;
    std::mt19937_64 rng(seed);
    const auto uniform = [&](timestamp_ms lo, timestamp_ms hi) {
        return lo + static_cast<timestamp_ms>(rng() % static_cast<std::uint64_t>(hi - lo));
    };
    struct pending {
        timestamp_ms arrival;
        std::size_t token;
        trade_view t;
    };
    std::vector<pending> trades;
    for (std::size_t k = 0; k < tokens; ++k) {
        s.names.push_back("CH" + std::to_string(k));
    }
    std::vector<std::uint64_t> next_id(tokens, 1);
    const auto burst = [&](std::size_t k, timestamp_ms at) {
        const int n = 1 + static_cast<int>(rng() % 6);
        for (int i = 0; i < n; ++i) {
            const timestamp_ms ts = at + uniform(0, 3'000);
            trade_view t{s.names[k],
                         100.0 + static_cast<double>(rng() % 1'000) / 7.0,
                         0.5 + static_cast<double>(rng() % 100) / 3.0,
                         rng() % 2 == 0 ? side::buy : side::sell,
                         ts,
                         next_id[k]++};
            const bool late = rng() % 25 == 0;
            trades.push_back({ts + (late ? hour : uniform(0, 400)), k, t});
        }
    };
    for (std::size_t k = 0; k < tokens; ++k) {
        const timestamp_ms first = midnight + uniform(0, 2 * day);
        burst(k, first);
        const auto dice = rng() % 10;
        if (dice < 3) {
            burst(k, first + uniform(1'000, 6 * hour)); // back while its state is live
        } else if (dice < 6) {
            burst(k, first + uniform(2 * day + hour, 3 * day)); // back long after
            ++s.returning_after_spent;
        }
    }
    std::stable_sort(trades.begin(), trades.end(),
                     [](const pending& a, const pending& b) { return a.arrival < b.arrival; });
    timestamp_ms next_tick = midnight;
    for (const pending& p : trades) {
        while (p.arrival >= next_tick) {
            s.events.push_back({true, 0, trade_view{"", 0, 0, side::buy, next_tick - 5'000, 0}});
            next_tick += 10 * 60'000;
        }
        s.events.push_back({false, p.token, p.t});
    }
    return s;
}

struct churn_outcome {
    pipeline_stats stats;
    std::uint64_t late = 0;
};

/// Runs the stream through one producer; with `reclaim_every` > 0, forces a reclamation every
/// that many clock events besides the cadence's own.
template <class Policy>
churn_outcome run_churn(pipeline<Policy, memory_sink&>& p, const churn_stream& s,
                        std::size_t reclaim_every) {
    p.start();
    auto h = p.make_producer();
    std::size_t ticks = 0;
    for (const churn_event& e : s.events) {
        if (e.clock) {
            REQUIRE(h.advance_time(e.t.ts_ms) == reject_reason::none);
            if (reclaim_every > 0 && ++ticks % reclaim_every == 0) {
                (void)p.reclaim_now();
            }
        } else {
            REQUIRE(h.push(e.t) == reject_reason::none);
        }
    }
    // Three more days: every token is spent.
    const timestamp_ms end = s.events.back().t.ts_ms + 3 * day;
    REQUIRE(h.advance_time(end) == reject_reason::none);
    (void)p.reclaim_now();
    p.stop();
    return {p.stats(), p.stats().late};
}

bool same(const candle& a, const candle& b) {
    return std::memcmp(&a.open_time, &b.open_time, sizeof(timestamp_ms)) == 0 &&
           a.close_time == b.close_time && a.open == b.open && a.high == b.high && a.low == b.low &&
           a.close == b.close && a.volume == b.volume && a.quote_volume == b.quote_volume &&
           a.trades == b.trades && a.taker_buy_volume == b.taker_buy_volume &&
           a.taker_buy_quote_volume == b.taker_buy_quote_volume &&
           a.first_trade_id == b.first_trade_id && a.last_trade_id == b.last_trade_id &&
           a.closed == b.closed;
}

bool same(const rolling_stats& a, const rolling_stats& b) {
    return a.window_start == b.window_start && a.window_end == b.window_end && a.open == b.open &&
           a.high == b.high && a.low == b.low && a.last == b.last && a.volume == b.volume &&
           a.quote_volume == b.quote_volume && a.vwap == b.vwap && a.trades == b.trades &&
           a.price_change == b.price_change && a.price_change_percent == b.price_change_percent;
}

bool same(const latest_trade& a, const latest_trade& b) {
    return a.price == b.price && a.quantity == b.quantity && a.taker == b.taker &&
           a.ts_ms == b.ts_ms && a.id == b.id;
}

/// Every difference between two sinks, bit for bit, as text (empty: identical).
template <class Policy>
std::string sink_differences(const memory_sink& a, const memory_sink& b) {
    std::ostringstream out;
    std::vector<std::string> names = a.tokens();
    std::vector<std::string> other = b.tokens();
    std::sort(names.begin(), names.end());
    std::sort(other.begin(), other.end());
    if (names != other) {
        out << "token sets differ: " << names.size() << " vs " << other.size() << "\n";
        return out.str();
    }
    std::size_t shown = 0;
    const auto note = [&](const std::string& what) {
        if (shown++ < 10) {
            out << what << "\n";
        }
    };
    for (const std::string& name : names) {
        for (const interval width : Policy::intervals) {
            const auto ca = a.candles(name, width);
            const auto cb = b.candles(name, width);
            if (ca.size() != cb.size()) {
                note(name + " " + std::string(interval_name(width).view()) + ": " +
                     std::to_string(ca.size()) + " vs " + std::to_string(cb.size()) + " candles");
                continue;
            }
            for (std::size_t i = 0; i < ca.size(); ++i) {
                if (!same(ca[i], cb[i])) {
                    note(name + " " + std::string(interval_name(width).view()) + " @" +
                         std::to_string(ca[i].open_time) + " differs");
                }
            }
        }
        const auto ra = a.rolling(name);
        const auto rb = b.rolling(name);
        if (ra.has_value() != rb.has_value() || (ra && !same(*ra, *rb))) {
            note(name + ": rolling differs");
        }
        const auto la = a.latest(name);
        const auto lb = b.latest(name);
        if (la.has_value() != lb.has_value() || (la && !same(*la, *lb))) {
            note(name + ": latest differs");
        }
    }
    return out.str();
}

trade_view at(std::string_view token, timestamp_ms ts, std::uint64_t id, double price = 10.0) {
    return trade_view{token, price, 1.0, side::buy, ts, id};
}

} // namespace

TEST_CASE("the clock closes idle tokens' candles and makes old trades late") {
    std::mutex m;
    std::vector<std::string> late_tokens;
    runtime_config cfg;
    cfg.on_late_trade = [&](const late_trade& l) {
        const std::lock_guard lock(m);
        late_tokens.emplace_back(l.token);
    };
    pipeline<throughput_policy, memory_sink> p{cfg}; // 1 s finest, 2 s lateness
    p.start();
    auto h = p.make_producer();
    CHECK(h.push(at("SOL", midnight + 10'500, 1)) == reject_reason::none);
    CHECK(h.push(at("BTC", midnight + 10'200, 1)) == reject_reason::none);
    CHECK(h.advance_time(midnight + 70'000) == reject_reason::none);
    // Within the lateness of the clock: merged. Beyond it: late, for a known token and for a
    // token never seen.
    CHECK(h.push(at("SOL", midnight + 68'500, 2)) == reject_reason::none);
    CHECK(h.push(at("SOL", midnight + 67'999, 3)) == reject_reason::none);
    CHECK(h.push(at("ETH", midnight + 60'000, 1)) == reject_reason::none);
    CHECK(h.advance_time(-1) == reject_reason::timestamp_out_of_range);
    p.stop();

    const auto sol_minutes = p.sink().candles("SOL", intervals::m1);
    REQUIRE(sol_minutes.size() == 2);
    CHECK(sol_minutes[0].open_time == midnight);
    CHECK(sol_minutes[0].closed); // no SOL trade after the minute: the clock closed it
    CHECK(sol_minutes[0].trades == 1);
    CHECK(sol_minutes[1].trades == 1); // the trade at 68.5 s
    CHECK_FALSE(sol_minutes[1].closed);
    const auto btc_seconds = p.sink().candles("BTC", intervals::s1);
    REQUIRE(btc_seconds.size() == 1);
    CHECK(btc_seconds[0].closed);
    const auto btc_rolling = p.sink().rolling("BTC");
    REQUIRE(btc_rolling.has_value());
    CHECK(btc_rolling->window_end == midnight + 70'000);
    CHECK(btc_rolling->trades == 1);
    CHECK(p.sink().candles("ETH", intervals::s1).empty());

    const pipeline_stats st = p.stats();
    CHECK(st.late == 2);
    CHECK(st.applied == 3);
    std::sort(late_tokens.begin(), late_tokens.end());
    CHECK(late_tokens == std::vector<std::string>{"ETH", "SOL"});
    CHECK(st.shards[0].clock == midnight + 70'000);
}

TEST_CASE_TEMPLATE("eviction loses nothing: the same stream with and without eviction", Policy,
                   throughput_policy, latency_policy, memory_constrained_policy) {
    const churn_stream s = make_churn(400, 7);
    REQUIRE(s.returning_after_spent > 20);

    memory_sink with_eviction;
    memory_sink without;
    churn_outcome evicting;
    churn_outcome keeping;
    {
        runtime_config cfg;
        cfg.shards = 2;
        cfg.flush_interval = std::chrono::milliseconds(1);
        cfg.gc_target_percent = Policy::gc_target_min_percent; // reclaim as often as allowed
        pipeline<Policy, memory_sink&> p{cfg, with_eviction};
        evicting = run_churn(p, s, 3);
    }
    {
        runtime_config cfg;
        cfg.shards = 2;
        cfg.evict_idle_tokens = false;
        pipeline<Policy, memory_sink&> p{cfg, without};
        keeping = run_churn(p, s, 0);
    }
    // Tokens back days later had been released before they came back (the clock passed their
    // spent time and a reclamation ran in between), and every token is released at the end.
    CHECK(evicting.stats.tokens_evicted >= s.names.size() + s.returning_after_spent);
    CHECK(evicting.stats.active_tokens == 0);
    CHECK(keeping.stats.tokens_evicted == 0);
    CHECK(keeping.stats.active_tokens == s.names.size());
    CHECK(evicting.stats.applied == keeping.stats.applied);
    CHECK(evicting.late == keeping.late);
    CHECK(keeping.late > 0);
    const std::string differences = sink_differences<Policy>(with_eviction, without);
    INFO(differences);
    CHECK(differences.empty());
    CHECK(with_eviction.candle_count() == without.candle_count());
}

TEST_CASE("reclaim_now releases spent tokens and the arena's chunks, and reports both sides") {
    runtime_config cfg;
    pipeline<memory_constrained_policy, memory_sink> p{cfg};
    p.start();
    auto h = p.make_producer();
    for (int k = 0; k < 2'000; ++k) {
        REQUIRE(h.push(at("R" + std::to_string(k), midnight + k, 1)) == reject_reason::none);
    }
    REQUIRE(eventually([&] { return p.stats().applied == 2'000; }));
    const auto kept = p.reclaim_now(); // nothing is spent yet: the clock has not moved
    CHECK(kept.tokens_evicted == 0);
    CHECK(kept.after.active_tokens == 2'000);
    CHECK(kept.after.arena_live_bytes >= 2'000 * decltype(p)::token_state_bytes);

    REQUIRE(h.advance_time(midnight + 3 * day) == reject_reason::none);
    const auto report = p.reclaim_now();
    CHECK(report.tokens_evicted == 2'000);
    CHECK(report.before.active_tokens == 2'000);
    CHECK(report.after.active_tokens == 0);
    CHECK(report.after.arena_live_bytes == 0);
    CHECK(report.after.arena_reserved_bytes == 0); // every chunk went back
    CHECK(report.bytes_released >= 2'000 * decltype(p)::token_state_bytes);
    CHECK(report.after.heap_inuse_bytes < report.before.heap_inuse_bytes);
    CHECK(report.after.reclamations > report.before.reclamations);
    CHECK(report.shards.size() == 1);
    // Tokens that came in by name are forgotten with their state; the table gives its memory
    // back, and a name seen again is interned afresh.
    CHECK(report.tokens_released == 2'000);
    CHECK(report.before.interned_tokens == 2'000);
    CHECK(report.after.interned_tokens == 0);
    CHECK(report.after.table_bytes < report.before.table_bytes / 4);
    REQUIRE(h.push(at("R7", midnight + 3 * day + 5, 2)) == reject_reason::none);
    p.stop();
    // Evicted tokens' last versions stay in the sink: closed candles, an empty 24 h window.
    const auto last = p.sink().candles("R8", intervals::d1);
    REQUIRE(last.size() == 1);
    CHECK(last[0].closed);
    REQUIRE(p.sink().rolling("R8").has_value());
    CHECK(p.sink().rolling("R8")->trades == 0);
    CHECK(p.sink().candles("R7", intervals::d1).size() == 2); // before and after
    CHECK(p.sink().rolling("R7")->trades == 1);
    // Also after stop(), on the calling thread.
    const auto after_stop = p.reclaim_now();
    CHECK(after_stop.after.active_tokens == 1); // R7, back after its release
    CHECK(after_stop.after.interned_tokens == 1);
}

TEST_CASE("the reclamation cadence has GOGC's meaning") {
    reclaim_cadence c(100, 1'000);
    CHECK(c.trigger_bytes() == 2'000); // the floor doubled
    CHECK_FALSE(c.due(1'999));
    CHECK(c.due(2'000));
    c.reclaimed(5'000);
    CHECK(c.trigger_bytes() == 10'000);
    c.set_target(50);
    CHECK(c.trigger_bytes() == 7'500);
    c.reclaimed(10); // below the floor: the floor is the base
    CHECK(c.trigger_bytes() == 1'500);
    c.set_target(200);
    c.reclaimed(std::size_t{3} << 40);
    CHECK(c.trigger_bytes() == (std::size_t{9} << 40));
}

TEST_CASE("reclamation triggers as the book grows past the target") {
    using P = memory_constrained_policy; // floor: one 64 KiB arena chunk
    runtime_config cfg;
    cfg.gc_target_percent = 100;
    pipeline<P, null_sink> p{cfg};
    p.start();
    auto h = p.make_producer();
    const int tokens = 4'000;
    for (int k = 0; k < tokens; ++k) {
        REQUIRE(h.push(at("G" + std::to_string(k), midnight + k, 1)) == reject_reason::none);
    }
    p.stop();
    const pipeline_stats st = p.stats();
    // Live bytes went from nothing to `live`; each reclamation at least doubles the base, so
    // there are at most log2(live / floor) + 1 of them, and the last flush saw at least one.
    const double live = static_cast<double>(st.arena_live_bytes);
    const double most = std::log2(live / static_cast<double>(P::arena_chunk_bytes)) + 1;
    CHECK(st.reclamations >= 1);
    CHECK(static_cast<double>(st.reclamations) <= most);
    CHECK(st.tokens_evicted == 0);
    CHECK(st.gc_target_percent == 100);
    CHECK(st.reclaim_cpu_seconds >= 0.0);
    CHECK(st.gc_cpu_fraction >= 0.0);
    CHECK(st.gc_cpu_fraction <= 1.0);
}

TEST_CASE("the reclamation target is tunable within the policy's bounds") {
    pipeline<throughput_policy> p{runtime_config{}};
    CHECK(p.gc_target_percent() == throughput_policy::gc_target_percent);
    p.set_gc_target_percent(400);
    CHECK(p.gc_target_percent() == 400);
    CHECK(p.stats().gc_target_percent == 400);
    CHECK_THROWS_AS(p.set_gc_target_percent(throughput_policy::gc_target_max_percent + 1),
                    config_error);
    CHECK_THROWS_AS(p.set_gc_target_percent(throughput_policy::gc_target_min_percent - 1),
                    config_error);
    CHECK(p.gc_target_percent() == 400);
    CHECK_THROWS_AS(p.set_memory_limit_mb(max_memory_limit_mb + 1), config_error);
    runtime_config bad;
    bad.memory_limit_mb = max_memory_limit_mb + 1;
    CHECK_THROWS_AS(pipeline<throughput_policy>{bad}, config_error);
    bad = runtime_config{};
    bad.max_active_tokens = 0;
    CHECK_THROWS_AS(pipeline<throughput_policy>{bad}, config_error);
}

TEST_CASE("at the soft memory limit new tokens are refused and accepted trades are kept") {
    runtime_config cfg;
    cfg.flush_interval = std::chrono::milliseconds(1);
    pipeline<throughput_policy, memory_sink> p{cfg}; // refuse_new_tokens
    p.start();
    auto h = p.make_producer();
    // Rings and buffers come first; the limit leaves room for about two thousand tokens.
    p.set_memory_limit_mb(static_cast<std::size_t>(p.stats().heap_alloc_mb()) + 4);
    std::size_t accepted = 0;
    std::size_t refused = 0;
    for (int k = 0; k < 20'000 && refused == 0; ++k) {
        const reject_reason r = h.push(at("M" + std::to_string(k), midnight + k, 1));
        if (r == reject_reason::none) {
            ++accepted;
        } else {
            CHECK(r == reject_reason::memory_limit);
            ++refused;
        }
        if (k % 64 == 0) {
            std::this_thread::sleep_for(std::chrono::microseconds(200)); // let flushes publish
        }
    }
    REQUIRE(refused == 1);
    CHECK_FALSE(p.stats().admitting_new_tokens);
    // A token with state still trades.
    CHECK(h.push(at("M0", midnight + 30'000, 2)) == reject_reason::none);
    // The clock makes every token spent; a reclamation frees them; new tokens are admitted.
    REQUIRE(h.advance_time(midnight + 3 * day) == reject_reason::none);
    const auto report = p.reclaim_now();
    CHECK(report.after.tokens_evicted > 0); // by this reclamation or one the limit set off
    CHECK(report.after.admitting_new_tokens);
    CHECK(h.push(at("NEW", midnight + 3 * day, 1)) == reject_reason::none);
    p.stop();
    const pipeline_stats st = p.stats();
    CHECK(st.accepted == accepted + 2);
    CHECK(st.applied + st.late == st.accepted);
    CHECK(st.rejected_by_reason[static_cast<std::size_t>(reject_reason::memory_limit)] == 1);
    std::uint64_t in_sink = 0;
    for (const std::string& t : p.sink().tokens()) {
        for (const candle& c : p.sink().candles(t, intervals::d1)) {
            in_sink += c.trades;
        }
    }
    CHECK(in_sink == st.applied);
}

TEST_CASE("at the soft memory limit a wait_for_room policy makes new tokens wait") {
    runtime_config cfg;
    cfg.flush_interval = std::chrono::milliseconds(1);
    pipeline<memory_constrained_policy, memory_sink> p{cfg}; // wait_for_room
    p.start();
    auto h = p.make_producer();
    p.set_memory_limit_mb(static_cast<std::size_t>(p.stats().heap_alloc_mb()) + 2);
    int k = 0;
    for (; k < 20'000; ++k) {
        const std::string name = "W" + std::to_string(k);
        const auto id = p.intern(name);
        REQUIRE(id.reason == reject_reason::none);
        const trade interned{id.id, side::buy, 10.0, 1.0, midnight + k, 1};
        push_result r = h.try_push(interned);
        // A ring can also be full because the worker is slow (a loaded machine, a sanitizer):
        // only a refusal while new tokens are not admitted is the limit at work.
        while (r.full && p.stats().admitting_new_tokens) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
            r = h.try_push(interned);
        }
        if (r.full) {
            break;
        }
        REQUIRE(r.accepted());
        if (k % 64 == 0) {
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    }
    REQUIRE(k < 20'000);
    CHECK_FALSE(p.stats().admitting_new_tokens);
    // A blocking push for a new token waits until reclamation makes room.
    std::atomic<bool> done{false};
    std::thread waiter([&] {
        CHECK(p.push(at("LATECOMER", midnight + 3 * day, 1)) == reject_reason::none);
        done = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK_FALSE(done.load());
    REQUIRE(h.advance_time(midnight + 3 * day) == reject_reason::none);
    (void)p.reclaim_now();
    waiter.join();
    CHECK(done.load());
    p.stop();
    CHECK(p.sink().candles("LATECOMER", intervals::s1).size() == 1);
    const pipeline_stats st = p.stats();
    CHECK(st.applied + st.late == st.accepted);
    CHECK(st.rejected == 0);
}

TEST_CASE("a waiting producer is released by stop()") {
    runtime_config cfg;
    cfg.max_active_tokens = 1;
    cfg.flush_interval = std::chrono::milliseconds(1);
    pipeline<memory_constrained_policy, memory_sink> p{cfg};
    p.start();
    CHECK(p.push(at("ONE", midnight, 1)) == reject_reason::none);
    REQUIRE(eventually([&] { return !p.stats().admitting_new_tokens; }));
    std::thread waiter([&] { CHECK(p.push(at("TWO", midnight, 1)) == reject_reason::stopped); });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    p.stop();
    waiter.join();
    CHECK(p.stats().accepted == 1);
}

TEST_CASE("the active-token cap refuses new tokens and admits known ones") {
    runtime_config cfg;
    cfg.max_active_tokens = 3;
    cfg.flush_interval = std::chrono::milliseconds(1);
    pipeline<latency_policy, memory_sink> p{cfg};
    p.start();
    auto h = p.make_producer();
    for (const char* t : {"A", "B", "C"}) {
        CHECK(h.push(at(t, midnight, 1)) == reject_reason::none);
    }
    REQUIRE(eventually([&] { return !p.stats().admitting_new_tokens; }));
    CHECK(h.push(at("D", midnight, 1)) == reject_reason::active_token_limit);
    CHECK(p.push(at("E", midnight, 1)) == reject_reason::active_token_limit);
    CHECK(h.push(at("A", midnight + 1, 2)) == reject_reason::none);
    const pipeline_stats st = p.stats();
    CHECK(st.max_active_tokens == 3);
    CHECK(st.rejected_by_reason[static_cast<std::size_t>(reject_reason::active_token_limit)] == 2);
    p.stop();
}

TEST_CASE("statistics account for the library's memory beside the process's") {
    pipeline<throughput_policy, null_sink> p{runtime_config{}};
    p.start();
    auto h = p.make_producer();
    for (int k = 0; k < 500; ++k) {
        REQUIRE(h.push(at("S" + std::to_string(k), midnight + k, 1)) == reject_reason::none);
    }
    p.stop();
    const pipeline_stats st = p.stats();
    CHECK(st.arena_live_bytes >= 500 * decltype(p)::token_state_bytes);
    CHECK(st.heap_alloc_bytes >= st.heap_inuse_bytes);
    CHECK(st.heap_inuse_bytes >= st.arena_live_bytes + st.ingress_bytes + st.table_bytes);
    CHECK(st.heap_alloc_mb() > 0.0);
    CHECK(st.resident_bytes > st.heap_inuse_bytes / 2);
    CHECK(st.peak_resident_bytes >= st.resident_bytes);
    CHECK(st.threads >= 1);
    CHECK(st.process_cpu_seconds > 0.0);
}

TEST_CASE_TEMPLATE("presets move the tunable values within the policy's bounds and say so", Policy,
                   throughput_policy, latency_policy, memory_constrained_policy) {
    pipeline<Policy, memory_sink> p{runtime_config{}};
    const auto start = p.settings();
    CHECK(start.gc_target_percent == Policy::gc_target_percent);
    CHECK(start.batch_width == Policy::batch_width);
    CHECK(start.flush_interval == Policy::flush_interval);

    const auto up = p.optimize_for_throughput();
    const auto fast = p.settings();
    CHECK(fast.gc_target_percent ==
          std::min(2 * Policy::gc_target_percent, Policy::gc_target_max_percent));
    CHECK(fast.batch_width == Policy::batch_width);
    CHECK(fast.flush_interval == std::min(2 * Policy::flush_interval, max_flush_interval));
    CHECK_FALSE(up.empty());
    for (const auto& c : up) {
        CAPTURE(c.setting);
        CHECK(c.before != c.after);
    }
    CHECK(p.optimize_for_throughput().empty()); // nothing left to change

    const auto down = p.optimize_for_latency();
    const auto quick = p.settings();
    CHECK(quick.gc_target_percent ==
          std::max(Policy::gc_target_percent / 2, Policy::gc_target_min_percent));
    CHECK(quick.batch_width == std::max<std::size_t>(1, Policy::batch_width / 4));
    CHECK(quick.flush_interval ==
          std::max(Policy::flush_interval / 4, std::chrono::milliseconds(1)));
    CHECK(down.size() == 3);
    CHECK(p.optimize_for_latency().empty());

    // The pipeline works with what the presets set.
    p.start();
    auto h = p.make_producer();
    for (int i = 0; i < 1'000; ++i) {
        REQUIRE(h.push(at("P", midnight + i * 10, static_cast<std::uint64_t>(i))) ==
                reject_reason::none);
    }
    p.stop();
    CHECK(p.stats().applied == 1'000);
    CHECK_THROWS_AS(p.set_batch_width(Policy::batch_width + 1), config_error);
    CHECK_THROWS_AS(p.set_flush_interval(std::chrono::milliseconds(0)), config_error);
}

TEST_CASE("pinned tokens keep their ids, a full table releases unpinned ones to make room") {
    runtime_config cfg;
    cfg.max_tokens = 100;
    pipeline<latency_policy, memory_sink> p{cfg};
    const token_id pinned = p.intern("PINNED").id;
    p.start();
    auto h = p.make_producer();
    CHECK(h.push(trade{pinned, side::buy, 5.0, 1.0, midnight, 1}) == reject_reason::none);
    for (int k = 0; k < 99; ++k) {
        REQUIRE(h.push(at("U" + std::to_string(k), midnight + k, 1)) == reject_reason::none);
    }
    CHECK(p.stats().interned_tokens == 100);
    // Full, and every token has state: a new one is refused.
    CHECK(h.push(at("FRESH", midnight + 200, 1)) == reject_reason::token_limit);
    // Once they are spent, a new name makes the table release the unpinned ones.
    REQUIRE(h.advance_time(midnight + 3 * day) == reject_reason::none);
    std::this_thread::sleep_for(std::chrono::milliseconds(110)); // past the rate limit
    CHECK(h.push(at("FRESH", midnight + 3 * day, 1)) == reject_reason::none);
    const pipeline_stats st = p.stats();
    CHECK(st.tokens_released == 99);
    CHECK(st.interned_tokens == 2);
    // The pinned id still names its token (its state was evicted, its id kept).
    CHECK(p.tokens().find("PINNED") == pinned);
    CHECK(h.push(trade{pinned, side::buy, 6.0, 1.0, midnight + 3 * day, 2}) == reject_reason::none);
    p.stop();
    CHECK(p.sink().candles("PINNED", intervals::s1).size() == 2);
    CHECK(p.sink().candles("FRESH", intervals::s1).size() == 1);
}

TEST_CASE("a producer's remembered token ids do not outlive a release") {
    // AAA's id goes back to the table and BBB takes it; the producer that pushed AAA by name
    // pushes AAA again, which gets a new id: every trade lands on its own token.
    runtime_config cfg;
    cfg.max_tokens = 2;
    pipeline<latency_policy, memory_sink> p{cfg};
    p.start();
    auto h = p.make_producer();
    REQUIRE(h.push(at("AAA", midnight, 1, 1.0)) == reject_reason::none);
    REQUIRE(h.push(at("AAA", midnight + 1, 2, 1.0)) == reject_reason::none); // from the cache
    const token_id first = *p.tokens().find("AAA");
    REQUIRE(h.advance_time(midnight + 3 * day) == reject_reason::none);
    (void)p.reclaim_now(); // AAA is spent: its state goes, and its id with it
    REQUIRE(p.stats().tokens_released == 1);
    REQUIRE(h.push(at("BBB", midnight + 3 * day, 3, 2.0)) == reject_reason::none);
    CHECK(p.tokens().find("BBB") == first);
    REQUIRE(h.push(at("AAA", midnight + 3 * day + 1, 4, 1.0)) == reject_reason::none);
    REQUIRE(h.push(at("BBB", midnight + 3 * day + 2, 5, 2.0)) == reject_reason::none);
    REQUIRE(h.push(at("AAA", midnight + 3 * day + 3, 6, 1.0)) == reject_reason::none);
    CHECK(p.tokens().find("AAA") != first);
    p.stop();
    const auto days = [&](const char* name) { return p.sink().candles(name, intervals::d1); };
    REQUIRE(days("AAA").size() == 2);
    CHECK(days("AAA")[0].trades == 2);
    CHECK(days("AAA")[1].trades == 2);
    REQUIRE(days("BBB").size() == 1);
    CHECK(days("BBB")[0].trades == 2);
    for (const candle& c : days("AAA")) {
        CHECK(c.low == 1.0);
        CHECK(c.high == 1.0);
    }
    CHECK(days("BBB")[0].low == 2.0);
    CHECK(days("BBB")[0].high == 2.0);
}

TEST_CASE("tokens released and reinterned while producers push stay apart") {
    // Four producers push by name over a token table of 64 while the clock runs and another
    // thread forces reclamations: ids are released and handed out again under load. Every
    // trade's price is its token's number, so a trade applied to the wrong token shows.
    runtime_config cfg;
    cfg.shards = 2;
    cfg.max_tokens = 64;
    cfg.flush_interval = std::chrono::milliseconds(1);
    pipeline<throughput_policy, memory_sink> p{cfg};
    p.start();
    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> accepted{0};
    std::thread reclaimer([&] {
        while (!done.load()) {
            (void)p.reclaim_now();
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
    });
    std::vector<std::thread> producers;
    for (int w = 0; w < 4; ++w) {
        producers.emplace_back([&, w] {
            auto h = p.make_producer();
            for (int round = 0; round < 40; ++round) {
                // Each round is a day later: the previous rounds' tokens are spent.
                const timestamp_ms base = midnight + static_cast<timestamp_ms>(round) * 3 * day;
                (void)h.advance_time(base);
                for (int k = 0; k < 12; ++k) {
                    const int number = (round * 4 + w) * 12 + k;
                    const std::string name = "Z" + std::to_string(number);
                    const trade_view t{name,     static_cast<double>(number + 1),  1.0, side::buy,
                                       base + k, static_cast<std::uint64_t>(k + 1)};
                    const reject_reason r = w % 2 == 0 ? h.push(t) : p.push(t);
                    if (r == reject_reason::none) {
                        accepted.fetch_add(1);
                    } else {
                        CHECK(r == reject_reason::token_limit);
                    }
                }
            }
        });
    }
    for (auto& t : producers) {
        t.join();
    }
    done = true;
    reclaimer.join();
    p.stop();
    const pipeline_stats st = p.stats();
    CHECK(st.accepted == accepted.load());
    CHECK(st.applied + st.late == st.accepted);
    CHECK(st.tokens_released > 0);
    std::uint64_t trades = 0;
    for (const std::string& name : p.sink().tokens()) {
        const double price = std::stod(name.substr(1)) + 1.0;
        for (const candle& c : p.sink().candles(name, intervals::d1)) {
            CHECK(c.high == price);
            CHECK(c.low == price);
            trades += c.trades;
        }
    }
    CHECK(trades == st.applied);
}
