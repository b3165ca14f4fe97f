#pragma once
// The load generator's response-latency histogram, one per connection, summed for progress lines
// and the summary.

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace loadgen {

/// Log-linear histogram of nanoseconds: 16 buckets per power of two, so a percentile read from
/// it is within about 3 % of the true value.
class latency_histogram {
public:
    static constexpr unsigned sub_bits = 4;
    static constexpr std::size_t sub = std::size_t{1} << sub_bits;
    static constexpr std::size_t buckets = (64 - sub_bits + 1) * sub;
    using counts = std::array<std::uint64_t, buckets>;

    static std::size_t index(std::uint64_t ns) noexcept {
        if (ns < sub) {
            return static_cast<std::size_t>(ns);
        }
        const auto msb = static_cast<unsigned>(std::bit_width(ns)) - 1;
        return (msb - sub_bits + 1) * sub +
               static_cast<std::size_t>((ns >> (msb - sub_bits)) & (sub - 1));
    }

    static std::uint64_t lower_bound(std::size_t i) noexcept {
        if (i < sub) {
            return i;
        }
        const auto msb = static_cast<unsigned>(i / sub) + sub_bits - 1;
        return (std::uint64_t{1} << msb) | (std::uint64_t{i % sub} << (msb - sub_bits));
    }

    /// The owning connection thread only. Never allocates.
    void record(std::uint64_t ns) noexcept {
        counts_[index(ns)].fetch_add(1, std::memory_order_relaxed);
        if (ns > max_.load(std::memory_order_relaxed)) {
            max_.store(ns, std::memory_order_relaxed);
        }
    }

    /// Any thread: adds this histogram's counts to `into`.
    void add_to(counts& into) const noexcept {
        for (std::size_t i = 0; i < buckets; ++i) {
            into[i] += counts_[i].load(std::memory_order_relaxed);
        }
    }

    [[nodiscard]] std::uint64_t max() const noexcept {
        return max_.load(std::memory_order_relaxed);
    }

    /// The q-quantile (0 < q <= 1) of `c` in ns, the middle of its bucket, at most `max_ns`;
    /// 0 when `c` is empty.
    static std::uint64_t quantile(const counts& c, double q, std::uint64_t max_ns) noexcept {
        std::uint64_t total = 0;
        for (const std::uint64_t n : c) {
            total += n;
        }
        if (total == 0) {
            return 0;
        }
        const auto target = std::max<std::uint64_t>(
            1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total))));
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < buckets; ++i) {
            seen += c[i];
            if (seen >= target) {
                const std::uint64_t lo = lower_bound(i);
                const std::uint64_t hi = i + 1 < buckets ? lower_bound(i + 1) : lo;
                return std::min(lo + (hi - lo) / 2, max_ns);
            }
        }
        return max_ns;
    }

private:
    std::array<std::atomic<std::uint64_t>, buckets> counts_{};
    std::atomic<std::uint64_t> max_{0};
};

} // namespace loadgen
