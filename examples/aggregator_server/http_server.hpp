#pragma once
// The aggregator server's HTTP/1.1 layer: a Boost.Beast server that hands each request to a
// synchronous handler and stays up against slow, oversized, malformed and numerous clients.
//
// How a connection runs. Each I/O thread runs an io_context of its own; a new connection goes to
// the thread with the fewest open connections and stays there, so its requests are handled one
// after another on one thread (a handler may rely on that, e.g. to keep per-thread state in
// order) and its handlers need no strand:
// - The first request's header must arrive within `header_timeout` of the accept. Between
//   requests a keep-alive connection may stay silent for `idle_timeout`; from the first byte of
//   a later request, its header must arrive within `header_timeout` and the whole request within
//   `request_timeout`. Deadlines are absolute, so a client that sends one byte at a time
//   (slowloris) gains nothing. A connection past a read deadline is closed without a response
//   (no 408: the client is, by then, either gone or not worth a write), as is one that cannot
//   take a response within `write_timeout`.
// - Requests are read one at a time and answered in order, so pipelined requests are answered
//   in the order they were sent.
// - The server answers some requests itself, with a short JSON body and `Connection: close`:
//   400 for a malformed request (or a missing Host in HTTP/1.1, or a Transfer-Encoding whose
//   final coding is not chunked, which would make the body's length unknowable), 413 for a body
//   over `body_bytes` (a Content-Length over it is refused before the body is read), 417 for an
//   Expect other than 100-continue, 431 for a header over `header_bytes`, 501 for a transfer
//   coding before chunked (gzip, chunked: not decoded here), 500 when the handler throws (the
//   connection stays open: the request was read). A version other than HTTP/1.0 or 1.1 gets a
//   400, not a 505: Beast's parser rejects it as malformed, like any other bad request line.
// - After a response that closes the connection, the server shuts down its sending side and
//   reads and discards what the client still sends for up to `linger_timeout` (nginx's
//   "lingering close"). Closing at once with unread input would send a TCP reset, and a client
//   that is still sending (a body the server refused with 413, or pipelined requests) may then
//   lose the response before reading it.
//
// Boost.Beast 1.81 specifics, measured on this machine:
// - The parser applies `header_limit` to the header but not to the trailer of a chunked body.
//   A trailer field longer than 65,535 bytes then reaches `basic_fields::insert`, which throws
//   `std::length_error` ("field value too large") out of `async_read`, out of
//   `io_context::run`, and ends a server written like Beast's examples. Here the read buffer is
//   bounded (`header_bytes` + 16 KiB, below 64 KiB): the parser needs a trailer whole in the
//   buffer, so an over-long one fails the read with `buffer_overflow` (answered 431) before any
//   field is built. The buffer bounds only unparsed input: the parser moves body bytes out of
//   it into the request as they arrive, so bodies up to `body_bytes` still pass.
// - The parser accepts a Transfer-Encoding whose final coding is not chunked (`gzip`) as a
//   request without a body, so the body would be read as the next request (request
//   smuggling). Such requests are refused after the header is read (400).
// - Exceptions are caught around every completion handler of a connection (its connection is
//   closed) and, as a last resort for anything thrown inside Beast's own composed operations,
//   around `io_context::run`, which is then run again; both are logged and counted.
// - Beast sends nothing for `Expect: 100-continue`; the server writes the interim response
//   itself once the header has passed every check.
//
// Memory per connection is bounded by the read buffer (`header_bytes` + 16 KiB), one request
// (`body_bytes` + its header) and the response the handler returns.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/rfc7230.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <tradeagg/config.hpp>
#include <tradeagg/detail/thread_name.hpp>

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

/// Counters written by every I/O thread, kept off the cache lines of the read-mostly state.
struct alignas(tradeagg::cache_line_size) http_counters {
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> refused{0};
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> responses_2xx{0};
    std::atomic<std::uint64_t> responses_4xx{0};
    std::atomic<std::uint64_t> responses_5xx{0};
    std::atomic<std::uint64_t> responses_other{0};
    std::atomic<std::uint64_t> bad_requests{0};
    std::atomic<std::uint64_t> timeouts{0};
    std::atomic<std::uint64_t> idle_closes{0};
    std::atomic<std::uint64_t> handler_errors{0};
    std::atomic<std::uint64_t> accept_errors{0};
    std::atomic<std::uint64_t> loop_exceptions{0};
};
static_assert(alignof(http_counters) == tradeagg::cache_line_size);
static_assert(sizeof(http_counters) % tradeagg::cache_line_size == 0);

