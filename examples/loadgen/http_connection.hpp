#pragma once
// The HTTP connections: each trade connection POSTs batch after batch to /trades and reads what
// the server makes of it; the probe (--probe) GETs a path at its own rate, as a monitor polling
// the server under the load would. Both open their keep-alive connection again when it closes.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/span_body.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/system/error_code.hpp>

#include "asio_beast.hpp"
#include "connection_stats.hpp"
#include "diagnostics.hpp"
#include "options.hpp"
#include "pacing.hpp"
#include "request_pool.hpp"
#include "run_plan.hpp"
#include "trade_feed.hpp"

namespace loadgen {

/// Connects `socket` if it is closed; false (counted, reported once, after a pause) if that
/// failed. `who` names the connection in the report.
inline bool ensure_connected(tcp::socket& socket, const run_plan& plan, connection_stats& stats,
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

/// The `accepted` count of a 2xx body such as {"accepted": 1000}.
inline std::optional<std::uint64_t> accepted_count(std::string_view body) {
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
inline std::chrono::nanoseconds retry_after(std::string_view value) {
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
inline void run_connection(const run_plan& plan, std::size_t index, request_pool& pool,
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

/// GETs `opts.probe` at `opts.probe_rate` on a keep-alive connection of its own until the stop.
inline void run_probe(const run_plan& plan, connection_stats& stats, stop_signal& stop) {
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

} // namespace loadgen
