#pragma once
// Per-token state (candle rings for every interval, the rolling window, the latest trade) and
// the book a shard keeps of the tokens it owns.

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>
#include <utility>
#include <vector>

#include <tradeagg/arena.hpp>
#include <tradeagg/candle.hpp>
#include <tradeagg/config.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/rolling_window.hpp>
#include <tradeagg/sink.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg {
namespace detail {

/// Asks for every cache line of `*p` ahead of use. Never faults.
template <class T>
inline void prefetch_lines(const T* p) noexcept {
    const char* bytes = reinterpret_cast<const char*>(p);
    for (std::size_t off = 0; off < sizeof(T); off += cache_line_size) {
        __builtin_prefetch(bytes + off, 1, 3);
    }
}

/// Where each interval's ring of buckets sits in a token's slot array. A bucket can take trades
/// until the watermark passes its end by the allowed lateness, so an interval of width w needs
/// ceil(lateness / w) + 1 slots: bucket k and bucket k - slots never both accept trades, and a
/// slot is reused only once its previous bucket is final.
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
    static constexpr std::array<std::size_t, interval_count> slots = [] {
        std::array<std::size_t, interval_count> s{};
        for (std::size_t i = 0; i < interval_count; ++i) {
            s[i] = static_cast<std::size_t>((lateness + widths[i] - 1) / widths[i]) + 1;
        }
        return s;
    }();
    static constexpr std::array<std::size_t, interval_count> offsets = [] {
        std::array<std::size_t, interval_count> o{};
        std::size_t at = 0;
        for (std::size_t i = 0; i < interval_count; ++i) {
            o[i] = at;
            at += slots[i];
        }
        return o;
    }();
    static constexpr std::size_t total_slots = offsets[interval_count - 1] + slots[interval_count - 1];
};

/// A bucket's identity and flags beside its sums: one slot of a token's bucket rings.
struct bucket_slot {
    bucket_meta meta;
    candle_accumulator acc;
};

/// Everything one token costs a shard. Touched only by the owning shard's worker.
///
/// A trade updates only the finest interval's bucket. Coarser candles and the rolling window's
/// sub-buckets are merges of finest buckets: those that have left the finest ring are folded
/// ("sealed") into the coarse slot or the rolling ring, those still in the ring are added when
/// a candle or the rolling statistics are emitted. So a trade touches the token's header and
/// one slot, whatever the number of intervals: with many tokens the worker is bound by cache
/// misses, and this keeps them few.
template <policy Policy>
struct token_state {
    using layout = candle_layout<Policy>;
    using window = rolling_window<Policy::rolling_bucket.count(), rolling_window_length.count()>;
    static constexpr std::size_t interval_count = layout::interval_count;
    static constexpr std::size_t finest_slots = layout::slots[0];

    token_state(token_id token_id_, std::string_view name_) noexcept
        : id(token_id_), name(name_) {}

    token_id id;
    bool in_dirty_list = false;
    std::string_view name;
    timestamp_ms watermark = std::numeric_limits<timestamp_ms>::min();
    std::uint64_t late_trades = 0;
    trade_key latest_key{std::numeric_limits<timestamp_ms>::min(), 0};
    latest_trade latest;
    /// Earliest end among each interval's not-yet-closed buckets (0: none): closing work is
    /// skipped until the watermark reaches it.
    std::array<timestamp_ms, interval_count> next_close{};
    /// Earliest time a finest bucket in the ring becomes final (0: none).
    timestamp_ms next_final = 0;
    /// Finest interval: each bucket's trades. Coarser intervals: the sealed finest buckets.
    std::array<bucket_slot, layout::total_slots> slots{};
    window rolling;

    /// True if `t` arrives after its finest bucket closed by more than the allowed lateness.
    /// Lateness is decided per trade, on the finest interval, so every interval and the rolling
    /// window see exactly the same trades.
    [[nodiscard]] bool is_late(const trade& t) const noexcept {
        const std::int64_t w0 = layout::widths[0];
        const timestamp_ms end = bucket_open(t.ts_ms, w0) + w0;
        return watermark != std::numeric_limits<timestamp_ms>::min() &&
               watermark >= end + layout::lateness;
    }

