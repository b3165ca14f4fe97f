// The aggregator server's configuration and endpoints, called directly (no sockets): every
// variable's errors, and each endpoint's answers to good and bad requests.

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <boost/json.hpp>

#include "server_config.hpp"
#include "server_requests.hpp"
#include "service.hpp"

using namespace aggregator;
using namespace aggregator::testing;
using namespace std::chrono_literals;

namespace {

/// The message of the config_error that `env` raises, "" if none.
std::string config_failure(const env_map& env) {
    try {
        server_config c = config_from(env);
        switch (c.policy) {
        case policy_choice::latency:
            (void)check_against_policy<tradeagg::latency_policy>(c);
            break;
        case policy_choice::memory_constrained:
            (void)check_against_policy<tradeagg::memory_constrained_policy>(c);
            break;
        case policy_choice::throughput:
            (void)check_against_policy<tradeagg::throughput_policy>(c);
            break;
        }
    } catch (const tradeagg::config_error& e) {
        return e.what();
    }
    return "";
}

} // namespace

TEST_CASE("server config: defaults, and every malformed variable named in its error") {
    const server_config d = config_from({});
    CHECK(d.policy == policy_choice::throughput);
    CHECK(d.http.address == "127.0.0.1");
    CHECK(d.http.port == 8080);
    CHECK(d.redis.host == "127.0.0.1");
    CHECK(d.redis.port == 6379);
    CHECK(d.max_trades_per_request == 10'000);
    CHECK(d.redis_enabled);
    CHECK(d.http.threads == std::max(std::thread::hardware_concurrency(), 1u) + 1);
    CHECK(d.ingest_streams == 0);
    CHECK_FALSE(d.stream_retention); // the policy's exact retention
    CHECK(config_from({{"STREAM_RETENTION", "off"}}).stream_retention ==
          std::chrono::milliseconds(0));
    CHECK(config_from({{"STREAM_RETENTION", "6h"}}).stream_retention == std::chrono::hours(6));
    CHECK(d.stream_checkpoint_interval == std::chrono::seconds(2));
    CHECK(d.quote_asset == "USD");
    CHECK(config_from({{"QUOTE_ASSET", "USDT"}}).quote_asset == "USDT");
    CHECK(config_from({{"STREAM_CHECKPOINT_INTERVAL", "off"}}).stream_checkpoint_interval ==
          std::chrono::milliseconds(0));
    CHECK(config_from({{"STREAM_CHECKPOINT_INTERVAL", "750ms"}}).stream_checkpoint_interval ==
          std::chrono::milliseconds(750));
    // Streams are in Redis: stream ingest without it is refused.
    CHECK(config_failure({{"INGEST_STREAMS", "4"}, {"REDIS_ADDR", "off"}}).find("INGEST_STREAMS") ==
          0);

    const std::vector<std::pair<std::string, std::string>> bad = {
        {"AGGREGATOR_POLICY", "fast"},
        {"HTTP_ADDR", "localhost"},
        {"HTTP_ADDR", "1.2.3.4:70000"},
        {"HTTP_THREADS", "0"},
        {"GC_TARGET_PERCENTAGE", "lots"},
        {"MEMORY_LIMIT_MB", "-1"},
        {"TRADE_BUFFER_SIZE", "1"},
        {"WORKER_QUEUE_SIZE", "0"},
        {"BATCH_PROCESSING_SIZE", "1.5"},
        {"MAX_WORKERS", "0"},
        {"MAX_TOKEN_PROCESSORS", "0"},
        {"PROCESSOR_CHANNEL_SIZE", "x"},
        {"REDIS_RETRY_DELAY", "100"},
        {"REDIS_READ_TIMEOUT", "3 s"},
        {"REDIS_ADDR", "nowhere"},
        {"MONITOR_SAMPLE_INTERVAL", "1ms"},
        {"SHUTDOWN_TIMEOUT", "forever"},
        {"HTTP_IDLE_TIMEOUT", "0s"},
        {"REDIS_KEY_PREFIX", "a{b"},
        {"FLUSH_INTERVAL", "2h"},
        {"INGEST_STREAMS", "-1"},
        {"INGEST_STREAMS", "16385"},
        {"INSTANCE_ID", "a b"},
        {"INSTANCE_ID", "a#1"},
        {"STREAM_LEASE_TTL", "100ms"},
        {"STREAM_READ_COUNT", "0"},
        {"STREAM_RETENTION", "500ms"},
        {"STREAM_RETENTION", "never"},
        {"STREAM_CHECKPOINT_INTERVAL", "50ms"},
        {"STREAM_CHECKPOINT_INTERVAL", "2h"},
        {"STREAM_CHECKPOINT_INTERVAL", "0"},
        {"QUOTE_ASSET", "usd"},
        {"QUOTE_ASSET", "US D"},
        {"QUOTE_ASSET", "ABCDEFGHIJKLMNOPQRSTU"},
    };
    for (const auto& [name, value] : bad) {
        CAPTURE(name);
        CAPTURE(value);
        const std::string message = config_failure({{name, value}});
        CHECK(message.find(name) == 0);
        CHECK(message.find(value) != std::string::npos);
    }
}

TEST_CASE("server config: the policy's bounds, reported under the seed's variable names") {
    CHECK(config_failure({{"AGGREGATOR_POLICY", "latency"}, {"TRADE_BUFFER_SIZE", "100000"}}) ==
          "TRADE_BUFFER_SIZE = 100000 is out of bounds: latency_policy allows 2..4096");
    CHECK(config_failure({{"GC_TARGET_PERCENTAGE", "5"}}).find("GC_TARGET_PERCENTAGE = 5") == 0);
    CHECK(config_failure(
              {{"AGGREGATOR_POLICY", "memory_constrained"}, {"MAX_TOKEN_PROCESSORS", "200000"}})
              .find("MAX_TOKEN_PROCESSORS") == 0);
    CHECK(
        config_failure({{"BATCH_PROCESSING_SIZE", "50"}, {"GC_TARGET_PERCENTAGE", "200"}}).empty());
    server_config c = config_from({{"MAX_WORKERS", "100"}});
    const auto r = check_against_policy<tradeagg::throughput_policy>(c);
    CHECK(r.shards >= 1);
    CHECK(r.shards <= std::max(1u, std::thread::hardware_concurrency()));
}

TEST_CASE("server JSON: plain shortest doubles, null for non-finite, escaped strings") {
    boost::json::object o;
    o["a"] = 7.5;
    o["zero"] = 0.0;
    o["small"] = 1e-7;
    o["third"] = 1.0 / 3.0;
    o["neg"] = -12;
    o["big"] = std::uint64_t{18'446'744'073'709'551'615u};
    o["nan"] = std::nan("");
    o["inf"] = -std::numeric_limits<double>::infinity();
    o["text"] = "say \"hi\"\n\x01";
    o["list"] = boost::json::array{1.25, true, nullptr, boost::json::object{{"k\\", 2.0}}};
    std::string out;
    detail::append_json(out, o);
    CHECK(out == R"({"a":7.5,"zero":0,"small":1e-07,"third":0.3333333333333333,"neg":-12,)"
                 R"("big":18446744073709551615,"nan":null,"inf":null,"text":"say \"hi\"\n\u0001",)"
                 R"("list":[1.25,true,null,{"k\\":2}]})");
    // It reads back as what was written, the non-finite values as null.
    const boost::json::value back = boost::json::parse(out);
    CHECK(back.at("third").to_number<double>() == 1.0 / 3.0);
    CHECK(back.at("big").as_uint64() == 18'446'744'073'709'551'615u);
    CHECK(back.at("nan").is_null());
    CHECK(back.at("text").as_string() == "say \"hi\"\n\x01");
    CHECK(back.at("list").as_array()[3].at("k\\").to_number<double>() == 2.0);
}

