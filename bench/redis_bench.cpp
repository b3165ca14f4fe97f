// tradeagg's Redis benchmark: writing trade aggregates to a real Redis.
//
// The baselines are what one writes without this library: every trade becomes Redis work of
// its own, for each of the seven candles it falls in (1s 1m 5m 15m 1h 4h 1d, the intervals of
// tradeagg::throughput_policy), into hashes
//
//     tradeagg:{<token>}:candle:<interval>:<open_time_ms>
//
// with the fields open high low close volume quote_volume trades taker_buy_volume
// taker_buy_quote_volume vwap open_time close_time first_trade_id last_trade_id. The braces
// are a cluster hash tag: every key of one token lands in the same slot, so one script may
// touch all of them.
//
//   BM_redis_per_trade_lua      one EVALSHA per trade (the script is loaded once with SCRIPT
//                               LOAD); the script updates the seven hashes, reading high and
//                               low to keep them exact.
//   BM_redis_per_trade_hincr    no script: HSETNX, HINCRBYFLOAT, HINCRBY and HSET per trade per
//                               interval (about 49 commands per trade).
//   BM_redis_end_to_end/<policy>  the library's Redis sink behind a pipeline (see below):
//                               trades persisted per second, and the lag to visibility.
//   BM_stream_read_baseline     partition-stream ingest's ceiling: one thread XREADGROUPs,
//                               parses and XACKs 4 partition streams on a Redis Cluster; no
//                               aggregation, no writes.
//   BM_stream_ingest/instances:<n>  1 or 2 stream_consumer<throughput_policy> instances in this
//                               process consume the same 4 streams, aggregate, write every
//                               token's hashes with the fenced script, and acknowledge;
//                               reading 4,096 entries per partition per round (the default),
//                               and, as .../read_count:32768, eight times as many.
//
// Both per-trade baselines pipeline 100 commands deep on one blocking hiredis connection: append
// 100 commands, then read their 100 replies, each checked not to be an error.
//
// The BM_redis_* trades are the stream every benchmark consumes (stream.hpp: 1,048,576 trades,
// 10,000 tokens, Zipf popularity), sent in order from its start. Each iteration runs for a fixed
// wall time (TRADEAGG_REDIS_BENCH_SECONDS, default 2; it also stops at the end of the stream)
// on a database emptied with FLUSHDB first; the time reported is that window, from the first
// command appended to the last reply read (manual time), and the counters trades_per_second
// and commands_per_second are computed over it. Outside the clock, each run reads back the
// seven candles of the last trade's token that hold that trade and checks them against what
// the client sent (trades, open, high, low, close, volume, quote_volume); a mismatch is a
// benchmark error.
//
// The stream benchmarks (section BM_stream_* below) take the first TRADEAGG_STREAM_BENCH_TRADES
// trades of the same stream (default 150,000; at most its 1,048,576) over its 10,000 tokens,
// partitioned among 4 streams as producers do (partition_of), and run once over them per
// iteration: the clock runs from the moment every entry is in its stream until every entry is
// acknowledged (manual time); trades_per_second is computed over it, token_writes_per_second too
// for the consumers. They always use a Redis Cluster of their own, 3 masters on free 127.0.0.1
// ports (tests/redis_cluster.hpp; needs redis-cli), started on first use and stopped at exit,
// whatever REDIS_ADDR says; every master is FLUSHALL'd before each run. Outside the clock, each
// run is checked: every entry read and acknowledged once, and after ingest the cluster holds
// exactly what a memory pipeline given the same trades holds; a difference is a benchmark error.
// The instances, the benchmark's thread and the three redis-servers share the machine's cores:
// on a small machine two instances contend with Redis for CPU rather than adding their own.
//
// Which Redis, for BM_redis_*: REDIS_ADDR (host:port, with REDIS_PASSWORD and REDIS_DB when set, as
// the sink reads them) if set; its database is FLUSHDB'd before every run, so never point it at
// data you want to keep. Otherwise the benchmark starts a redis-server of its own on a free
// 127.0.0.1 port (no persistence, in a temporary directory), on first use, and stops it at exit.
//
// Run: bench/run (prints "Redis" and "Streams" tables after the main one), or
//   tradeagg_redis_bench --benchmark_repetitions=5
//   tradeagg_redis_bench --benchmark_filter=BM_stream --benchmark_repetitions=3
// A quick smoke run:
//   TRADEAGG_REDIS_BENCH_SECONDS=0.2 TRADEAGG_STREAM_BENCH_TRADES=20000 tradeagg_redis_bench
//
// Where things are: redis_per_trade_bench.cpp (its writers in per_trade_writers.hpp, its keys in
// candle_keys.hpp) and redis_end_to_end_bench.cpp (its probe in lag_probe.hpp); what the
// benchmarks share, in redis_bench_settings.hpp (the settings above), redis_benchmarks.hpp
// (registration, errors), redis_target.hpp (which Redis) and pipelined_connection.hpp; the stream
// benchmarks and main in this file.

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>
#include <hiredis/hiredis.h>

