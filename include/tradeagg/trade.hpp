#pragma once
// A trade as producers hand it in, and the checks every trade passes before it is accepted.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include <tradeagg/config.hpp>

namespace tradeagg {

/// The taker's side of a trade: who crossed the spread.
enum class side : std::uint8_t { buy = 0, sell = 1 };

/// Dense id of an interned token; ids are handed out 0, 1, 2, ... by a `token_table`.
using token_id = std::uint32_t;

/// Event time: milliseconds since the Unix epoch (UTC).
using timestamp_ms = std::int64_t;

/// Longest token accepted, in bytes. Symbols are short; a Solana mint address is 44 characters.
inline constexpr std::size_t max_token_length = 64;

/// Latest event time accepted (9999-12-31T23:59:59.999Z); later values are surely corrupt.
inline constexpr timestamp_ms max_timestamp_ms = 253'402'300'799'999;

/// Why a trade was refused at push. `none` means accepted.
enum class reject_reason : std::uint8_t {
    none = 0,
    price_not_finite,       ///< price is NaN or infinite
    price_not_positive,     ///< price <= 0
    quantity_not_finite,    ///< quantity is NaN or infinite
    quantity_not_positive,  ///< quantity <= 0
    unknown_side,           ///< side is neither buy nor sell
    empty_token,            ///< token is the empty string
    token_too_long,         ///< token is longer than `max_token_length`
    invalid_token,          ///< token holds a byte outside printable ASCII, or '{' / '}'
    unknown_token,          ///< a token id that no `token_table` handed out
    timestamp_out_of_range, ///< event time before the epoch or after `max_timestamp_ms`
    token_limit,            ///< a new token would exceed the configured `max_tokens`
    stopped,                ///< the pipeline is stopping or stopped
    memory_limit,           ///< a token without state, while the soft memory limit is reached
    active_token_limit,     ///< a token without state, while `max_active_tokens` have state
};

/// Number of `reject_reason` values, `none` included (for per-reason counters).
inline constexpr std::size_t reject_reason_count = 15;

/// Stable lower-case name of a reject reason, for logs and HTTP errors. Never allocates.
[[nodiscard]] constexpr std::string_view to_string(reject_reason r) noexcept {
    switch (r) {
    case reject_reason::none:
        return "none";
    case reject_reason::price_not_finite:
        return "price_not_finite";
    case reject_reason::price_not_positive:
        return "price_not_positive";
    case reject_reason::quantity_not_finite:
        return "quantity_not_finite";
    case reject_reason::quantity_not_positive:
        return "quantity_not_positive";
    case reject_reason::unknown_side:
        return "unknown_side";
    case reject_reason::empty_token:
        return "empty_token";
    case reject_reason::token_too_long:
        return "token_too_long";
    case reject_reason::invalid_token:
        return "invalid_token";
    case reject_reason::unknown_token:
        return "unknown_token";
    case reject_reason::timestamp_out_of_range:
        return "timestamp_out_of_range";
    case reject_reason::token_limit:
        return "token_limit";
    case reject_reason::stopped:
        return "stopped";
    case reject_reason::memory_limit:
        return "memory_limit";
    case reject_reason::active_token_limit:
        return "active_token_limit";
    }
    return "unknown";
}

/// "buy" or "sell". Never allocates.
[[nodiscard]] constexpr std::string_view to_string(side s) noexcept {
    return s == side::buy ? "buy" : s == side::sell ? "sell" : "unknown";
}

/// Parses "buy"/"sell" (also "BUY"/"SELL", "b"/"s"); anything else is empty.
[[nodiscard]] constexpr std::optional<side> parse_side(std::string_view text) noexcept {
    if (text == "buy" || text == "BUY" || text == "b" || text == "B") {
        return side::buy;
    }
    if (text == "sell" || text == "SELL" || text == "s" || text == "S") {
        return side::sell;
    }
    return std::nullopt;
}

/// A trade at the API edge: the token is still a string.
struct trade_view {
    std::string_view token;
    double price = 0.0;
    double quantity = 0.0;
    side taker = side::buy;
    timestamp_ms ts_ms = 0;
    std::uint64_t id = 0;

    /// Field by field, the token by its text.
    friend bool operator==(const trade_view&, const trade_view&) = default;
};

/// A trade whose token has been interned: what producers that pre-intern push.
struct trade {
    token_id token = 0;
    side taker = side::buy;
    double price = 0.0;
    double quantity = 0.0;
    timestamp_ms ts_ms = 0;
    std::uint64_t id = 0;
};

/// A trade refused by a shard because its bucket closed longer ago than the allowed lateness.
struct late_trade {
    trade t;                    ///< the trade as pushed
    std::string_view token;     ///< its token's string; valid during the callback only
    timestamp_ms watermark = 0; ///< the token's event-time watermark when it arrived
    std::size_t shard = 0;
};

/// Checks a token's spelling (not whether it is known). Never allocates.
[[nodiscard]] constexpr reject_reason validate_token(std::string_view token) noexcept {
    if (token.empty()) {
        return reject_reason::empty_token;
    }
    if (token.size() > max_token_length) {
        return reject_reason::token_too_long;
    }
    for (const char c : token) {
        // Tokens become parts of Redis keys inside a {hash tag}: braces or spaces would split it.
        if (c <= ' ' || c > '~' || c == '{' || c == '}') {
            return reject_reason::invalid_token;
        }
    }
    return reject_reason::none;
}

/// Checks the numeric fields and the side of a trade. Never allocates.
[[nodiscard]] inline reject_reason validate_fields(double price, double quantity, side taker,
                                                   timestamp_ms ts_ms) noexcept {
    if (!std::isfinite(price)) {
        return reject_reason::price_not_finite;
    }
    if (!(price > 0.0)) {
        return reject_reason::price_not_positive;
    }
    if (!std::isfinite(quantity)) {
        return reject_reason::quantity_not_finite;
    }
    if (!(quantity > 0.0)) {
        return reject_reason::quantity_not_positive;
    }
    if (taker != side::buy && taker != side::sell) {
        return reject_reason::unknown_side;
    }
    if (ts_ms < 0 || ts_ms > max_timestamp_ms) {
        return reject_reason::timestamp_out_of_range;
    }
    return reject_reason::none;
}

/// Everything that can be checked about a trade without a token table. Never allocates.
[[nodiscard]] inline reject_reason validate(const trade_view& t) noexcept {
    const reject_reason r = validate_token(t.token);
    return r != reject_reason::none ? r : validate_fields(t.price, t.quantity, t.taker, t.ts_ms);
}

/// Checks an interned trade's fields (the token id is checked by the pipeline). Never allocates.
[[nodiscard]] inline reject_reason validate(const trade& t) noexcept {
    return validate_fields(t.price, t.quantity, t.taker, t.ts_ms);
}

} // namespace tradeagg
