#pragma once
// One token's fenced write in the stream consumer (`lease_scripts::token_write`, lease.hpp):
// what a round changed for the token, and the script's keys and arguments that store it.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tradeagg/redis/keys.hpp>
#include <tradeagg/rolling_window.hpp>
#include <tradeagg/sink.hpp>

namespace tradeagg::redis::detail {

/// What a round's flushes changed, per token: copied out of the shard's batches.
struct token_changes {
    bool has_token = false;
    latest_trade latest;
    rolling_stats rolling;
    std::vector<candle_update> candles; ///< `name` not kept: the map's key is the name
};

/// The keys and arguments of `token_write` for one token's changes, the first `keys` of them
/// keys, in the order lease.hpp gives.
struct token_write_arguments {
    std::vector<std::string> keys_and_args;
    std::size_t keys = 0;

    /// `name`'s changes `t`, written under the partition's `epoch`; `last_applied` is the id of
    /// the token's last applied entry ("" if none). Candles expire after
    /// `candle_retention_intervals` of their interval.
    token_write_arguments(std::string_view prefix, std::string_view name, const token_changes& t,
                          std::uint64_t epoch, std::string last_applied,
                          std::size_t candle_retention_intervals) {
        std::vector<std::string>& a = keys_and_args;
        a.reserve(8 + t.candles.size() * 34);
        a.push_back(latest_key(prefix, name));
        a.push_back(rolling_key(prefix, name));
        for (const candle_update& c : t.candles) {
            a.push_back(candle_key(prefix, name, c.width, c.data.open_time));
        }
        keys = a.size();
        a.push_back(std::to_string(epoch));
        a.push_back(std::move(last_applied));
        const auto pairs = [&a](auto const& value, std::size_t n) {
            a.push_back(std::to_string(n));
            for_each_field(value, [&a](std::string_view f, std::string_view v) {
                a.emplace_back(f);
                a.emplace_back(v);
            });
        };
        if (t.has_token) {
            pairs(t.latest, latest_fields.size());
            pairs(t.rolling, rolling_fields.size());
        } else {
            a.emplace_back("0");
            a.emplace_back("0");
        }
        for (const candle_update& c : t.candles) {
            a.push_back(std::to_string(candle_ttl_ms(candle_retention_intervals, c.width.count())));
            pairs(c.data, candle_fields.size());
        }
    }
};

} // namespace tradeagg::redis::detail