#include <tradeagg/pipeline.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/stream_consumer.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/runtime_config.hpp>
#include <tradeagg/sink/memory_sink.hpp>
#include <tradeagg/trade.hpp>

#include "bench_stream.hpp"
#include "redis_bench_settings.hpp"
#include "redis_benchmarks.hpp"
#include "redis_cluster.hpp"  // tests/: the 3-master cluster the stream tests use
#include "redis_keyspace.hpp" // tests/: Redis compared with a memory_sink

namespace bench {
namespace {

// ---------------------------------------------------------------------------------------------
// BM_stream_read_baseline and BM_stream_ingest/instances:<n>: partition-stream ingest
// (tradeagg/redis/stream_consumer.hpp) on the 3-master cluster of `stream_cluster()`.
//
// Every run starts from a cluster emptied with FLUSHALL on every master. Outside the clock, the
// first `stream_trades` trades of the stream are appended (pipelined XADD through
// `cluster_client`) to one staging stream per partition, `<prefix>:staging:{p<k>}`, whose
// consumer group is created at its start. The staging stream shares its partition's hash tag,
// so one RENAME per partition, all four in one batch, publishes every entry at once onto
// `<prefix>:trades:{p<k>}`: the consumers then find all of them there, instead of following a
// producer's pace.
//
// BM_stream_ingest: the consumers start on empty streams, and the clock starts only once each
// holds its share of the partitions (four for one instance, two each for two). They need a
// balance round for that: an instance that joins finds every lease taken until the first one
// gives up its surplus at its next round (every third of the lease TTL), and a clock running
// through that would time the lease protocol, not ingest. The clock runs from the RENAME batch
// until Redis has acknowledged every entry: the instances' counts of acknowledged entries add
// up to the total, every instance still holds partitions, and XINFO GROUPS confirms it (nothing
// pending, last-delivered id = the last entry's, on every stream).
//
// BM_stream_read_baseline: Redis Streams alone, the ceiling of the above, in the same process:
// one thread reads the published streams (XREADGROUP COUNT 4096 on every partition with entries
// left, one batch, one pipeline per master), parses every entry into a trade as the consumer
// does, and acknowledges them (XACK, 1,000 ids a command, one batch), round after round; no
// lease, no aggregation, no writes. (The consumer reads through a script that checks its lease
// first, and writes and acknowledges once per round as here.)
//
// Checks, outside the clock: after the baseline, every entry was read and acknowledged once;
// after an ingest run, no entry was invalid, both instances stopped cleanly, and the cluster
// holds exactly what a memory pipeline fed the same trades holds (every candle, rolling window
// and latest trade of every token, and no other aggregate key). A difference is a benchmark
// error, and so is a lease lost during a run, seen as soon as it happens: that run would time a
// takeover, not ingest (and see `stream_lease_ttl` for why it might never end).
//
// Counters of BM_stream_ingest, besides trades_per_second: token_writes_per_second (token
// writes acknowledged: one script per token changed in a round, over its latest, rolling and
// candle hashes), rounds, write_retries, entries_replayed (read again by a rebuild: 0 unless a
// read lost its reply), largest_instance_share (the share of the trades in the partitions of
// the busiest instance: two instances can be at most 1 / it times as fast as one) and
// keys_compared (by the check).

using tradeagg::redis::cluster_client;
using tradeagg::redis::cluster_command;
using tradeagg::redis::command_result;

constexpr std::string_view stream_group = "tradeagg";
/// A larger round, run too: a token changed several times in a round is written once, so
/// larger rounds write less per trade (and hold each entry longer before it is acknowledged).
constexpr std::size_t stream_read_count_large = 32'768;

/// "BM_stream_ingest/instances:<n>", and "/read_count:<n>" when not the default.
std::string stream_ingest_name(std::size_t instances, std::size_t read_count) {
    return "BM_stream_ingest/instances:" + std::to_string(instances) +
           (read_count == stream_read_count ? "" : "/read_count:" + std::to_string(read_count));
}
/// Ids per XACK, as the consumer sends them.
constexpr std::size_t stream_ack_chunk = 1'000;
/// XADDs per batch while staging.
constexpr std::size_t stage_batch = 8'192;

/// The stream benchmarks' cluster: 3 masters on free 127.0.0.1 ports, started on the first call
/// (so listing or filtering benchmarks starts nothing) and stopped when the process exits. Never
/// the Redis at REDIS_ADDR: every run empties every master. Throws if it cannot be started.
tradeagg::testing::redis_cluster& stream_cluster() {
    static tradeagg::testing::redis_cluster cluster(3);
    return cluster;
}

cluster_client::options stream_client_options() {
    tradeagg::testing::redis_cluster& cluster = stream_cluster();
    cluster_client::options o;
    for (std::size_t i = 0; i < cluster.size(); ++i) {
        o.seeds.push_back({"127.0.0.1", cluster.node(i).port(), {}});
    }
    o.timeout = std::chrono::seconds(10);
    return o;
}

/// Runs `cmds`; throws std::runtime_error naming the first command that failed.
void run_checked(cluster_client& client, std::span<const cluster_command> cmds,
                 std::vector<command_result>& results) {
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
void empty_cluster() {
    tradeagg::testing::redis_cluster& cluster = stream_cluster();
    for (std::size_t i = 0; i < cluster.size(); ++i) {
        if (const std::string r = cluster.node(i).command({"FLUSHALL"}); r != "OK") {
            throw std::runtime_error("FLUSHALL on node " + std::to_string(i) + ": " + r);
        }
    }
}

std::string staging_key(std::size_t partition) {
    return tradeagg::redis::partition_key(key_prefix, "staging", partition);
}

/// A run's trades in the staging streams, not yet published.
struct staged_trades {
    std::size_t total = 0;
    std::array<std::size_t, stream_partitions> entries{}; ///< per partition
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
                sum += entries[k];
            }
            held.remove_prefix(std::min(comma + 1, held.size()));
        }
        return static_cast<double>(sum) / static_cast<double>(total);
    }
};