inline void count_one(std::atomic<std::uint64_t>& counter) noexcept {
    counter.fetch_add(1, std::memory_order_relaxed);
}

class http_connection;

/// What connections share with the server. Held by shared pointer so that a connection
/// destroyed while the io_context itself is destroyed still finds it.
struct http_server_state {
    http_server_state(http_limits l, handler h, error_log lg, response_observer ob,
                      std::size_t threads)
        : limits(std::move(l)), handle(std::move(h)), log(std::move(lg)), observer(std::move(ob)),
          refusal(make_refusal(limits.server_name)),
          open_on(std::make_unique<std::atomic<std::size_t>[]>(threads)) {}

    const http_limits limits;
    const handler handle;
    const error_log log;
    const response_observer observer;
    /// The whole 503 written to connections beyond the cap.
    const std::string refusal;

    http_counters count;

    /// Guards `connections`, `next_id` and the transitions of `stopping`.
    std::mutex mutex;
    std::condition_variable drained;
    std::unordered_map<std::uint64_t, std::weak_ptr<http_connection>> connections;
    std::uint64_t next_id = 0;
    std::atomic<std::size_t> open{0};
    /// Open connections per I/O thread, by thread index.
    std::unique_ptr<std::atomic<std::size_t>[]> open_on;
    std::atomic<bool> stopping{false};
    /// `stop`'s deadline passed: nothing more is written, every connection is being closed.
    std::atomic<bool> forced{false};

    void report(std::string_view line) const noexcept {
        try {
            if (log) {
                log(line);
            } else {
                std::fprintf(stderr, "aggregator http: %.*s\n", static_cast<int>(line.size()),
                             line.data());
            }
        } catch (...) {
            // A failing log must not take the I/O loop down with it.
        }
    }

    /// The route of a request target, as the observer names it.
    std::size_t route_of(std::string_view target) const noexcept {
        try {
            return observer.route_of ? observer.route_of(target) : response_observer::no_route;
        } catch (...) {
            return response_observer::no_route;
        }
    }

    /// Tells the observer of a response written (or refused).
    void observe(std::size_t route, unsigned status, std::chrono::nanoseconds took) const noexcept {
        try {
            if (observer.on_response) {
                observer.on_response(route, status, took);
            }
        } catch (...) {
            // Metrics must not take the I/O loop down with them.
        }
    }

    void count_response(unsigned status) noexcept {
        switch (status / 100) {
        case 2:
            count_one(count.responses_2xx);
            break;
        case 4:
            count_one(count.responses_4xx);
            break;
        case 5:
            count_one(count.responses_5xx);
            break;
        default:
            count_one(count.responses_other);
            break;
        }
    }

    static std::string make_refusal(const std::string& server_name) {
        const std::string body = R"({"error":"too many connections"})";
        return "HTTP/1.1 503 Service Unavailable\r\nServer: " + server_name +
               "\r\nContent-Type: application/json\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" +
               body;
    }
};

/// A response the server writes itself: a JSON object naming the problem.
inline http::response<http::string_body> server_error_response(http::status status,
                                                               std::string_view message) {
    http::response<http::string_body> res{status, 11};
    res.set(http::field::content_type, "application/json");
    res.body().reserve(message.size() + 12);
    res.body().append(R"({"error":")").append(message).append(R"("})");
    return res;
}

/// True if the Connection field holds the `close` token.
inline bool says_close(const http::response<http::string_body>& res) {
    for (const auto& token : http::token_list{res[http::field::connection]}) {
        if (beast::iequals(token, "close")) {
            return true;
        }
    }
    return false;
}

