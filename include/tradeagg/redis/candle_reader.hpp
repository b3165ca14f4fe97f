#pragma once
// Reading aggregates back from Redis, as keys.hpp's contract stores them: a candle, rolling or
// latest-trade hash parsed into the library's types, and a range of one token's candles of one
// interval read by open time (what a kline or chart query asks for).
//
// A candle key exists only for a bucket in which a trade happened, and expires
// `candle_retention_intervals` of its interval after it was created. Nothing lists a token's
// candles, so a range is found through the coarser intervals: every trade is in a candle of
// every interval, each interval a multiple of the one below it (the policy concept requires
// it), so a bucket can hold a candle only inside a coarser candle that exists. A read asks
// Redis (HGETALL, pipelined) for the coarsest interval's buckets in the range, then only for
// the buckets inside the coarse candles it found, level by level down to the interval asked
// for: its cost follows the candles there are, not the length of the range. (A coarse candle
// also outlives the finer ones inside it: its expiry is as many of its longer intervals.) Only
// the coarsest interval's buckets are bounded: a read looks at the newest `max_buckets` of them
// in the range (10,000 days of 1d candles).

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <hiredis/hiredis.h>

#include <tradeagg/candle.hpp>
#include <tradeagg/interval.hpp>
#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/token_set.hpp>
#include <tradeagg/rolling_window.hpp>
#include <tradeagg/sink.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg::redis {

namespace detail {

/// Reads `text` whole as a T (an integer or a double); false if it is not one.
template <class T>
bool read_number(std::optional<std::string_view> text, T& out) noexcept {
    if (!text || text->empty()) {
        return false;
    }
    const auto r = std::from_chars(text->data(), text->data() + text->size(), out);
    return r.ec == std::errc{} && r.ptr == text->data() + text->size();
}

} // namespace detail

/// A candle hash's fields (`field(name)` gives a field's text, or nothing) read back into a
/// candle; nothing if a field is missing or is not the number keys.hpp writes. vwap is not
/// read: it is quote_volume / volume.
template <class Lookup>
[[nodiscard]] std::optional<candle> candle_from_hash(Lookup&& field) {
    candle c;
    std::uint64_t closed = 0;
    const bool ok =
        detail::read_number(field("open"), c.open) && detail::read_number(field("high"), c.high) &&
        detail::read_number(field("low"), c.low) && detail::read_number(field("close"), c.close) &&
        detail::read_number(field("volume"), c.volume) &&
        detail::read_number(field("quote_volume"), c.quote_volume) &&
        detail::read_number(field("trades"), c.trades) &&
        detail::read_number(field("taker_buy_volume"), c.taker_buy_volume) &&
        detail::read_number(field("taker_buy_quote_volume"), c.taker_buy_quote_volume) &&
        detail::read_number(field("open_time"), c.open_time) &&
        detail::read_number(field("close_time"), c.close_time) &&
        detail::read_number(field("first_trade_id"), c.first_trade_id) &&
        detail::read_number(field("last_trade_id"), c.last_trade_id) &&
        detail::read_number(field("closed"), closed) && closed <= 1;
    c.closed = closed == 1;
    return ok ? std::optional<candle>(c) : std::nullopt;
}

/// The rolling 24 h hash read back; nothing if a field is missing or malformed.
template <class Lookup>
[[nodiscard]] std::optional<rolling_stats> rolling_from_hash(Lookup&& field) {
    rolling_stats r;
    const bool ok =
        detail::read_number(field("open"), r.open) && detail::read_number(field("high"), r.high) &&
        detail::read_number(field("low"), r.low) && detail::read_number(field("last"), r.last) &&
        detail::read_number(field("volume"), r.volume) &&
        detail::read_number(field("quote_volume"), r.quote_volume) &&
        detail::read_number(field("vwap"), r.vwap) &&
        detail::read_number(field("trades"), r.trades) &&
        detail::read_number(field("price_change"), r.price_change) &&
        detail::read_number(field("price_change_percent"), r.price_change_percent) &&
        detail::read_number(field("window_start"), r.window_start) &&
        detail::read_number(field("window_end"), r.window_end);
    return ok ? std::optional<rolling_stats>(r) : std::nullopt;
}

/// The latest-trade hash read back; nothing if a field is missing or malformed.
template <class Lookup>
[[nodiscard]] std::optional<latest_trade> latest_from_hash(Lookup&& field) {
    latest_trade l;
    const auto taker = field("side");
    const auto s = taker ? parse_side(*taker) : std::nullopt;
    const bool ok = s && detail::read_number(field("price"), l.price) &&
                    detail::read_number(field("quantity"), l.quantity) &&
                    detail::read_number(field("ts"), l.ts_ms) &&
                    detail::read_number(field("trade_id"), l.id);
    if (!ok) {
        return std::nullopt;
    }
    l.taker = *s;
    return l;
}

