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
    std::uint64_t reclamations = 0;   ///< reclamations run on this shard's thread
    std::uint64_t tokens_evicted = 0; ///< spent token states released
    double reclaim_cpu_seconds = 0.0; ///< CPU time of those reclamations
    std::uint64_t resyncs = 0;        ///< resyncs handed to the sink (`pipeline::resync`)
    /// The shard's event-time clock (`pipeline::advance_time`); the minimum before any.
    timestamp_ms clock = 0;
    /// The CPU the worker runs pinned to (`runtime_config::worker_cpus`), -1 when not pinned
    /// (none asked for, or the system refused).
    int pinned_cpu = -1;
};

/// Counters since the pipeline was built. Taken without stopping anything, so counters from
/// different threads may be a moment apart; after `stop()` they are exact. Byte counts of token
/// state, directories and buffers are as of each shard's last flush.
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
    std::size_t buffer_bytes = 0;         ///< flush and drain buffers, histograms
    double bytes_per_active_token = 0.0;  ///< arena_live_bytes / tokens they count
    /// Every byte the library reserved: arenas (free chunks too), rolling rings, rings, token
    /// table, directories, buffers. The seed's `heap_alloc_mb` is this in MiB.
    std::size_t heap_alloc_bytes = 0;
    /// The same without the arenas' free space: bytes in live objects. The seed's
    /// `heap_inuse_mb` is this in MiB.
    std::size_t heap_inuse_bytes = 0;
    std::size_t resident_bytes = 0;      ///< the process's resident set, from the OS
    std::size_t virtual_bytes = 0;       ///< the process's virtual memory, from the OS
    std::size_t peak_resident_bytes = 0; ///< its highest so far
    std::size_t threads = 0;             ///< threads in the process (the seed's goroutines)
    double process_cpu_seconds = 0.0;    ///< CPU time of the whole process
    std::uint64_t reclamations = 0;      ///< reclamations run, all shards
    std::uint64_t tokens_evicted = 0;    ///< spent token states released
    std::uint64_t tokens_released = 0;   ///< tokens the token table forgot
    double reclaim_cpu_seconds = 0.0;    ///< CPU time spent reclaiming
    std::uint64_t resyncs = 0;           ///< resyncs handed to the sink, all shards
    /// reclaim_cpu_seconds / process_cpu_seconds: the seed's `gc_cpu_fraction`.
    double gc_cpu_fraction = 0.0;
    unsigned gc_target_percent = 0;     ///< reclamation cadence in force, GOGC's meaning
    std::size_t memory_limit_bytes = 0; ///< soft limit in force (0: none)
    std::size_t max_active_tokens = 0;  ///< active-token cap in force
    bool admitting_new_tokens = true;   ///< false while a limit is reached
    latency_summary apply_latency;      ///< enqueue to applied, sampled
    latency_summary handovers;          ///< each flush and hand-over's time on the worker
    std::vector<shard_stats> shards;

    /// `heap_alloc_bytes` in MiB.
    [[nodiscard]] double heap_alloc_mb() const noexcept {
        return static_cast<double>(heap_alloc_bytes) / (1024.0 * 1024.0);
    }
    /// `heap_inuse_bytes` in MiB.
    [[nodiscard]] double heap_inuse_mb() const noexcept {
        return static_cast<double>(heap_inuse_bytes) / (1024.0 * 1024.0);
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