/// Appends the first `count` trades of `s` to the staging streams of their partitions, in
/// order, and creates the consumer group at the start of each. Throws on any failure.
staged_trades stage(cluster_client& client, const synthetic::stream& s, std::size_t count) {
    staged_trades out;
    out.total = count;
    out.last_id.fill("0-0");
    std::array<std::string, stream_partitions> keys;
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        keys[k] = staging_key(k);
    }
    std::vector<cluster_command> batch;
    std::vector<std::size_t> partition; // of each command of the batch
    std::vector<command_result> results;
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
    const std::vector<tradeagg::trade>& trades = s.trades();
    for (std::size_t n = 0; n < count; ++n) {
        const tradeagg::trade& t = trades[n];
        const tradeagg::trade_view v{
            s.names()[t.token], t.price, t.quantity, t.taker, t.ts_ms, t.id};
        const std::size_t k = tradeagg::redis::partition_of(v.token, stream_partitions);
        cluster_command c{{"XADD", keys[k], "*"}, tradeagg::redis::key_slot(keys[k])};
        tradeagg::redis::for_each_field(v, [&c](std::string_view field, std::string_view text) {
            c.args.emplace_back(field);
            c.args.emplace_back(text);
        });
        batch.push_back(std::move(c));
        partition.push_back(k);
        ++out.entries[k];
        if (batch.size() == stage_batch) {
            send();
        }
    }
    send();
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        batch.push_back({{"XGROUP", "CREATE", keys[k], std::string(stream_group), "0", "MKSTREAM"},
                         tradeagg::redis::key_slot(keys[k])});
    }
    run_checked(client, batch, results);
    return out;
}