/// One token's rolling and latest hashes, as far as Redis has them.
struct token_summary {
    std::optional<rolling_stats> rolling;
    std::optional<latest_trade> latest;
};

/// Which candles of one token and interval a `candle_reader::range` read asks for: those
/// whose open time is in [first_open, last_open], at most `limit` of them, the oldest of the
/// range first, or, with `newest`, the newest `limit` (still returned oldest first).
struct candle_range {
    interval width{0};
    timestamp_ms first_open = 0;
    timestamp_ms last_open = 0;
    std::size_t limit = 500;
    bool newest = false;
};

/// Reads candles and token hashes from a Redis (one node, or a Redis Cluster: cluster_client)
/// for any number of threads: each read takes a connection of its own from a small pool, made
/// on first use and kept. Blocks for the round trips; throws std::runtime_error when Redis does
/// not answer or answers with an error.
class candle_reader {
public:
    /// Buckets of the coarsest interval one `range` read asks Redis for, at most: the newest of
    /// the range.
    static constexpr std::size_t max_buckets = 10'000;
    /// HGETALLs sent in one pipelined batch (a batch may exceed it by one coarse candle's
    /// buckets).
    static constexpr std::size_t chunk = 500;

    /// `intervals`: the widths whose candles are written for every trade, each a multiple of
    /// the one before (a policy's `intervals`); a range of a width not among them is read
    /// bucket by bucket, bounded by `max_buckets`.
    candle_reader(cluster_client::options redis, std::string key_prefix,
                  std::vector<interval> intervals)
        : redis_(std::move(redis)), prefix_(std::move(key_prefix)),
          intervals_(std::move(intervals)) {}

    /// The candles of `token` that `r` asks for, oldest first. Thread-safe; allocates.
    [[nodiscard]] std::vector<candle> range(std::string_view token, const candle_range& r) {
        std::vector<candle> found;
        if (r.width.count() <= 0 || r.limit == 0 || r.first_open > r.last_open) {
            return found;
        }
        // The widths from the one asked for to the coarsest: each level indexes the one below.
        std::vector<interval> levels{r.width};
        const auto at = std::find(intervals_.begin(), intervals_.end(), r.width);
        if (at != intervals_.end()) {
            levels.assign(at, intervals_.end());
        }
        read_pass pass{*this, token, r, levels, found};
        pass.top();
        if (r.newest) {
            std::reverse(found.begin(), found.end());
        }
        return found;
    }

    /// `token`'s rolling and latest hashes. Thread-safe; allocates.
    [[nodiscard]] token_summary summary(std::string_view token) {
        return std::move(summaries({std::string(token)}).front());
    }

    /// The summaries of many tokens at once, in the order of `tokens`. Thread-safe; allocates.
    [[nodiscard]] std::vector<token_summary> summaries(const std::vector<std::string>& tokens) {
        std::vector<cluster_command> cmds;
        cmds.reserve(2 * tokens.size());
        for (const std::string& token : tokens) {
            const std::uint16_t slot = token_slot(token);
            cmds.push_back({{"HGETALL", rolling_key(prefix_, token)}, slot});
            cmds.push_back({{"HGETALL", latest_key(prefix_, token)}, slot});
        }
        std::vector<command_result> results;
        lease conn(*this);
        conn->run(cmds, results);
        std::vector<token_summary> out(tokens.size());
        for (std::size_t i = 0; i < tokens.size(); ++i) {
            if (const redisReply* r = checked(results[2 * i]); r->elements != 0) {
                out[i].rolling = rolling_from_hash(entry_fields(r));
            }
            if (const redisReply* r = checked(results[2 * i + 1]); r->elements != 0) {
                out[i].latest = latest_from_hash(entry_fields(r));
            }
        }
        return out;
    }

    /// The names in the token set (token_set.hpp), in no particular order. Thread-safe;
    /// allocates.
    [[nodiscard]] std::vector<std::string> tokens() {
        lease conn(*this);
        return read_token_set(*conn, prefix_);
    }

private:
    /// One `range` read: walks the levels from the coarsest down, in the range's direction,
    /// appending the candles of the finest level until the limit.
    struct read_pass {
        candle_reader& reader;
        std::string_view token;
        const candle_range& r;
        const std::vector<interval>& levels; ///< [0] the width asked for, then coarser ones
        std::vector<candle>& out;
        std::vector<cluster_command> cmds = {};
        std::vector<command_result> results = {};

        [[nodiscard]] bool done() const noexcept { return out.size() >= r.limit; }

        /// The range's bounds aligned to level `l`'s width.
        [[nodiscard]] std::pair<timestamp_ms, timestamp_ms> bounds(std::size_t l) const {
            const std::int64_t w = levels[l].count();
            return {bucket_open(r.first_open, w), bucket_open(r.last_open, w)};
        }

