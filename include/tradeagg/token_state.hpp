#pragma once
// One token's state: a ring of candle buckets per interval (laid out by `candle_layout`), the
// rolling window and the latest trade; how a trade is applied to it, how event time closes and
// retires its buckets, how its changes are collected for the sink, and how it is saved and
// loaded. A shard's token_book keeps one per token it owns.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tradeagg/candle.hpp>
#include <tradeagg/config.hpp>
#include <tradeagg/detail/byte_codec.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/rolling_window.hpp>
#include <tradeagg/sink.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg::detail {

/// Where each interval's ring of buckets sits in a token's slot array.
///
/// The finest interval takes the trades: a bucket of width w can take them until the watermark
/// passes its end by the allowed lateness, so the ring needs ceil(lateness / w) + 1 slots
/// (bucket k and bucket k - slots never both accept trades, and a slot is reused only once its
/// previous bucket is final).
///
/// A coarser interval needs one slot. Its slot holds only what retired children sealed into
/// it, and the first child of bucket k + 1 retires at or after
/// `open(k + 1) + child width + lateness`, later than bucket k becomes final
/// (`open(k + 1) + lateness`): bucket k is always gone, or final and retired first, by then.
/// Until its first child retires a coarse bucket lives only in its children ("virtual"), and
/// `collect` builds it from them.
template <policy Policy>
struct candle_layout {
    static constexpr std::size_t interval_count = Policy::intervals.size();
    static constexpr std::int64_t lateness = Policy::allowed_lateness.count();

    static constexpr std::array<std::int64_t, interval_count> widths = [] {
        std::array<std::int64_t, interval_count> w{};
        for (std::size_t i = 0; i < interval_count; ++i) {
            w[i] = Policy::intervals[i].count();
        }
        return w;
    }();
    /// Slots of the finest interval's ring; every coarser interval has one slot after them.
    static constexpr std::size_t finest_slots =
        static_cast<std::size_t>((lateness + widths[0] - 1) / widths[0]) + 1;
    static constexpr std::size_t total_slots = finest_slots + interval_count - 1;

    /// The slot of interval `i`'s bucket.
    static constexpr std::size_t coarse_slot(std::size_t i) noexcept {
        return finest_slots + i - 1;
    }
    /// End of the bucket of interval `i` that contains `t`.
    static constexpr timestamp_ms end_of(timestamp_ms t, std::size_t i) noexcept {
        return bucket_open(t, widths[i]) + widths[i];
    }
};

/// Reads an event time that is `absent` or within the times trades may carry.
inline timestamp_ms read_event_time(byte_reader& in, std::string_view what, timestamp_ms absent) {
    const std::int64_t t = in.i64();
    if (t != absent && (t < 0 || t > max_timestamp_ms)) {
        in.fail(std::string(what) + " " + std::to_string(t) + " out of range");
    }
    return t;
}

/// One bucket of a token: its sums, which bucket it is, and whether it must be emitted.
struct bucket_slot {
    candle_accumulator acc;
    timestamp_ms open_time = -1; ///< -1: the slot is empty
    bool dirty = false;          ///< changed since it was last handed to the sink

    [[nodiscard]] bool occupied() const noexcept { return open_time >= 0; }
};

/// Everything one token costs a shard. Touched only by the owning shard's worker.
///
/// A trade updates only the finest interval's bucket. Each coarser bucket accumulates the final
/// buckets of the interval below it: when a bucket can take no more trades (the watermark is
/// past its end by the allowed lateness) it is retired, oldest first, and folded ("sealed")
/// into its parent; finest buckets are sealed into the rolling window's sub-buckets as well.
/// An emitted candle is its sealed part plus its children still in their ring. So a trade
/// touches the token's header and one slot whatever the number of intervals (with many tokens
/// the worker is bound by cache misses), and a bucket costs one merge when it retires.
///
/// A candle is closed when the watermark has reached its end; nothing is stored for it. A
/// candle is emitted when it changed, or when it closed, since the last `collect`.
template <policy Policy>
struct token_state {
    using layout = candle_layout<Policy>;
    using window = rolling_window<Policy::rolling_bucket.count(), rolling_window_length.count()>;
    static constexpr std::size_t interval_count = layout::interval_count;
    static constexpr timestamp_ms none = std::numeric_limits<timestamp_ms>::max();
    static constexpr timestamp_ms never = std::numeric_limits<timestamp_ms>::min();