TEST_CASE("server endpoints: ingest, queries, admin, metrics (Redis off)") {
    auto svc = make_service(config_from({{"REDIS_ADDR", "off"},
                                         {"ADMIN_TOKEN", "s3cret"},
                                         {"WORKER_QUEUE_SIZE", "100"},
                                         {"FLUSH_INTERVAL", "5ms"}}));
    svc->start();

    SUBCASE("POST /trades, NDJSON and JSON; GET /tokens") {
        const response a = svc->handle(make_request(
            http::verb::post, "/trades",
            "{\"token\":\"SOL\",\"price\":10,\"quantity\":2,\"side\":\"buy\",\"ts\":1732867200123,"
            "\"id\":1}\n{\"token\":\"SOL\",\"price\":12,\"quantity\":1,\"side\":\"sell\","
            "\"ts\":1732867200500,\"id\":2}\n",
            "application/x-ndjson"));
        CHECK(a.result() == http::status::accepted);
        CHECK(json_of(a).at("accepted").as_int64() == 2);
        const response b = svc->handle(make_request(
            http::verb::post, "/trades",
            "[{\"token\":\"ETH\",\"price\":3000.5,\"quantity\":0.1,\"side\":\"sell\",\"ts\":"
            "1732867200000,\"id\":7}]",
            "application/json"));
        CHECK(b.result() == http::status::accepted);

        response t;
        for (int i = 0; i < 400; ++i) { // the snapshot arrives with the next flush
            t = svc->handle(make_request(http::verb::get, "/tokens/SOL"));
            if (t.result() == http::status::ok &&
                json_of(t).at("candles").as_object().at("1s").as_object().at("trades").as_int64() ==
                    2) {
                break;
            }
            std::this_thread::sleep_for(5ms);
        }
        REQUIRE(t.result() == http::status::ok);
        const auto body = json_of(t);
        const auto& s1 = body.at("candles").as_object().at("1s").as_object();
        CHECK(s1.at("open").to_number<double>() == 10.0);
        CHECK(s1.at("close").to_number<double>() == 12.0);
        CHECK(s1.at("volume").to_number<double>() == 3.0);
        CHECK(body.at("candles").as_object().size() == 7);
        CHECK(body.at("latest").as_object().at("id").as_int64() == 2);
        CHECK(body.contains("rolling_24h"));
        CHECK(svc->handle(make_request(http::verb::get, "/tokens/NOPE")).result() ==
              http::status::not_found);
        CHECK(svc->handle(make_request(http::verb::get, "/tokens/a%7Bb")).result() ==
              http::status::not_found); // a valid spelling, never traded
        CHECK(svc->handle(make_request(http::verb::get, "/tokens/a{b")).result() ==
              http::status::bad_request);
    }

    SUBCASE("a bad trade rejects the whole request, with its index") {
        const response r = svc->handle(make_request(
            http::verb::post, "/trades",
            "[{\"token\":\"BAD1\",\"price\":10,\"quantity\":2,\"side\":\"buy\",\"ts\":1,\"id\":1},"
            "{\"token\":\"BAD1\",\"price\":1e400,\"quantity\":2,\"side\":\"buy\",\"ts\":1,"
            "\"id\":2}]",
            "application/json"));
        CHECK(r.result() == http::status::bad_request);
        const auto body = json_of(r);
        CHECK(body.at("index").as_int64() == 1);
        CHECK(body.at("accepted").as_int64() == 0);
        std::this_thread::sleep_for(50ms);
        CHECK(svc->handle(make_request(http::verb::get, "/tokens/BAD1")).result() ==
              http::status::not_found);
        std::string many = "[";
        for (int i = 0; i < 101; ++i) {
            many +=
                std::string(i ? "," : "") +
                "{\"token\":\"M\",\"price\":1,\"quantity\":1,\"side\":\"buy\",\"ts\":1,\"id\":" +
                std::to_string(i) + "}";
        }
        many += "]";
        CHECK(svc->handle(make_request(http::verb::post, "/trades", many, "application/json"))
                  .result() == http::status::payload_too_large);
        CHECK(svc->handle(make_request(http::verb::post, "/trades", "[]", "text/plain")).result() ==
              http::status::unsupported_media_type);
    }

    SUBCASE("admin endpoints need the token") {
        CHECK(svc->handle(make_request(http::verb::post, "/performance/gc")).result() ==
              http::status::unauthorized);
        request req = make_request(http::verb::post, "/performance/gc");
        req.set(http::field::authorization, "Bearer wrong!");
        CHECK(svc->handle(req).result() == http::status::unauthorized);
        req.set(http::field::authorization, "Bearer s3cret");
        const response gc = svc->handle(req);
        CHECK(gc.result() == http::status::ok);
        CHECK(json_of(gc).contains("before"));
        CHECK(json_of(gc).contains("after"));
        request opt = make_request(http::verb::post, "/performance/optimize/latency");
        opt.set(http::field::authorization, "Bearer s3cret");
        const response o = svc->handle(opt);
        CHECK(o.result() == http::status::ok);
        CHECK(json_of(o).at("preset").as_string() == "latency");
        CHECK(svc->handle(make_request(http::verb::get, "/performance/gc")).result() ==
              http::status::method_not_allowed);
    }

    SUBCASE("performance, metrics, health, unknown paths") {
        const response p = svc->handle(make_request(http::verb::get, "/performance"));
        CHECK(p.result() == http::status::ok);
        const auto body = json_of(p);
        for (const char* key :
             {"heap_alloc_mb", "heap_inuse_mb", "gc_cpu_fraction", "num_goroutines",
              "active_tokens", "worker_count", "redis_latency_avg_ms", "redis_success_rate"}) {
            CAPTURE(key);
            CHECK(body.contains(key));
        }
        CHECK(body.at("num_goroutines").as_int64() > 1);
        const response m = svc->handle(make_request(http::verb::get, "/metrics"));
        CHECK(m.result() == http::status::ok);
        for (const char* name : {"\nheap_inuse_mb ", "\ngc_cpu_fraction ", "\nnum_goroutines ",
                                 "\nredis_latency_avg_ms ", "\ntradeagg_trades_applied_total "}) {
            CAPTURE(name);
            CHECK(m.body().find(name) != std::string::npos);
        }
        CHECK(svc->handle(make_request(http::verb::get, "/health")).result() == http::status::ok);
        CHECK(svc->handle(make_request(http::verb::get, "/nope")).result() ==
              http::status::not_found);
        CHECK(svc->handle(make_request(http::verb::delete_, "/trades")).result() ==
              http::status::method_not_allowed);
    }

    const shutdown_report r = svc->stop(5s);
    CHECK(r.redis_complete);
    CHECK(
        svc->handle(make_request(http::verb::post, "/trades", "[]", "application/json")).result() ==
        http::status::service_unavailable);
}