        /// The coarsest level's buckets in the range, in chunks, each chunk's candles taken
        /// down to the finest level before the next chunk is asked for.
        void top() {
            const std::size_t l = levels.size() - 1;
            const std::int64_t w = levels[l].count();
            auto [lo, hi] = bounds(l);
            // The newest max_buckets of a longer range: 27 years of days.
            const auto buckets = static_cast<std::uint64_t>((hi - lo) / w) + 1;
            const std::uint64_t asked = std::min<std::uint64_t>(buckets, max_buckets);
            lo = std::max(lo, hi - static_cast<std::int64_t>(asked - 1) * w);
            std::vector<timestamp_ms> opens;
            for (std::uint64_t from = 0; from < asked && !done(); from += chunk) {
                opens.clear();
                const std::uint64_t to = std::min<std::uint64_t>(from + chunk, asked);
                for (std::uint64_t k = from; k < to; ++k) {
                    const auto step = static_cast<std::int64_t>(k) * w;
                    opens.push_back(r.newest ? hi - step : lo + step);
                }
                take(l, probe(l, opens));
            }
        }

        /// Level `l`'s candles `found`, in the range's direction: the finest level's are the
        /// answer; a coarser level's are looked into, as many at once as fill a batch.
        void take(std::size_t l, const std::vector<candle>& found) {
            if (l == 0) {
                for (const candle& c : found) {
                    if (done()) {
                        return;
                    }
                    out.push_back(c);
                }
                return;
            }
            const std::int64_t parent = levels[l].count();
            const std::int64_t w = levels[l - 1].count();
            const auto [lo, hi] = bounds(l - 1);
            std::vector<timestamp_ms> opens;
            for (std::size_t i = 0; i < found.size() && !done();) {
                opens.clear();
                for (; i < found.size(); ++i) {
                    const timestamp_ms first = std::max(lo, found[i].open_time);
                    const timestamp_ms last = std::min(hi, found[i].open_time + parent - w);
                    const auto n =
                        first > last ? 0 : static_cast<std::size_t>((last - first) / w) + 1;
                    if (!opens.empty() && opens.size() + n > chunk) {
                        break;
                    }
                    for (std::size_t k = 0; k < n; ++k) {
                        const auto step = static_cast<std::int64_t>(k) * w;
                        opens.push_back(r.newest ? last - step : first + step);
                    }
                }
                take(l - 1, probe(l - 1, opens));
            }
        }

        /// Level `l`'s candles at `opens`, in that order (the buckets without one left out).
        std::vector<candle> probe(std::size_t l, const std::vector<timestamp_ms>& opens) {
            std::vector<candle> found;
            if (opens.empty()) {
                return found;
            }
            const std::uint16_t slot = token_slot(token);
            cmds.clear();
            for (const timestamp_ms open : opens) {
                cmds.push_back(
                    {{"HGETALL", candle_key(reader.prefix_, token, levels[l], open)}, slot});
            }
            lease conn(reader);
            conn->run(cmds, results);
            for (std::size_t k = 0; k < results.size(); ++k) {
                const redisReply* reply = checked(results[k]);
                if (reply->elements == 0) {
                    continue; // no trade in that bucket
                }
                auto c = candle_from_hash(entry_fields(reply));
                if (!c) {
                    throw std::runtime_error("malformed candle hash " + cmds[k].args[1]);
                }
                found.push_back(*c);
            }
            return found;
        }
    };

    /// A pooled connection, returned to the pool when the read is over (dropped if the read
    /// threw: it may hold replies not read).
    class lease {
    public:
        explicit lease(candle_reader& owner) : owner_(owner) {
            const std::lock_guard lock(owner_.mutex_);
            if (!owner_.idle_.empty()) {
                client_ = std::move(owner_.idle_.back());
                owner_.idle_.pop_back();
            }
            if (!client_) {
                client_ = std::make_unique<cluster_client>(owner_.redis_);
            }
        }
        lease(const lease&) = delete;
        lease& operator=(const lease&) = delete;
        ~lease() {
            if (std::uncaught_exceptions() == 0) {
                const std::lock_guard lock(owner_.mutex_);
                owner_.idle_.push_back(std::move(client_));
            }
        }
        cluster_client* operator->() const noexcept { return client_.get(); }
        cluster_client& operator*() const noexcept { return *client_; }

    private:
        candle_reader& owner_;
        std::unique_ptr<cluster_client> client_;
    };

    /// An HGETALL's reply, or throws with why there is none.
    static const redisReply* checked(const command_result& r) {
        if (!r.ok()) {
            throw std::runtime_error("Redis: " + r.error);
        }
        if (r.reply->type != REDIS_REPLY_ARRAY) {
            throw std::runtime_error("Redis: HGETALL answered something other than a hash");
        }
        return r.reply.get();
    }

    cluster_client::options redis_;
    std::string prefix_;
    std::vector<interval> intervals_;
    std::mutex mutex_;
    std::vector<std::unique_ptr<cluster_client>> idle_;
};

} // namespace tradeagg::redis
