#pragma once
// Ingest from token-partitioned Redis streams into a Redis Cluster, exactly once, shared among
// several instances. Producers append trades to `<prefix>:trades:{p<k>}`, k = partition_of(token,
// N), so a token's trades are in one stream, in order. Each instance runs one consumer.
//
// Ownership. A partition is read by the holder of its lease (lease.hpp): a key with an
// expiry that the holder renews every third of `lease_ttl`. Instances announce themselves in
// `<prefix>:instances` (a sorted set scored by expiry) and each aims to hold ceil(N / live
// instances) partitions: it takes free or lapsed leases up to that and releases what is beyond
// it, so a new or restarted instance gets its share and a dead one's share is taken over once
// its leases lapse. Every acquisition carries a new epoch (INCR), even of a lease this instance
// still held (it acquires only to start a partition over): a read, write or release it sent in
// a former epoch and Redis runs late (from a connection that timed out) is refused.
//
// One round, for every partition held (one pipelined batch):
//   1. XREADGROUP, from the consumer group of the partition's current epoch
//      (`<group>@<epoch>`), this instance as consumer. Each acquisition reads through a group of
//      its own, which a new holder starts where the former groups had delivered and then
//      destroys: an instance that lost its lease unseen reads only its own group, which the new
//      holder does not depend on, and then finds it gone (NOGROUP) and stops. A partition with
//      `16 x read_count` entries read and not yet acknowledged is not read: reading waits for
//      the writes.
//   2. The trades are applied to the partition's own shard (`shard::apply_here`): per-partition
//      state, so a token's aggregates depend only on its own entries, in stream order, and
//      reading them again gives the same values. Entries hold one trade, or many (the packed
//      format of stream_entry.hpp), mixed in one stream.
//   3. What they changed is handed to the writer (write_behind.hpp), which writes on a thread of
//      its own, as fast as Redis takes it, each changed token by one script
//      (`lease_scripts::token_write`): its latest, rolling and candle hashes at once (they share
//      the {token} slot), with the partition's epoch and the id of the token's last applied
//      entry. A token changed again before its write is written once. A token holding a larger
//      epoch refuses the write: the partition was taken over, and this instance drops it.
//   4. Entries are XACKed, in a later round's batch, once Redis has acknowledged every write
//      covering them.
//
// Exactly once. A token's hashes in Redis are always the aggregates of a prefix of its entries
// in the stream, the prefix ending at the `stream_id` its latest hash records (writes are
// absolute values of that prefix, atomic per token, and a write from an older epoch is refused).
// A new holder (after a takeover, a release, or a restart) rebuilds the partition's state from
// its newest checkpoint (below) and the stream after it, or from the stream's start, up to the
// last id the former epochs' groups delivered (XRANGE): entries at or below a token's stored
// `stream_id` are applied without being written, later ones are applied and written, as in a
// round. Its own group delivers from that id on, and once the rebuild's writes are in, the
// former groups (and their pending entries) are destroyed. So an entry's effect is in Redis
// once, whichever instance applied it and however often it was delivered.
//
// Checkpoints (partition_checkpoints.hpp). Every `checkpoint_interval` the holder encodes its
// partition's state (checkpoint_format.hpp) and, once Redis has every token write covering the
// entries it includes, stores it in the partition's slot, fenced by the lease, keeping the one
// before it. A rebuild loads the newest that reads back (else the one before) and reads the
// stream only after the entry it includes: a takeover replays an interval of entries, not the
// stream. A checkpoint that does not read back (truncated, corrupt, another policy's layout) is
// counted (`checkpoints_refused`) and never applied.
//
// Trimming. The stream is the log of record: a rebuild is exact only if the stream holds every
// entry after the checkpoint it starts from. Each checkpoint stored trims the stream to the one
// before it (XTRIM MINID), or, with a `retention` set, to what is also older than that: the
// streams hold about two checkpoint intervals of entries. Without checkpoints, a rebuild reads
// the whole stream, which must then hold every entry the state depends on: for a producer that
// appends trades as they happen, those appended within the longest interval (or the rolling
// window, if longer) plus the allowed lateness, `exact_retention()` (a day and two seconds under
// throughput_policy); every `lease_ttl` the holder trims its streams to `retention` (by the ids'
// append time), never past what the group has not delivered or is still pending. A shorter
// retention keeps less in Redis, at a price: after a takeover, the longer intervals' open
// candles and the rolling window start from the entries still there.
//
// Invalid entries (a missing field, a NaN price, an unknown side) are counted, reported in
// `last_error` with their id, acknowledged and skipped: they can never be applied. A token's
// trades are applied in stream order, so a producer must append them in its arrival order: one
// later than the allowed lateness (a retried append that landed after newer ones, say) is late,
// counted (`trades_late`) and not merged, as in a pipeline.
//
// The parts, each in a header of its own: the settings and figures (stream_consumer_config.hpp,
// stream_consumer_stats.hpp); the partitions and their leases (partition_leases.hpp); a
// partition's state (partition_engine.hpp) and its checkpoints (checkpoint_format.hpp,
// partition_checkpoints.hpp); applying, handing over and acknowledging, steps 2
// to 4 (partition_writer.hpp), and writing (write_behind.hpp, token_write.hpp); rebuilds
// (partition_rebuilder.hpp); stream replies (stream_reply.hpp); running the scripts
// (script_client.hpp); what the consumer's thread shares with the threads that stop and watch it
// (consumer_control.hpp). This header keeps the loop, the reads of a round, and trimming.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <hiredis/hiredis.h>

