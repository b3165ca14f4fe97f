#pragma once
// What every endpoint answers with: JSON bodies (numbers in their shortest exact form), the
// error shape `{"error": ...}`, the JSON of each figure the server reports (a candle, a rolling
// window, a latency summary, the pipeline's, the Redis sink's and stream ingest's statistics),
// and the comparison of an admin secret.

#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <tradeagg/candle.hpp>
#include <tradeagg/latency_histogram.hpp>
#include <tradeagg/redis/sink.hpp>
#include <tradeagg/redis/stream_consumer.hpp>
#include <tradeagg/rolling_window.hpp>
#include <tradeagg/stats.hpp>
#include <tradeagg/trade.hpp>

namespace aggregator {

namespace http = boost::beast::http;
using request = http::request<http::string_body>;
using response = http::response<http::string_body>;

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

/// The `runtime` object of GET /performance: the process and the reclamation in force.
inline boost::json::object runtime_json(const tradeagg::pipeline_stats& p) {
    boost::json::object runtime;
    runtime["threads"] = p.threads;
    runtime["hardware_threads"] = std::thread::hardware_concurrency();
    runtime["resident_mb"] = static_cast<double>(p.resident_bytes) / mib;
    runtime["peak_resident_mb"] = static_cast<double>(p.peak_resident_bytes) / mib;
    runtime["process_cpu_seconds"] = p.process_cpu_seconds;
    runtime["gc_target_percent"] = p.gc_target_percent;
    runtime["memory_limit_mb"] = static_cast<double>(p.memory_limit_bytes) / mib;
    runtime["max_active_tokens"] = p.max_active_tokens;
    runtime["admitting_new_tokens"] = p.admitting_new_tokens;
    runtime["reclamations"] = p.reclamations;
    runtime["reclaim_cpu_seconds"] = p.reclaim_cpu_seconds;
    runtime["tokens_evicted"] = p.tokens_evicted;
    runtime["tokens_released"] = p.tokens_released;
    return runtime;
}

/// The `pipeline` object of GET /performance: counters, rejections by reason, latency.
inline boost::json::object pipeline_json(const tradeagg::pipeline_stats& p) {
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
    pl["apply_latency"] = latency_json(p.apply_latency);
    pl["handovers"] = latency_json(p.handovers);
    return pl;
}

/// The `redis` object of GET /performance: the Redis sink's counters and write lag.
inline boost::json::object redis_json(const tradeagg::redis::sink_stats& r) {
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
    ro["journal_entries"] = r.journal_entries;
    ro["journal_forgotten"] = r.journal_forgotten;
    ro["memory_mb"] = static_cast<double>(r.memory_bytes) / mib;
    ro["updates_written"] = r.updates_written;
    ro["updates_coalesced"] = r.updates_coalesced;
    ro["updates_dropped"] = r.updates_dropped;
    ro["write_lag"] = latency_json(r.write_lag);
    ro["last_error"] = r.last_error;
    return ro;
}

/// What stream ingest reports, for /health and /performance.
inline boost::json::object streams_json(const tradeagg::redis::stream_consumer_stats& s) {
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
    o["entries_unacked"] = s.entries_unacked;
    o["tokens_waiting"] = s.tokens_waiting;
    o["entries_trimmed"] = s.entries_trimmed;
    o["checkpoints_written"] = s.checkpoints_written;
    o["checkpoints_loaded"] = s.checkpoints_loaded;
    o["checkpoints_refused"] = s.checkpoints_refused;
    o["checkpoint_errors"] = s.checkpoint_errors;
    o["checkpoint_bytes"] = s.checkpoint_bytes;
    o["token_writes"] = s.token_writes;
    o["write_retries"] = s.write_retries;
    o["leases_acquired"] = s.acquired;
    o["leases_released"] = s.released;
    o["leases_lost"] = s.lost;
    o["last_error"] = s.last_error;
    return o;
}

/// Memory figures before and after POST /performance/gc.
inline boost::json::object memory_json(const tradeagg::pipeline_stats& s) {
    boost::json::object o;
    o["heap_alloc_mb"] = s.heap_alloc_mb();
    o["heap_inuse_mb"] = s.heap_inuse_mb();
    o["resident_mb"] = static_cast<double>(s.resident_bytes) / mib;
    o["active_tokens"] = s.active_tokens;
    o["interned_tokens"] = s.interned_tokens;
    o["gc_cpu_fraction"] = s.gc_cpu_fraction;
    return o;
}

/// 405 with the methods the path allows.
inline response not_allowed(const request& req, const char* allow) {
    response res = error_response(req, http::status::method_not_allowed, "method not allowed");
    res.set(http::field::allow, allow);
    return res;
}

} // namespace detail

} // namespace aggregator
