#pragma once
// One token's fenced write in the stream consumer (`lease_scripts::token_write`, lease.hpp):
// what a partition's rounds changed for the token, and the script's keys and arguments that
// store it.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/rolling_window.hpp>
#include <tradeagg/sink.hpp>

namespace tradeagg::redis::detail {

/// What a partition's flushes changed for one token and Redis does not have yet: copied out of
/// the shard's batches, and merged with later changes until it is written.
struct token_changes {
    bool has_token = false;
    latest_trade latest;
    rolling_stats rolling;
    std::vector<candle_update> candles;    ///< `name` not kept: the map's key is the name
    std::optional<stream_id> last_applied; ///< the token's last applied entry, when written

    /// Takes a candle's newer version, or a candle not held yet.
    void put(const candle_update& c) {
        const auto same = std::find_if(candles.begin(), candles.end(), [&](const candle_update& o) {
            return o.interval_index == c.interval_index && o.data.open_time == c.data.open_time;
        });
        if (same != candles.end()) {
            same->data = c.data;
        } else {
            candles.push_back(c);
            candles.back().name = {};
        }
    }

    /// Takes `newer`, changes made after these: its latest and rolling figures and entry id
    /// where it has them, its candles over these ones; candles only these hold stay (a write
    /// of the result covers both).
    void absorb(const token_changes& newer) {
        if (newer.has_token) {
            has_token = true;
            latest = newer.latest;
            rolling = newer.rolling;
        }
        for (const candle_update& c : newer.candles) {
            put(c);
        }
        if (newer.last_applied) {
            last_applied = newer.last_applied;
        }
    }
};

/// How many keys `token_write` has for `t`: its latest and rolling hashes, and its candles.
[[nodiscard]] inline std::size_t token_write_keys(const token_changes& t) noexcept {
    return 2 + t.candles.size();
}

/// Adds the keys and arguments of `token_write` (lease.hpp) for `name`'s changes `t` to `b`
/// (resp.hpp), the `token_write_keys(t)` keys first, in the order lease.hpp gives: written
/// under the partition's `epoch` with the id of the token's last applied entry, if any;
/// candles expire `candle_retention_intervals` of their interval after they are created.
template <class Builder>
void add_token_write(Builder& b, std::string_view prefix, std::string_view name,
                     const token_changes& t, std::uint64_t epoch,
                     std::size_t candle_retention_intervals) {
    b.add(latest_key(prefix, name));
    b.add(rolling_key(prefix, name));
    for (const candle_update& c : t.candles) {
        b.add(candle_key(prefix, name, c.width, c.data.open_time));
    }
    b.add(number_text(epoch).view());
    b.add(t.last_applied ? t.last_applied->text() : std::string());
    const auto pairs = [&b](auto const& value, std::size_t n) {
        b.add(number_text(static_cast<std::uint64_t>(n)).view());
        for_each_field(value, [&b](std::string_view f, std::string_view v) {
            b.add(f);
            b.add(v);
        });
    };
    if (t.has_token) {
        pairs(t.latest, latest_fields.size());
        pairs(t.rolling, rolling_fields.size());
    } else {
        b.add("0");
        b.add("0");
    }
    for (const candle_update& c : t.candles) {
        b.add(number_text(static_cast<std::uint64_t>(
                              candle_ttl_ms(candle_retention_intervals, c.width.count())))
                  .view());
        pairs(c.data, candle_fields.size());
    }
}

} // namespace tradeagg::redis::detail
