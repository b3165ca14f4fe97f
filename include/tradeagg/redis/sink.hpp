#pragma once
// The Redis sink: writes every aggregate a pipeline flushes to Redis (keys and fields in
// keys.hpp), through hiredis's asynchronous client on one Boost.Asio I/O thread, to one
// Redis or to the masters of a Redis Cluster.
//
// Where writes go:
// - `host:port` and `more_seeds` (REDIS_ADDR, comma-separated) are seeds. Every connection
//   starts with `INFO server`. A node whose `redis_mode` is not `cluster` is a plain Redis: the
//   first such seed to answer takes every write (after `SELECT db` when `db` is not 0), over one
//   connection. A cluster node is asked `CLUSTER SLOTS`, and each token is then written to the
//   master serving its slot (all of a token's keys carry the `{token}` hash tag, so they share
//   one slot), over one pipelined connection per master. A cluster has database 0 only: `db`
//   does not apply to it.
// - MOVED: the slot's new owner takes the token's next write at once, and the slot map is read
//   again. ASK (a slot in migration): the next write goes to the named node, after ASKING, once.
//   More than `max_redirects` redirections of one token in a row count as a failed write (see
//   below). While a slot migrates, Redis runs a transaction of several keys only on a node
//   that holds all of them, and answers TRYAGAIN elsewhere; the sink retries until the
//   migration ends, so a migration that stalls holds that slot's tokens back. A lost
//   connection to a master and CLUSTERDOWN also read the map again (a failover moves slots);
//   the map is read from any connected node, at most every `retry_delay` (clamped to 100 ms
//   .. 1 s).
//
// How it stays exact and out of the workers' way:
// - `consume` (on shard workers) copies the batch into a node and pushes it onto a lock-free
//   list; it never blocks, never waits for the network, and allocates one node per flush. The
//   I/O thread takes the whole list at once, so the list cannot fill up the way a ring can.
// - On the I/O thread, updates are coalesced per key: a key keeps only its latest version not
//   yet written. So Redis falling behind costs memory per key, not per update.
// - A token's keys are written together: one MULTI/EXEC transaction carries the latest version
//   of every key of the token not yet acknowledged (HSET of every field; PEXPIRE for candles
//   when due). A token has at most one transaction in flight; what arrives meanwhile goes in the
//   next one, sent once the first is answered. So one key's writes never overtake each other,
//   and because the inbox is taken a whole flush at a time and a token's updates come from one
//   shard, every transaction moves Redis from the token's state after one flush to its state
//   after a later one: a reader (or Redis after a crash, its AOF holding whole transactions)
//   never sees a token's candles, rolling window and latest trade from different flushes.
//   The exceptions are Redis's own: a command failing inside EXEC (e.g. WRONGTYPE, if something
//   else wrote the key) does not undo the others, and a resync after a restart (below) rewrites
//   what the journal still holds.
// - Every write is an absolute value, so sending one again after an unknown outcome is exact.
// - Up to `pipeline_size` commands are in flight per connection (a transaction larger than that
//   goes alone). A command without a reply after `read_timeout` (or a connection that cannot
//   write for `write_timeout`) drops that connection with `redisAsyncFree`, which fails what was
//   in flight on it; a failed transaction (lost, or refused: OOM, TRYAGAIN, CLUSTERDOWN, ...) is
//   sent again after `retry_delay`, backing off with jitter, up to `max_retries` times, and then
//   kept ("parked") until that master acknowledges a write again, or every few hundred ms. A
//   master that is down holds back only the tokens of its slots; the others keep being written.
//   Nothing accepted is dropped, except new keys beyond `max_pending_updates` (counted).
// - A dropped connection may still have writes in Redis's input buffer (a stopped Redis reads
//   them when it resumes). Before writing on a new connection to the same node, the sink kills
//   the old one by its client id (`CLIENT KILL ID`): once that answers, nothing sent on the old
//   connection can be applied after what is sent on the new one. (A write left in the buffer of
//   a stopped master whose slot then moves to another master is Redis Cluster's own failover
//   window: the sink cannot fence a node it cannot reach.)
// - A changed `run_id` of a node means it restarted and may have lost everything. The sink then
//   writes again what it has written to that node's slots (a journal of the latest written
//   value per key, bounded by `resync_journal_bytes`) and asks the pipeline to hand over every
//   live candle and rolling window again (`resync`; that is every token, not only the node's:
//   the pipeline does not know slots, and writing a live value again is harmless).
//
// hiredis 0.14.1 resolves host names with blocking DNS: give IP addresses.

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include <pthread.h>
#include <signal.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <tradeagg/detail/thread_name.hpp>
#include <tradeagg/latency_histogram.hpp>
#include <tradeagg/redis/config.hpp>
#include <tradeagg/redis/sink_core.hpp>
#include <tradeagg/redis/sink_stats.hpp>
#include <tradeagg/runtime_config.hpp>
#include <tradeagg/sink.hpp>

