#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <tradeagg/detail/string_map.hpp>
#include <tradeagg/sink.hpp>

namespace tradeagg {

/// Keeps the latest version of every candle, rolling window and latest trade, queryable by
/// token, interval and open time. Every member is thread-safe (one mutex); `consume` allocates
/// for new tokens and candles. Made for tests, demos and queries of modest size: every candle
/// ever emitted is kept.
class memory_sink {
public:
    /// Stores every update of the batch, replacing earlier versions.
    void consume(const flush_batch& batch) {
        const std::lock_guard lock(mutex_);
        // A token's updates come together in a batch: look its entry up once per run.
        std::string_view last_name;
        entry* last = nullptr;
        for (const candle_update& u : batch.candles) {
            if (last == nullptr || u.name != last_name) {
                last = &find_or_add(u.name);
                last_name = u.name;
            }
            last->candles.insert_or_assign(key{u.width.count(), u.data.open_time}, u.data);
            ++candle_updates_;
        }
        for (const token_update& u : batch.tokens) {
            entry& e = find_or_add(u.name);
            e.latest = u.latest;
            e.rolling = u.rolling;
            e.has_token_update = true;
            ++token_updates_;
        }
    }

    /// The candle of `token` for `width` opening at `open_time`, if one was emitted.
    [[nodiscard]] std::optional<candle> find_candle(std::string_view token, interval width,
                                                    timestamp_ms open_time) const {
        const std::lock_guard lock(mutex_);
        const entry* e = find(token);
        if (e == nullptr) {
            return std::nullopt;
        }
        const auto it = e->candles.find(key{width.count(), open_time});
        return it == e->candles.end() ? std::nullopt : std::optional<candle>(it->second);
    }

    /// Every candle of `token` for `width`, by open time.
    [[nodiscard]] std::vector<candle> candles(std::string_view token, interval width) const {
        const std::lock_guard lock(mutex_);
        std::vector<candle> out;
        if (const entry* e = find(token)) {
            for (const auto& [k, c] : e->candles) {
                if (k.first == width.count()) {
                    out.push_back(c);
                }
            }
        }
        std::sort(out.begin(), out.end(),
                  [](const candle& a, const candle& b) { return a.open_time < b.open_time; });
        return out;
    }

    /// The token's rolling 24 h statistics, if it was ever flushed.
    [[nodiscard]] std::optional<rolling_stats> rolling(std::string_view token) const {
        const std::lock_guard lock(mutex_);
        const entry* e = find(token);
        return e != nullptr && e->has_token_update ? std::optional(e->rolling) : std::nullopt;
    }

    /// The token's latest trade, if it was ever flushed.
    [[nodiscard]] std::optional<latest_trade> latest(std::string_view token) const {
        const std::lock_guard lock(mutex_);
        const entry* e = find(token);
        return e != nullptr && e->has_token_update ? std::optional(e->latest) : std::nullopt;
    }

    /// Tokens seen, in no particular order.
    [[nodiscard]] std::vector<std::string> tokens() const {
        const std::lock_guard lock(mutex_);
        std::vector<std::string> out;
        out.reserve(entries_.size());
        for (const auto& [name, e] : entries_) {
            out.push_back(name);
        }
        return out;
    }

    /// Distinct candles held, over all tokens and intervals.
    [[nodiscard]] std::size_t candle_count() const {
        const std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (const auto& [name, e] : entries_) {
            n += e.candles.size();
        }
        return n;
    }

    /// Candle updates consumed, counting repeated versions of one candle.
    [[nodiscard]] std::uint64_t candle_updates() const {
        const std::lock_guard lock(mutex_);
        return candle_updates_;
    }

    /// Token updates consumed, counting repeated versions.
    [[nodiscard]] std::uint64_t token_updates() const {
        const std::lock_guard lock(mutex_);
        return token_updates_;
    }

private:
    using key = std::pair<std::int64_t, timestamp_ms>; // (width in ms, open time)
    struct key_hash {
        std::size_t operator()(const key& k) const noexcept {
            // Open times are multiples of the width: mix both so buckets spread.
            const auto h = static_cast<std::uint64_t>(k.second) * 0x9E3779B97F4A7C15ull ^
                           static_cast<std::uint64_t>(k.first);
            return static_cast<std::size_t>(h ^ (h >> 29));
        }
    };
    struct entry {
        std::unordered_map<key, candle, key_hash> candles;
        rolling_stats rolling;
        latest_trade latest;
        bool has_token_update = false;
    };
    entry& find_or_add(std::string_view name) { return detail::find_or_add(entries_, name); }
    const entry* find(std::string_view name) const {
        const auto it = entries_.find(name);
        return it == entries_.end() ? nullptr : &it->second;
    }

    mutable std::mutex mutex_;
    detail::string_map<entry> entries_;
    std::uint64_t candle_updates_ = 0;
    std::uint64_t token_updates_ = 0;
};
static_assert(sink<memory_sink>);

} // namespace tradeagg
