#pragma once
// The HTTP layer's settings and what it tells its user: limits and deadlines (`http_limits`),
// counters (`http_stats`), the handler, error log and response observer types, and the checks
// of a listen address and of the limits. The server is in http_server.hpp; one connection's
// state machine in http_connection.hpp.

#include <atomic>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

namespace aggregator {

/// Limits and deadlines of an `http_server`. The defaults follow nginx's and Beast's where they
/// have one; every value is checked by the server's constructor.
struct http_limits {
    /// Bytes of a request's start line and header fields together (Beast's parser default;
    /// nginx allows 1 KiB, then 8 KiB per line). Larger: 431 and close. At most 32 KiB: the
    /// read buffer is this plus 16 KiB and must stay below Beast's 64 KiB limit on one field
    /// (see the top of this header).
    std::size_t header_bytes = 8 * 1024;
    /// Bytes of a request body, after chunked decoding (nginx client_max_body_size, Beast's
    /// default). Larger: 413 and close, before the body is read when Content-Length says so.
    std::uint64_t body_bytes = 1024 * 1024;
    /// From the accept, or from the first byte of a later request on the connection, until the
    /// end of the request's header (nginx client_header_timeout is 60 s between reads; this is
    /// a total, which bounds a slowloris client). Expired: close, no response.
    std::chrono::milliseconds header_timeout{10'000};
    /// From the same start until the end of the request's body (a total; nginx
    /// client_body_timeout is 60 s between reads). Expired: close, no response.
    std::chrono::milliseconds request_timeout{30'000};
    /// For writing one response, a total (nginx send_timeout is 60 s between writes). Expired:
    /// close.
    std::chrono::milliseconds write_timeout{10'000};
    /// A keep-alive connection with no new request for this long is closed (nginx
    /// keepalive_timeout is 75 s).
    std::chrono::milliseconds idle_timeout{60'000};
    /// After a response that closes the connection, how long the server reads and discards
    /// what the client still sends before closing (nginx lingering_timeout).
    std::chrono::milliseconds linger_timeout{5'000};
    /// Requests answered on one connection; the last response says `Connection: close` (nginx
    /// keepalive_requests).
    std::size_t max_requests_per_connection = 1'000;
    /// Connections open at once. Beyond it a new connection is accepted, sent a fixed 503 (with
    /// `Retry-After: 1`) if its socket takes it without waiting, and closed at once: the
    /// listen backlog is drained instead of filling, and a client learns it was refused rather
    /// than timing out. It is best effort: a client whose request is still unread when the
    /// socket closes may see a reset instead of the 503.
    std::size_t max_connections = 1'024;
    /// Wait after an accept error that is not about one connection (EMFILE, ENFILE, ENOBUFS,
    /// ENOMEM...) before accepting again, instead of spinning on a listening socket that stays
    /// readable. Doubles with each further error up to `accept_backoff_max`; a successful
    /// accept resets it.
    std::chrono::milliseconds accept_backoff_min{50};
    /// Longest wait between accept attempts while errors persist.
    std::chrono::milliseconds accept_backoff_max{1'000};
    /// The `Server` header of every response whose handler did not set one.
    std::string server_name = "tradeagg-aggregator";
};

/// What an `http_server` has done since `start()`. Counters are read one by one, so a snapshot
/// taken while requests run is not a consistent cut.
struct http_stats {
    /// Connections open now (refused ones are never counted).
    std::uint64_t connections_open = 0;
    /// Connections served since `start()`.
    std::uint64_t connections_accepted = 0;
    /// Connections accepted and closed at once at `max_connections`.
    std::uint64_t connections_refused = 0;
    /// Complete requests handed to the handler.
    std::uint64_t requests = 0;
    /// Responses written or being written, by status class (100 Continue is not counted; the
    /// 503s of refused connections are counted in `connections_refused` only).
    std::uint64_t responses_2xx = 0;
    std::uint64_t responses_4xx = 0;
    std::uint64_t responses_5xx = 0;
    std::uint64_t responses_other = 0; ///< 1xx and 3xx
    /// Requests the server refused itself: 400, 413, 417, 431, 501.
    std::uint64_t bad_requests = 0;
    /// Connections closed at a header, request or write deadline.
    std::uint64_t timeouts = 0;
    /// Keep-alive connections closed after `idle_timeout` without a new request.
    std::uint64_t idle_closes = 0;
    /// Handler exceptions (and invalid handler responses), each answered with a 500.
    std::uint64_t handler_errors = 0;
    /// Failed accepts, whether retried at once or after a backoff.
    std::uint64_t accept_errors = 0;
    /// Exceptions caught around `io_context::run`: a bug or a Beast limit not guarded here.
    std::uint64_t loop_exceptions = 0;
};

/// Answers one request. Runs on the I/O thread that read the request, concurrently with other
/// calls for other connections, never concurrently for one connection; it may block for a few
/// milliseconds (it holds that thread). An exception it throws becomes a 500.
using handler = std::function<boost::beast::http::response<boost::beast::http::string_body>(
    const boost::beast::http::request<boost::beast::http::string_body>&)>;

/// Receives one line about something that went wrong (a handler's exception, an accept error).
/// Called from I/O threads, possibly concurrently; must not throw (what it throws is dropped).
using error_log = std::function<void(std::string_view)>;

/// Told of every response the server writes, for per-route metrics. `route_of` names a
/// request's route by a small index (called once per request with its target, on the
/// connection's thread); `on_response` receives that index (`no_route` when the request was
/// refused before its header could be read), the status, and the time from the request's
/// first byte to its response written (or the write failing). Both are called from I/O
/// threads concurrently, must be cheap, and must not throw. Either may be empty.
struct response_observer {
    static constexpr std::size_t no_route = static_cast<std::size_t>(-1);
    std::function<std::size_t(std::string_view target)> route_of;
    std::function<void(std::size_t route, unsigned status, std::chrono::nanoseconds took)>
        on_response;
};

namespace detail {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using steady_clock = std::chrono::steady_clock;

/// Bytes the read buffer may hold beyond `header_bytes`: room for one read's worth of the
/// next request or body after a header that almost fills its limit.
inline constexpr std::size_t read_slack = 16 * 1024;
/// Beast 1.81 throws for a field value longer than this (it stores lengths in 16 bits).
inline constexpr std::size_t beast_field_max = 65'535;
inline constexpr std::size_t max_header_bytes = 32 * 1024;
static_assert(max_header_bytes + read_slack < beast_field_max,
              "the read buffer must be too small to hold a field Beast cannot store");

/// Splits "ip:port" or "[ipv6]:port"; throws `std::invalid_argument` naming the address.
inline tcp::endpoint parse_listen_address(std::string_view address) {
    const auto fail = [&](std::string_view why) {
        return std::invalid_argument("http_server: address '" + std::string(address) + "' " +
                                     std::string(why));
    };
    const auto colon = address.rfind(':');
    if (colon == std::string_view::npos) {
        throw fail("is not ip:port");
    }
    std::string_view host = address.substr(0, colon);
    const std::string_view port_text = address.substr(colon + 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    unsigned port = 0;
    const auto [end, err] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (port_text.empty() || err != std::errc{} || end != port_text.data() + port_text.size() ||
        port > 65'535) {
        throw fail("has no valid port (0..65535)");
    }
    beast::error_code ec;
    const auto ip = net::ip::make_address(std::string(host), ec);
    if (ec) {
        throw fail("has no valid IP address (host names are not resolved)");
    }
    return {ip, static_cast<std::uint16_t>(port)};
}

inline void check_http_limits(const http_limits& l, unsigned threads) {
    const auto fail = [](std::string_view field, std::string_view bound) {
        return std::invalid_argument("http_server: " + std::string(field) + " must be " +
                                     std::string(bound));
    };
    if (l.header_bytes < 256 || l.header_bytes > max_header_bytes) {
        throw fail("header_bytes", "in 256..32768");
    }
    using ms = std::chrono::milliseconds;
    const std::pair<std::string_view, ms> deadlines[] = {
        {"header_timeout", l.header_timeout},        {"request_timeout", l.request_timeout},
        {"write_timeout", l.write_timeout},          {"idle_timeout", l.idle_timeout},
        {"linger_timeout", l.linger_timeout},        {"accept_backoff_min", l.accept_backoff_min},
        {"accept_backoff_max", l.accept_backoff_max}};
    for (const auto& [name, value] : deadlines) {
        if (value <= ms::zero()) {
            throw fail(name, "positive");
        }
    }
    if (l.accept_backoff_max < l.accept_backoff_min) {
        throw fail("accept_backoff_max", "at least accept_backoff_min");
    }
    if (l.max_requests_per_connection == 0) {
        throw fail("max_requests_per_connection", "at least 1");
    }
    if (l.max_connections == 0) {
        throw fail("max_connections", "at least 1");
    }
    if (l.server_name.empty() || l.server_name.find_first_of("\r\n") != std::string::npos) {
        throw fail("server_name", "a non-empty header value without CR or LF");
    }
    if (threads == 0) {
        throw fail("threads", "at least 1");
    }
}

} // namespace detail

} // namespace aggregator
