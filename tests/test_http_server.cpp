// The aggregator server's HTTP layer, driven by raw TCP clients (POSIX sockets, so that every
// byte, pause and half-close is the test's choice and every read has a deadline).

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <doctest/doctest.h>

#include "http_server.hpp"
#include "raw_http_client.hpp"

namespace {

namespace http = boost::beast::http;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using response = http::response<http::string_body>;
using namespace tradeagg::testing;

// ---------------------------------------------------------------------------------------------
// The handler under test: echoes "<method> <target> <body length>", and on request throws,
// sleeps or returns a large body.

std::size_t query_number(std::string_view target, std::string_view key) {
    const auto at = target.find(key);
    if (at == std::string_view::npos) {
        return 0;
    }
    std::size_t value = 0;
    const auto digits = target.substr(at + key.size());
    std::from_chars(digits.data(), digits.data() + digits.size(), value);
    return value;
}

response test_handler(const http::request<http::string_body>& req) {
    const std::string_view target = req.target();
    if (target.starts_with("/throw")) {
        throw std::runtime_error("handler failure for the test");
    }
    if (target.starts_with("/sleep")) {
        std::this_thread::sleep_for(std::chrono::milliseconds(query_number(target, "ms=")));
    }
    response res{http::status::ok, req.version()};
    res.set(http::field::content_type, "text/plain");
    if (target.starts_with("/big")) {
        res.body().assign(query_number(target, "bytes="), 'b');
    } else {
        res.body() = std::string(req.method_string()) + " " + std::string(target) + " " +
                     std::to_string(req.body().size());
    }
    return res;
}

/// A server on 127.0.0.1 with an ephemeral port and a log the test can read.
struct test_server {
    explicit test_server(aggregator::http_limits limits = {}, unsigned threads = 2)
        : server("127.0.0.1:0", std::move(limits), test_handler, threads,
                 [this](std::string_view line) {
                     const std::lock_guard lock(log_mutex);
                     log.emplace_back(line);
                 }),
          port(server.start()) {}

    [[nodiscard]] bool logged(std::string_view part) {
        const std::lock_guard lock(log_mutex);
        return std::any_of(log.begin(), log.end(), [&](const std::string& line) {
            return line.find(part) != std::string::npos;
        });
    }

    std::mutex log_mutex;
    std::vector<std::string> log;
    aggregator::http_server server;
    std::uint16_t port;
};

/// A fresh client gets a correct answer.
bool answers(std::uint16_t port) {
    raw_client c(port);
    if (!c.send(get("/alive"))) {
        return false;
    }
    const reply r = c.read_response();
    return r.what == outcome::answered && r.res.result() == http::status::ok &&
           r.res.body() == "GET /alive 0";
}

double ms(steady::duration d) {
    return std::chrono::duration<double, std::milli>(d).count();
}

} // namespace

TEST_CASE("http_server: GET and POST on one keep-alive connection") {
    test_server ts;
    raw_client c(ts.port);

    REQUIRE(c.send(get("/first?x=1")));
    reply r = c.read_response();
    REQUIRE(r.what == outcome::answered);
    CHECK(r.res.result() == http::status::ok);
    CHECK(r.res.body() == "GET /first?x=1 0");
    CHECK(r.res.keep_alive());
    CHECK(r.res[http::field::server] == "tradeagg-aggregator");
    CHECK(r.res[http::field::content_length] == std::to_string(r.res.body().size()));

    REQUIRE(c.send(post("/second", "hello")));
    r = c.read_response();
    REQUIRE(r.what == outcome::answered);
    CHECK(r.res.body() == "POST /second 5");
    CHECK(r.res.keep_alive());

    REQUIRE(c.send(get("/third")));
    r = c.read_response();
    REQUIRE(r.what == outcome::answered);
    CHECK(r.res.body() == "GET /third 0");

    const auto s = ts.server.stats();
    CHECK(s.connections_accepted == 1);
    CHECK(s.connections_open == 1);
    CHECK(s.requests == 3);
    CHECK(s.responses_2xx == 3);
    CHECK(s.bad_requests == 0);
}

