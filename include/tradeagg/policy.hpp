#pragma once
// Compile-time tuning. A policy is a stateless struct of `static constexpr` values and member
// types; `tradeagg::policy` checks its shape. Customise by inheriting and overriding a member:
//
//     struct my_policy : tradeagg::throughput_policy {
//         static constexpr std::size_t batch_width = 256;
//         using wait = tradeagg::block;
//     };
//     static_assert(tradeagg::policy<my_policy>);
//
// Every member, its type and what it bounds:
//
// clang-format off
// | member                    | type                         | meaning                                          |
// |---------------------------|------------------------------|--------------------------------------------------|
// | name                      | std::string_view             | shown in errors and statistics                   |
// | ingress_capacity          | std::size_t (>= 2)           | trades per (producer, shard) ring; max of the    |
// |                           |                              | runtime `ring_capacity`                          |
// | batch_width               | std::size_t (>= 1)           | trades drained per batch; max of the runtime one |
// | flush_threshold           | std::size_t (>= 1)           | dirty tokens (or retired final candles) that     |
// |                           |                              | force a flush before the next tick               |
// | arena_chunk_bytes         | std::size_t (>= 4096)        | first chunk of the token-state arena             |
// | arena_max_chunk_bytes     | std::size_t (>= chunk)       | chunks double up to this size                    |
// | arena_reserve_tokens      | std::size_t                  | token states reserved at start (no growth on the |
// |                           |                              | hot path until this many tokens)                 |
// | gc_target_percent         | unsigned (>= 1)              | default reclamation cadence, GOGC's meaning      |
// | gc_target_min_percent,    | unsigned                     | bounds of the runtime value                      |
// |   gc_target_max_percent   |                              |                                                  |
// | memory_limit_mb           | std::size_t                  | default soft memory limit, MiB (0: none)         |
// | at_limit                  | refuse_new_tokens |          | what a trade for a token without state meets at  |
// |                           |   wait_for_room              | the memory limit or the active-token cap         |
// | wait                      | busy_spin | spin_then_yield  | how waiting threads wait                         |
// |                           |   | block                    |                                                  |
// | emit (optional)           | emit_on_tick |               | when a shard hands changes to its sink: on the   |
// |                           |   emit_when_idle             | tick only (the default), or also whenever its    |
// |                           |                              | rings run dry (emission.hpp)                     |
// | max_shards                | std::size_t (1..1024)        | bound of the runtime `shards`                    |
// | max_producers             | std::size_t (>= 1)           | producer handles alive at once                   |
// | max_tokens                | std::size_t (>= 1)           | bound of the runtime `max_tokens` (interned) and |
// |                           |                              | `max_active_tokens` (with state)                 |
// | flush_interval            | std::chrono::milliseconds    | default flush tick (>= 1 ms)                     |
// | intervals                 | std::array<interval, N>      | candle widths (1 <= N <= 16), increasing, each a |
// |                           |                              | multiple of the one before                       |
// | allowed_lateness          | std::chrono::milliseconds    | see `candle.hpp` (>= 0, < 1 day)                 |
// | rolling_bucket            | std::chrono::milliseconds    | rolling-window sub-bucket: divides 24 h, a       |
// |                           |                              | multiple of the first interval                   |
// | latency_sample_every      | std::uint32_t, power of two  | 1 in N trades carries an enqueue time            |
// clang-format on

#include <array>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include <tradeagg/config.hpp>
#include <tradeagg/emission.hpp>
#include <tradeagg/interval.hpp>
#include <tradeagg/wait_strategy.hpp>

