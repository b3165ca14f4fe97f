#pragma once
// The stream benchmarks' Redis Cluster (BM_stream_read_baseline, BM_stream_ingest) and the
// partition streams a run's trades are staged in and published to.
//
// Every run starts from a cluster emptied with FLUSHALL on every master. Outside the clock, the
// first `stream_trades` trades of the stream are appended (pipelined XADD through
// `cluster_client`) to one staging stream per partition, `<prefix>:staging:{p<k>}`, whose
// consumer group is created at its start. The staging stream shares its partition's hash tag,
// so one RENAME per partition, all four in one batch, publishes every entry at once onto
// `<prefix>:trades:{p<k>}`: the consumers then find all of them there, instead of following a
// producer's pace.

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <hiredis/hiredis.h>

#include <tradeagg/pipeline.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/redis/stream_reply.hpp>
#include <tradeagg/runtime_config.hpp>
#include <tradeagg/sink/memory_sink.hpp>
#include <tradeagg/trade.hpp>

#include "redis_bench_settings.hpp"
#include "redis_cluster.hpp"  // tests/: the 3-master cluster the stream tests use
#include "redis_keyspace.hpp" // tests/: Redis compared with a memory_sink
#include "stream.hpp"

namespace bench {

inline constexpr std::string_view stream_group = "tradeagg";
/// XADDs per batch while staging.
inline constexpr std::size_t stage_batch = 8'192;

/// The stream benchmarks' cluster: 3 masters on free 127.0.0.1 ports, started on the first call
/// (so listing or filtering benchmarks starts nothing) and stopped when the process exits. Never
/// the Redis at REDIS_ADDR: every run empties every master. Throws if it cannot be started.
inline tradeagg::testing::redis_cluster& stream_cluster() {
    static tradeagg::testing::redis_cluster cluster(3);
    return cluster;
}

inline tradeagg::redis::cluster_client::options stream_client_options() {
    tradeagg::testing::redis_cluster& cluster = stream_cluster();
    tradeagg::redis::cluster_client::options o;
    for (std::size_t i = 0; i < cluster.size(); ++i) {
        o.seeds.push_back({"127.0.0.1", cluster.node(i).port(), {}});
    }
    o.timeout = std::chrono::seconds(10);
    return o;
}

/// Runs `cmds`; throws std::runtime_error naming the first command that failed.
inline void run_checked(tradeagg::redis::cluster_client& client,
                        std::span<const tradeagg::redis::cluster_command> cmds,
                        std::vector<tradeagg::redis::command_result>& results) {
    client.run(cmds, results);
    for (std::size_t i = 0; i < cmds.size(); ++i) {
        if (!results[i].ok()) {
            const std::vector<std::string>& a = cmds[i].args;
            throw std::runtime_error(a[0] + (a.size() > 1 ? " " + a[1] : std::string()) + ": " +
                                     results[i].error);
        }
    }
}

/// Empties every master: the previous run's streams, leases, epochs, instances and aggregates.
inline void empty_cluster() {
    tradeagg::testing::redis_cluster& cluster = stream_cluster();
    for (std::size_t i = 0; i < cluster.size(); ++i) {
        if (const std::string r = cluster.node(i).command({"FLUSHALL"}); r != "OK") {
            throw std::runtime_error("FLUSHALL on node " + std::to_string(i) + ": " + r);
        }
    }
}

inline std::string staging_key(std::size_t partition) {
    return tradeagg::redis::partition_key(key_prefix, "staging", partition);
}

/// A run's trades in the staging streams, not yet published.
struct staged_trades {
    std::size_t total = 0;                                  ///< trades
    std::size_t entry_count = 0;                            ///< entries, over the partitions
    std::array<std::size_t, stream_partitions> entries{};   ///< per partition
    std::array<std::size_t, stream_partitions> trades_in{}; ///< per partition
    /// The id of each partition's last entry ("0-0" if it has none), as XADD returned it.
    std::array<std::string, stream_partitions> last_id;

