#pragma once
// Rolling 24-hour statistics per token, kept in a ring of sub-buckets (Binance's rolling
// ticker uses one-minute sub-buckets; a memory-constrained policy picks coarser ones).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <tradeagg/candle.hpp>
#include <tradeagg/config.hpp>
#include <tradeagg/detail/byte_codec.hpp>
#include <tradeagg/detail/compensated_sum.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg {

/// A token's statistics over the sub-buckets of the last 24 hours of event time.
///
/// The window holds the sub-buckets whose index is within the last `24 h / bucket` ones up to
/// and including the watermark's, so it slides by one sub-bucket at a time.
struct rolling_stats {
    timestamp_ms window_start = 0; ///< start of the oldest sub-bucket in the window
    timestamp_ms window_end = 0;   ///< the token's watermark (latest event time)
    double open = 0.0;             ///< price of the earliest trade in the window
    double high = 0.0;
    double low = 0.0;
    double last = 0.0; ///< price of the latest trade in the window
    double volume = 0.0;
    double quote_volume = 0.0;
    double vwap = 0.0;
    std::uint64_t trades = 0;
    double price_change = 0.0;         ///< last - open
    double price_change_percent = 0.0; ///< 100 * (last - open) / open
};

namespace detail {

/// One sub-bucket: the merge of the final finest buckets inside it. They arrive in time order,
/// so no ordering keys are kept.
struct rolling_slot : price_summary {
    std::int64_t index = 0; ///< event time / sub-bucket width
};
static_assert(std::is_trivially_copyable_v<rolling_slot>);

/// Writes both parts of a sum, so that its value reads back bit for bit.
inline void save_sum(byte_writer& out, const compensated_sum& s) {
    out.f64(s.sum);
    out.f64(s.compensation);
}

inline void load_sum(byte_reader& in, compensated_sum& s) {
    s.sum = in.f64();
    s.compensation = in.f64();
}

/// Writes a summary's ends, extremes, sums and count (72 bytes).
inline void save_summary(byte_writer& out, const price_summary& p) {
    out.f64(p.open);
    out.f64(p.high);
    out.f64(p.low);
    out.f64(p.close);
    save_sum(out, p.volume);
    save_sum(out, p.quote_volume);
    out.u64(p.trades);
}

inline void load_summary(byte_reader& in, price_summary& p) {
    p.open = in.f64();
    p.high = in.f64();
    p.low = in.f64();
    p.close = in.f64();
    load_sum(in, p.volume);
    load_sum(in, p.quote_volume);
    p.trades = in.u64();
}

/// Sub-buckets that hold trades, in time order, in a ring that grows by doubling up to the
/// window's sub-bucket count: a token pays only for the sub-buckets it traded in.
/// Single-threaded (the owning shard's worker).
template <std::int64_t BucketMs, std::int64_t WindowMs>
class rolling_window {
public:
    static constexpr std::int64_t bucket_count = WindowMs / BucketMs;
    static_assert(WindowMs % BucketMs == 0);

    rolling_window() = default;
    rolling_window(const rolling_window&) = delete;
    rolling_window& operator=(const rolling_window&) = delete;
    /// Takes the other's ring; the other is left empty. Never allocates.
    rolling_window(rolling_window&& o) noexcept
        : prefix_(o.prefix_), prefix_valid_(o.prefix_valid_), prefix_any_(o.prefix_any_),
          slots_(o.slots_), capacity_(o.capacity_), head_(o.head_), size_(o.size_),
          oldest_(o.oldest_) {
        o.slots_ = nullptr;
        o.capacity_ = o.head_ = o.size_ = 0;
        o.prefix_valid_ = true;
        o.prefix_any_ = false;
    }
    rolling_window& operator=(rolling_window&&) = delete;
    ~rolling_window() { ::operator delete(slots_); }

    /// Folds a final finest bucket into sub-bucket `index`. Buckets arrive in time order (the
    /// token retires them oldest first), so a new sub-bucket always goes at the back.
    /// `watermark` is the token's. Allocates when the ring grows.
    void merge(std::int64_t index, const ohlc_accumulator& part, timestamp_ms watermark,
               std::size_t& bytes) {
        const std::int64_t lowest = watermark / BucketMs - bucket_count + 1;
        expire(lowest);
        if (index < lowest || part.trades == 0) {
            return; // accepted by the candles' lateness rule, but already outside 24 hours
        }
        if (size_ > 0 && at(size_ - 1).index == index) {
            at(size_ - 1).extend(part);
        } else {
            if (size_ == capacity_) {
                grow(bytes);
            }
            if (size_ > 0 && prefix_valid_) {
                add_to_prefix(at(size_ - 1)); // the last sub-bucket is complete now
            }
            rolling_slot& s = at(size_);
            static_cast<price_summary&>(s) = part;
            s.index = index;
            if (size_ == 0) {
                oldest_ = index;
            }
            ++size_;
        }
    }