    /// Applies an accepted, non-late trade. Final candles that leave their slot while still
    /// unflushed are appended to `evicted`. Allocates only when the rolling ring grows.
    template <class EvictedOut>
    void apply(const trade& t, EvictedOut& evicted, std::size_t& rolling_bytes) {
        const timestamp_ms previous = watermark;
        if (t.ts_ms > watermark) {
            watermark = t.ts_ms;
        }
        // Close first: a bucket the new watermark closes may be the one this trade's bucket
        // pushes out of its slot, and it must leave marked closed.
        if (watermark != previous) {
            close_buckets(std::make_index_sequence<interval_count>{});
            if (next_final != 0 && watermark >= next_final) {
                retire_final(evicted, rolling_bytes);
            }
        }
        const timestamp_ms open = bucket_open(t.ts_ms, layout::widths[0]);
        bucket_slot& f = slots[slot_of<0>(open)];
        if (f.meta.open_time == open) {
            f.acc.add(t);
            f.meta.dirty = true;
        } else {
            // The slot is free: its previous bucket became final before this trade's bucket
            // could map here (the ring sizing guarantees it) and was retired above.
            f.acc.reset(t);
            start_bucket<0>(f, open);
            const timestamp_ms final_at = open + layout::widths[0] + layout::lateness;
            if (next_final == 0 || final_at < next_final) {
                next_final = final_at;
            }
        }
        const trade_key k{t.ts_ms, t.id};
        if (!(k < latest_key)) {
            latest_key = k;
            latest = latest_trade{t.price, t.quantity, t.taker, t.ts_ms, t.id};
        }
    }

    /// Hints the cache lines `apply(t)` will touch, so a batch can ask for them ahead.
    void prefetch(const trade& t) const noexcept {
        prefetch_lines(&slots[slot_of<0>(bucket_open(t.ts_ms, layout::widths[0]))]);
    }

    /// Appends every changed candle to `candles` (retiring coarse buckets that a newer one
    /// displaces), clears the marks, and describes the token.
    template <class CandleOut>
    token_update collect(CandleOut& candles) {
        for (std::size_t f = 0; f < finest_slots; ++f) {
            if (slots[f].meta.dirty) {
                mark_coarse(slots[f].meta.open_time, candles,
                            std::make_index_sequence<interval_count>{});
            }
        }
        collect_intervals(candles, std::make_index_sequence<interval_count>{});
        const auto pending = [this](auto&& take) {
            for (std::size_t f = 0; f < finest_slots; ++f) {
                if (slots[f].meta.open_time >= 0) {
                    take(slots[f].meta.open_time / Policy::rolling_bucket.count(),
                         slots[f].acc.ohlc);
                }
            }
        };
        return token_update{id, name, latest, rolling.stats(watermark, pending), late_trades};
    }

private:
    template <std::size_t I>
    static constexpr std::size_t slot_of(timestamp_ms open) noexcept {
        if constexpr (layout::slots[I] > 1) {
            return layout::offsets[I] +
                   static_cast<std::size_t>(open / layout::widths[I]) % layout::slots[I];
        } else {
            return layout::offsets[I];
        }
    }

    template <std::size_t I>
    void start_bucket(bucket_slot& s, timestamp_ms open) noexcept {
        constexpr std::int64_t width = layout::widths[I];
        const bool closed = watermark >= open + width;
        s.meta = bucket_meta{open, true, closed};
        if (!closed && (next_close[I] == 0 || open + width < next_close[I])) {
            next_close[I] = open + width;
        }
    }

    /// Retires every finest bucket that can take no more trades, oldest first, so coarse
    /// buckets start in time order and the ring holds only buckets still open to trades.
    template <class EvictedOut>
    void retire_final(EvictedOut& evicted, std::size_t& rolling_bytes) {
        for (;;) {
            bucket_slot* oldest = nullptr;
            for (std::size_t f = 0; f < finest_slots; ++f) {
                bucket_slot& s = slots[f];
                if (s.meta.open_time >= 0 &&
                    watermark >= s.meta.open_time + layout::widths[0] + layout::lateness &&
                    (oldest == nullptr || s.meta.open_time < oldest->meta.open_time)) {
                    oldest = &s;
                }
            }
            if (oldest == nullptr) {
                break;
            }
            retire_finest(*oldest, evicted, rolling_bytes,
                          std::make_index_sequence<interval_count>{});
            oldest->meta = bucket_meta{};
        }
        next_final = 0;
        for (std::size_t f = 0; f < finest_slots; ++f) {
            const timestamp_ms open = slots[f].meta.open_time;
            if (open >= 0) {
                const timestamp_ms final_at = open + layout::widths[0] + layout::lateness;
                next_final = next_final == 0 ? final_at : std::min(next_final, final_at);
            }
        }
    }

    /// The finest bucket in `f` is final: hand it over if unflushed, then seal it into the
    /// coarser buckets and the rolling window.
    template <class EvictedOut, std::size_t... I>
    void retire_finest(bucket_slot& f, EvictedOut& evicted, std::size_t& rolling_bytes,
                       std::index_sequence<I...>) {
        if (f.meta.dirty) {
            evicted.push_back(make_update(0, f.acc.snapshot(f.meta.open_time, layout::widths[0],
                                                            f.meta.closed)));
        }
        (seal<I>(f, evicted), ...);
        rolling.merge(f.meta.open_time / Policy::rolling_bucket.count(), f.acc.ohlc, watermark,
                      rolling_bytes);
    }