    token_state(token_id token, std::string_view token_name) noexcept
        : id(token), name(token_name) {
        latest.ts_ms = never;
    }

    token_id id;
    bool in_dirty_list = false;
    std::string_view name;
    timestamp_ms watermark = never;
    /// The watermark when the token was last collected: a bucket that ends after it and at or
    /// before the watermark closed since, and is emitted closed.
    timestamp_ms collected_at = never;
    /// Earliest watermark at which a bucket closes or becomes final: below it, a trade that
    /// advances the watermark does no closing work at all.
    timestamp_ms next_event = none;
    timestamp_ms next_close = none; ///< earliest end, after the watermark, of any bucket
    timestamp_ms next_final = none; ///< earliest time a stored bucket becomes final
    /// Time of this token's entry in its book's schedule (`none`: no entry).
    timestamp_ms scheduled = none;
    latest_trade latest; ///< by (event time, trade id); ts_ms `never` before any
    std::array<bucket_slot, layout::total_slots> slots{};
    window rolling;

    /// True if `t` arrives after its finest bucket closed by more than the allowed lateness.
    /// Lateness is decided per trade, on the finest interval, so every interval and the rolling
    /// window see exactly the same trades.
    [[nodiscard]] bool is_late(const trade& t) const noexcept {
        return watermark != never && watermark >= layout::end_of(t.ts_ms, 0) + layout::lateness;
    }

    /// True if the candle of interval `i` opening at `open` has closed.
    [[nodiscard]] bool is_closed(timestamp_ms open, std::size_t i) const noexcept {
        return watermark != never && watermark >= open + layout::widths[i];
    }

    /// Applies an accepted, non-late trade. Final candles retired while still unflushed are
    /// appended to `evicted`. Allocates only when the rolling ring grows.
    template <class EvictedOut>
    void apply(const trade& t, EvictedOut& evicted, std::size_t& rolling_bytes) {
        if (t.ts_ms > watermark) {
            // Close and retire before the trade lands: the bucket it opens may need the slot
            // of one that has just become final.
            advance_to(t.ts_ms, evicted, rolling_bytes);
        }
        const timestamp_ms open = bucket_open(t.ts_ms, layout::widths[0]);
        bucket_slot& f = slots[finest_slot(open)];
        if (f.open_time == open) {
            f.acc.add(t);
        } else {
            // The slot is free: the ring has room for every bucket not yet final.
            f.acc.reset(t);
            start_bucket(f, open, 0);
        }
        f.dirty = true;
        if (latest.ts_ms < t.ts_ms || (latest.ts_ms == t.ts_ms && latest.id < t.id)) {
            latest = latest_trade{t.price, t.quantity, t.taker, t.ts_ms, t.id};
        }
    }

    /// Moves the watermark forward to `to` (never back), closing and retiring what it reaches.
    /// Returns true if a bucket closed or retired (the token then has something to emit).
    template <class EvictedOut>
    bool advance_to(timestamp_ms to, EvictedOut& evicted, std::size_t& rolling_bytes) {
        if (to <= watermark) {
            return false;
        }
        watermark = to;
        if (watermark < next_event) {
            return false;
        }
        if (watermark >= next_final) {
            retire_final(evicted, rolling_bytes, std::make_index_sequence<interval_count>{});
            next_final = none;
            for (std::size_t s = 0; s < layout::total_slots; ++s) {
                if (slots[s].occupied()) {
                    next_final =
                        std::min(next_final, slots[s].open_time + layout::widths[level_of(s)] +
                                                 layout::lateness);
                }
            }
        }
        if (watermark >= next_close) {
            next_close = earliest_close();
        }
        next_event = std::min(next_close, next_final);
        if (next_event == none && watermark < spent_at()) {
            next_event = spent_at(); // the rolling window's last sub-bucket leaves it then
        }
        return true;
    }

