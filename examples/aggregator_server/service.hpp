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
//
// Admin endpoints need `Authorization: Bearer <ADMIN_TOKEN>` when ADMIN_TOKEN is set.

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <tradeagg/monitor.hpp>
#include <tradeagg/pipeline.hpp>
#include <tradeagg/sink/redis_sink.hpp>
#include <tradeagg/sink/redis_stream_consumer.hpp>

#include "metrics.hpp"
#include "server_config.hpp"
#include "token_snapshots.hpp"
#include "trade_parser.hpp"

namespace aggregator {

namespace http = boost::beast::http;
using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

/// Writes one log line to stderr with a UTC timestamp. Thread-safe (one write per line).
inline void log_line(std::string_view text) {
    const auto now = std::chrono::system_clock::now();
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char stamp[32];
    const std::size_t n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ ", &tm);
    std::string line(stamp, n);
    line.append(text);
    line.push_back('\n');
    std::fwrite(line.data(), 1, line.size(), stderr);
}

/// A number for a log line: "200", "0.25", "7.62".
inline std::string log_number(double v) {
    char buf[32];
    const int n = std::snprintf(buf, sizeof buf, "%.6g", v);
    return std::string(buf, static_cast<std::size_t>(n));
}

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

namespace detail {

/// Appends `v` as JSON text. Unlike `boost::json::serialize` (1.81), which writes every double
/// in exponent form ("7.5E0", "0E0"), doubles are written in the shortest form that reads
/// back exactly ("7.5", "0", "1e-07"), as a person or a dashboard expects; a non-finite one,
/// which JSON cannot express, as null.
inline void append_json(std::string& out, const boost::json::value& v) {
    char buf[32];
    const auto number = [&](auto x) {
        const auto r = std::to_chars(buf, buf + sizeof buf, x);
        out.append(buf, r.ptr);
    };
    switch (v.kind()) {
    case boost::json::kind::null:
        out += "null";
        break;
    case boost::json::kind::bool_:
        out += v.get_bool() ? "true" : "false";
        break;
    case boost::json::kind::int64:
        number(v.get_int64());
        break;
    case boost::json::kind::uint64:
        number(v.get_uint64());
        break;
    case boost::json::kind::double_:
        if (std::isfinite(v.get_double())) {
            number(v.get_double());
        } else {
            out += "null";
        }
        break;
    case boost::json::kind::string:
        out += boost::json::serialize(v.get_string());
        break;
    case boost::json::kind::array: {
        out.push_back('[');
        bool first = true;
        for (const boost::json::value& e : v.get_array()) {
            if (!std::exchange(first, false)) {
                out.push_back(',');
            }
            append_json(out, e);
        }
        out.push_back(']');
        break;
    }
    case boost::json::kind::object: {
        out.push_back('{');
        bool first = true;
        for (const boost::json::key_value_pair& kv : v.get_object()) {
            if (!std::exchange(first, false)) {
                out.push_back(',');
            }
            out += boost::json::serialize(boost::json::string_view(kv.key()));
            out.push_back(':');
            append_json(out, kv.value());
        }
        out.push_back('}');
        break;
    }
    }
}

inline response json_response(const request& req, http::status status,
                              const boost::json::value& body) {
    response res{status, req.version()};
    res.set(http::field::content_type, "application/json");
    append_json(res.body(), body);
    res.body().push_back('\n');
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    return res;
}

inline response error_response(const request& req, http::status status, std::string_view error,
                               boost::json::object extra = {}) {
    extra["error"] = error;
    return json_response(req, status, extra);
}

inline boost::json::object candle_json(const tradeagg::candle& c) {
    boost::json::object o;
    o["open_time"] = c.open_time;
    o["close_time"] = c.close_time;
    o["open"] = c.open;
    o["high"] = c.high;
    o["low"] = c.low;
    o["close"] = c.close;
    o["volume"] = c.volume;
    o["quote_volume"] = c.quote_volume;
    o["trades"] = c.trades;
    o["taker_buy_volume"] = c.taker_buy_volume;
    o["taker_buy_quote_volume"] = c.taker_buy_quote_volume;
    o["vwap"] = c.vwap();
    o["first_trade_id"] = c.first_trade_id;
    o["last_trade_id"] = c.last_trade_id;
    o["closed"] = c.closed;
    return o;
}

inline boost::json::object rolling_json(const tradeagg::rolling_stats& r) {
    boost::json::object o;
    o["window_start"] = r.window_start;
    o["window_end"] = r.window_end;
    o["open"] = r.open;
    o["high"] = r.high;
    o["low"] = r.low;
    o["last"] = r.last;
    o["volume"] = r.volume;
    o["quote_volume"] = r.quote_volume;
    o["vwap"] = r.vwap;
    o["trades"] = r.trades;
    o["price_change"] = r.price_change;
    o["price_change_percent"] = r.price_change_percent;
    return o;
}

inline boost::json::object latency_json(const tradeagg::latency_summary& l) {
    boost::json::object o;
    o["samples"] = l.samples;
    o["p50_ms"] = l.p50_ns / 1e6;
    o["p90_ms"] = l.p90_ns / 1e6;
    o["p99_ms"] = l.p99_ns / 1e6;
    o["p999_ms"] = l.p999_ns / 1e6;
    o["max_ms"] = l.max_ns / 1e6;
    return o;
}

/// Compares without an early exit, so the time taken says nothing about the token.
inline bool same_secret(std::string_view a, std::string_view b) noexcept {
    unsigned char diff = a.size() == b.size() ? 0 : 1;
    for (std::size_t i = 0; i < a.size(); ++i) {
        diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
    }
    return diff == 0;
}

constexpr double mib = 1024.0 * 1024.0;

} // namespace detail

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

/// The service for one policy.
template <class Policy>
class aggregator_service final : public service {
    static constexpr std::size_t interval_count = Policy::intervals.size();
    using sink_type = server_sink<interval_count>;
    using pipeline_type = tradeagg::pipeline<Policy, sink_type&>;
    using monitored = tradeagg::monitored_pipeline<pipeline_type>;
    using stream_consumer_type = tradeagg::redis::stream_consumer<Policy>;

public:
    /// Checks `cfg` against the policy (throws `tradeagg::config_error` naming the variable)
    /// and builds everything; starts nothing.
    explicit aggregator_service(server_config cfg)
        : cfg_(std::move(cfg)), resolved_(check_against_policy<Policy>(cfg_)),
          snapshots_(Policy::max_tokens),
          redis_(cfg_.redis_enabled && cfg_.ingest_streams == 0
                     ? std::make_unique<tradeagg::redis::redis_sink>(cfg_.redis)
                     : nullptr),
          streams_(cfg_.ingest_streams > 0
                       ? std::make_unique<stream_consumer_type>(stream_settings(cfg_), resolved_)
                       : nullptr),
          sink_{snapshots_, redis_.get()}, pipeline_(cfg_.pipeline, sink_),
          monitored_(pipeline_,
                     [this]() -> std::optional<double> {
                         if (!redis_) {
                             return std::nullopt;
                         }
                         return redis_->stats().latency_avg_ms;
                     }),
          monitor_(monitored_, monitor_options()), started_(std::chrono::steady_clock::now()) {}