/// Moves every staging stream, with its group, onto its partition's stream (replacing the empty
/// one a consumer may have created): one RENAME per partition, in one batch.
void publish(cluster_client& client) {
    std::vector<cluster_command> renames;
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        const std::string to = tradeagg::redis::stream_key(key_prefix, k);
        renames.push_back({{"RENAME", staging_key(k), to}, tradeagg::redis::key_slot(to)});
    }
    std::vector<command_result> results;
    run_checked(client, renames, results);
}

/// The value of `name` in a reply that is a flat list of field, value; null if absent.
const redisReply* field_of(const redisReply* fields, std::string_view name) {
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
std::string unacknowledged(cluster_client& client, const staged_trades& staged) {
    std::vector<cluster_command> cmds;
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        const std::string key = tradeagg::redis::stream_key(key_prefix, k);
        cmds.push_back({{"XINFO", "GROUPS", key}, tradeagg::redis::key_slot(key)});
    }
    std::vector<command_result> results;
    run_checked(client, cmds, results);
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        const redisReply* groups = results[k].reply.get();
        const redisReply* group = nullptr;
        for (std::size_t g = 0; groups->type == REDIS_REPLY_ARRAY && g < groups->elements; ++g) {
            const redisReply* n = field_of(groups->element[g], "name");
            if (n != nullptr && n->type == REDIS_REPLY_STRING &&
                std::string_view(n->str, n->len) == stream_group) {
                group = groups->element[g];
            }
        }
        const redisReply* pending = field_of(group, "pending");
        const redisReply* last = field_of(group, "last-delivered-id");
        if (pending == nullptr || pending->type != REDIS_REPLY_INTEGER || last == nullptr ||
            last->type != REDIS_REPLY_STRING) {
            return "partition " + std::to_string(k) + ": no group " + std::string(stream_group);
        }
        const std::string_view delivered(last->str, last->len);
        if (pending->integer != 0 || delivered != staged.last_id[k]) {
            return "partition " + std::to_string(k) + ": " + std::to_string(pending->integer) +
                   " pending, delivered up to " + std::string(delivered) + " of " +
                   staged.last_id[k];
        }
    }
    return {};
}

