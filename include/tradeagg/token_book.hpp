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
    static constexpr std::size_t total_slots =
        offsets[interval_count - 1] + slots[interval_count - 1];
};

/// A bucket's identity and flags beside its sums: one slot of a token's bucket rings.
struct bucket_slot {
    bucket_meta meta;
    candle_accumulator acc;
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
template <policy Policy>
struct token_state {
    using layout = candle_layout<Policy>;
    using window = rolling_window<Policy::rolling_bucket.count(), rolling_window_length.count()>;
    static constexpr std::size_t interval_count = layout::interval_count;
    static constexpr timestamp_ms none = std::numeric_limits<timestamp_ms>::max();

    token_state(token_id token, std::string_view token_name) noexcept
        : id(token), name(token_name) {
        next_close.fill(none);
        next_final.fill(none);
    }

    token_id id;
    bool in_dirty_list = false;
    std::string_view name;
    timestamp_ms watermark = std::numeric_limits<timestamp_ms>::min();
    /// Earliest watermark at which some bucket closes or becomes final: below it, a trade
    /// that advances the watermark does no closing work at all.
    timestamp_ms next_event = none;
    std::uint64_t late_trades = 0;
    trade_key latest_key{std::numeric_limits<timestamp_ms>::min(), 0};
    latest_trade latest;
    /// Per interval: earliest end of a bucket not yet closed, and earliest time a bucket in the
    /// ring becomes final (`none`: no such bucket).
    std::array<timestamp_ms, interval_count> next_close{};
    std::array<timestamp_ms, interval_count> next_final{};
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

    /// Applies an accepted, non-late trade. Final candles retired while still unflushed are
    /// appended to `evicted`. Allocates only when the rolling ring grows.
    template <class EvictedOut>
    void apply(const trade& t, EvictedOut& evicted, std::size_t& rolling_bytes) {
        if (t.ts_ms > watermark) {
            watermark = t.ts_ms;
            // Close and retire before the trade lands: the bucket it opens may need the slot
            // of one that has just become final.
            if (watermark >= next_event) {
                advance(evicted, rolling_bytes, std::make_index_sequence<interval_count>{});
            }
        }
        const timestamp_ms open = bucket_open(t.ts_ms, layout::widths[0]);
        bucket_slot& f = slots[slot_of<0>(open)];
        if (f.meta.open_time == open) {
            f.acc.add(t);
            f.meta.dirty = true;
        } else {
            // The slot is free: the ring has room for every bucket not yet final.
            f.acc.reset(t);
            start_bucket<0>(f, open);
        }
        const trade_key k{t.ts_ms, t.id};
        if (!(k < latest_key)) {
            latest_key = k;
            latest = latest_trade{t.price, t.quantity, t.taker, t.ts_ms, t.id};
        }
    }

    /// Hints the cache lines `apply(t)` will touch, so a batch can ask for them ahead: the
    /// header and the finest ring (closing and retiring scan the whole ring).
    void prefetch() const noexcept {
        const char* begin = reinterpret_cast<const char*>(this);
        const char* end = reinterpret_cast<const char*>(&slots[layout::slots[0]]);
        for (const char* p = begin; p < end; p += cache_line_size) {
            __builtin_prefetch(p, 1, 3);
        }
    }

