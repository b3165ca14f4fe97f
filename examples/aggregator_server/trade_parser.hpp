#pragma once
// The body of `POST /trades`: a JSON array of trade objects, or NDJSON (one object per line),
// parsed by Boost.JSON's SAX parser straight into `tradeagg::trade_view`s, with no DOM.
//
// A request is checked whole before anything of it is used: the first invalid trade fails the
// parse with that trade's 0-based index and a short, stable, lower-case reason, and the batch
// is left empty.

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <boost/json/basic_parser_impl.hpp>

#include <tradeagg/trade.hpp>

#include "trade_batch.hpp"
#include "trade_scanner.hpp"

namespace aggregator {

namespace detail {

/// Appends `text` to `out` with every byte outside printable ASCII, and the quote, replaced by
/// '?', so that a reason quoting client input is always safe to log and to put in a response.
inline void append_printable(std::string& out, std::string_view text) {
    for (const char c : text) {
        out.push_back(c >= ' ' && c <= '~' && c != '\'' ? c : '?');
    }
}

/// Boost.JSON SAX handler that turns trade objects into `trade_view`s in a `trade_batch`, and
/// stops at the first value that is not a valid part of a trade.
///
/// Unknown fields are refused rather than skipped: a misspelt optional field ("qty") or a field
/// the server does not implement yet would otherwise be silently dropped, and a trade API is
/// safer failing loudly than booking a trade that is not what the client meant.
class trade_handler {
public:
    // Boost.JSON's own limits stay off: the handler bounds what it keeps (tokens, keys, side)
    // itself, with reasons that name the field, and the server bounds the body size.
    static constexpr std::size_t max_array_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_object_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_string_size = static_cast<std::size_t>(-1);
    static constexpr std::size_t max_key_size = static_cast<std::size_t>(-1);

    trade_handler(trade_batch& out, body_format format, std::size_t max_trades) noexcept
        : out_(out), format_(format), max_trades_(max_trades) {}

    /// The index of the trade being parsed: how many are complete.
    [[nodiscard]] std::size_t index() const noexcept { return out_.trades_.size(); }
    /// True when the handler, not the JSON grammar, stopped the parse.
    [[nodiscard]] bool failed() const noexcept { return failed_; }
    /// Why the handler stopped the parse.
    [[nodiscard]] std::string& reason() noexcept { return reason_; }

    bool on_document_begin(boost::json::error_code&) noexcept { return true; }
    bool on_document_end(boost::json::error_code&) noexcept { return true; }

    bool on_array_begin(boost::json::error_code& ec) {
        if (format_ == body_format::json_array && !in_array_ && !in_trade_) {
            in_array_ = true;
            return true;
        }
        return wrong_value(ec);
    }
    bool on_array_end(std::size_t, boost::json::error_code&) noexcept {
        in_array_ = false;
        return true;
    }

    bool on_object_begin(boost::json::error_code& ec) {
        if (in_trade_ || (format_ == body_format::json_array && !in_array_)) {
            return wrong_value(ec);
        }
        if (out_.trades_.size() >= max_trades_) {
            return fail(ec, "too many trades (max " + std::to_string(max_trades_) + ")");
        }
        in_trade_ = true;
        seen_ = 0;
        field_ = trade_field::none;
        trade_ = tradeagg::trade_view{};
        return true;
    }

    bool on_object_end(std::size_t, boost::json::error_code& ec) {
        if (seen_ != all_fields_seen) {
            for (std::size_t f = 0; f < trade_field_names.size(); ++f) {
                if ((seen_ & (1U << f)) == 0) {
                    return fail(ec, "missing field '" + std::string(trade_field_names[f]) + "'");
                }
            }
        }
        out_.token_offsets_.push_back(token_begin_);
        out_.trades_.push_back(trade_);
        in_trade_ = false;
        return true;
    }

    bool on_key_part(boost::json::string_view s, std::size_t n, boost::json::error_code&) noexcept {
        keep_key(s, n);
        return true;
    }

    bool on_key(boost::json::string_view s, std::size_t n, boost::json::error_code& ec) {
        keep_key(s, n);
        const trade_field f =
            n <= key_.size() ? find_field(std::string_view(key_.data(), n)) : trade_field::none;
        if (f == trade_field::none) {
            std::string reason = "unknown field '";
            append_printable(reason, std::string_view(key_.data(), std::min(n, key_.size())));
            reason += n > key_.size() ? "...'" : "'";
            return fail(ec, std::move(reason));
        }
        const auto bit = static_cast<std::uint8_t>(1U << static_cast<unsigned>(f));
        if ((seen_ & bit) != 0) {
            return fail(ec, "duplicate field '" + std::string(name(f)) + "'");
        }
        seen_ = static_cast<std::uint8_t>(seen_ | bit);
        field_ = f;
        if (f == trade_field::token) {
            token_begin_ = out_.tokens_.size();
        }
        return true;
    }

