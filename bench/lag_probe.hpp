#pragma once
// BM_redis_end_to_end's lag probe: the time from a trade pushed into the pipeline to its effect
// being visible in Redis, measured on trades of a token of its own.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <hiredis/hiredis.h>

#include <tradeagg/redis/config.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/trade.hpp>

#include "bench_stream.hpp"
#include "pipelined_connection.hpp"
#include "redis_bench_settings.hpp"

namespace bench {

inline constexpr std::string_view probe_token = "PROBE";

/// Pushes a probe trade every 5 ms and polls Redis every half millisecond for the latest probe
/// trade it shows: a trade's lag is the time until it, or a later probe (whose write replaces
/// it), is visible.
class lag_probe {
public:
    template <class Pipeline>
    lag_probe(Pipeline& p, const tradeagg::redis::redis_config& where,
              const std::atomic<tradeagg::timestamp_ms>& stream_time)
        : thread_([this, &p, where, &stream_time] { run(p, where, stream_time); }) {}
    lag_probe(const lag_probe&) = delete;
    lag_probe& operator=(const lag_probe&) = delete;
    ~lag_probe() { stop(); }

    /// Pushes no more probes; polling goes on, so the lag of those in flight is still seen.
    void stop_pushing() { pushing_ = false; }
    /// Polls until every probe pushed is visible (or `timeout`), then stops. Afterwards
    /// `trades()` and `lags_ms()` are complete.
    void stop(std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) {
        pushing_ = false;
        finish_by_ = bench_clock::now() + timeout;
        finishing_ = true;
        if (thread_.joinable()) {
            thread_.join();
        }
    }
    [[nodiscard]] const std::vector<tradeagg::trade>& trades() const noexcept { return trades_; }
    /// Lags of the probes, from push to seen in Redis.
    [[nodiscard]] const std::vector<double>& lags_ms() const noexcept { return lags_ms_; }
    [[nodiscard]] const std::string& error() const noexcept { return error_; }

private:
    template <class Pipeline>
    void run(Pipeline& p, const tradeagg::redis::redis_config& where,
             const std::atomic<tradeagg::timestamp_ms>& stream_time) {
        try {
            pipelined_connection conn(where, 1);
            auto producer = p.make_producer();
            const tradeagg::token_id token = p.intern(probe_token).id;
            const std::string key = tradeagg::redis::latest_key(key_prefix, probe_token);
            std::vector<bench_clock::time_point> pushed_at;
            std::size_t seen = 0; // probes whose lag is recorded
            auto next_push = bench_clock::now();
            tradeagg::timestamp_ms ts = 0;
            while (!finishing_ ||
                   (seen < pushed_at.size() && bench_clock::now() < finish_by_.load())) {
                const auto now = bench_clock::now();
                if (pushing_ && now >= next_push) {
                    ts = std::max(ts, stream_time.load(std::memory_order_relaxed));
                    const tradeagg::trade t{token, tradeagg::side::buy, 100.0, 1.0,
                                            ts,    trades_.size() + 1};
                    if (producer.push(t) == tradeagg::reject_reason::none) {
                        trades_.push_back(t);
                        pushed_at.push_back(now);
                    } else {
                        pushing_ = false; // the pipeline is stopping
                    }
                    next_push = now + std::chrono::milliseconds(5);
                }
                const reply_ptr r = conn.command({"HGET", key, "trade_id"});
                if (r->type == REDIS_REPLY_STRING) {
                    const auto visible =
                        static_cast<std::size_t>(std::strtoull(r->str, nullptr, 10));
                    const auto at = bench_clock::now();
                    for (; seen < std::min(visible, pushed_at.size()); ++seen) {
                        lags_ms_.push_back(
                            std::chrono::duration<double, std::milli>(at - pushed_at[seen])
                                .count());
                    }
                }
                std::this_thread::sleep_for(std::chrono::microseconds(500));
            }
        } catch (const std::exception& e) {
            error_ = e.what();
        }
    }

    std::atomic<bool> pushing_{true};
    std::atomic<bool> finishing_{false};
    std::atomic<bench_clock::time_point> finish_by_{bench_clock::time_point::max()};
    std::vector<tradeagg::trade> trades_;
    std::vector<double> lags_ms_;
    std::string error_;
    std::thread thread_; // last: starts once the rest is built
};

} // namespace bench
