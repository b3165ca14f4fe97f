#pragma once
// What a partition-stream consumer reports (`stream_consumer::stats()`, stream_consumer.hpp):
// its rounds, rebuilds, writes, acknowledgements and trims, the leases it holds, its last error.

#include <cstddef>
#include <cstdint>
#include <string>

namespace tradeagg::redis {

struct stream_consumer_stats {
    std::uint64_t rounds = 0;
    std::uint64_t entries_read = 0;     ///< delivered by XREADGROUP
    std::uint64_t entries_replayed = 0; ///< read again by rebuilds (XRANGE)
    std::uint64_t entries_skipped = 0;  ///< trades of those already in Redis (not written)
    std::uint64_t entries_invalid = 0;
    std::uint64_t trades_late = 0;    ///< later than the allowed lateness in their stream's order
    std::uint64_t trades_applied = 0; ///< applied and written (rounds and rebuilds)
    std::uint64_t token_writes = 0;   ///< acknowledged token writes
    std::uint64_t write_retries = 0;
    std::uint64_t entries_acked = 0;
    std::uint64_t entries_trimmed = 0;     ///< removed from the streams (XTRIM MINID)
    std::uint64_t checkpoints_written = 0; ///< stored in Redis
    std::uint64_t checkpoints_loaded = 0;  ///< by rebuilds, which replayed only what followed
    std::uint64_t checkpoints_refused = 0; ///< found corrupt, truncated or foreign: not applied
    std::uint64_t checkpoint_errors = 0;   ///< writes Redis refused (out of memory, say)
    std::size_t checkpoint_bytes = 0;      ///< size of the last one written or loaded
    std::uint64_t acquired = 0;            ///< leases taken (each one a rebuild)
    std::uint64_t released = 0;            ///< leases given up for balance or at stop
    std::uint64_t lost = 0;                ///< leases lost: fenced, lapsed, or not renewed in time
    std::size_t entries_unacked = 0;       ///< read and not yet acknowledged (their writes pending)
    std::size_t tokens_waiting = 0;        ///< tokens whose changes wait for the writer
    std::size_t partitions_held = 0;
    std::size_t live_instances = 0;
    std::string held; ///< the partitions held, e.g. "0,2"
    std::string last_error;
};

} // namespace tradeagg::redis
