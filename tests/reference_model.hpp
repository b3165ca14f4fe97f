#pragma once
// The oracle: a single-threaded aggregator written for obviousness, not speed. It keeps every
// accepted trade and computes each aggregate from scratch when asked.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <tradeagg/tradeagg.hpp>

namespace tradeagg::testing {

template <class Policy>
class reference_model {
public:
    struct token_data {
        std::vector<trade> accepted;
        timestamp_ms watermark = std::numeric_limits<timestamp_ms>::min();
        std::uint64_t late = 0;
    };

    /// Feeds one trade in the order the token's producer pushed it.
    void push(const std::string& token, const trade& t) {
        token_data& d = tokens_[token];
        const std::int64_t w0 = Policy::intervals[0].count();
        const timestamp_ms finest_end = t.ts_ms - t.ts_ms % w0 + w0;
        if (!d.accepted.empty() && d.watermark >= finest_end + Policy::allowed_lateness.count()) {
            ++d.late;
            ++late_total_;
            return;
        }
        d.accepted.push_back(t);
        d.watermark = std::max(d.watermark, t.ts_ms);
    }

    [[nodiscard]] const std::map<std::string, token_data>& tokens() const { return tokens_; }
    [[nodiscard]] std::uint64_t late_total() const { return late_total_; }

    /// Every candle of the token for one interval, by open time.
    [[nodiscard]] std::vector<candle> candles(const std::string& token, interval width) const {
        const token_data& d = tokens_.at(token);
        std::map<timestamp_ms, std::vector<trade>> buckets;
        for (const trade& t : d.accepted) {
            buckets[t.ts_ms - t.ts_ms % width.count()].push_back(t);
        }
        std::vector<candle> out;
        for (auto& [open_time, trades] : buckets) {
            const summary sm = summarize(trades);
            candle c;
            c.open_time = open_time;
            c.close_time = open_time + width.count() - 1;
            c.open = sm.open;
            c.high = sm.high;
            c.low = sm.low;
            c.close = sm.close;
            c.first_trade_id = sm.first_id;
            c.last_trade_id = sm.last_id;
            c.volume = sm.volume;
            c.quote_volume = sm.quote_volume;
            c.taker_buy_volume = sm.buy_volume;
            c.taker_buy_quote_volume = sm.buy_quote_volume;
            c.trades = sm.trades;
            c.closed = d.watermark >= open_time + width.count();
            out.push_back(c);
        }
        return out;
    }

    /// Rolling 24 h statistics as of the token's final watermark.
    [[nodiscard]] rolling_stats rolling(const std::string& token) const {
        const token_data& d = tokens_.at(token);
        const std::int64_t bucket = Policy::rolling_bucket.count();
        const std::int64_t lowest =
            d.watermark / bucket - rolling_window_length.count() / bucket + 1;
        std::vector<trade> in;
        for (const trade& t : d.accepted) {
            if (t.ts_ms / bucket >= lowest) {
                in.push_back(t);
            }
        }
        rolling_stats r;
        r.window_start = lowest * bucket;
        r.window_end = d.watermark;
        if (in.empty()) {
            return r;
        }
        const summary sm = summarize(in);
        r.open = sm.open;
        r.last = sm.close;
        r.high = sm.high;
        r.low = sm.low;
        r.volume = sm.volume;
        r.quote_volume = sm.quote_volume;
        r.vwap = r.quote_volume / r.volume;
        r.trades = sm.trades;
        r.price_change = r.last - r.open;
        r.price_change_percent = 100.0 * r.price_change / r.open;
        return r;
    }

    /// The latest trade by (event time, id).
    [[nodiscard]] latest_trade latest(const std::string& token) const {
        const token_data& d = tokens_.at(token);
        const trade t = *std::max_element(d.accepted.begin(), d.accepted.end(), by_time_then_id);
        return latest_trade{t.price, t.quantity, t.taker, t.ts_ms, t.id};
    }

private:
    struct summary {
        double open = 0, high = 0, low = 0, close = 0;
        double volume = 0, quote_volume = 0, buy_volume = 0, buy_quote_volume = 0;
        std::uint64_t first_id = 0, last_id = 0, trades = 0;
    };

    /// Sorts a non-empty set of trades by (time, id) and sums it in long double.
    static summary summarize(std::vector<trade>& trades) {
        std::sort(trades.begin(), trades.end(), by_time_then_id);
        summary sm;
        sm.open = trades.front().price;
        sm.close = trades.back().price;
        sm.first_id = trades.front().id;
        sm.last_id = trades.back().id;
        sm.high = sm.low = sm.open;
        long double volume = 0;
        long double quote = 0;
        long double buy_volume = 0;
        long double buy_quote = 0;
        for (const trade& t : trades) {
            sm.high = std::max(sm.high, t.price);
            sm.low = std::min(sm.low, t.price);
            volume += t.quantity;
            quote += static_cast<long double>(t.price * t.quantity);
            if (t.taker == side::buy) {
                buy_volume += t.quantity;
                buy_quote += static_cast<long double>(t.price * t.quantity);
            }
        }
        sm.volume = static_cast<double>(volume);
        sm.quote_volume = static_cast<double>(quote);
        sm.buy_volume = static_cast<double>(buy_volume);
        sm.buy_quote_volume = static_cast<double>(buy_quote);
        sm.trades = trades.size();
        return sm;
    }

    static bool by_time_then_id(const trade& a, const trade& b) {
        return a.ts_ms != b.ts_ms ? a.ts_ms < b.ts_ms : a.id < b.id;
    }

    std::map<std::string, token_data> tokens_;
    std::uint64_t late_total_ = 0;
};

} // namespace tradeagg::testing
