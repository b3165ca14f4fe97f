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
#include "latency_histogram.hpp"
#include "options.hpp"
#include "report.hpp"
#include "request_pool.hpp"
#include "stream_writer.hpp"
#include "trade_feed.hpp"

namespace loadgen {

using steady = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Sending

/// The end of the run, which every sleeping connection wakes up for.
class stop_signal {
public:
    void request() {
        {
            const std::lock_guard lock(mutex_);
            stopped_.store(true, std::memory_order_relaxed);
        }
        cv_.notify_all();
    }

    [[nodiscard]] bool requested() const noexcept {
        return stopped_.load(std::memory_order_relaxed);
    }

    /// Sleeps until `t` or the stop, whichever comes first; true when stopped.
    bool sleep_until(steady::time_point t) {
        std::unique_lock lock(mutex_);
        return cv_.wait_until(lock, t, [this] { return stopped_.load(std::memory_order_relaxed); });
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::atomic<bool> stopped_{false};
};

/// What every connection shares, read-only once the run starts.
struct run_plan {
    options opts;
    address addr;
    tcp::resolver::results_type endpoints;
    std::uint64_t first_generation = 0;
    address redis; ///< with streams
};

/// The `accepted` count of a 2xx body such as {"accepted": 1000}.
std::optional<std::uint64_t> accepted_count(std::string_view body) {
    const auto key = body.find("\"accepted\"");
    if (key == std::string_view::npos) {
        return std::nullopt;
    }
    std::size_t i = key + 10;
    while (i < body.size() && (body[i] == ' ' || body[i] == ':' || body[i] == '\t')) {
        ++i;
    }
    std::size_t j = i;
    while (j < body.size() && body[j] >= '0' && body[j] <= '9') {
        ++j;
    }
    return parse_uint(body.substr(i, j - i));
}

/// Seconds to wait from a Retry-After header: delay-seconds (fractions tolerated); 0.1 s when
/// absent, 1 s when it is an HTTP date or unreadable.
std::chrono::nanoseconds retry_after(std::string_view value) {
    using namespace std::chrono_literals;
    if (value.empty()) {
        return 100ms;
    }
    const auto seconds = parse_double(value);
    if (!seconds || *seconds < 0) {
        return 1s;
    }
    return std::chrono::nanoseconds(static_cast<std::int64_t>(std::min(*seconds, 3600.0) * 1e9));
}

/// One connection: send batch after batch until the stop, each request re-stamped just before
/// it is written, each answer read before the next request (no pipelining).
/// Holds a connection to `rate` trades per second (0: no limit) before it sends `n` more: sleeps
/// until `next_send`, which it then moves on by n / rate; far behind, it does not burst to catch
/// up. True if the run was stopped meanwhile.
bool pace(steady::time_point& next_send, std::size_t n, double rate, stop_signal& stop) {
    using namespace std::chrono_literals;
    if (rate <= 0) {
        return false;
    }
    const auto interval =
        std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 * static_cast<double>(n) / rate));
    const steady::time_point now = steady::now();
    if (next_send > now) {
        if (stop.sleep_until(next_send)) {
            return true;
        }
    } else if (now - next_send > 1s) {
        next_send = now;
    }
    next_send += interval;
    return false;
}

/// Connects `socket` if it is closed; false (counted, reported once, after a pause) if that
/// failed. `who` names the connection in the report.
bool ensure_connected(tcp::socket& socket, const run_plan& plan, connection_stats& stats,
                      const std::string& who, stop_signal& stop) {
    using namespace std::chrono_literals;
    if (socket.is_open()) {
        return true;
    }
    boost::system::error_code ec;
    asio::connect(socket, plan.endpoints, ec);
    if (ec) {
        socket.close(ec);
        connection_stats::add(stats.io_errors, 1);
        report_once(io_error_reported, who + ": connect: " + ec.message() + " (retrying)");
        stop.sleep_until(steady::now() + 100ms);
        return false;
    }
    socket.set_option(tcp::no_delay(true), ec);
    return true;
}

