#pragma once
// hiredis's asynchronous client driven by Boost.Asio: a watcher that waits for the context's
// socket to become readable or writable on an `io_context` and calls hiredis back.
//
// hiredis 0.14.1 facts this is built around:
// - hiredis owns the socket: the watcher waits on it through a `posix::stream_descriptor` and,
//   when hiredis cleans up, releases it (never closes it: hiredis does).
// - hiredis frees the context itself after the disconnect callback, and calls the `cleanup`
//   hook while doing so; the watcher must not touch the context after that. A handler that
//   calls into hiredis may be the one during which the context goes away, so the watcher keeps
//   itself alive (shared ownership) until its last handler has returned.
// - There is no command timeout (`redisAsyncSetTimeout` came with 1.0): deadlines are the
//   caller's own timers, and `redisAsyncFree` (which fails every pending callback) is how a
//   stuck connection is dropped. `redisAsyncDisconnect` waits for replies that may never come.
//
// Everything here runs on the thread that runs the `io_context`.

#include <cstdint>
#include <memory>
#include <system_error>
#include <utility>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <tradeagg/config.hpp>

namespace tradeagg::redis {

/// Drives one `redisAsyncContext` from an `io_context`. Create with `attach`; it lives until
/// hiredis cleans the context up. Not thread-safe: the io_context's thread only.
class asio_watcher : public std::enable_shared_from_this<asio_watcher> {
public:
    /// Hooks `ac` to `io`. Returns false (and changes nothing) if the context already has an
    /// event library attached or its socket cannot be watched. Allocates.
    static bool attach(redisAsyncContext* ac, boost::asio::io_context& io) {
        if (ac == nullptr || ac->ev.data != nullptr) {
            return false;
        }
        auto w = std::shared_ptr<asio_watcher>(new asio_watcher(ac, io));
        boost::system::error_code ec;
        w->socket_.assign(ac->c.fd, ec);
        if (ec) {
            return false;
        }
        w->self_ = w;
        ac->ev.data = w.get();
        ac->ev.addRead = [](void* p) { static_cast<asio_watcher*>(p)->want(true, true); };
        ac->ev.delRead = [](void* p) { static_cast<asio_watcher*>(p)->want(true, false); };
        ac->ev.addWrite = [](void* p) { static_cast<asio_watcher*>(p)->want(false, true); };
        ac->ev.delWrite = [](void* p) { static_cast<asio_watcher*>(p)->want(false, false); };
        ac->ev.cleanup = [](void* p) { static_cast<asio_watcher*>(p)->cleanup(); };
        return true;
    }

    asio_watcher(const asio_watcher&) = delete;
    asio_watcher& operator=(const asio_watcher&) = delete;

    /// Whether hiredis is waiting to write on a context, and how many times the socket has been
    /// found writable for it so far: a caller that sees the same count while hiredis waits for
    /// longer than its write deadline knows the connection is stuck.
    struct write_state {
        bool waiting = false;
        std::uint64_t writes = 0;
    };

    /// The write state of a context this watcher drives (all zero for one without a watcher).
    /// The io_context's thread only. Never allocates.
    static write_state write_state_of(const redisAsyncContext* ac) noexcept {
        const auto* w = ac != nullptr ? static_cast<const asio_watcher*>(ac->ev.data) : nullptr;
        return w == nullptr ? write_state{} : write_state{w->want_write_, w->writes_};
    }

private:
    asio_watcher(redisAsyncContext* ac, boost::asio::io_context& io) : ac_(ac), socket_(io) {}

    void want(bool read, bool on) {
        (read ? want_read_ : want_write_) = on;
        if (on) {
            arm(read);
        }
    }

    /// Waits for the socket once, if not waiting already; the handler calls hiredis and, if
    /// hiredis still wants it, waits again.
    void arm(bool read) {
        bool& armed = read ? read_armed_ : write_armed_;
        if (armed || ac_ == nullptr) {
            return;
        }
        armed = true;
        const auto kind = read ? boost::asio::posix::stream_descriptor::wait_read
                               : boost::asio::posix::stream_descriptor::wait_write;
        socket_.async_wait(kind, [self = shared_from_this(), read](boost::system::error_code ec) {
            (read ? self->read_armed_ : self->write_armed_) = false;
            if (ec || self->ac_ == nullptr || !(read ? self->want_read_ : self->want_write_)) {
                return;
            }
            if (read) {
                redisAsyncHandleRead(self->ac_);
            } else {
                ++self->writes_;
                redisAsyncHandleWrite(self->ac_);
            }
            // The call may have freed the context (cleanup ran): then ac_ is null.
            if (self->ac_ != nullptr && (read ? self->want_read_ : self->want_write_)) {
                self->arm(read);
            }
        });
    }

    /// hiredis is freeing the context: stop waiting, give the descriptor back unclosed, and let
    /// the last handler holding us end our life.
    void cleanup() {
        want_read_ = want_write_ = false;
        if (ac_ != nullptr) {
            ac_->ev.data = nullptr;
        }
        ac_ = nullptr;
        (void)socket_.release(); // cancels the waits; hiredis closes the descriptor itself
        // Queued handlers hold their own reference; without any, we go when `last` does.
        const std::shared_ptr<asio_watcher> last = std::move(self_);
    }

    redisAsyncContext* ac_;
    boost::asio::posix::stream_descriptor socket_;
    std::shared_ptr<asio_watcher> self_; ///< alive until hiredis cleans up
    bool want_read_ = false;
    bool want_write_ = false;
    bool read_armed_ = false;
    bool write_armed_ = false;
    std::uint64_t writes_ = 0;
};

} // namespace tradeagg::redis
