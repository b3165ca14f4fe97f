#pragma once
// The book a shard keeps of the tokens it owns: each token's state (token_state.hpp) in an
// arena, the tokens changed since the last flush, and when each token's buckets next close; and
// how all of it is saved and loaded, bit for bit (a shard's snapshot).

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tradeagg/arena.hpp>
#include <tradeagg/candle.hpp>
#include <tradeagg/config.hpp>
#include <tradeagg/detail/byte_codec.hpp>
#include <tradeagg/detail/large_allocator.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/rolling_window.hpp>
#include <tradeagg/sink.hpp>
#include <tradeagg/token_state.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg {

namespace detail {

/// Version of the encoding of saved shard state (`shard::save_state` and what it calls); part
/// of the layout fingerprint, so a snapshot in another encoding is refused as another layout's.
inline constexpr std::uint32_t snapshot_format_version = 1;

/// A digest of what saved token state means under `Policy`: the format version, every interval
/// width, the allowed lateness, the rolling sub-bucket and window, and the slot layout. Two
/// policies with the same digest read each other's snapshots.
template <policy Policy>
inline constexpr std::uint64_t layout_fingerprint = [] {
    using layout = candle_layout<Policy>;
    constexpr std::size_t n = 7 + layout::interval_count;
    std::array<std::uint64_t, n> values{snapshot_format_version,
                                        layout::interval_count,
                                        static_cast<std::uint64_t>(layout::lateness),
                                        static_cast<std::uint64_t>(Policy::rolling_bucket.count()),
                                        static_cast<std::uint64_t>(rolling_window_length.count()),
                                        layout::finest_slots,
                                        layout::total_slots};
    for (std::size_t i = 0; i < layout::interval_count; ++i) {
        values[7 + i] = static_cast<std::uint64_t>(layout::widths[i]);
    }
    std::array<char, 8 * n> bytes{};
    for (std::size_t i = 0; i < 8 * n; ++i) {
        bytes[i] = static_cast<char>((values[i / 8] >> (8 * (i % 8))) & 0xff);
    }
    return fnv1a64(std::string_view(bytes.data(), bytes.size()));
}();

/// Reads a layout fingerprint and refuses one that is not `Policy`'s.
template <policy Policy>
void check_layout_fingerprint(byte_reader& in) {
    if (in.u64() != layout_fingerprint<Policy>) {
        in.fail("snapshot from another policy layout (not " + std::string(Policy::name) +
                "'s intervals, lateness, rolling sub-buckets or format)");
    }
}

} // namespace detail

/// The tokens one shard owns: id -> state, arena-allocated; the list of those changed since
/// the last flush; and the schedule of event times at which a token's buckets close or become
/// final, for the shard's event-time clock. Single-threaded (the shard's worker), except the
/// counters marked thread-safe.
template <policy Policy>
class token_book {
public:
    using state = detail::token_state<Policy>;

    token_book() : arena_(make_arena(Policy::arena_reserve_tokens)) {}
    token_book(const token_book&) = delete;
    token_book& operator=(const token_book&) = delete;
    ~token_book() {
        for (state* s : states_) {
            if (s != nullptr) {
                s->rolling.clear(rolling_bytes_);
                arena_->destroy(s);
            }
        }
    }

    /// The token's state, created on first use with its name from `table`, which learns that
    /// the token has state. Allocates on first use.
    template <class Table>
    state& get(token_id id, Table& table) {
        if (id >= states_.size()) {
            states_.resize(std::max<std::size_t>(id + 1, states_.size() * 2), nullptr);
        }
        state*& s = states_[id];
        if (s == nullptr) {
            s = arena_->create(id, table.name(id));
            table.set_has_state(id, true);
            ++active_now_;
            active_.store(active_now_, std::memory_order_relaxed);
        }
        return *s;
    }

    /// The token's state, or null if it has none.
    [[nodiscard]] state* find(token_id id) const noexcept {
        return id < states_.size() ? states_[id] : nullptr;
    }

    /// Prefetches what a trade for `id` will touch, if the token has state.
    void prefetch(token_id id) const noexcept {
        if (const state* s = find(id)) {
            s->prefetch();
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
            tokens.push_back(s->collect(candles, *scratch_));
        }
        dirty_.clear();
    }

