#pragma once
// What a pipeline hands its sink, and the concept a sink satisfies.
//
// Threading contract (what a sink may rely on and must provide):
// - `consume(const flush_batch&)` is called on shard worker threads: concurrently from
//   different shards, never concurrently for the same token (a token lives on one shard).
// - The batch and the strings it points to are valid only during the call: copy what you keep.
// - The worker does not drain its rings while inside `consume`: a sink that blocks delays every
//   token of that shard and, once rings fill, applies backpressure to producers. Hand slow work
//   (network I/O) to another thread.
// - `consume` may throw only if the sink is prepared to lose that batch: the pipeline counts the
//   exception as `sink_errors` and carries on.
// - Every update is an absolute value (never a delta), so writing one twice is harmless.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include <tradeagg/candle.hpp>
#include <tradeagg/config.hpp>
#include <tradeagg/interval.hpp>
#include <tradeagg/rolling_window.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg {

/// The latest trade of a token by (event time, trade id).
struct latest_trade {
    double price = 0.0;
    double quantity = 0.0;
    side taker = side::buy;
    timestamp_ms ts_ms = 0;
    std::uint64_t id = 0;
};

/// A candle that changed since the last flush.
struct candle_update {
    token_id token = 0;
    std::string_view name;            ///< the token's string; valid during `consume` only
    interval width{0};                ///< the candle's interval
    std::uint32_t interval_index = 0; ///< position of `width` in the policy's intervals
    candle data;
};

/// A token that traded or whose candles closed since the last flush: its latest trade and
/// rolling 24 h statistics. (Late trades change nothing here: they are reported through
/// `runtime_config::on_late_trade` and counted in the pipeline's statistics.)
struct token_update {
    token_id token = 0;
    std::string_view name; ///< valid during `consume` only
    latest_trade latest;
    rolling_stats rolling;
};

/// One flush of one shard: every changed candle once, and every changed token once.
struct flush_batch {
    std::size_t shard = 0;
    std::span<const candle_update> candles;
    std::span<const token_update> tokens;
};

/// Accepts a type with `consume(const flush_batch&)` (the result is ignored). See the
/// threading contract at the top of this header.
template <class S>
concept sink = requires(S& s, const flush_batch& batch) {
    s.consume(batch);
};

} // namespace tradeagg