    /// The watermark from which nothing in this state can change again: every bucket of every
    /// interval is final and the rolling window is empty. A trade that is not late at that
    /// watermark comes after the latest one, so a fresh state takes it exactly as this one
    /// would. `never` for a state that took no trade.
    [[nodiscard]] timestamp_ms spent_at() const noexcept {
        if (latest.ts_ms == never) {
            return never;
        }
        constexpr std::int64_t sub = Policy::rolling_bucket.count();
        constexpr std::int64_t subs = rolling_window_length.count() / sub;
        return std::max(layout::end_of(latest.ts_ms, interval_count - 1) + layout::lateness,
                        (latest.ts_ms / sub + subs) * sub);
    }

    /// True if the state holds nothing that can change or be needed again (see `spent_at`).
    [[nodiscard]] bool spent() const noexcept {
        return next_final == none && watermark >= spent_at();
    }

    /// Hints the cache lines `apply(t)` will touch, so a batch can ask for them ahead: the
    /// header and the finest ring (closing and retiring scan the whole ring).
    void prefetch() const noexcept {
        const char* begin = reinterpret_cast<const char*>(this);
        const char* end = reinterpret_cast<const char*>(&slots[layout::finest_slots]);
        for (const char* p = begin; p < end; p += cache_line_size) {
            __builtin_prefetch(p, 1, 3);
        }
    }

    /// A bucket being built by `collect`: a stored slot, or a virtual coarse bucket.
    struct built_bucket {
        timestamp_ms open_time = 0;
        candle_accumulator acc;
        bool dirty = false;
    };
    /// Buckets of one interval that can exist at once: the finest ring's, one stored coarse
    /// bucket per interval, and the parents of those.
    static constexpr std::size_t max_built = layout::total_slots;

    /// Room for `collect` to build candles in (2.7 KB for seven intervals): a book keeps one
    /// and lends it to every token it collects, so nothing is cleared per token.
    using collect_scratch = std::array<std::array<built_bucket, max_built>, 2>;

    /// Appends every candle that changed or closed to `candles`, clears the marks, and
    /// describes the token. Never allocates beyond what `candles` does.
    template <class CandleOut>
    token_update collect(CandleOut& candles) {
        collect_scratch scratch;
        return collect(candles, scratch);
    }

    /// As `collect(candles)`, building in `scratch`.
    template <class CandleOut>
    token_update collect(CandleOut& candles, collect_scratch& scratch) {
        collect_candles(candles, scratch);
        collected_at = watermark;
        const auto pending = [this](auto&& take) {
            for (std::size_t f = 0; f < layout::finest_slots; ++f) {
                if (slots[f].occupied()) {
                    take(slots[f].open_time / Policy::rolling_bucket.count(), slots[f].acc.ohlc);
                }
            }
        };
        return token_update{id, name, latest, rolling.stats(watermark, pending)};
    }

    /// Marks every bucket the token stores as changed, so that the next `collect` emits every
    /// candle the token holds: the stored ones, and the coarse ones built from them (a built
    /// bucket is changed if a child is). Returns false, marking nothing, for a state that took
    /// no trade: it holds nothing to emit. Never allocates.
    bool touch_all() noexcept {
        if (latest.ts_ms == never) {
            return false;
        }
        for (bucket_slot& s : slots) {
            // Only occupied slots: a new coarse bucket keeps its slot's mark (see `parent_of`).
            s.dirty = s.dirty || s.occupied();
        }
        return true;
    }

