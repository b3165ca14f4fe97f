#pragma once
// Candle intervals: widths in milliseconds, aligned to the Unix epoch.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <tradeagg/config.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg {

/// A candle interval's width. Buckets are [k * width, (k + 1) * width) since the epoch.
using interval = std::chrono::milliseconds;

namespace intervals {
inline constexpr interval s1{1'000};
inline constexpr interval m1{60'000};
inline constexpr interval m5{300'000};
inline constexpr interval m15{900'000};
inline constexpr interval h1{3'600'000};
inline constexpr interval h4{14'400'000};
inline constexpr interval d1{86'400'000};
} // namespace intervals

/// The default set: 1s, 1m, 5m, 15m, 1h, 4h, 1d (the Binance kline names).
inline constexpr std::array<interval, 7> default_intervals{
    intervals::s1, intervals::m1, intervals::m5, intervals::m15,
    intervals::h1, intervals::h4, intervals::d1};

/// Start of the bucket of width `width_ms` holding `ts_ms` (both non-negative). Never allocates.
[[nodiscard]] constexpr timestamp_ms bucket_open(timestamp_ms ts_ms,
                                                 std::int64_t width_ms) noexcept {
    return ts_ms - ts_ms % width_ms;
}

/// A short interval name such as "1s", "5m", "4h", "1d", or "250ms"; held inline.
class interval_name {
public:
    constexpr explicit interval_name(interval width) noexcept {
        std::int64_t n = width.count();
        std::string_view unit = "ms";
        if (n > 0 && n % 86'400'000 == 0) {
            n /= 86'400'000;
            unit = "d";
        } else if (n > 0 && n % 3'600'000 == 0) {
            n /= 3'600'000;
            unit = "h";
        } else if (n > 0 && n % 60'000 == 0) {
            n /= 60'000;
            unit = "m";
        } else if (n > 0 && n % 1'000 == 0) {
            n /= 1'000;
            unit = "s";
        }
        char digits[20] = {};
        std::size_t count = 0;
        do {
            digits[count++] = static_cast<char>('0' + n % 10);
            n /= 10;
        } while (n > 0 && count < sizeof digits);
        while (count > 0) {
            text_[size_++] = digits[--count];
        }
        for (const char c : unit) {
            text_[size_++] = c;
        }
    }

    [[nodiscard]] constexpr std::string_view view() const noexcept { return {text_, size_}; }
    constexpr operator std::string_view() const noexcept { return view(); } // NOLINT

private:
    char text_[24] = {};
    std::size_t size_ = 0;
};

/// Parses a name produced by `interval_name` ("1s", "15m", "1d", "250ms"); zero if malformed.
[[nodiscard]] constexpr interval parse_interval(std::string_view text) noexcept {
    std::int64_t n = 0;
    std::size_t i = 0;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
        if (n > 1'000'000'000) {
            return interval{0};
        }
        n = n * 10 + (text[i] - '0');
    }
    const std::string_view unit = text.substr(i);
    if (i == 0) {
        return interval{0};
    }
    if (unit == "ms")
        return interval{n};
    if (unit == "s")
        return interval{n * 1'000};
    if (unit == "m")
        return interval{n * 60'000};
    if (unit == "h")
        return interval{n * 3'600'000};
    if (unit == "d")
        return interval{n * 86'400'000};
    return interval{0};
}

} // namespace tradeagg
