#pragma once
// What GET /tokens/{token} answers from memory: each token's current candle per interval, its
// rolling 24 h statistics and its latest trade, kept up to date from the pipeline's flushes.

#include <array>
#include <atomic>
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

namespace aggregator {

/// A sink that keeps, per token, the latest candle of each interval (by open time), the
/// rolling window and the latest trade. `consume` runs on shard workers, `find` on HTTP
/// threads: the tokens are split over 64 locks so they rarely meet. Holds at most `capacity`
/// tokens; a new token beyond that is not kept (counted in `not_kept`), so its GET answers 404
/// as for an unknown token until a restart.
template <std::size_t Intervals>
class token_snapshots {
public:
    struct snapshot {
        std::array<std::optional<tradeagg::candle>, Intervals> candles; ///< by interval index
        tradeagg::rolling_stats rolling;
        tradeagg::latest_trade latest;
        bool has_token_update = false;
    };

    explicit token_snapshots(std::size_t capacity) : capacity_(capacity) {}

    /// Keeps the newest of each candle and token. Any thread; allocates for new tokens.
    void consume(const tradeagg::flush_batch& batch) {
        // A flush lists each token's candles one after another: one lookup for each such run.
        const auto candles = batch.candles;
        for (std::size_t i = 0; i < candles.size();) {
            std::size_t end = i + 1;
            while (end < candles.size() && candles[end].token == candles[i].token) {
                ++end;
            }
            update(candles[i].name, [&](snapshot& s) {
                for (std::size_t k = i; k < end; ++k) {
                    const tradeagg::candle_update& u = candles[k];
                    if (u.interval_index >= Intervals) {
                        continue;
                    }
                    auto& slot = s.candles[u.interval_index];
                    if (!slot || slot->open_time <= u.data.open_time) {
                        slot = u.data;
                    }
                }
            });
            i = end;
        }
        for (const tradeagg::token_update& u : batch.tokens) {
            update(u.name, [&](snapshot& s) {
                s.rolling = u.rolling;
                s.latest = u.latest;
                s.has_token_update = true;
            });
        }
    }

    /// The token's snapshot, if it was ever flushed and kept. Any thread; allocates the copy.
    [[nodiscard]] std::optional<snapshot> find(std::string_view token) const {
        const part& p = part_of(token);
        const std::lock_guard lock(p.mutex);
        const auto it = p.tokens.find(token);
        return it == p.tokens.end() ? std::nullopt : std::optional<snapshot>(it->second);
    }

    /// The names of the tokens kept, in no particular order. Any thread; allocates.
    [[nodiscard]] std::vector<std::string> names() const {
        std::vector<std::string> out;
        out.reserve(size());
        for (const part& p : parts_) {
            const std::lock_guard lock(p.mutex);
            for (const auto& [name, snap] : p.tokens) {
                out.push_back(name);
            }
        }
        return out;
    }

    /// The names of the tokens kept since the last call (each once), oldest first. Any thread;
    /// allocates.
    [[nodiscard]] std::vector<std::string> take_new_names() {
        const std::lock_guard lock(fresh_mutex_);
        return std::exchange(fresh_, {});
    }

    /// Tokens kept. Any thread.
    [[nodiscard]] std::size_t size() const noexcept {
        return size_.load(std::memory_order_relaxed);
    }
    /// New tokens not kept because `capacity` tokens were. Any thread.
    [[nodiscard]] std::uint64_t not_kept() const noexcept {
        return not_kept_.load(std::memory_order_relaxed);
    }

private:
    struct part {
        mutable std::mutex mutex;
        tradeagg::detail::string_map<snapshot> tokens;
    };
    static constexpr std::size_t parts = 64;

    const part& part_of(std::string_view token) const noexcept {
        return parts_[std::hash<std::string_view>{}(token) % parts];
    }

    template <class F>
    void update(std::string_view token, F&& f) {
        part& p = parts_[std::hash<std::string_view>{}(token) % parts];
        const std::lock_guard lock(p.mutex);
        auto it = p.tokens.find(token);
        if (it == p.tokens.end()) {
            if (size_.load(std::memory_order_relaxed) >= capacity_) {
                not_kept_.fetch_add(1, std::memory_order_relaxed);
                return;
            }
            it = p.tokens.emplace(std::string(token), snapshot{}).first;
            size_.fetch_add(1, std::memory_order_relaxed);
            const std::lock_guard fresh_lock(fresh_mutex_);
            fresh_.push_back(it->first);
        }
        f(it->second);
    }

    const std::size_t capacity_;
    std::array<part, parts> parts_;
    std::atomic<std::size_t> size_{0};
    std::atomic<std::uint64_t> not_kept_{0};
    std::mutex fresh_mutex_;         ///< taken after a part's, never before
    std::vector<std::string> fresh_; ///< kept since the last take_new_names
};

} // namespace aggregator