    void start() override {
        if (streams_) {
            // Trades come from the streams, each partition through a shard of its own: the
            // HTTP pipeline's workers would only wait for trades that never come.
            streams_->start();
        } else {
            pipeline_.start();
        }
        monitor_.start();
    }

    shutdown_report stop(std::chrono::milliseconds deadline) override {
        const auto until = std::chrono::steady_clock::now() + deadline;
        accepting_.store(false);
        monitor_.stop();
        pipeline_.stop(); // every accepted trade applied and flushed to the sink
        shutdown_report r;
        if (streams_) {
            // What is left unwritten stays pending in the streams, for the next holder.
            r.redis_complete = streams_->stop(deadline);
        }
        if (redis_) {
            const auto left = std::max(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           until - std::chrono::steady_clock::now()),
                                       std::chrono::milliseconds(0));
            const tradeagg::redis::stop_report s = redis_->stop(left);
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
        add("HTTP_ADDR", cfg_.http.address + ":" + std::to_string(cfg_.http.port));
        add("HTTP_THREADS", std::to_string(cfg_.http.threads));
        add("ADMIN_TOKEN", cfg_.admin_token.empty() ? "(unset: admin endpoints open)" : "(set)");
        add("MAX_WORKERS", std::to_string(cfg_.max_workers) +
                               " (shards: " + std::to_string(resolved_.shards) + ")");
        add("TRADE_BUFFER_SIZE", std::to_string(resolved_.ring_capacity));
        add("BATCH_PROCESSING_SIZE", std::to_string(resolved_.batch_width));
        add("GC_TARGET_PERCENTAGE", std::to_string(resolved_.gc_target_percent));
        add("MEMORY_LIMIT_MB", resolved_.memory_limit_mb == 0
                                   ? std::string("0 (none)")
                                   : std::to_string(resolved_.memory_limit_mb));
        add("MAX_TOKEN_PROCESSORS", std::to_string(resolved_.max_active_tokens));
        add("WORKER_QUEUE_SIZE", std::to_string(cfg_.max_trades_per_request));
        add("PROCESSOR_CHANNEL_SIZE", std::to_string(cfg_.max_ingest_requests));
        add("FLUSH_INTERVAL", std::to_string(resolved_.flush_interval.count()) + "ms");
        add("INGEST_DEADLINE", std::to_string(cfg_.ingest_deadline.count()) + "ms");
        add("MONITOR_SAMPLE_INTERVAL", std::to_string(cfg_.monitor_sample.count()) + "ms");
        add("MONITOR_TUNE_INTERVAL", std::to_string(cfg_.monitor_tune.count()) + "ms");
        add("SHUTDOWN_TIMEOUT", std::to_string(cfg_.shutdown_timeout.count()) + "ms");
        if (cfg_.redis_enabled) {
            const auto& r = cfg_.redis;
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
        if (cfg_.ingest_streams > 0) {
            add("INGEST_STREAMS", std::to_string(cfg_.ingest_streams) + " (trades are read from " +
                                      cfg_.redis.key_prefix +
                                      ":trades:{p0}.. ; POST /trades "
                                      "is refused)");
            add("INSTANCE_ID", cfg_.instance_id);
            add("STREAM_LEASE_TTL", std::to_string(cfg_.stream_lease_ttl.count()) + "ms");
            add("STREAM_READ_COUNT", std::to_string(cfg_.stream_read_count));
            const auto keep =
                cfg_.stream_retention.value_or(stream_consumer_type::exact_retention());
            add("STREAM_RETENTION", keep.count() == 0
                                        ? std::string("off (the streams are never trimmed)")
                                        : std::to_string(keep.count()) + "ms" +
                                              (cfg_.stream_retention ? "" : " (exact rebuilds)"));
        } else {
            add("INGEST_STREAMS", "0 (trades come over POST /trades)");
        }
        return out;
    }

    response handle(const request& req) override {
        const std::string_view target(req.target().data(), req.target().size());
        const auto method = req.method();
        const auto get = [&](auto&& answer) {
            return method == http::verb::get ? answer() : not_allowed(req, "GET");
        };
        switch (const route r = route_of(target)) {
        case route::trades:
            return method == http::verb::post ? ingest(req) : not_allowed(req, "POST");
        case route::tokens:
            return get([&] { return token(req, target.substr(0, target.find('?')).substr(8)); });
        case route::health:
            return get([&] { return health(req); });
        case route::performance:
            return get([&] { return performance(req); });
        case route::metrics:
            return get([&] { return metrics(req); });
        case route::performance_gc:
        case route::optimize_throughput:
        case route::optimize_latency: {
            if (method != http::verb::post) {
                return not_allowed(req, "POST");
            }
            if (!authorized(req)) {
                response res = detail::error_response(req, http::status::unauthorized,
                                                      "admin endpoint: send Authorization: "
                                                      "Bearer <ADMIN_TOKEN>");
                res.set(http::field::www_authenticate, "Bearer");
                return res;
            }
            if (r == route::performance_gc) {
                return reclaim(req);
            }
            return optimize(req, r == route::optimize_throughput);
        }
        case route::other:
            break;
        }
        return detail::error_response(req, http::status::not_found, "no such endpoint");
    }

    void observe_response(std::size_t route_index, unsigned status,
                          std::chrono::nanoseconds took) noexcept override {
        http_.observe(route_index, status, took);
    }

private:
    tradeagg::monitor_options monitor_options() {
        tradeagg::monitor_options o;
        o.sample_every = cfg_.monitor_sample;
        o.tune_every = std::max(cfg_.monitor_tune, cfg_.monitor_sample);
        o.on_alert = [](const tradeagg::alert& a) { log_line("alert: " + a.message); };
        o.on_tuning = [](const tradeagg::tuning_event& t) { log_line("tuning: " + t.reason); };
        return o;
    }

    static response not_allowed(const request& req, const char* allow) {
        response res =
            detail::error_response(req, http::status::method_not_allowed, "method not allowed");
        res.set(http::field::allow, allow);
        return res;
    }

    bool authorized(const request& req) const {
        if (cfg_.admin_token.empty()) {
            return true;
        }
        const auto it = req.find(http::field::authorization);
        if (it == req.end()) {
            return false;
        }
        const std::string_view value(it->value().data(), it->value().size());
        constexpr std::string_view scheme = "Bearer ";
        return value.size() > scheme.size() && value.substr(0, scheme.size()) == scheme &&
               detail::same_secret(value.substr(scheme.size()), cfg_.admin_token);
    }

    // ---- POST /trades ----------------------------------------------------------------------

    struct ingest_slot {
        std::atomic<std::size_t>& count;
        ~ingest_slot() { count.fetch_sub(1); }
    };

    response ingest(const request& req) {
        if (streams_) {
            return detail::error_response(
                req, http::status::conflict,
                "this server reads trades from Redis streams (INGEST_STREAMS=" +
                    std::to_string(cfg_.ingest_streams) + "): append them to " +
                    cfg_.redis.key_prefix + ":trades:{p<k>}, k = CRC16(token) mod " +
                    std::to_string(cfg_.ingest_streams));
        }
        if (!accepting_.load()) {
            return unavailable(req, 0, "the server is shutting down");
        }
        if (ingest_requests_.fetch_add(1) >= cfg_.max_ingest_requests) {
            ingest_requests_.fetch_sub(1);
            return unavailable(req, 0, "too many ingest requests at once (PROCESSOR_CHANNEL_SIZE)");
        }
        const ingest_slot slot{ingest_requests_};
        const auto type = req.find(http::field::content_type);
        const std::string_view content_type =
            type == req.end() ? std::string_view{}
                              : std::string_view(type->value().data(), type->value().size());
        const body_format format = content_type.starts_with("application/x-ndjson")
                                       ? body_format::ndjson
                                       : body_format::json_array;
        if (!content_type.empty() && format == body_format::json_array &&
            !content_type.starts_with("application/json")) {
            return detail::error_response(
                req, http::status::unsupported_media_type,
                "send application/json (an array of trades) or application/x-ndjson");
        }
        thread_local trade_batch batch;
        parse_error error;
        if (!parse_trades(req.body(), format, batch, error, cfg_.max_trades_per_request)) {
            const bool too_many = error.index >= cfg_.max_trades_per_request;
            boost::json::object extra;
            extra["index"] = error.index;
            extra["reason"] = error.reason;
            extra["accepted"] = 0;
            return detail::error_response(
                req, too_many ? http::status::payload_too_large : http::status::bad_request,
                too_many ? "too many trades in one request (WORKER_QUEUE_SIZE)"
                         : "invalid trade; nothing of this request was applied",
                std::move(extra));
        }
        return push_all(req, batch);
    }

    /// Pushes every trade, waiting for room up to INGEST_DEADLINE in all; the answer says
    /// exactly how many went in (in order: the first `accepted`).
    response push_all(const request& req, const trade_batch& batch) {
        typename pipeline_type::producer* producer = producer_for_this_thread();
        const auto deadline = std::chrono::steady_clock::now() + cfg_.ingest_deadline;
        const std::vector<tradeagg::trade_view>& trades = batch.trades();
        std::size_t accepted = 0;
        for (; accepted < trades.size(); ++accepted) {
            for (unsigned spins = 0;; ++spins) {
                const tradeagg::push_result r = producer->try_push(trades[accepted]);
                if (r.accepted()) {
                    break;
                }
                if (!r.full) {
                    // Checked whole before pushing, so only a limit or a stop lands here.
                    boost::json::object extra;
                    extra["accepted"] = accepted;
                    extra["index"] = accepted;
                    extra["reason"] = std::string(tradeagg::to_string(r.reason));
                    const bool stop = r.reason == tradeagg::reject_reason::stopped;
                    return detail::error_response(
                        req,
                        stop ? http::status::service_unavailable : http::status::too_many_requests,
                        "the pipeline refused a trade; the trades before it were accepted",
                        std::move(extra));
                }
                if (std::chrono::steady_clock::now() >= deadline) {
                    return unavailable(req, accepted,
                                       "the pipeline could not take the trades within "
                                       "INGEST_DEADLINE; the first `accepted` were taken");
                }
                if (spins > 64) {
                    std::this_thread::sleep_for(std::chrono::microseconds(50));
                } else {
                    std::this_thread::yield();
                }
            }
        }
        boost::json::object body;
        body["accepted"] = accepted;
        return detail::json_response(req, http::status::accepted, body);
    }

    /// This thread's producer, made on its first request. The service owns them (not the
    /// threads), so none outlives the pipeline. Thread-safe; allocates once per thread.
    typename pipeline_type::producer* producer_for_this_thread() {
        const std::lock_guard lock(producers_mutex_);
        auto it = producers_.find(std::this_thread::get_id());
        if (it == producers_.end()) {
            it = producers_.emplace(std::this_thread::get_id(), pipeline_.make_producer()).first;
        }
        return &it->second;
    }

    response unavailable(const request& req, std::size_t accepted, std::string_view why) {
        boost::json::object extra;
        extra["accepted"] = accepted;
        response res =
            detail::error_response(req, http::status::service_unavailable, why, std::move(extra));
        res.set(http::field::retry_after, "1");
        return res;
    }

    // ---- queries ---------------------------------------------------------------------------

    response token(const request& req, std::string_view name) {
        if (tradeagg::validate_token(name) != tradeagg::reject_reason::none) {
            return detail::error_response(req, http::status::bad_request, "not a valid token name");
        }
        const auto snap = snapshots_.find(name);
        if (!snap) {
            return detail::error_response(req, http::status::not_found,
                                          "no trade was accepted for this token");
        }
        boost::json::object body;
        body["token"] = name;
        boost::json::object candles;
        for (std::size_t i = 0; i < interval_count; ++i) {
            if (snap->candles[i]) {
                candles[std::string(tradeagg::interval_name(Policy::intervals[i]).view())] =
                    detail::candle_json(*snap->candles[i]);
            }
        }
        body["candles"] = std::move(candles);
        if (snap->has_token_update) {
            body["rolling_24h"] = detail::rolling_json(snap->rolling);
            boost::json::object latest;
            latest["price"] = snap->latest.price;
            latest["quantity"] = snap->latest.quantity;
            latest["side"] = tradeagg::to_string(snap->latest.taker);
            latest["ts"] = snap->latest.ts_ms;
            latest["id"] = snap->latest.id;
            body["latest"] = std::move(latest);
        }
        return detail::json_response(req, http::status::ok, body);
    }

    response health(const request& req) {
        boost::json::object body;
        body["status"] = "ok";
        body["policy"] = Policy::name;
        body["uptime_seconds"] = uptime_seconds();
        boost::json::object redis;
        redis["enabled"] = cfg_.redis_enabled;
        if (redis_) {
            const auto s = redis_->stats();
            redis["reachable"] = s.connected;
            redis["pending"] = s.pending;
            redis["last_error"] = s.last_error;
        }
        if (streams_) {
            const auto s = streams_->stats();
            redis["reachable"] = s.partitions_held > 0 || s.last_error.empty();
            redis["last_error"] = s.last_error;
            body["streams"] = streams_json(s);
        }
        body["redis"] = std::move(redis);
        return detail::json_response(req, http::status::ok, body);
    }

    double uptime_seconds() const {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    }

    /// The seed's eight figures and the rest, read once for /performance and /metrics.
    struct figures {
        tradeagg::pipeline_stats pipeline;
        std::optional<tradeagg::redis::sink_stats> redis;
    };
    figures read() const {
        figures f{pipeline_.stats(), std::nullopt};
        if (redis_) {
            f.redis = redis_->stats();
        }
        return f;
    }

    /// One of the seed's eight figures: its name (the same in /performance and /metrics), its
    /// Prometheus help text, and its value (an integer where it counts things).
    struct seed_figure {
        std::string_view name;
        std::string_view help;
        boost::json::value (*value)(const figures&);
    };
    static constexpr std::array<seed_figure, 8> seed_figure_table{{
        {"heap_alloc_mb", "Bytes the library reserved, in MiB",
         [](const figures& f) -> boost::json::value { return f.pipeline.heap_alloc_mb(); }},
        {"heap_inuse_mb", "Bytes in live objects, in MiB",
         [](const figures& f) -> boost::json::value { return f.pipeline.heap_inuse_mb(); }},
        {"gc_cpu_fraction", "Reclamation CPU over process CPU",
         [](const figures& f) -> boost::json::value { return f.pipeline.gc_cpu_fraction; }},
        {"num_goroutines", "Threads in the process",
         [](const figures& f) -> boost::json::value { return f.pipeline.threads; }},
        {"active_tokens", "Tokens with state",
         [](const figures& f) -> boost::json::value { return f.pipeline.active_tokens; }},
        {"worker_count", "Shard worker threads",
         [](const figures& f) -> boost::json::value { return f.pipeline.shards.size(); }},
        {"redis_latency_avg_ms", "Mean Redis reply time of recent commands",
         [](const figures& f) -> boost::json::value {
             return f.redis ? f.redis->latency_avg_ms : 0.0;
         }},
        {"redis_success_rate", "Share of recent Redis commands that succeeded",
         [](const figures& f) -> boost::json::value {
             return f.redis ? f.redis->success_rate : 1.0;
         }},
    }};

    static boost::json::object seed_figures(const figures& f) {
        boost::json::object o;
        for (const seed_figure& s : seed_figure_table) {
            o[s.name] = s.value(f);
        }
        return o;
    }

    response performance(const request& req) {
        const figures f = read();
        boost::json::object body = seed_figures(f);
        const tradeagg::pipeline_stats& p = f.pipeline;
        boost::json::object runtime;
        runtime["policy"] = Policy::name;
        runtime["uptime_seconds"] = uptime_seconds();
        runtime["threads"] = p.threads;
        runtime["hardware_threads"] = std::thread::hardware_concurrency();
        runtime["resident_mb"] = static_cast<double>(p.resident_bytes) / detail::mib;
        runtime["peak_resident_mb"] = static_cast<double>(p.peak_resident_bytes) / detail::mib;
        runtime["process_cpu_seconds"] = p.process_cpu_seconds;
        runtime["gc_target_percent"] = p.gc_target_percent;
        runtime["memory_limit_mb"] = static_cast<double>(p.memory_limit_bytes) / detail::mib;
        runtime["max_active_tokens"] = p.max_active_tokens;
        runtime["admitting_new_tokens"] = p.admitting_new_tokens;
        runtime["reclamations"] = p.reclamations;
        runtime["reclaim_cpu_seconds"] = p.reclaim_cpu_seconds;
        runtime["tokens_evicted"] = p.tokens_evicted;
        runtime["tokens_released"] = p.tokens_released;
        body["runtime"] = std::move(runtime);
        boost::json::object pl;
        pl["accepted"] = p.accepted;
        pl["applied"] = p.applied;
        pl["late"] = p.late;
        pl["rejected"] = p.rejected;
        boost::json::object reasons;
        for (std::size_t r = 1; r < tradeagg::reject_reason_count; ++r) {
            reasons[tradeagg::to_string(static_cast<tradeagg::reject_reason>(r))] =
                p.rejected_by_reason[r];
        }
        pl["rejected_by_reason"] = std::move(reasons);
        pl["queue_depth"] = p.queue_depth();
        pl["flushes"] = p.flushes;
        pl["candle_updates"] = p.candle_updates;
        pl["token_updates"] = p.token_updates;
        pl["sink_errors"] = p.sink_errors;
        pl["interned_tokens"] = p.interned_tokens;
        pl["bytes_per_active_token"] = p.bytes_per_active_token;
        pl["resyncs"] = p.resyncs;
        pl["apply_latency"] = detail::latency_json(p.apply_latency);
        body["pipeline"] = std::move(pl);
        if (f.redis) {
            const auto& r = *f.redis;
            boost::json::object ro;
            ro["connected"] = r.connected;
            ro["cluster"] = r.cluster;
            ro["nodes"] = r.nodes;
            ro["nodes_connected"] = r.nodes_connected;
            ro["moved"] = r.moved;
            ro["asked"] = r.asked;
            ro["transactions"] = r.transactions;
            ro["commands_sent"] = r.commands_sent;
            ro["commands_succeeded"] = r.commands_succeeded;
            ro["commands_failed"] = r.commands_failed;
            ro["retries"] = r.retries;
            ro["timeouts"] = r.timeouts;
            ro["reconnects"] = r.reconnects;
            ro["resyncs"] = r.resyncs;
            ro["pending"] = r.pending;
            ro["in_flight"] = r.in_flight;
            ro["parked"] = r.parked;
            ro["updates_written"] = r.updates_written;
            ro["updates_coalesced"] = r.updates_coalesced;
            ro["updates_dropped"] = r.updates_dropped;
            ro["write_lag"] = detail::latency_json(r.write_lag);
            ro["last_error"] = r.last_error;
            body["redis"] = std::move(ro);
        }
        if (streams_) {
            body["streams"] = streams_json(streams_->stats());
        }
        boost::json::object ingest;
        ingest["requests_in_progress"] = ingest_requests_.load();
        ingest["tokens_kept_for_queries"] = snapshots_.size();
        body["ingest"] = std::move(ingest);
        return detail::json_response(req, http::status::ok, body);
    }

    /// Prometheus text format 0.0.4. Counters end in `_total`; latencies are histograms with
    /// the bounds of `latency_bounds_seconds`, cumulative since start; labels come from
    /// bounded sets only. The seed's eight figures keep their names.
    response metrics(const request& req) {
        const figures f = read();
        const tradeagg::pipeline_stats& p = f.pipeline;
        std::string text;
        text.reserve(32 * 1024);
        prometheus_text out(text);
        for (const seed_figure& s : seed_figure_table) {
            out.gauge(s.name, s.help, s.value(f).template to_number<double>());
        }

        const process_figures proc = read_process_figures();
        out.counter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds",
                    p.process_cpu_seconds);
        out.gauge("process_resident_memory_bytes", "Resident memory size in bytes",
                  p.resident_bytes);
        out.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes",
                  proc.virtual_memory_bytes);
        out.gauge("process_open_fds", "Number of open file descriptors", proc.open_fds);
        out.gauge("process_max_fds", "Maximum number of open file descriptors", proc.max_fds);
        out.gauge("process_start_time_seconds",
                  "Start time of the process since unix epoch in seconds", proc.start_time_seconds);