TEST_CASE("route_of: every endpoint by its path, the rest as other") {
    CHECK(route_of("/trades") == route::trades);
    CHECK(route_of("/trades?x=1") == route::trades);
    CHECK(route_of("/tokens/SOL") == route::tokens);
    CHECK(route_of("/tokens/") == route::tokens);
    CHECK(route_of("/health") == route::health);
    CHECK(route_of("/performance") == route::performance);
    CHECK(route_of("/performance/gc") == route::performance_gc);
    CHECK(route_of("/performance/optimize/throughput") == route::optimize_throughput);
    CHECK(route_of("/performance/optimize/latency") == route::optimize_latency);
    CHECK(route_of("/metrics") == route::metrics);
    CHECK(route_of("/api/v3/klines?symbol=SOL") == route::api_v3);
    CHECK(route_of("/api/v3/ticker/24hr") == route::api_v3);
    for (const char* other : {"", "/", "/nope", "/performance/", "/tradesx", "/metrics/x", "other",
                              "/Trades", "/tokens", "/api/v3", "/api/v2/klines"}) {
        CAPTURE(other);
        CHECK(route_of(other) == route::other);
    }
}

namespace {

/// One sample of a Prometheus text exposition.
struct exposed_sample {
    std::string name;
    std::string labels; // as written between the braces
    double value = 0;
};

/// Parses the text format strictly enough for the checks below: every sample belongs to the
/// family of the TYPE line before it (histograms by their _bucket, _sum and _count).
struct exposition {
    std::map<std::string, std::string> types; // family -> type
    std::vector<exposed_sample> samples;
    std::vector<std::string> problems;

