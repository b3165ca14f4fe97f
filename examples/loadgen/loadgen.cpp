// tradeagg_loadgen: synthetic trades over keep-alive HTTP/1.1 to the aggregator server's
// POST /trades, reporting accepted trades per second and response latency.
//
//   tradeagg_loadgen [--url 127.0.0.1:8080] [--connections 2] [--batch 1000] [--duration 10]
//                    [--rate 0] [--tokens 10000] [--zipf 1.0] [--format ndjson|json]
//                    [--out-of-order 0.01] [--max-delay-ms 2000] [--seed N] [--progress] [--json]
//   tradeagg_loadgen --sink 127.0.0.1:9090      (a trivial server that accepts every trade)
//   tradeagg_loadgen --streams 4 [--redis 127.0.0.1:6379] [--prefix tradeagg]
//                    (XADD to the partition streams of the scale-out design instead of HTTP,
//                    on one Redis or a Redis Cluster: stream_writer.hpp)
//
// Every option is also read from LOADGEN_<NAME> (dashes as underscores, e.g.
// LOADGEN_MAX_DELAY_MS); the command line wins. Without --url or LOADGEN_URL, HTTP_ADDR (the
// server's own listen address) is used, then 127.0.0.1:8080. `--help` lists everything.
//
// How the trades are made cheap to send is told in request_pool.hpp, how their ids stay unique in
// trade_feed.hpp.
//
// Answers. 2xx adds the body's `accepted` count (the whole batch when the body has none); 503
// sleeps for Retry-After seconds (0.1 s when absent) and is counted; other 4xx and 5xx are
// counted, and the first 4xx body is printed. A connection the server closes, or an I/O error,
// is counted and the connection is opened again. The exit status is 0 when at least one trade
// was accepted, 1 otherwise or when the server cannot be reached, 2 for a bad option.
//
// Measuring the generator itself: run `tradeagg_loadgen --sink 127.0.0.1:9090` in one shell and
// point a load at it; the summary's "generator cpu" line gives trades per CPU-second.

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/span.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/span_body.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include "../../bench/stream.hpp"
#include "address.hpp"
#include "asio_beast.hpp"
#include "connection_stats.hpp"
#include "diagnostics.hpp"
#include "http_connection.hpp"
#include "latency_histogram.hpp"
#include "options.hpp"
#include "pacing.hpp"
#include "report.hpp"
#include "request_pool.hpp"
#include "run_plan.hpp"
#include "stream_connection.hpp"
#include "stream_writer.hpp"
#include "trade_feed.hpp"

namespace loadgen {

// ---------------------------------------------------------------------------------------------
// The sink

/// One sink connection: answers until the peer closes.
void serve_sink_connection(tcp::socket socket) {
    beast::flat_buffer buffer;
    boost::system::error_code ec;
    socket.set_option(tcp::no_delay(true), ec);
    for (;;) {
        http::request_parser<http::string_body> parser;
        parser.body_limit(std::uint64_t{1} << 30);
        http::read(socket, buffer, parser, ec);
        if (ec) {
            break;
        }
        const auto& req = parser.get();
        http::response<http::string_body> res{http::status::ok, req.version()};
        res.set(http::field::content_type, "application/json");
        if (req.method() == http::verb::post && req.target() == "/trades") {
            // Token names hold no braces, so each '{' opens one trade.
            const auto n = std::count(req.body().begin(), req.body().end(), '{');
            res.result(http::status::accepted);
            res.body() = "{\"accepted\":" + std::to_string(n) + "}";
        } else if (req.method() == http::verb::get && req.target() == "/health") {
            res.body() = R"({"status":"ok"})";
        } else {
            res.result(http::status::not_found);
            res.body() = R"({"error":"not found"})";
        }
        res.keep_alive(req.keep_alive());
        res.prepare_payload();
        http::write(socket, res, ec);
        if (ec || !res.keep_alive()) {
            break;
        }
    }
    socket.shutdown(tcp::socket::shutdown_both, ec);
}

[[noreturn]] void run_sink(const options& o) {
    const address a = parse_address(o.sink, "--sink");
    asio::io_context ioc;
    tcp::acceptor acceptor(ioc);
    try {
        tcp::resolver resolver(ioc);
        const tcp::endpoint ep = *resolver.resolve(a.host, a.port).begin();
        acceptor.open(ep.protocol());
        acceptor.set_option(asio::socket_base::reuse_address(true));
        acceptor.bind(ep);
        acceptor.listen();
    } catch (const boost::system::system_error& e) {
        throw run_error("sink cannot listen on " + a.host_header + ": " + e.code().message());
    }
    std::fprintf(stderr, "%.*s: sink listening on %s:%u\n", static_cast<int>(program.size()),
                 program.data(), acceptor.local_endpoint().address().to_string().c_str(),
                 static_cast<unsigned>(acceptor.local_endpoint().port()));
    std::fflush(stderr);
    for (;;) {
        tcp::socket socket(ioc);
        boost::system::error_code ec;
        acceptor.accept(socket, ec);
        if (!ec) {
            std::thread(serve_sink_connection, std::move(socket)).detach();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run

int run(const options& o) {
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

int main(int argc, char** argv) {
    using loadgen::program;
    try {
        const std::optional<loadgen::options> o = loadgen::parse_options(argc, argv);
        if (!o) {
            return 0;
        }
        if (!o->sink.empty()) {
            loadgen::run_sink(*o);
        }
        return loadgen::run(*o);
    } catch (const loadgen::usage_error& e) {
        std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(program.size()), program.data(),
                     e.what());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(program.size()), program.data(),
                     e.what());
        return 1;
    }
}
