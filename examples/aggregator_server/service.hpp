#pragma once
// The aggregator server's endpoints (the seed's, plus ingest and queries) over one pipeline of
// the chosen policy, its Redis sink, its token snapshots and its monitor.
//
//   GET  /health                        liveness, and whether Redis is reachable
//   GET  /performance                   the seed's statistics, runtime and pipeline figures
//   POST /performance/gc                forces a reclamation; before and after    (admin)
//   POST /performance/optimize/throughput | /latency   applies a preset; changes (admin)
//   POST /trades                        a JSON array of trades, or NDJSON
//   GET  /tokens/{token}                current candles, rolling 24 h, latest trade
//   GET  /metrics                       Prometheus text exposition of every statistic
//   GET  /api/v3/...                    Binance-compatible market data (binance_api.hpp)
//
// Admin endpoints need `Authorization: Bearer <ADMIN_TOKEN>` when ADMIN_TOKEN is set.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/beast/http.hpp>

#include <tradeagg/policy.hpp>

#include "binance_api.hpp"
#include "ingest_endpoint.hpp"
#include "log.hpp"
#include "metrics.hpp"
#include "performance_endpoints.hpp"
#include "query_endpoints.hpp"
#include "responses.hpp"
#include "server_config.hpp"
#include "service_state.hpp"

namespace aggregator {

/// What stopping did.
struct shutdown_report {
    bool redis_complete = true;      ///< every update reached Redis (or Redis is off)
    std::size_t redis_unwritten = 0; ///< keys Redis did not acknowledge in time
    std::uint64_t redis_dropped = 0; ///< updates the sink dropped over its life
};

/// The server's logic, whatever the policy. `handle` is called on HTTP threads concurrently.
class service {
public:
    virtual ~service() = default;
    /// Answers one request. Thread-safe; may block up to INGEST_DEADLINE (POST /trades).
    /// Trades are pushed through a producer of the calling thread: requests handled on one
    /// thread are applied in the order they were handled, which is why the HTTP server keeps
    /// each connection on one thread.
    virtual response handle(const request& req) = 0;
    /// Starts the pipeline and the monitor.
    virtual void start() = 0;
    /// Stops ingest, drains the pipeline, flushes to Redis within `deadline`.
    virtual shutdown_report stop(std::chrono::milliseconds deadline) = 0;
    /// One line per setting in force, for the start-up log.
    [[nodiscard]] virtual std::vector<std::string> describe() const = 0;
    /// Counts one HTTP response for `/metrics` (a `route` as an index, see metrics.hpp).
    /// Thread-safe; never allocates.
    virtual void observe_response(std::size_t route_index, unsigned status,
                                  std::chrono::nanoseconds took) noexcept = 0;
};

/// The service for one policy: its state, and the routing of requests to its endpoints.
template <class Policy>
class aggregator_service final : public service {
public:
    /// Checks `cfg` against the policy (throws `tradeagg::config_error` naming the variable)
    /// and builds everything; starts nothing.
    explicit aggregator_service(server_config cfg)
        : state_(std::move(cfg)), performance_(state_), api_(state_), ingest_(state_) {}

    void start() override {
        if (state_.streams) {
            // Trades come from the streams, each partition through a shard of its own: the
            // HTTP pipeline's workers would only wait for trades that never come.
            state_.streams->start();
        } else {
            state_.pipeline.start();
        }
        if (state_.registrar) {
            state_.registrar->start();
        }
        state_.monitor.start();
    }

    shutdown_report stop(std::chrono::milliseconds deadline) override {
        const auto until = std::chrono::steady_clock::now() + deadline;
        state_.accepting.store(false);
        state_.monitor.stop();
        state_.pipeline.stop(); // every accepted trade applied and flushed to the sink
        if (state_.registrar) {
            state_.registrar->stop(); // a last pass over the tokens flushed
        }
        shutdown_report r;
        if (state_.streams) {
            // What is left unwritten stays pending in the streams, for the next holder.
            r.redis_complete = state_.streams->stop(deadline);
        }
        if (state_.redis) {
            const auto left = std::max(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           until - std::chrono::steady_clock::now()),
                                       std::chrono::milliseconds(0));
            const tradeagg::redis::stop_report s = state_.redis->stop(left);
            r.redis_complete = s.complete;
            r.redis_unwritten = s.unwritten;
            r.redis_dropped = s.dropped;
        }
        return r;
    }

