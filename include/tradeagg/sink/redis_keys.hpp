#pragma once
// The Redis key and field contract of the Redis sink: key names, hash fields, and how values
// are written as text. Needs neither hiredis nor Asio, so readers of the keys (tests, servers,
// other languages' clients) can share it.
//
// Keys, with a prefix (default "tradeagg") and the token inside a Redis Cluster hash tag so that
// one token's keys live on one slot:
//   <prefix>:{<token>}:candle:<interval>:<open_time_ms>   hash, `candle_fields`
//   <prefix>:{<token>}:rolling:24h                        hash, `rolling_fields`
//   <prefix>:{<token>}:latest                             hash, `latest_fields`
// Numbers are decimal text: doubles in the shortest form that reads back as the same double,
// integers exactly; `closed` is 0 or 1 and `side` is "buy" or "sell".

#include <algorithm>
#include <array>
#include <charconv>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <optional>
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

// ---- Redis Cluster hash slots ---------------------------------------------------------------

/// The number of hash slots of a Redis Cluster.
inline constexpr std::size_t cluster_slot_count = 16'384;

/// CRC16-CCITT in its XMODEM form (polynomial 0x1021, initial value 0, no reflection), the
/// checksum Redis Cluster hashes keys with. crc16("123456789") == 0x31C3.
[[nodiscard]] constexpr std::uint16_t crc16_xmodem(std::string_view bytes) noexcept {
    std::uint32_t crc = 0;
    for (const char c : bytes) {
        crc ^= static_cast<std::uint32_t>(static_cast<unsigned char>(c)) << 8;
        for (int bit = 0; bit < 8; ++bit) {
            crc = (crc & 0x8000u) != 0 ? (crc << 1) ^ 0x1021u : crc << 1;
        }
    }
    return static_cast<std::uint16_t>(crc & 0xFFFFu);
}

/// The hash slot of `key`, as the cluster specification defines it: if the key holds a '{'
/// followed, later, by a '}' with at least one byte between them, only the bytes between the
/// first '{' and the first '}' after it are hashed (the hash tag); otherwise the whole key.
[[nodiscard]] constexpr std::uint16_t key_slot(std::string_view key) noexcept {
    const auto open = key.find('{');
    if (open != std::string_view::npos) {
        const auto close = key.find('}', open + 1);
        if (close != std::string_view::npos && close > open + 1) {
            key = key.substr(open + 1, close - open - 1);
        }
    }
    return static_cast<std::uint16_t>(crc16_xmodem(key) % cluster_slot_count);
}

/// The slot of every key of `token`: the token is each key's hash tag (prefixes and tokens hold
/// no braces), so a token's candles, rolling window and latest trade share one slot and can be
/// written in one MULTI.
[[nodiscard]] constexpr std::uint16_t token_slot(std::string_view token) noexcept {
    return static_cast<std::uint16_t>(crc16_xmodem(token) % cluster_slot_count);
}

// ---- Streams ingest: partitions, leases and trade entries ------------------------------------
//
// Producers append trades to N partition streams, a token's trades always to the same one, in
// order; server instances read the partitions they hold a lease on. A partition's stream and
// lease share the hash tag {p<k>}, so they live on one cluster slot:
//   <prefix>:trades:{p<k>}    stream of trade entries, fields `trade_entry_fields`
//   <prefix>:lease:{p<k>}     string: the holder and epoch of partition k's lease

/// The partition of `token` among `partitions` (> 0): CRC16/XMODEM of the token modulo the
/// count, which any client can compute.
[[nodiscard]] constexpr std::size_t partition_of(std::string_view token,
                                                 std::size_t partitions) noexcept {
    return partitions == 0 ? 0 : crc16_xmodem(token) % partitions;
}

/// `<prefix>:<kind>:{p<partition>}`: a key of the partition, in the partition's slot. Allocates.
[[nodiscard]] inline std::string partition_key(std::string_view prefix, std::string_view kind,
                                               std::size_t partition) {
    std::string key(prefix);
    key.push_back(':');
    key.append(kind);
    key.append(":{p");
    key.append(number_text(static_cast<std::uint64_t>(partition)).view());
    key.push_back('}');
    return key;
}

