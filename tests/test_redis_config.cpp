// The Redis sink's settings from the seed's environment variables.

#include <chrono>
#include <map>
#include <string>

#include <doctest/doctest.h>

#include <tradeagg/redis/config.hpp>

using namespace tradeagg;
using namespace std::chrono_literals;

namespace {

redis::redis_config from(const std::map<std::string, std::string>& env) {
    return redis::redis_config_from_env([&](const char* name) -> const char* {
        const auto it = env.find(name);
        return it == env.end() ? nullptr : it->second.c_str();
    });
}

std::string error_of(const std::map<std::string, std::string>& env) {
    try {
        (void)from(env);
    } catch (const config_error& e) {
        return e.field() + " | " + e.what();
    }
    return "";
}

} // namespace

TEST_CASE("durations as the seed writes them") {
    CHECK(redis::parse_duration("100ms") == 100ms);
    CHECK(redis::parse_duration("3s") == 3'000ms);
    CHECK(redis::parse_duration("5m") == 300'000ms);
    CHECK(redis::parse_duration("30m") == 1'800'000ms);
    CHECK(redis::parse_duration("1h30m") == 5'400'000ms);
    CHECK(redis::parse_duration("1.5s") == 1'500ms);
    CHECK(redis::parse_duration("0s") == 0ms);
    for (const char* bad :
         {"", "3", "s", "3x", "-1s", "1.5ms", "3 s", "1..5s", "ms", "1e3s", "99999999999999999h"}) {
        CAPTURE(bad);
        CHECK_FALSE(redis::parse_duration(bad).has_value());
    }
}

TEST_CASE("REDIS_* variables: defaults, values, and errors that name the variable") {
    const redis::redis_config d = from({});
    CHECK(d.host == "127.0.0.1");
    CHECK(d.port == 6379);
    CHECK(d.max_retries == 3);
    CHECK(d.retry_delay == 100ms);
    CHECK(d.pipeline_size == 100);
    CHECK(d.read_timeout == 3s);
    CHECK(d.write_timeout == 3s);
    CHECK(d.idle_timeout == 5min);
    CHECK(d.max_conn_age == 30min);

    const redis::redis_config c = from({{"REDIS_ADDR", "10.0.0.7:6380"},
                                        {"REDIS_PASSWORD", "secret"},
                                        {"REDIS_DB", "2"},
                                        {"REDIS_MAX_RETRIES", "5"},
                                        {"REDIS_RETRY_DELAY", "250ms"},
                                        {"REDIS_PIPELINE_SIZE", "200"},
                                        {"REDIS_READ_TIMEOUT", "1s"},
                                        {"REDIS_WRITE_TIMEOUT", "1s"},
                                        {"REDIS_IDLE_TIMEOUT", "1m"},
                                        {"REDIS_MAX_CONN_AGE", "1h"}});
    CHECK(c.host == "10.0.0.7");
    CHECK(c.port == 6380);
    CHECK(c.password == "secret");
    CHECK(c.db == 2);
    CHECK(c.max_retries == 5);
    CHECK(c.retry_delay == 250ms);
    CHECK(c.pipeline_size == 200);
    CHECK(c.read_timeout == 1s);
    CHECK(c.idle_timeout == 1min);
    CHECK(c.max_conn_age == 1h);
    CHECK(from({{"REDIS_DB", ""}}).db == 0); // empty: the default

    CHECK(error_of({{"REDIS_READ_TIMEOUT", "3x"}}).starts_with("REDIS_READ_TIMEOUT | "));
    CHECK(error_of({{"REDIS_READ_TIMEOUT", "3x"}}).find("\"3x\"") != std::string::npos);
    CHECK(error_of({{"REDIS_READ_TIMEOUT", "0s"}}).starts_with("REDIS_READ_TIMEOUT | "));
    CHECK(error_of({{"REDIS_PIPELINE_SIZE", "0"}}).starts_with("REDIS_PIPELINE_SIZE | "));
    CHECK(error_of({{"REDIS_PIPELINE_SIZE", "12abc"}}).starts_with("REDIS_PIPELINE_SIZE | "));
    CHECK(error_of({{"REDIS_MAX_RETRIES", "-1"}}).starts_with("REDIS_MAX_RETRIES | "));
    CHECK(error_of({{"REDIS_ADDR", "localhost"}}).starts_with("REDIS_ADDR | "));
    CHECK(error_of({{"REDIS_ADDR", "127.0.0.1:99999"}}).starts_with("REDIS_ADDR | "));
    CHECK(error_of({{"REDIS_ADDR", ":6379"}}).starts_with("REDIS_ADDR | "));
    CHECK(error_of({{"REDIS_DB", "x"}}).starts_with("REDIS_DB | "));

    // Seed nodes of a cluster: the first is host and port, the others follow.
    const redis::redis_config seeds =
        from({{"REDIS_ADDR", "127.0.0.1:7000,127.0.0.1:7001,10.1.2.3:7002"}});
    CHECK(seeds.host == "127.0.0.1");
    CHECK(seeds.port == 7000);
    REQUIRE(seeds.more_seeds.size() == 2);
    CHECK(seeds.more_seeds[0] == std::pair<std::string, int>{"127.0.0.1", 7001});
    CHECK(seeds.more_seeds[1] == std::pair<std::string, int>{"10.1.2.3", 7002});
    CHECK(from({{"REDIS_ADDR", "127.0.0.1:7000"}}).more_seeds.empty());
    CHECK(error_of({{"REDIS_ADDR", "127.0.0.1:7000,"}}).starts_with("REDIS_ADDR | "));
    CHECK(error_of({{"REDIS_ADDR", "127.0.0.1:7000,x:0"}}).starts_with("REDIS_ADDR | "));
}
