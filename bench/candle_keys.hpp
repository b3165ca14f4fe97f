#pragma once
// The candle keys a per-trade baseline writes, tradeagg:{<token>}:candle:<interval>:<open_time_ms>
// (the layout is described in redis_bench.cpp), for the seven intervals of
// tradeagg::throughput_policy.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <tradeagg/interval.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/trade.hpp>

#include "redis_bench_settings.hpp"

namespace bench {

inline constexpr auto& bench_intervals = tradeagg::throughput_policy::intervals;
inline constexpr std::size_t interval_count = bench_intervals.size();

/// "1s", "1m", ... "1d", in the order of `bench_intervals`.
inline const std::array<std::string, interval_count>& interval_names() {
    static const std::array<std::string, interval_count> names = [] {
        std::array<std::string, interval_count> n;
        for (std::size_t i = 0; i < interval_count; ++i) {
            n[i] = std::string(tradeagg::interval_name(bench_intervals[i]).view());
        }
        return n;
    }();
    return names;
}

/// The candle keys of one trade, one per interval, rebuilt in place for each trade (no
/// allocation once their capacity has grown), with the candles' open and close times.
class candle_keys {
public:
    candle_keys() {
        for (std::string& k : keys_) {
            k.reserve(128);
        }
    }

    void build(std::string_view token, tradeagg::timestamp_ms ts) {
        for (std::size_t i = 0; i < interval_count; ++i) {
            const std::int64_t width = bench_intervals[i].count();
            open_times_[i] = tradeagg::bucket_open(ts, width);
            open_text_[i].set(open_times_[i]);
            close_text_[i].set(open_times_[i] + width - 1);
            std::string& k = keys_[i];
            k.assign(key_prefix);
            k += ":{";
            k += token;
            k += "}:candle:";
            k += interval_names()[i];
            k += ':';
            k += open_text_[i].view();
        }
    }

    [[nodiscard]] const std::string& key(std::size_t i) const noexcept { return keys_[i]; }
    [[nodiscard]] tradeagg::timestamp_ms open_time(std::size_t i) const noexcept {
        return open_times_[i];
    }
    [[nodiscard]] const tradeagg::redis::number_text& open_text(std::size_t i) const noexcept {
        return open_text_[i];
    }
    [[nodiscard]] const tradeagg::redis::number_text& close_text(std::size_t i) const noexcept {
        return close_text_[i];
    }

private:
    std::array<std::string, interval_count> keys_;
    std::array<tradeagg::timestamp_ms, interval_count> open_times_{};
    std::array<tradeagg::redis::number_text, interval_count> open_text_;
    std::array<tradeagg::redis::number_text, interval_count> close_text_;
};

} // namespace bench
