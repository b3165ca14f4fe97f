#pragma once
// The fast path of the trade parser: the common shape of a trade object, read without a general
// JSON parser. A trade written the plain way (ASCII strings without escapes, the six fields
// once each, numbers as JSON writes them) is read here with one pass over its bytes and one
// correctly rounded conversion per price and quantity. Anything else, valid or not, makes the
// scanner give up before it changes the batch, and the caller hands the text to Boost.JSON
// (trade_parser.hpp), which accepts it or says why not: every refusal, and every error message,
// comes from the one parser, and the scanner only ever accepts what that parser accepts, with
// the same values (checked by tests/test_trade_parser.cpp and fuzz/fuzz_trade_parser.cpp,
// which run both on the same inputs).

#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>
#include <system_error>

#include <tradeagg/trade.hpp>

#include "trade_batch.hpp"

namespace aggregator::detail {

/// The six fields of a trade object, in the order a missing one is reported.
enum class trade_field : std::uint8_t { token, price, quantity, side, ts, id, none };

inline constexpr std::array<std::string_view, 6> trade_field_names{"token", "price", "quantity",
                                                                   "side",  "ts",    "id"};

inline constexpr std::uint8_t all_fields_seen = (1U << trade_field_names.size()) - 1U;

[[nodiscard]] inline trade_field find_field(std::string_view key) noexcept {
    // First by length, so that a key costs one or two comparisons.
    switch (key.size()) {
    case 2:
        return key == "ts" ? trade_field::ts : key == "id" ? trade_field::id : trade_field::none;
    case 4:
        return key == "side" ? trade_field::side : trade_field::none;
    case 5:
        return key == "token"   ? trade_field::token
               : key == "price" ? trade_field::price
                                : trade_field::none;
    case 8:
        return key == "quantity" ? trade_field::quantity : trade_field::none;
    default:
        return trade_field::none;
    }
}

/// Reads plainly written trades into a batch: a whole JSON array body, or one NDJSON line.
/// Gives up (returns false) on any other text, valid or not, leaving the batch as it was; the
/// caller then parses the same text with Boost.JSON. Stateless: threads may scan at once into
/// distinct batches.
class trade_scanner {
public:
    /// Reads a JSON array body whole; false (and `out` emptied) when it gives up.
    static bool read_array(std::string_view body, trade_batch& out, std::size_t max_trades) {
        trade_scanner scan(body.data(), body.data() + body.size());
        scan.skip_space();
        if (!scan.take('[')) {
            return false;
        }
        scan.skip_space();
        if (!scan.take(']')) {
            do {
                scan.skip_space();
                if (!scan.object(out, max_trades)) {
                    out.clear();
                    return false;
                }
                scan.skip_space();
            } while (scan.take(','));
            if (!scan.take(']')) {
                out.clear();
                return false;
            }
        }
        scan.skip_space();
        if (!scan.at_end()) {
            out.clear();
            return false;
        }
        return true;
    }

    /// Reads one NDJSON line as one trade, appended to `out`; false (and `out` as it was)
    /// when it gives up.
    static bool read_line(std::string_view line, trade_batch& out, std::size_t max_trades) {
        trade_scanner scan(line.data(), line.data() + line.size());
        scan.skip_space();
        if (!scan.object(out, max_trades)) {
            return false;
        }
        scan.skip_space();
        if (!scan.at_end()) {
            out.drop_last(1);
            return false;
        }
        return true;
    }

    /// Points the trades' tokens into the batch's storage, once the whole body is read (by
    /// either reader).
    static void finish(trade_batch& out) noexcept { out.point_tokens(); }

private:
    trade_scanner(const char* begin, const char* end) noexcept : p_(begin), end_(end) {}

    /// True once the cursor reached the end.
    [[nodiscard]] bool at_end() const noexcept { return p_ == end_; }

    /// Skips JSON whitespace.
    void skip_space() noexcept {
        while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\r' || *p_ == '\n')) {
            ++p_;
        }
    }

    /// Consumes `c` if it is next.
    bool take(char c) noexcept {
        if (p_ != end_ && *p_ == c) {
            ++p_;
            return true;
        }
        return false;
    }