        out.counter("tradeagg_trades_accepted_total", "Trades accepted", p.accepted);
        out.counter("tradeagg_trades_applied_total", "Trades applied", p.applied);
        out.counter("tradeagg_trades_late_total", "Trades too late to merge", p.late);
        out.family("tradeagg_trades_rejected_total", "Trades refused at push, by reason",
                   "counter");
        std::string labels;
        for (std::size_t r = 1; r < tradeagg::reject_reason_count; ++r) {
            labels.assign("reason=\"")
                .append(tradeagg::to_string(static_cast<tradeagg::reject_reason>(r)))
                .append("\"");
            out.sample("tradeagg_trades_rejected_total", labels, p.rejected_by_reason[r]);
        }
        out.gauge("tradeagg_queue_depth", "Trades accepted and not yet applied", p.queue_depth());
        out.counter("tradeagg_flushes_total", "Flushes to the sink", p.flushes);
        out.counter("tradeagg_candle_updates_total", "Candle updates handed to the sink",
                    p.candle_updates);
        out.counter("tradeagg_token_updates_total", "Token updates handed to the sink",
                    p.token_updates);
        out.counter("tradeagg_sink_errors_total", "Exceptions thrown by the sink", p.sink_errors);
        out.counter("tradeagg_reclamations_total", "Reclamations run", p.reclamations);
        out.gauge("tradeagg_gc_target_percent", "Reclamation target in force", p.gc_target_percent);
        out.gauge("tradeagg_interned_tokens", "Tokens in the token table", p.interned_tokens);
        out.family("tradeagg_apply_latency_seconds",
                   "Enqueue to applied, for the sampled trades (one in the policy's "
                   "latency_sample_every)",
                   "histogram");
        out.histogram("tradeagg_apply_latency_seconds", {}, pipeline_.apply_latency_counts());

