#pragma once
// What the server's endpoints share, for one policy: the configuration, the pipeline and its
// sinks (token snapshots, and Redis when it is on), the stream consumer when trades come from
// Redis streams, the monitor, and the HTTP figures. Built whole by its constructor, which
// starts nothing.

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <tradeagg/monitor.hpp>
#include <tradeagg/pipeline.hpp>
#include <tradeagg/redis/candle_reader.hpp>
#include <tradeagg/redis/sink.hpp>
#include <tradeagg/redis/stream_consumer.hpp>

#include "log.hpp"
#include "metrics.hpp"
#include "server_config.hpp"
#include "token_registrar.hpp"
#include "token_snapshots.hpp"

namespace aggregator {

/// Forwards flushes to the token snapshots and, when enabled, to Redis; a Redis resync asks
/// the pipeline for its live state.
template <std::size_t Intervals>
struct server_sink {
    token_snapshots<Intervals>& snapshots;
    tradeagg::redis::redis_sink* redis; ///< null when Redis is off

    void consume(const tradeagg::flush_batch& b) {
        snapshots.consume(b);
        if (redis != nullptr) {
            redis->consume(b);
        }
    }
    void set_resync_handler(std::function<void()> f) {
        if (redis != nullptr) {
            redis->set_resync_handler(std::move(f));
        }
    }
};

/// The state of a server of one policy. Members are public: the endpoints read and drive them.
template <class Policy>
struct service_state {
    static constexpr std::size_t interval_count = Policy::intervals.size();
    using sink_type = server_sink<interval_count>;
    using pipeline_type = tradeagg::pipeline<Policy, sink_type&>;
    using monitored_type = tradeagg::monitored_pipeline<pipeline_type>;
    using stream_consumer_type = tradeagg::redis::stream_consumer<Policy>;

    /// Checks `c` against the policy (throws `tradeagg::config_error` naming the variable)
    /// and builds everything; starts nothing.
    explicit service_state(server_config c)
        : cfg(std::move(c)), resolved(check_against_policy<Policy>(cfg)),
          snapshots(Policy::max_tokens),
          redis(cfg.redis_enabled && cfg.ingest_streams == 0
                    ? std::make_unique<tradeagg::redis::redis_sink>(cfg.redis)
                    : nullptr),
          streams(cfg.ingest_streams > 0
                      ? std::make_unique<stream_consumer_type>(stream_settings(cfg), resolved)
                      : nullptr),
          history(cfg.redis_enabled ? std::make_unique<tradeagg::redis::candle_reader>(
                                          cluster_options(cfg), cfg.redis.key_prefix,
                                          std::vector<tradeagg::interval>(Policy::intervals.begin(),
                                                                          Policy::intervals.end()))
                                    : nullptr),
          registrar(redis ? std::make_unique<token_registrar>(
                                cluster_options(cfg), cfg.redis.key_prefix,
                                [this] { return snapshots.take_new_names(); },
                                std::chrono::seconds(1))
                          : nullptr),
          sink{snapshots, redis.get()}, pipeline(cfg.pipeline, sink),
          monitored(pipeline,
                    [this]() -> std::optional<double> {
                        if (!redis) {
                            return std::nullopt;
                        }
                        return redis->stats().latency_avg_ms;
                    }),
          monitor(monitored, monitor_options()), started(std::chrono::steady_clock::now()) {}

    service_state(const service_state&) = delete;
    service_state& operator=(const service_state&) = delete;

    /// Seconds since construction.
    double uptime_seconds() const {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    }

    server_config cfg;
    tradeagg::resolved_config<Policy> resolved;
    token_snapshots<interval_count> snapshots;
    std::unique_ptr<tradeagg::redis::redis_sink> redis; ///< null when Redis is off
    std::unique_ptr<stream_consumer_type> streams;      ///< null unless INGEST_STREAMS > 0
    /// Reads candles and token hashes back from Redis (the Binance-compatible API); null when
    /// Redis is off.
    std::unique_ptr<tradeagg::redis::candle_reader> history;
    /// Adds the tokens taken over HTTP to Redis's token set; null unless the Redis sink is on.
    std::unique_ptr<token_registrar> registrar;
    sink_type sink;
    pipeline_type pipeline;
    monitored_type monitored;
    tradeagg::monitor<monitored_type> monitor;
    std::chrono::steady_clock::time_point started;
    http_metrics http_figures;
    /// False once stopping began: POST /trades then answers 503.
    std::atomic<bool> accepting{true};
    std::atomic<std::size_t> ingest_requests{0}; ///< POST /trades requests in progress

private:
    tradeagg::monitor_options monitor_options() {
        tradeagg::monitor_options o;
        o.sample_every = cfg.monitor_sample;
        o.tune_every = std::max(cfg.monitor_tune, cfg.monitor_sample);
        o.on_alert = [](const tradeagg::alert& a) { log_line("alert: " + a.message); };
        o.on_tuning = [](const tradeagg::tuning_event& t) { log_line("tuning: " + t.reason); };
        return o;
    }

    static tradeagg::redis::stream_consumer_config stream_settings(const server_config& c) {
        tradeagg::redis::stream_consumer_config s;
        s.key_prefix = c.redis.key_prefix;
        s.partitions = c.ingest_streams;
        s.instance = c.instance_id;
        s.lease_ttl = c.stream_lease_ttl;
        s.read_count = c.stream_read_count;
        s.candle_retention_intervals = c.redis.candle_retention_intervals;
        s.retention = c.stream_retention;
        s.checkpoint_interval = c.stream_checkpoint_interval;
        s.redis = cluster_options(c);
        return s;
    }

    /// The Redis (one node or a cluster) of REDIS_ADDR, for the blocking clients.
    static tradeagg::redis::cluster_client::options cluster_options(const server_config& c) {
        tradeagg::redis::cluster_client::options o;
        for (const auto& [host, port] : c.redis.seeds()) {
            o.seeds.push_back({host, port, {}});
        }
        o.password = c.redis.password;
        o.db = c.redis.db;
        o.timeout = c.redis.read_timeout;
        return o;
    }
};

} // namespace aggregator