/// How far a request got.
enum class trip { unsent, unanswered, answered };

/// Writes `req` and reads the response into `parser`, recording the latency and the status in
/// `stats`. On an I/O error: counted, reported once, the socket closed.
template <class Request>
trip round_trip(tcp::socket& socket, beast::flat_buffer& buffer, const Request& req,
                http::response_parser<http::string_body>& parser, connection_stats& stats,
                const std::string& who) {
    boost::system::error_code ec;
    const auto fail = [&](std::string_view step, trip how_far) {
        connection_stats::add(stats.io_errors, 1);
        report_once(io_error_reported,
                    who + ": " + std::string(step) + ": " + ec.message() + " (reconnecting)");
        socket.close(ec);
        buffer.clear();
        return how_far;
    };
    const steady::time_point sent = steady::now();
    http::write(socket, req, ec);
    if (ec) {
        return fail("write", trip::unsent);
    }
    parser.body_limit(1 << 20);
    http::read(socket, buffer, parser, ec);
    if (ec) {
        return fail("read", trip::unanswered);
    }
    stats.latency.record(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - sent).count()));
    const unsigned code = parser.get().result_int();
    connection_stats::add(stats.requests, 1);
    connection_stats::add(stats.status[code < connection_stats::statuses ? code : 0], 1);
    if (!parser.get().keep_alive()) {
        socket.close(ec);
        buffer.clear();
    }
    return trip::answered;
}

/// GETs `opts.probe` at `opts.probe_rate` on a keep-alive connection of its own until the stop.
void run_probe(const run_plan& plan, connection_stats& stats, stop_signal& stop) {
    const options& o = plan.opts;
    asio::io_context ioc;
    tcp::socket socket(ioc);
    beast::flat_buffer buffer;
    http::request<http::empty_body> req{http::verb::get, o.probe, 11};
    req.set(http::field::host, plan.addr.host_header);
    req.set(http::field::user_agent, program);
    req.keep_alive(true);
    const auto interval = std::chrono::duration_cast<steady::duration>(
        std::chrono::duration<double>(1.0 / o.probe_rate));
    steady::time_point next = steady::now();
    while (!stop.requested()) {
        if (!ensure_connected(socket, plan, stats, "probe", stop)) {
            continue;
        }
        http::response_parser<http::string_body> parser;
        (void)round_trip(socket, buffer, req, parser, stats, "probe");
        next = std::max(next + interval, steady::now() - interval);
        stop.sleep_until(next);
    }
    stats.finished.store(true, std::memory_order_release);
}

void run_connection(const run_plan& plan, std::size_t index, request_pool& pool,
                    connection_stats& stats, stop_signal& stop) {
    using namespace std::chrono_literals;
    const options& o = plan.opts;
    asio::io_context ioc;
    tcp::socket socket(ioc);
    beast::flat_buffer buffer;

    http::request<http::span_body<char>> req{http::verb::post, "/trades", 11};
    req.set(http::field::host, plan.addr.host_header);
    req.set(http::field::user_agent, program);
    req.set(http::field::content_type,
            o.format == body_format::ndjson ? "application/x-ndjson" : "application/json");
    req.keep_alive(true);

    const double connection_rate = o.rate / static_cast<double>(o.connections);
    steady::time_point next_send = steady::now();

    const std::string who = "connection " + std::to_string(index);
    std::size_t b = 0;
    std::uint64_t pass = 0;
    while (!stop.requested()) {
        if (!ensure_connected(socket, plan, stats, who, stop)) {
            continue;
        }

        const std::size_t n = pool.trades(b);
        if (pace(next_send, n, connection_rate, stop)) {
            break;
        }

        const std::uint64_t generation = plan.first_generation + pass * o.connections + index;
        req.body() = pool.stamp(b, wall_clock_ms(), generation);
        req.content_length(req.body().size());
        if (++b == pool.batches()) {
            b = 0;
            ++pass;
        }

        http::response_parser<http::string_body> parser;
        const trip t = round_trip(socket, buffer, req, parser, stats, who);
        if (t != trip::unsent) {
            connection_stats::add(stats.trades_sent, n);
        }
        if (t != trip::answered) {
            continue;
        }
        const auto& res = parser.get();
        const unsigned code = res.result_int();

        if (code >= 200 && code < 300) {
            connection_stats::add(stats.trades_accepted, accepted_count(res.body()).value_or(n));
        } else if (code == 503) {
            const auto wait = retry_after(res[http::field::retry_after]);
            const steady::time_point from = steady::now();
            stop.sleep_until(from + wait);
            connection_stats::add(stats.backoff_ns,
                                  static_cast<std::uint64_t>((steady::now() - from).count()));
            next_send = steady::now();
        } else if (code >= 400 && code < 500) {
            std::string body = res.body().substr(0, 500);
            while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) {
                body.pop_back();
            }
            report_once(client_error_reported, "first " + std::to_string(code) + " response: " +
                                                   std::string(res.reason()) + ": " + body);
        }
    }
    stats.finished.store(true, std::memory_order_release);
}