    template <std::size_t I, class EvictedOut>
    void seal(const bucket_slot& f, EvictedOut& evicted) {
        if constexpr (I > 0) {
            bucket_slot* c = coarse_for<I>(f.meta.open_time, evicted);
            if (c != nullptr) {
                c->acc.merge(f.acc);
                // The finest bucket's unflushed change now lives only in the coarse bucket.
                c->meta.dirty = c->meta.dirty || f.meta.dirty;
            }
        }
    }

    /// The coarse slot of interval I holding the bucket that contains `finest_open`, started
    /// if the slot still holds an older bucket (which is then final and handed over if
    /// unflushed). Null if a newer bucket holds the slot: this one was retired, and its last
    /// emission already included every finest bucket still in the ring.
    template <std::size_t I, class EvictedOut>
    bucket_slot* coarse_for(timestamp_ms finest_open, EvictedOut& evicted) {
        const timestamp_ms open = bucket_open(finest_open, layout::widths[I]);
        bucket_slot& c = slots[slot_of<I>(open)];
        if (c.meta.open_time == open) {
            return &c;
        }
        if (c.meta.open_time > open) {
            return nullptr;
        }
        if (c.meta.open_time >= 0 && coarse_dirty<I>(c)) {
            evicted.push_back(make_update(I, materialize<I>(c)));
        }
        c.acc = candle_accumulator{};
        start_bucket<I>(c, open);
        return &c;
    }

    template <class EvictedOut, std::size_t... I>
    void mark_coarse(timestamp_ms finest_open, EvictedOut& evicted, std::index_sequence<I...>) {
        (mark_one<I>(finest_open, evicted), ...);
    }

    template <std::size_t I, class EvictedOut>
    void mark_one(timestamp_ms finest_open, EvictedOut& evicted) {
        if constexpr (I > 0) {
            if (bucket_slot* c = coarse_for<I>(finest_open, evicted)) {
                c->meta.dirty = true;
            }
        }
    }

    template <std::size_t I>
    [[nodiscard]] bool contains(const bucket_slot& coarse, timestamp_ms finest_open) const noexcept {
        return finest_open >= coarse.meta.open_time &&
               finest_open < coarse.meta.open_time + layout::widths[I];
    }

    /// Changed since its last emission: flagged, or a finest bucket inside it changed.
    template <std::size_t I>
    [[nodiscard]] bool coarse_dirty(const bucket_slot& c) const noexcept {
        if (c.meta.dirty) {
            return true;
        }
        for (std::size_t f = 0; f < finest_slots; ++f) {
            if (slots[f].meta.dirty && contains<I>(c, slots[f].meta.open_time)) {
                return true;
            }
        }
        return false;
    }

    /// A coarse bucket's candle: its sealed part plus the finest buckets still in their ring.
    template <std::size_t I>
    [[nodiscard]] candle materialize(const bucket_slot& c) const noexcept {
        candle_accumulator total = c.acc;
        for (std::size_t f = 0; f < finest_slots; ++f) {
            if (slots[f].meta.open_time >= 0 && contains<I>(c, slots[f].meta.open_time)) {
                total.merge(slots[f].acc);
            }
        }
        return total.snapshot(c.meta.open_time, layout::widths[I], c.meta.closed);
    }

    [[nodiscard]] candle_update make_update(std::size_t interval_index,
                                            const candle& c) const noexcept {
        return candle_update{id, name, Policy::intervals[interval_index],
                             static_cast<std::uint32_t>(interval_index), c};
    }

    template <class CandleOut, std::size_t... I>
    void collect_intervals(CandleOut& candles, std::index_sequence<I...>) {
        // Coarse first: their materialization reads the finest buckets' state, not flags.
        (collect_interval<interval_count - 1 - I>(candles), ...);
    }

    template <std::size_t I, class CandleOut>
    void collect_interval(CandleOut& candles) {
        for (std::size_t s = layout::offsets[I]; s < layout::offsets[I] + layout::slots[I]; ++s) {
            bucket_slot& slot = slots[s];
            if (!slot.meta.dirty) {
                continue;
            }
            slot.meta.dirty = false;
            if constexpr (I == 0) {
                candles.push_back(make_update(0, slot.acc.snapshot(slot.meta.open_time,
                                                                   layout::widths[0],
                                                                   slot.meta.closed)));
            } else {
                candles.push_back(make_update(I, materialize<I>(slot)));
            }
        }
    }

    template <std::size_t... I>
    void close_buckets(std::index_sequence<I...>) noexcept {
        (close_interval<I>(), ...);
    }

