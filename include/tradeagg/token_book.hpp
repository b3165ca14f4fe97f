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
    static constexpr std::size_t total_slots = offsets[interval_count - 1] + slots[interval_count - 1];
};

/// Everything one token costs a shard. Touched only by the owning shard's worker.
template <policy Policy>
struct token_state {
    using layout = candle_layout<Policy>;
    using window =
        rolling_window<Policy::rolling_bucket.count(), rolling_window_length.count()>;

    token_state(token_id token_id_, std::string_view name_) noexcept
        : id(token_id_), name(name_) {}

    token_id id;
    bool in_dirty_list = false;
    std::string_view name;
    timestamp_ms watermark = std::numeric_limits<timestamp_ms>::min();
    std::uint64_t late_trades = 0;
    trade_key latest_key{std::numeric_limits<timestamp_ms>::min(), 0};
    latest_trade latest;
    /// Earliest end among each interval's not-yet-closed buckets: closing work is skipped
    /// until the watermark reaches it.
    std::array<timestamp_ms, layout::interval_count> next_close{};
    std::array<candle_accumulator, layout::total_slots> slots{};
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

    /// Applies an accepted, non-late trade. A final candle pushed out of its slot while still
    /// unflushed is appended to `evicted`. Allocates only when the rolling ring grows.
    template <class EvictedOut>
    void apply(const trade& t, EvictedOut& evicted, std::size_t& rolling_bytes) {
        const timestamp_ms previous = watermark;
        if (t.ts_ms > watermark) {
            watermark = t.ts_ms;
        }
        // Close first: a bucket the new watermark closes may be the one this trade's bucket
        // pushes out of its slot, and it must leave marked closed.
        if (watermark != previous) {
            close_buckets(std::make_index_sequence<layout::interval_count>{});
        }
        apply_intervals(t, evicted, std::make_index_sequence<layout::interval_count>{});
        rolling.add(t, watermark, rolling_bytes);
        const trade_key k{t.ts_ms, t.id};
        if (!(k < latest_key)) {
            latest_key = k;
            latest = latest_trade{t.price, t.quantity, t.taker, t.ts_ms, t.id};
        }
    }

    /// Appends every dirty candle to `candles`, clearing the marks, then describes the token.
    template <class CandleOut>
    token_update collect(CandleOut& candles) {
        for (std::size_t i = 0; i < layout::interval_count; ++i) {
            for (std::size_t s = 0; s < layout::slots[i]; ++s) {
                candle_accumulator& c = slots[layout::offsets[i] + s];
                if (c.dirty) {
                    c.dirty = false;
                    candles.push_back(make_update(i, c));
                }
            }
        }
        return token_update{id, name, latest, rolling.stats(watermark), late_trades};
    }

    [[nodiscard]] candle_update make_update(std::size_t interval_index,
                                            const candle_accumulator& c) const noexcept {
        return candle_update{id, name, Policy::intervals[interval_index],
                             static_cast<std::uint32_t>(interval_index),
                             c.snapshot(layout::widths[interval_index])};
    }

private:
    template <class EvictedOut, std::size_t... I>
    void apply_intervals(const trade& t, EvictedOut& evicted, std::index_sequence<I...>) {
        (apply_interval<I>(t, evicted), ...);
    }

    template <std::size_t I, class EvictedOut>
    void apply_interval(const trade& t, EvictedOut& evicted) {
        constexpr std::int64_t width = layout::widths[I];
        constexpr std::size_t count = layout::slots[I];
        const timestamp_ms open = bucket_open(t.ts_ms, width);
        std::size_t index = layout::offsets[I];
        if constexpr (count > 1) {
            index += static_cast<std::size_t>(open / width) % count;
        }
        candle_accumulator& c = slots[index];
        if (c.open_time != open) {
            if (c.dirty) {
                evicted.push_back(make_update(I, c)); // final: the slot sizing guarantees it
            }
            c.reset(open, t);
            c.closed = watermark >= open + width;
            if (!c.closed && (next_close[I] == 0 || open + width < next_close[I])) {
                next_close[I] = open + width;
            }
        } else {
            c.add(t);
        }
        c.dirty = true;
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
        for (std::size_t s = 0; s < layout::slots[I]; ++s) {
            candle_accumulator& c = slots[layout::offsets[I] + s];
            if (c.open_time < 0 || c.closed) {
                continue;
            }
            const timestamp_ms end = c.open_time + width;
            if (watermark >= end) {
                c.closed = true;
                c.dirty = true;
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