    /// The share of the trades in the partitions listed in `held` (as stream_consumer_stats
    /// spells them: "0,2").
    [[nodiscard]] double share_of(std::string_view held) const {
        std::size_t sum = 0;
        while (!held.empty()) {
            const std::size_t comma = std::min(held.find(','), held.size());
            std::size_t k = 0;
            const auto [end, ec] = std::from_chars(held.data(), held.data() + comma, k);
            if (ec == std::errc{} && end == held.data() + comma && k < stream_partitions) {
                sum += trades_in[k];
            }
            held.remove_prefix(std::min(comma + 1, held.size()));
        }
        return static_cast<double>(sum) / static_cast<double>(total);
    }
};

/// Where `stage` appends: to the staging streams (a consumer group made at the start of each),
/// or to the partition streams themselves, after what they hold.
enum class stage_to { staging, live };

/// Appends `count` trades of `s` from `first` on to the streams of their partitions, in order,
/// an entry each or, with `entry_trades` > 1, packed into entries of up to that many
/// (stream_entry.hpp). Throws on any failure.
inline staged_trades stage(tradeagg::redis::cluster_client& client, const synthetic::stream& s,
                           std::size_t count, std::size_t entry_trades = 1, std::size_t first = 0,
                           stage_to where = stage_to::staging) {
    staged_trades out;
    out.total = count;
    out.last_id.fill("0-0");
    std::array<std::string, stream_partitions> keys;
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        keys[k] = where == stage_to::staging ? staging_key(k)
                                             : tradeagg::redis::stream_key(key_prefix, k);
    }
    std::vector<tradeagg::redis::cluster_command> batch;
    std::vector<std::size_t> partition; // of each command of the batch
    std::vector<tradeagg::redis::command_result> results;
    const auto send = [&] {
        run_checked(client, batch, results);
        for (std::size_t i = 0; i < batch.size(); ++i) {
            const redisReply* r = results[i].reply.get();
            if (r->type != REDIS_REPLY_STRING) {
                throw std::runtime_error("XADD " + batch[i].args[1] + ": not an entry id");
            }
            // Replies come in order per node, so the last one is the partition's last entry.
            out.last_id[partition[i]].assign(r->str, r->len);
        }
        batch.clear();
        partition.clear();
    };
    const auto add = [&](tradeagg::redis::cluster_command c, std::size_t k) {
        batch.push_back(std::move(c));
        partition.push_back(k);
        ++out.entry_count;
        ++out.entries[k];
        if (batch.size() >= std::max<std::size_t>(stage_batch / entry_trades, 1)) {
            send();
        }
    };
    std::array<std::string, stream_partitions> packed; // per partition: its entry being filled
    std::array<std::size_t, stream_partitions> packed_count{};
    const auto add_packed = [&](std::size_t k) {
        add({{"XADD", keys[k], "*", std::string(tradeagg::redis::packed_format_field),
              std::string(tradeagg::redis::packed_format),
              std::string(tradeagg::redis::packed_trades_field), std::move(packed[k])},
             tradeagg::redis::key_slot(keys[k])},
            k);
        packed[k].clear();
        packed_count[k] = 0;
    };
    const std::vector<tradeagg::trade>& trades = s.trades();
    for (std::size_t n = first; n < first + count; ++n) {
        const tradeagg::trade& t = trades[n];
        const tradeagg::trade_view v{
            s.names()[t.token], t.price, t.quantity, t.taker, t.ts_ms, t.id};
        const std::size_t k = tradeagg::redis::partition_of(v.token, stream_partitions);
        ++out.trades_in[k];
        if (entry_trades > 1) {
            tradeagg::redis::append_packed(packed[k], v);
            if (++packed_count[k] == entry_trades) {
                add_packed(k);
            }
            continue;
        }
        tradeagg::redis::cluster_command c{{"XADD", keys[k], "*"},
                                           tradeagg::redis::key_slot(keys[k])};
        tradeagg::redis::for_each_field(v, [&c](std::string_view field, std::string_view text) {
            c.args.emplace_back(field);
            c.args.emplace_back(text);
        });
        add(std::move(c), k);
    }
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        if (packed_count[k] != 0) {
            add_packed(k);
        }
    }
    send();
    if (where == stage_to::live) {
        return out;
    }
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        batch.push_back({{"XGROUP", "CREATE", keys[k], std::string(stream_group), "0", "MKSTREAM"},
                         tradeagg::redis::key_slot(keys[k])});
    }
    run_checked(client, batch, results);
    return out;
}

