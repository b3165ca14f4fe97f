#pragma once
// The HTTP request bodies of one connection: rendered once, re-stamped in place per request.
//
// Why it is cheap. The trades (bench/stream.hpp: Zipf-popular tokens, random-walk prices) are
// generated and rendered to request bodies once, at start: a pool of about 128 Ki trades per
// connection, cut into batches. Per request only two fixed-width fields of each trade are
// rewritten in place: `ts` (13 digits, valid until the year 2286) and the upper 11 digits of
// `id`, two memcpy of a few bytes per trade; everything else, including Content-Length, never
// changes. So each trade carries the wall clock of the moment its request is sent, minus its
// own out-of-order delay, exactly like a live feed, and the cost per trade is a few nanoseconds
// plus the kernel's copy of about 120 bytes.

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <boost/beast/core/span.hpp>

#include <tradeagg/trade.hpp>

#include "../../bench/stream.hpp"
#include "asio_beast.hpp"
#include "options.hpp"

namespace loadgen {

/// Writes v as exactly `width` decimal digits, zero-padded on the left.
inline void write_digits(char* out, std::uint64_t v, std::size_t width) noexcept {
    for (std::size_t i = width; i-- > 0;) {
        out[i] = static_cast<char>('0' + v % 10);
        v /= 10;
    }
}

/// Eight significant digits in plain decimal notation (no exponent, no trailing zeros): short
/// bodies, and any JSON number parser reads them.
inline void append_decimal(std::string& out, double v) {
    const int magnitude = static_cast<int>(std::floor(std::log10(v))) + 1;
    const int precision = std::clamp(8 - magnitude, 0, 17);
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, precision);
    std::string_view s(buf, static_cast<std::size_t>(r.ptr - buf));
    if (s.find('.') != std::string_view::npos) {
        while (s.ends_with('0')) {
            s.remove_suffix(1);
        }
        if (s.ends_with('.')) {
            s.remove_suffix(1);
        }
    }
    out += s;
}

/// The pre-rendered request bodies of one connection, and the in-place re-stamping of their
/// `ts` and `id` fields. Owned and used by one thread.
class request_pool {
public:
    static constexpr std::size_t ts_digits = 13;         // milliseconds until the year 2286
    static constexpr std::size_t id_prefix_digits = 11;  // "1" + 10-digit generation
    static constexpr std::size_t id_position_digits = 7; // position in the pool
    static constexpr std::uint64_t max_pool_trades = 10'000'000;
    static constexpr std::uint64_t generations = 10'000'000'000;
    static constexpr std::string_view id_key = R"(,"id":)";

    /// Renders trades [first, first + count) of `s` as batches of `batch` trades; `delays[k]` is
    /// the out-of-order delay in ms of trade first + k (0 for most). Allocates.
    request_pool(const synthetic::stream& s, std::size_t first, std::size_t count,
                 std::size_t batch, body_format format, const std::vector<std::uint32_t>& delays) {
        if (count == 0 || count > max_pool_trades) {
            throw std::logic_error("request_pool: the pool needs 1..10^7 trades");
        }
        const bool json = format == body_format::json;
        std::array<char, id_position_digits> position{};
        for (std::size_t k = 0; k < count; ++k) {
            if (k % batch == 0) {
                if (k != 0 && json) {
                    bytes_ += "]\n";
                }
                batch_first_byte_.push_back(bytes_.size());
                batch_first_trade_.push_back(k);
                batch_first_late_.push_back(late_.size());
                if (json) {
                    bytes_ += '[';
                }
            } else if (json) {
                bytes_ += ",\n";
            }
            const tradeagg::trade& t = s.trades()[first + k];
            bytes_ += R"({"token":")";
            bytes_ += s.names()[t.token];
            bytes_ += R"(","price":)";
            append_decimal(bytes_, t.price);
            bytes_ += R"(,"quantity":)";
            append_decimal(bytes_, t.quantity);
            bytes_ += t.taker == tradeagg::side::buy ? R"(,"side":"buy")" : R"(,"side":"sell")";
            bytes_ += R"(,"ts":)";
            ts_offset_.push_back(static_cast<std::uint32_t>(bytes_.size()));
            bytes_.append(ts_digits, '0');
            bytes_ += id_key;
            bytes_ += '1';
            bytes_.append(id_prefix_digits - 1, '0');
            write_digits(position.data(), k, id_position_digits);
            bytes_.append(position.data(), position.size());
            bytes_ += json ? "}" : "}\n";
            if (delays[first + k] != 0) {
                late_.push_back({k, delays[first + k]});
            }
        }
        if (json) {
            bytes_ += "]\n";
        }
        batch_first_byte_.push_back(bytes_.size());
        batch_first_trade_.push_back(count);
        batch_first_late_.push_back(late_.size());
        if (bytes_.size() > std::numeric_limits<std::uint32_t>::max()) {
            throw std::logic_error("request_pool: bodies too large for 32-bit offsets");
        }
    }

    [[nodiscard]] std::size_t batches() const noexcept { return batch_first_byte_.size() - 1; }

    [[nodiscard]] std::size_t trades(std::size_t b) const noexcept {
        return batch_first_trade_[b + 1] - batch_first_trade_[b];
    }

    /// Re-stamps batch `b` for sending now and returns its body: every ts becomes `now_ms` less
    /// the trade's delay, every id gets `generation` in its upper digits. Never allocates.
    beast::span<char> stamp(std::size_t b, std::int64_t now_ms, std::uint64_t generation) noexcept {
        std::array<char, ts_digits> ts{};
        write_digits(ts.data(), static_cast<std::uint64_t>(now_ms), ts_digits);
        std::array<char, id_prefix_digits> id{};
        id[0] = '1';
        write_digits(id.data() + 1, generation % generations, id_prefix_digits - 1);
        char* const base = bytes_.data();
        constexpr std::size_t id_gap = ts_digits + id_key.size();
        for (std::size_t k = batch_first_trade_[b]; k < batch_first_trade_[b + 1]; ++k) {
            char* const field = base + ts_offset_[k];
            std::memcpy(field, ts.data(), ts_digits);
            std::memcpy(field + id_gap, id.data(), id_prefix_digits);
        }
        for (std::size_t i = batch_first_late_[b]; i < batch_first_late_[b + 1]; ++i) {
            write_digits(base + ts_offset_[late_[i].trade],
                         static_cast<std::uint64_t>(now_ms - late_[i].delay_ms), ts_digits);
        }
        return {base + batch_first_byte_[b], batch_first_byte_[b + 1] - batch_first_byte_[b]};
    }

private:
    struct late_trade {
        std::size_t trade;
        std::int64_t delay_ms;
    };

    std::string bytes_;                          // every batch's body, back to back
    std::vector<std::size_t> batch_first_byte_;  // batches() + 1 entries
    std::vector<std::size_t> batch_first_trade_; // batches() + 1 entries
    std::vector<std::uint32_t> ts_offset_;       // per trade: where its ts digits start
    std::vector<late_trade> late_;               // the out-of-order trades, by position
    std::vector<std::size_t> batch_first_late_;  // batches() + 1 entries
};

} // namespace loadgen
