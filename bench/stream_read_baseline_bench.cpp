// BM_stream_read_baseline: Redis Streams alone, the ceiling of BM_stream_ingest, in the same
// process, on the 3-master cluster of `stream_cluster()` and from the same staged trades
// (partition_streams.hpp). One thread reads the published streams (XREADGROUP COUNT 4096 on
// every partition with entries left, one batch, one pipeline per master), parses every entry
// into a trade as the consumer does, and acknowledges them (XACK, 1,000 ids a command, one
// batch), round after round; no lease, no aggregation, no writes. (The consumer reads through a
// script that checks its lease first, and writes and acknowledges once per round as here.)
//
// Checks, outside the clock: every entry was read and acknowledged once. A difference is a
// benchmark error.

#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>
#include <hiredis/hiredis.h>

#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/redis/stream_reply.hpp>
#include <tradeagg/trade.hpp>

#include "bench_stream.hpp"
#include "partition_streams.hpp"
#include "redis_bench_settings.hpp"
#include "redis_benchmarks.hpp"

namespace bench {
namespace {

using tradeagg::redis::cluster_client;
using tradeagg::redis::cluster_command;
using tradeagg::redis::command_result;

/// Ids per XACK, as the consumer sends them.
constexpr std::size_t stream_ack_chunk = 1'000;

void bm_stream_read_baseline(benchmark::State& state, std::size_t entry_trades) {
    const std::string name = stream_read_baseline_name(entry_trades);
    std::size_t total = 0;
    std::uint64_t read_commands = 0;
    double seconds = 0.0;
    const bool ran = run_or_fail(state, name, [&] {
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
            const staged_trades staged = stage(client, s, stream_trades, entry_trades);
            publish(client);
            total = staged.total;
            const std::size_t entry_total = staged.entry_count;

            std::array<std::size_t, stream_partitions> read{};
            std::size_t read_total = 0;
            std::size_t acked = 0;
            std::size_t trades_read = 0;
            double price_sum = 0.0; // keeps the parsing from being optimized away
            tradeagg::redis::detail::stream_entries entries;
            std::vector<cluster_command> reads;
            std::vector<std::size_t> partition; // of each read
            std::vector<cluster_command> acks;
            std::vector<command_result> read_replies;
            std::vector<command_result> ack_replies;
            read_commands = 0;
            const auto t0 = bench_clock::now();
            while (read_total < entry_total) {
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
                    entries.clear();
                    tradeagg::redis::detail::parse_entries(list, entries);
                    if (entries.entries.size() != list->elements) {
                        throw std::runtime_error(keys[k] + ": an entry is not [id, fields]");
                    }
                    for (const tradeagg::redis::detail::stream_entry_view& e : entries.entries) {
                        if (!e.why.empty()) {
                            throw std::runtime_error(keys[k] + " entry " + std::string(e.id_text) +
                                                     ": invalid " + std::string(e.why));
                        }
                        for (std::size_t t = e.first; t < e.first + e.count; ++t) {
                            price_sum += entries.trades[t].price;
                        }
                        trades_read += e.count;
                        ack.args.emplace_back(e.id_text);
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

            if (read_total != entry_total || acked != entry_total || trades_read != total) {
                skip_with_error(state, name + ": read " + std::to_string(read_total) +
                                           " and acknowledged " + std::to_string(acked) +
                                           " entries of " + std::to_string(entry_total) +
                                           ", holding " + std::to_string(trades_read) +
                                           " trades of " + std::to_string(total));
                break;
            }
            if (check_failed(state, name, unacknowledged(client, staged))) {
                break;
            }
        }
    });
    if (!ran) {
        return;
    }
    report_trades(state, total, seconds);
    state.counters["read_commands"] = static_cast<double>(read_commands);
    state.counters["entry_trades"] = static_cast<double>(entry_trades);
}

} // namespace

void register_stream_read_baseline() {
    for (const std::size_t entry_trades : {std::size_t{1}, stream_packed_entry_trades}) {
        configure(benchmark::RegisterBenchmark(stream_read_baseline_name(entry_trades).c_str(),
                                               bm_stream_read_baseline, entry_trades));
    }
}

} // namespace bench
