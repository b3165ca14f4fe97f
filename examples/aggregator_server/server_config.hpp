#pragma once
// The aggregator server's configuration: every environment variable of the seed
// (../shared/seed/performance-optimization-guide.md) plus the server's own, read and checked at
// start-up. A malformed or out-of-bounds value is one `tradeagg::config_error` whose message
// names the variable, the value and what is allowed.
//
// How the seed's variables map onto the library (the policy fixes the bounds at compile time):
//   GC_TARGET_PERCENTAGE   runtime_config::gc_target_percent   policy's gc_target_min..max
//   MEMORY_LIMIT_MB        runtime_config::memory_limit_mb     0 (none) .. 16 TiB
//   TRADE_BUFFER_SIZE      runtime_config::ring_capacity       2 .. policy's ingress_capacity
//                          (each ingest thread's ring into each shard)
//   BATCH_PROCESSING_SIZE  runtime_config::batch_width         1 .. policy's batch_width
//   MAX_WORKERS            runtime_config::shards, at most the machine's hardware threads and
//                          the policy's max_shards (the seed's 100 means "as many as useful")
//   MAX_TOKEN_PROCESSORS   runtime_config::max_active_tokens   1 .. policy's max_tokens
//   WORKER_QUEUE_SIZE      most trades in one POST /trades request (more: 413)
//   PROCESSOR_CHANNEL_SIZE most POST /trades requests being applied at once (more: 503)
//   REDIS_*                tradeagg::redis::redis_config (see tradeagg/redis/config.hpp)
// Unset variables take the policy's value, not the seed's default, where the two differ
// (MAX_TOKEN_PROCESSORS=1000 would refuse the 1001st token of a throughput server).

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <unistd.h>

#include <tradeagg/redis/config.hpp>
#include <tradeagg/runtime_config.hpp>

