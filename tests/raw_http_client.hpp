#pragma once
// A blocking HTTP/1.1 client over a POSIX socket, for tests that must choose every byte, pause
// and half-close, with a deadline on every read; and the requests the tests build by hand.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

namespace tradeagg::testing {

/// Polls `done` until it holds or `timeout` passes.
template <class Predicate>
inline bool eventually(Predicate done,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() >= until) {
            return done();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
}

// ---------------------------------------------------------------------------------------------
// A blocking TCP client with deadlines on every read.

enum class outcome { answered, closed, timeout, garbage };

struct reply {
    outcome what = outcome::timeout;
    boost::beast::http::response<boost::beast::http::string_body> res;
};

class raw_client {
public:
    /// Connects to 127.0.0.1:port; throws if it cannot. A `receive_buffer` > 0 is set before
    /// connecting (to make the server's writes block).
    explicit raw_client(std::uint16_t port, int receive_buffer = 0) {
        if (!try_connect(port, receive_buffer)) {
            throw std::runtime_error("cannot connect: " + std::string(std::strerror(errno)));
        }
    }

    raw_client(const raw_client&) = delete;
    raw_client& operator=(const raw_client&) = delete;
    ~raw_client() { close(); }

    /// A client that only tries: true if the connection was accepted by the kernel.
    static bool can_connect(std::uint16_t port) {
        raw_client c;
        return c.try_connect(port, 0);
    }

    void close() noexcept {
        if (fd_ >= 0) {
            ::close(fd_);
            fd_ = -1;
        }
    }

    /// Sends everything; false if the connection failed.
    bool send(std::string_view data) {
        while (!data.empty()) {
            const auto n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                return false;
            }
            data.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }

    /// Reads one response (a 100 Continue counts as one). `head`: the request was HEAD.
    reply read_response(std::chrono::milliseconds timeout = std::chrono::seconds(10),
                        bool head = false) {
        const auto until = std::chrono::steady_clock::now() + timeout;
        boost::beast::http::response_parser<boost::beast::http::string_body> parser;
        parser.eager(true);
        parser.skip(head);
        parser.header_limit(64 * 1024);
        parser.body_limit(64 * 1024 * 1024);
        for (;;) {
            while (!pending_.empty()) {
                boost::beast::error_code ec;
                const auto used = parser.put(boost::asio::buffer(pending_), ec);
                pending_.erase(0, used);
                if (ec == boost::beast::http::error::need_more) {
                    break;
                }
                if (ec) {
                    return {outcome::garbage, {}};
                }
                if (parser.is_done()) {
                    return {outcome::answered, parser.release()};
                }
                if (used == 0) {
                    break;
                }
            }
            switch (receive(until)) {
            case io::data:
                break;
            case io::closed:
                return {outcome::closed, {}};
            case io::timeout:
                return {outcome::timeout, {}};
            }
        }
    }

    /// Waits until some bytes arrive and keeps them for `read_response`; false if the
    /// connection closed or nothing came within `timeout`.
    bool wait_for_data(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
        return receive(std::chrono::steady_clock::now() + timeout) == io::data;
    }

    /// Reads and discards until the server closes (true) or `timeout` passes (false).
    bool closed_within(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
        const auto until = std::chrono::steady_clock::now() + timeout;
        for (;;) {
            pending_.clear();
            switch (receive(until)) {
            case io::data:
                break;
            case io::closed:
                return true;
            case io::timeout:
                return false;
            }
        }
    }

    /// Sends `data` one byte per `interval` until the server closes the connection; returns
    /// the time from the first byte to the close, or nothing if all of it was sent.
    std::optional<std::chrono::steady_clock::duration> trickle(std::string_view data,
                                                               std::chrono::milliseconds interval) {
        const auto first = std::chrono::steady_clock::now();
        for (const char c : data) {
            if (!send(std::string_view(&c, 1))) {
                return std::chrono::steady_clock::now() - first;
            }
            if (receive(std::chrono::steady_clock::now() + interval) == io::closed) {
                return std::chrono::steady_clock::now() - first;
            }
        }
        return std::nullopt;
    }

private:
    enum class io { data, closed, timeout };

    raw_client() = default;

    bool try_connect(std::uint16_t port, int receive_buffer) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        if (fd_ < 0) {
            return false;
        }
        if (receive_buffer > 0) {
            ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
        }
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return ::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
    }

    io receive(std::chrono::steady_clock::time_point until) {
        for (;;) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                until - std::chrono::steady_clock::now());
            pollfd p{fd_, POLLIN, 0};
            const int ready = ::poll(&p, 1, static_cast<int>(std::max(left.count(), 0L)));
            if (ready < 0 && errno == EINTR) {
                continue;
            }
            if (ready <= 0) {
                return io::timeout;
            }
            char chunk[16 * 1024];
            const auto n = ::recv(fd_, chunk, sizeof chunk, 0);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                return io::closed; // EOF, or a reset
            }
            pending_.append(chunk, static_cast<std::size_t>(n));
            return io::data;
        }
    }

    int fd_ = -1;
    std::string pending_;
};

inline std::string get(std::string_view target, std::string_view extra = "") {
    return "GET " + std::string(target) + " HTTP/1.1\r\nHost: test\r\n" + std::string(extra) +
           "\r\n";
}

inline std::string post(std::string_view target, std::string_view body,
                        std::string_view content_type = "text/plain") {
    return "POST " + std::string(target) +
           " HTTP/1.1\r\nHost: test\r\nContent-Type: " + std::string(content_type) +
           "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + std::string(body);
}

inline std::string chunked(std::string_view target, std::string_view chunks_and_trailer) {
    return "POST " + std::string(target) +
           " HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n" +
           std::string(chunks_and_trailer);
}

/// The response's status, or -1 for a closed connection, -2 for a timeout, -3 for garbage.
inline int status_of(const reply& r) {
    switch (r.what) {
    case outcome::answered:
        return static_cast<int>(r.res.result_int());
    case outcome::closed:
        return -1;
    case outcome::timeout:
        return -2;
    case outcome::garbage:
        return -3;
    }
    return -4;
}

} // namespace tradeagg::testing