    /// Writes this state for `load`, bit for bit: the watermark and the times derived from it,
    /// the latest trade, every slot (an empty one by its mark alone: its sums are never read
    /// again) and the rolling window. Not `scheduled` nor `in_dirty_list`, which are the book's
    /// (`token_book::save`). Never allocates beyond what `out` does.
    void save(byte_writer& out) const {
        out.i64(watermark);
        out.i64(collected_at);
        out.i64(next_event);
        out.i64(next_close);
        out.i64(next_final);
        out.f64(latest.price);
        out.f64(latest.quantity);
        out.u8(static_cast<std::uint8_t>(latest.taker));
        out.i64(latest.ts_ms);
        out.u64(latest.id);
        for (const bucket_slot& s : slots) {
            out.i64(s.open_time);
            out.boolean(s.dirty);
            if (s.occupied()) {
                save_summary(out, s.acc.ohlc);
                out.i64(s.acc.ohlc.first.ts);
                out.u64(s.acc.ohlc.first.id);
                out.i64(s.acc.ohlc.last.ts);
                out.u64(s.acc.ohlc.last.id);
                save_sum(out, s.acc.taker_buy_volume);
                save_sum(out, s.acc.taker_buy_quote_volume);
            }
        }
        rolling.save(out);
    }

    /// Reads what `save` wrote into this state, new from its book; `rolling_bytes` grows by the
    /// rolling ring. Checks what is cheap: times in range, each stored bucket aligned to its
    /// interval, in its slot, open by the watermark, holding trades of its own bucket and none
    /// after the latest trade. Throws `snapshot_error` otherwise, or on input that does not read
    /// back; the state then holds part of it and must be discarded. Allocates the rolling ring.
    void load(byte_reader& in, std::size_t& rolling_bytes) {
        watermark = read_event_time(in, "watermark", never);
        collected_at = read_event_time(in, "collected_at", never);
        if (collected_at > watermark) {
            in.fail("collected_at " + std::to_string(collected_at) + " after the watermark " +
                    std::to_string(watermark));
        }
        // Ends of buckets (and lateness) beyond any trade's time: only their sign is checked.
        next_event = read_next(in);
        next_close = read_next(in);
        next_final = read_next(in);
        latest.price = in.f64();
        latest.quantity = in.f64();
        const std::uint8_t taker = in.u8();
        if (taker > static_cast<std::uint8_t>(side::sell)) {
            in.fail("latest trade of side " + std::to_string(taker));
        }
        latest.taker = static_cast<side>(taker);
        latest.ts_ms = read_event_time(in, "latest trade time", never);
        latest.id = in.u64();
        for (std::size_t i = 0; i < layout::total_slots; ++i) {
            bucket_slot& s = slots[i];
            s.open_time = in.i64();
            s.dirty = in.boolean();
            if (s.open_time != -1) {
                load_bucket(in, i, s);
            }
        }
        rolling.load(in, rolling_bytes);
    }

private:
    static timestamp_ms read_next(byte_reader& in) {
        const timestamp_ms t = in.i64();
        if (t < 0) {
            in.fail("a next event time " + std::to_string(t) + " before the epoch");
        }
        return t;
    }

    /// Reads and checks the sums of a stored bucket in slot `i`, opening at `s.open_time`.
    void load_bucket(byte_reader& in, std::size_t i, bucket_slot& s) {
        const std::size_t level = level_of(i);
        const std::int64_t width = layout::widths[level];
        const auto fail = [&](const std::string& why) {
            in.fail("slot " + std::to_string(i) + " (" +
                    std::string(interval_name(Policy::intervals[level]).view()) + ", open_time " +
                    std::to_string(s.open_time) + "): " + why);
        };
        if (s.open_time < 0 || s.open_time > max_timestamp_ms || s.open_time % width != 0) {
            fail("not the start of a bucket");
        }
        if (level == 0 && finest_slot(s.open_time) != i) {
            fail("the bucket belongs in slot " + std::to_string(finest_slot(s.open_time)));
        }
        if (s.open_time > watermark) {
            fail("opens after the watermark " + std::to_string(watermark));
        }
        ohlc_accumulator& o = s.acc.ohlc;
        load_summary(in, o);
        o.first.ts = in.i64();
        o.first.id = in.u64();
        o.last.ts = in.i64();
        o.last.id = in.u64();
        load_sum(in, s.acc.taker_buy_volume);
        load_sum(in, s.acc.taker_buy_quote_volume);
        if (o.trades == 0) {
            fail("a stored bucket without trades");
        }
        const auto inside = [&](const trade_key& k) {
            return k.ts >= s.open_time && k.ts < s.open_time + width;
        };
        if (!inside(o.first) || !inside(o.last) || o.last < o.first) {
            fail("first and last trades not in order inside the bucket");
        }
        if (trade_key{latest.ts_ms, latest.id} < o.last) {
            fail("a trade after the token's latest");
        }
    }

