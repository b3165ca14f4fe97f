#pragma once
// The Redis key and field contract of the Redis sink: key names, hash fields, and how values
// are written as text. Needs neither hiredis nor Asio, so readers of the keys (tests, servers,
// other languages' clients) can share it.
//
// (Hash slots are in slots.hpp, the partition-stream contract in stream_entry.hpp.)
//
// Keys, with a prefix (default "tradeagg") and the token inside a Redis Cluster hash tag so that
// one token's keys live on one slot:
//   <prefix>:{<token>}:candle:<interval>:<open_time_ms>   hash, `candle_fields`
//   <prefix>:{<token>}:rolling:24h                        hash, `rolling_fields`
//   <prefix>:{<token>}:latest                             hash, `latest_fields`
//   <prefix>:tokens                                       set of token names: what readers list
//                                                         the tokens by (added by the stream
//                                                         consumer and the example server when
//                                                         they first write a token; the Redis
//                                                         sink alone does not)
// Numbers are decimal text: doubles in the shortest form that reads back as the same double,
// integers exactly; `closed` is 0 or 1 and `side` is "buy" or "sell".

#include <algorithm>
#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include <tradeagg/candle.hpp>
#include <tradeagg/config.hpp>
#include <tradeagg/interval.hpp>
#include <tradeagg/rolling_window.hpp>
#include <tradeagg/sink.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg::redis {

/// A number as Redis stores it, held inline (no allocation): integers in decimal, doubles in the
/// shortest text that reads back (`std::from_chars`) as exactly the same double.
class number_text {
public:
    number_text() = default;
    explicit number_text(double v) noexcept { set(v); }
    explicit number_text(std::uint64_t v) noexcept { set(v); }
    explicit number_text(std::int64_t v) noexcept { set(v); }

    void set(double v) noexcept { size_ = write(v); }
    void set(std::uint64_t v) noexcept { size_ = write(v); }
    void set(std::int64_t v) noexcept { size_ = write(v); }

    [[nodiscard]] std::string_view view() const noexcept { return {text_.data(), size_}; }

private:
    template <class T>
    std::size_t write(T v) noexcept {
        const auto r = std::to_chars(text_.data(), text_.data() + text_.size(), v);
        return static_cast<std::size_t>(r.ptr - text_.data());
    }

    std::array<char, 32> text_{}; // the longest double, "-2.2250738585072014e-308", is 24
    std::size_t size_ = 0;
};

/// Fields of a candle hash, in the order they are written.
inline constexpr std::array<std::string_view, 15> candle_fields{"open",
                                                                "high",
                                                                "low",
                                                                "close",
                                                                "volume",
                                                                "quote_volume",
                                                                "trades",
                                                                "taker_buy_volume",
                                                                "taker_buy_quote_volume",
                                                                "vwap",
                                                                "open_time",
                                                                "close_time",
                                                                "first_trade_id",
                                                                "last_trade_id",
                                                                "closed"};

/// Fields of the rolling 24 h hash, in the order they are written.
inline constexpr std::array<std::string_view, 12> rolling_fields{
    "open",         "high",      "low",    "last",         "volume",
    "quote_volume", "vwap",      "trades", "price_change", "price_change_percent",
    "window_start", "window_end"};

/// Fields of the latest-trade hash, in the order they are written.
inline constexpr std::array<std::string_view, 5> latest_fields{"price", "quantity", "side", "ts",
                                                               "trade_id"};

/// Calls `f(field, text)` for every field of a candle hash, in `candle_fields` order. Never
/// allocates.
template <class F>
void for_each_field(const candle& c, F&& f) {
    f(candle_fields[0], number_text(c.open).view());
    f(candle_fields[1], number_text(c.high).view());
    f(candle_fields[2], number_text(c.low).view());
    f(candle_fields[3], number_text(c.close).view());
    f(candle_fields[4], number_text(c.volume).view());
    f(candle_fields[5], number_text(c.quote_volume).view());
    f(candle_fields[6], number_text(c.trades).view());
    f(candle_fields[7], number_text(c.taker_buy_volume).view());
    f(candle_fields[8], number_text(c.taker_buy_quote_volume).view());
    f(candle_fields[9], number_text(c.vwap()).view());
    f(candle_fields[10], number_text(c.open_time).view());
    f(candle_fields[11], number_text(c.close_time).view());
    f(candle_fields[12], number_text(c.first_trade_id).view());
    f(candle_fields[13], number_text(c.last_trade_id).view());
    f(candle_fields[14], std::string_view(c.closed ? "1" : "0"));
}

