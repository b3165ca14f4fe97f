#pragma once
// What a Redis sink reports: `sink_stats` (any thread reads them), `stop_report`, and the
// counters behind them, written on the sink's I/O thread (and by producers for what they drop).

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include <tradeagg/config.hpp>
#include <tradeagg/latency_histogram.hpp>

namespace tradeagg::redis {

/// What a Redis sink has done. `latency_avg_ms` and `success_rate` are the seed's
/// `redis_latency_avg_ms` and `redis_success_rate`. Counters add up over every node.
struct sink_stats {
    std::uint64_t updates_received = 0;  ///< candle and token updates handed to `consume`
    std::uint64_t updates_coalesced = 0; ///< replaced by a newer version before being sent
    std::uint64_t updates_written = 0;   ///< versions Redis acknowledged
    std::uint64_t updates_dropped = 0; ///< new keys refused at `max_pending_updates`, or after stop
    std::uint64_t commands_sent = 0;   ///< every command, MULTI and EXEC included
    std::uint64_t commands_succeeded = 0;
    std::uint64_t commands_failed = 0; ///< error replies, and commands lost with a connection
    std::uint64_t transactions = 0;    ///< MULTI/EXEC sent: one token's keys each
    std::uint64_t retries = 0;         ///< key writes sent again after a failure
    std::uint64_t timeouts = 0;        ///< connections dropped at a read or write deadline
    std::uint64_t connects = 0;        ///< connections that completed their handshake
    std::uint64_t reconnects = 0;      ///< of those, to a node connected before
    std::uint64_t connect_failures = 0;
    std::uint64_t resyncs = 0;           ///< node restarts noticed (its run_id changed)
    std::uint64_t resync_updates = 0;    ///< writes queued again from the journal by resyncs
    std::uint64_t journal_forgotten = 0; ///< written values dropped from the journal for room
    std::uint64_t moved = 0;             ///< MOVED redirections followed
    std::uint64_t asked = 0;             ///< ASK redirections followed
    std::uint64_t slot_map_reads = 0;    ///< CLUSTER SLOTS replies taken as the slot map
    std::size_t pending = 0;             ///< keys not yet written (waiting, in flight, parked)
    std::size_t in_flight = 0;           ///< commands sent and not yet answered
    std::size_t parked = 0;              ///< keys whose retries ran out, waiting for Redis
    std::size_t journal_entries = 0;
    std::size_t memory_bytes = 0;    ///< pending keys and journal, approximately
    bool cluster = false;            ///< the seeds are a Redis Cluster
    std::size_t nodes = 0;           ///< masters serving slots (1 for a plain Redis; 0 unknown yet)
    std::size_t nodes_connected = 0; ///< of those, with a connection past its handshake
    bool connected = false;          ///< every node that serves slots is connected
    double latency_avg_ms = 0.0;     ///< mean reply time of recent commands (about the last 256)
    double success_rate = 1.0;       ///< share of recent commands that succeeded
    latency_summary write_lag;       ///< from `consume` to Redis acknowledging that version
    std::string last_error;          ///< the latest error, "" if none
};

/// What `stop()` could not do.
struct stop_report {
    /// Every update handed to the sink was acknowledged: nothing unwritten, nothing dropped.
    bool complete = false;
    std::size_t unwritten = 0; ///< keys whose latest version Redis did not acknowledge
    std::uint64_t dropped = 0; ///< updates dropped over the sink's life (`updates_dropped`)
    sink_stats stats;          ///< as of the end
};

namespace detail {

/// The figures of one sink: relaxed atomics, each written by one thread at a time (the I/O
/// thread; `updates_dropped` also by producers, with an atomic add), read by any thread.
struct sink_counters {
    std::atomic<std::uint64_t> updates_received{0};
    std::atomic<std::uint64_t> updates_coalesced{0};
    std::atomic<std::uint64_t> updates_written{0};
    std::atomic<std::uint64_t> updates_dropped{0};
    std::atomic<std::uint64_t> commands_sent{0};
    std::atomic<std::uint64_t> commands_succeeded{0};
    std::atomic<std::uint64_t> commands_failed{0};
    std::atomic<std::uint64_t> transactions{0};
    std::atomic<std::uint64_t> retries{0};
    std::atomic<std::uint64_t> timeouts{0};
    std::atomic<std::uint64_t> connects{0};
    std::atomic<std::uint64_t> reconnects{0};
    std::atomic<std::uint64_t> connect_failures{0};
    std::atomic<std::uint64_t> resyncs{0};
    std::atomic<std::uint64_t> resync_updates{0};
    std::atomic<std::uint64_t> journal_forgotten{0};
    std::atomic<std::uint64_t> moved{0};
    std::atomic<std::uint64_t> asked{0};
    std::atomic<std::uint64_t> slot_map_reads{0};
    std::atomic<std::size_t> pending_published{0};
    std::atomic<std::size_t> in_flight_published{0};
    std::atomic<std::size_t> parked_published{0};
    std::atomic<std::size_t> journal_published{0};
    std::atomic<std::size_t> memory_published{0};
    std::atomic<bool> cluster_published{false};
    std::atomic<std::size_t> nodes_published{0};
    std::atomic<std::size_t> nodes_connected_published{0};
    std::atomic<double> latency_avg_ms{0.0};
    std::atomic<double> success_rate{1.0};
    latency_histogram write_lag;