    explicit exposition(const std::string& text) {
        std::string family;
        std::size_t pos = 0;
        while (pos < text.size()) {
            const std::size_t end = text.find('\n', pos);
            const std::string line = text.substr(pos, end - pos);
            pos = end == std::string::npos ? text.size() : end + 1;
            if (line.starts_with("# HELP ")) {
                continue;
            }
            if (line.starts_with("# TYPE ")) {
                const std::string rest = line.substr(7);
                family = rest.substr(0, rest.find(' '));
                if (types.contains(family)) {
                    problems.push_back("family twice: " + family);
                }
                types[family] = rest.substr(rest.find(' ') + 1);
                continue;
            }
            exposed_sample s;
            const std::size_t brace = line.find('{');
            const std::size_t space = line.rfind(' ');
            s.name = line.substr(0, std::min(brace, space));
            if (brace != std::string::npos) {
                s.labels = line.substr(brace + 1, line.rfind('}') - brace - 1);
            }
            const std::string number = line.substr(space + 1);
            s.value = number == "+Inf" ? INFINITY : std::stod(number);
            const std::string& type = types[family];
            const bool belongs =
                s.name == family ||
                (type == "histogram" && (s.name == family + "_bucket" ||
                                         s.name == family + "_sum" || s.name == family + "_count"));
            if (!belongs) {
                problems.push_back("sample outside its family: " + line);
            }
            if (type == "counter" && !family.ends_with("_total")) {
                problems.push_back("counter without _total: " + family);
            }
            samples.push_back(std::move(s));
        }
    }

    [[nodiscard]] std::optional<double> value(std::string_view name,
                                              std::string_view labels = {}) const {
        for (const auto& s : samples) {
            if (s.name == name && s.labels == labels) {
                return s.value;
            }
        }
        return std::nullopt;
    }
};

} // namespace