    bool on_string_part(boost::json::string_view s, std::size_t n, boost::json::error_code& ec) {
        return string_part(s, n, ec);
    }

    bool on_string(boost::json::string_view s, std::size_t n, boost::json::error_code& ec) {
        if (!string_part(s, n, ec)) {
            return false;
        }
        if (field_ == trade_field::token) {
            const std::vector<char>& tokens = out_.tokens_;
            const tradeagg::reject_reason r = tradeagg::validate_token(
                std::string_view(tokens.data() + token_begin_, tokens.size() - token_begin_));
            if (r != tradeagg::reject_reason::none) {
                return reject(ec, r);
            }
        } else {
            // side: the only other field a string reaches (string_part refused the rest).
            const auto taker = n <= side_.size()
                                   ? tradeagg::parse_side(std::string_view(side_.data(), n))
                                   : std::nullopt;
            if (!taker) {
                return reject(ec, tradeagg::reject_reason::unknown_side);
            }
            trade_.taker = *taker;
        }
        field_ = trade_field::none;
        return true;
    }

    bool on_number_part(boost::json::string_view s, boost::json::error_code&) {
        // Only a number cut by the end of a buffer arrives in parts; parse_trades hands over
        // whole documents, so this is a fallback that allocates at most once per batch.
        number_text_.append(s.data(), s.size());
        return true;
    }

    bool on_int64(std::int64_t i, boost::json::string_view, boost::json::error_code& ec) {
        number_text_.clear();
        switch (in_trade_ ? field_ : trade_field::none) {
        case trade_field::price:
        case trade_field::quantity:
            return number(static_cast<double>(i), ec);
        case trade_field::ts:
            return timestamp(i >= 0 && i <= tradeagg::max_timestamp_ms, i, ec);
        case trade_field::id:
            if (i < 0) {
                return fail_field(ec);
            }
            trade_.id = static_cast<std::uint64_t>(i);
            return done_value();
        default:
            return wrong_value(ec);
        }
    }

    bool on_uint64(std::uint64_t u, boost::json::string_view, boost::json::error_code& ec) {
        number_text_.clear();
        switch (in_trade_ ? field_ : trade_field::none) {
        case trade_field::price:
        case trade_field::quantity:
            return number(static_cast<double>(u), ec);
        case trade_field::ts:
            // Boost.JSON reports only integers above INT64_MAX as unsigned.
            return timestamp(false, 0, ec);
        case trade_field::id:
            trade_.id = u;
            return done_value();
        default:
            return wrong_value(ec);
        }
    }

    bool on_double(double approx, boost::json::string_view s, boost::json::error_code& ec) {
        const double d = correctly_rounded(approx, s);
        switch (in_trade_ ? field_ : trade_field::none) {
        case trade_field::price:
        case trade_field::quantity:
            return number(d, ec);
        case trade_field::ts:
            // A number written with a fraction or an exponent arrives here, as does an integer
            // too large for 64 bits. Every double in range is an exact integer (the range ends
            // below 2^53), so a whole one is taken as it is; 1e400 arrives as infinity.
            if (d != std::trunc(d)) {
                return fail_field(ec);
            }
            if (!(d >= 0.0 && d <= static_cast<double>(tradeagg::max_timestamp_ms))) {
                return timestamp(false, 0, ec);
            }
            return timestamp(true, static_cast<tradeagg::timestamp_ms>(d), ec);
        case trade_field::id:
            // Also an integer beyond 64 bits, which Boost.JSON hands over as a double.
            return fail_field(ec);
        default:
            return wrong_value(ec);
        }
    }

    bool on_bool(bool, boost::json::error_code& ec) { return wrong_value(ec); }
    bool on_null(boost::json::error_code& ec) { return wrong_value(ec); }

    // Comments are not enabled in the parse options, so these are never called.
    bool on_comment_part(boost::json::string_view, boost::json::error_code&) noexcept {
        return true;
    }
    bool on_comment(boost::json::string_view, boost::json::error_code&) noexcept { return true; }

private:
    [[nodiscard]] static std::string_view name(trade_field f) noexcept {
        return trade_field_names[static_cast<std::size_t>(f)];
    }

    bool fail(boost::json::error_code& ec, std::string reason) {
        failed_ = true;
        reason_ = std::move(reason);
        // Any error stops Boost.JSON; failed() tells the caller the reason is ours.
        ec = boost::json::error::syntax;
        return false;
    }

    bool reject(boost::json::error_code& ec, tradeagg::reject_reason r) {
        return fail(ec, std::string(tradeagg::to_string(r)));
    }

