// hiredis driven by Boost.Asio, against a real redis-server the test starts itself.

#include <chrono>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <tradeagg/redis/asio_connection.hpp>

#include "redis_server.hpp"

using namespace tradeagg;
using tradeagg::testing::redis_server;

namespace {

/// What the callbacks of one connection saw.
struct observed {
    bool connected = false;
    int connect_status = -1;
    bool disconnected = false;
    int disconnect_status = -1;
    std::vector<std::string> replies; ///< "(null)" for a command failed without a reply
};

redisAsyncContext* open(boost::asio::io_context& io, int port, observed& seen) {
    redisAsyncContext* ac = redisAsyncConnect("127.0.0.1", port);
    REQUIRE(ac != nullptr);
    REQUIRE(ac->err == 0);
    ac->data = &seen;
    REQUIRE(redis::asio_watcher::attach(ac, io));
    CHECK_FALSE(redis::asio_watcher::attach(ac, io)); // one event library per context
    redisAsyncSetConnectCallback(ac, [](const redisAsyncContext* c, int status) {
        auto* s = static_cast<observed*>(c->data);
        s->connected = true;
        s->connect_status = status;
    });
    redisAsyncSetDisconnectCallback(ac, [](const redisAsyncContext* c, int status) {
        auto* s = static_cast<observed*>(c->data);
        s->disconnected = true;
        s->disconnect_status = status;
    });
    return ac;
}

void send(redisAsyncContext* ac, const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const std::string& a : args) {
        argv.push_back(a.data());
        lengths.push_back(a.size());
    }
    const int rc = redisAsyncCommandArgv(
        ac,
        [](redisAsyncContext* c, void* r, void*) {
            auto* s = static_cast<observed*>(c->data);
            const auto* reply = static_cast<const redisReply*>(r);
            if (reply == nullptr) {
                s->replies.emplace_back("(null)");
            } else if (reply->type == REDIS_REPLY_INTEGER) {
                s->replies.push_back(std::to_string(reply->integer));
            } else {
                s->replies.emplace_back(reply->str != nullptr ? reply->str : "");
            }
        },
        nullptr, static_cast<int>(argv.size()), argv.data(), lengths.data());
    REQUIRE(rc == REDIS_OK);
}

/// Runs `io` until `done()` or two seconds pass.
template <class F>
bool run_until(boost::asio::io_context& io, F&& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    io.restart();
    while (!done() && std::chrono::steady_clock::now() < deadline) {
        io.run_for(std::chrono::milliseconds(10));
        io.restart();
    }
    return done();
}

/// A connection whose first PING was answered, to a server then paused: commands sent now
/// get no answer until the server resumes or dies.
redisAsyncContext* open_then_pause(boost::asio::io_context& io, redis_server& server,
                                   observed& seen) {
    redisAsyncContext* ac = open(io, server.port(), seen);
    send(ac, {"PING"});
    REQUIRE(run_until(io, [&] { return seen.replies.size() == 1; }));
    server.pause();
    return ac;
}

} // namespace

TEST_CASE("asio_watcher: commands round-trip, pipelined, through the io_context") {
    redis_server server;
    boost::asio::io_context io;
    observed seen;
    redisAsyncContext* ac = open(io, server.port(), seen);
    for (int i = 0; i < 100; ++i) {
        send(ac, {"SET", "k" + std::to_string(i), "v" + std::to_string(i)});
    }
    send(ac, {"GET", "k42"});
    send(ac, {"DBSIZE"});
    REQUIRE(run_until(io, [&] { return seen.replies.size() == 102; }));
    CHECK(seen.connected);
    CHECK(seen.connect_status == REDIS_OK);
    CHECK(seen.replies[0] == "OK");
    CHECK(seen.replies[100] == "v42");
    CHECK(seen.replies[101] == "100");
    // A clean disconnect: hiredis frees the context after its callback, the watcher lets go.
    redisAsyncDisconnect(ac);
    REQUIRE(run_until(io, [&] { return seen.disconnected; }));
    CHECK(seen.disconnect_status == REDIS_OK);
    CHECK(server.command({"GET", "k7"}) == "v7");
}

TEST_CASE("asio_watcher: a server that dies fails the pending commands and frees the context") {
    redis_server server;
    boost::asio::io_context io;
    observed seen;
    redisAsyncContext* ac = open_then_pause(io, server, seen);
    send(ac, {"PING"}); // no answer while paused
    io.restart();
    io.run_for(std::chrono::milliseconds(100));
    CHECK(seen.replies.size() == 1);
    server.kill();
    REQUIRE(run_until(io, [&] { return seen.disconnected; }));
    CHECK(seen.disconnect_status == REDIS_ERR);
    REQUIRE(seen.replies.size() == 2);
    CHECK(seen.replies[1] == "(null)");
}

TEST_CASE("asio_watcher: redisAsyncFree on a hung server fails pending commands at once") {
    redis_server server;
    boost::asio::io_context io;
    observed seen;
    redisAsyncContext* ac = open_then_pause(io, server, seen);
    for (int i = 0; i < 10; ++i) {
        send(ac, {"PING"});
    }
    io.restart();
    io.run_for(std::chrono::milliseconds(50));
    // A read deadline of our own expires: drop the connection without waiting for replies.
    redisAsyncFree(ac);
    CHECK(seen.replies.size() == 11);
    CHECK(seen.replies.back() == "(null)");
    CHECK(seen.disconnected);
    // Handlers still queued on the io_context run harmlessly.
    io.restart();
    io.run_for(std::chrono::milliseconds(20));
    server.resume();
    CHECK(server.answers());
}

TEST_CASE("asio_watcher: a refused connection reports an error and frees the context") {
    const int port = tradeagg::testing::free_port(); // nothing listens there
    boost::asio::io_context io;
    observed seen;
    redisAsyncContext* ac = redisAsyncConnect("127.0.0.1", port);
    REQUIRE(ac != nullptr);
    if (ac->err != 0) {
        redisAsyncFree(ac); // refused synchronously
        return;
    }
    ac->data = &seen;
    REQUIRE(redis::asio_watcher::attach(ac, io));
    redisAsyncSetConnectCallback(ac, [](const redisAsyncContext* c, int status) {
        auto* s = static_cast<observed*>(c->data);
        s->connected = true;
        s->connect_status = status;
    });
    REQUIRE(run_until(io, [&] { return seen.connected; }));
    CHECK(seen.connect_status == REDIS_ERR);
}