namespace aggregator {

/// Which compiled-in policy the server instantiates.
enum class policy_choice { throughput, latency, memory_constrained };

[[nodiscard]] constexpr std::string_view to_string(policy_choice p) noexcept {
    return p == policy_choice::throughput ? "throughput"
           : p == policy_choice::latency  ? "latency"
                                          : "memory_constrained";
}

/// One I/O thread more than the machine has hardware threads (2 if it cannot tell). Each
/// connection stays on one thread, and a thread answering POST /trades is busy for the whole
/// request, so the spare thread is where a connection beyond the busiest ones (a monitor polling
/// GET /performance) lands: measured on 2 cores under 1 M trades/s of ingest, its p99 drops from
/// 4.6 to 2.4 ms and ingest is no slower.
inline std::size_t default_http_threads() noexcept {
    const unsigned hw = std::thread::hardware_concurrency();
    return hw == 0 ? 2 : static_cast<std::size_t>(hw) + 1;
}

/// HTTP limits and timeouts, defaults near nginx's and Beast's.
struct http_settings {
    std::string address = "127.0.0.1";
    unsigned short port = 8080;
    std::size_t threads = default_http_threads();      ///< HTTP_THREADS
    std::size_t max_header_bytes = 8 * 1024;           ///< HTTP_MAX_HEADER_BYTES
    std::size_t max_body_bytes = 1024 * 1024;          ///< HTTP_MAX_BODY_BYTES
    std::chrono::milliseconds header_timeout{10'000};  ///< HTTP_HEADER_TIMEOUT
    std::chrono::milliseconds request_timeout{30'000}; ///< HTTP_REQUEST_TIMEOUT
    std::chrono::milliseconds write_timeout{10'000};   ///< HTTP_WRITE_TIMEOUT
    std::chrono::milliseconds idle_timeout{60'000};    ///< HTTP_IDLE_TIMEOUT
    std::size_t max_requests_per_connection = 1'000;   ///< HTTP_MAX_REQUESTS_PER_CONNECTION
    std::size_t max_connections = 1'024;               ///< HTTP_MAX_CONNECTIONS
};

/// Everything the server reads from its environment.
struct server_config {
    policy_choice policy = policy_choice::throughput; ///< AGGREGATOR_POLICY
    tradeagg::runtime_config pipeline;                ///< the seed's pipeline variables
    std::size_t max_workers = 100;                    ///< MAX_WORKERS as given
    std::size_t max_trades_per_request = 10'000;      ///< WORKER_QUEUE_SIZE
    std::size_t max_ingest_requests = 1'000;          ///< PROCESSOR_CHANNEL_SIZE
    std::chrono::milliseconds ingest_deadline{200};   ///< INGEST_DEADLINE: then 503
    tradeagg::redis::redis_config redis;
    http_settings http;
    std::string admin_token;                           ///< ADMIN_TOKEN ("" = admin open)
    std::chrono::milliseconds monitor_sample{10'000};  ///< MONITOR_SAMPLE_INTERVAL
    std::chrono::milliseconds monitor_tune{60'000};    ///< MONITOR_TUNE_INTERVAL
    std::chrono::milliseconds shutdown_timeout{8'000}; ///< SHUTDOWN_TIMEOUT
    bool redis_enabled = true;                         ///< REDIS_ADDR=off runs without Redis
    /// INGEST_STREAMS: 0 takes trades over HTTP; N > 0 reads them from N partition streams in
    /// Redis instead, shared with the other instances (see tradeagg/redis/stream_consumer.hpp).
    std::size_t ingest_streams = 0;
    std::string instance_id;                           ///< INSTANCE_ID (default: host-pid)
    std::chrono::milliseconds stream_lease_ttl{5'000}; ///< STREAM_LEASE_TTL
    std::size_t stream_read_count = 4'096;             ///< STREAM_READ_COUNT
    /// STREAM_CHECKPOINT_INTERVAL: how often a partition's holder stores a checkpoint of its
    /// state, from which a new holder replays; "off" (zero) takes none.
    std::chrono::milliseconds stream_checkpoint_interval{2'000};
    /// STREAM_RETENTION: with checkpoints, a floor (entries go once a checkpoint before the
    /// newest includes them and they are older than this; unset: at once). Without, unset keeps
    /// what rebuilds need to be exact (the policy's longest interval or rolling window, plus its
    /// lateness). "off" (zero) never trims.
    std::optional<std::chrono::milliseconds> stream_retention;
    /// QUOTE_ASSET: the quote asset of every symbol of the Binance-compatible API (each token is
    /// a base asset quoted in it).
    std::string quote_asset = "USD";
};

/// Every variable the server reads, for the start-up log and the documentation.
inline constexpr std::string_view known_variables[] = {"AGGREGATOR_POLICY",
                                                       "HTTP_ADDR",
                                                       "HTTP_THREADS",
                                                       "HTTP_MAX_HEADER_BYTES",
                                                       "HTTP_MAX_BODY_BYTES",
                                                       "HTTP_HEADER_TIMEOUT",
                                                       "HTTP_REQUEST_TIMEOUT",
                                                       "HTTP_WRITE_TIMEOUT",
                                                       "HTTP_IDLE_TIMEOUT",
                                                       "HTTP_MAX_REQUESTS_PER_CONNECTION",
                                                       "HTTP_MAX_CONNECTIONS",
                                                       "ADMIN_TOKEN",
                                                       "GC_TARGET_PERCENTAGE",
                                                       "MEMORY_LIMIT_MB",
                                                       "TRADE_BUFFER_SIZE",
                                                       "PROCESSOR_CHANNEL_SIZE",
                                                       "WORKER_QUEUE_SIZE",
                                                       "BATCH_PROCESSING_SIZE",
                                                       "MAX_WORKERS",
                                                       "MAX_TOKEN_PROCESSORS",
                                                       "FLUSH_INTERVAL",
                                                       "INGEST_DEADLINE",
                                                       "MONITOR_SAMPLE_INTERVAL",
                                                       "MONITOR_TUNE_INTERVAL",
                                                       "SHUTDOWN_TIMEOUT",
                                                       "REDIS_ADDR",
                                                       "REDIS_PASSWORD",
                                                       "REDIS_DB",
                                                       "REDIS_MAX_RETRIES",
                                                       "REDIS_RETRY_DELAY",
                                                       "REDIS_PIPELINE_SIZE",
                                                       "REDIS_READ_TIMEOUT",
                                                       "REDIS_WRITE_TIMEOUT",
                                                       "REDIS_IDLE_TIMEOUT",
                                                       "REDIS_MAX_CONN_AGE",
                                                       "REDIS_KEY_PREFIX",
                                                       "INGEST_STREAMS",
                                                       "INSTANCE_ID",
                                                       "STREAM_LEASE_TTL",
                                                       "STREAM_READ_COUNT",
                                                       "STREAM_CHECKPOINT_INTERVAL",
                                                       "STREAM_RETENTION",
                                                       "QUOTE_ASSET"};

namespace detail {

using getenv_fn = std::function<const char*(const char*)>;

inline std::optional<std::string_view> get(const getenv_fn& getenv, const char* name) {
    const char* v = getenv(name);
    if (v == nullptr || *v == '\0') {
        return std::nullopt;
    }
    return std::string_view(v);
}

[[noreturn]] inline void fail(std::string_view name, std::string_view value,
                              const std::string& allowed) {
    throw tradeagg::config_error(std::string(name), std::string(name) + " = \"" +
                                                        std::string(value) + "\": " + allowed);
}

template <class Int>
Int whole(const getenv_fn& getenv, const char* name, Int fallback, Int low, Int high) {
    const auto v = get(getenv, name);
    if (!v) {
        return fallback;
    }
    Int value{};
    const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), value);
    if (ec != std::errc{} || end != v->data() + v->size() || value < low || value > high) {
        fail(name, *v,
             "expected a whole number in " + std::to_string(low) + ".." + std::to_string(high));
    }
    return value;
}

template <class Int>
std::optional<Int> optional_whole(const getenv_fn& getenv, const char* name, Int low, Int high) {
    if (!get(getenv, name)) {
        return std::nullopt;
    }
    return whole<Int>(getenv, name, low, low, high);
}

inline std::chrono::milliseconds duration(const getenv_fn& getenv, const char* name,
                                          std::chrono::milliseconds fallback,
                                          std::chrono::milliseconds low,
                                          std::chrono::milliseconds high) {
    const auto v = get(getenv, name);
    if (!v) {
        return fallback;
    }
    const auto d = tradeagg::redis::parse_duration(*v);
    if (!d || *d < low || *d > high) {
        fail(name, *v,
             "expected a duration such as 100ms, 3s, 5m or 30m, from " +
                 std::to_string(low.count()) + " ms to " + std::to_string(high.count()) + " ms");
    }
    return *d;
}

/// "ip:port" (IPv4, or [IPv6]:port).
inline void parse_address(std::string_view name, std::string_view text, http_settings& h) {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
        fail(name, text, "expected ip:port, e.g. 127.0.0.1:8080 or 0.0.0.0:8080");
    }
    std::string_view host = text.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    const std::string_view port = text.substr(colon + 1);
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc{} || end != port.data() + port.size() || value > 65'535 || host.empty()) {
        fail(name, text, "expected ip:port with a port in 0..65535");
    }
    h.address = std::string(host);
    h.port = static_cast<unsigned short>(value);
}

} // namespace detail

/// Reads and checks every variable through `getenv` (unset or empty: the default). Throws
/// `tradeagg::config_error` naming the first bad variable. Policy bounds are checked by
/// `check_against_policy` once the policy is known. Allocates.
[[nodiscard]] inline server_config
server_config_from_env(const std::function<const char*(const char*)>& getenv) {
    using std::chrono::milliseconds;
    using namespace detail;
    server_config c;
    if (const auto v = get(getenv, "AGGREGATOR_POLICY")) {
        if (*v == "throughput" || *v == "throughput_policy") {
            c.policy = policy_choice::throughput;
        } else if (*v == "latency" || *v == "latency_policy") {
            c.policy = policy_choice::latency;
        } else if (*v == "memory_constrained" || *v == "memory_constrained_policy") {
            c.policy = policy_choice::memory_constrained;
        } else {
            fail("AGGREGATOR_POLICY", *v, "expected throughput, latency or memory_constrained");
        }
    }
    if (const auto v = get(getenv, "HTTP_ADDR")) {
        parse_address("HTTP_ADDR", *v, c.http);
    }
    c.http.threads = whole<std::size_t>(getenv, "HTTP_THREADS", c.http.threads, 1, 256);
    c.http.max_header_bytes = whole<std::size_t>(getenv, "HTTP_MAX_HEADER_BYTES",
                                                 c.http.max_header_bytes, 1'024, 1u << 20);
    c.http.max_body_bytes =
        whole<std::size_t>(getenv, "HTTP_MAX_BODY_BYTES", c.http.max_body_bytes, 1'024, 1u << 30);
    c.http.header_timeout = duration(getenv, "HTTP_HEADER_TIMEOUT", c.http.header_timeout,
                                     milliseconds(10), milliseconds(3'600'000));
    c.http.request_timeout = duration(getenv, "HTTP_REQUEST_TIMEOUT", c.http.request_timeout,
                                      milliseconds(10), milliseconds(3'600'000));
    c.http.write_timeout = duration(getenv, "HTTP_WRITE_TIMEOUT", c.http.write_timeout,
                                    milliseconds(10), milliseconds(3'600'000));
    c.http.idle_timeout = duration(getenv, "HTTP_IDLE_TIMEOUT", c.http.idle_timeout,
                                   milliseconds(10), milliseconds(86'400'000));
    c.http.max_requests_per_connection =
        whole<std::size_t>(getenv, "HTTP_MAX_REQUESTS_PER_CONNECTION",
                           c.http.max_requests_per_connection, 1, 100'000'000);
    c.http.max_connections =
        whole<std::size_t>(getenv, "HTTP_MAX_CONNECTIONS", c.http.max_connections, 1, 1'000'000);
    if (const auto v = get(getenv, "ADMIN_TOKEN")) {
        c.admin_token = std::string(*v);
    }

    c.pipeline.gc_target_percent =
        optional_whole<unsigned>(getenv, "GC_TARGET_PERCENTAGE", 1, 100'000);
    c.pipeline.memory_limit_mb =
        optional_whole<std::size_t>(getenv, "MEMORY_LIMIT_MB", 0, tradeagg::max_memory_limit_mb);
    c.pipeline.ring_capacity =
        optional_whole<std::size_t>(getenv, "TRADE_BUFFER_SIZE", 2, 1u << 30);
    c.pipeline.batch_width =
        optional_whole<std::size_t>(getenv, "BATCH_PROCESSING_SIZE", 1, 1u << 30);
    c.pipeline.max_active_tokens =
        optional_whole<std::size_t>(getenv, "MAX_TOKEN_PROCESSORS", 1, 1u << 30);
    c.max_workers = whole<std::size_t>(getenv, "MAX_WORKERS", c.max_workers, 1, 100'000);
    c.max_trades_per_request =
        whole<std::size_t>(getenv, "WORKER_QUEUE_SIZE", c.max_trades_per_request, 1, 10'000'000);
    c.max_ingest_requests =
        whole<std::size_t>(getenv, "PROCESSOR_CHANNEL_SIZE", c.max_ingest_requests, 1, 1'000'000);
    if (get(getenv, "FLUSH_INTERVAL")) {
        c.pipeline.flush_interval =
            duration(getenv, "FLUSH_INTERVAL", milliseconds(100), tradeagg::min_flush_interval,
                     tradeagg::max_flush_interval);
    }
    c.ingest_deadline = duration(getenv, "INGEST_DEADLINE", c.ingest_deadline, milliseconds(1),
                                 milliseconds(60'000));
    c.monitor_sample = duration(getenv, "MONITOR_SAMPLE_INTERVAL", c.monitor_sample,
                                milliseconds(100), milliseconds(3'600'000));
    c.monitor_tune = duration(getenv, "MONITOR_TUNE_INTERVAL", c.monitor_tune, milliseconds(100),
                              milliseconds(86'400'000));
    c.shutdown_timeout = duration(getenv, "SHUTDOWN_TIMEOUT", c.shutdown_timeout, milliseconds(100),
                                  milliseconds(600'000));

    if (const auto v = get(getenv, "REDIS_ADDR"); v && *v == "off") {
        c.redis_enabled = false;
    }
    // REDIS_ADDR=off is ours: the library's parser sees it unset.
    c.redis = tradeagg::redis::redis_config_from_env([&](const char* name) -> const char* {
        if (!c.redis_enabled && std::string_view(name) == "REDIS_ADDR") {
            return nullptr;
        }
        return getenv(name);
    });
    if (const auto v = get(getenv, "REDIS_KEY_PREFIX")) {
        if (v->size() > 256 || v->find_first_of("{} \r\n\t") != std::string_view::npos) {
            fail("REDIS_KEY_PREFIX", *v, "expected 1 to 256 characters without braces or spaces");
        }
        c.redis.key_prefix = std::string(*v);
    }
    c.ingest_streams = whole<std::size_t>(getenv, "INGEST_STREAMS", c.ingest_streams, 0, 16'384);
    if (c.ingest_streams > 0 && !c.redis_enabled) {
        fail("INGEST_STREAMS", std::to_string(c.ingest_streams),
             "the streams are in Redis: REDIS_ADDR cannot be off");
    }
    if (const auto v = get(getenv, "INSTANCE_ID")) {
        if (v->size() > 128 || v->find_first_of(" #\r\n\t") != std::string_view::npos) {
            fail("INSTANCE_ID", *v, "expected 1 to 128 characters without spaces or '#'");
        }
        c.instance_id = std::string(*v);
    } else {
        char host[256] = {};
        ::gethostname(host, sizeof host - 1);
        c.instance_id =
            std::string(host[0] != '\0' ? host : "tradeagg") + "-" + std::to_string(::getpid());
    }
    if (const auto v = get(getenv, "QUOTE_ASSET")) {
        const bool ok = v->size() <= 20 && std::all_of(v->begin(), v->end(), [](char ch) {
                            return (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
                        });
        if (!ok) {
            fail("QUOTE_ASSET", *v, "expected 1 to 20 upper-case letters or digits, e.g. USDT");
        }
        c.quote_asset = std::string(*v);
    }
    c.stream_lease_ttl = duration(getenv, "STREAM_LEASE_TTL", c.stream_lease_ttl, milliseconds(300),
                                  milliseconds(600'000));
    c.stream_read_count =
        whole<std::size_t>(getenv, "STREAM_READ_COUNT", c.stream_read_count, 1, 1'000'000);
    if (const auto v = get(getenv, "STREAM_CHECKPOINT_INTERVAL"); v && *v == "off") {
        c.stream_checkpoint_interval = milliseconds(0);
    } else if (v) {
        c.stream_checkpoint_interval =
            duration(getenv, "STREAM_CHECKPOINT_INTERVAL", c.stream_checkpoint_interval,
                     milliseconds(100), milliseconds(3'600'000));
    }
    if (const auto v = get(getenv, "STREAM_RETENTION"); v && *v == "off") {
        c.stream_retention = milliseconds(0);
    } else if (v) {
        c.stream_retention = duration(getenv, "STREAM_RETENTION", milliseconds(0),
                                      milliseconds(1'000), milliseconds(30LL * 86'400'000));
    }
    return c;
}

/// The library's name for a runtime_config field, and the variable that sets it.
[[nodiscard]] inline std::string_view variable_for(std::string_view field) noexcept {
    if (field == "shards") {
        return "MAX_WORKERS";
    }
    if (field == "ring_capacity") {
        return "TRADE_BUFFER_SIZE";
    }
    if (field == "batch_width") {
        return "BATCH_PROCESSING_SIZE";
    }
    if (field == "gc_target_percent") {
        return "GC_TARGET_PERCENTAGE";
    }
    if (field == "memory_limit_mb") {
        return "MEMORY_LIMIT_MB";
    }
    if (field == "max_active_tokens") {
        return "MAX_TOKEN_PROCESSORS";
    }
    if (field == "flush_interval") {
        return "FLUSH_INTERVAL";
    }
    return field;
}

/// Chooses the shard count (MAX_WORKERS, at most the hardware threads and the policy's
/// max_shards) and checks the pipeline settings against `Policy`, rethrowing the library's
/// error with the variable's name in place of the field's. Returns the resolved settings.
template <class Policy>
tradeagg::resolved_config<Policy> check_against_policy(server_config& c) {
    const std::size_t hardware = std::max(1u, std::thread::hardware_concurrency());
    c.pipeline.shards = std::min({c.max_workers, hardware, Policy::max_shards});
    try {
        return tradeagg::resolve<Policy>(c.pipeline);
    } catch (const tradeagg::config_error& e) {
        std::string message = e.what();
        const std::string_view field = e.field();
        const std::string_view variable = variable_for(field);
        if (message.rfind(field, 0) == 0) {
            message.replace(0, field.size(), variable);
        }
        throw tradeagg::config_error(std::string(variable), message);
    }
}

} // namespace aggregator
