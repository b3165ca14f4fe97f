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
// One round, for every partition held:
//   1. XREADGROUP (its consumer group, this instance as consumer) inside a script that first
//      checks the lease: an instance that lost its lease cannot take entries any more.
//   2. The trades are applied to the partition's own shard (`shard::apply_here`): per-partition
//      state, so a token's aggregates depend only on its own entries, in stream order, and
//      reading them again gives the same values.
//   3. Each changed token is written by one script (`lease_scripts::token_write`): its latest,
//      rolling and candle hashes at once (they share the {token} slot), with the partition's
//      epoch and the id of the token's last applied entry. A token holding a larger epoch
//      refuses the write: the partition was taken over, and this instance drops it.
//   4. Once Redis has acknowledged every write of the round, the entries are XACKed.
//
// Exactly once. A token's hashes in Redis are always the aggregates of a prefix of its entries
// in the stream, the prefix ending at the `stream_id` its latest hash records (writes are
// absolute values of that prefix, atomic per token, and a write from an older epoch is refused).
// A new holder (after a takeover, a release, or a restart) rebuilds the partition's state by
// reading the stream from its start up to the group's last delivered id (XRANGE): entries at or
// below a token's stored `stream_id` are applied without being written, later ones are applied
// and written, as in a round. It then claims the group's pending entries (XAUTOCLAIM) and
// acknowledges them, and reads new entries from there. So an entry's effect is in Redis once,
// whichever instance applied it and however often it was delivered.
//
// Trimming. The stream is the log of record, so a rebuild is exact only if the stream still
// holds every entry the state depends on: for a producer that appends trades as they happen,
// those appended within the longest interval (or the rolling window, if longer) plus the
// allowed lateness, `exact_retention()` (a day and two seconds under throughput_policy). Every
// `lease_ttl` the holder trims its streams to `retention` (XTRIM MINID by the ids' append time),
// never past what the group has not delivered or is still pending. A shorter retention keeps
// less in Redis, at a price: after a takeover, the longer intervals' open candles and the
// rolling window start from the entries still there.
//
// Invalid entries (a missing field, a NaN price, an unknown side) are counted, reported in
// `last_error` with their id, acknowledged and skipped: they can never be applied. A token's
// trades are applied in stream order, so a producer must append them in its arrival order: one
// later than the allowed lateness (a retried append that landed after newer ones, say) is late,
// counted (`trades_late`) and not merged, as in a pipeline.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <pthread.h>
#include <signal.h>

#include <tradeagg/detail/string_map.hpp>
#include <tradeagg/detail/thread_name.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/reclaimer.hpp>
#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/consumer_control.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/lease.hpp>
#include <tradeagg/redis/partition_engine.hpp>
#include <tradeagg/redis/partition_leases.hpp>
#include <tradeagg/redis/script_client.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/stream_consumer_config.hpp>
#include <tradeagg/redis/stream_consumer_stats.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/redis/stream_reply.hpp>
#include <tradeagg/redis/token_write.hpp>
#include <tradeagg/runtime_config.hpp>
#include <tradeagg/shard.hpp>
#include <tradeagg/sink.hpp>
#include <tradeagg/token_table.hpp>

namespace tradeagg::redis {

template <policy Policy>
class stream_consumer {
public:
    stream_consumer(stream_consumer_config cfg, const resolved_config<Policy>& pipeline)
        : cfg_(std::move(cfg)), pipeline_(pipeline), client_(cfg_.redis),
          leases_(cfg_, client_, control_) {
        if (cfg_.partitions == 0 || cfg_.instance.empty()) {
            throw std::invalid_argument("stream_consumer: partitions > 0 and an instance name");
        }
    }

    stream_consumer(const stream_consumer&) = delete;
    stream_consumer& operator=(const stream_consumer&) = delete;
    ~stream_consumer() { stop(std::chrono::milliseconds(0)); }

