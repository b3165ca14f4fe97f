#pragma once
// The partition-stream contract of stream ingest: which partition a token belongs to, the
// partition's keys, the fields of a trade entry, and stream entry ids. Needs neither hiredis
// nor Asio, so producers in any language (and the load generator) can share it.
//
// Producers append trades to N partition streams, a token's trades always to the same one, in
// order; server instances read the partitions they hold a lease on. A partition's stream and
// lease share the hash tag {p<k>}, so they live on one cluster slot:
//   <prefix>:trades:{p<k>}    stream of trade entries, fields `trade_entry_fields`
//   <prefix>:lease:{p<k>}     string: the holder and epoch of partition k's lease

#include <array>
#include <charconv>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include <tradeagg/config.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg::redis {

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

/// The trade of a trade entry's six field texts (`trade_entry_fields` order; nothing for a
/// missing one). A missing, malformed or invalid field gives nothing and `why` names it; the
/// token views `texts[0]`. Never allocates.
[[nodiscard]] inline std::optional<trade_view>
trade_from_texts(const std::array<std::optional<std::string_view>, 6>& texts,
                 std::string_view& why) {
    const auto number = [&](std::size_t k, auto& out) {
        const std::optional<std::string_view>& text = texts[k];
        if (!text || text->empty()) {
            why = trade_entry_fields[k];
            return false;
        }
        const auto r = std::from_chars(text->data(), text->data() + text->size(), out);
        if (r.ec != std::errc{} || r.ptr != text->data() + text->size()) {
            why = trade_entry_fields[k];
            return false;
        }
        return true;
    };
    trade_view t;
    if (!texts[0]) {
        why = trade_entry_fields[0];
        return std::nullopt;
    }
    t.token = *texts[0];
    if (!number(1, t.price) || !number(2, t.quantity) || !number(4, t.ts_ms) || !number(5, t.id)) {
        return std::nullopt;
    }
    const std::optional<side> taker = texts[3] ? parse_side(*texts[3]) : std::nullopt;
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

/// The trade a stream entry holds, given `field(name)` that returns the text of a field (or
/// nothing when the entry lacks it). A missing, malformed or invalid field gives nothing and
/// `why` names it; the token views `field`'s storage. Never allocates.
template <class Field>
[[nodiscard]] std::optional<trade_view> trade_from_entry(Field&& field, std::string_view& why) {
    std::array<std::optional<std::string_view>, 6> texts;
    for (std::size_t k = 0; k < texts.size(); ++k) {
        texts[k] = field(trade_entry_fields[k]);
    }
    return trade_from_texts(texts, why);
}

// Packed entries (format 1). One entry may carry many trades: two fields,
//   format   "1"
//   trades   records separated by '\n' (a final one optional), each a trade's six fields in
//            `trade_entry_fields` order separated by one space, e.g.
//            "So11111111111111111111111111111111111111112 101.5 2 buy 1733011200000 7"
// Tokens hold no spaces (`validate_token`), so the records read back unambiguously. An entry
// without a `format` field is a single-trade entry; both kinds may be mixed in one stream. A
// packed entry is applied whole or not at all: one bad record makes the entry invalid. Its
// trades share the entry's id, and are applied in record order.
inline constexpr std::string_view packed_format_field = "format";
inline constexpr std::string_view packed_format = "1";
inline constexpr std::string_view packed_trades_field = "trades";

/// Appends `t` as one record of a packed entry's `trades` field. Allocates as `out` grows.
inline void append_packed(std::string& out, const trade_view& t) {
    if (!out.empty()) {
        out.push_back('\n');
    }
    bool first = true;
    for_each_field(t, [&](std::string_view, std::string_view text) {
        if (!first) {
            out.push_back(' ');
        }
        first = false;
        out.append(text);
    });
}

/// Reads a packed entry's `trades` text, calling `take(trade_view)` for each record in order
/// (the views point into `text`). Returns "" if every record is a valid trade; otherwise why
/// the first bad one is not (e.g. "record 3: price"), in `reason`'s storage, after having
/// called `take` for the records before it. Allocates only the reason.
template <class Take>
[[nodiscard]] std::string_view read_packed(std::string_view text, std::string& reason,
                                           Take&& take) {
    if (text.empty()) {
        reason = "no trades";
        return reason;
    }
    std::size_t record = 0;
    std::size_t at = 0;
    while (at < text.size()) {
        ++record;
        std::size_t end = text.find('\n', at);
        if (end == std::string_view::npos) {
            end = text.size();
        }
        const std::string_view line = text.substr(at, end - at);
        at = end + 1;
        std::array<std::optional<std::string_view>, 6> texts;
        std::size_t k = 0;
        std::size_t from = 0;
        bool extra = false;
        while (from <= line.size()) {
            std::size_t space = line.find(' ', from);
            if (space == std::string_view::npos) {
                space = line.size();
            }
            if (k == texts.size()) {
                extra = true;
                break;
            }
            texts[k++] = line.substr(from, space - from);
            from = space + 1;
        }
        std::string_view why;
        const std::optional<trade_view> t = extra ? std::nullopt : trade_from_texts(texts, why);
        if (!t) {
            reason = "record " + std::to_string(record) + ": " +
                     std::string(extra ? "more than six fields" : why);
            return reason;
        }
        take(*t);
    }
    return {};
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