    /// As `collect`, for at most `limit` tokens of the dirty list; the others stay on it for
    /// the next call. Returns how many stay.
    template <class CandleOut, class TokenOut>
    std::size_t collect(CandleOut& candles, TokenOut& tokens, std::size_t limit) {
        const std::size_t keep = dirty_.size() - std::min(limit, dirty_.size());
        for (std::size_t i = keep; i < dirty_.size(); ++i) {
            dirty_[i]->in_dirty_list = false;
            tokens.push_back(dirty_[i]->collect(candles, *scratch_));
        }
        dirty_.resize(keep);
        return keep;
    }

    /// Puts every token that took a trade on the dirty list with every bucket marked changed
    /// (`state::touch_all`), so that the next collect hands over all the book holds: every
    /// candle of every token, and every token's rolling window and latest trade. For a sink
    /// that lost what it was given; what later collects emit is unchanged. Allocates when the
    /// dirty list grows.
    void mark_all_dirty() {
        dirty_.reserve(active_now_);
        for (state* s : states_) {
            if (s != nullptr && s->touch_all()) {
                mark_dirty(*s);
            }
        }
    }

    /// Enters the token's next event in the schedule if it is earlier than its entry there.
    /// Allocates when the schedule grows.
    void schedule(state& s) {
        if (s.next_event < s.scheduled) {
            s.scheduled = s.next_event;
            due_.emplace_back(s.next_event, s.id);
            std::push_heap(due_.begin(), due_.end(), std::greater<>{});
        }
    }

    /// Moves every token whose next event is at or before `clock` forward to it: buckets close
    /// and retire, spent windows empty. Tokens that changed are marked dirty; final candles go
    /// to `retired`. Allocates as `schedule` and `mark_dirty` do.
    template <class CandleOut>
    void advance_clock(timestamp_ms clock, CandleOut& retired) {
        while (!due_.empty() && due_.front().first <= clock) {
            const auto [at, id] = due_.front();
            std::pop_heap(due_.begin(), due_.end(), std::greater<>{});
            due_.pop_back();
            state* s = find(id);
            if (s == nullptr || s->scheduled != at) {
                continue; // evicted, or superseded by an earlier entry
            }
            s->scheduled = state::none;
            if (s->advance_to(clock, retired, rolling_bytes_)) {
                mark_dirty(*s);
            }
            schedule(*s);
        }
    }

    /// Releases the state of every token that is spent and flushed (not in the dirty list),
    /// telling `table`. Returns how many. Call right after a flush. Never allocates.
    template <class Table>
    std::size_t evict_spent(Table& table) noexcept {
        std::size_t evicted = 0;
        for (state*& s : states_) {
            if (s != nullptr && !s->in_dirty_list && s->spent()) {
                table.set_has_state(s->id, false);
                s->rolling.clear(rolling_bytes_);
                arena_->destroy(s);
                s = nullptr;
                ++evicted;
            }
        }
        active_now_ -= evicted;
        active_.store(active_now_, std::memory_order_relaxed);
        return evicted;
    }

    /// Gives free arena chunks back to the allocator: when the arena is empty, or at least half
    /// of it (and more than its largest chunk) is free, live states move to a fresh arena and
    /// the old one is released whole. Returns true if it did; false also if the fresh arena
    /// could not be allocated (nothing changed then). Precondition: the dirty list is empty
    /// (right after a flush). Allocates the fresh arena's chunks.
    bool compact() noexcept {
        const std::size_t reserved = arena_->reserved_bytes();
        const std::size_t free = reserved - arena_->live_bytes();
        const bool empty = arena_->live_objects() == 0 && reserved > 0;
        const bool sparse = free >= Policy::arena_max_chunk_bytes && free >= reserved / 2;
        if (!empty && !sparse) {
            return false;
        }
        std::unique_ptr<arena<state>> fresh;
        std::size_t moved = 0;
        try {
            fresh = make_arena(0);
            for (; moved < states_.size(); ++moved) {
                if (state*& s = states_[moved]) {
                    state* copy = fresh->create(std::move(*s));
                    arena_->destroy(s);
                    s = copy;
                }
            }
        } catch (...) {
            // Out of memory: move back what moved. The old arena has a free slot for each (they
            // were just freed), so this allocates nothing.
            for (std::size_t i = 0; i < moved; ++i) {
                if (state*& s = states_[i]) {
                    state* back = arena_->create(std::move(*s));
                    fresh->destroy(s);
                    s = back;
                }
            }
            return false;
        }
        arena_ = std::move(fresh);
        shrink(due_);
        shrink(dirty_);
        return true;
    }