    void start() {
        thread_ = std::thread([this] {
            tradeagg::detail::name_this_thread("tradeagg-streams");
            sigset_t pipe;
            sigemptyset(&pipe);
            sigaddset(&pipe, SIGPIPE);
            pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
            run();
        });
    }

    /// Finishes the round in progress (its writes and acknowledgements, retried until
    /// `deadline`), releases every lease, and joins. True if nothing was left unwritten; what
    /// was is still in the streams, for the next holder.
    bool stop(std::chrono::milliseconds deadline) {
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

    using engine = detail::partition_engine<Policy>;

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
                leases_.balance([this](partition& p) { return rebuild(p); });
                next_balance = clock::now() + cfg_.lease_ttl / 3;
            }
            leases_.renew_due();
            if (now >= next_trim) {
                trim();
                next_trim = clock::now() + cfg_.lease_ttl;
            }
            const std::size_t read = round();
            if (read == 0) {
                control_.wait_for_stop(idle);
                idle = std::min(idle * 2, std::chrono::milliseconds(20));
            } else {
                idle = std::chrono::milliseconds(1);
            }
        }
        leases_.release_all();
    }

    // ---- reading and applying ---------------------------------------------------------------

    /// Applies entries to a partition's state; invalid ones are counted and reported.
    void apply(partition& p, const std::vector<detail::stream_entry_view>& entries) {
        std::uint64_t invalid = 0;
        for (const detail::stream_entry_view& e : entries) {
            std::string_view why = e.why;
            if (e.trade && p.state->push(*e.trade, why)) {
                tradeagg::detail::find_or_add(p.state->applied, e.trade->token) = e.id;
                continue;
            }
            ++invalid;
            control_.note_error(p.stream + " entry " + std::string(e.id_text) +
                                " skipped: " + std::string(why));
        }
        p.state->worker.apply_here();
        const std::uint64_t late = std::exchange(p.state->late, 0);
        control_.update([&](stream_consumer_stats& s) {
            s.entries_invalid += invalid;
            s.trades_late += late;
        });
    }

    /// One round over every partition held. Returns the entries read.
    std::size_t round() {
        std::vector<cluster_command> reads;
        std::vector<partition*> who;
        for (partition& p : leases_.all()) {
            if (p.epoch != 0) {
                reads.push_back(
                    client_.script(lease_scripts::read, p.slot,
                                   {p.lease, p.stream, leases_.holder(), std::to_string(p.epoch),
                                    cfg_.group, cfg_.instance, std::to_string(cfg_.read_count)},
                                   2));
                who.push_back(&p);
            }
        }
        if (reads.empty()) {
            return 0;
        }
        std::vector<command_result> replies;
        client_.run(reads, replies);
        std::size_t total = 0;
        std::vector<detail::stream_entry_view> entries;
        for (std::size_t i = 0; i < who.size(); ++i) {
            partition& p = *who[i];
            const command_result& r = replies[i];
            if (!r.ok()) {
                if (r.error.starts_with("NOGROUP")) {
                    // The stream was deleted: its group with it. Start over on it.
                    leases_.drop(p, p.stream + ": " + r.error);
                } else if (r.reply == nullptr) {
                    // No reply: entries may have been delivered to this consumer and lost on
                    // the way, or the read may still sit unread at the node. Acquire the lease
                    // again, under a new epoch, which fences that read, and rebuild the
                    // partition, which applies every entry delivered before once.
                    control_.note_error(p.stream + ": " + r.error + " (rebuilding the partition)");
                    p.epoch = 0;
                    p.state.reset();
                    p.to_ack.clear();
                    rebalance_ = true;
                } else {
                    control_.note_error(p.stream + ": " +
                                        r.error); // not run: read again next round
                }
                continue;
            }
            if (r.reply->type == REDIS_REPLY_INTEGER) {
                leases_.drop(p, "lease " + p.lease + " is no longer held");
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
            total += entries.size();
            for (const detail::stream_entry_view& e : entries) {
                p.to_ack.emplace_back(e.id_text);
            }
            apply(p, entries);
        }
        control_.update([&](stream_consumer_stats& s) {
            ++s.rounds;
            s.entries_read += total;
        });
        std::vector<partition*> writing;
        for (partition* p : who) {
            if (p->epoch != 0 && !p->to_ack.empty()) {
                writing.push_back(p);
            }
        }
        write_and_ack(writing, total);
        return total;
    }

    /// Builds the token writes of a partition's changes (and clears them).
    void build_writes(partition& p, std::vector<cluster_command>& out) {
        for (auto& [name, t] : p.state->sink.tokens) {
            const auto id = p.state->applied.find(name);
            detail::token_write_arguments w(cfg_.key_prefix, name, t, p.epoch,
                                            id != p.state->applied.end() ? id->second.text()
                                                                         : std::string(),
                                            cfg_.candle_retention_intervals);
            out.push_back(client_.script(lease_scripts::token_write, token_slot(name),
                                         std::move(w.keys_and_args), w.keys));
        }
        p.state->sink.tokens.clear();
    }

    /// Writes the partitions' changes until Redis has acknowledged all of them (retrying while
    /// each lease is valid), then acknowledges their entries. `applied` is counted as applied.
    void write_and_ack(const std::vector<partition*>& parts, std::size_t applied) {
        std::vector<cluster_command> cmds;
        std::vector<partition*> owner;
        for (partition* p : parts) {
            const std::size_t before = cmds.size();
            build_writes(*p, cmds);
            owner.insert(owner.end(), cmds.size() - before, p);
        }
        auto backoff = std::chrono::milliseconds(20);
        std::uint64_t written = 0;
        std::uint64_t retries = 0;
        while (!cmds.empty()) {
            std::vector<command_result> r;
            client_.run(cmds, r);
            std::vector<cluster_command> again;
            std::vector<partition*> again_owner;
            for (std::size_t i = 0; i < cmds.size(); ++i) {
                partition& p = *owner[i];
                if (p.epoch == 0) {
                    continue; // dropped meanwhile
                }
                if (r[i].ok() && r[i].reply->type == REDIS_REPLY_INTEGER) {
                    if (r[i].reply->integer == 0) {
                        leases_.drop(p, "partition " + std::to_string(p.index) +
                                            ": a token holds a newer epoch (taken over)");
                    } else {
                        ++written;
                    }
                    continue;
                }
                control_.note_error("token write: " + r[i].error);
                if (clock::now() >= p.valid_until && !leases_.renewed(p)) {
                    leases_.drop(p,
                                 "lease " + p.lease + " lapsed while writes failed: " + r[i].error);
                    continue;
                }
                again.push_back(std::move(cmds[i]));
                again_owner.push_back(&p);
            }
            cmds = std::move(again);
            owner = std::move(again_owner);
            if (!cmds.empty()) {
                retries += cmds.size();
                std::this_thread::sleep_for(backoff);
                backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
                leases_.renew_due();
                if (control_.stopping() && clock::now() >= control_.stop_deadline()) {
                    control_.stopped_unclean();
                    for (partition* p : owner) {
                        leases_.drop(*p, "stopped with writes unacknowledged");
                    }
                    break;
                }
            }
        }
        control_.update([&](stream_consumer_stats& s) {
            s.token_writes += written;
            s.write_retries += retries;
            s.trades_applied += applied;
        });
        ack(parts);
    }

    void ack(const std::vector<partition*>& parts) {
        std::vector<cluster_command> cmds;
        std::uint64_t count = 0;
        for (partition* p : parts) {
            if (p->epoch == 0 || p->to_ack.empty()) {
                continue;
            }
            constexpr std::size_t chunk = 1'000;
            for (std::size_t from = 0; from < p->to_ack.size(); from += chunk) {
                cluster_command c{{"XACK", p->stream, cfg_.group}, p->slot};
                const std::size_t to = std::min(p->to_ack.size(), from + chunk);
                for (std::size_t i = from; i < to; ++i) {
                    c.args.push_back(std::move(p->to_ack[i]));
                }
                count += to - from;
                cmds.push_back(std::move(c));
            }
            p->to_ack.clear();
        }
        if (cmds.empty()) {
            return;
        }
        std::vector<command_result> r;
        for (int attempt = 0; attempt < 10 && !cmds.empty(); ++attempt) {
            if (attempt > 0) {
                std::this_thread::sleep_for(std::chrono::milliseconds(50) * attempt);
            }
            client_.run(cmds, r);
            std::vector<cluster_command> again;
            for (std::size_t i = 0; i < cmds.size(); ++i) {
                if (!r[i].ok()) {
                    control_.note_error("XACK: " + r[i].error);
                    again.push_back(std::move(cmds[i]));
                }
            }
            cmds = std::move(again);
        }
        // What is still unacknowledged stays pending: harmless, as the next holder of the
        // partition claims and acknowledges it.
        control_.update([&](stream_consumer_stats& s) { s.entries_acked += count; });
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
                cmds.push_back({{"XPENDING", p.stream, cfg_.group}, p.slot});
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
                info.ok() ? detail::last_delivered(info.reply.get(), cfg_.group) : std::nullopt;
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

    // ---- rebuilding a partition -------------------------------------------------------------

    /// Builds the state of a partition just acquired from its stream, writes what Redis lacks,
    /// and acknowledges what the group had delivered. False if Redis did not let it finish.
    bool rebuild(partition& p) {
        p.state = std::make_unique<engine>(pipeline_);
        // The group (created with the stream if need be), and how far it has delivered.
        command_result created = client_.run_one(
            cluster_command{{"XGROUP", "CREATE", p.stream, cfg_.group, "0", "MKSTREAM"}, p.slot});
        if (!created.ok() && !created.error.starts_with("BUSYGROUP")) {
            control_.note_error(p.stream + ": XGROUP CREATE: " + created.error);
            return false;
        }
        command_result info =
            client_.run_one(cluster_command{{"XINFO", "GROUPS", p.stream}, p.slot});
        if (!info.ok()) {
            control_.note_error(p.stream + ": XINFO GROUPS: " + info.error);
            return false;
        }
        const std::optional<stream_id> delivered =
            detail::last_delivered(info.reply.get(), cfg_.group);
        if (!delivered) {
            control_.note_error(p.stream + ": XINFO GROUPS has no group " + cfg_.group);
            return false;
        }
        std::string from = "-";
        const std::string to = delivered->text();
        std::unordered_map<std::string, std::optional<stream_id>> stored;
        std::vector<detail::stream_entry_view> entries;
        std::vector<detail::stream_entry_view> old_entries;
        std::vector<detail::stream_entry_view> new_entries;
        while (*delivered != stream_id{} && p.epoch != 0) {
            command_result r = client_.run_one(cluster_command{
                {"XRANGE", p.stream, from, to, "COUNT", std::to_string(cfg_.read_count)}, p.slot});
            if (!r.ok()) {
                control_.note_error(p.stream + ": XRANGE: " + r.error);
                return false;
            }
            entries.clear();
            detail::parse_entries(r.reply.get(), entries);
            if (entries.empty()) {
                break;
            }
            if (!load_stored(entries, stored)) {
                return false;
            }
            old_entries.clear();
            new_entries.clear();
            for (const detail::stream_entry_view& e : entries) {
                const auto s = e.trade ? stored.find(std::string(e.trade->token)) : stored.end();
                const bool done = s != stored.end() && s->second && e.id <= *s->second;
                (done ? old_entries : new_entries).push_back(e);
            }
            apply(p, old_entries);
            p.state->sink.tokens.clear(); // in Redis already
            apply(p, new_entries);
            control_.update([&](stream_consumer_stats& s) {
                s.entries_replayed += entries.size();
                s.entries_skipped += old_entries.size();
            });
            std::vector<partition*> one{&p};
            write_and_ack(one, new_entries.size());
            // A long stream takes a while: keep every lease held meanwhile (this one too).
            leases_.renew_due();
            from = "(" + std::string(entries.back().id_text);
            if (entries.back().id >= *delivered) {
                break;
            }
        }
        if (p.epoch == 0) {
            return false;
        }
        return claim_pending(p);
    }

    /// Reads the stored `stream_id` of every token of `entries` not looked up yet.
    bool load_stored(const std::vector<detail::stream_entry_view>& entries,
                     std::unordered_map<std::string, std::optional<stream_id>>& stored) {
        std::vector<cluster_command> cmds;
        std::vector<std::string> names;
        for (const detail::stream_entry_view& e : entries) {
            if (!e.trade) {
                continue;
            }
            std::string name(e.trade->token);
            if (stored.contains(name)) {
                continue;
            }
            stored.emplace(name, std::nullopt);
            cmds.push_back(cluster_command{{"HGET", latest_key(cfg_.key_prefix, name), "stream_id"},
                                           token_slot(name)});
            names.push_back(std::move(name));
        }
        if (cmds.empty()) {
            return true;
        }
        std::vector<command_result> r;
        for (int attempt = 0;; ++attempt) {
            client_.run(cmds, r);
            const bool all = std::all_of(r.begin(), r.end(), [](auto& x) { return x.ok(); });
            if (all) {
                break;
            }
            if (attempt == 20 || control_.stopping()) {
                for (const std::string& n : names) {
                    stored.erase(n);
                }
                control_.note_error("reading stored stream ids: " + client_.cluster().last_error());
                return false;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        for (std::size_t i = 0; i < names.size(); ++i) {
            if (r[i].reply->type == REDIS_REPLY_STRING) {
                stored[names[i]] =
                    stream_id::parse(std::string_view(r[i].reply->str, r[i].reply->len));
            }
        }
        return true;
    }

    /// Takes the group's pending entries (delivered to a former holder, or to this instance
    /// before a restart) and acknowledges them: the rebuild has applied every delivered entry.
    bool claim_pending(partition& p) {
        std::string cursor = "0-0";
        do {
            command_result r =
                client_.run_one(cluster_command{{"XAUTOCLAIM", p.stream, cfg_.group, cfg_.instance,
                                                 "0", cursor, "COUNT", "1000", "JUSTID"},
                                                p.slot});
            if (!r.ok() || r.reply->type != REDIS_REPLY_ARRAY || r.reply->elements < 2 ||
                r.reply->element[0]->type != REDIS_REPLY_STRING) {
                control_.note_error(p.stream + ": XAUTOCLAIM: " + r.error);
                return false;
            }
            cursor.assign(r.reply->element[0]->str, r.reply->element[0]->len);
            const redisReply* ids = r.reply->element[1];
            for (std::size_t i = 0; ids->type == REDIS_REPLY_ARRAY && i < ids->elements; ++i) {
                if (ids->element[i]->type == REDIS_REPLY_STRING) {
                    p.to_ack.emplace_back(ids->element[i]->str, ids->element[i]->len);
                }
            }
            std::vector<partition*> one{&p};
            ack(one);
            leases_.renew_due();
        } while (cursor != "0-0" && p.epoch != 0);
        return p.epoch != 0;
    }

    stream_consumer_config cfg_;
    resolved_config<Policy> pipeline_;
    detail::script_client client_; ///< runs the lease scripts (lease.hpp) by SHA1
    detail::consumer_control control_;
    detail::partition_leases<Policy> leases_;
    std::thread thread_;
    bool rebalance_ = false; ///< a partition was put down: take leases again at once
};

} // namespace tradeagg::redis