/// What Beast's parser accepts in a request header but the server must refuse, as a status and
/// a message; sets `expect_continue` when the client waits for `100 Continue`.
inline std::optional<std::pair<http::status, std::string_view>>
check_header(const http::request<http::string_body>& req, bool& expect_continue) {
    using refusal = std::pair<http::status, std::string_view>;
    const auto hosts = req.count(http::field::host);
    if (hosts > 1 || (hosts == 0 && req.version() == 11)) {
        return refusal{http::status::bad_request, "a request needs exactly one Host"};
    }

    // Every Transfer-Encoding field, as one list of codings.
    std::size_t codings = 0;
    bool last_is_chunked = false;
    const auto [te_begin, te_end] = req.equal_range(http::field::transfer_encoding);
    for (auto it = te_begin; it != te_end; ++it) {
        for (const auto& coding : http::token_list{it->value()}) {
            ++codings;
            last_is_chunked = beast::iequals(coding, "chunked");
        }
    }
    if (te_begin != te_end) {
        if (!last_is_chunked) {
            return refusal{http::status::bad_request, "the final transfer coding must be chunked"};
        }
        if (codings != 1) {
            return refusal{http::status::not_implemented,
                           "transfer codings other than chunked are not supported"};
        }
    }

    const auto expects = req.count(http::field::expect);
    if (expects > 1) {
        return refusal{http::status::expectation_failed, "unsupported expectation"};
    }
    if (expects == 1) {
        const bool is_continue = beast::iequals(req[http::field::expect], "100-continue");
        if (!is_continue) {
            return refusal{http::status::expectation_failed, "unsupported expectation"};
        }
        // HTTP/1.0 clients cannot expect an interim response; RFC 9110 says to ignore it.
        expect_continue = req.version() == 11;
    }
    return std::nullopt;
}

/// One client connection: reads requests, calls the handler, writes responses, on the one I/O
/// thread `thread` (an index) that runs its socket's io_context.
class http_connection : public std::enable_shared_from_this<http_connection> {
public:
    http_connection(tcp::socket socket, std::shared_ptr<http_server_state> state, std::uint64_t id,
                    std::size_t thread)
        : stream_(std::move(socket)), state_(std::move(state)), id_(id), thread_(thread),
          buffer_(state_->limits.header_bytes + read_slack) {}

    http_connection(const http_connection&) = delete;
    http_connection& operator=(const http_connection&) = delete;

    ~http_connection() {
        const std::lock_guard lock(state_->mutex);
        state_->connections.erase(id_);
        state_->open.fetch_sub(1, std::memory_order_relaxed);
        state_->open_on[thread_].fetch_sub(1, std::memory_order_relaxed);
        if (state_->connections.empty()) {
            state_->drained.notify_all();
        }
    }

    [[nodiscard]] tcp::socket::executor_type get_executor() { return stream_.get_executor(); }

    /// Reads the first request. On the connection's thread.
    void start() {
        guarded([&] {
            if (closed_) {
                return;
            }
            beast::error_code ignored;
            stream_.socket().set_option(tcp::no_delay(true), ignored);
            request_start_ = steady_clock::now();
            read_header();
        });
    }

    /// The server is stopping: close now if no request is in progress (or if `force`), else
    /// let the current request be answered with `Connection: close`. On the connection's
    /// thread.
    void on_server_stop(bool force) noexcept {
        if (closed_) {
            return;
        }
        const bool nothing_read =
            phase_ == phase::reading && buffer_.size() == 0 && !(parser_ && parser_->got_some());
        if (force || phase_ == phase::idle || phase_ == phase::lingering || nothing_read) {
            close_now();
        }
    }

private:
    enum class phase { reading, idle, handling, writing, lingering, closed };

    template <class F>
    void guarded(F&& f) noexcept {
        try {
            f();
        } catch (const std::exception& e) {
            state_->report(std::string("connection closed after an exception: ") + e.what());
            close_now();
        } catch (...) {
            state_->report("connection closed after an unknown exception");
            close_now();
        }
    }

    void close_now() noexcept {
        if (closed_) {
            return;
        }
        closed_ = true;
        phase_ = phase::closed;
        stream_.close();
    }

    void new_parser() {
        parser_.emplace();
        parser_->header_limit(static_cast<std::uint32_t>(state_->limits.header_bytes));
        parser_->body_limit(state_->limits.body_bytes);
    }

    void read_header() {
        phase_ = phase::reading;
        new_parser();
        const auto& l = state_->limits;
        stream_.expires_at(request_start_ + std::min(l.header_timeout, l.request_timeout));
        http::async_read_header(stream_, buffer_, *parser_,
                                [self = shared_from_this()](beast::error_code ec, std::size_t) {
                                    self->guarded([&] { self->on_header(ec); });
                                });
    }