        http_.write(out);

        if (f.redis) {
            const auto& r = *f.redis;
            out.gauge("tradeagg_redis_connected",
                      "1 if every Redis node serving slots has a connection ready",
                      r.connected ? 1 : 0);
            out.gauge("tradeagg_redis_nodes", "Redis masters serving slots (1 for a plain Redis)",
                      r.nodes);
            out.gauge("tradeagg_redis_nodes_connected", "Of those, with a connection ready",
                      r.nodes_connected);
            out.counter("tradeagg_redis_redirects_total", "Redis Cluster MOVED and ASK followed",
                        r.moved + r.asked);
            out.family("tradeagg_redis_commands_total",
                       "Redis commands answered, by result (error: an error reply, or lost with "
                       "its connection)",
                       "counter");
            out.sample("tradeagg_redis_commands_total", "result=\"ok\"", r.commands_succeeded);
            out.sample("tradeagg_redis_commands_total", "result=\"error\"", r.commands_failed);
            out.counter("tradeagg_redis_retries_total", "Redis writes retried", r.retries);
            out.counter("tradeagg_redis_timeouts_total",
                        "Redis connections dropped at a read or write deadline", r.timeouts);
            out.counter("tradeagg_redis_reconnects_total", "Redis reconnections", r.reconnects);
            out.counter("tradeagg_redis_resyncs_total", "Redis restarts resynced", r.resyncs);
            out.gauge("tradeagg_redis_pending_keys", "Keys not yet written to Redis", r.pending);
            out.gauge("tradeagg_redis_in_flight", "Redis commands awaiting a reply", r.in_flight);
            out.counter("tradeagg_redis_updates_written_total", "Versions Redis acknowledged",
                        r.updates_written);
            out.counter("tradeagg_redis_updates_coalesced_total",
                        "Updates replaced by a newer version before being sent",
                        r.updates_coalesced);
            out.counter("tradeagg_redis_updates_dropped_total",
                        "Updates dropped at the pending bound", r.updates_dropped);
            out.family("tradeagg_redis_write_lag_seconds",
                       "From a flush handing a version over to Redis acknowledging it",
                       "histogram");
            out.histogram("tradeagg_redis_write_lag_seconds", {}, redis_->write_lag_counts());
        }
        if (streams_) {
            const auto s = streams_->stats();
            out.counter("tradeagg_stream_entries_read_total",
                        "Stream entries delivered by XREADGROUP", s.entries_read);
            out.counter("tradeagg_stream_entries_replayed_total",
                        "Stream entries read again to rebuild a partition taken over",
                        s.entries_replayed);
            out.counter("tradeagg_stream_entries_invalid_total",
                        "Stream entries that hold no valid trade", s.entries_invalid);
            out.counter("tradeagg_stream_trades_late_total",
                        "Stream trades later than the allowed lateness (not merged)",
                        s.trades_late);
            out.counter("tradeagg_stream_trades_applied_total", "Stream trades applied and written",
                        s.trades_applied);
            out.counter("tradeagg_stream_entries_acked_total", "Stream entries acknowledged",
                        s.entries_acked);
            out.counter("tradeagg_stream_entries_trimmed_total",
                        "Stream entries removed past the retention (XTRIM)", s.entries_trimmed);
            out.counter("tradeagg_stream_token_writes_total", "Token writes acknowledged by Redis",
                        s.token_writes);
            out.counter("tradeagg_stream_write_retries_total", "Token writes sent again",
                        s.write_retries);
            out.counter("tradeagg_stream_leases_acquired_total", "Partition leases taken",
                        s.acquired);
            out.counter("tradeagg_stream_leases_lost_total", "Partition leases lost", s.lost);
            out.gauge("tradeagg_stream_partitions_held", "Partitions this instance reads",
                      s.partitions_held);
            out.gauge("tradeagg_stream_live_instances", "Instances sharing the partitions",
                      s.live_instances);
        }
        response res{http::status::ok, req.version()};
        res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
        res.body() = std::move(text);
        res.keep_alive(req.keep_alive());
        res.prepare_payload();
        return res;
    }