    template <std::size_t I>
    void close_interval() noexcept {
        if (next_close[I] == 0 || watermark < next_close[I]) {
            return;
        }
        constexpr std::int64_t width = layout::widths[I];
        timestamp_ms earliest_open_end = 0;
        for (std::size_t s = layout::offsets[I]; s < layout::offsets[I] + layout::slots[I]; ++s) {
            bucket_meta& m = slots[s].meta;
            if (m.open_time < 0 || m.closed) {
                continue;
            }
            const timestamp_ms end = m.open_time + width;
            if (watermark >= end) {
                m.closed = true;
                m.dirty = true;
            } else if (earliest_open_end == 0 || end < earliest_open_end) {
                earliest_open_end = end;
            }
        }
        next_close[I] = earliest_open_end;
    }
};

} // namespace detail

/// The tokens one shard owns: id -> state, arena-allocated, and the list of those changed since
/// the last flush. Single-threaded (the shard's worker), except the counters marked thread-safe.
template <policy Policy>
class token_book {
public:
    using state = detail::token_state<Policy>;

    token_book()
        : arena_(Policy::arena_chunk_bytes, Policy::arena_max_chunk_bytes,
                 Policy::arena_reserve_tokens) {}
    token_book(const token_book&) = delete;
    token_book& operator=(const token_book&) = delete;
    ~token_book() {
        for (state* s : states_) {
            if (s != nullptr) {
                s->rolling.clear(rolling_bytes_);
                arena_.destroy(s);
            }
        }
    }

    /// The token's state, created on first use with its name from `table` (the only time the
    /// table is read). Allocates on first use.
    template <class Table>
    state& get(token_id id, const Table& table) {
        if (id >= states_.size()) {
            states_.resize(std::max<std::size_t>(id + 1, states_.size() * 2), nullptr);
        }
        state*& s = states_[id];
        if (s == nullptr) {
            s = arena_.create(id, table.name(id));
            active_.store(active_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        }
        return *s;
    }

    /// Prefetches the state a trade for `id` will touch, if the token has state.
    void prefetch(const trade& t) const noexcept {
        if (t.token < states_.size()) {
            if (const state* s = states_[t.token]) {
                __builtin_prefetch(s, 1, 3);
                s->prefetch(t);
            }
        }
    }

    /// Prefetches the directory entry of a token, a step before `prefetch`.
    void prefetch_entry(token_id id) const noexcept {
        if (id < states_.size()) {
            __builtin_prefetch(&states_[id], 0, 3);
        }
    }

    /// Remembers that the token changed since the last flush.
    void mark_dirty(state& s) {
        if (!s.in_dirty_list) {
            s.in_dirty_list = true;
            dirty_.push_back(&s);
        }
    }

    /// Tokens changed since the last flush.
    [[nodiscard]] std::size_t dirty_count() const noexcept { return dirty_.size(); }

    /// Collects every changed candle and token into the two outputs, clearing the dirty list.
    template <class CandleOut, class TokenOut>
    void collect(CandleOut& candles, TokenOut& tokens) {
        for (state* s : dirty_) {
            s->in_dirty_list = false;
            tokens.push_back(s->collect(candles));
        }
        dirty_.clear();
    }

    /// Tokens with state. Thread-safe.
    [[nodiscard]] std::size_t active_tokens() const noexcept {
        return active_.load(std::memory_order_relaxed);
    }
    /// Bytes of token state: arena reservation plus rolling-window rings. Thread-safe.
    [[nodiscard]] std::size_t reserved_bytes() const noexcept {
        return arena_.reserved_bytes() + rolling_bytes_atomic_.load(std::memory_order_relaxed);
    }
    /// Bytes in live token state. Thread-safe.
    [[nodiscard]] std::size_t live_bytes() const noexcept {
        return arena_.live_bytes() + rolling_bytes_atomic_.load(std::memory_order_relaxed);
    }
    /// Bytes of the id -> state directory. Thread-safe only after the worker stopped.
    [[nodiscard]] std::size_t directory_bytes() const noexcept {
        return states_.capacity() * sizeof(state*) + dirty_.capacity() * sizeof(state*);
    }

    /// The rolling-window byte counter the worker passes to `state::apply`, published after.
    std::size_t& rolling_bytes() noexcept { return rolling_bytes_; }
    void publish_bytes() noexcept {
        rolling_bytes_atomic_.store(rolling_bytes_, std::memory_order_relaxed);
    }

    /// Fixed bytes of one token's state (candle rings and bookkeeping, without rolling ring).
    static constexpr std::size_t state_bytes = arena<state>::object_size;

private:
    arena<state> arena_;
    std::vector<state*> states_;
    std::vector<state*> dirty_;
    std::size_t rolling_bytes_ = 0;
    std::atomic<std::size_t> rolling_bytes_atomic_{0};
    std::atomic<std::size_t> active_{0};
};

} // namespace tradeagg