#include <tradeagg/policy.hpp>
#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/consumer_control.hpp>
#include <tradeagg/redis/lease.hpp>
#include <tradeagg/redis/partition_checkpoints.hpp>
#include <tradeagg/redis/partition_leases.hpp>
#include <tradeagg/redis/partition_rebuilder.hpp>
#include <tradeagg/redis/partition_writer.hpp>
#include <tradeagg/redis/script_client.hpp>
#include <tradeagg/redis/stream_consumer_config.hpp>
#include <tradeagg/redis/stream_consumer_stats.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/redis/stream_reply.hpp>
#include <tradeagg/redis/write_behind.hpp>
#include <tradeagg/runtime_config.hpp>

namespace tradeagg::redis {

template <policy Policy>
class stream_consumer {
public:
    stream_consumer(stream_consumer_config cfg, const resolved_config<Policy>& pipeline)
        : cfg_(std::move(cfg)), pipeline_(pipeline), client_(cfg_.redis), behind_(cfg_, control_),
          leases_(cfg_, client_, behind_, control_),
          writer_(cfg_, client_, leases_, behind_, control_),
          checkpoints_(cfg_, pipeline_, client_, leases_, behind_, control_),
          rebuilder_(cfg_, pipeline_, client_, leases_, writer_, checkpoints_, control_) {
        if (cfg_.partitions == 0 || cfg_.instance.empty()) {
            throw std::invalid_argument("stream_consumer: partitions > 0 and an instance name");
        }
    }

    stream_consumer(const stream_consumer&) = delete;
    stream_consumer& operator=(const stream_consumer&) = delete;
    ~stream_consumer() { stop(std::chrono::milliseconds(0)); }

    /// Starts the consumer's thread. Throws std::logic_error if called twice or after `stop()`
    /// (a consumer runs once). The owner's thread, as `stop()`.
    void start() {
        if (started_) {
            throw std::logic_error("tradeagg::redis::stream_consumer::start: a consumer starts "
                                   "once");
        }
        started_ = true;
        behind_.start();
        thread_ = start_client_thread("tradeagg-streams", [this] { run(); });
    }

    /// Finishes the round in progress, writes everything applied and acknowledges its entries
    /// (retrying until `deadline`), releases every lease, and joins. True if nothing was left
    /// unwritten; what was is still in the streams, for the next holder.
    bool stop(std::chrono::milliseconds deadline) {
        started_ = true; // a stopped consumer does not start
        control_.request_stop(deadline);
        if (thread_.joinable()) {
            thread_.join();
        }
        return control_.clean_stop();
    }

    /// The retention that keeps rebuilds exact: every entry a candle or the rolling window
    /// that can still change depends on, for a producer that appends trades as they happen.
    [[nodiscard]] static constexpr std::chrono::milliseconds exact_retention() noexcept {
        return std::max(std::chrono::milliseconds(Policy::intervals.back()),
                        rolling_window_length) +
               Policy::allowed_lateness;
    }

    [[nodiscard]] stream_consumer_stats stats() const { return control_.stats(); }

private:
    using clock = std::chrono::steady_clock;

    using partition = detail::stream_partition<Policy>;

    // ---- the loop ---------------------------------------------------------------------------