TEST_CASE("http_server: pipelined requests are answered in order") {
    test_server ts;
    raw_client c(ts.port);
    std::string batch;
    for (int i = 0; i < 5; ++i) {
        batch += (i % 2 == 0) ? get("/p" + std::to_string(i))
                              : post("/p" + std::to_string(i), std::string(i, 'x'));
    }
    REQUIRE(c.send(batch));
    for (int i = 0; i < 5; ++i) {
        const reply r = c.read_response();
        REQUIRE(r.what == outcome::answered);
        const std::string expected = std::string(i % 2 == 0 ? "GET" : "POST") + " /p" +
                                     std::to_string(i) + " " + std::to_string(i % 2 == 0 ? 0 : i);
        CHECK(r.res.body() == expected);
    }
    CHECK(ts.server.stats().requests == 5);
}

TEST_CASE("http_server: HTTP/1.0 closes unless it asks for keep-alive") {
    test_server ts;
    SUBCASE("without keep-alive") {
        raw_client c(ts.port);
        REQUIRE(c.send("GET /old HTTP/1.0\r\n\r\n"));
        const reply r = c.read_response();
        REQUIRE(r.what == outcome::answered);
        CHECK(r.res.version() == 10);
        CHECK(r.res.body() == "GET /old 0");
        CHECK_FALSE(r.res.keep_alive());
        CHECK(c.closed_within());
    }
    SUBCASE("with keep-alive") {
        raw_client c(ts.port);
        for (int i = 0; i < 2; ++i) {
            REQUIRE(c.send("GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
            const reply r = c.read_response();
            REQUIRE(r.what == outcome::answered);
            CHECK(r.res.version() == 10);
            CHECK(r.res.keep_alive());
        }
    }
    SUBCASE("an HTTP/1.1 client that asks to close") {
        raw_client c(ts.port);
        REQUIRE(c.send(get("/bye", "Connection: close\r\n")));
        const reply r = c.read_response();
        REQUIRE(r.what == outcome::answered);
        CHECK_FALSE(r.res.keep_alive());
        CHECK(c.closed_within());
    }
}

TEST_CASE("http_server: HEAD gets the GET's Content-Length and no body") {
    test_server ts;
    raw_client c(ts.port);
    REQUIRE(c.send("HEAD /h HTTP/1.1\r\nHost: test\r\n\r\n" + get("/after")));
    const reply head = c.read_response(10s, true);
    REQUIRE(head.what == outcome::answered);
    CHECK(head.res[http::field::content_length] == std::to_string(std::string("HEAD /h 0").size()));
    CHECK(head.res.body().empty());
    // Had a body followed the HEAD response, it would be read as this response's start.
    const reply next = c.read_response();
    REQUIRE(next.what == outcome::answered);
    CHECK(next.res.body() == "GET /after 0");
}

TEST_CASE("http_server: Expect: 100-continue gets an interim response before the body") {
    test_server ts;
    raw_client c(ts.port);
    REQUIRE(c.send("POST /up HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n"
                   "Content-Length: 10\r\n\r\n"));
    const reply interim = c.read_response();
    REQUIRE(interim.what == outcome::answered);
    CHECK(interim.res.result() == http::status::continue_);
    REQUIRE(c.send("0123456789"));
    const reply r = c.read_response();
    REQUIRE(r.what == outcome::answered);
    CHECK(r.res.result() == http::status::ok);
    CHECK(r.res.body() == "POST /up 10");
}

TEST_CASE("http_server: the connection closes after max_requests_per_connection") {
    aggregator::http_limits limits;
    limits.max_requests_per_connection = 3;
    test_server ts(limits);
    raw_client c(ts.port);
    REQUIRE(c.send(get("/1") + get("/2") + get("/3") + get("/4")));
    for (int i = 1; i <= 3; ++i) {
        const reply r = c.read_response();
        REQUIRE(r.what == outcome::answered);
        CHECK(r.res.body() == "GET /" + std::to_string(i) + " 0");
        CHECK(r.res.keep_alive() == (i < 3));
    }
    CHECK(c.read_response().what == outcome::closed); // the fourth is never answered
    CHECK(ts.server.stats().requests == 3);
}

TEST_CASE("http_server: the last response on a connection the server closes arrives whole") {
    // The server closes after its response while the client's next request is unread. Closing
    // a socket with unread input makes the kernel send a reset and drop what it has not sent
    // yet; the server must first let the response drain (lingering close).
    aggregator::http_limits limits;
    limits.max_requests_per_connection = 1;
    test_server ts(limits);
    raw_client c(ts.port, 16 * 1024); // a small window keeps the response queued server-side
    REQUIRE(c.send(get("/big?bytes=4000000")));
    REQUIRE(c.wait_for_data()); // the server is writing, no longer reading
    REQUIRE(c.send(get("/unanswered")));
    const reply r = c.read_response(30s);
    REQUIRE(r.what == outcome::answered);
    CHECK(r.res.body().size() == 4'000'000);
    CHECK_FALSE(r.res.keep_alive());
    CHECK(c.closed_within());
    CHECK(ts.server.stats().requests == 1);
}

TEST_CASE("http_server: an oversized header gets 431 and the connection closes") {
    test_server ts; // 8 KiB of header
    SUBCASE("one long field") {
        raw_client c(ts.port);
        REQUIRE(c.send(get("/", "X-Big: " + std::string(9 * 1024, 'a') + "\r\n")));
        const reply r = c.read_response();
        CHECK(status_of(r) == 431);
        CHECK_FALSE(r.res.keep_alive());
        CHECK(c.closed_within());
    }
    SUBCASE("a header that never ends") {
        raw_client c(ts.port);
        std::string endless = "GET / HTTP/1.1\r\nHost: test\r\n";
        for (int i = 0; i < 2000; ++i) {
            endless += "X-Field-" + std::to_string(i) + ": value\r\n";
        }
        (void)c.send(endless); // the server may close before it has read all of it
        CHECK(status_of(c.read_response()) == 431);
        CHECK(c.closed_within());
    }
    SUBCASE("a field just under the limit passes") {
        raw_client c(ts.port);
        REQUIRE(c.send(get("/", "X-Big: " + std::string(7 * 1024, 'a') + "\r\n")));
        CHECK(status_of(c.read_response()) == 200);
    }
    CHECK(ts.server.stats().loop_exceptions == 0);
    CHECK(answers(ts.port));
}

TEST_CASE("http_server: an oversized body gets 413 and the connection closes") {
    aggregator::http_limits limits;
    limits.body_bytes = 1024;
    test_server ts(limits);
    SUBCASE("Content-Length over the limit, body sent anyway") {
        raw_client c(ts.port);
        REQUIRE(c.send(post("/", std::string(64 * 1024, 'x'))));
        const reply r = c.read_response();
        CHECK(status_of(r) == 413);
        CHECK(r.res[http::field::content_type] == "application/json");
        CHECK(c.closed_within());
    }
    SUBCASE("Content-Length over the limit with Expect: 100-continue: no interim response") {
        raw_client c(ts.port);
        REQUIRE(c.send("POST / HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\n"
                       "Content-Length: 5000\r\n\r\n"));
        CHECK(status_of(c.read_response()) == 413);
        CHECK(c.closed_within());
    }
    SUBCASE("chunked, over the limit in total") {
        raw_client c(ts.port);
        const std::string chunk = "200\r\n" + std::string(512, 'c') + "\r\n"; // 512 bytes
        (void)c.send(chunked("/", chunk + chunk + chunk + "0\r\n\r\n"));
        CHECK(status_of(c.read_response()) == 413);
        CHECK(c.closed_within());
    }
    SUBCASE("exactly at the limit passes, chunked or not") {
        raw_client c(ts.port);
        REQUIRE(c.send(post("/", std::string(1024, 'x'))));
        const reply r = c.read_response();
        REQUIRE(r.what == outcome::answered);
        CHECK(r.res.body() == "POST / 1024");
        const std::string chunk = "200\r\n" + std::string(512, 'c') + "\r\n";
        REQUIRE(c.send(chunked("/c", chunk + chunk + "0\r\n\r\n")));
        const reply r2 = c.read_response();
        REQUIRE(r2.what == outcome::answered);
        CHECK(r2.res.body() == "POST /c 1024");
    }
    CHECK(answers(ts.port));
}

TEST_CASE("http_server: a 64 KiB chunked trailer does not take the server down") {
    // Beast 1.81 applies no limit to trailers; a field this long throws std::length_error out
    // of async_read when the read buffer can hold it.
    test_server ts;
    SUBCASE("64 KiB trailer field") {
        raw_client c(ts.port);
        (void)c.send(chunked("/t", "5\r\nhello\r\n0\r\nX-Trailer: " + std::string(64 * 1024, 'a') +
                                       "\r\n\r\n"));
        const reply r = c.read_response();
        const bool refused =
            r.what == outcome::closed || (r.what == outcome::answered && r.res.result_int() >= 400);
        CHECK(refused);
        CHECK(c.closed_within());
    }
    SUBCASE("many small trailer fields adding up to 64 KiB") {
        raw_client c(ts.port);
        std::string trailer;
        for (int i = 0; trailer.size() < 64 * 1024; ++i) {
            trailer += "X-T" + std::to_string(i) + ": " + std::string(100, 'v') + "\r\n";
        }
        (void)c.send(chunked("/t", "5\r\nhello\r\n0\r\n" + trailer + "\r\n"));
        const reply r = c.read_response();
        CHECK((r.what == outcome::closed ||
               (r.what == outcome::answered && r.res.result_int() >= 400)));
        CHECK(c.closed_within());
    }
    SUBCASE("a small trailer is accepted") {
        raw_client c(ts.port);
        REQUIRE(c.send(chunked("/t", "5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n")));
        const reply r = c.read_response();
        REQUIRE(r.what == outcome::answered);
        CHECK(r.res.body() == "POST /t 5");
    }
    CHECK(ts.server.stats().loop_exceptions == 0);
    CHECK_FALSE(ts.logged("exception"));
    CHECK(answers(ts.port));
}

TEST_CASE("http_server: malformed or unsupported requests get an error and a close") {
    struct bad_request {
        const char* what;
        std::string text;
        int status;
    };
    const std::vector<bad_request> cases = {
        {"bad method character", "G@T / HTTP/1.1\r\nHost: test\r\n\r\n", 400},
        {"no version", "GET /\r\nHost: test\r\n\r\n", 400},
        {"binary garbage", std::string("\x01\x02\x03\x04 nonsense\r\n\r\n"), 400},
        {"field without a colon", "GET / HTTP/1.1\r\nHost test\r\n\r\n", 400},
        {"space before the colon", "GET / HTTP/1.1\r\nHost : test\r\n\r\n", 400},
        {"bare LF line endings", "GET / HTTP/1.1\nHost: test\n\n", 400},
        {"bad Content-Length", "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 12a\r\n\r\n", 400},
        {"two Content-Lengths",
         "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", 400},
        {"Content-Length and chunked",
         "POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         400},
        {"final coding not chunked",
         "POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip\r\n\r\nGET /smuggled "
         "HTTP/1.1\r\nHost: test\r\n\r\n",
         400},
        {"a coding before chunked",
         "POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
        {"bad chunk size", chunked("/", "zz\r\nhello\r\n0\r\n\r\n"), 400},
        {"HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", 400},
        {"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        {"HTTP/2.0 (Beast rejects it as malformed)", "GET / HTTP/2.0\r\nHost: test\r\n\r\n", 400},
        {"an unknown expectation",
         "POST / HTTP/1.1\r\nHost: test\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx", 417},
    };
    test_server ts;
    for (const auto& bad : cases) {
        CAPTURE(bad.what);
        raw_client c(ts.port);
        (void)c.send(bad.text);
        const reply r = c.read_response();
        CHECK(status_of(r) == bad.status);
        if (r.what == outcome::answered) {
            CHECK_FALSE(r.res.keep_alive());
            CHECK(r.res[http::field::content_type] == "application/json");
        }
        CHECK(c.closed_within());
    }
    const auto s = ts.server.stats();
    CHECK(s.bad_requests == cases.size());
    CHECK(s.requests == 0); // none reached the handler, the smuggled GET included
    CHECK(answers(ts.port));
}

TEST_CASE("http_server: a slowloris client is closed at the header deadline") {
    aggregator::http_limits limits;
    limits.header_timeout = 300ms;
    limits.idle_timeout = 30s;
    test_server ts(limits);
    // 200 bytes at one per 100 ms would take 20 s to finish the header.
    const std::string slow_header =
        "GET / HTTP/1.1\r\nHost: test\r\nX-Slow: " + std::string(150, 's') + "\r\n\r\n";
    SUBCASE("on the first request") {
        raw_client c(ts.port);
        const auto closed_after = c.trickle(slow_header, 100ms);
        REQUIRE(closed_after.has_value());
        CHECK(ms(*closed_after) < 5'000);
    }
    SUBCASE("on a later request: idle time before it does not count, its first byte starts it") {
        raw_client c(ts.port);
        REQUIRE(c.send(get("/")));
        REQUIRE(c.read_response().what == outcome::answered);
        std::this_thread::sleep_for(600ms); // twice the header deadline, well within idle
        const auto closed_after = c.trickle(slow_header, 100ms);
        REQUIRE(closed_after.has_value());
        CHECK(ms(*closed_after) >= 250);
        CHECK(ms(*closed_after) < 5'000);
    }
    SUBCASE("a client that sends nothing") {
        raw_client c(ts.port);
        const auto start = steady::now();
        CHECK(c.closed_within(10s));
        CHECK(ms(steady::now() - start) < 5'000);
    }
    CHECK(eventually([&] { return ts.server.stats().timeouts == 1; }));
    CHECK(ts.server.stats().requests <= 1);
    CHECK(answers(ts.port));
}

TEST_CASE("http_server: a body that arrives too slowly is cut at the request deadline") {
    aggregator::http_limits limits;
    limits.request_timeout = 500ms;
    test_server ts(limits);
    raw_client c(ts.port);
    const auto start = steady::now();
    REQUIRE(c.send("POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n"));
    const auto closed_after = c.trickle(std::string(100, 'b'), 100ms); // would take 10 s
    REQUIRE(closed_after.has_value());
    CHECK(ms(steady::now() - start) >= 450);
    CHECK(ms(steady::now() - start) < 5'000);
    CHECK(eventually([&] { return ts.server.stats().timeouts == 1; }));
    CHECK(ts.server.stats().requests == 0);
}

TEST_CASE("http_server: an idle keep-alive connection is closed after idle_timeout") {
    aggregator::http_limits limits;
    limits.idle_timeout = 1s;
    limits.header_timeout = 30s; // idle time is not bounded by the header deadline
    test_server ts(limits);
    raw_client c(ts.port);
    REQUIRE(c.send(get("/a")));
    REQUIRE(c.read_response().what == outcome::answered);
    std::this_thread::sleep_for(100ms);
    REQUIRE(c.send(get("/b"))); // well inside the idle timeout: still served
    REQUIRE(c.read_response().what == outcome::answered);
    const auto idle_from = steady::now();
    CHECK(c.closed_within(10s));
    CHECK(ms(steady::now() - idle_from) >= 700);
    CHECK(ms(steady::now() - idle_from) < 8'000);
    CHECK(eventually([&] { return ts.server.stats().idle_closes == 1; }));
    CHECK(ts.server.stats().timeouts == 0);
}

TEST_CASE("http_server: a client that does not read its response is cut at the write deadline") {
    aggregator::http_limits limits;
    limits.write_timeout = 300ms;
    test_server ts(limits);
    raw_client c(ts.port, 4096);
    // 16 MB cannot fit in the socket buffers of a client that does not read.
    REQUIRE(c.send(get("/big?bytes=16000000")));
    CHECK(eventually([&] { return ts.server.stats().timeouts == 1; }));
    CHECK(c.closed_within(10s));
    CHECK(answers(ts.port));
}

TEST_CASE("http_server: connections beyond max_connections are refused and counted") {
    aggregator::http_limits limits;
    limits.max_connections = 8;
    limits.header_timeout = 60s; // the admitted ones must stay open while the test runs
    test_server ts(limits);

    std::vector<std::unique_ptr<raw_client>> clients;
    for (int i = 0; i < 50; ++i) {
        clients.push_back(std::make_unique<raw_client>(ts.port));
    }
    REQUIRE(eventually([&] {
        const auto s = ts.server.stats();
        return s.connections_accepted + s.connections_refused == 50;
    }));
    auto s = ts.server.stats();
    CHECK(s.connections_accepted == 8);
    CHECK(s.connections_refused == 42);
    CHECK(s.connections_open == 8);

    int served = 0;
    int refused = 0;
    for (auto& c : clients) {
        (void)c->send(get("/flood"));
        const reply r = c->read_response();
        if (status_of(r) == 200) {
            ++served;
        } else if (status_of(r) == 503 || r.what == outcome::closed) {
            ++refused;
        }
    }
    CHECK(served == 8);
    CHECK(refused == 42);

    clients.clear();
    CHECK(eventually([&] { return ts.server.stats().connections_open == 0; }));
    CHECK(answers(ts.port));
    s = ts.server.stats();
    CHECK(s.connections_accepted == 9);
    CHECK(s.connections_refused == 42);
}

TEST_CASE("http_server: a handler exception becomes a 500 and the server stays up") {
    test_server ts;
    raw_client c(ts.port);
    REQUIRE(c.send(get("/throw")));
    const reply r = c.read_response();
    REQUIRE(r.what == outcome::answered);
    CHECK(r.res.result() == http::status::internal_server_error);
    CHECK(r.res[http::field::content_type] == "application/json");
    CHECK(r.res.body().find("\"error\"") != std::string::npos);
    CHECK(r.res.keep_alive()); // the request was read whole: the connection can go on
    REQUIRE(c.send(get("/after")));
    const reply next = c.read_response();
    REQUIRE(next.what == outcome::answered);
    CHECK(next.res.body() == "GET /after 0");
    const auto s = ts.server.stats();
    CHECK(s.handler_errors == 1);
    CHECK(s.responses_5xx == 1);
    CHECK(s.responses_2xx == 1);
    CHECK(ts.logged("handler failure for the test"));
}

TEST_CASE("http_server: stop() answers the request in progress, then closes everything") {
    test_server ts;
    raw_client idle(ts.port);
    REQUIRE(idle.send(get("/before")));
    REQUIRE(idle.read_response().what == outcome::answered);

    raw_client slow(ts.port);
    REQUIRE(slow.send(get("/sleep?ms=1000")));
    REQUIRE(eventually([&] { return ts.server.stats().requests == 2; })); // handler running

    std::atomic<bool> stopped{false};
    const auto stop_start = steady::now();
    std::thread stopper([&] {
        ts.server.stop(20s);
        stopped = true;
    });

    const reply r = slow.read_response();
    REQUIRE(r.what == outcome::answered);
    CHECK(r.res.result() == http::status::ok);
    CHECK(r.res.body() == "GET /sleep?ms=1000 0");
    CHECK_FALSE(r.res.keep_alive());
    CHECK(slow.closed_within());
    slow.close();
    CHECK(idle.closed_within()); // closed at once, not after idle_timeout
    idle.close();

    stopper.join();
    CHECK(stopped);
    CHECK(ms(steady::now() - stop_start) < 15'000); // returned once done, not at the deadline
    CHECK_FALSE(raw_client::can_connect(ts.port));
    CHECK(ts.server.stats().connections_open == 0);
    ts.server.stop(1s); // idempotent
}

TEST_CASE("http_server: stop() cuts off requests still running at its deadline") {
    test_server ts;
    raw_client slow(ts.port);
    REQUIRE(slow.send(get("/sleep?ms=1500")));
    REQUIRE(eventually([&] { return ts.server.stats().requests == 1; }));
    ts.server.stop(100ms); // waits for the handler, which cannot be interrupted
    const reply r = slow.read_response(5s);
    CHECK(r.what == outcome::closed); // the response was never written
    CHECK(ts.server.stats().connections_open == 0);
}

// UBSan (built together with ASan here) checks a dynamic type by probing memory through
// pipe(2), which fails under the lowered descriptor limit, and reports an invalid vptr.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool descriptor_limit_breaks_sanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool descriptor_limit_breaks_sanitizer = true;
#else
constexpr bool descriptor_limit_breaks_sanitizer = false;
#endif
#else
constexpr bool descriptor_limit_breaks_sanitizer = false;
#endif

TEST_CASE("http_server: accept errors back off instead of spinning" *
          doctest::skip(descriptor_limit_breaks_sanitizer)) {
    test_server ts;
    // A descriptor another thread holds while the limit is chosen and closes later would let
    // an accept through: the server answers one request and closes its connection first, so
    // that its threads hold only what they keep.
    // The count drops before the socket closes, in the same destructor: a pause covers the rest.
    REQUIRE(answers(ts.port));
    REQUIRE(eventually([&] { return ts.server.stats().connections_open == 0; }));
    std::this_thread::sleep_for(200ms);
    // Sockets made before the limit is lowered; connecting them needs no new descriptor, but
    // the server's accept does and fails with EMFILE.
    rlimit original{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &original) == 0);
    {
        struct restore {
            rlimit value;
            ~restore() { ::setrlimit(RLIMIT_NOFILE, &value); }
        } guard{original};
        std::vector<int> sockets;
        for (int i = 0; i < 3; ++i) {
            sockets.push_back(::socket(AF_INET, SOCK_STREAM, 0));
            REQUIRE(sockets.back() >= 0);
        }
        // The lowest free descriptor number: with the limit there, none can be made.
        const int lowest_free = ::open("/dev/null", O_RDONLY);
        REQUIRE(lowest_free >= 0);
        ::close(lowest_free);
        rlimit lowered = original;
        lowered.rlim_cur = static_cast<rlim_t>(lowest_free);
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &lowered) == 0);
        // Any descriptor freed since is taken here, so that none is free below the limit.
        std::vector<int> fillers;
        for (int fd = ::open("/dev/null", O_RDONLY); fd >= 0; fd = ::open("/dev/null", O_RDONLY)) {
            fillers.push_back(fd);
        }
        CHECK(errno == EMFILE);

        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(ts.port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        for (const int fd : sockets) {
            CHECK(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
        }
        std::this_thread::sleep_for(700ms);
        const auto errors = ts.server.stats().accept_errors;
        // 50, 100, 200, 400 ms apart: a handful. A spinning loop makes thousands.
        CHECK(errors >= 1);
        CHECK(errors <= 40);
        CHECK(ts.server.stats().connections_accepted == 1); // the warm-up request's
        ::setrlimit(RLIMIT_NOFILE, &original);

        // The pending connections are accepted once descriptors are available again.
        const std::string request = get("/after-emfile");
        for (const int fd : sockets) {
            CHECK(::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
                  static_cast<ssize_t>(request.size()));
        }
        CHECK(eventually([&] { return ts.server.stats().responses_2xx == 1 + 3; }));
        for (const int fd : sockets) {
            ::close(fd);
        }
        for (const int fd : fillers) {
            ::close(fd);
        }
    }
    CHECK(ts.logged("accept failed"));
    CHECK(answers(ts.port));
}

TEST_CASE("http_server: many clients on several threads get their own answers") {
    test_server ts({}, 2);
    constexpr int client_count = 6;
    constexpr int requests_each = 100;
    std::atomic<int> correct{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < client_count; ++t) {
        threads.emplace_back([&, t] {
            raw_client c(ts.port);
            for (int i = 0; i < requests_each; ++i) {
                const std::string target = "/c" + std::to_string(t) + "/" + std::to_string(i);
                const std::string body(static_cast<std::size_t>(i), 'q');
                if (!c.send(post(target, body))) {
                    return;
                }
                const reply r = c.read_response();
                if (r.what == outcome::answered &&
                    r.res.body() == "POST " + target + " " + std::to_string(i)) {
                    ++correct;
                }
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    CHECK(correct == client_count * requests_each);
    CHECK(ts.server.stats().requests == client_count * requests_each);
    CHECK(ts.server.stats().connections_accepted == client_count);
}

TEST_CASE("http_server: start() and the constructor name what is wrong") {
    using aggregator::http_server;
    const auto make = [](std::string address, aggregator::http_limits limits = {}) {
        return std::make_unique<http_server>(std::move(address), std::move(limits), test_handler);
    };
    CHECK_THROWS_AS(make("localhost"), std::invalid_argument);
    CHECK_THROWS_AS(make("localhost:80"), std::invalid_argument); // names are not resolved
    CHECK_THROWS_AS(make("300.1.1.1:80"), std::invalid_argument);
    CHECK_THROWS_AS(make("127.0.0.1:99999"), std::invalid_argument);
    CHECK_THROWS_AS(make("127.0.0.1:"), std::invalid_argument);
    CHECK_NOTHROW(make("[::1]:0"));
    aggregator::http_limits too_big;
    too_big.header_bytes = 64 * 1024; // the read buffer could then hold a field Beast throws on
    CHECK_THROWS_AS(make("127.0.0.1:0", too_big), std::invalid_argument);
    aggregator::http_limits no_deadline;
    no_deadline.header_timeout = 0ms;
    CHECK_THROWS_AS(make("127.0.0.1:0", no_deadline), std::invalid_argument);
    CHECK_THROWS_AS(http_server("127.0.0.1:0", {}, aggregator::handler{}), std::invalid_argument);

    test_server first;
    const std::string taken = "127.0.0.1:" + std::to_string(first.port);
    auto second = make(taken);
    try {
        (void)second->start();
        FAIL("start() on a port in use must throw");
    } catch (const std::runtime_error& e) {
        CHECK(std::string(e.what()).find(taken) != std::string::npos);
    }
    CHECK_THROWS_AS((void)first.server.start(), std::logic_error); // started already
    CHECK(answers(first.port));
}

TEST_CASE("http_server: the response observer sees every response, its route and its time") {
    struct seen {
        std::size_t route;
        unsigned status;
        std::chrono::nanoseconds took;
    };
    std::mutex mutex;
    std::vector<seen> responses;
    aggregator::http_limits limits;
    limits.body_bytes = 1024;
    aggregator::response_observer observer{
        [](std::string_view target) -> std::size_t { return target.starts_with("/sleep") ? 1 : 0; },
        [&](std::size_t route, unsigned status, std::chrono::nanoseconds took) {
            const std::lock_guard lock(mutex);
            responses.push_back({route, status, took});
        }};
    aggregator::http_server server("127.0.0.1:0", limits, test_handler, 2, {}, observer);
    const std::uint16_t port = server.start();
    // The observer runs once the write has completed, which may be after the client has read
    // the response, and on either of the server's two threads: wait for each one to be seen
    // before the next connection, so that the order below is the order of the requests.
    const auto seen_count = [&](std::size_t n) {
        const auto deadline = std::chrono::steady_clock::now() + 5s;
        while (std::chrono::steady_clock::now() < deadline) {
            {
                const std::lock_guard lock(mutex);
                if (responses.size() >= n)
                    return true;
            }
            std::this_thread::sleep_for(1ms);
        }
        return false;
    };
    {
        raw_client c(port);
        REQUIRE(c.send(get("/first")));
        REQUIRE(c.read_response().what == outcome::answered);
        REQUIRE(c.send(get("/sleep?ms=30")));
        REQUIRE(c.read_response().what == outcome::answered);
        REQUIRE(c.send(get("/throw")));
        CHECK(status_of(c.read_response()) == 500);
    }
    REQUIRE(seen_count(3));
    {
        raw_client c(port); // refused after its header: the route is known
        REQUIRE(c.send(post("/sleep", std::string(4096, 'x'))));
        CHECK(status_of(c.read_response()) == 413);
    }
    REQUIRE(seen_count(4));
    {
        raw_client c(port); // refused before a header could be read
        REQUIRE(c.send("NOT HTTP AT ALL\r\n\r\n"));
        CHECK(status_of(c.read_response()) == 400);
    }
    server.stop(1s);
    const std::lock_guard lock(mutex);
    REQUIRE(responses.size() == 5);
    CHECK(responses[0].route == 0);
    CHECK(responses[0].status == 200);
    CHECK(responses[1].route == 1);
    CHECK(responses[1].status == 200);
    CHECK(responses[1].took >= 30ms);
    CHECK(responses[0].took < responses[1].took);
    CHECK(responses[2].route == 0);
    CHECK(responses[2].status == 500);
    CHECK(responses[3].route == 1);
    CHECK(responses[3].status == 413);
    CHECK(responses[4].route == aggregator::response_observer::no_route);
    CHECK(responses[4].status == 400);
}