TEST_CASE("GET /metrics: Prometheus text, counters by label, histograms that add up") {
    auto svc = make_service(config_from({{"REDIS_ADDR", "off"}, {"FLUSH_INTERVAL", "5ms"}}));
    svc->start();
    const auto trades = svc->handle(make_request(
        http::verb::post, "/trades",
        "{\"token\":\"SOL\",\"price\":10,\"quantity\":2,\"side\":\"buy\",\"ts\":1732867200123,"
        "\"id\":1}\n",
        "application/x-ndjson"));
    REQUIRE(trades.result() == http::status::accepted);
    svc->observe_response(static_cast<std::size_t>(route::trades), 202, 400us);
    svc->observe_response(static_cast<std::size_t>(route::trades), 202, 3ms);
    svc->observe_response(static_cast<std::size_t>(route::trades), 413, 20s);
    svc->observe_response(static_cast<std::size_t>(-1), 400, 0ns);
    for (int i = 0; i < 200; ++i) {
        const response m = svc->handle(make_request(http::verb::get, "/metrics"));
        const auto seen = exposition(m.body());
        if (seen.value("tradeagg_apply_latency_seconds_count").value_or(0) > 0 &&
            seen.value("tradeagg_handover_duration_seconds_count").value_or(0) > 0) {
            break;
        }
        std::this_thread::sleep_for(5ms);
    }
    const response m = svc->handle(make_request(http::verb::get, "/metrics"));
    REQUIRE(m.result() == http::status::ok);
    CHECK(std::string(m[http::field::content_type]).starts_with("text/plain; version=0.0.4"));
    const exposition e(m.body());
    CHECK(e.problems == std::vector<std::string>{});

    // The seed's eight, unchanged; the process figures a client library exports.
    for (const char* name :
         {"heap_alloc_mb", "heap_inuse_mb", "gc_cpu_fraction", "num_goroutines", "active_tokens",
          "worker_count", "redis_latency_avg_ms", "redis_success_rate",
          "process_resident_memory_bytes", "process_open_fds", "process_max_fds",
          "process_virtual_memory_bytes"}) {
        CAPTURE(name);
        CHECK(e.types.at(name) == "gauge");
    }
    CHECK(e.types.at("process_cpu_seconds_total") == "counter");
    CHECK(e.value("process_cpu_seconds_total").value_or(0) > 0);
    CHECK(e.value("process_open_fds").value_or(0) >= 3);
    const double now =
        std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    const double started = e.value("process_start_time_seconds").value_or(0);
    CHECK(started > now - 24 * 3600.0);
    CHECK(started <= now + 1);

    CHECK(e.value("tradeagg_trades_accepted_total") == 1.0);
    CHECK(e.value("tradeagg_trades_rejected_total", "reason=\"unknown_side\"") == 0.0);
    CHECK(!e.value("tradeagg_trades_rejected_total").has_value()); // labelled only
    CHECK(e.value("tradeagg_http_responses_total", "route=\"/trades\",code=\"202\"") == 2.0);
    CHECK(e.value("tradeagg_http_responses_total", "route=\"/trades\",code=\"413\"") == 1.0);
    CHECK(e.value("tradeagg_http_responses_total", "route=\"other\",code=\"400\"") == 1.0);
    CHECK(e.value("tradeagg_http_request_duration_seconds_count", "route=\"/trades\"") == 3.0);
    CHECK(e.value("tradeagg_http_request_duration_seconds_bucket",
                  "route=\"/trades\",le=\"0.0005\"") == 1.0);
    CHECK(e.value("tradeagg_http_request_duration_seconds_bucket",
                  "route=\"/trades\",le=\"0.005\"") == 2.0);
    CHECK(e.value("tradeagg_http_request_duration_seconds_bucket", "route=\"/trades\",le=\"10\"") ==
          2.0);
    CHECK(e.value("tradeagg_http_request_duration_seconds_bucket",
                  "route=\"/trades\",le=\"+Inf\"") == 3.0);
    CHECK(e.value("tradeagg_http_request_duration_seconds_sum", "route=\"/trades\"").value_or(0) ==
          doctest::Approx(20.0034));
    CHECK(e.types.at("tradeagg_apply_latency_seconds") == "histogram");
    CHECK(e.value("tradeagg_apply_latency_seconds_count") >= 1.0);
    CHECK(e.types.at("tradeagg_handover_duration_seconds") == "histogram");
    CHECK(e.value("tradeagg_handover_duration_seconds_count") >= 1.0);

    // Every histogram: buckets rise with `le`, and +Inf is the count.
    std::map<std::string, std::vector<double>> buckets; // series (less le) -> counts
    for (const auto& s : e.samples) {
        if (s.name.ends_with("_bucket")) {
            const std::size_t le = s.labels.find("le=");
            const std::string key = s.name + "|" + s.labels.substr(0, le);
            buckets[key].push_back(s.value);
            if (s.labels.ends_with("le=\"+Inf\"")) {
                const std::string base = s.name.substr(0, s.name.size() - 7);
                std::string labels = s.labels.substr(0, le);
                if (labels.ends_with(",")) {
                    labels.pop_back();
                }
                CAPTURE(key);
                CHECK(e.value(base + "_count", labels) == s.value);
            }
        }
    }
    CHECK(buckets.size() >= route_count + 1);
    for (const auto& [key, counts] : buckets) {
        CAPTURE(key);
        CHECK(counts.size() == latency_bounds_seconds.size() + 1);
        CHECK(std::is_sorted(counts.begin(), counts.end()));
    }
    CHECK(e.value("tradeagg_redis_connected") == std::nullopt); // Redis is off
    (void)svc->stop(5s);
}