/// Calls `f(field, text)` for every field of the rolling hash, in `rolling_fields` order.
template <class F>
void for_each_field(const rolling_stats& r, F&& f) {
    f(rolling_fields[0], number_text(r.open).view());
    f(rolling_fields[1], number_text(r.high).view());
    f(rolling_fields[2], number_text(r.low).view());
    f(rolling_fields[3], number_text(r.last).view());
    f(rolling_fields[4], number_text(r.volume).view());
    f(rolling_fields[5], number_text(r.quote_volume).view());
    f(rolling_fields[6], number_text(r.vwap).view());
    f(rolling_fields[7], number_text(r.trades).view());
    f(rolling_fields[8], number_text(r.price_change).view());
    f(rolling_fields[9], number_text(r.price_change_percent).view());
    f(rolling_fields[10], number_text(r.window_start).view());
    f(rolling_fields[11], number_text(r.window_end).view());
}

/// Calls `f(field, text)` for every field of the latest-trade hash, in `latest_fields` order.
template <class F>
void for_each_field(const latest_trade& l, F&& f) {
    f(latest_fields[0], number_text(l.price).view());
    f(latest_fields[1], number_text(l.quantity).view());
    f(latest_fields[2], to_string(l.taker));
    f(latest_fields[3], number_text(l.ts_ms).view());
    f(latest_fields[4], number_text(l.id).view());
}

/// Appends `<prefix>:{<token>}:` to `out`.
inline void append_token_part(std::string& out, std::string_view prefix, std::string_view token) {
    out.append(prefix);
    out.append(":{");
    out.append(token);
    out.append("}:");
}

/// `<prefix>:{<token>}:candle:<interval>:<open_time_ms>`. Allocates.
[[nodiscard]] inline std::string candle_key(std::string_view prefix, std::string_view token,
                                            interval width, timestamp_ms open_time) {
    std::string key;
    key.reserve(prefix.size() + token.size() + 40);
    append_token_part(key, prefix, token);
    key.append("candle:");
    key.append(interval_name(width).view());
    key.push_back(':');
    key.append(number_text(open_time).view());
    return key;
}

/// How long a candle key lives after a write, in ms: `retention` intervals of `width_ms`, at
/// least 1 ms and at most 2^50 ms.
[[nodiscard]] constexpr std::uint64_t candle_ttl_ms(std::uint64_t retention,
                                                    std::int64_t width_ms) noexcept {
    const auto width = static_cast<std::uint64_t>(width_ms);
    return width > 0 && retention > (std::uint64_t{1} << 50) / width
               ? (std::uint64_t{1} << 50)
               : std::max<std::uint64_t>(retention * width, 1);
}

/// `<prefix>:{<token>}:rolling:24h`. Allocates.
[[nodiscard]] inline std::string rolling_key(std::string_view prefix, std::string_view token) {
    std::string key;
    append_token_part(key, prefix, token);
    key.append("rolling:24h");
    return key;
}

/// `<prefix>:{<token>}:latest`. Allocates.
[[nodiscard]] inline std::string latest_key(std::string_view prefix, std::string_view token) {
    std::string key;
    append_token_part(key, prefix, token);
    key.append("latest");
    return key;
}

/// `<prefix>:tokens`, the set of token names. Allocates.
[[nodiscard]] inline std::string tokens_key(std::string_view prefix) {
    std::string key(prefix);
    key.append(":tokens");
    return key;
}

} // namespace tradeagg::redis