    void on_header(beast::error_code ec) {
        if (closed_) {
            return;
        }
        if (ec) {
            return read_failed(ec);
        }
        bool expect_continue = false;
        if (const auto refusal = check_header(parser_->get(), expect_continue)) {
            return reply_error(refusal->first, refusal->second);
        }
        if (parser_->is_done()) {
            return handle();
        }
        if (expect_continue) {
            static constexpr std::string_view interim = "HTTP/1.1 100 Continue\r\n\r\n";
            stream_.expires_after(state_->limits.write_timeout);
            net::async_write(stream_, net::buffer(interim.data(), interim.size()),
                             [self = shared_from_this()](beast::error_code e, std::size_t) {
                                 self->guarded([&] {
                                     if (self->closed_) {
                                         return;
                                     }
                                     if (e) {
                                         return self->write_failed(e);
                                     }
                                     self->read_body();
                                 });
                             });
            return;
        }
        read_body();
    }

    void read_body() {
        phase_ = phase::reading;
        stream_.expires_at(request_start_ + state_->limits.request_timeout);
        http::async_read(stream_, buffer_, *parser_,
                         [self = shared_from_this()](beast::error_code ec, std::size_t) {
                             self->guarded([&] {
                                 if (self->closed_) {
                                     return;
                                 }
                                 if (ec) {
                                     return self->read_failed(ec);
                                 }
                                 self->handle();
                             });
                         });
    }