    // ---- admin -----------------------------------------------------------------------------

    static boost::json::object memory_json(const tradeagg::pipeline_stats& s) {
        boost::json::object o;
        o["heap_alloc_mb"] = s.heap_alloc_mb();
        o["heap_inuse_mb"] = s.heap_inuse_mb();
        o["resident_mb"] = static_cast<double>(s.resident_bytes) / detail::mib;
        o["active_tokens"] = s.active_tokens;
        o["interned_tokens"] = s.interned_tokens;
        o["gc_cpu_fraction"] = s.gc_cpu_fraction;
        return o;
    }

    response reclaim(const request& req) {
        const auto report = pipeline_.reclaim_now();
        boost::json::object body;
        body["before"] = memory_json(report.before);
        body["after"] = memory_json(report.after);
        body["tokens_evicted"] = report.tokens_evicted;
        body["tokens_released"] = report.tokens_released;
        body["bytes_released"] = report.bytes_released;
        body["cpu_seconds"] = report.cpu_seconds;
        body["wall_seconds"] = report.wall_seconds;
        log_line(
            "POST /performance/gc: heap_alloc_mb " + log_number(report.before.heap_alloc_mb()) +
            " -> " + log_number(report.after.heap_alloc_mb()) + ", resident_mb " +
            log_number(static_cast<double>(report.before.resident_bytes) / detail::mib) + " -> " +
            log_number(static_cast<double>(report.after.resident_bytes) / detail::mib));
        return detail::json_response(req, http::status::ok, body);
    }

