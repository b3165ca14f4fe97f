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
