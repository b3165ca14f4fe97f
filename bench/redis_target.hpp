#pragma once
// The Redis the BM_redis_* benchmarks write to. (The BM_stream_* benchmarks use a cluster of
// their own: partition_streams.hpp.)

#include <cstdlib>
#include <optional>

#include <tradeagg/redis/config.hpp>

#include "redis_server.hpp" // tests/: the fixture the Redis tests use

namespace bench {

/// The Redis the benchmarks write to, as the sink reads it from the environment: REDIS_ADDR's
/// server (with REDIS_PASSWORD and REDIS_DB) when the variable is set, otherwise a redis-server
/// of our own, started on the first call (so listing or filtering benchmarks starts nothing)
/// and stopped when the process exits. Throws if REDIS_* is malformed or the server cannot be
/// started.
inline const tradeagg::redis::redis_config& target() {
    static std::optional<tradeagg::testing::redis_server> own;
    static const tradeagg::redis::redis_config config = [] {
        tradeagg::redis::redis_config c = tradeagg::redis::redis_config_from_env(
            [](const char* name) -> const char* { return std::getenv(name); });
        const char* addr = std::getenv("REDIS_ADDR");
        if (addr == nullptr || *addr == '\0') {
            own.emplace();
            c.host = "127.0.0.1";
            c.port = own->port();
        }
        return c;
    }();
    return config;
}

} // namespace bench