void bm_stream_read_baseline(benchmark::State& state) {
    const std::string name = "BM_stream_read_baseline";
    std::size_t total = 0;
    std::uint64_t read_commands = 0;
    double seconds = 0.0;
    try {
        const synthetic::stream& s = bench_stream();
        std::array<std::string, stream_partitions> keys;
        for (std::size_t k = 0; k < stream_partitions; ++k) {
            keys[k] = tradeagg::redis::stream_key(key_prefix, k);
        }
        const std::string count_text = std::to_string(stream_read_count);
        for (auto _ : state) {
            // Outside the clock: an empty cluster, the trades staged and published.
            empty_cluster();
            cluster_client client(stream_client_options());
            const staged_trades staged = stage(client, s, stream_trades);
            publish(client);
            total = staged.total;

            std::array<std::size_t, stream_partitions> read{};
            std::size_t read_total = 0;
            std::size_t acked = 0;
            double price_sum = 0.0; // keeps the parsing from being optimized away
            std::vector<cluster_command> reads;
            std::vector<std::size_t> partition; // of each read
            std::vector<cluster_command> acks;
            std::vector<command_result> read_replies;
            std::vector<command_result> ack_replies;
            read_commands = 0;
            const auto t0 = bench_clock::now();
            while (read_total < total) {
                reads.clear();
                partition.clear();
                for (std::size_t k = 0; k < stream_partitions; ++k) {
                    if (read[k] < staged.entries[k]) {
                        reads.push_back({{"XREADGROUP", "GROUP", std::string(stream_group),
                                          "baseline", "COUNT", count_text, "STREAMS", keys[k], ">"},
                                         tradeagg::redis::key_slot(keys[k])});
                        partition.push_back(k);
                    }
                }
                run_checked(client, reads, read_replies);
                read_commands += reads.size();
                acks.clear();
                for (std::size_t i = 0; i < reads.size(); ++i) {
                    const std::size_t k = partition[i];
                    // [[key, [[id, [field, value, ...]], ...]]]; nil when nothing is new.
                    const redisReply* r = read_replies[i].reply.get();
                    const redisReply* list = r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
                                                     r->element[0]->type == REDIS_REPLY_ARRAY &&
                                                     r->element[0]->elements == 2
                                                 ? r->element[0]->element[1]
                                                 : nullptr;
                    if (list == nullptr || list->type != REDIS_REPLY_ARRAY || list->elements == 0) {
                        throw std::runtime_error(keys[k] + ": nothing to read after " +
                                                 std::to_string(read[k]) + " of " +
                                                 std::to_string(staged.entries[k]) + " entries");
                    }
                    cluster_command ack{{"XACK", keys[k], std::string(stream_group)},
                                        tradeagg::redis::key_slot(keys[k])};
                    for (std::size_t e = 0; e < list->elements; ++e) {
                        const redisReply* entry = list->element[e];
                        if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
                            entry->element[0]->type != REDIS_REPLY_STRING) {
                            throw std::runtime_error(keys[k] + ": an entry is not [id, fields]");
                        }
                        const std::string_view id(entry->element[0]->str, entry->element[0]->len);
                        std::string_view why;
                        const std::optional<tradeagg::trade_view> t =
                            tradeagg::redis::trade_from_entry(
                                tradeagg::redis::entry_fields(entry->element[1]), why);
                        if (!tradeagg::redis::stream_id::parse(id) || !t) {
                            throw std::runtime_error(keys[k] + " entry " + std::string(id) +
                                                     ": invalid " + std::string(why));
                        }
                        price_sum += t->price;
                        ack.args.emplace_back(id);
                        if (ack.args.size() == 3 + stream_ack_chunk) {
                            acks.push_back(std::move(ack));
                            ack = cluster_command{{"XACK", keys[k], std::string(stream_group)},
                                                  tradeagg::redis::key_slot(keys[k])};
                        }
                    }
                    if (ack.args.size() > 3) {
                        acks.push_back(std::move(ack));
                    }
                    read[k] += list->elements;
                    read_total += list->elements;
                }
                run_checked(client, acks, ack_replies);
                for (const command_result& r : ack_replies) {
                    acked += static_cast<std::size_t>(r.reply->integer);
                }
            }
            const auto t1 = bench_clock::now();
            benchmark::DoNotOptimize(price_sum);
            seconds = seconds_between(t0, t1);
            state.SetIterationTime(seconds);

            if (read_total != total || acked != total) {
                skip_with_error(state, name + ": read " + std::to_string(read_total) +
                                           " and acknowledged " + std::to_string(acked) +
                                           " entries of " + std::to_string(total));
                break;
            }
            if (const std::string left = unacknowledged(client, staged); !left.empty()) {
                skip_with_error(state, name + ": " + left);
                break;
            }
        }
    } catch (const std::exception& e) {
        skip_with_error(state, name + ": " + e.what());
        return;
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(total));
    state.counters["trades_per_second"] = static_cast<double>(total) / seconds;
    state.counters["read_commands"] = static_cast<double>(read_commands);
    state.counters["trades"] = static_cast<double>(total);
}

using bench_consumer = tradeagg::redis::stream_consumer<tradeagg::throughput_policy>;