    /// Statistics as of `watermark`, including `pending` parts not merged yet (each a pair of
    /// sub-bucket index and accumulator, visited through `for_each_pending(f)`). Sub-buckets
    /// that fell out of the window are dropped. Never allocates. The sub-buckets before the
    /// last are kept summed, and rebuilt only after sub-buckets expire (once per sub-bucket
    /// width at most); the total is always that sum extended by the last sub-bucket, so it is
    /// the same value whenever it is asked for.
    template <class ForEachPending>
    [[nodiscard]] rolling_stats stats(timestamp_ms watermark,
                                      ForEachPending&& for_each_pending) noexcept {
        rolling_stats r;
        const std::int64_t lowest = watermark / BucketMs - bucket_count + 1;
        r.window_start = lowest * BucketMs;
        r.window_end = watermark;
        expire(lowest);
        if (!prefix_valid_) {
            prefix_any_ = false;
            for (std::uint32_t i = 0; i + 1 < size_; ++i) {
                add_to_prefix(at(i));
            }
            prefix_valid_ = true;
        }
        // Merged sub-buckets come first, in time order; pending finest buckets follow them.
        price_summary total = prefix_;
        bool any = prefix_any_;
        if (size_ > 0) {
            if (any) {
                total.extend(at(size_ - 1));
            } else {
                total = at(size_ - 1);
                any = true;
            }
        }
        ohlc_accumulator pending;
        bool any_pending = false;
        for_each_pending([&](std::int64_t index, const ohlc_accumulator& part) {
            if (index < lowest || part.trades == 0) {
                return;
            }
            if (any_pending) {
                pending.merge(part);
            } else {
                pending = part;
                any_pending = true;
            }
        });
        if (any_pending) {
            if (any) {
                total.extend(pending);
            } else {
                total = pending;
                any = true;
            }
        }
        if (!any) {
            return r;
        }
        r.open = total.open;
        r.high = total.high;
        r.low = total.low;
        r.last = total.close;
        r.volume = total.volume.value();
        r.quote_volume = total.quote_volume.value();
        r.vwap = r.volume > 0.0 ? r.quote_volume / r.volume : 0.0;
        r.trades = total.trades;
        r.price_change = r.last - r.open;
        r.price_change_percent = r.open > 0.0 ? 100.0 * r.price_change / r.open : 0.0;
        return r;
    }

    /// Statistics of the merged sub-buckets alone.
    [[nodiscard]] rolling_stats stats(timestamp_ms watermark) noexcept {
        return stats(watermark, [](auto&&) {});
    }

    /// Bytes allocated for sub-buckets.
    [[nodiscard]] std::size_t allocated_bytes() const noexcept {
        return std::size_t{capacity_} * sizeof(rolling_slot);
    }

    /// Releases every sub-bucket (the token is gone). Never allocates.
    void clear(std::size_t& bytes) noexcept {
        bytes -= allocated_bytes();
        ::operator delete(slots_);
        slots_ = nullptr;
        capacity_ = head_ = size_ = 0;
        prefix_valid_ = true;
        prefix_any_ = false;
    }

    /// Writes the ring's capacity, its sub-buckets oldest first and the kept prefix as it is,
    /// for `load`. The prefix is saved rather than rebuilt on load so that a stale one (not
    /// valid, rebuilt when next asked for) reads back as it was, bit for bit. Never allocates
    /// beyond what `out` does.
    void save(byte_writer& out) const {
        out.u32(capacity_);
        out.u32(size_);
        for (std::uint32_t i = 0; i < size_; ++i) {
            out.i64(at(i).index);
            save_summary(out, at(i));
        }
        save_summary(out, prefix_);
        out.boolean(prefix_valid_);
        out.boolean(prefix_any_);
    }