    response optimize(const request& req, bool throughput) {
        const auto changes =
            throughput ? pipeline_.optimize_for_throughput() : pipeline_.optimize_for_latency();
        boost::json::object body;
        body["preset"] = throughput ? "throughput" : "latency";
        boost::json::array list;
        std::string logged;
        for (const auto& c : changes) {
            boost::json::object o;
            o["setting"] = c.setting;
            o["before"] = c.before;
            o["after"] = c.after;
            list.push_back(std::move(o));
            logged += " " + std::string(c.setting) + " " + log_number(c.before) + " -> " +
                      log_number(c.after) + ";";
        }
        body["changes"] = std::move(list);
        log_line(std::string("POST /performance/optimize/") +
                 (throughput ? "throughput" : "latency") + ":" +
                 (logged.empty() ? std::string(" nothing to change") : logged));
        return detail::json_response(req, http::status::ok, body);
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
        for (const auto& [host, port] : c.redis.seeds()) {
            s.redis.seeds.push_back({host, port, {}});
        }
        s.redis.password = c.redis.password;
        s.redis.db = c.redis.db;
        s.redis.timeout = c.redis.read_timeout;
        return s;
    }

    static boost::json::object streams_json(const tradeagg::redis::stream_consumer_stats& s) {
        boost::json::object o;
        o["partitions_held"] = s.partitions_held;
        o["held"] = s.held;
        o["live_instances"] = s.live_instances;
        o["rounds"] = s.rounds;
        o["entries_read"] = s.entries_read;
        o["entries_replayed"] = s.entries_replayed;
        o["entries_skipped"] = s.entries_skipped;
        o["entries_invalid"] = s.entries_invalid;
        o["trades_late"] = s.trades_late;
        o["trades_applied"] = s.trades_applied;
        o["entries_acked"] = s.entries_acked;
        o["entries_trimmed"] = s.entries_trimmed;
        o["token_writes"] = s.token_writes;
        o["write_retries"] = s.write_retries;
        o["leases_acquired"] = s.acquired;
        o["leases_released"] = s.released;
        o["leases_lost"] = s.lost;
        o["last_error"] = s.last_error;
        return o;
    }

    server_config cfg_;
    tradeagg::resolved_config<Policy> resolved_;
    token_snapshots<interval_count> snapshots_;
    std::unique_ptr<tradeagg::redis::redis_sink> redis_;
    std::unique_ptr<stream_consumer_type> streams_;
    sink_type sink_;
    pipeline_type pipeline_;
    monitored monitored_;
    tradeagg::monitor<monitored> monitor_;
    std::chrono::steady_clock::time_point started_;
    http_metrics http_;
    std::atomic<bool> accepting_{true};
    std::atomic<std::size_t> ingest_requests_{0};
    std::mutex producers_mutex_;
    /// Declared last: destroyed first, while the pipeline still exists.
    std::unordered_map<std::thread::id, typename pipeline_type::producer> producers_;
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
