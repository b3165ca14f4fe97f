#pragma once
// A candle (Binance kline parity) and the accumulator that builds one from trades in any order.

#include <cstdint>

#include <tradeagg/config.hpp>
#include <tradeagg/detail/compensated_sum.hpp>
#include <tradeagg/interval.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg {

/// One interval's aggregate for one token: the fields of a Binance kline.
///
/// `open`/`first_trade_id` come from the trade with the smallest (event time, trade id) and
/// `close`/`last_trade_id` from the largest, so a candle does not depend on arrival order.
/// `closed` is set once the token's event-time watermark reaches `close_time + 1`; a closed
/// candle may still change (and is emitted again) while a trade arrives within the policy's
/// allowed lateness.
struct candle {
    timestamp_ms open_time = 0;  ///< bucket start, aligned to the epoch
    timestamp_ms close_time = 0; ///< open_time + width - 1, as Binance reports it
    double open = 0.0;
    double high = 0.0;
    double low = 0.0;
    double close = 0.0;
    double volume = 0.0;       ///< sum of quantity
    double quote_volume = 0.0; ///< sum of price * quantity
    std::uint64_t trades = 0;
    double taker_buy_volume = 0.0;
    double taker_buy_quote_volume = 0.0;
    std::uint64_t first_trade_id = 0;
    std::uint64_t last_trade_id = 0;
    bool closed = false;

    /// Every field equal, exactly (doubles by value): what a restored or re-read candle must be.
    friend constexpr bool operator==(const candle&, const candle&) noexcept = default;

    /// Volume-weighted average price: quote_volume / volume (0 for an empty candle).
    [[nodiscard]] constexpr double vwap() const noexcept {
        return volume > 0.0 ? quote_volume / volume : 0.0;
    }
};

namespace detail {

/// Orders trades by (event time, trade id): the order that decides open and close.
struct trade_key {
    timestamp_ms ts = 0;
    std::uint64_t id = 0;
    friend constexpr bool operator<(const trade_key& a, const trade_key& b) noexcept {
        return a.ts < b.ts || (a.ts == b.ts && a.id < b.id);
    }
};

/// Prices at the two ends of a run of trades, extremes and sums. Runs that follow each other in
/// time combine without ordering keys (`extend`): rolling-window sub-buckets are kept so.
struct price_summary {
    double open = 0.0;
    double high = 0.0;
    double low = 0.0;
    double close = 0.0;
    compensated_sum volume;
    compensated_sum quote_volume;
    std::uint64_t trades = 0;

    /// Appends a non-empty run that comes after this one in time.
    constexpr void extend(const price_summary& later) noexcept {
        close = later.close;
        absorb(later);
    }

protected:
    /// Extremes and sums of another non-empty run; the ends are the caller's business.
    constexpr void absorb(const price_summary& o) noexcept {
        high = o.high > high ? o.high : high;
        low = o.low < low ? o.low : low;
        volume.merge(o.volume);
        quote_volume.merge(o.quote_volume);
        trades += o.trades;
    }
};

/// OHLC and sums of a set of trades, insensitive to the order they are added in: the ends are
/// the trades with the smallest and largest (event time, trade id).
struct ohlc_accumulator : price_summary {
    trade_key first;
    trade_key last;

    constexpr void reset(const trade& t, double quote) noexcept {
        first = last = trade_key{t.ts_ms, t.id};
        open = high = low = close = t.price;
        volume = compensated_sum{t.quantity, 0.0};
        quote_volume = compensated_sum{quote, 0.0};
        trades = 1;
    }

    constexpr void add(const trade& t, double quote) noexcept {
        const trade_key k{t.ts_ms, t.id};
        if (k < first) {
            first = k;
            open = t.price;
        }
        if (last < k) {
            last = k;
            close = t.price;
        }
        high = t.price > high ? t.price : high;
        low = t.price < low ? t.price : low;
        volume.add(t.quantity);
        quote_volume.add(quote);
        ++trades;
    }

    /// Folds in another non-empty accumulator, from any time.
    constexpr void merge(const ohlc_accumulator& o) noexcept {
        if (o.first < first) {
            first = o.first;
            open = o.open;
        }
        if (last < o.last) {
            last = o.last;
            close = o.close;
        }
        absorb(o);
    }
};

/// The sums and extremes of one bucket's trades.
struct candle_accumulator {
    ohlc_accumulator ohlc;
    compensated_sum taker_buy_volume;
    compensated_sum taker_buy_quote_volume;

    [[nodiscard]] constexpr bool empty() const noexcept { return ohlc.trades == 0; }

    constexpr void reset(const trade& t) noexcept {
        const double quote = t.price * t.quantity;
        ohlc.reset(t, quote);
        const bool buy = t.taker == side::buy;
        taker_buy_volume = compensated_sum{buy ? t.quantity : 0.0, 0.0};
        taker_buy_quote_volume = compensated_sum{buy ? quote : 0.0, 0.0};
    }

    constexpr void add(const trade& t) noexcept {
        const double quote = t.price * t.quantity;
        ohlc.add(t, quote);
        if (t.taker == side::buy) {
            taker_buy_volume.add(t.quantity);
            taker_buy_quote_volume.add(quote);
        }
    }

    /// Folds in another accumulator; either may be empty.
    constexpr void merge(const candle_accumulator& o) noexcept {
        if (o.empty()) {
            return;
        }
        if (empty()) {
            *this = o;
            return;
        }
        ohlc.merge(o.ohlc);
        taker_buy_volume.merge(o.taker_buy_volume);
        taker_buy_quote_volume.merge(o.taker_buy_quote_volume);
    }

    [[nodiscard]] constexpr candle snapshot(timestamp_ms open_time, std::int64_t width_ms,
                                            bool closed) const noexcept {
        candle c;
        c.open_time = open_time;
        c.close_time = open_time + width_ms - 1;
        c.open = ohlc.open;
        c.high = ohlc.high;
        c.low = ohlc.low;
        c.close = ohlc.close;
        c.volume = ohlc.volume.value();
        c.quote_volume = ohlc.quote_volume.value();
        c.trades = ohlc.trades;
        c.taker_buy_volume = taker_buy_volume.value();
        c.taker_buy_quote_volume = taker_buy_quote_volume.value();
        c.first_trade_id = ohlc.first.id;
        c.last_trade_id = ohlc.last.id;
        c.closed = closed;
        return c;
    }
};

} // namespace detail
} // namespace tradeagg