    /// A value of the wrong type (or out of range, for id) for the current field.
    bool fail_field(boost::json::error_code& ec) {
        switch (field_) {
        case trade_field::token:
            return fail(ec, "field 'token' must be a string");
        case trade_field::price:
        case trade_field::quantity:
            return fail(ec, "field '" + std::string(name(field_)) + "' must be a number");
        case trade_field::side:
            return reject(ec, tradeagg::reject_reason::unknown_side);
        case trade_field::ts:
            return fail(ec, "field 'ts' must be an integer");
        case trade_field::id:
            return fail(ec, "field 'id' must be an unsigned 64-bit integer");
        case trade_field::none:
            break;
        }
        return fail(ec, "unexpected value");
    }

    /// A value where it does not belong: at the top level, in the array, or as a field.
    bool wrong_value(boost::json::error_code& ec) {
        if (in_trade_) {
            return fail_field(ec);
        }
        if (format_ == body_format::json_array && !in_array_) {
            return fail(ec, "expected a JSON array of trade objects");
        }
        return fail(ec, "expected a trade object");
    }

    bool done_value() noexcept {
        field_ = trade_field::none;
        return true;
    }

    bool number(double d, boost::json::error_code& ec) {
        const bool price = field_ == trade_field::price;
        if (!std::isfinite(d)) {
            return reject(ec, price ? tradeagg::reject_reason::price_not_finite
                                    : tradeagg::reject_reason::quantity_not_finite);
        }
        if (!(d > 0.0)) {
            return reject(ec, price ? tradeagg::reject_reason::price_not_positive
                                    : tradeagg::reject_reason::quantity_not_positive);
        }
        (price ? trade_.price : trade_.quantity) = d;
        return done_value();
    }

    /// The double nearest to the number's text. Boost.JSON 1.81 parses some decimals to a
    /// neighbour of it (up to 2 ulp off; about one in eight shortest round-trip forms of computed
    /// prices, such as 197360.10000000001), so a client's price would not come back as sent;
    /// std::from_chars rounds correctly. Out of its range (1e400, 1e-400) Boost.JSON's infinity
    /// or zero stands.
    [[nodiscard]] double correctly_rounded(double approx, boost::json::string_view last) {
        std::string_view text(last.data(), last.size());
        if (!number_text_.empty()) {
            number_text_.append(text);
            text = number_text_;
        }
        double d = approx;
        const char* end = text.data() + text.size();
        const auto [ptr, errc] = std::from_chars(text.data(), end, d);
        if (errc != std::errc{} || ptr != end) {
            d = approx;
        }
        number_text_.clear();
        return d;
    }

    bool timestamp(bool in_range, tradeagg::timestamp_ms ts, boost::json::error_code& ec) {
        if (!in_range) {
            return reject(ec, tradeagg::reject_reason::timestamp_out_of_range);
        }
        trade_.ts_ms = ts;
        return done_value();
    }

    bool string_part(boost::json::string_view s, std::size_t n, boost::json::error_code& ec) {
        switch (in_trade_ ? field_ : trade_field::none) {
        case trade_field::token:
            // Fail early rather than copy an over-long token; n is the length so far.
            if (n > tradeagg::max_token_length) {
                return reject(ec, tradeagg::reject_reason::token_too_long);
            }
            out_.tokens_.insert(out_.tokens_.end(), s.begin(), s.end());
            return true;
        case trade_field::side:
            // n - s.size() bytes came before this part; longer sides are refused in on_string.
            if (n <= side_.size()) {
                std::copy(s.begin(), s.end(), side_.begin() + (n - s.size()));
            }
            return true;
        default:
            return wrong_value(ec);
        }
    }

    void keep_key(boost::json::string_view s, std::size_t n) noexcept {
        // Keep the first key_.size() bytes: enough to match any field and to name an unknown one.
        const std::size_t before = n - s.size();
        if (before < key_.size()) {
            const std::size_t take = std::min(s.size(), key_.size() - before);
            std::copy(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(take),
                      key_.begin() + static_cast<std::ptrdiff_t>(before));
        }
    }