    /// Gives back the directory's tail past the highest token with state (token ids are
    /// handed out again lowest first, so released ones leave the tail empty). Never throws.
    void trim_directory() noexcept {
        std::size_t used = states_.size();
        while (used > 0 && states_[used - 1] == nullptr) {
            --used;
        }
        if (used < states_.size() / 2) {
            states_.resize(used);
            shrink(states_);
        }
    }

    /// Writes every token's state for `load`: the count, then in id order each token's name,
    /// state (`state::save`) and schedule entry; then the tokens changed since the last flush,
    /// in the order they will be collected, by their place in that list. Worker thread (or the
    /// owner of a shard it does not run). Allocates as `out` grows, and a table of places while
    /// changes are pending.
    void save(detail::byte_writer& out) const {
        out.u32(static_cast<std::uint32_t>(active_now_));
        std::vector<std::uint32_t> place(dirty_.empty() ? 0 : states_.size());
        std::uint32_t saved = 0;
        for (const state* s : states_) {
            if (s == nullptr) {
                continue;
            }
            if (!place.empty()) {
                place[s->id] = saved;
            }
            ++saved;
            out.text(s->name);
            s->save(out);
            // The entry itself, not the next event: a token whose events moved later keeps its
            // earlier entry, and moves its watermark to the clock when the entry comes due.
            out.i64(s->scheduled);
        }
        out.u32(static_cast<std::uint32_t>(dirty_.size()));
        for (const state* s : dirty_) {
            out.u32(place[s->id]);
        }
    }

    /// Reads what `save` wrote into this book, which holds no token: each token is interned in
    /// `table` (in the saved order, so a new table numbers them as the saved book's table did
    /// if its tokens all had state), gets its state, its schedule entry and its place in the
    /// changed list back. Throws `snapshot_error` on input that does not read back, a token
    /// listed twice, or one `table` refuses (named, with the reason); the book then holds part of
    /// the input and must be discarded. Worker thread, or the shard's owner. Allocates.
    template <class Table>
    void load(detail::byte_reader& in, Table& table) {
        if (active_now_ != 0) {
            throw std::logic_error("token_book::load: the book already holds tokens");
        }
        const std::uint32_t count = in.u32();
        std::vector<state*> loaded;
        for (std::uint32_t i = 0; i < count; ++i) {
            const std::string_view name = in.text();
            const auto interned = table.intern(name);
            if (interned.reason != reject_reason::none) {
                in.fail("token '" + std::string(name) +
                        "' refused by the token table: " + std::string(to_string(interned.reason)));
            }
            if (find(interned.id) != nullptr) {
                in.fail("token '" + std::string(name) + "' listed twice");
            }
            state& s = get(interned.id, table);
            loaded.push_back(&s);
            s.load(in, rolling_bytes_);
            const timestamp_ms at = in.i64();
            // `schedule` keeps an entry at or before the next event, and none only without one.
            if (at > s.next_event) {
                in.fail("token '" + std::string(name) + "' scheduled at " + std::to_string(at) +
                        ", after its next event " + std::to_string(s.next_event));
            }
            if (at != state::none) {
                s.scheduled = at;
                due_.emplace_back(at, s.id);
                std::push_heap(due_.begin(), due_.end(), std::greater<>{});
            }
        }
        const std::uint32_t changed = in.u32();
        if (changed > count) {
            in.fail(std::to_string(changed) + " changed tokens of " + std::to_string(count));
        }
        for (std::uint32_t i = 0; i < changed; ++i) {
            const std::uint32_t at = in.u32();
            if (at >= count || loaded[at]->in_dirty_list) {
                in.fail("changed token " + std::to_string(at) + " of " + std::to_string(count) +
                        " unknown or listed twice");
            }
            mark_dirty(*loaded[at]);
        }
        // A changed bucket is on the list already when the book was saved whole; one that is
        // not still reaches the sink at the next flush.
        for (state* s : loaded) {
            for (const auto& slot : s->slots) {
                if (slot.dirty) {
                    mark_dirty(*s);
                    break;
                }
            }
        }
    }

