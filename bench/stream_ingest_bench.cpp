// BM_stream_ingest/instances:<n>: partition-stream ingest (tradeagg/redis/stream_consumer.hpp)
// on the 3-master cluster of `stream_cluster()`, from the trades staged there
// (partition_streams.hpp).
//
// The consumers start on empty streams, and the clock starts only once each holds its share of
// the partitions (four for one instance, two each for two). They need a balance round for that:
// an instance that joins finds every lease taken until the first one gives up its surplus at its
// next round (every third of the lease TTL), and a clock running through that would time the
// lease protocol, not ingest. The clock runs from the RENAME batch until Redis has acknowledged
// every entry: the instances' counts of acknowledged entries add up to the total, every instance
// still holds partitions, and XINFO GROUPS confirms it (nothing pending, last-delivered id = the
// last entry's, on every stream).
//
// The instances store partition checkpoints at the default interval (2 s), as a server does;
// `/checkpoints:off` runs one instance without, for what they cost.
//
// Checks, outside the clock: no entry was invalid, both instances stopped cleanly, and the
// cluster holds exactly what a memory pipeline fed the same trades holds (every candle, rolling
// window and latest trade of every token, and no other aggregate key). A difference is a
// benchmark error, and so is a lease lost during a run, seen as soon as it happens: that run
// would time a takeover, not ingest (and see `stream_lease_ttl` for why it might never end).
//
// Counters, besides trades_per_second: token_writes_per_second (token writes acknowledged: one
// script per token changed in a round, over its latest, rolling and candle hashes), rounds,
// write_retries, entries_replayed (read again by a rebuild: 0 unless a read lost its reply),
// largest_instance_share (the share of the trades in the partitions of the busiest instance: two
// instances can be at most 1 / it times as fast as one) and keys_compared (by the check).

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>

#include <tradeagg/pipeline.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/stream_consumer.hpp>
#include <tradeagg/runtime_config.hpp>
#include <tradeagg/sink/memory_sink.hpp>
#include <tradeagg/trade.hpp>

#include "bench_stream.hpp"
#include "partition_streams.hpp"
#include "redis_bench_settings.hpp"
#include "redis_benchmarks.hpp"
#include "redis_keyspace.hpp" // tests/: Redis compared with a memory_sink

namespace bench {
namespace {

using tradeagg::redis::cluster_client;

/// A larger round, run too: a token changed several times in a round is written once, so
/// larger rounds write less per trade (and hold each entry longer before it is acknowledged).
constexpr std::size_t stream_read_count_large = 32'768;

/// "BM_stream_ingest/instances:<n>", "/entry_trades:<n>" for packed entries, and
/// "/read_count:<n>" when not the default.
std::string stream_ingest_name(std::size_t instances, std::size_t read_count,
                               std::size_t entry_trades, bool checkpoints) {
    return "BM_stream_ingest/instances:" + std::to_string(instances) +
           (entry_trades == 1 ? "" : "/entry_trades:" + std::to_string(entry_trades)) +
           (read_count == stream_read_count ? "" : "/read_count:" + std::to_string(read_count)) +
           (checkpoints ? "" : "/checkpoints:off");
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

void bm_stream_ingest(benchmark::State& state, std::size_t instances, std::size_t read_count,
                      std::size_t entry_trades, bool checkpoints) {
    const std::string name = stream_ingest_name(instances, read_count, entry_trades, checkpoints);
    std::size_t total = 0;
    double seconds = 0.0;
    double busiest_share = 0.0;                 // of the trades, read by the busiest instance
    tradeagg::redis::stream_consumer_stats sum; // over the instances, when the clock stopped
    std::size_t keys = 0;
    const bool ran = run_or_fail(state, name, [&] {
        const synthetic::stream& s = bench_stream();
        const tradeagg::resolved_config<tradeagg::throughput_policy> resolved =
            tradeagg::resolve<tradeagg::throughput_policy>(tradeagg::runtime_config{});
        for (auto _ : state) {
            // Outside the clock: an empty cluster, the trades staged, the instances started and
            // settled on their shares of the (still empty) partition streams.
            empty_cluster();
            cluster_client client(stream_client_options());
            const staged_trades staged = stage(client, s, stream_trades, entry_trades);
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
                if (!checkpoints) {
                    cfg.checkpoint_interval = std::chrono::milliseconds(0);
                }
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
                if (acked >= staged.entry_count && all_hold &&
                    unacknowledged(client, staged).empty()) {
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
            if (check_failed(state, name, check_cluster(s, total, keys))) {
                break;
            }
        }
    });
    if (!ran) {
        return;
    }
    report_trades(state, total, seconds);
    state.counters["token_writes_per_second"] = static_cast<double>(sum.token_writes) / seconds;
    state.counters["token_writes"] = static_cast<double>(sum.token_writes);
    state.counters["rounds"] = static_cast<double>(sum.rounds);
    state.counters["write_retries"] = static_cast<double>(sum.write_retries);
    state.counters["entries_replayed"] = static_cast<double>(sum.entries_replayed);
    state.counters["largest_instance_share"] = busiest_share;
    state.counters["keys_compared"] = static_cast<double>(keys);
}

} // namespace

void register_stream_ingest() {
    const auto add = [](std::size_t instances, std::size_t read_count, std::size_t entry_trades,
                        bool checkpoints = true) {
        configure(benchmark::RegisterBenchmark(
            stream_ingest_name(instances, read_count, entry_trades, checkpoints).c_str(),
            bm_stream_ingest, instances, read_count, entry_trades, checkpoints));
    };
    for (const std::size_t instances : {std::size_t{1}, std::size_t{2}}) {
        add(instances, stream_read_count, 1);
    }
    // What the checkpoints (every 2 s, the default) cost the single-entry run.
    add(1, stream_read_count, 1, false);
    for (const std::size_t instances : {std::size_t{1}, std::size_t{2}}) {
        add(instances, stream_read_count, stream_packed_entry_trades);
    }
    for (const std::size_t instances : {std::size_t{1}, std::size_t{2}}) {
        add(instances, stream_read_count_large, 1);
    }
}

} // namespace bench