/// Moves every staging stream, with its group, onto its partition's stream (replacing the empty
/// one a consumer may have created): one RENAME per partition, in one batch. The consumer groups
/// of the streams replaced (a consumer reads through one of its own per lease epoch) are created
/// on the staging streams first, at their start, so that the consumers read on unaware.
inline void publish(tradeagg::redis::cluster_client& client) {
    std::vector<tradeagg::redis::cluster_command> infos;
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        const std::string live = tradeagg::redis::stream_key(key_prefix, k);
        infos.push_back({{"XINFO", "GROUPS", live}, tradeagg::redis::key_slot(live)});
    }
    std::vector<tradeagg::redis::command_result> groups;
    client.run(infos, groups); // a partition no consumer has created yet answers an error
    std::vector<tradeagg::redis::cluster_command> creates;
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        if (!groups[k].ok()) {
            continue;
        }
        for (const auto& g :
             tradeagg::redis::detail::consumer_groups(groups[k].reply.get(), stream_group)) {
            if (g.name != stream_group) { // the staging stream has that one
                creates.push_back({{"XGROUP", "CREATE", staging_key(k), g.name, "0"},
                                   tradeagg::redis::key_slot(staging_key(k))});
            }
        }
    }
    if (!creates.empty()) {
        run_checked(client, creates, groups);
    }
    std::vector<tradeagg::redis::cluster_command> renames;
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        const std::string to = tradeagg::redis::stream_key(key_prefix, k);
        renames.push_back({{"RENAME", staging_key(k), to}, tradeagg::redis::key_slot(to)});
    }
    std::vector<tradeagg::redis::command_result> results;
    run_checked(client, renames, results);
}

/// The value of `name` in a reply that is a flat list of field, value; null if absent.
inline const redisReply* field_of(const redisReply* fields, std::string_view name) {
    if (fields == nullptr || fields->type != REDIS_REPLY_ARRAY) {
        return nullptr;
    }
    for (std::size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply* f = fields->element[i];
        if (f->type == REDIS_REPLY_STRING && std::string_view(f->str, f->len) == name) {
            return fields->element[i + 1];
        }
    }
    return nullptr;
}

/// Empty if, on every partition's stream, the group has delivered the last entry and has
/// nothing pending; otherwise the first partition that has not, and how far it is.
inline std::string unacknowledged(tradeagg::redis::cluster_client& client,
                                  const staged_trades& staged) {
    std::vector<tradeagg::redis::cluster_command> cmds;
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        const std::string key = tradeagg::redis::stream_key(key_prefix, k);
        cmds.push_back({{"XINFO", "GROUPS", key}, tradeagg::redis::key_slot(key)});
    }
    std::vector<tradeagg::redis::command_result> results;
    run_checked(client, cmds, results);
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        // The consumers' groups: `stream_group` and `stream_group@<epoch>` (one per lease
        // acquisition; a new holder destroys the former ones once it has rebuilt).
        const redisReply* groups = results[k].reply.get();
        const auto ours = tradeagg::redis::detail::consumer_groups(groups, stream_group);
        long long pending = 0;
        for (std::size_t g = 0; groups->type == REDIS_REPLY_ARRAY && g < groups->elements; ++g) {
            const redisReply* n = field_of(groups->element[g], "name");
            const redisReply* p = field_of(groups->element[g], "pending");
            const bool listed = n != nullptr && std::any_of(ours.begin(), ours.end(), [&](auto& o) {
                                    return o.name == std::string_view(n->str, n->len);
                                });
            if (listed && p != nullptr && p->type == REDIS_REPLY_INTEGER) {
                pending += p->integer;
            }
        }
        if (ours.empty()) {
            return "partition " + std::to_string(k) + ": no group " + std::string(stream_group);
        }
        tradeagg::redis::stream_id delivered{};
        for (const auto& o : ours) {
            delivered = std::max(delivered, o.delivered);
        }
        if (pending != 0 || delivered.text() != staged.last_id[k]) {
            return "partition " + std::to_string(k) + ": " + std::to_string(pending) +
                   " pending, delivered up to " + delivered.text() + " of " + staged.last_id[k];
        }
    }
    return {};
}

/// The first `count` trades of `s` through a memory pipeline, and the cluster compared with it.
/// Empty if they agree, otherwise what differs; `keys` is set to the keys compared.
inline std::string check_cluster(const synthetic::stream& s, std::size_t count, std::size_t& keys) {
    tradeagg::pipeline<tradeagg::throughput_policy, tradeagg::memory_sink> ref{
        tradeagg::runtime_config{}};
    const std::vector<tradeagg::trade>& trades = s.intern_into(ref);
    ref.start();
    {
        auto producer = ref.make_producer();
        for (std::size_t n = 0; n < count; ++n) {
            (void)producer.push(trades[n]);
        }
    }
    ref.stop();
    const tradeagg::testing::mismatch_log log = tradeagg::testing::compare_cluster_with(
        stream_cluster().node(0).port(), ref.sink(), std::string(key_prefix),
        tradeagg::throughput_policy::intervals, &keys);
    if (log.count != 0) {
        return std::to_string(log.count) + " differences between the cluster and the reference, " +
               "e.g. " + log.first.front();
    }
    return {};
}

} // namespace bench