    [[nodiscard]] std::vector<std::string> describe() const override {
        std::vector<std::string> out;
        const auto add = [&out](std::string_view name, const std::string& value) {
            out.push_back(std::string(name) + "=" + value);
        };
        add("AGGREGATOR_POLICY", std::string(Policy::name));
        add("HTTP_ADDR", state_.cfg.http.address + ":" + std::to_string(state_.cfg.http.port));
        add("HTTP_THREADS", std::to_string(state_.cfg.http.threads));
        add("ADMIN_TOKEN",
            state_.cfg.admin_token.empty() ? "(unset: admin endpoints open)" : "(set)");
        add("MAX_WORKERS", std::to_string(state_.cfg.max_workers) +
                               " (shards: " + std::to_string(state_.resolved.shards) + ")");
        add("TRADE_BUFFER_SIZE", std::to_string(state_.resolved.ring_capacity));
        add("BATCH_PROCESSING_SIZE", std::to_string(state_.resolved.batch_width));
        add("GC_TARGET_PERCENTAGE", std::to_string(state_.resolved.gc_target_percent));
        add("MEMORY_LIMIT_MB", state_.resolved.memory_limit_mb == 0
                                   ? std::string("0 (none)")
                                   : std::to_string(state_.resolved.memory_limit_mb));
        add("MAX_TOKEN_PROCESSORS", std::to_string(state_.resolved.max_active_tokens));
        add("WORKER_QUEUE_SIZE", std::to_string(state_.cfg.max_trades_per_request));
        add("PROCESSOR_CHANNEL_SIZE", std::to_string(state_.cfg.max_ingest_requests));
        add("FLUSH_INTERVAL", std::to_string(state_.resolved.flush_interval.count()) + "ms");
        add("INGEST_DEADLINE", std::to_string(state_.cfg.ingest_deadline.count()) + "ms");
        add("MONITOR_SAMPLE_INTERVAL", std::to_string(state_.cfg.monitor_sample.count()) + "ms");
        add("MONITOR_TUNE_INTERVAL", std::to_string(state_.cfg.monitor_tune.count()) + "ms");
        add("SHUTDOWN_TIMEOUT", std::to_string(state_.cfg.shutdown_timeout.count()) + "ms");
        if (state_.cfg.redis_enabled) {
            const auto& r = state_.cfg.redis;
            std::string seeds;
            for (const auto& [host, port] : r.seeds()) {
                seeds += (seeds.empty() ? "" : ",") + host + ":" + std::to_string(port);
            }
            add("REDIS_ADDR", seeds);
            add("REDIS_PASSWORD", r.password.empty() ? "(unset)" : "(set)");
            add("REDIS_DB", std::to_string(r.db));
            add("REDIS_MAX_RETRIES", std::to_string(r.max_retries));
            add("REDIS_RETRY_DELAY", std::to_string(r.retry_delay.count()) + "ms");
            add("REDIS_PIPELINE_SIZE", std::to_string(r.pipeline_size));
            add("REDIS_READ_TIMEOUT", std::to_string(r.read_timeout.count()) + "ms");
            add("REDIS_WRITE_TIMEOUT", std::to_string(r.write_timeout.count()) + "ms");
            add("REDIS_IDLE_TIMEOUT", std::to_string(r.idle_timeout.count()) + "ms");
            add("REDIS_MAX_CONN_AGE", std::to_string(r.max_conn_age.count()) + "ms");
            add("REDIS_KEY_PREFIX", r.key_prefix);
        } else {
            add("REDIS_ADDR", "off (aggregates kept in memory only)");
        }
        if (state_.cfg.ingest_streams > 0) {
            add("INGEST_STREAMS", std::to_string(state_.cfg.ingest_streams) +
                                      " (trades are read from " + state_.cfg.redis.key_prefix +
                                      ":trades:{p0}.. ; POST /trades "
                                      "is refused)");
            add("INSTANCE_ID", state_.cfg.instance_id);
            add("STREAM_LEASE_TTL", std::to_string(state_.cfg.stream_lease_ttl.count()) + "ms");
            add("STREAM_READ_COUNT", std::to_string(state_.cfg.stream_read_count));
            const auto every = state_.cfg.stream_checkpoint_interval;
            add("STREAM_CHECKPOINT_INTERVAL",
                every.count() == 0 ? std::string("off (a new holder replays the whole stream)")
                                   : std::to_string(every.count()) + "ms");
            const auto& retention = state_.cfg.stream_retention;
            std::string keep;
            if (retention && retention->count() == 0) {
                keep = "off (the streams are never trimmed)";
            } else if (every.count() > 0) {
                keep = retention ? "past the checkpoint before the newest, and older than " +
                                       std::to_string(retention->count()) + "ms"
                                 : "past the checkpoint before the newest";
            } else {
                const auto ms = retention.value_or(
                    service_state<Policy>::stream_consumer_type::exact_retention());
                keep = std::to_string(ms.count()) + "ms" + (retention ? "" : " (exact rebuilds)");
            }
            add("STREAM_RETENTION", keep);
        } else {
            add("INGEST_STREAMS", "0 (trades come over POST /trades)");
        }
        return out;
    }