/// One streams connection: appends batches of the slice [first, first + count) of `s` with
/// XADD until the stop, stamped as the HTTP connections stamp theirs.
void run_stream_connection(const run_plan& plan, std::size_t index, const synthetic::stream& s,
                           std::size_t first, std::size_t count,
                           const std::vector<std::uint32_t>& delays, connection_stats& stats,
                           stop_signal& stop) {
    using namespace std::chrono_literals;
    const options& o = plan.opts;
    const std::string who = "stream connection " + std::to_string(index);
    std::unique_ptr<stream_writer> writer;
    std::vector<tradeagg::trade_view> batch;
    batch.reserve(o.batch);
    const double connection_rate = o.rate / static_cast<double>(o.connections);
    steady::time_point next_send = steady::now();
    std::size_t from = 0;
    std::uint64_t pass = 0;
    while (!stop.requested()) {
        if (!writer) {
            try {
                writer = std::make_unique<stream_writer>(
                    plan.redis.host, std::stoi(plan.redis.port), o.prefix, o.streams);
            } catch (const std::exception& e) {
                connection_stats::add(stats.io_errors, 1);
                report_once(io_error_reported, who + ": " + e.what() + " (retrying)");
                stop.sleep_until(steady::now() + 100ms);
                continue;
            }
        }
        const std::size_t n = std::min(o.batch, count - from);
        if (pace(next_send, n, connection_rate, stop)) {
            break;
        }
        const std::uint64_t generation = plan.first_generation + pass * o.connections + index;
        const std::int64_t now_ms = wall_clock_ms();
        batch.clear();
        for (std::size_t k = from; k < from + n; ++k) {
            const tradeagg::trade& t = s.trades()[first + k];
            batch.push_back(tradeagg::trade_view{s.names()[t.token], t.price, t.quantity, t.taker,
                                                 now_ms - delays[first + k],
                                                 trade_id(generation, k)});
        }
        from += n;
        if (from == count) {
            from = 0;
            ++pass;
        }
        std::string error;
        const steady::time_point sent = steady::now();
        const std::size_t acknowledged = writer->append(batch, error);
        stats.latency.record(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - sent).count()));
        connection_stats::add(stats.requests, 1);
        connection_stats::add(stats.trades_sent, n);
        connection_stats::add(stats.trades_accepted, acknowledged);
        connection_stats::add(stats.status[acknowledged == n ? 200 : 500], 1);
        if (!error.empty()) {
            report_once(io_error_reported, who + ": " + error);
            if (acknowledged < n) {
                connection_stats::add(stats.io_errors, 1);
                writer.reset(); // connect again, and read the slot map again
            }
        }
    }
    stats.finished.store(true, std::memory_order_release);
}

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
