#pragma once
// One client connection of the HTTP layer: reads requests under deadlines and limits, calls
// the handler, writes responses, and refuses what the handler must never see (see the top of
// http_server.hpp for what it guarantees). Internal to http_server.hpp.

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

#include "http_limits.hpp"
#include <tradeagg/detail/thread_name.hpp>
namespace aggregator {
namespace detail {

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

    /// A completion handler for a step after which the connection goes on: unless it closed
    /// meanwhile, calls `failed(ec)` on an error and `next()` otherwise, exceptions caught.
    template <class Failed, class Next>
    auto then(Failed failed, Next next) {
        return [self = shared_from_this(), failed, next](beast::error_code ec, std::size_t) {
            self->guarded([&] {
                if (self->closed_) {
                    return;
                }
                if (ec) {
                    return ((*self).*failed)(ec);
                }
                ((*self).*next)();
            });
        };
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
                             then(&http_connection::write_failed, &http_connection::read_body));
            return;
        }
        read_body();
    }

    void read_body() {
        phase_ = phase::reading;
        // Beast reads max(512, capacity - size) bytes at a time: with the capacity an idle
        // connection shrank to, a 100 KB body took some 200 reads, each a system call and a
        // timer re-arm. Reads of up to the buffer's limit take a few.
        buffer_.reserve(buffer_.max_size());
        stream_.expires_at(request_start_ + state_->limits.request_timeout);
        http::async_read(stream_, buffer_, *parser_,
                         then(&http_connection::read_failed, &http_connection::handle));
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
                                then(&http_connection::closed_by_peer, &http_connection::discard));
    }

    /// The client closed (or failed) while the server was discarding its input.
    void closed_by_peer(beast::error_code) noexcept { close_now(); }

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

} // namespace detail
} // namespace aggregator