    /// Tokens with state. Thread-safe.
    [[nodiscard]] std::size_t active_tokens() const noexcept {
        return active_.load(std::memory_order_relaxed);
    }
    /// Tokens with state as of the last `publish_bytes`, so that it agrees with the byte
    /// counts (for bytes per token). Thread-safe.
    [[nodiscard]] std::size_t published_active_tokens() const noexcept {
        return active_published_.load(std::memory_order_relaxed);
    }
    /// Bytes of token state taken from the system: arena chunks plus rolling-window rings, as
    /// of the last `publish_bytes`. Thread-safe.
    [[nodiscard]] std::size_t reserved_bytes() const noexcept {
        return reserved_.load(std::memory_order_relaxed);
    }
    /// Bytes in live token state, as of the last `publish_bytes`. Thread-safe.
    [[nodiscard]] std::size_t live_bytes() const noexcept {
        return live_.load(std::memory_order_relaxed);
    }
    /// Bytes of the id -> state directory, the dirty list and the schedule, as of the last
    /// `publish_bytes`. Thread-safe.
    [[nodiscard]] std::size_t directory_bytes() const noexcept {
        return directory_bytes_.load(std::memory_order_relaxed);
    }
    /// Bytes in live token state now. Worker thread.
    [[nodiscard]] std::size_t live_bytes_now() const noexcept {
        return arena_->live_bytes() + rolling_bytes_;
    }
    /// Bytes of token state taken from the system now. Worker thread.
    [[nodiscard]] std::size_t reserved_bytes_now() const noexcept {
        return arena_->reserved_bytes() + rolling_bytes_;
    }

    /// The rolling-window byte counter the worker passes to `state::apply`.
    std::size_t& rolling_bytes() noexcept { return rolling_bytes_; }
    /// Makes the worker's byte counts readable from other threads (called at each flush).
    void publish_bytes() noexcept {
        active_published_.store(active_now_, std::memory_order_relaxed);
        reserved_.store(reserved_bytes_now(), std::memory_order_relaxed);
        live_.store(live_bytes_now(), std::memory_order_relaxed);
        directory_bytes_.store(states_.capacity() * sizeof(state*) +
                                   dirty_.capacity() * sizeof(state*) +
                                   due_.capacity() * sizeof(due_entry),
                               std::memory_order_relaxed);
    }

    /// Fixed bytes of one token's state (candle rings and bookkeeping, without rolling ring).
    static constexpr std::size_t state_bytes = arena<state>::object_size;

private:
    using due_entry = std::pair<timestamp_ms, token_id>;

    static std::unique_ptr<arena<state>> make_arena(std::size_t reserve) {
        return std::make_unique<arena<state>>(Policy::arena_chunk_bytes,
                                              Policy::arena_max_chunk_bytes, reserve);
    }

    /// Gives a vector's storage back when it is mostly unused.
    template <class Vector>
    static void shrink(Vector& v) noexcept {
        if (v.capacity() > 1'024 && v.size() < v.capacity() / 4) {
            try {
                v.shrink_to_fit();
            } catch (...) {
                // Keeping the larger buffer is harmless.
            }
        }
    }

    std::unique_ptr<arena<state>> arena_;
    std::unique_ptr<typename state::collect_scratch> scratch_ =
        std::make_unique<typename state::collect_scratch>();
    std::vector<state*, detail::large_allocator<state*>> states_;
    std::vector<state*, detail::large_allocator<state*>> dirty_;
    std::vector<due_entry, detail::large_allocator<due_entry>> due_; ///< min-heap on time
    std::size_t rolling_bytes_ = 0;
    std::atomic<std::size_t> reserved_{0};
    std::atomic<std::size_t> live_{0};
    std::atomic<std::size_t> directory_bytes_{0};
    std::atomic<std::size_t> active_{0};
    std::atomic<std::size_t> active_published_{0};
    std::size_t active_now_ = 0;
};

} // namespace tradeagg
