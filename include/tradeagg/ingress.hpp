#pragma once
// The way into a shard: one single-producer ring per (producer, shard) on the fast path, and
// one multi-producer queue per shard for pushes from arbitrary threads.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>

#include <boost/lockfree/policies.hpp>
#include <boost/lockfree/queue.hpp>
#include <boost/lockfree/spsc_queue.hpp>

#include <tradeagg/config.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg {

/// What crosses a ring: the trade, and for one trade in `latency_sample_every` the time it was
/// pushed (zero otherwise), so apply latency is sampled without a clock read per trade.
struct ingress_record {
    trade t;
    std::int64_t enqueued_ns = 0;
};
static_assert(std::is_trivially_copyable_v<ingress_record>);
static_assert(sizeof(ingress_record) == 48, "six words: keep the ring record compact");

/// The token id of a record that carries no trade but the event-time clock (`t.ts_ms`): see
/// `pipeline::advance_time`. No token table hands it out.
inline constexpr token_id clock_token = 0xFFFF'FFFF;

/// Single-producer, single-consumer ring with a capacity fixed at construction.
using ingress_ring = boost::lockfree::spsc_queue<ingress_record>;

/// Multi-producer queue, bounded: nodes are pre-allocated and `bounded_push` never allocates.
using shared_ingress_queue =
    boost::lockfree::queue<ingress_record, boost::lockfree::fixed_sized<false>>;

/// Outcome of a `try_push`: converts to true only when the trade was accepted.
struct push_result {
    reject_reason reason = reject_reason::none; ///< why it was refused, if it was invalid
    bool full = false;                          ///< valid, but the ring had no room

    [[nodiscard]] constexpr bool accepted() const noexcept {
        return reason == reject_reason::none && !full;
    }
    constexpr explicit operator bool() const noexcept { return accepted(); }
};

namespace detail {

/// Monotonic nanoseconds for latency samples.
inline std::int64_t now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

/// A counter with one writing thread: a relaxed load and store instead of a locked add.
inline void bump(std::atomic<std::uint64_t>& c, std::uint64_t by = 1) noexcept {
    c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}

/// One producer handle's bookkeeping. Written by its producer (and `busy` read by `stop()`),
/// so each slot has its own cache lines.
struct alignas(cache_line_size) producer_slot {
    std::atomic<bool> in_use{false};
    /// Set for the duration of a push, so `stop()` can wait until no push is half done.
    std::atomic<bool> busy{false};
    std::array<std::atomic<std::uint64_t>, reject_reason_count> rejected{};
    std::atomic<std::uint64_t> backpressure_waits{0};
    std::atomic<std::uint64_t> full_rejections{0};
    /// Trades pushed into each shard's ring (index: shard).
    std::unique_ptr<std::atomic<std::uint64_t>[]> pushed;
    std::uint32_t sample_counter = 0;
};
static_assert(alignof(producer_slot) == cache_line_size);

} // namespace detail
} // namespace tradeagg