    trade_batch& out_;
    body_format format_;
    std::size_t max_trades_;
    bool in_array_ = false;
    bool in_trade_ = false;
    bool failed_ = false;
    std::uint8_t seen_ = 0;
    trade_field field_ = trade_field::none;
    tradeagg::trade_view trade_{};
    std::size_t token_begin_ = 0;
    std::array<char, 32> key_{};
    std::array<char, 4> side_{};
    std::string number_text_;
    std::string reason_;
};

/// Parses one JSON document, `text`, which starts at byte `base` of the body. On failure sets
/// `err`.
inline bool parse_document(boost::json::basic_parser<trade_handler>& parser, std::string_view text,
                           std::size_t base, std::string_view after, parse_error& err) {
    boost::json::error_code ec;
    const std::size_t n = parser.write_some(false, text.data(), text.size(), ec);
    trade_handler& h = parser.handler();
    if (h.failed()) {
        err.index = h.index();
        err.reason = std::move(h.reason());
        return false;
    }
    if (ec || n != text.size()) {
        // On an error Boost.JSON returns the offset at which it found it; a complete document
        // that stops short of the end is followed by something other than whitespace.
        err.index = h.index();
        err.reason = "invalid JSON at byte " + std::to_string(base + n) + ": ";
        if (ec) {
            detail::append_printable(err.reason, ec.message());
        } else {
            err.reason += "extra data after ";
            err.reason += after;
        }
        return false;
    }
    return true;
}

[[nodiscard]] inline boost::json::parse_options trade_parse_options() noexcept {
    boost::json::parse_options opt;
    // A valid body nests two levels (array, object), and the handler refuses anything deeper
    // before Boost.JSON gets there; the bound only keeps the parser's stack small.
    opt.max_depth = 4;
    return opt;
}

/// True for a line of JSON whitespace only (a CRLF's CR included): NDJSON allows blank lines.
[[nodiscard]] constexpr bool is_blank(std::string_view line) noexcept {
    for (const char c : line) {
        if (c != ' ' && c != '\t' && c != '\r') {
            return false;
        }
    }
    return true;
}

} // namespace detail

namespace detail {

/// Which readers `parse_trades_with` uses.
enum class parse_path {
    scanner_first, ///< the scanner, then Boost.JSON for what it gives up on (`parse_trades`)
    json_only,     ///< Boost.JSON for everything: the reference the scanner is checked against
};

/// `parse_trades` by the readers `path` names.
[[nodiscard]] inline bool parse_trades_with(std::string_view body, body_format fmt,
                                            trade_batch& out, parse_error& err,
                                            std::size_t max_trades, parse_path path) {
    out.clear();
    const bool scanning = path == parse_path::scanner_first;
    // Made on the first text the scanner gives up on: most bodies never need it.
    std::optional<boost::json::basic_parser<trade_handler>> parser;
    const auto json = [&]() -> boost::json::basic_parser<trade_handler>& {
        if (!parser) {
            parser.emplace(trade_parse_options(), out, fmt, max_trades);
        } else {
            parser->reset();
        }
        return *parser;
    };
    bool ok = true;
    if (fmt == body_format::json_array) {
        if (!scanning || !trade_scanner::read_array(body, out, max_trades)) {
            ok = parse_document(json(), body, 0, "the array", err);
        }
    } else {
        std::size_t pos = 0;
        while (ok && pos < body.size()) {
            const std::size_t newline = body.find('\n', pos);
            const std::size_t end = newline == std::string_view::npos ? body.size() : newline;
            // A CR before the LF is JSON whitespace, which both readers skip.
            const std::string_view line = body.substr(pos, end - pos);
            // A JSON string cannot hold a raw newline, so splitting at '\n' never cuts a valid
            // object in two, and an object spread over lines is refused as NDJSON requires.
            if (!is_blank(line) && !(scanning && trade_scanner::read_line(line, out, max_trades))) {
                ok = parse_document(json(), line, pos, "the trade object", err);
            }
            pos = end + 1;
        }
    }
    if (!ok) {
        out.clear();
        return false;
    }
    trade_scanner::finish(out);
    return true;
}

} // namespace detail

/// Parses a request body of trades into `out` (cleared first). Returns true with every trade in
/// `out`, or false with `err` set and `out` empty. At most `max_trades` trades are accepted;
/// one more is an error. Allocates only to grow `out` (and to word an error). Keeps no state
/// between calls: threads may parse at once into distinct batches.
///
/// A trade is an object with exactly the fields token (string, `tradeagg::validate_token`),
/// price and quantity (finite numbers > 0), side ("buy"/"sell", or what `tradeagg::parse_side`
/// accepts), ts (integer milliseconds in [0, `tradeagg::max_timestamp_ms`]) and id (integer in
/// [0, 2^64)). Every trade in `out` passes `tradeagg::validate`.
///
/// Plainly written trades are read by `detail::trade_scanner`; the rest, and every body it
/// refuses, by Boost.JSON's parser, which words the errors.
[[nodiscard]] inline bool parse_trades(std::string_view body, body_format fmt, trade_batch& out,
                                       parse_error& err, std::size_t max_trades) {
    return detail::parse_trades_with(body, fmt, out, err, max_trades,
                                     detail::parse_path::scanner_first);
}

} // namespace aggregator