    void run() {
        auto idle = std::chrono::milliseconds(1);
        clock::time_point next_balance{};
        clock::time_point next_trim = clock::now() + cfg_.lease_ttl;
        while (!control_.stopping()) {
            const auto now = clock::now();
            if (now >= next_balance || rebalance_) {
                rebalance_ = false;
                leases_.balance([this](partition& p) { return rebuilder_.rebuild(p); },
                                [this](partition& p) {
                                    (void)writer_.drain({&p});
                                    checkpoints_.store_now({&p});
                                });
                next_balance = clock::now() + cfg_.lease_ttl / 3;
            }
            leases_.renew_due();
            if (now >= next_trim && !checkpoints_.enabled()) { // else each checkpoint trims
                trim();
                next_trim = clock::now() + cfg_.lease_ttl;
            }
            const std::size_t read = round();
            if (read == 0 && writes_outstanding()) {
                behind_.wait_for_progress(idle); // acknowledgements to send once it is done
                idle = std::min(idle * 2, std::chrono::milliseconds(20));
            } else if (read == 0) {
                control_.wait_for_stop(idle);
                idle = std::min(idle * 2, std::chrono::milliseconds(20));
            } else {
                idle = std::chrono::milliseconds(1);
            }
        }
        std::vector<partition*> held;
        for (partition& p : leases_.all()) {
            if (p.epoch != 0) {
                held.push_back(&p);
            }
        }
        (void)writer_.drain(held);
        checkpoints_.store_now(held); // the next holders replay nothing
        leases_.release_all();
        behind_.stop();
    }

    // ---- reading and applying ---------------------------------------------------------------

    /// One round over every partition held: the entries whose writes are in Redis are
    /// acknowledged, and new ones read (from each partition with fewer than `max_unacked()`
    /// read and not yet acknowledged), applied and handed to the writer, in one batch. Returns
    /// the entries read.
    std::size_t round() {
        std::vector<partition*> held;
        for (partition& p : leases_.all()) {
            if (p.epoch != 0) {
                held.push_back(&p);
            }
        }
        std::vector<cluster_command> cmds;
        std::vector<partition*> acks;
        writer_.collect_acks(held, cmds, acks);
        std::vector<partition*> stored;
        for (partition* p : held) {
            checkpoints_.take_if_due(*p); // one not taken after a round: the partition went idle
        }
        checkpoints_.collect_writes(held, cmds, stored);
        const std::size_t first_read = cmds.size();
        std::vector<partition*> who;
        for (partition* p : held) {
            if (p->epoch != 0 && p->unacked() < max_unacked()) {
                cmds.push_back({{"XREADGROUP", "GROUP", p->group, cfg_.instance, "COUNT",
                                 std::to_string(cfg_.read_count), "STREAMS", p->stream, ">"},
                                p->slot});
                who.push_back(p);
            }
        }
        if (cmds.empty()) {
            return 0;
        }
        std::vector<command_result> replies;
        client_.run(cmds, replies);
        writer_.acked(cmds, replies, 0, acks);
        checkpoints_.written(replies, acks.size(), stored);
        std::size_t total = 0;
        detail::stream_entries entries;
        for (std::size_t i = 0; i < who.size(); ++i) {
            partition& p = *who[i];
            const command_result& r = replies[first_read + i];
            if (p.epoch == 0) {
                continue; // dropped meanwhile: what it read stays pending for the next holder
            }
            if (!r.ok()) {
                if (r.error.starts_with("NOGROUP")) {
                    // The group is gone: a newer holder destroyed it (this lease lapsed unseen),
                    // or the stream was deleted with it. Stop reading it; a later balance takes
                    // the partition again if it is free.
                    leases_.drop(p, p.stream + ": " + r.error);
                } else if (r.reply == nullptr) {
                    // No reply: entries may have been delivered to this consumer and lost on
                    // the way, or the read may still sit unread at the node. Acquire the lease
                    // again, under a new epoch, which fences that read, and rebuild the
                    // partition, which applies every entry delivered before once.
                    control_.note_error(p.stream + ": " + r.error + " (rebuilding the partition)");
                    leases_.start_over(p);
                    rebalance_ = true;
                } else {
                    // Not run: read again next round.
                    control_.note_error(p.stream + ": " + r.error);
                }
                continue;
            }
            if (r.reply->type != REDIS_REPLY_ARRAY || r.reply->elements == 0) {
                continue; // nothing new
            }
            const redisReply* stream = r.reply->element[0];
            if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2) {
                continue;
            }
            entries.clear();
            detail::parse_entries(stream->element[1], entries);
            total += entries.entries.size();
            std::vector<std::string> ids;
            ids.reserve(entries.entries.size());
            for (const detail::stream_entry_view& e : entries.entries) {
                ids.emplace_back(e.id_text);
            }
            writer_.apply(p, entries);
            writer_.hand_over(p, std::move(ids), entries.trades.size());
            checkpoints_.applied(p, entries.entries.back().id);
        }
        std::size_t unacked = 0;
        for (const partition* p : held) {
            unacked += p->epoch != 0 ? p->unacked() : 0;
        }
        const std::size_t waiting = behind_.tokens_waiting();
        control_.update([&](stream_consumer_stats& s) {
            ++s.rounds;
            s.entries_read += total;
            s.entries_unacked = unacked;
            s.tokens_waiting = waiting;
        });
        return total;
    }