    void read_failed(beast::error_code ec) {
        if (ec == beast::error::timeout) {
            count_one(state_->count.timeouts);
            return close_now();
        }
        if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
            return reply_error(http::status::request_header_fields_too_large,
                               "request header fields too large");
        }
        if (ec == http::error::body_limit) {
            return reply_error(http::status::payload_too_large, "request body too large");
        }
        // The client closed the connection (between requests, or in the middle of one), or
        // it failed: nobody is left to answer.
        if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
            ec.category() != http::make_error_code(http::error::need_more).category()) {
            return close_now();
        }
        reply_error(http::status::bad_request, "malformed request");
    }

    void write_failed(beast::error_code ec) {
        if (ec == beast::error::timeout) {
            count_one(state_->count.timeouts);
        }
        close_now();
    }

    /// Answers a request the server refuses itself, then closes.
    void reply_error(http::status status, std::string_view message) {
        count_one(state_->count.bad_requests);
        // The start line is parsed before the fields, so a request refused for its header or
        // body still has the target it asked for.
        route_ = parser_ && !parser_->get().target().empty()
                     ? state_->route_of(parser_->get().target())
                     : response_observer::no_route;
        res_ = server_error_response(status, message);
        keep_alive_ = false;
        res_.keep_alive(false);
        res_.set(http::field::server, state_->limits.server_name);
        res_.prepare_payload();
        parser_.reset();
        write();
    }

    void handle() {
        phase_ = phase::handling;
        ++served_;
        count_one(state_->count.requests);
        const auto& req = parser_->get();
        route_ = state_->route_of(req.target());
        try {
            res_ = state_->handle(req);
            finish(req);
        } catch (const std::exception& e) {
            count_one(state_->count.handler_errors);
            state_->report(std::string("handler threw for ") + std::string(req.target()) + ": " +
                           e.what());
            res_ =
                server_error_response(http::status::internal_server_error, "internal server error");
            finish(req);
        } catch (...) {
            count_one(state_->count.handler_errors);
            state_->report(std::string("handler threw an unknown exception for ") +
                           std::string(req.target()));
            res_ =
                server_error_response(http::status::internal_server_error, "internal server error");
            finish(req);
        }
        parser_.reset();
        write();
    }

    /// Fills in what the server owns in a response: version, Connection, Server, framing.
    void finish(const http::request<http::string_body>& req) {
        if (res_.result_int() < 200) {
            throw std::logic_error("the handler returned an interim (1xx) response");
        }
        keep_alive_ = req.keep_alive() && !says_close(res_) &&
                      served_ < state_->limits.max_requests_per_connection &&
                      !state_->stopping.load(std::memory_order_relaxed);
        res_.version(req.version());
        res_.keep_alive(keep_alive_);
        if (res_.find(http::field::server) == res_.end()) {
            res_.set(http::field::server, state_->limits.server_name);
        }
        // Throws for a body on a 204 or 304, which then becomes a 500.
        res_.prepare_payload();
        if (req.method() == http::verb::head) {
            res_.body().clear(); // Content-Length stays that of the GET
        }
    }

    void write() {
        if (state_->forced.load(std::memory_order_relaxed)) {
            return close_now(); // a handler that outlived `stop`'s deadline
        }
        phase_ = phase::writing;
        state_->count_response(res_.result_int());
        stream_.expires_after(state_->limits.write_timeout);
        http::async_write(stream_, res_,
                          [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              self->guarded([&] { self->on_written(ec); });
                          });
    }

    void on_written(beast::error_code ec) {
        if (closed_) {
            return;
        }
        state_->observe(route_, res_.result_int(), steady_clock::now() - request_start_);
        if (ec) {
            return write_failed(ec);
        }
        res_ = {};
        if (!keep_alive_ || state_->stopping.load(std::memory_order_relaxed)) {
            return linger();
        }
        if (buffer_.size() > 0) { // a pipelined request
            request_start_ = steady_clock::now();
            return read_header();
        }
        wait_idle();
    }

    /// Waits for the first byte of the next request, up to `idle_timeout`.
    void wait_idle() {
        phase_ = phase::idle;
        buffer_.shrink_to_fit();
        stream_.expires_after(state_->limits.idle_timeout);
        stream_.async_read_some(buffer_.prepare(beast::read_size(buffer_, 4096)),
                                [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                                    self->guarded([&] { self->on_idle_read(ec, n); });
                                });
    }

    void on_idle_read(beast::error_code ec, std::size_t n) {
        if (closed_) {
            return;
        }
        if (ec) {
            if (ec == beast::error::timeout) {
                count_one(state_->count.idle_closes);
            }
            return close_now();
        }
        buffer_.commit(n);
        request_start_ = steady_clock::now();
        read_header();
    }

    /// Stops sending, then discards input until the client closes or `linger_timeout` passes.
    void linger() {
        phase_ = phase::lingering;
        beast::error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
        buffer_.clear();
        stream_.expires_after(state_->limits.linger_timeout);
        discard();
    }

    void discard() {
        stream_.async_read_some(buffer_.prepare(buffer_.max_size()),
                                [self = shared_from_this()](beast::error_code ec, std::size_t) {
                                    self->guarded([&] {
                                        if (self->closed_) {
                                            return;
                                        }
                                        if (ec) {
                                            return self->close_now();
                                        }
                                        self->discard();
                                    });
                                });
    }

    beast::tcp_stream stream_;
    std::shared_ptr<http_server_state> state_;
    std::uint64_t id_;
    std::size_t thread_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    http::response<http::string_body> res_;
    steady_clock::time_point request_start_{};
    std::size_t route_ = response_observer::no_route;
    std::size_t served_ = 0;
    phase phase_ = phase::reading;
    bool keep_alive_ = false;
    bool closed_ = false;
};

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

/// Accept errors about one connection that failed before it was accepted (Linux reports
/// pending network errors from accept): accepting again at once is right.
inline bool is_per_connection_accept_error(const beast::error_code& ec) noexcept {
    if (ec == net::error::connection_aborted) {
        return true;
    }
    if (ec.category() != boost::system::system_category()) {
        return false;
    }
    switch (ec.value()) {
    case EPROTO:
    case ENOPROTOOPT:
    case ENETDOWN:
    case ENETUNREACH:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case EPERM:
        return true;
    default:
        return false;
    }
}

} // namespace detail