/// Waits until each consumer holds an equal share of the partitions. Throws after `timeout`,
/// naming what each holds.
void wait_for_shares(const std::vector<std::unique_ptr<bench_consumer>>& consumers,
                     std::chrono::seconds timeout) {
    const std::size_t share = stream_partitions / consumers.size();
    const auto deadline = bench_clock::now() + timeout;
    for (;;) {
        std::string held;
        bool settled = true;
        for (const auto& c : consumers) {
            const tradeagg::redis::stream_consumer_stats st = c->stats();
            settled = settled && st.partitions_held == share;
            held += (held.empty() ? "" : "; ") + ("[" + st.held + "]") +
                    (st.last_error.empty() ? "" : " " + st.last_error);
        }
        if (settled) {
            return;
        }
        if (bench_clock::now() > deadline) {
            throw std::runtime_error("the instances did not settle on " + std::to_string(share) +
                                     " partitions each: they hold " + held);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

/// The first `count` trades of `s` through a memory pipeline, and the cluster compared with it.
/// Empty if they agree, otherwise what differs; `keys` is set to the keys compared.
std::string check_cluster(const synthetic::stream& s, std::size_t count, std::size_t& keys) {
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

void bm_stream_ingest(benchmark::State& state, std::size_t instances, std::size_t read_count) {
    const std::string name = stream_ingest_name(instances, read_count);
    std::size_t total = 0;
    double seconds = 0.0;
    double busiest_share = 0.0;                 // of the trades, read by the busiest instance
    tradeagg::redis::stream_consumer_stats sum; // over the instances, when the clock stopped
    std::size_t keys = 0;
    try {
        const synthetic::stream& s = bench_stream();
        const tradeagg::resolved_config<tradeagg::throughput_policy> resolved =
            tradeagg::resolve<tradeagg::throughput_policy>(tradeagg::runtime_config{});
        for (auto _ : state) {
            // Outside the clock: an empty cluster, the trades staged, the instances started and
            // settled on their shares of the (still empty) partition streams.
            empty_cluster();
            cluster_client client(stream_client_options());
            const staged_trades staged = stage(client, s, stream_trades);
            total = staged.total;
            std::vector<std::unique_ptr<bench_consumer>> consumers;
            for (std::size_t i = 0; i < instances; ++i) {
                tradeagg::redis::stream_consumer_config cfg;
                cfg.key_prefix = std::string(key_prefix);
                cfg.partitions = stream_partitions;
                cfg.instance = "bench-" + std::to_string(i);
                cfg.group = std::string(stream_group);
                cfg.lease_ttl = stream_lease_ttl;
                cfg.read_count = read_count;
                cfg.redis = stream_client_options();
                consumers.push_back(std::make_unique<bench_consumer>(std::move(cfg), resolved));
            }
            for (const auto& c : consumers) {
                c->start();
            }
            wait_for_shares(consumers, std::chrono::seconds(30));
            busiest_share = 0.0;
            for (const auto& c : consumers) {
                busiest_share = std::max(busiest_share, staged.share_of(c->stats().held));
            }

            const auto t0 = bench_clock::now();
            publish(client);
            // Polls the instances' counts (cheap: a mutex each) and asks Redis only once they
            // add up, so the polling itself takes next to nothing from the run.
            const auto deadline = t0 + std::chrono::minutes(10);
            for (;;) {
                std::size_t acked = 0;
                bool all_hold = true;
                for (const auto& c : consumers) {
                    const tradeagg::redis::stream_consumer_stats st = c->stats();
                    if (st.lost != 0) {
                        throw std::runtime_error("an instance lost a lease during the run: " +
                                                 st.last_error);
                    }
                    acked += st.entries_acked;
                    all_hold = all_hold && st.partitions_held > 0;
                }
                if (acked >= total && all_hold && unacknowledged(client, staged).empty()) {
                    break;
                }
                if (bench_clock::now() > deadline) {
                    throw std::runtime_error("not every entry acknowledged within 10 minutes: " +
                                             unacknowledged(client, staged));
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
            const auto t1 = bench_clock::now();
            seconds = seconds_between(t0, t1);
            state.SetIterationTime(seconds);

            sum = {};
            for (const auto& c : consumers) {
                const tradeagg::redis::stream_consumer_stats st = c->stats();
                sum.rounds += st.rounds;
                sum.entries_replayed += st.entries_replayed;
                sum.entries_invalid += st.entries_invalid;
                sum.token_writes += st.token_writes;
                sum.write_retries += st.write_retries;
                if (!st.last_error.empty()) {
                    sum.last_error = st.last_error;
                }
            }
            bool clean = true;
            for (const auto& c : consumers) {
                clean = c->stop(std::chrono::seconds(10)) && clean;
            }
            if (!clean || sum.entries_invalid != 0) {
                skip_with_error(state, name + ": " + std::to_string(sum.entries_invalid) +
                                           " invalid entries, or writes left at stop; " +
                                           sum.last_error);
                break;
            }
            if (const std::string wrong = check_cluster(s, total, keys); !wrong.empty()) {
                skip_with_error(state, name + ": " + wrong);
                break;
            }
        }
    } catch (const std::exception& e) {
        skip_with_error(state, name + ": " + e.what());
        return;
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(total));
    state.counters["trades_per_second"] = static_cast<double>(total) / seconds;
    state.counters["token_writes_per_second"] = static_cast<double>(sum.token_writes) / seconds;
    state.counters["token_writes"] = static_cast<double>(sum.token_writes);
    state.counters["rounds"] = static_cast<double>(sum.rounds);
    state.counters["write_retries"] = static_cast<double>(sum.write_retries);
    state.counters["entries_replayed"] = static_cast<double>(sum.entries_replayed);
    state.counters["largest_instance_share"] = busiest_share;
    state.counters["keys_compared"] = static_cast<double>(keys);
    state.counters["trades"] = static_cast<double>(total);
}

} // namespace

void register_stream_read_baseline() {
    configure(benchmark::RegisterBenchmark("BM_stream_read_baseline", bm_stream_read_baseline));
}

void register_stream_ingest() {
    for (const std::size_t read_count : {stream_read_count, stream_read_count_large}) {
        for (const std::size_t instances : {std::size_t{1}, std::size_t{2}}) {
            configure(
                benchmark::RegisterBenchmark(stream_ingest_name(instances, read_count).c_str(),
                                             bm_stream_ingest, instances, read_count));
        }
    }
}

} // namespace bench

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
        return 1;
    }
    const std::optional<double> seconds = bench::seconds_from_env();
    if (!seconds) {
        std::fprintf(stderr, "tradeagg_redis_bench: TRADEAGG_REDIS_BENCH_SECONDS must be a "
                             "number of seconds in (0, 3600], e.g. 2 or 0.2\n");
        return 2;
    }
    bench::run_seconds = *seconds;
    const std::optional<std::size_t> trades = bench::stream_trades_from_env();
    if (!trades) {
        std::fprintf(stderr,
                     "tradeagg_redis_bench: TRADEAGG_STREAM_BENCH_TRADES must be a number of "
                     "trades in [1000, %zu], e.g. 150000\n",
                     bench::bench_stream_config.trades);
        return 2;
    }
    bench::stream_trades = *trades;
    const char* addr = std::getenv("REDIS_ADDR");
    benchmark::AddCustomContext("redis", addr != nullptr && *addr != '\0'
                                             ? std::string("REDIS_ADDR=") + addr
                                             : std::string("own redis-server on 127.0.0.1"));
    tradeagg::redis::number_text seconds_text;
    seconds_text.set(bench::run_seconds);
    benchmark::AddCustomContext("run_seconds", std::string(seconds_text.view()));
    benchmark::AddCustomContext("pipeline_depth", std::to_string(bench::pipeline_depth));
    benchmark::AddCustomContext("stream_trades", std::to_string(bench::bench_stream_config.trades));
    benchmark::AddCustomContext("stream_tokens", std::to_string(bench::bench_stream_config.tokens));
    benchmark::AddCustomContext("stream_zipf_s", "1.0");
    benchmark::AddCustomContext("streams_cluster", "own 3 masters on 127.0.0.1");
    benchmark::AddCustomContext("streams_partitions", std::to_string(bench::stream_partitions));
    benchmark::AddCustomContext("streams_trades", std::to_string(bench::stream_trades));
    benchmark::AddCustomContext("streams_read_count", std::to_string(bench::stream_read_count));
    benchmark::AddCustomContext("streams_lease_ttl_ms",
                                std::to_string(bench::stream_lease_ttl.count()));

    bench::register_redis_per_trade();
    bench::register_redis_end_to_end();
    bench::register_stream_read_baseline();
    bench::register_stream_ingest();

    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    if (bench::failed_benchmarks != 0) {
        std::fprintf(stderr, "tradeagg_redis_bench: %d benchmark run(s) reported an error\n",
                     bench::failed_benchmarks);
        return 1;
    }
    return 0;
}
