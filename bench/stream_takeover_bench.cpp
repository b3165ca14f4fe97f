// BM_stream_takeover: how long partitions stay unserved when the instance holding them dies,
// and how much of their streams the next holder reads again, on the 3-master cluster of
// `stream_cluster()` (partition_streams.hpp).
//
// Outside the clock: an empty cluster; the first `stream_trades` trades of the stream staged
// and published on the four partition streams; a child process (fork) running one consumer,
// instance "a", which takes every partition and applies and acknowledges every entry.
//
// The clock starts when "a" is killed (SIGKILL: no lease released, nothing flushed). One
// hundredth more trades (at least 1,000) are then appended and instance "b" starts in this
// process; `resume_s` ends at b's first acknowledged token write (b can write only once a's
// leases lapse and it has rebuilt what it took over), the clock at the last entry
// acknowledged.
//
// Checks, outside the clock: nothing invalid, b stopped cleanly, and the cluster holds exactly
// what a memory pipeline fed every trade holds.
//
// Both instances store partition checkpoints every `checkpoint_ms` (the argument; 0: none, so b
// replays the whole stream). a is killed as soon as it has acknowledged the last entry, at no
// particular moment of its checkpoint interval.
//
// Counters: lease_ttl_s; resume_s; entries_applied_before (acknowledged by a before the kill);
// entries_replayed (read again by b's rebuilds, against the bar of 10 % of those applied
// before); replayed_fraction; keys_compared; checkpoint_interval_s; checkpoints_loaded (by b);
// checkpoint_bytes (the last one b loaded or wrote).

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <tradeagg/pipeline.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/stream_consumer.hpp>
#include <tradeagg/runtime_config.hpp>
#include <tradeagg/sink/memory_sink.hpp>

#include "bench_stream.hpp"
#include "partition_streams.hpp"
#include "redis_bench_settings.hpp"
#include "redis_benchmarks.hpp"
#include "redis_keyspace.hpp" // tests/: Redis compared with a memory_sink

namespace bench {
namespace {

using takeover_consumer = tradeagg::redis::stream_consumer<tradeagg::throughput_policy>;

tradeagg::redis::stream_consumer_config takeover_config(const std::string& instance,
                                                        std::chrono::milliseconds checkpoints) {
    tradeagg::redis::stream_consumer_config cfg;
    cfg.checkpoint_interval = checkpoints;
    cfg.key_prefix = std::string(key_prefix);
    cfg.partitions = stream_partitions;
    cfg.instance = instance;
    cfg.group = std::string(stream_group);
    cfg.lease_ttl = stream_lease_ttl;
    cfg.redis = stream_client_options();
    return cfg;
}

/// Waits until `done()`, or throws `what` after `timeout`.
template <class Done>
void wait_until(Done&& done, std::chrono::seconds timeout, const std::string& what) {
    const auto deadline = bench_clock::now() + timeout;
    while (!done()) {
        if (bench_clock::now() > deadline) {
            throw std::runtime_error(what);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

/// Forks a process running instance "a" until it is killed.
pid_t start_doomed_instance(const tradeagg::resolved_config<tradeagg::throughput_policy>& rc,
                            std::chrono::milliseconds checkpoints) {
    const pid_t pid = ::fork();
    if (pid < 0) {
        throw std::runtime_error("fork failed");
    }
    if (pid == 0) {
        try {
            takeover_consumer a(takeover_config("a", checkpoints), rc);
            a.start();
            for (;;) {
                ::pause();
            }
        } catch (...) {
            std::_Exit(1);
        }
    }
    return pid;
}

void bm_stream_takeover(benchmark::State& state) {
    const std::string name = "BM_stream_takeover";
    const std::chrono::milliseconds checkpoints(state.range(0));
    tradeagg::redis::stream_consumer_stats st;
    double resume = 0.0;
    double seconds = 0.0;
    std::size_t before = 0;
    std::size_t total = 0;
    std::uint64_t replayed = 0;
    std::size_t keys = 0;
    const bool ran = run_or_fail(state, name, [&] {
        const synthetic::stream& s = bench_stream();
        const auto rc = tradeagg::resolve<tradeagg::throughput_policy>(tradeagg::runtime_config{});
        for (auto _ : state) {
            empty_cluster();
            tradeagg::redis::cluster_client client(stream_client_options());
            before = stream_trades;
            const std::size_t after = std::max<std::size_t>(before / 100, 1'000);
            if (before + after > s.trades().size()) {
                throw std::runtime_error("the stream holds fewer trades than the run needs");
            }
            staged_trades staged = stage(client, s, before);
            publish(client);
            const pid_t a = start_doomed_instance(rc, checkpoints);
            try {
                wait_until([&] { return unacknowledged(client, staged).empty(); },
                           std::chrono::seconds(600),
                           "instance a did not acknowledge every entry within 10 minutes");
            } catch (...) {
                ::kill(a, SIGKILL);
                ::waitpid(a, nullptr, 0);
                throw;
            }

            ::kill(a, SIGKILL);
            const auto t0 = bench_clock::now();
            ::waitpid(a, nullptr, 0);
            const staged_trades more = stage(client, s, after, 1, before, stage_to::live);
            for (std::size_t k = 0; k < stream_partitions; ++k) {
                if (more.last_id[k] != "0-0") {
                    staged.last_id[k] = more.last_id[k];
                }
            }
            total = before + after;
            takeover_consumer b(takeover_config("b", checkpoints), rc);
            b.start();
            wait_until([&] { return b.stats().token_writes > 0; }, std::chrono::seconds(600),
                       "instance b wrote nothing within 10 minutes: " + b.stats().last_error);
            resume = seconds_between(t0, bench_clock::now());
            wait_until(
                [&] {
                    return b.stats().partitions_held == stream_partitions &&
                           unacknowledged(client, staged).empty();
                },
                std::chrono::seconds(600),
                "instance b did not take every partition and acknowledge every entry");
            seconds = seconds_between(t0, bench_clock::now());
            state.SetIterationTime(seconds);

            st = b.stats();
            replayed = st.entries_replayed;
            if (!b.stop(std::chrono::seconds(10)) || st.entries_invalid != 0) {
                skip_with_error(state, name + ": invalid entries, or writes left at stop; " +
                                           st.last_error);
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
    state.counters["trades"] = static_cast<double>(total);
    state.counters["lease_ttl_s"] = std::chrono::duration<double>(stream_lease_ttl).count();
    state.counters["resume_s"] = resume;
    state.counters["entries_applied_before"] = static_cast<double>(before);
    state.counters["entries_replayed"] = static_cast<double>(replayed);
    state.counters["replayed_fraction"] =
        static_cast<double>(replayed) / static_cast<double>(std::max<std::size_t>(before, 1));
    state.counters["keys_compared"] = static_cast<double>(keys);
    state.counters["checkpoint_interval_s"] = std::chrono::duration<double>(checkpoints).count();
    state.counters["checkpoints_loaded"] = static_cast<double>(st.checkpoints_loaded);
    state.counters["checkpoint_bytes"] = static_cast<double>(st.checkpoint_bytes);
}

} // namespace

void register_stream_takeover() {
    // Checkpoints every second, at the default interval (2 s), and none (the whole stream).
    auto* b = benchmark::RegisterBenchmark("BM_stream_takeover", bm_stream_takeover);
    b->ArgName("checkpoint_ms")->Arg(1'000)->Arg(2'000)->Arg(0);
    configure(b);
}

} // namespace bench
