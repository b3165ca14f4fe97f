// Shard snapshots: a shard saved and loaded into another goes on exactly as the original, bit
// for bit, and input that does not read back (truncated, corrupt, another policy's layout) is
// refused with snapshot_error.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <doctest/doctest.h>

#include <tradeagg/detail/byte_codec.hpp>
#include <tradeagg/tradeagg.hpp>

using namespace tradeagg;

namespace {

constexpr timestamp_ms midnight = 1'732'924'800'000; // 2024-11-30T00:00:00Z
constexpr timestamp_ms minute = 60'000;
constexpr timestamp_ms hour = 60 * minute;

/// One update as the sink saw it: its bytes (every double by its bits, the token's id and name)
/// and a line that says what it is, for a failure message.
struct recorded {
    std::string bytes;
    std::string text;
};

void put_candle(detail::byte_writer& w, const candle& c) {
    w.i64(c.open_time);
    w.i64(c.close_time);
    for (const double v : {c.open, c.high, c.low, c.close, c.volume, c.quote_volume,
                           c.taker_buy_volume, c.taker_buy_quote_volume}) {
        w.f64(v);
    }
    w.u64(c.trades);
    w.u64(c.first_trade_id);
    w.u64(c.last_trade_id);
    w.boolean(c.closed);
}

recorded record(const candle_update& u) {
    recorded r;
    detail::byte_writer w(r.bytes);
    w.u8(1);
    w.u32(u.token);
    w.text(u.name);
    w.i64(u.width.count());
    w.u32(u.interval_index);
    put_candle(w, u.data);
    r.text = "candle " + std::string(u.name) + " " + std::string(interval_name(u.width).view()) +
             " @" + std::to_string(u.data.open_time) + " trades " + std::to_string(u.data.trades) +
             (u.data.closed ? " closed" : " open");
    return r;
}

recorded record(const token_update& u) {
    recorded r;
    detail::byte_writer w(r.bytes);
    w.u8(2);
    w.u32(u.token);
    w.text(u.name);
    w.f64(u.latest.price);
    w.f64(u.latest.quantity);
    w.u8(static_cast<std::uint8_t>(u.latest.taker));
    w.i64(u.latest.ts_ms);
    w.u64(u.latest.id);
    const rolling_stats& s = u.rolling;
    w.i64(s.window_start);
    w.i64(s.window_end);
    for (const double v : {s.open, s.high, s.low, s.last, s.volume, s.quote_volume, s.vwap,
                           s.price_change, s.price_change_percent}) {
        w.f64(v);
    }
    w.u64(s.trades);
    r.text = "token " + std::string(u.name) + " window_end " + std::to_string(s.window_end) +
             " trades " + std::to_string(s.trades);
    return r;
}

/// Records every update of every flush, in order, with a mark where each batch starts.
struct recording_sink {
    std::vector<recorded> updates;

    void consume(const flush_batch& b) {
        updates.push_back({"batch", "batch of " + std::to_string(b.candles.size()) + " candles, " +
                                        std::to_string(b.tokens.size()) + " tokens"});
        for (const candle_update& c : b.candles) {
            updates.push_back(record(c));
        }
        for (const token_update& t : b.tokens) {
            updates.push_back(record(t));
        }
    }
};

/// A shard driven as a partition stream's consumer drives it (redis/partition_engine.hpp): its
/// own token table and memory budget, trades through one ring, `apply_here` on the caller's
/// thread.
template <class Policy>
struct engine {
    explicit engine(const resolved_config<Policy>& rc)
        : table(rc.max_tokens, 1), budget(1, rc.memory_limit_mb << 20, rc.max_active_tokens),
          worker(0, rc, on_late, table, budget, sink), ring(&worker.ring_for(0)) {}

    recording_sink sink;
    std::uint64_t late = 0;
    std::function<void(const late_trade&)> on_late = [this](const late_trade&) { ++late; };
    token_table table;
    memory_budget budget;
    shard<Policy, recording_sink> worker;
    ingress_ring* ring;

    void push(std::string_view token, const trade& t) {
        const token_table::intern_result r = table.intern(token);
        REQUIRE(r.reason == reject_reason::none);
        trade with_id = t;
        with_id.token = r.id;
        push_record(with_id);
    }
    /// The event-time clock moves to `t` (as `pipeline::advance_time` tells a shard).
    void advance_time(timestamp_ms t) { push_record(trade{clock_token, side::buy, 0, 0, t, 0}); }