/// An HTTP/1.1 server on one address, answering every request with a `handler` (see the top
/// of this header for what it guarantees against hostile clients).
///
/// Threading: `stats` and `limits` may be called from any thread at any time; `start` and
/// `stop` from any thread but the server's own I/O threads (they serialize with each other).
class http_server {
public:
    /// Checks the address ("ip:port", "[ipv6]:port"; port 0 picks a free one), the limits and
    /// the handler, throwing `std::invalid_argument` naming what is wrong. `threads` I/O
    /// threads will run connections and the handler; `log` receives error lines (stderr if
    /// empty); `observer` is told of every response. Nothing is bound or started. Allocates.
    http_server(std::string address, http_limits limits, handler on_request, unsigned threads = 2,
                error_log log = {}, response_observer observer = {})
        : address_(std::move(address)), endpoint_(detail::parse_listen_address(address_)),
          thread_count_(threads), contexts_(make_contexts(limits, threads)),
          accept_strand_(boost::asio::make_strand(*contexts_.front())), acceptor_(accept_strand_),
          backoff_timer_(accept_strand_) {
        if (!on_request) {
            throw std::invalid_argument("http_server: the handler is empty");
        }
        backoff_ = limits.accept_backoff_min;
        state_ = std::make_shared<detail::http_server_state>(
            std::move(limits), std::move(on_request), std::move(log), std::move(observer), threads);
    }

    http_server(const http_server&) = delete;
    http_server& operator=(const http_server&) = delete;

    /// Stops with a zero deadline (requests in progress are cut off) if `stop` was not called.
    /// Not on one of the server's I/O threads.
    ~http_server() {
        try {
            stop(std::chrono::milliseconds::zero());
        } catch (const std::exception& e) {
            state_->report(std::string("stop failed in ~http_server: ") + e.what());
        }
    }

    /// Binds, listens and starts the I/O threads; returns the bound port. Throws
    /// `std::runtime_error` naming the address if it cannot listen, `std::logic_error` if
    /// called twice or after `stop`. Any thread; allocates.
    std::uint16_t start() {
        const std::lock_guard lifecycle(lifecycle_mutex_);
        if (started_ || stopped_) {
            throw std::logic_error("http_server: start() may be called once, before stop()");
        }
        boost::beast::error_code ec;
        const auto fail = [&](std::string_view step) {
            boost::beast::error_code ignored;
            acceptor_.close(ignored);
            return std::runtime_error("http_server: cannot listen on " + address_ + " (" +
                                      std::string(step) + "): " + ec.message());
        };
        acceptor_.open(endpoint_.protocol(), ec);
        if (ec) {
            throw fail("open");
        }
        acceptor_.set_option(boost::asio::socket_base::reuse_address(true), ec);
        if (ec) {
            throw fail("SO_REUSEADDR");
        }
        acceptor_.bind(endpoint_, ec);
        if (ec) {
            throw fail("bind");
        }
        acceptor_.listen(boost::asio::socket_base::max_listen_connections, ec);
        if (ec) {
            throw fail("listen");
        }
        const auto local = acceptor_.local_endpoint(ec);
        if (ec) {
            throw fail("local_endpoint");
        }

        work_.reserve(contexts_.size());
        for (const auto& io : contexts_) {
            work_.push_back(boost::asio::make_work_guard(*io));
        }
        boost::asio::post(accept_strand_, [this] { accept(); });
        try {
            threads_.reserve(thread_count_);
            for (unsigned i = 0; i < thread_count_; ++i) {
                threads_.emplace_back([this, i] {
                    tradeagg::detail::name_this_thread("http-" + std::to_string(i));
                    run(*contexts_[i]);
                });
            }
        } catch (...) {
            boost::asio::post(accept_strand_, [this] { close_acceptor(); });
            work_.clear();
            join();
            throw;
        }
        started_ = true;
        return local.port();
    }

    /// Stops accepting, closes idle keep-alive connections and connections that have not sent
    /// a byte of a request, lets requests in progress be answered (with `Connection: close`)
    /// until `deadline`, then closes every connection and joins the I/O threads. A handler
    /// call still running is waited for (it cannot be interrupted). Any thread but the
    /// server's I/O threads; blocks. Idempotent; a server is not restarted.
    void stop(std::chrono::milliseconds deadline) {
        const std::lock_guard lifecycle(lifecycle_mutex_);
        for (const auto& t : threads_) {
            if (t.get_id() == std::this_thread::get_id()) {
                throw std::logic_error("http_server: stop() called on one of its I/O threads");
            }
        }
        if (stopped_) {
            return;
        }
        stopped_ = true;
        if (!started_) {
            return;
        }
        const auto until = detail::steady_clock::now() + deadline;

        auto notify = [](std::vector<std::shared_ptr<detail::http_connection>>& live, bool force) {
            for (auto& c : live) {
                boost::asio::post(c->get_executor(), [c, force] { c->on_server_stop(force); });
            }
            live.clear(); // the posted calls hold their connection until they run
        };
        std::vector<std::shared_ptr<detail::http_connection>> live;
        {
            const std::lock_guard lock(state_->mutex);
            state_->stopping.store(true, std::memory_order_relaxed);
            collect(live);
        }
        boost::asio::post(accept_strand_, [this] { close_acceptor(); });
        notify(live, false);
        {
            std::unique_lock lock(state_->mutex);
            state_->drained.wait_until(lock, until, [&] { return state_->connections.empty(); });
            state_->forced.store(true, std::memory_order_relaxed);
            collect(live);
        }
        notify(live, true);
        work_.clear();
        join();
    }