#ifdef TRADEAGG_SERVER_BINARY

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include "raw_http_client.hpp"
#include "redis_cluster.hpp"
#include "redis_keyspace.hpp"
#include "redis_server.hpp"
#include "server_process.hpp"

using tradeagg::testing::server_process;
#include "trade_stream.hpp"

namespace {

/// One keep-alive HTTP connection.
class client {
public:
    explicit client(int port) : socket_(io_) {
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        for (;;) {
            boost::system::error_code ec;
            socket_.connect(
                {boost::asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)},
                ec);
            if (!ec) {
                return;
            }
            socket_.close();
            REQUIRE(std::chrono::steady_clock::now() < deadline);
            std::this_thread::sleep_for(20ms);
        }
    }
    response send(request req) {
        req.set(http::field::host, "127.0.0.1");
        req.prepare_payload();
        http::write(socket_, req);
        response res;
        http::read(socket_, buffer_, res);
        return res;
    }

private:
    boost::asio::io_context io_;
    boost::asio::ip::tcp::socket socket_;
    boost::beast::flat_buffer buffer_;
};

/// Runs the server with `redis_addr`, posts a generated stream, sends SIGTERM right after the
/// last 202, and checks with `compare(reference, &keys)` that Redis holds what a reference
/// pipeline given the same trades holds.
void sigterm_after_last_202(const std::string& redis_addr,
                            const std::function<tradeagg::testing::mismatch_log(
                                const tradeagg::memory_sink&, std::size_t*)>& compare) {
    const int http_port = tradeagg::testing::free_port();
    server_process server({"REDIS_ADDR=" + redis_addr,
                           "HTTP_ADDR=127.0.0.1:" + std::to_string(http_port),
                           "REDIS_KEY_PREFIX=life", "SHUTDOWN_TIMEOUT=20s"});
    tradeagg::testing::stream_options o;
    o.tokens = 100;
    o.trades = 20'000;
    o.ms_per_trade = 10;
    o.late_fraction = 0.0; // the reference below is a pipeline: lateness is tested elsewhere
    const tradeagg::testing::trade_stream s = tradeagg::testing::make_stream(o);
    client c(http_port);
    for (int i = 0; i < 200; ++i) { // wait until it serves
        if (c.send(make_request(http::verb::get, "/health")).result() == http::status::ok) {
            break;
        }
    }
    const std::size_t batch = 500;
    for (std::size_t from = 0; from < s.arrivals.size(); from += batch) {
        std::string body;
        for (std::size_t i = from; i < std::min(s.arrivals.size(), from + batch); ++i) {
            const tradeagg::trade& t = s.arrivals[i].t;
            body +=
                "{\"token\":\"" + s.names[s.arrivals[i].token_index] +
                "\",\"price\":" + std::string(tradeagg::redis::number_text(t.price).view()) +
                ",\"quantity\":" + std::string(tradeagg::redis::number_text(t.quantity).view()) +
                ",\"side\":\"" + std::string(tradeagg::to_string(t.taker)) +
                "\",\"ts\":" + std::to_string(t.ts_ms) + ",\"id\":" + std::to_string(t.id) + "}\n";
        }
        const response r =
            c.send(make_request(http::verb::post, "/trades", body, "application/x-ndjson"));
        REQUIRE(r.result() == http::status::accepted);
    }
    server.signal(SIGTERM); // right after the last 202
    CHECK(server.wait() == 0);

    const auto ref = tradeagg::testing::reference_run(s);
    std::size_t keys = 0;
    const tradeagg::testing::mismatch_log log = compare(ref->sink(), &keys);
    INFO(log.text());
    CHECK(log.count == 0);
    CHECK(keys > 1'000);
}

} // namespace

TEST_CASE("server process: SIGTERM right after the last 202, Redis equals the reference") {
    tradeagg::testing::redis_server redis;
    sigterm_after_last_202("127.0.0.1:" + std::to_string(redis.port()),
                           [&](const tradeagg::memory_sink& ref, std::size_t* keys) {
                               return tradeagg::testing::compare_redis_with(
                                   "127.0.0.1", redis.port(), ref, "life",
                                   tradeagg::throughput_policy::intervals, keys);
                           });
}