    /// Every figure but `last_error` (the sink's own), one relaxed load each: not a consistent
    /// cut while the sink writes. `pending` is what the I/O thread holds, without its inbox.
    [[nodiscard]] sink_stats read() const {

        sink_stats s;
        s.updates_received = updates_received.load(std::memory_order_relaxed);
        s.updates_coalesced = updates_coalesced.load(std::memory_order_relaxed);
        s.updates_written = updates_written.load(std::memory_order_relaxed);
        s.updates_dropped = updates_dropped.load(std::memory_order_relaxed);
        s.commands_sent = commands_sent.load(std::memory_order_relaxed);
        s.commands_succeeded = commands_succeeded.load(std::memory_order_relaxed);
        s.commands_failed = commands_failed.load(std::memory_order_relaxed);
        s.transactions = transactions.load(std::memory_order_relaxed);
        s.retries = retries.load(std::memory_order_relaxed);
        s.timeouts = timeouts.load(std::memory_order_relaxed);
        s.connects = connects.load(std::memory_order_relaxed);
        s.reconnects = reconnects.load(std::memory_order_relaxed);
        s.connect_failures = connect_failures.load(std::memory_order_relaxed);
        s.resyncs = resyncs.load(std::memory_order_relaxed);
        s.resync_updates = resync_updates.load(std::memory_order_relaxed);
        s.journal_forgotten = journal_forgotten.load(std::memory_order_relaxed);
        s.moved = moved.load(std::memory_order_relaxed);
        s.asked = asked.load(std::memory_order_relaxed);
        s.slot_map_reads = slot_map_reads.load(std::memory_order_relaxed);
        s.pending = pending_published.load(std::memory_order_relaxed);
        s.in_flight = in_flight_published.load(std::memory_order_relaxed);
        s.parked = parked_published.load(std::memory_order_relaxed);
        s.journal_entries = journal_published.load(std::memory_order_relaxed);
        s.memory_bytes = memory_published.load(std::memory_order_relaxed);
        s.cluster = cluster_published.load(std::memory_order_relaxed);
        s.nodes = nodes_published.load(std::memory_order_relaxed);
        s.nodes_connected = nodes_connected_published.load(std::memory_order_relaxed);
        s.connected = s.nodes > 0 && s.nodes_connected == s.nodes;
        s.latency_avg_ms = latency_avg_ms.load(std::memory_order_relaxed);
        s.success_rate = success_rate.load(std::memory_order_relaxed);
        s.write_lag = write_lag.summary();
        return s;
    }
};

} // namespace detail
} // namespace tradeagg::redis