    response handle(const request& req) override {
        const std::string_view target(req.target().data(), req.target().size());
        const auto method = req.method();
        const auto get = [&](auto&& answer) {
            return method == http::verb::get ? answer() : detail::not_allowed(req, "GET");
        };
        switch (const route r = route_of(target)) {
        case route::trades:
            return method == http::verb::post ? ingest_.post(req)
                                              : detail::not_allowed(req, "POST");
        case route::tokens:
            return get([&] {
                return token_response(state_, req, target.substr(0, target.find('?')).substr(8));
            });
        case route::health:
            return get([&] { return health_response(state_, req); });
        case route::performance:
            return get([&] { return performance_.performance(req); });
        case route::metrics:
            return get([&] { return performance_.metrics(req); });
        case route::api_v3:
            return get([&] { return api_.handle(req); });
        case route::performance_gc:
        case route::optimize_throughput:
        case route::optimize_latency: {
            if (method != http::verb::post) {
                return detail::not_allowed(req, "POST");
            }
            if (!authorized(req)) {
                response res = detail::error_response(req, http::status::unauthorized,
                                                      "admin endpoint: send Authorization: "
                                                      "Bearer <ADMIN_TOKEN>");
                res.set(http::field::www_authenticate, "Bearer");
                return res;
            }
            if (r == route::performance_gc) {
                return performance_.reclaim(req);
            }
            return performance_.optimize(req, r == route::optimize_throughput);
        }
        case route::other:
            break;
        }
        return detail::error_response(req, http::status::not_found, "no such endpoint");
    }

    void observe_response(std::size_t route_index, unsigned status,
                          std::chrono::nanoseconds took) noexcept override {
        state_.http_figures.observe(route_index, status, took);
    }

private:
    bool authorized(const request& req) const {
        if (state_.cfg.admin_token.empty()) {
            return true;
        }
        const auto it = req.find(http::field::authorization);
        if (it == req.end()) {
            return false;
        }
        const std::string_view value(it->value().data(), it->value().size());
        constexpr std::string_view scheme = "Bearer ";
        return value.size() > scheme.size() && value.substr(0, scheme.size()) == scheme &&
               detail::same_secret(value.substr(scheme.size()), state_.cfg.admin_token);
    }

    service_state<Policy> state_;
    performance_endpoints<Policy> performance_;
    binance_api<Policy> api_;
    /// Declared last: destroyed first (with the HTTP threads' producers), while the pipeline
    /// still exists.
    ingest_endpoint<Policy> ingest_;
};

/// Builds the service for the configured policy.
inline std::unique_ptr<service> make_service(server_config cfg) {
    switch (cfg.policy) {
    case policy_choice::latency:
        return std::make_unique<aggregator_service<tradeagg::latency_policy>>(std::move(cfg));
    case policy_choice::memory_constrained:
        return std::make_unique<aggregator_service<tradeagg::memory_constrained_policy>>(
            std::move(cfg));
    case policy_choice::throughput:
        break;
    }
    return std::make_unique<aggregator_service<tradeagg::throughput_policy>>(std::move(cfg));
}

} // namespace aggregator