TEST_CASE("server process: REDIS_ADDR lists a cluster's masters, the cluster equals the "
          "reference") {
    tradeagg::testing::redis_cluster cluster(3);
    const std::string seeds = cluster.seed_list();
    sigterm_after_last_202(seeds, [&](const tradeagg::memory_sink& ref, std::size_t* keys) {
        return tradeagg::testing::compare_cluster_with(cluster.node(0).port(), ref, "life",
                                                       tradeagg::throughput_policy::intervals, keys,
                                                       tradeagg::testing::latest_writer::sink);
    });
}

namespace {

std::string trade_line(std::string_view token, std::string_view price, std::string_view side,
                       int id, std::string_view quantity = "1.5",
                       std::string_view ts = "1732867200123") {
    return "{\"token\":\"" + std::string(token) + "\",\"price\":" + std::string(price) +
           ",\"quantity\":" + std::string(quantity) + ",\"side\":\"" + std::string(side) +
           "\",\"ts\":" + std::string(ts) + ",\"id\":" + std::to_string(id) + "}\n";
}

std::string hex(std::size_t n) {
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, n, 16);
    return std::string(buf, r.ptr);
}

/// The pipeline's accepted count, from GET /performance.
std::uint64_t accepted_by(std::uint16_t port) {
    tradeagg::testing::raw_client c(port);
    REQUIRE(c.send(tradeagg::testing::get("/performance")));
    const auto r = c.read_response(10s);
    REQUIRE(r.what == tradeagg::testing::outcome::answered);
    return boost::json::parse(r.res.body())
        .at("pipeline")
        .at("accepted")
        .to_number<std::uint64_t>();
}

} // namespace

