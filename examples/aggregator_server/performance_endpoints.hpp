#pragma once
// The seed's performance endpoints: GET /performance, GET /metrics (Prometheus), and the
// admin ones, POST /performance/gc and POST /performance/optimize/{throughput,latency}.

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

#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <tradeagg/pipeline.hpp>
#include <tradeagg/redis/sink.hpp>

#include "log.hpp"
#include "metrics.hpp"
#include "query_endpoints.hpp"
#include "responses.hpp"
#include "service_state.hpp"

namespace aggregator {

/// The performance endpoints of a server of one policy.
template <class Policy>
class performance_endpoints {
public:
    explicit performance_endpoints(service_state<Policy>& state) : s_(state) {}

    /// GET /performance: the seed's eight figures first, then the rest. Any thread.
    response performance(const request& req) {
        const figures f = read();
        boost::json::object body = seed_figures(f);
        const tradeagg::pipeline_stats& p = f.pipeline;
        boost::json::object runtime = detail::runtime_json(p);
        runtime["policy"] = Policy::name;
        runtime["uptime_seconds"] = s_.uptime_seconds();
        body["runtime"] = std::move(runtime);
        body["pipeline"] = detail::pipeline_json(p);
        if (f.redis) {
            body["redis"] = detail::redis_json(*f.redis);
        }
        if (s_.streams) {
            body["streams"] = detail::streams_json(s_.streams->stats());
        }
        boost::json::object ingest;
        ingest["requests_in_progress"] = s_.ingest_requests.load();
        ingest["tokens_kept_for_queries"] = s_.snapshots.size();
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
        out.gauge("process_virtual_memory_bytes", "Virtual memory size in bytes", p.virtual_bytes);
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
        out.histogram("tradeagg_apply_latency_seconds", {}, s_.pipeline.apply_latency_counts());
        out.family("tradeagg_handover_duration_seconds",
                   "Time a shard's worker spent on one flush or hand-over to the sink, during "
                   "which its trades wait",
                   "histogram");
        out.histogram("tradeagg_handover_duration_seconds", {}, s_.pipeline.handover_counts());

        s_.http_figures.write(out);

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
            out.histogram("tradeagg_redis_write_lag_seconds", {}, s_.redis->write_lag_counts());
        }
        if (s_.streams) {
            const auto s = s_.streams->stats();
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
                        "Stream entries removed past the retention or a checkpoint (XTRIM)",
                        s.entries_trimmed);
            out.counter("tradeagg_stream_checkpoints_written_total",
                        "Partition checkpoints stored in Redis", s.checkpoints_written);
            out.counter("tradeagg_stream_checkpoints_loaded_total",
                        "Partition checkpoints a rebuild started from", s.checkpoints_loaded);
            out.counter("tradeagg_stream_checkpoints_refused_total",
                        "Partition checkpoints that did not read back (never applied)",
                        s.checkpoints_refused);
            out.counter("tradeagg_stream_checkpoint_errors_total",
                        "Partition checkpoint writes Redis refused", s.checkpoint_errors);
            out.gauge("tradeagg_stream_checkpoint_bytes",
                      "Size of the last partition checkpoint written or loaded",
                      s.checkpoint_bytes);
            out.counter("tradeagg_stream_token_writes_total", "Token writes acknowledged by Redis",
                        s.token_writes);
            out.counter("tradeagg_stream_write_retries_total", "Token writes sent again",
                        s.write_retries);
            out.counter("tradeagg_stream_leases_acquired_total", "Partition leases taken",
                        s.acquired);
            out.counter("tradeagg_stream_leases_lost_total", "Partition leases lost", s.lost);
            out.gauge("tradeagg_stream_entries_unacked",
                      "Stream entries read and not yet acknowledged (their writes pending)",
                      s.entries_unacked);
            out.gauge("tradeagg_stream_tokens_waiting",
                      "Tokens whose changes wait for the stream writer", s.tokens_waiting);
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

    /// POST /performance/gc (admin): a reclamation, before and after. Any thread.
    response reclaim(const request& req) {
        const auto report = s_.pipeline.reclaim_now();
        boost::json::object body;
        body["before"] = detail::memory_json(report.before);
        body["after"] = detail::memory_json(report.after);
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

    /// POST /performance/optimize/throughput | /latency (admin): the changes. Any thread.
    response optimize(const request& req, bool throughput) {
        const auto changes =
            throughput ? s_.pipeline.optimize_for_throughput() : s_.pipeline.optimize_for_latency();
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

private:
    /// The seed's eight figures and the rest, read once for /performance and /metrics.
    struct figures {
        tradeagg::pipeline_stats pipeline;
        std::optional<tradeagg::redis::sink_stats> redis;
    };
    figures read() const {
        figures f{s_.pipeline.stats(), std::nullopt};
        if (s_.redis) {
            f.redis = s_.redis->stats();
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

    service_state<Policy>& s_;
};

} // namespace aggregator