    /// Reads what `save` wrote into this window, which holds no ring (new, or cleared);
    /// `bytes` grows by the ring it allocates, as `merge` counts it. The ring gets the saved
    /// capacity, so the byte counts (and the reclamations they trigger) go on as they would
    /// have. Throws `snapshot_error` on input that does not read back or breaks the ring's
    /// rules (size within capacity within the window, indices increasing within one window,
    /// no empty sub-bucket, prefix flags that agree with the size), the window unchanged.
    /// Allocates the ring.
    void load(byte_reader& in, std::size_t& bytes) {
        if (slots_ != nullptr) {
            throw std::logic_error("rolling_window::load: the window already holds a ring");
        }
        const std::uint32_t capacity = in.u32();
        const std::uint32_t size = in.u32();
        if (capacity > bucket_count || size > capacity) {
            in.fail("rolling window of " + std::to_string(size) + " sub-buckets in a ring of " +
                    std::to_string(capacity) + " (at most " + std::to_string(bucket_count) + ")");
        }
        // Checked before allocating, so corrupt input costs no ring: each sub-bucket takes
        // its index and a summary.
        if (std::size_t{size} * (8 + 72) > in.left()) {
            in.fail("truncated: a rolling window of " + std::to_string(size) + " sub-buckets");
        }
        auto* slots =
            capacity == 0
                ? nullptr
                : static_cast<rolling_slot*>(::operator new(capacity * sizeof(rolling_slot)));
        try {
            for (std::uint32_t i = 0; i < size; ++i) {
                rolling_slot& s = *::new (static_cast<void*>(slots + i)) rolling_slot{};
                s.index = in.i64();
                load_summary(in, s);
                if (s.index < 0 || s.index > max_timestamp_ms / BucketMs) {
                    in.fail("rolling sub-bucket index " + std::to_string(s.index) +
                            " out of range");
                }
                if (i > 0 && s.index <= slots[i - 1].index) {
                    in.fail("rolling sub-bucket index " + std::to_string(s.index) +
                            " does not follow " + std::to_string(slots[i - 1].index));
                }
                if (s.index - slots[0].index >= bucket_count) {
                    in.fail("rolling sub-buckets span more than the window");
                }
                if (s.trades == 0) {
                    in.fail("an empty rolling sub-bucket");
                }
            }
            price_summary prefix;
            load_summary(in, prefix);
            const bool valid = in.boolean();
            const bool any = in.boolean();
            // A valid prefix sums every sub-bucket but the last.
            if (valid && any != (size > 1)) {
                in.fail("rolling prefix flags disagree with " + std::to_string(size) +
                        " sub-buckets");
            }
            prefix_ = prefix;
            prefix_valid_ = valid;
            prefix_any_ = any;
        } catch (...) {
            ::operator delete(slots);
            throw;
        }
        slots_ = slots;
        capacity_ = capacity;
        head_ = 0;
        size_ = size;
        oldest_ = size > 0 ? slots[0].index : 0;
        bytes += std::size_t{capacity} * sizeof(rolling_slot);
    }

private:
    /// Drops sub-buckets below `lowest`. The oldest index is kept beside the ring, so the
    /// common case (nothing expires) does not touch the ring's memory.
    void expire(std::int64_t lowest) noexcept {
        while (size_ > 0 && oldest_ < lowest) {
            head_ = wrap(head_ + 1);
            --size_;
            prefix_valid_ = false; // a minimum or maximum may have left: rebuild when asked
            if (size_ > 0) {
                oldest_ = at(0).index;
            }
        }
    }

    void add_to_prefix(const price_summary& later) noexcept {
        if (prefix_any_) {
            prefix_.extend(later);
        } else {
            prefix_ = later;
            prefix_any_ = true;
        }
    }

    [[nodiscard]] std::uint32_t wrap(std::uint32_t i) const noexcept {
        return i >= capacity_ ? i - capacity_ : i;
    }
    rolling_slot& at(std::uint32_t i) noexcept { return slots_[wrap(head_ + i)]; }
    const rolling_slot& at(std::uint32_t i) const noexcept { return slots_[wrap(head_ + i)]; }

    void grow(std::size_t& bytes) {
        // Never more than the window's sub-buckets: a full day of minutes is 1440, not 2048.
        constexpr auto max_capacity = static_cast<std::uint32_t>(bucket_count);
        const std::uint32_t doubled = capacity_ == 0 ? 4 : capacity_ * 2;
        const std::uint32_t capacity = doubled < max_capacity ? doubled : max_capacity;
        auto* slots = static_cast<rolling_slot*>(::operator new(capacity * sizeof(rolling_slot)));
        for (std::uint32_t i = 0; i < size_; ++i) {
            std::memcpy(static_cast<void*>(slots + i), &at(i), sizeof(rolling_slot));
        }
        ::operator delete(slots_);
        bytes += std::size_t{capacity - capacity_} * sizeof(rolling_slot);
        slots_ = slots;
        capacity_ = capacity;
        head_ = 0;
    }

    price_summary prefix_;     ///< every sub-bucket but the last, in order, when valid
    bool prefix_valid_ = true; ///< an empty ring's prefix is valid (and empty)
    bool prefix_any_ = false;
    rolling_slot* slots_ = nullptr;
    std::uint32_t capacity_ = 0;
    std::uint32_t head_ = 0;
    std::uint32_t size_ = 0;
    std::int64_t oldest_ = 0; ///< index of the oldest sub-bucket, while there is one
};

} // namespace detail
} // namespace tradeagg