    /// Entries a partition may have read and not yet acknowledged (their writes not yet in
    /// Redis): reading stops there until the writer catches up.
    [[nodiscard]] std::size_t max_unacked() const noexcept { return cfg_.read_count * 16; }

    /// Something handed to the writer is not yet acknowledged.
    [[nodiscard]] bool writes_outstanding() {
        return std::any_of(leases_.all().begin(), leases_.all().end(), [](const partition& p) {
            return p.epoch != 0 && (!p.awaiting.empty() || !p.to_ack.empty());
        });
    }

    // ---- trimming ------------------------------------------------------------------------------

    /// Trims the streams held to the retention: XTRIM MINID, never past an entry the group has
    /// not delivered or that is still pending (the oldest of XPENDING's summary).
    void trim() {
        const std::chrono::milliseconds keep = cfg_.retention.value_or(exact_retention());
        if (keep.count() <= 0) {
            return;
        }
        std::vector<cluster_command> cmds;
        std::vector<partition*> who;
        for (partition& p : leases_.all()) {
            if (p.epoch != 0) {
                cmds.push_back({{"XINFO", "GROUPS", p.stream}, p.slot});
                cmds.push_back({{"XPENDING", p.stream, p.group}, p.slot});
                who.push_back(&p);
            }
        }
        if (cmds.empty()) {
            return;
        }
        std::vector<command_result> r;
        client_.run(cmds, r);
        const auto age = detail::wall_ms() - keep.count();
        std::vector<cluster_command> trims;
        for (std::size_t i = 0; i < who.size(); ++i) {
            const command_result& info = r[2 * i];
            const command_result& pending = r[2 * i + 1];
            const std::optional<stream_id> delivered =
                info.ok() ? detail::last_delivered(info.reply.get(), who[i]->group) : std::nullopt;
            if (!delivered || !pending.ok() || pending.reply->type != REDIS_REPLY_ARRAY ||
                pending.reply->elements < 2) {
                continue; // not known now: next time
            }
            stream_id bound{static_cast<std::uint64_t>(std::max<std::int64_t>(age, 0)), 0};
            bound = std::min(bound, stream_id{delivered->ms, delivered->seq + 1});
            const redisReply* oldest = pending.reply->element[1];
            if (oldest->type == REDIS_REPLY_STRING) {
                const auto id = stream_id::parse(std::string_view(oldest->str, oldest->len));
                if (!id) {
                    continue;
                }
                bound = std::min(bound, *id);
            }
            trims.push_back({{"XTRIM", who[i]->stream, "MINID", bound.text()}, who[i]->slot});
        }
        if (trims.empty()) {
            return;
        }
        client_.run(trims, r);
        std::uint64_t removed = 0;
        for (const command_result& t : r) {
            if (t.ok() && t.reply->type == REDIS_REPLY_INTEGER && t.reply->integer > 0) {
                removed += static_cast<std::uint64_t>(t.reply->integer);
            } else if (!t.ok()) {
                control_.note_error("XTRIM: " + t.error);
            }
        }
        control_.update([&](stream_consumer_stats& s) { s.entries_trimmed += removed; });
    }

    stream_consumer_config cfg_;
    resolved_config<Policy> pipeline_;
    detail::script_client client_; ///< runs the lease scripts (lease.hpp) by SHA1
    detail::consumer_control control_;
    detail::write_behind behind_; ///< writes the tokens' changes, on a thread of its own
    detail::partition_leases<Policy> leases_;
    detail::partition_writer<Policy> writer_;
    detail::partition_checkpoints<Policy> checkpoints_;
    detail::partition_rebuilder<Policy> rebuilder_;
    std::thread thread_;
    bool started_ = false;   ///< `start()` or `stop()` was called
    bool rebalance_ = false; ///< a partition was put down: take leases again at once
};

} // namespace tradeagg::redis