TEST_CASE("server process: hostile clients get a 4xx or a close, only good trades enter") {
    using tradeagg::testing::raw_client;
    using tradeagg::testing::status_of;
    const auto port = static_cast<std::uint16_t>(tradeagg::testing::free_port());
    server_process server({"REDIS_ADDR=off", "HTTP_ADDR=127.0.0.1:" + std::to_string(port),
                           "WORKER_QUEUE_SIZE=100", "HTTP_MAX_BODY_BYTES=65536",
                           "HTTP_HEADER_TIMEOUT=300ms", "HTTP_REQUEST_TIMEOUT=1s",
                           "HTTP_MAX_CONNECTIONS=16"});
    REQUIRE(tradeagg::testing::eventually([&] { return raw_client::can_connect(port); }));
    // One request on a fresh connection: its status (-1 closed, -2 timeout, -3 garbage).
    const auto ask = [&](const std::string& request) {
        raw_client c(port);
        (void)c.send(request); // the server may close before reading all of it
        return status_of(c.read_response(5s));
    };
    const auto ndjson = [](const std::string& body) {
        return tradeagg::testing::post("/trades", body, "application/x-ndjson");
    };
    const auto closed_or = [](int status, int expected) {
        return status == expected || status == -1;
    };

    std::uint64_t good = 0;
    REQUIRE(
        ask(ndjson(trade_line("SOL", "123.45", "buy", 1) + trade_line("ETH", "3000", "sell", 2) +
                   trade_line("SOL", "123.5", "sell", 3))) == 202);
    good += 3;

    // Bad trades: 400 each, and nothing of the request applied (a good trade comes first).
    const std::string first = trade_line("SOL", "124", "buy", 10);
    for (const std::string& bad : {
             trade_line("SOL", "NaN", "buy", 11),
             trade_line("SOL", "1e400", "buy", 11),
             trade_line("SOL", "-5", "buy", 11),
             trade_line("SOL", "124", "hold", 11),
             trade_line("SOL", "124", "buy", 11, "0"),
             trade_line("SOL", "124", "buy", 11, "1", "\"soon\""),
             trade_line("SOL", "124", "buy", 11, "1", "1e30"),
             trade_line("S{L", "124", "buy", 11),
             trade_line(std::string(200, 'x'), "124", "buy", 11),
             std::string("{\"token\":\"SOL\",\"price\":124}\n"),
             std::string("{\"token\":\"SOL\",\"price\":124,\"quantity\":1,\"side\":\"buy\","
                         "\"ts\":1,\"id\":18446744073709551616}\n"),
             std::string("{not json\n"),
             std::string("[1,2,3]\n"),
             std::string("\xff\xfe\n"),
         }) {
        INFO(bad);
        CHECK(ask(ndjson(first + bad)) == 400);
    }
    CHECK(ask(tradeagg::testing::post("/trades", "[" + first + ",{\"token\":1}]",
                                      "application/json")) == 400);
    CHECK(ask(tradeagg::testing::post("/trades", first, "text/plain")) == 415);

    // Oversized: more trades than WORKER_QUEUE_SIZE, a body over HTTP_MAX_BODY_BYTES (announced
    // and chunked), a header over 8 KiB, a chunked trailer of 64 KiB.
    std::string many;
    for (int i = 0; i < 101; ++i) {
        many += trade_line("BTC", "95000", "buy", 100 + i);
    }
    CHECK(ask(ndjson(many)) == 413);
    CHECK(closed_or(ask("POST /trades HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-ndjson"
                        "\r\nContent-Length: 70000\r\n\r\n" +
                        std::string(70'000, ' ')),
                    413));
    CHECK(closed_or(ask("POST /trades HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                        "Content-Type: application/x-ndjson\r\n\r\n11170\r\n" +
                        std::string(70'000, ' ') + "\r\n0\r\n\r\n"),
                    413));
    CHECK(closed_or(
        ask(tradeagg::testing::get("/health", "X-Big: " + std::string(9'000, 'a') + "\r\n")), 431));
    CHECK(closed_or(ask("POST /trades HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                        "Content-Type: application/x-ndjson\r\n\r\n" +
                        hex(first.size()) + "\r\n" + first +
                        "\r\n0\r\nX-T: " + std::string(65'536, 't') + "\r\n\r\n"),
                    431));
    CHECK(closed_or(ask("\x16\x03\x01\x02\x00garbage\r\n\r\n"), 400));
    CHECK(
        closed_or(ask("GET /health HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n"), 400));

    // A slow client: one header byte every 100 ms is cut off at HTTP_HEADER_TIMEOUT.
    {
        raw_client slow(port);
        const auto took = slow.trickle(
            "POST /trades HTTP/1.1\r\nHost: t\r\nX-Slow: " + std::string(100, 's') + "\r\n\r\n",
            100ms);
        REQUIRE(took.has_value());
        CHECK(*took < 2s);
    }

    // A flood: beyond HTTP_MAX_CONNECTIONS, connections get 503 and a close at once.
    {
        std::vector<std::unique_ptr<raw_client>> flood;
        for (int i = 0; i < 24; ++i) {
            flood.push_back(std::make_unique<raw_client>(port));
        }
        int refused = 0;
        for (auto& c : flood) {
            if (status_of(c->read_response(200ms)) == 503) {
                ++refused;
            }
        }
        CHECK(refused >= 8);
    }

    // Still up; only the good trades went in.
    CHECK(tradeagg::testing::eventually(
        [&] { return ask(tradeagg::testing::get("/health")) == 200; }));
    CHECK(accepted_by(port) == good);
    REQUIRE(ask(ndjson(trade_line("SOL", "125", "buy", 1000))) == 202);
    good += 1;
    CHECK(accepted_by(port) == good);
    server.signal(SIGTERM);
    CHECK(server.wait() == 0);
}

TEST_CASE("server process: Redis unreachable at SIGTERM, exit 1 in time, the loss logged") {
    const auto port = static_cast<std::uint16_t>(tradeagg::testing::free_port());
    const int redis_port = tradeagg::testing::free_port(); // nothing listens there
    const std::string log = "server_redis_down_" + std::to_string(::getpid()) + ".log";
    server_process server({"REDIS_ADDR=127.0.0.1:" + std::to_string(redis_port),
                           "HTTP_ADDR=127.0.0.1:" + std::to_string(port), "SHUTDOWN_TIMEOUT=1s"},
                          log);
    REQUIRE(tradeagg::testing::eventually(
        [&] { return tradeagg::testing::raw_client::can_connect(port); }));
    {
        tradeagg::testing::raw_client c(port);
        REQUIRE(c.send(tradeagg::testing::post(
            "/trades", trade_line("SOL", "10", "buy", 1) + trade_line("ETH", "20", "sell", 2),
            "application/x-ndjson")));
        REQUIRE(tradeagg::testing::status_of(c.read_response(5s)) == 202);
    }
    const auto began = std::chrono::steady_clock::now();
    server.signal(SIGTERM);
    CHECK(server.wait() == 1);
    CHECK(std::chrono::steady_clock::now() - began < 4s); // 1 s, and the process's exit
    std::ifstream in(log);
    std::stringstream text;
    text << in.rdbuf();
    INFO(text.str());
    CHECK(text.str().find("keys were not written to Redis") != std::string::npos);
    std::remove(log.c_str());
}

#endif