    [[nodiscard]] std::string save() const {
        std::string out;
        detail::byte_writer w(out);
        worker.save_state(w);
        return out;
    }
    void load(std::string_view blob) {
        detail::byte_reader r(blob);
        worker.load_state(r);
        CHECK(r.left() == 0);
    }

private:
    void push_record(const trade& t) {
        while (!ring->push(ingress_record{t, 0})) {
            worker.apply_here();
        }
    }
};

/// What an engine is fed: a trade for `names[token]`, or the clock moving (`clock`).
struct event {
    bool clock = false;
    std::size_t token = 0;
    trade t;
};

struct scenario {
    std::vector<std::string> names;
    std::vector<event> events;
    std::vector<bool> apply_after; ///< `apply_here` after this event
};

/// A deterministic stream over a few hundred tokens with Zipf-like skew, over more than a day of
/// event time: trades out of order within the allowed lateness, late ones, buys and sells, prices
/// and quantities over many magnitudes, and tokens that come back after more than a day (their
/// rolling windows emptied, their daily candles retired). With `clock`, the event-time clock
/// follows the arrivals a few seconds behind.
template <class Policy>
scenario make_scenario(std::size_t count, bool clock, std::uint64_t seed) {
    constexpr std::int64_t lateness = Policy::allowed_lateness.count();
    constexpr std::size_t tokens = 300;
    constexpr std::size_t returning = 12; // the last few trade early, and again after a day
    std::mt19937_64 rng(seed);
    const auto unit = [&] { return static_cast<double>(rng() >> 11) * 0x1p-53; };
    const auto below = [&](std::uint64_t n) { return rng() % n; };

    scenario s;
    std::vector<double> price(tokens);
    for (std::size_t i = 0; i < tokens; ++i) {
        s.names.push_back("TK" + std::to_string(i));
        price[i] = std::pow(10.0, unit() * 8.0 - 3.0);
    }
    timestamp_ms now = midnight + 7'321;
    std::uint64_t id = 1'000;
    for (std::size_t n = 0; n < count; ++n) {
        now += below(100) == 0 ? static_cast<timestamp_ms>(below(40 * minute))
                               : static_cast<timestamp_ms>(below(2'500));
        if (clock && below(80) == 0) {
            s.events.push_back({true, 0, trade{clock_token, side::buy, 0, 0, now - 5'000, 0}});
            s.apply_after.push_back(below(3) == 0);
            continue;
        }
        const bool early = now < midnight + 2 * hour;
        const bool back = now > midnight + 26 * hour;
        std::size_t token = static_cast<std::size_t>(static_cast<double>(tokens - returning) *
                                                     unit() * unit() * unit());
        if ((early || back) && below(10) == 0) {
            token = tokens - returning + below(returning);
        }
        timestamp_ms ts = now;
        const std::uint64_t kind = below(100);
        if (kind < 30) {
            ts -= static_cast<timestamp_ms>(below(lateness)); // out of order, never late
        } else if (kind < 34) {
            ts -= lateness + 1'000 + static_cast<timestamp_ms>(below(2 * minute)); // late, mostly
        } else if (kind < 35) {
            ts -= static_cast<timestamp_ms>(below(30 * hour)); // far behind
        }
        price[token] *= 1.0 + (unit() - 0.5) * 0.02;
        const double qty = std::pow(10.0, unit() * 9.0 - 4.0);
        const side taker = below(2) == 0 ? side::buy : side::sell;
        // Now and then a trade id that is not the latest: the (time, id) order decides ends.
        const std::uint64_t trade_id = below(20) == 0 ? id - below(50) : id;
        ++id;
        s.events.push_back({false, token, trade{0, taker, price[token], qty, ts, trade_id}});
        s.apply_after.push_back(below(150) == 0);
    }
    return s;
}

template <class Policy>
void feed(engine<Policy>& e, const scenario& s, std::size_t i) {
    const event& ev = s.events[i];
    if (ev.clock) {
        e.advance_time(ev.t.ts_ms);
    } else {
        e.push(s.names[ev.token], ev.t);
    }
    if (s.apply_after[i]) {
        e.worker.apply_here();
    }
}

/// The first update where `got` differs from `want[from...]`, described; empty if none.
std::string first_difference(const std::vector<recorded>& want, std::size_t from,
                             const std::vector<recorded>& got) {
    const std::size_t n = want.size() - from;
    for (std::size_t i = 0; i < std::min(n, got.size()); ++i) {
        if (want[from + i].bytes != got[i].bytes) {
            return "update " + std::to_string(i) + ": original " + want[from + i].text +
                   ", restored " + got[i].text;
        }
    }
    if (n != got.size()) {
        return "original " + std::to_string(n) + " updates, restored " + std::to_string(got.size());
    }
    return {};
}

/// Drives an original shard through the scenario, snapshots it at several points (the first
/// before any trade), loads each snapshot into a fresh shard and feeds it the rest in step with
/// the original: each must hand its sink exactly what the original does from then on, count the
/// same late trades, and end with the same snapshot.
template <class Policy>
void check_continuation(bool clock) {
    runtime_config cfg;
    // Eviction is invisible to the sink, but a token evicted before a snapshot is missing from
    // it, so a restored table numbers the tokens after it differently: ids would not compare.
    cfg.evict_idle_tokens = !clock;
    const resolved_config<Policy> rc = resolve<Policy>(cfg);
    const scenario s = make_scenario<Policy>(9'000, clock, clock ? 11 : 5);
    const std::size_t n = s.events.size();
    const std::vector<std::size_t> cuts = {0, 1, n / 9, n / 3, n / 2, 4 * n / 5, n};

    engine<Policy> original(rc);
    struct restored {
        std::unique_ptr<engine<Policy>> e;
        std::size_t from = 0; ///< the original's updates before the snapshot
        std::uint64_t late = 0;
    };
    std::vector<restored> copies;
    std::size_t next_cut = 0;
    for (std::size_t i = 0; i <= n; ++i) {
        if (next_cut < cuts.size() && cuts[next_cut] == i) {
            ++next_cut;
            original.worker.apply_here();
            for (restored& r : copies) {
                r.e->worker.apply_here();
            }
            const std::string blob = original.save();
            restored r{std::make_unique<engine<Policy>>(rc), original.sink.updates.size(),
                       original.late};
            r.e->load(blob);
            CHECK(r.e->save() == blob);
            CHECK(r.e->worker.book().active_tokens() == original.worker.book().active_tokens());
            copies.push_back(std::move(r));
        }
        if (i == n) {
            break;
        }
        feed(original, s, i);
        for (restored& r : copies) {
            feed(*r.e, s, i);
        }
    }
    original.worker.apply_here();
    const std::string final_state = original.save();
    CHECK(original.late > 0);
    CHECK(original.worker.book().active_tokens() > 200);
    for (std::size_t c = 0; c < copies.size(); ++c) {
        restored& r = copies[c];
        CAPTURE(c);
        CAPTURE(cuts[c]);
        r.e->worker.apply_here();
        const std::string difference =
            first_difference(original.sink.updates, r.from, r.e->sink.updates);
        CHECK_MESSAGE(difference.empty(), difference);
        CHECK(r.e->late == original.late - r.late);
        CHECK(r.e->save() == final_state);
    }
    // The stream did what it is for: every kind of change happened after the middle cut.
    std::size_t closed = 0;
    for (std::size_t i = copies[4].from; i < original.sink.updates.size(); ++i) {
        closed += original.sink.updates[i].text.find(" closed") != std::string::npos ? 1 : 0;
    }
    CHECK(closed > 1'000);
}

/// A small shard's snapshot: three tokens over a few minutes, so that coarse buckets and rolling
/// sub-buckets hold trades; one more token with a single trade.
template <class Policy>
std::string small_snapshot(const resolved_config<Policy>& rc) {
    engine<Policy> e(rc);
    std::uint64_t id = 1;
    for (int k = 0; k < 40; ++k) {
        for (const char* token : {"BTC", "ETH", "SOL"}) {
            const side taker = k % 3 == 0 ? side::sell : side::buy;
            e.push(token,
                   trade{0, taker, 100.0 + k, 0.5 + k * 0.25,
                         midnight + k * 7'919 + static_cast<timestamp_ms>(id % 5) * 100, id});
            ++id;
        }
    }
    e.push("DOGE", trade{0, side::buy, 0.1, 1e6, midnight + 3 * minute, id});
    e.worker.apply_here();
    return e.save();
}

/// Loads `blob` into a fresh shard of `Policy`; returns the snapshot_error's message, or
/// "loaded" if it loads.
template <class Policy>
std::string load_outcome(const resolved_config<Policy>& rc, std::string_view blob) {
    engine<Policy> e(rc);
    detail::byte_reader r(blob);
    try {
        e.worker.load_state(r);
    } catch (const snapshot_error& error) {
        return error.what();
    }
    return "loaded";
}

template <class Policy>
resolved_config<Policy> small_config() {
    runtime_config cfg;
    cfg.ring_capacity = 64; // a shard per load below: keep each cheap
    return resolve<Policy>(cfg);
}

bool contains(const std::string& text, std::string_view part) {
    return text.find(part) != std::string::npos;
}

/// Where the little-endian bytes of `v` first appear in `blob`.
std::size_t find_i64(const std::string& blob, std::int64_t v) {
    std::string bytes;
    detail::byte_writer(bytes).i64(v);
    const std::size_t at = blob.find(bytes);
    REQUIRE(at != std::string::npos);
    return at;
}

std::string patched_i64(std::string blob, std::size_t at, std::int64_t v) {
    std::string bytes;
    detail::byte_writer(bytes).i64(v);
    blob.replace(at, 8, bytes);
    return blob;
}

std::string patched_u32(std::string blob, std::size_t at, std::uint32_t v) {
    detail::byte_writer(blob).patch_u32(at, v);
    return blob;
}

/// A policy with another layout: the same but for the allowed lateness.
template <class Policy>
struct later_policy : Policy {
    static constexpr std::chrono::milliseconds allowed_lateness{Policy::allowed_lateness * 3};
};

/// A policy with the same layout: only tuning differs.
template <class Policy>
struct retuned_policy : Policy {
    static constexpr std::size_t batch_width = 16;
    static constexpr std::size_t flush_threshold = 8;
};

/// The same policy with a small arena and nothing reserved up front: a shard that costs little
/// to build, for a test that builds thousands. The layout is the policy's: it reads its
/// snapshots.
template <class Policy>
struct light_policy : Policy {
    static constexpr std::size_t arena_chunk_bytes = std::size_t{64} << 10;
    static constexpr std::size_t arena_max_chunk_bytes = std::size_t{64} << 10;
    static constexpr std::size_t arena_reserve_tokens = 0;
};

/// A trade for token 0 of a book-level test.
trade at(timestamp_ms ts, std::uint64_t id, double price, double qty, side taker = side::buy) {
    return trade{0, taker, price, qty, ts, id};
}

} // namespace

TEST_CASE_TEMPLATE("snapshot: a restored shard goes on exactly as the original", Policy,
                   throughput_policy, latency_policy, memory_constrained_policy) {
    check_continuation<Policy>(false);
}

TEST_CASE_TEMPLATE("snapshot: with the event-time clock, a restored shard goes on exactly", Policy,
                   throughput_policy, latency_policy, memory_constrained_policy) {
    check_continuation<Policy>(true);
}

TEST_CASE_TEMPLATE("snapshot: a book with changes not yet collected hands them over in order",
                   Policy, throughput_policy, latency_policy, memory_constrained_policy) {
    using book_type = token_book<Policy>;
    token_table table(100, 1);
    book_type book;
    std::vector<candle_update> retired;
    const auto apply = [&](book_type& b, token_table& t, std::string_view name, trade tr) {
        tr.token = t.intern(name).id;
        auto& s = b.get(tr.token, t);
        if (!s.is_late(tr)) {
            s.apply(tr, retired, b.rolling_bytes());
            b.mark_dirty(s);
        }
        b.schedule(s);
    };
    const auto collect = [](book_type& b) {
        std::vector<candle_update> candles;
        std::vector<token_update> tokens;
        b.collect(candles, tokens);
        std::vector<recorded> out;
        for (const auto& c : candles) {
            out.push_back(record(c));
        }
        for (const auto& t : tokens) {
            out.push_back(record(t));
        }
        return out;
    };
    // Interned A, B, C; changed C, A, B since the last collect: collected in that order.
    for (const char* name : {"A", "B", "C"}) {
        apply(book, table, name, at(midnight, 1, 10.0, 1.0));
    }
    (void)collect(book);
    apply(book, table, "C", at(midnight + 61'000, 2, 11.0, 2.0, side::sell));
    apply(book, table, "A", at(midnight + 62'000, 3, 12.0, 3.0));
    apply(book, table, "B", at(midnight + 30 * hour, 4, 13.0, 4.0));
    book.advance_clock(midnight + 63'500, retired);
    REQUIRE(book.dirty_count() == 3);

    std::string blob;
    detail::byte_writer w(blob);
    book.save(w);
    token_table table2(100, 1);
    book_type copy;
    detail::byte_reader r(blob);
    copy.load(r, table2);
    CHECK(r.left() == 0);
    CHECK(copy.dirty_count() == 3);

    const std::vector<recorded> want = collect(book);
    const std::vector<recorded> got = collect(copy);
    REQUIRE(want.size() > 3);
    CHECK(first_difference(want, 0, got).empty());
    CHECK(got.back().text.rfind("token B", 0) == 0);

    // And on: the clock retires what the schedule says, for both alike.
    for (book_type* b : {&book, &copy}) {
        token_table& t = b == &book ? table : table2;
        apply(*b, t, "A", at(midnight + 64'000, 5, 12.5, 1.5));
        b->advance_clock(midnight + 2 * hour, retired);
    }
    CHECK(first_difference(collect(book), 0, collect(copy)).empty());
    std::string again;
    std::string again_copy;
    detail::byte_writer w1(again);
    detail::byte_writer w2(again_copy);
    book.save(w1);
    copy.save(w2);
    CHECK(again == again_copy);
}

TEST_CASE_TEMPLATE("snapshot: every truncation is refused, none crashes", Policy, throughput_policy,
                   latency_policy, memory_constrained_policy) {
    const std::string blob = small_snapshot(small_config<Policy>());
    const auto rc = small_config<light_policy<Policy>>();
    REQUIRE(load_outcome(rc, blob) == "loaded");
    std::size_t refused = 0;
    for (std::size_t n = 0; n < blob.size(); ++n) {
        const std::string outcome = load_outcome(rc, std::string_view(blob).substr(0, n));
        if (outcome != "loaded") {
            ++refused;
        } else {
            FAIL_CHECK("a snapshot cut to " << n << " of " << blob.size() << " bytes loaded");
        }
    }
    CHECK(refused == blob.size());
}

TEST_CASE_TEMPLATE("snapshot: another policy's layout is refused, another tuning is not", Policy,
                   throughput_policy, latency_policy, memory_constrained_policy) {
    const std::string blob = small_snapshot(small_config<Policy>());
    const auto refused = [&](auto tag) {
        using other = typename decltype(tag)::type;
        const std::string outcome = load_outcome(small_config<other>(), blob);
        INFO(outcome);
        return contains(outcome, "snapshot from another policy layout");
    };
    CHECK(refused(std::type_identity<later_policy<Policy>>{}));
    if constexpr (!std::is_same_v<Policy, throughput_policy>) {
        CHECK(refused(std::type_identity<throughput_policy>{}));
    }
    if constexpr (!std::is_same_v<Policy, latency_policy>) {
        CHECK(refused(std::type_identity<latency_policy>{}));
    }
    if constexpr (!std::is_same_v<Policy, memory_constrained_policy>) {
        CHECK(refused(std::type_identity<memory_constrained_policy>{}));
    }
    CHECK(load_outcome(small_config<retuned_policy<Policy>>(), blob) == "loaded");
}

TEST_CASE_TEMPLATE("snapshot: corrupt fields are refused with what is wrong", Policy,
                   throughput_policy, latency_policy, memory_constrained_policy) {
    using rolling = typename detail::token_state<Policy>::window;
    const resolved_config<Policy> rc = small_config<Policy>();
    // One token, two trades in one second: one finest bucket, an empty rolling window.
    const timestamp_ms open = midnight + 5'000;
    engine<Policy> e(rc);
    e.push("BTC", trade{0, side::buy, 100.0, 1.0, open + 250, 7});
    e.push("BTC", trade{0, side::sell, 101.0, 2.0, open + 120, 8});
    e.worker.apply_here();
    const std::string blob = e.save();
    REQUIRE(load_outcome(rc, blob) == "loaded");

    const auto refused = [&](const std::string& bad, std::string_view why) {
        const std::string outcome = load_outcome(rc, bad);
        INFO(outcome);
        CHECK(outcome != "loaded");
        CHECK(contains(outcome, why));
    };
    // The finest bucket's slot: its open time, its mark, its sums (open .. quote_volume) and
    // its trade count.
    const std::size_t slot = find_i64(blob, open);
    refused(patched_i64(blob, slot, open + 1), "not the start of a bucket");
    if constexpr (detail::candle_layout<Policy>::finest_slots > 1) {
        refused(patched_i64(blob, slot, open + 1'000), "belongs in slot");
    }
    refused(patched_i64(blob, slot, open + 3 * minute), "after the watermark");
    {
        std::string bad = blob;
        bad[slot + 8] = 7;
        refused(bad, "neither 0 nor 1");
    }
    refused(patched_i64(blob, slot + 9 + 64, 0), "without trades");
    // The latest trade's side: after the fingerprint, the clock, the count, the name, the
    // watermark and four other times, the price and the quantity.
    {
        const std::size_t side_at = 8 + 8 + 4 + (4 + 3) + 5 * 8 + 2 * 8;
        REQUIRE(find_i64(blob.substr(side_at + 1), open + 250) == 0);
        std::string bad = blob;
        bad[side_at] = 7;
        refused(bad, "side 7");
    }
    // The rolling window closes the token; then its schedule entry and the changed list.
    std::string empty_window;
    {
        rolling w;
        detail::byte_writer ww(empty_window);
        w.save(ww);
    }
    const std::size_t window = blob.size() - 4 - 8 - empty_window.size();
    REQUIRE(blob.compare(window, empty_window.size(), empty_window) == 0);
    const auto over = static_cast<std::uint32_t>(rolling::bucket_count + 1);
    refused(patched_u32(patched_u32(blob, window, over), window + 4, over), "rolling window");
    refused(patched_u32(blob, window + 4, 1), "rolling window of 1 sub-buckets in a ring of 0");
    {
        std::string bad = blob;
        bad[window + empty_window.size() - 2] = 2; // prefix_valid
        refused(bad, "neither 0 nor 1");
    }
    {
        std::string bad = blob;
        bad[window + empty_window.size() - 1] = 1; // prefix_any, with no sub-bucket
        refused(bad, "prefix flags disagree");
    }
    // The shard's clock before the epoch; a changed token beyond the list.
    refused(patched_i64(blob, 8, -5), "shard clock -5 out of range");
    refused(patched_u32(blob, blob.size() - 4, 1), "truncated");
    // A token name the table refuses, and one listed twice.
    {
        std::string bad = blob;
        bad.replace(bad.find("BTC"), 3, "B{C");
        refused(bad, "token 'B{C' refused by the token table: invalid_token");
    }
    {
        engine<Policy> two(rc);
        two.push("AA", trade{0, side::buy, 1.0, 1.0, open, 1});
        two.push("AB", trade{0, side::buy, 1.0, 1.0, open, 2});
        two.worker.apply_here();
        std::string bad = two.save();
        bad.replace(bad.find("AB", bad.find("AA") + 2), 2, "AA");
        refused(bad, "token 'AA' listed twice");
    }
}

TEST_CASE("snapshot: a rolling window reads back bit for bit and refuses a broken ring") {
    using window = detail::rolling_window<60'000, 86'400'000>;
    std::size_t bytes = 0;
    window w;
    detail::ohlc_accumulator part;
    part.reset(trade{0, side::buy, 10.0, 0.1, 0, 1}, 1.0);
    for (std::int64_t index : {100, 101, 103, 110, 111}) {
        part.add(trade{0, side::sell, 10.0 + static_cast<double>(index), 0.3, 0, 2}, 0.7);
        w.merge(index, part, index * 60'000, bytes);
    }
    (void)w.stats(111 * 60'000);
    w.merge(112, part, 112 * 60'000, bytes);
    std::string blob;
    detail::byte_writer out(blob);
    w.save(out);

    std::size_t copy_bytes = 0;
    window copy;
    detail::byte_reader in(blob);
    copy.load(in, copy_bytes);
    CHECK(in.left() == 0);
    CHECK(copy_bytes == bytes);
    CHECK(copy.allocated_bytes() == w.allocated_bytes());
    std::string again;
    detail::byte_writer again_out(again);
    copy.save(again_out);
    CHECK(again == blob);
    const rolling_stats a = w.stats(2 * 60 * 60'000);
    const rolling_stats b = copy.stats(2 * 60 * 60'000);
    CHECK(std::memcmp(&a, &b, sizeof a) == 0);

    const auto refused = [&](std::string bad, std::string_view why) {
        window fresh;
        std::size_t n = 0;
        detail::byte_reader r(bad);
        try {
            fresh.load(r, n);
            FAIL_CHECK("loaded");
        } catch (const snapshot_error& e) {
            INFO(e.what());
            CHECK(contains(e.what(), why));
        }
        CHECK(n == 0);
        CHECK(fresh.allocated_bytes() == 0);
    };
    constexpr std::size_t record = 8 + 72;
    refused(patched_u32(blob, 0, 1'441), "at most 1440");
    refused(patched_i64(blob, 8 + record, 99), "does not follow 100");
    refused(patched_i64(blob, 8 + 5 * record, 100 + 1'440), "span more than the window");
    refused(patched_i64(blob, 8 + 72, 0), "empty rolling sub-bucket");
}