/// `<prefix>:trades:{p<partition>}`. Allocates.
[[nodiscard]] inline std::string stream_key(std::string_view prefix, std::size_t partition) {
    return partition_key(prefix, "trades", partition);
}

/// `<prefix>:lease:{p<partition>}`. Allocates.
[[nodiscard]] inline std::string lease_key(std::string_view prefix, std::size_t partition) {
    return partition_key(prefix, "lease", partition);
}

/// Fields of a trade entry in a partition stream, in the order they are written.
inline constexpr std::array<std::string_view, 6> trade_entry_fields{"token", "price", "quantity",
                                                                    "side",  "ts",    "id"};

/// Calls `f(field, text)` for every field of a trade entry, in `trade_entry_fields` order.
template <class F>
void for_each_field(const trade_view& t, F&& f) {
    f(trade_entry_fields[0], t.token);
    f(trade_entry_fields[1], number_text(t.price).view());
    f(trade_entry_fields[2], number_text(t.quantity).view());
    f(trade_entry_fields[3], to_string(t.taker));
    f(trade_entry_fields[4], number_text(t.ts_ms).view());
    f(trade_entry_fields[5], number_text(t.id).view());
}

/// The trade a stream entry holds, given `field(name)` that returns the text of a field (or
/// nothing when the entry lacks it). A missing, malformed or invalid field gives nothing and
/// `why` names it; the token views `field`'s storage. Never allocates.
template <class Field>
[[nodiscard]] std::optional<trade_view> trade_from_entry(Field&& field, std::string_view& why) {
    const auto number = [&](std::string_view name, auto& out) {
        const std::optional<std::string_view> text = field(name);
        if (!text || text->empty()) {
            why = name;
            return false;
        }
        const auto r = std::from_chars(text->data(), text->data() + text->size(), out);
        if (r.ec != std::errc{} || r.ptr != text->data() + text->size()) {
            why = name;
            return false;
        }
        return true;
    };
    trade_view t;
    const std::optional<std::string_view> token = field(trade_entry_fields[0]);
    if (!token) {
        why = trade_entry_fields[0];
        return std::nullopt;
    }
    t.token = *token;
    if (!number(trade_entry_fields[1], t.price) || !number(trade_entry_fields[2], t.quantity) ||
        !number(trade_entry_fields[4], t.ts_ms) || !number(trade_entry_fields[5], t.id)) {
        return std::nullopt;
    }
    const std::optional<std::string_view> side_text = field(trade_entry_fields[3]);
    const std::optional<side> taker = side_text ? parse_side(*side_text) : std::nullopt;
    if (!taker) {
        why = trade_entry_fields[3];
        return std::nullopt;
    }
    t.taker = *taker;
    if (const reject_reason r = validate(t); r != reject_reason::none) {
        why = to_string(r);
        return std::nullopt;
    }
    return t;
}

/// A stream entry id, `<ms>-<seq>`, ordered as Redis orders them.
struct stream_id {
    std::uint64_t ms = 0;
    std::uint64_t seq = 0;

    /// Reads `<ms>-<seq>` (or `<ms>`, sequence 0); nothing for anything else.
    [[nodiscard]] static std::optional<stream_id> parse(std::string_view text) noexcept {
        stream_id id;
        const auto dash = text.find('-');
        const std::string_view ms = text.substr(0, dash);
        auto r = std::from_chars(ms.data(), ms.data() + ms.size(), id.ms);
        if (ms.empty() || r.ec != std::errc{} || r.ptr != ms.data() + ms.size()) {
            return std::nullopt;
        }
        if (dash != std::string_view::npos) {
            const std::string_view seq = text.substr(dash + 1);
            r = std::from_chars(seq.data(), seq.data() + seq.size(), id.seq);
            if (seq.empty() || r.ec != std::errc{} || r.ptr != seq.data() + seq.size()) {
                return std::nullopt;
            }
        }
        return id;
    }

    /// `<ms>-<seq>`. Allocates.
    [[nodiscard]] std::string text() const {
        return std::string(number_text(ms).view()) + "-" + std::string(number_text(seq).view());
    }

    friend constexpr auto operator<=>(const stream_id&, const stream_id&) noexcept = default;
};

} // namespace tradeagg::redis
