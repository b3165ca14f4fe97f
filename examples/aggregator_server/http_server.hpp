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

#include "http_connection.hpp"
#include "http_limits.hpp"
namespace aggregator {

namespace detail {

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