namespace tradeagg {

/// The rolling statistics' window: 24 hours, as Binance's rolling ticker.
inline constexpr std::chrono::milliseconds rolling_window_length{86'400'000};

namespace detail {

template <class T, class U>
concept constant_of = std::same_as<std::remove_cv_t<T>, U>;

template <class T>
struct is_interval_array : std::false_type {};
template <std::size_t N>
struct is_interval_array<std::array<interval, N>> : std::true_type {};

template <std::size_t N>
constexpr bool valid_intervals(const std::array<interval, N>& widths) noexcept {
    if (N == 0 || N > 16 || widths[0].count() <= 0) {
        return false;
    }
    for (std::size_t i = 1; i < N; ++i) {
        if (widths[i] <= widths[i - 1] || widths[i].count() % widths[i - 1].count() != 0) {
            return false;
        }
    }
    return true;
}

constexpr bool is_power_of_two(std::uint64_t v) noexcept {
    return v != 0 && (v & (v - 1)) == 0;
}

} // namespace detail

/// At the memory limit or the active-token cap, a trade for a token without state is refused
/// (`reject_reason::memory_limit` or `active_token_limit`). A policy names one of these two
/// behaviours as `using at_limit = ...;`.
struct refuse_new_tokens {
    static constexpr bool waits = false;
};
/// At the limit, producers wait (by the policy's wait strategy) until reclamation makes room;
/// `try_push` reports such a trade as not taken (`push_result::full`).
struct wait_for_room {
    static constexpr bool waits = true;
};

/// Accepts `refuse_new_tokens` and `wait_for_room`.
template <class T>
concept limit_behaviour = std::same_as<T, refuse_new_tokens> || std::same_as<T, wait_for_room>;

// Conjunctions with && (never a requires-expression with commas, which checks only its last
// operand): a missing or mistyped member makes its atomic constraint fail rather than error.
/// Accepts a stateless struct with every member of the table above, of the stated type and range.
template <class P>
concept policy =
    std::is_empty_v<P> && std::is_trivially_default_constructible_v<P> &&
    detail::constant_of<decltype(P::name), std::string_view> &&
    detail::constant_of<decltype(P::ingress_capacity), std::size_t> &&(P::ingress_capacity >= 2) &&
    detail::constant_of<decltype(P::batch_width), std::size_t> &&
    (P::batch_width >= 1) && detail::constant_of<decltype(P::flush_threshold), std::size_t> &&
    (P::flush_threshold >= 1) && detail::constant_of<decltype(P::arena_chunk_bytes), std::size_t> &&
    (P::arena_chunk_bytes >= 4096) &&
    detail::constant_of<decltype(P::arena_max_chunk_bytes), std::size_t> &&
    (P::arena_max_chunk_bytes >= P::arena_chunk_bytes) &&
    detail::constant_of<decltype(P::arena_reserve_tokens), std::size_t>&& detail::constant_of<
        decltype(P::gc_target_percent),
        unsigned>&& detail::constant_of<decltype(P::gc_target_min_percent), unsigned>&& detail::
        constant_of<decltype(P::gc_target_max_percent), unsigned> &&
    (P::gc_target_min_percent >= 1) && (P::gc_target_min_percent <= P::gc_target_percent) &&
    (P::gc_target_percent <= P::gc_target_max_percent) &&
    detail::constant_of<decltype(P::memory_limit_mb), std::size_t>&& limit_behaviour<
        typename P::
            at_limit>&& wait_strategy<typename P::wait>&& emission<emission_of_t<P>>&& detail::
        constant_of<decltype(P::max_shards), std::size_t> &&
    (P::max_shards >= 1) &&
    (P::max_shards <= 1024) && detail::constant_of<decltype(P::max_producers), std::size_t> &&
    (P::max_producers >= 1) && detail::constant_of<decltype(P::max_tokens), std::size_t> &&
    (P::max_tokens >= 1) && (P::max_tokens <= 0xFFFF'FFFEull) &&
    detail::constant_of<decltype(P::flush_interval), std::chrono::milliseconds> &&
    (P::flush_interval.count() >= 1) &&
    detail::is_interval_array<
        std::remove_cv_t<decltype(P::intervals)>>::value&& detail::valid_intervals(P::intervals) &&
    detail::constant_of<decltype(P::allowed_lateness), std::chrono::milliseconds> &&
    (P::allowed_lateness.count() >= 0) && (P::allowed_lateness < rolling_window_length) &&
    detail::constant_of<decltype(P::rolling_bucket), std::chrono::milliseconds> &&
    (P::rolling_bucket.count() >= 1) &&
    (rolling_window_length.count() % P::rolling_bucket.count() == 0) &&
    (P::rolling_bucket.count() % P::intervals[0].count() == 0) &&
    detail::constant_of<decltype(P::latency_sample_every), std::uint32_t>&& detail::is_power_of_two(
        P::latency_sample_every);

/// High sustained load: wide batches, big rings, rare reclamation (GC target 200 %).
struct throughput_policy {
    static constexpr std::string_view name = "throughput_policy";
    static constexpr std::size_t ingress_capacity = 65'536;
    static constexpr std::size_t batch_width = 1'024;
    static constexpr std::size_t flush_threshold = 65'536;
    static constexpr std::size_t arena_chunk_bytes = std::size_t{1} << 20;
    static constexpr std::size_t arena_max_chunk_bytes = std::size_t{64} << 20;
    static constexpr std::size_t arena_reserve_tokens = 0;
    static constexpr unsigned gc_target_percent = 200;
    static constexpr unsigned gc_target_min_percent = 50;
    static constexpr unsigned gc_target_max_percent = 1'000;
    static constexpr std::size_t memory_limit_mb = 0;
    using at_limit = refuse_new_tokens;
    using wait = spin_then_yield;
    using emit = emit_on_tick;
    static constexpr std::size_t max_shards = 64;
    static constexpr std::size_t max_producers = 64;
    static constexpr std::size_t max_tokens = 1'000'000;
    static constexpr std::chrono::milliseconds flush_interval{100};
    static constexpr std::array<interval, 7> intervals = default_intervals;
    static constexpr std::chrono::milliseconds allowed_lateness{2'000};
    static constexpr std::chrono::milliseconds rolling_bucket{60'000};
    static constexpr std::uint32_t latency_sample_every = 64;
};

/// Consistent response times: small rings (no queuing), narrow batches, busy-spinning workers
/// that hand changes to the sink as soon as their rings run dry (`emit_when_idle`), token state
/// reserved up front, frequent reclamation (GC target 50 %).
struct latency_policy {
    static constexpr std::string_view name = "latency_policy";
    static constexpr std::size_t ingress_capacity = 4'096;
    static constexpr std::size_t batch_width = 64;
    static constexpr std::size_t flush_threshold = 64;
    static constexpr std::size_t arena_chunk_bytes = std::size_t{4} << 20;
    static constexpr std::size_t arena_max_chunk_bytes = std::size_t{16} << 20;
    static constexpr std::size_t arena_reserve_tokens = 4'096;
    static constexpr unsigned gc_target_percent = 50;
    static constexpr unsigned gc_target_min_percent = 25;
    static constexpr unsigned gc_target_max_percent = 400;
    static constexpr std::size_t memory_limit_mb = 0;
    using at_limit = refuse_new_tokens;
    using wait = busy_spin;
    using emit = emit_when_idle;
    static constexpr std::size_t max_shards = 64;
    static constexpr std::size_t max_producers = 64;
    static constexpr std::size_t max_tokens = 1'000'000;
    static constexpr std::chrono::milliseconds flush_interval{10};
    static constexpr std::array<interval, 7> intervals = default_intervals;
    static constexpr std::chrono::milliseconds allowed_lateness{1'000};
    static constexpr std::chrono::milliseconds rolling_bucket{60'000};
    static constexpr std::uint32_t latency_sample_every = 8;
};

/// Limited memory: small rings and arena chunks, coarse rolling sub-buckets (15 minutes),
/// blocking waits, bounded token count, frequent reclamation (GC target 50 %), a 256 MiB soft
/// limit at which new tokens wait for room.
struct memory_constrained_policy {
    static constexpr std::string_view name = "memory_constrained_policy";
    static constexpr std::size_t ingress_capacity = 2'048;
    static constexpr std::size_t batch_width = 256;
    static constexpr std::size_t flush_threshold = 1'024;
    static constexpr std::size_t arena_chunk_bytes = std::size_t{64} << 10;
    static constexpr std::size_t arena_max_chunk_bytes = std::size_t{256} << 10;
    static constexpr std::size_t arena_reserve_tokens = 0;
    static constexpr unsigned gc_target_percent = 50;
    static constexpr unsigned gc_target_min_percent = 10;
    static constexpr unsigned gc_target_max_percent = 200;
    static constexpr std::size_t memory_limit_mb = 256;
    using at_limit = wait_for_room;
    using wait = block;
    using emit = emit_on_tick;
    static constexpr std::size_t max_shards = 16;
    static constexpr std::size_t max_producers = 16;
    static constexpr std::size_t max_tokens = 100'000;
    static constexpr std::chrono::milliseconds flush_interval{250};
    static constexpr std::array<interval, 7> intervals = default_intervals;
    static constexpr std::chrono::milliseconds allowed_lateness{1'000};
    static constexpr std::chrono::milliseconds rolling_bucket{900'000};
    static constexpr std::uint32_t latency_sample_every = 64;
};

static_assert(policy<throughput_policy>);
static_assert(policy<latency_policy>);
static_assert(policy<memory_constrained_policy>);

} // namespace tradeagg
