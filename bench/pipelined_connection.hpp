#pragma once
// A blocking hiredis connection that pipelines, for the benchmarks that talk to one Redis
// (BM_redis_*): the per-trade baselines write through it, and the end-to-end benchmark's lag
// probe polls through it.

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <sys/time.h>

#include <hiredis/hiredis.h>

#include <tradeagg/redis/config.hpp>

namespace bench {

struct reply_deleter {
    void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

/// A blocking hiredis connection that pipelines: `append` adds a command to hiredis's output
/// buffer and, once `depth` commands are pending, `drain` sends them and reads every reply.
/// Throws std::runtime_error on a connection failure or an error reply.
class pipelined_connection {
public:
    pipelined_connection(const tradeagg::redis::redis_config& cfg, std::size_t depth)
        : depth_(depth) {
        c_ = redisConnectWithTimeout(cfg.host.c_str(), cfg.port, timeval{5, 0});
        if (c_ == nullptr || c_->err != 0) {
            const std::string why = c_ != nullptr ? c_->errstr : "out of memory";
            throw std::runtime_error("cannot connect to " + cfg.host + ":" +
                                     std::to_string(cfg.port) + ": " + why);
        }
        // A server that stops answering fails the run instead of hanging it.
        (void)redisSetTimeout(c_, timeval{30, 0});
        if (!cfg.password.empty()) {
            (void)command({"AUTH", cfg.password});
        }
        if (cfg.db != 0) {
            (void)command({"SELECT", std::to_string(cfg.db)});
        }
    }
    pipelined_connection(const pipelined_connection&) = delete;
    pipelined_connection& operator=(const pipelined_connection&) = delete;
    ~pipelined_connection() { redisFree(c_); }

    /// Queues one command; its arguments may be reused as soon as this returns (hiredis copies
    /// them into its output buffer).
    void append(int argc, const char** argv, const std::size_t* lengths) {
        if (redisAppendCommandArgv(c_, argc, argv, lengths) != REDIS_OK) {
            fail("append");
        }
        queued();
    }

    /// Queues one command already written in RESP (resp.hpp's `resp_builder`).
    void append_formatted(std::string_view resp) {
        if (redisAppendFormattedCommand(c_, resp.data(), resp.size()) != REDIS_OK) {
            fail("append");
        }
        queued();
    }

    /// Sends what is queued and reads the reply of every pending command.
    void drain() {
        for (; pending_ > 0; --pending_) {
            void* r = nullptr;
            if (redisGetReply(c_, &r) != REDIS_OK || r == nullptr) {
                fail("read a reply");
            }
            const reply_ptr reply(static_cast<redisReply*>(r));
            if (reply->type == REDIS_REPLY_ERROR) {
                throw std::runtime_error("Redis replied " + std::string(reply->str, reply->len));
            }
        }
    }

    /// One command, waited for (setup and checks, outside the clock). Throws on an error reply.
    reply_ptr command(std::initializer_list<std::string_view> args) {
        drain();
        std::vector<const char*> argv;
        std::vector<std::size_t> lengths;
        for (const std::string_view a : args) {
            argv.push_back(a.data());
            lengths.push_back(a.size());
        }
        void* r = redisCommandArgv(c_, static_cast<int>(argv.size()), argv.data(), lengths.data());
        if (r == nullptr) {
            fail(std::string(*args.begin()));
        }
        reply_ptr reply(static_cast<redisReply*>(r));
        if (reply->type == REDIS_REPLY_ERROR) {
            throw std::runtime_error(std::string(*args.begin()) + ": Redis replied " +
                                     std::string(reply->str, reply->len));
        }
        return reply;
    }

    /// Commands appended since construction (the one-off `command`s not counted).
    [[nodiscard]] std::uint64_t commands() const noexcept { return commands_; }

private:
    /// Counts a command appended; drains once `depth` are pending.
    void queued() {
        ++commands_;
        if (++pending_ == depth_) {
            drain();
        }
    }

    [[noreturn]] void fail(const std::string& what) const {
        throw std::runtime_error("cannot " + what + ": " + std::string(c_->errstr));
    }

    redisContext* c_ = nullptr;
    std::size_t depth_;
    std::size_t pending_ = 0;
    std::uint64_t commands_ = 0;
};

} // namespace bench