    /// Reads one trade object (no leading whitespace) and appends it to `out`, if `out` holds
    /// fewer than `max_trades`. Each step reads one piece of grammar at the cursor; the batch
    /// changes only once the whole object is read.
    bool object(trade_batch& out, std::size_t max_trades) {
        if (out.trades_.size() >= max_trades || !take('{')) {
            return false;
        }
        tradeagg::trade_view t{};
        std::string_view token;
        std::uint8_t seen = 0;
        do {
            skip_space();
            std::string_view key;
            if (!string(key)) {
                return false;
            }
            const trade_field f = find_field(key);
            const auto bit = static_cast<std::uint8_t>(1U << static_cast<unsigned>(f));
            if (f == trade_field::none || (seen & bit) != 0) {
                return false;
            }
            seen = static_cast<std::uint8_t>(seen | bit);
            skip_space();
            if (!take(':')) {
                return false;
            }
            skip_space();
            if (!value(f, t, token)) {
                return false;
            }
            skip_space();
        } while (take(','));
        if (!take('}') || seen != all_fields_seen) {
            return false;
        }
        out.token_offsets_.push_back(out.tokens_.size());
        out.tokens_.insert(out.tokens_.end(), token.begin(), token.end());
        out.trades_.push_back(t);
        return true;
    }

    /// A string of printable ASCII without escapes; its contents in `s`.
    bool string(std::string_view& s) noexcept {
        if (!take('"')) {
            return false;
        }
        const char* const begin = p_;
        for (; p_ != end_; ++p_) {
            const auto c = static_cast<unsigned char>(*p_);
            if (c == '"') {
                s = std::string_view(begin, static_cast<std::size_t>(p_ - begin));
                ++p_;
                return true;
            }
            if (c < 0x20 || c >= 0x7F || c == '\\') {
                return false;
            }
        }
        return false;
    }

    /// A number as JSON's grammar has it, read in one pass: its text, its decimal digits as an
    /// integer (while they fit 64 bits) and the power of ten that scales them.
    struct decimal {
        std::string_view text;
        std::uint64_t digits = 0;  ///< the significand's digits, integer and fraction
        std::int32_t exponent = 0; ///< value = digits x 10^exponent (when `exact`)
        bool negative = false;
        bool plain = true; ///< no sign, fraction or exponent: an integer as written
        bool exact = true; ///< `digits` holds every digit (no 64-bit overflow)
    };

