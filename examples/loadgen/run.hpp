#pragma once
// A whole run: check the targets, generate the trades, start the connections, print progress,
// stop at the deadline and print the summary.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#include "../../bench/stream.hpp"
#include "address.hpp"
#include "asio_beast.hpp"
#include "connection_stats.hpp"
#include "diagnostics.hpp"
#include "http_connection.hpp"
#include "options.hpp"
#include "pacing.hpp"
#include "report.hpp"
#include "request_pool.hpp"
#include "run_plan.hpp"
#include "stream_connection.hpp"
#include "stream_writer.hpp"
#include "trade_feed.hpp"

namespace loadgen {

/// Runs the load of `o` (HTTP, or --streams) for --duration seconds and prints the summary;
/// returns the exit status. Throws run_error when a target cannot be reached.
inline int run(const options& o) {
    using namespace std::chrono_literals;
    run_plan plan;
    plan.opts = o;
    plan.addr = parse_address(o.url, "--url");
    const bool streams = o.streams > 0;
    std::string cluster_note;
    if (streams) {
        plan.redis = parse_address(o.redis, "--redis");
        try {
            const stream_writer check(plan.redis.host, std::stoi(plan.redis.port), o.prefix,
                                      o.streams);
            cluster_note = check.cluster() ? "a Redis Cluster" : "one Redis";
        } catch (const std::exception& e) {
            throw run_error(e.what());
        }
    }

    asio::io_context ioc;
    if (!streams || !o.probe.empty()) {
        boost::system::error_code ec;
        tcp::resolver resolver(ioc);
        plan.endpoints = resolver.resolve(plan.addr.host, plan.addr.port, ec);
        if (ec) {
            throw run_error("cannot resolve " + plan.addr.host + ": " + ec.message());
        }
        tcp::socket probe(ioc);
        asio::connect(probe, plan.endpoints, ec);
        if (ec) {
            throw run_error("cannot connect to " + plan.addr.host_header + ": " + ec.message());
        }
    }

    const std::size_t pool_trades = trades_per_connection(o);
    const synthetic::stream_config cfg = market_config(o, pool_trades);
    // One stream cut into one slice per connection: every connection sees the same tokens at
    // the same prices, as if the connections split one feed.
    const synthetic::stream stream(cfg);
    const std::vector<std::uint32_t> delays = out_of_order_delays(o, cfg.trades);
    std::vector<std::unique_ptr<request_pool>> pools;
    std::vector<std::unique_ptr<connection_stats>> stats;
    for (std::size_t c = 0; c < o.connections; ++c) {
        if (!streams) {
            pools.push_back(std::make_unique<request_pool>(stream, c * pool_trades, pool_trades,
                                                           o.batch, o.format, delays));
        }
        stats.push_back(std::make_unique<connection_stats>());
    }
    const auto unix_s = static_cast<std::uint64_t>(wall_clock_ms() / 1000);
    plan.first_generation = (unix_s % 10'000) * 100'000;

    stop_signal stop;
    const double cpu_before = cpu_seconds();
    const steady::time_point start = steady::now();
    const auto duration =
        std::chrono::duration_cast<steady::duration>(std::chrono::duration<double>(o.duration_s));
    const steady::time_point deadline = start + duration;
    std::vector<std::thread> threads;
    for (std::size_t c = 0; c < o.connections; ++c) {
        if (streams) {
            threads.emplace_back(run_stream_connection, std::cref(plan), c, std::cref(stream),
                                 c * pool_trades, pool_trades, std::cref(delays),
                                 std::ref(*stats[c]), std::ref(stop));
        } else {
            threads.emplace_back(run_connection, std::cref(plan), c, std::ref(*pools[c]),
                                 std::ref(*stats[c]), std::ref(stop));
        }
    }
    // The probe's figures are kept apart from the trade connections'; it counts among the
    // connections waited for at the end.
    std::vector<std::unique_ptr<connection_stats>> probe_stats;
    if (!o.probe.empty()) {
        probe_stats.push_back(std::make_unique<connection_stats>());
        threads.emplace_back(run_probe, std::cref(plan), std::ref(*probe_stats.front()),
                             std::ref(stop));
    }

    const bool progress_in_place = o.progress && ::isatty(STDERR_FILENO) == 1;
    totals before;
    steady::time_point last = start;
    for (steady::time_point tick = start + 1s; tick < deadline; tick += 1s) {
        std::this_thread::sleep_until(tick);
        if (o.progress) {
            const totals now = sum(stats);
            print_progress(std::chrono::duration<double>(tick - start).count(), now, before,
                           std::chrono::duration<double>(tick - last).count(), progress_in_place);
            before = now;
            last = tick;
        }
    }
    std::this_thread::sleep_until(deadline);
    stop.request();
    if (progress_in_place && last != start) {
        std::fputc('\n', stderr);
    }

    // A connection blocked on a server that does not answer is given a few seconds, then left
    // behind: its request is not counted, and the process exits without joining it.
    const steady::time_point grace = steady::now() + 5s;
    const auto finished = [](const auto& st) {
        return st->finished.load(std::memory_order_acquire);
    };
    const auto all_finished = [&] {
        return std::all_of(stats.begin(), stats.end(), finished) &&
               std::all_of(probe_stats.begin(), probe_stats.end(), finished);
    };
    while (!all_finished() && steady::now() < grace) {
        std::this_thread::sleep_for(1ms);
    }
    summary s;
    s.cpu_s = cpu_seconds() - cpu_before;
    s.abandoned = static_cast<std::size_t>(
        std::count_if(stats.begin(), stats.end(), std::not_fn(finished)) +
        std::count_if(probe_stats.begin(), probe_stats.end(), std::not_fn(finished)));
    // The grace given to an abandoned connection is not part of the run.
    s.elapsed_s =
        std::chrono::duration<double>((s.abandoned != 0 ? deadline : steady::now()) - start)
            .count();
    s.t = sum(stats);
    if (!probe_stats.empty()) {
        s.probe = sum(probe_stats);
    }
    if (streams) {
        // Reported as the target in the summary, in place of the HTTP address.
        plan.addr.host_header = "redis " + plan.redis.host_header + " (" + cluster_note + ", " +
                                std::to_string(o.streams) + " streams)";
    }
    print_summary(o, plan.addr, s);
    const int code = s.t.trades_accepted > 0 ? 0 : 1;
    if (code != 0) {
        std::fprintf(stderr, "%.*s: no trade was accepted\n", static_cast<int>(program.size()),
                     program.data());
    }
    if (s.abandoned != 0) {
        std::fflush(stdout);
        std::fflush(stderr);
        std::_Exit(code);
    }
    for (std::thread& t : threads) {
        t.join();
    }
    return code;
}

} // namespace loadgen