    /// Counters and the number of open connections. Any thread; never blocks or allocates.
    [[nodiscard]] http_stats stats() const noexcept {
        const auto& c = state_->count;
        const auto get = [](const std::atomic<std::uint64_t>& v) {
            return v.load(std::memory_order_relaxed);
        };
        http_stats s;
        s.connections_open = state_->open.load(std::memory_order_relaxed);
        s.connections_accepted = get(c.accepted);
        s.connections_refused = get(c.refused);
        s.requests = get(c.requests);
        s.responses_2xx = get(c.responses_2xx);
        s.responses_4xx = get(c.responses_4xx);
        s.responses_5xx = get(c.responses_5xx);
        s.responses_other = get(c.responses_other);
        s.bad_requests = get(c.bad_requests);
        s.timeouts = get(c.timeouts);
        s.idle_closes = get(c.idle_closes);
        s.handler_errors = get(c.handler_errors);
        s.accept_errors = get(c.accept_errors);
        s.loop_exceptions = get(c.loop_exceptions);
        return s;
    }

    /// The limits the server runs with. Any thread; never blocks.
    [[nodiscard]] const http_limits& limits() const noexcept { return state_->limits; }

private:
    using tcp = boost::asio::ip::tcp;

    /// Live connections, under `state_->mutex`.
    void collect(std::vector<std::shared_ptr<detail::http_connection>>& out) {
        for (const auto& [id, weak] : state_->connections) {
            if (auto c = weak.lock()) {
                out.push_back(std::move(c));
            }
        }
    }

    /// One io_context per I/O thread (checks the limits first, as the constructor's first step).
    static std::vector<std::unique_ptr<boost::asio::io_context>>
    make_contexts(const http_limits& limits, unsigned threads) {
        detail::check_http_limits(limits, threads);
        std::vector<std::unique_ptr<boost::asio::io_context>> out;
        out.reserve(threads);
        for (unsigned i = 0; i < threads; ++i) {
            out.push_back(std::make_unique<boost::asio::io_context>(1));
            // Asio makes an io_context's reactor (an epoll, an eventfd and a timerfd) with its
            // first socket or timer. Made here, so that a context whose first connection
            // arrives while descriptors have run out can still take it once they are back.
            const boost::asio::ip::tcp::socket socket_service(*out.back());
            const boost::asio::steady_timer timer_service(*out.back());
        }
        return out;
    }

    /// One I/O thread. An exception escaping a handler is logged and the loop run again.
    void run(boost::asio::io_context& io) noexcept {
        for (;;) {
            try {
                io.run();
                return;
            } catch (const std::exception& e) {
                detail::count_one(state_->count.loop_exceptions);
                state_->report(std::string("exception escaped an I/O handler: ") + e.what());
            } catch (...) {
                detail::count_one(state_->count.loop_exceptions);
                state_->report("unknown exception escaped an I/O handler");
            }
        }
    }

    void join() {
        for (auto& t : threads_) {
            t.join();
        }
        threads_.clear();
    }

    // The accept loop runs on accept_strand_.

    void accept() {
        // The thread with the fewest open connections. A busy keep-alive connection and an
        // idle one weigh the same: open connections are what a client controls, load is not.
        std::size_t chosen = 0;
        for (std::size_t i = 1; i < contexts_.size(); ++i) {
            if (state_->open_on[i].load(std::memory_order_relaxed) <
                state_->open_on[chosen].load(std::memory_order_relaxed)) {
                chosen = i;
            }
        }
        acceptor_.async_accept(contexts_[chosen]->get_executor(),
                               [this, chosen](boost::beast::error_code ec, tcp::socket socket) {
                                   on_accept(ec, std::move(socket), chosen);
                               });
    }