    bool number(decimal& n) noexcept {
        const char* const begin = p_;
        n.negative = take('-');
        n.plain = !n.negative;
        if (take('0')) {
            // no digit may follow a leading zero: the caller sees it as the next token
        } else if (!digits(n, false)) {
            return false;
        }
        if (take('.')) {
            n.plain = false;
            if (!digits(n, true)) {
                return false;
            }
        }
        if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
            ++p_;
            n.plain = false;
            const bool minus = !take('+') && take('-');
            const char* const first = p_;
            std::int32_t e = 0;
            for (; p_ != end_ && *p_ >= '0' && *p_ <= '9'; ++p_) {
                if (e < 100'000) {
                    e = e * 10 + (*p_ - '0');
                }
            }
            if (p_ == first) {
                return false;
            }
            n.exponent += minus ? -e : e;
        }
        n.text = std::string_view(begin, static_cast<std::size_t>(p_ - begin));
        return true;
    }

    /// One or more decimal digits, into `n.digits`; a fraction's also lower `n.exponent`.
    bool digits(decimal& n, bool fraction) noexcept {
        // Locals, not members: the compiler keeps them in registers across the byte loads.
        const char* p = p_;
        const char* const end = end_;
        std::uint64_t value = n.digits;
        bool exact = n.exact;
        // Eight at a time while they last (ids and timestamps are 13 to 20 digits long).
        std::uint64_t eight = 0;
        while (end - p >= 8 && eight_digits(p, eight)) {
            exact = exact && !__builtin_mul_overflow(value, 100'000'000U, &value) &&
                    !__builtin_add_overflow(value, eight, &value);
            p += 8;
        }
        for (; p != end && *p >= '0' && *p <= '9'; ++p) {
            const auto d = static_cast<std::uint64_t>(*p - '0');
            exact = exact && !__builtin_mul_overflow(value, 10U, &value) &&
                    !__builtin_add_overflow(value, d, &value);
        }
        if (fraction) {
            n.exponent -= static_cast<std::int32_t>(p - p_);
        }
        const bool any = p != p_;
        p_ = p;
        n.digits = value;
        n.exact = exact;
        return any;
    }

    /// True when the eight bytes at `p` are all decimal digits; their value in `v`. One load
    /// and a few multiplications (on a little-endian machine; byte by byte otherwise).
    static bool eight_digits(const char* p, std::uint64_t& v) noexcept {
        if constexpr (std::endian::native == std::endian::little) {
            std::uint64_t x = 0;
            std::memcpy(&x, p, sizeof x);
            // Every byte 0x30..0x39: its high nibble is 3, and adding 6 keeps it 3.
            constexpr std::uint64_t high = 0xF0F0F0F0F0F0F0F0ULL;
            if ((x & high) != 0x3030303030303030ULL ||
                ((x + 0x0606060606060606ULL) & high) != 0x3030303030303030ULL) {
                return false;
            }
            x -= 0x3030303030303030ULL;
            // Pairs of digits to 2-digit numbers, then pairs of those to 4 digits, then 8; the
            // first byte is the most significant digit.
            x = (x * 10) + (x >> 8);
            x = (((x & 0x000000FF000000FFULL) * (100 + (1'000'000ULL << 32))) +
                 (((x >> 16) & 0x000000FF000000FFULL) * (1 + (10'000ULL << 32)))) >>
                32;
            v = x;
            return true;
        } else {
            std::uint64_t r = 0;
            for (int i = 0; i < 8; ++i) {
                if (p[i] < '0' || p[i] > '9') {
                    return false;
                }
                r = r * 10 + static_cast<std::uint64_t>(p[i] - '0');
            }
            v = r;
            return true;
        }
    }

    /// The double nearest to `n`'s value. Exact arithmetic when the digits and the power of
    /// ten are both exact doubles (<= 2^53, and 10^0..10^22): one multiplication or division
    /// of two exact doubles is correctly rounded. Otherwise std::from_chars, which rounds
    /// correctly too; false where it reports an error (then Boost.JSON decides).
    static bool to_double(const decimal& n, double& d) noexcept {
        static constexpr double powers[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                            1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
        if (n.exact && n.digits <= (std::uint64_t{1} << 53) && n.exponent >= -22 &&
            n.exponent <= 22) {
            const auto m = static_cast<double>(n.digits);
            d = n.exponent >= 0 ? m * powers[n.exponent] : m / powers[-n.exponent];
            d = n.negative ? -d : d;
            return true;
        }
        const char* const end = n.text.data() + n.text.size();
        const auto [ptr, errc] = std::from_chars(n.text.data(), end, d);
        return errc == std::errc{} && ptr == end;
    }

    /// The value of field `f` into `t` (the token into `token`), when it is valid.
    bool value(trade_field f, tradeagg::trade_view& t, std::string_view& token) {
        std::string_view s;
        decimal n;
        switch (f) {
        case trade_field::token:
            if (!string(s) || tradeagg::validate_token(s) != tradeagg::reject_reason::none) {
                return false;
            }
            token = s;
            return true;
        case trade_field::side: {
            if (!string(s)) {
                return false;
            }
            const std::optional<tradeagg::side> taker = tradeagg::parse_side(s);
            if (!taker) {
                return false;
            }
            t.taker = *taker;
            return true;
        }
        case trade_field::price:
        case trade_field::quantity: {
            // Boost.JSON hands an integer that fits 64 bits over as one, converted to the
            // nearest double; any other number is rounded from its text by std::from_chars.
            // Both are the double nearest the number's value, as is to_double's.
            double d = 0.0;
            if (!number(n) || !to_double(n, d) || !std::isfinite(d) || !(d > 0.0)) {
                return false;
            }
            (f == trade_field::price ? t.price : t.quantity) = d;
            return true;
        }
        case trade_field::ts:
        case trade_field::id:
            if (!number(n) || !n.plain || !n.exact) {
                return false; // negative, not an integer as written, or beyond 64 bits
            }
            if (f == trade_field::id) {
                t.id = n.digits;
                return true;
            }
            if (n.digits > static_cast<std::uint64_t>(tradeagg::max_timestamp_ms)) {
                return false;
            }
            t.ts_ms = static_cast<tradeagg::timestamp_ms>(n.digits);
            return true;
        case trade_field::none:
            break;
        }
        return false;
    }

    const char* p_;
    const char* end_;
};

} // namespace aggregator::detail
