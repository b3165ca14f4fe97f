#pragma once
// A snapshot of a pipeline's counters, as `pipeline::stats()` returns it.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include <tradeagg/config.hpp>
#include <tradeagg/latency_histogram.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg {

/// One shard's view.
struct shard_stats {
    std::size_t queue_depth = 0;   ///< trades accepted for this shard and not yet taken
    std::size_t active_tokens = 0; ///< tokens with state on this shard
    std::uint64_t applied = 0;     ///< trades merged into aggregates
    std::uint64_t late = 0;        ///< trades refused as late
    std::uint64_t flushes = 0;
};

/// Counters since the pipeline was built. Taken without stopping anything, so counters from
/// different threads may be a moment apart; after `stop()` they are exact.
struct pipeline_stats {
    std::string_view policy;    ///< the policy's name
    std::uint64_t accepted = 0; ///< trades that entered a ring
    std::uint64_t applied = 0;  ///< merged into candles and rolling windows
    std::uint64_t late = 0;     ///< taken by a worker but too late to merge
    std::uint64_t rejected = 0; ///< refused at push, all reasons
    std::array<std::uint64_t, reject_reason_count> rejected_by_reason{}; ///< index: reject_reason
    std::uint64_t backpressure_waits = 0; ///< pushes that found a ring full and waited
    std::uint64_t full_rejections = 0;    ///< try_push calls refused because a ring was full
    std::uint64_t flushes = 0;            ///< flushes that handed a batch to the sink
    std::uint64_t candle_updates = 0;     ///< candle versions handed to the sink
    std::uint64_t token_updates = 0;      ///< token (rolling window, latest) versions
    std::uint64_t sink_errors = 0;        ///< exceptions thrown by the sink's consume
    std::size_t active_tokens = 0;        ///< tokens with state, all shards
    std::size_t interned_tokens = 0;      ///< tokens in the token table
    std::size_t producers = 0;            ///< producer handles alive
    std::size_t arena_reserved_bytes = 0; ///< token state taken from the system
    std::size_t arena_live_bytes = 0;     ///< token state in live objects
    std::size_t ingress_bytes = 0;        ///< ring storage
    std::size_t table_bytes = 0;          ///< token table and shard directories
    double bytes_per_active_token = 0.0;  ///< arena_live_bytes / active_tokens
    latency_summary apply_latency;        ///< enqueue to applied, sampled
    std::vector<shard_stats> shards;

    /// Sum of every tracked byte: arenas, rings, token table.
    [[nodiscard]] std::size_t total_bytes() const noexcept {
        return arena_reserved_bytes + ingress_bytes + table_bytes;
    }
    /// Trades accepted and not yet taken by a worker.
    [[nodiscard]] std::size_t queue_depth() const noexcept {
        std::size_t n = 0;
        for (const shard_stats& s : shards) {
            n += s.queue_depth;
        }
        return n;
    }
};

} // namespace tradeagg
