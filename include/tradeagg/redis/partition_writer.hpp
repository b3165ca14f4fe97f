#pragma once
// Steps 2 to 4 of a stream consumer's round (stream_consumer.hpp), which a rebuild takes too:
// entries applied to their partition's state, each changed token written by one fenced script
// (token_write.hpp), and the entries acknowledged once Redis has acknowledged every write.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <hiredis/hiredis.h>

#include <tradeagg/detail/string_map.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/consumer_control.hpp>
#include <tradeagg/redis/lease.hpp>
#include <tradeagg/redis/partition_leases.hpp>
#include <tradeagg/redis/script_client.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/stream_consumer_config.hpp>
#include <tradeagg/redis/stream_consumer_stats.hpp>
#include <tradeagg/redis/stream_reply.hpp>
#include <tradeagg/redis/token_write.hpp>

namespace tradeagg::redis::detail {

/// Applies a partition's entries and writes and acknowledges what they changed. The consumer's
/// thread only.
template <policy Policy>
class partition_writer {
public:
    using partition = stream_partition<Policy>;

    partition_writer(const stream_consumer_config& cfg, script_client& client,
                     partition_leases<Policy>& leases, consumer_control& control)
        : cfg_(cfg), client_(client), leases_(leases), control_(control) {}

    partition_writer(const partition_writer&) = delete;
    partition_writer& operator=(const partition_writer&) = delete;

    /// Applies entries to a partition's state; invalid ones are counted and reported.
    void apply(partition& p, const std::vector<stream_entry_view>& entries) {
        std::uint64_t invalid = 0;
        for (const stream_entry_view& e : entries) {
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
                if (partition::clock::now() >= p.valid_until && !leases_.renewed(p)) {
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
                if (control_.stop_overdue()) {
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

    /// XACKs the entries of the partitions still held, in up to ten attempts.
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

private:
    /// Builds the token writes of a partition's changes (and clears them).
    void build_writes(partition& p, std::vector<cluster_command>& out) {
        for (auto& [name, t] : p.state->sink.tokens) {
            const auto id = p.state->applied.find(name);
            token_write_arguments w(cfg_.key_prefix, name, t, p.epoch,
                                    id != p.state->applied.end() ? id->second.text()
                                                                 : std::string(),
                                    cfg_.candle_retention_intervals);
            out.push_back(client_.script(lease_scripts::token_write, token_slot(name),
                                         std::move(w.keys_and_args), w.keys));
        }
        p.state->sink.tokens.clear();
    }

    const stream_consumer_config& cfg_;
    script_client& client_;
    partition_leases<Policy>& leases_;
    consumer_control& control_;
};

} // namespace tradeagg::redis::detail