    static constexpr std::size_t level_of(std::size_t slot) noexcept {
        return slot < layout::finest_slots ? 0 : slot - layout::finest_slots + 1;
    }

    static constexpr std::size_t finest_slot(timestamp_ms open) noexcept {
        if constexpr (layout::finest_slots > 1) {
            return static_cast<std::size_t>(open / layout::widths[0]) % layout::finest_slots;
        } else {
            return 0;
        }
    }

    /// True if the bucket ending at `end` closed after the last collect.
    [[nodiscard]] bool closed_since_collect(timestamp_ms end) const noexcept {
        return collected_at < end && end <= watermark;
    }

    void start_bucket(bucket_slot& s, timestamp_ms open, std::size_t level) noexcept {
        const timestamp_ms end = open + layout::widths[level];
        s.open_time = open;
        if (watermark < end) {
            next_close = std::min(next_close, end);
        }
        next_final = std::min(next_final, end + layout::lateness);
        next_event = std::min(next_close, next_final);
    }

    /// The earliest end after the watermark of a bucket that exists, stored or virtual. Every
    /// bucket opens at or before the watermark, so at each interval only the one holding the
    /// watermark can end after it, and it exists if a stored bucket of that interval or a finer
    /// one opened inside it. Coarser intervals end no earlier, so the finest such wins.
    [[nodiscard]] timestamp_ms earliest_close() const noexcept {
        timestamp_ms newest = -1; // latest opening among stored buckets of the levels so far
        for (std::size_t s = 0; s < layout::finest_slots; ++s) {
            newest = std::max(newest, slots[s].open_time);
        }
        timestamp_ms found = none;
        earliest_close_from(newest, found, std::make_index_sequence<interval_count>{});
        return found;
    }

    template <std::size_t... I>
    void earliest_close_from(timestamp_ms newest, timestamp_ms& found,
                             std::index_sequence<I...>) const noexcept {
        // Left to right, stopping at the first interval whose current bucket exists.
        (void)((closes_at<I>(newest, found)) || ...);
    }

    template <std::size_t I>
    bool closes_at(timestamp_ms& newest, timestamp_ms& found) const noexcept {
        if constexpr (I > 0) {
            newest = std::max(newest, slots[layout::coarse_slot(I)].open_time);
        }
        const timestamp_ms open = bucket_open(watermark, layout::widths[I]);
        if (newest >= open) {
            found = open + layout::widths[I];
            return true;
        }
        return false;
    }

    /// Retires every final bucket, finest interval first and oldest first within one, so a
    /// bucket's children are sealed into it before it retires itself.
    template <class EvictedOut, std::size_t... I>
    void retire_final(EvictedOut& evicted, std::size_t& rolling_bytes, std::index_sequence<I...>) {
        (retire_final_of<I>(evicted, rolling_bytes), ...);
    }

    template <std::size_t I, class EvictedOut>
    void retire_final_of(EvictedOut& evicted, std::size_t& rolling_bytes) {
        constexpr std::int64_t width = layout::widths[I];
        constexpr std::size_t first = I == 0 ? 0 : layout::coarse_slot(I);
        constexpr std::size_t last = I == 0 ? layout::finest_slots : first + 1;
        for (;;) {
            bucket_slot* oldest = nullptr;
            for (std::size_t s = first; s < last; ++s) {
                bucket_slot& b = slots[s];
                if (b.occupied() && watermark >= b.open_time + width + layout::lateness &&
                    (oldest == nullptr || b.open_time < oldest->open_time)) {
                    oldest = &b;
                }
            }
            if (oldest == nullptr) {
                return;
            }
            retire<I>(*oldest, evicted, rolling_bytes);
        }
    }