    /// Appends every changed candle to `candles`, clears the marks, and describes the token.
    template <class CandleOut>
    token_update collect(CandleOut& candles) {
        mark_parents(std::make_index_sequence<interval_count>{});
        collect_intervals(candles, std::make_index_sequence<interval_count>{});
        const auto pending = [this](auto&& take) {
            for (std::size_t f = 0; f < layout::slots[0]; ++f) {
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
        if (!closed) {
            next_close[I] = std::min(next_close[I], open + width);
        }
        next_final[I] = std::min(next_final[I], open + width + layout::lateness);
        next_event = std::min({next_event, next_close[I], next_final[I]});
    }

    /// Closes and retires what the new watermark reached, finest interval first, so a bucket's
    /// children are sealed into it before it retires itself.
    template <class EvictedOut, std::size_t... I>
    void advance(EvictedOut& evicted, std::size_t& rolling_bytes, std::index_sequence<I...>) {
        (advance_interval<I>(evicted, rolling_bytes), ...);
        next_event = none;
        ((next_event = std::min({next_event, next_close[I], next_final[I]})), ...);
    }

    template <std::size_t I, class EvictedOut>
    void advance_interval(EvictedOut& evicted, std::size_t& rolling_bytes) {
        constexpr std::int64_t width = layout::widths[I];
        constexpr std::size_t first = layout::offsets[I];
        constexpr std::size_t last = first + layout::slots[I];
        if (watermark >= next_close[I]) {
            next_close[I] = none;
            for (std::size_t s = first; s < last; ++s) {
                bucket_meta& m = slots[s].meta;
                if (m.open_time < 0 || m.closed) {
                    continue;
                }
                if (watermark >= m.open_time + width) {
                    m.closed = true;
                    m.dirty = true;
                } else {
                    next_close[I] = std::min(next_close[I], m.open_time + width);
                }
            }
        }
        if (watermark >= next_final[I]) {
            // Oldest first: the parent's sealed part then grows in time order.
            for (;;) {
                bucket_slot* oldest = nullptr;
                for (std::size_t s = first; s < last; ++s) {
                    bucket_slot& b = slots[s];
                    if (b.meta.open_time >= 0 &&
                        watermark >= b.meta.open_time + width + layout::lateness &&
                        (oldest == nullptr || b.meta.open_time < oldest->meta.open_time)) {
                        oldest = &b;
                    }
                }
                if (oldest == nullptr) {
                    break;
                }
                retire<I>(*oldest, evicted, rolling_bytes);
            }
            next_final[I] = none;
            for (std::size_t s = first; s < last; ++s) {
                if (slots[s].meta.open_time >= 0) {
                    next_final[I] =
                        std::min(next_final[I], slots[s].meta.open_time + width + layout::lateness);
                }
            }
        }
    }

    /// A final bucket leaves its ring: handed over if unflushed, sealed into its parent (and,
    /// for the finest, into the rolling window). Its children retired before it, so its own
    /// accumulator is the whole candle.
    template <std::size_t I, class EvictedOut>
    void retire(bucket_slot& b, EvictedOut& evicted, std::size_t& rolling_bytes) {
        if (b.meta.dirty) {
            evicted.push_back(
                make_update(I, b.acc.snapshot(b.meta.open_time, layout::widths[I], b.meta.closed)));
        }
        if constexpr (I + 1 < interval_count) {
            bucket_slot& parent = parent_of<I + 1>(b.meta.open_time);
            parent.acc.merge(b.acc);
            // Its unflushed change now lives only in the parent.
            parent.meta.dirty = parent.meta.dirty || b.meta.dirty;
        }
        if constexpr (I == 0) {
            rolling.merge(b.meta.open_time / Policy::rolling_bucket.count(), b.acc.ohlc, watermark,
                          rolling_bytes);
        }
        b.meta = bucket_meta{};
    }

    /// The slot of interval I holding the bucket that contains `child_open`, started if the
    /// slot is free (an older bucket there would already be final and retired).
    template <std::size_t I>
    bucket_slot& parent_of(timestamp_ms child_open) noexcept {
        const timestamp_ms open = bucket_open(child_open, layout::widths[I]);
        bucket_slot& p = slots[slot_of<I>(open)];
        if (p.meta.open_time != open) {
            p.acc = candle_accumulator{};
            start_bucket<I>(p, open);
            p.meta.dirty = false; // set by what is sealed into it
        }
        return p;
    }

    /// A changed bucket changes its parent: marks (starting them where needed) every parent
    /// of a dirty bucket, finest level first, so the marks climb all the way up.
    template <std::size_t... I>
    void mark_parents(std::index_sequence<I...>) noexcept {
        (mark_parents_of<I>(), ...);
    }

    template <std::size_t I>
    void mark_parents_of() noexcept {
        if constexpr (I + 1 < interval_count) {
            for (std::size_t s = layout::offsets[I]; s < layout::offsets[I] + layout::slots[I];
                 ++s) {
                if (slots[s].meta.dirty) {
                    parent_of<I + 1>(slots[s].meta.open_time).meta.dirty = true;
                }
            }
        }
    }

    [[nodiscard]] candle_update make_update(std::size_t interval_index,
                                            const candle& c) const noexcept {
        return candle_update{id, name, Policy::intervals[interval_index],
                             static_cast<std::uint32_t>(interval_index), c};
    }

    /// Emits every dirty bucket. Candles are built bottom-up: a bucket is its sealed part plus
    /// its children still in their ring, each child built once, so a token costs one merge per
    /// occupied slot whatever the number of dirty buckets.
    template <class CandleOut, std::size_t... I>
    void collect_intervals(CandleOut& candles, std::index_sequence<I...>) {
        std::array<candle_accumulator, layout::total_slots> built;
        (collect_interval<I>(candles, built), ...);
    }

    template <std::size_t I, class CandleOut>
    void collect_interval(CandleOut& candles,
                          std::array<candle_accumulator, layout::total_slots>& built) {
        for (std::size_t s = layout::offsets[I]; s < layout::offsets[I] + layout::slots[I]; ++s) {
            bucket_slot& b = slots[s];
            if (b.meta.open_time < 0) {
                continue;
            }
            built[s] = b.acc;
            if constexpr (I > 0) {
                const timestamp_ms open = b.meta.open_time;
                for (std::size_t c = layout::offsets[I - 1];
                     c < layout::offsets[I - 1] + layout::slots[I - 1]; ++c) {
                    const timestamp_ms co = slots[c].meta.open_time;
                    if (co >= open && co < open + layout::widths[I]) {
                        built[s].merge(built[c]);
                    }
                }
            }
            if (b.meta.dirty) {
                b.meta.dirty = false;
                candles.push_back(make_update(
                    I, built[s].snapshot(b.meta.open_time, layout::widths[I], b.meta.closed)));
            }
        }
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

    /// Prefetches what a trade for `id` will touch, if the token has state.
    void prefetch(token_id id) const noexcept {
        if (id < states_.size()) {
            if (const state* s = states_[id]) {
                s->prefetch();
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
    /// Bytes of the id -> state directory and the dirty list, as of the last flush.
    /// Thread-safe.
    [[nodiscard]] std::size_t directory_bytes() const noexcept {
        return directory_bytes_.load(std::memory_order_relaxed);
    }

    /// The rolling-window byte counter the worker passes to `state::apply`.
    std::size_t& rolling_bytes() noexcept { return rolling_bytes_; }
    /// Makes the worker's byte counts readable from other threads (called at each flush).
    void publish_bytes() noexcept {
        rolling_bytes_atomic_.store(rolling_bytes_, std::memory_order_relaxed);
        directory_bytes_.store((states_.capacity() + dirty_.capacity()) * sizeof(state*),
                               std::memory_order_relaxed);
    }

    /// Fixed bytes of one token's state (candle rings and bookkeeping, without rolling ring).
    static constexpr std::size_t state_bytes = arena<state>::object_size;

private:
    arena<state> arena_;
    std::vector<state*> states_;
    std::vector<state*> dirty_;
    std::size_t rolling_bytes_ = 0;
    std::atomic<std::size_t> rolling_bytes_atomic_{0};
    std::atomic<std::size_t> directory_bytes_{0};
    std::atomic<std::size_t> active_{0};
};

} // namespace tradeagg
