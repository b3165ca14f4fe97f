#pragma once
// When a shard hands what changed to its sink. Chosen by a policy as a named type
// (`using emit = tradeagg::emit_when_idle;`); a policy without `emit` emits on the tick.
//
// Either way a flush hands each changed candle and token once, as an absolute value, and
// changes coalesce while trades keep arriving: what differs is when the worker flushes besides
// the tick and the `flush_threshold`.

#include <chrono>
#include <string_view>
#include <type_traits>

namespace tradeagg {

/// Flushes on the `flush_interval` tick and at `flush_threshold` changed tokens: under a light
/// load an update waits up to one tick, and the sink sees few, large batches.
struct emit_on_tick {
    static constexpr bool when_idle = false;
    static constexpr std::chrono::microseconds min_interval{0}; ///< unused
    static constexpr std::string_view name = "emit_on_tick";
};

/// Also flushes whenever the worker finds its rings empty with changes not yet handed over, at
/// most once per `min_interval`: a quiet market's updates reach the sink within microseconds;
/// a busy one's coalesce over `min_interval` (about ten trades per sink call at 1 M trades/s),
/// so idle flushes take a bounded share of the worker; under full load (rings never empty)
/// changes coalesce up to the tick or the threshold as before. Derive to change the interval:
/// `struct my_emit : tradeagg::emit_when_idle { static constexpr std::chrono::microseconds
/// min_interval{50}; };`.
struct emit_when_idle {
    static constexpr bool when_idle = true;
    static constexpr std::chrono::microseconds min_interval{10};
    static constexpr std::string_view name = "emit_when_idle";
};

/// Accepts the two emission choices above, and types derived from them.
template <class E>
concept emission = std::is_same_v<const bool, decltype(E::when_idle)> &&
    std::is_same_v<const std::chrono::microseconds, decltype(E::min_interval)> &&
    (E::min_interval.count() >= 0);

namespace detail {

template <class P>
struct emission_of {
    using type = emit_on_tick;
};
template <class P>
requires requires {
    typename P::emit;
}
struct emission_of<P> {
    using type = typename P::emit;
};

} // namespace detail

/// A policy's emission: its `emit` member type, or `emit_on_tick` without one.
template <class P>
using emission_of_t = typename detail::emission_of<P>::type;

} // namespace tradeagg
