#pragma once
// The query endpoints: GET /tokens/{token} and GET /health.

#include <cstddef>
#include <string>
#include <string_view>

#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <tradeagg/trade.hpp>

#include "responses.hpp"
#include "service_state.hpp"

namespace aggregator {

/// GET /tokens/{token}: the token's current candles, rolling 24 h statistics and latest
/// trade, from memory. Any thread.
template <class Policy>
response token_response(const service_state<Policy>& state, const request& req,
                        std::string_view name) {
    if (tradeagg::validate_token(name) != tradeagg::reject_reason::none) {
        return detail::error_response(req, http::status::bad_request, "not a valid token name");
    }
    const auto snap = state.snapshots.find(name);
    if (!snap) {
        return detail::error_response(req, http::status::not_found,
                                      "no trade was accepted for this token");
    }
    boost::json::object body;
    body["token"] = name;
    boost::json::object candles;
    for (std::size_t i = 0; i < service_state<Policy>::interval_count; ++i) {
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

/// GET /health: liveness, the policy, uptime and whether Redis is reachable. Any thread.
template <class Policy>
response health_response(const service_state<Policy>& state, const request& req) {
    boost::json::object body;
    body["status"] = "ok";
    body["policy"] = Policy::name;
    body["uptime_seconds"] = state.uptime_seconds();
    boost::json::object redis;
    redis["enabled"] = state.cfg.redis_enabled;
    if (state.redis) {
        const auto s = state.redis->stats();
        redis["reachable"] = s.connected;
        redis["pending"] = s.pending;
        redis["last_error"] = s.last_error;
    }
    if (state.streams) {
        const auto s = state.streams->stats();
        redis["reachable"] = s.partitions_held > 0 || s.last_error.empty();
        redis["last_error"] = s.last_error;
        body["streams"] = detail::streams_json(s);
    }
    body["redis"] = std::move(redis);
    return detail::json_response(req, http::status::ok, body);
}

} // namespace aggregator