namespace tradeagg::redis {

/// A sink that writes every update to Redis (see the top of this header). Satisfies
/// `tradeagg::sink`; give it to a pipeline by reference (`pipeline<P, redis_sink&>`) so that it
/// outlives the pipeline's final flush and can be stopped after it.
///
/// Threading: `consume` may be called from any number of threads at once; `stats`, `idle` and
/// `set_resync_handler` from any thread; `stop` from any thread but the sink's I/O thread.
class redis_sink {
public:
    /// Starts its own I/O thread and connects to the seeds. Throws `config_error` for a prefix that
    /// is empty, too long, or holds '{' or '}'. Allocates.
    explicit redis_sink(redis_config cfg)
        : own_io_(std::make_unique<boost::asio::io_context>(1)),
          guard_(std::make_unique<guard_type>(own_io_->get_executor())),
          core_(make_core(std::move(cfg), *own_io_)) {
        thread_ = std::thread([io = own_io_.get()] {
            tradeagg::detail::name_this_thread("tradeagg-redis");
            // hiredis writes with write(2): a connection Redis has closed raises SIGPIPE, whose
            // default action ends the process. Blocked here, it stays pending on this thread
            // and the write fails with EPIPE, which hiredis reports as a lost connection.
            sigset_t pipe;
            sigemptyset(&pipe);
            sigaddset(&pipe, SIGPIPE);
            pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
            io->run();
        });
        core_->start();
    }

    /// Runs on `io`, which the caller runs on exactly one thread (all of the sink's handlers
    /// and hiredis callbacks run there) and keeps running until `stop()` returns. That thread
    /// must not die of SIGPIPE when Redis closes a connection: ignore SIGPIPE in the process,
    /// or block it in that thread (the sink's own thread does).
    redis_sink(redis_config cfg, boost::asio::io_context& io)
        : core_(make_core(std::move(cfg), io)) {
        core_->start();
    }

    redis_sink(const redis_sink&) = delete;
    redis_sink& operator=(const redis_sink&) = delete;

    /// Stops (as `stop(write_timeout)` does) if `stop` was not called.
    ~redis_sink() {
        if (!stopped_) {
            (void)stop(stop_deadline_);
        }
    }

    /// Hands a flush to the I/O thread. Any thread; never blocks; allocates one node.
    void consume(const flush_batch& batch) { core_->enqueue(batch); }

    /// Called (on the I/O thread) when Redis (or one master of a cluster) lost what was
    /// written: the pipeline then hands over every live candle and token again. A pipeline sets
    /// this itself. Any thread; an empty function clears it, waiting for a call in progress.
    void set_resync_handler(std::function<void()> handler) {
        core_->set_resync_handler(std::move(handler));
    }

    /// Counters and gauges. Any thread; allocates (the error text).
    [[nodiscard]] sink_stats stats() const { return core_->stats(); }
    /// The write-lag histogram behind `stats().write_lag`, cumulative since construction: for
    /// exporting the whole distribution. Thread-safe; never allocates.
    [[nodiscard]] latency_histogram::counts write_lag_counts() const noexcept {
        return core_->write_lag_counts();
    }

    /// True when everything handed over has been acknowledged by Redis. Any thread.
    [[nodiscard]] bool idle() const noexcept { return core_->idle(); }

    /// Waits until `idle()` or `timeout`; returns `idle()`. Any thread; blocks (polls).
    bool wait_idle(std::chrono::milliseconds timeout) const {
        const auto until = std::chrono::steady_clock::now() + timeout;
        while (!idle()) {
            if (std::chrono::steady_clock::now() >= until) {
                return false;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return true;
    }

    /// Writes everything pending, retrying as configured but no longer than `deadline`, then
    /// closes the connections and stops the sink's own thread. Returns what could not be
    /// written; updates handed over afterwards are dropped (counted). Call after the
    /// pipeline's `stop()`. Any thread but the sink's I/O thread; blocks. Idempotent.
    stop_report stop(std::chrono::milliseconds deadline) {
        const std::lock_guard lock(stop_mutex_);
        if (stopped_) {
            return report_;
        }
        report_ = core_->stop(deadline);
        if (own_io_) {
            guard_.reset();
            thread_.join(); // run() returns once the cancelled waits have run
        }
        stopped_ = true;
        return report_;
    }

private:
    using guard_type = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;

    static std::shared_ptr<detail::sink_core> make_core(redis_config cfg,
                                                        boost::asio::io_context& io) {
        const std::string_view prefix = cfg.key_prefix;
        if (prefix.empty() || prefix.size() > detail::sink_core::max_prefix ||
            prefix.find_first_of("{} \r\n") != std::string_view::npos) {
            throw config_error("key_prefix",
                               "key_prefix = \"" + cfg.key_prefix +
                                   "\": expected 1 to 256 characters without braces or spaces");
        }
        return std::make_shared<detail::sink_core>(std::move(cfg), io);
    }

    std::unique_ptr<boost::asio::io_context> own_io_;
    std::unique_ptr<guard_type> guard_;
    std::shared_ptr<detail::sink_core> core_;
    std::thread thread_;
    std::mutex stop_mutex_;
    bool stopped_ = false;
    stop_report report_;
    std::chrono::milliseconds stop_deadline_{5'000};
};
static_assert(sink<redis_sink>);

} // namespace tradeagg::redis
