#pragma once
// POST /trades: a JSON array or NDJSON of trades, checked whole, then pushed through the
// calling HTTP thread's own producer within INGEST_DEADLINE (all-or-nothing for invalid
// input; an exact count of what went in when the pipeline cannot take it all in time).

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

#include "responses.hpp"
#include "service_state.hpp"
#include "trade_parser.hpp"

namespace aggregator {

/// The ingest endpoint of a server of one policy. It owns the producers of the HTTP threads:
/// destroy it before the pipeline.
template <class Policy>
class ingest_endpoint {
    using pipeline_type = typename service_state<Policy>::pipeline_type;

public:
    explicit ingest_endpoint(service_state<Policy>& state) : s_(state) {}

    /// POST /trades. Thread-safe; trades are pushed through the calling thread's producer.
    response post(const request& req) {
        if (s_.streams) {
            return detail::error_response(
                req, http::status::conflict,
                "this server reads trades from Redis streams (INGEST_STREAMS=" +
                    std::to_string(s_.cfg.ingest_streams) + "): append them to " +
                    s_.cfg.redis.key_prefix + ":trades:{p<k>}, k = CRC16(token) mod " +
                    std::to_string(s_.cfg.ingest_streams));
        }
        if (!s_.accepting.load()) {
            return unavailable(req, 0, "the server is shutting down");
        }
        if (s_.ingest_requests.fetch_add(1) >= s_.cfg.max_ingest_requests) {
            s_.ingest_requests.fetch_sub(1);
            return unavailable(req, 0, "too many ingest requests at once (PROCESSOR_CHANNEL_SIZE)");
        }
        const ingest_slot slot{s_.ingest_requests};
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
        if (!parse_trades(req.body(), format, batch, error, s_.cfg.max_trades_per_request)) {
            const bool too_many = error.index >= s_.cfg.max_trades_per_request;
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

private:
    struct ingest_slot {
        std::atomic<std::size_t>& count;
        ~ingest_slot() { count.fetch_sub(1); }
    };

    /// Pushes every trade, waiting for room up to INGEST_DEADLINE in all; the answer says
    /// exactly how many went in (in order: the first `accepted`).
    response push_all(const request& req, const trade_batch& batch) {
        typename pipeline_type::producer* producer = producer_for_this_thread();
        const auto deadline = std::chrono::steady_clock::now() + s_.cfg.ingest_deadline;
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
            it = producers_.emplace(std::this_thread::get_id(), s_.pipeline.make_producer()).first;
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

    service_state<Policy>& s_;
    std::mutex producers_mutex_;
    /// One producer per HTTP thread, made on its first request.
    std::unordered_map<std::thread::id, typename pipeline_type::producer> producers_;
};

} // namespace aggregator
