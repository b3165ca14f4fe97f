#pragma once
// Rolling 24-hour statistics per token, kept in a ring of sub-buckets (Binance's rolling
// ticker uses one-minute sub-buckets; a memory-constrained policy picks coarser ones).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>

#include <tradeagg/candle.hpp>
#include <tradeagg/config.hpp>
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