    void on_accept(boost::beast::error_code ec, tcp::socket socket, std::size_t thread) noexcept {
        if (ec == boost::asio::error::operation_aborted || !acceptor_.is_open()) {
            return;
        }
        try {
            if (ec) {
                detail::count_one(state_->count.accept_errors);
                if (detail::is_per_connection_accept_error(ec)) {
                    return accept();
                }
                state_->report("accept failed, retrying in " + std::to_string(backoff_.count()) +
                               " ms: " + ec.message());
                return back_off();
            }
            backoff_ = state_->limits.accept_backoff_min;
            admit(std::move(socket), thread);
            accept();
        } catch (const std::exception& e) {
            state_->report(std::string("accept loop: ") + e.what());
            try {
                back_off();
            } catch (...) {
                state_->report("accept loop stopped: cannot arm the backoff timer");
            }
        }
    }

    void back_off() {
        backoff_timer_.expires_after(backoff_);
        backoff_ = std::min(backoff_ * 2, state_->limits.accept_backoff_max);
        backoff_timer_.async_wait([this](boost::beast::error_code ec) {
            if (!ec && acceptor_.is_open()) {
                try {
                    accept();
                } catch (const std::exception& e) {
                    state_->report(std::string("accept loop stopped: ") + e.what());
                }
            }
        });
    }

    void admit(tcp::socket socket, std::size_t thread) {
        // Declared before the lock: a connection destroyed while unwinding from a failed
        // emplace must not lock the mutex its destructor takes while it is still held.
        std::shared_ptr<detail::http_connection> conn;
        {
            const std::lock_guard lock(state_->mutex);
            if (state_->stopping.load(std::memory_order_relaxed)) {
                boost::beast::error_code ignored;
                socket.close(ignored);
                return;
            }
            if (state_->open.load(std::memory_order_relaxed) < state_->limits.max_connections) {
                const auto id = state_->next_id++;
                conn = std::make_shared<detail::http_connection>(std::move(socket), state_, id,
                                                                 thread);
                state_->open_on[thread].fetch_add(1, std::memory_order_relaxed);
                state_->open.fetch_add(1, std::memory_order_relaxed);
                state_->connections.emplace(id, conn);
                detail::count_one(state_->count.accepted);
                // Posted under the lock, so that it runs before anything `stop` posts to it.
                boost::asio::post(conn->get_executor(), [conn] { conn->start(); });
                return;
            }
        }
        // At the cap. One non-blocking write: a fresh socket's send buffer is empty, so the 503
        // fits, and nothing here waits on a client the server has no room for.
        detail::count_one(state_->count.refused);
        boost::beast::error_code ignored;
        socket.non_blocking(true, ignored);
        socket.write_some(boost::asio::buffer(state_->refusal), ignored);
        state_->observe(response_observer::no_route, 503, std::chrono::nanoseconds::zero());
        socket.shutdown(tcp::socket::shutdown_send, ignored);
        socket.close(ignored);
    }

    void close_acceptor() noexcept {
        boost::beast::error_code ignored;
        acceptor_.close(ignored);
        try {
            backoff_timer_.cancel();
        } catch (...) {
            // Only fails if the reactor does; the timer then fires and finds the acceptor closed.
        }
    }

    std::string address_;
    tcp::endpoint endpoint_;
    unsigned thread_count_;
    std::shared_ptr<detail::http_server_state> state_;
    // Destroyed before state_, so that connections destroyed with the io_contexts' pending
    // handlers still find it (they also hold it). One per I/O thread; the acceptor is on the
    // first.
    std::vector<std::unique_ptr<boost::asio::io_context>> contexts_;
    boost::asio::strand<boost::asio::io_context::executor_type> accept_strand_;
    tcp::acceptor acceptor_;
    boost::asio::steady_timer backoff_timer_;
    std::chrono::milliseconds backoff_{};
    std::vector<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
    std::vector<std::thread> threads_;
    std::mutex lifecycle_mutex_;
    bool started_ = false;
    bool stopped_ = false;
};

} // namespace aggregator