    /// A final bucket leaves its ring: handed over if it changed or closed since the last
    /// collect, sealed into its parent (and, for the finest, into the rolling window). Its
    /// children retired before it, so its own accumulator is the whole candle.
    template <std::size_t I, class EvictedOut>
    void retire(bucket_slot& b, EvictedOut& evicted, std::size_t& rolling_bytes) {
        constexpr std::int64_t width = layout::widths[I];
        if (b.dirty || closed_since_collect(b.open_time + width)) {
            evicted.push_back(make_update(I, b.acc.snapshot(b.open_time, width, true)));
        }
        if constexpr (I + 1 < interval_count) {
            bucket_slot& parent = parent_of<I + 1>(b.open_time, evicted, rolling_bytes);
            parent.acc.merge(b.acc);
            // Its unflushed change now lives only in the parent.
            parent.dirty = parent.dirty || b.dirty;
        }
        if constexpr (I == 0) {
            rolling.merge(b.open_time / Policy::rolling_bucket.count(), b.acc.ohlc, watermark,
                          rolling_bytes);
        }
        b.open_time = -1;
        b.dirty = false;
    }

    /// The slot of interval I holding the bucket that contains `child_open`, started if need
    /// be. An older bucket still there is final (see `candle_layout`) and is retired first.
    template <std::size_t I, class EvictedOut>
    bucket_slot& parent_of(timestamp_ms child_open, EvictedOut& evicted,
                           std::size_t& rolling_bytes) {
        const timestamp_ms open = bucket_open(child_open, layout::widths[I]);
        bucket_slot& p = slots[layout::coarse_slot(I)];
        if (p.open_time != open) {
            if (p.occupied()) {
                retire<I>(p, evicted, rolling_bytes);
            }
            p.acc = candle_accumulator{};
            start_bucket(p, open, I);
        }
        return p;
    }

    [[nodiscard]] candle_update make_update(std::size_t interval_index,
                                            const candle& c) const noexcept {
        return candle_update{id, name, Policy::intervals[interval_index],
                             static_cast<std::uint32_t>(interval_index), c};
    }

    /// Emits every bucket that changed or closed since the last collect, building each interval
    /// bottom-up from the one below: a bucket is its sealed part plus the buckets below it, so
    /// a token costs one merge per existing bucket whatever the number of changed ones.
    template <class CandleOut>
    void collect_candles(CandleOut& candles, collect_scratch& buffers) {
        std::size_t below_count = 0;
        auto* below = &buffers[0];
        auto* level = &buffers[1];
        for (std::size_t s = 0; s < layout::finest_slots; ++s) {
            bucket_slot& b = slots[s];
            if (b.occupied()) {
                (*below)[below_count++] = built_bucket{b.open_time, b.acc, b.dirty};
                b.dirty = false;
            }
        }
        emit(candles, 0, *below, below_count);
        for (std::size_t i = 1; i < interval_count; ++i) {
            std::size_t count = 0;
            bucket_slot& stored = slots[layout::coarse_slot(i)];
            if (stored.occupied()) {
                (*level)[count++] = built_bucket{stored.open_time, stored.acc, stored.dirty};
                stored.dirty = false;
            }
            for (std::size_t c = 0; c < below_count; ++c) {
                const built_bucket& child = (*below)[c];
                const timestamp_ms open = bucket_open(child.open_time, layout::widths[i]);
                std::size_t at = 0;
                while (at < count && (*level)[at].open_time != open) {
                    ++at;
                }
                if (at == count) {
                    (*level)[count++] = built_bucket{open, candle_accumulator{}, false};
                }
                (*level)[at].acc.merge(child.acc);
                (*level)[at].dirty = (*level)[at].dirty || child.dirty;
            }
            emit(candles, i, *level, count);
            std::swap(below, level);
            below_count = count;
        }
    }

    template <class CandleOut>
    void emit(CandleOut& candles, std::size_t i, const std::array<built_bucket, max_built>& built,
              std::size_t count) const {
        const std::int64_t width = layout::widths[i];
        for (std::size_t b = 0; b < count; ++b) {
            const timestamp_ms end = built[b].open_time + width;
            if (built[b].dirty || closed_since_collect(end)) {
                candles.push_back(make_update(
                    i, built[b].acc.snapshot(built[b].open_time, width, watermark >= end)));
            }
        }
    }
};

} // namespace tradeagg::detail
