#pragma once
// A log-linear histogram of nanosecond latencies: one writer, any number of readers.

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

#include <tradeagg/config.hpp>

namespace tradeagg {

/// Percentiles of a latency distribution, in nanoseconds (upper bounds of 1/16-octave
/// buckets: at most 6.25 % above the true value; `max_ns` is exact).
struct latency_summary {
    std::uint64_t samples = 0;
    double p50_ns = 0;
    double p90_ns = 0;
    double p99_ns = 0;
    double p999_ns = 0;
    double max_ns = 0;
};

/// Sixteen buckets per power of two, from 1 ns to 2^64 ns. Recording is three relaxed
/// load/store pairs (no read-modify-write): exactly one thread may `record`; any thread may
/// read. Never allocates. Counts are cumulative from construction, never reset, so readers can
/// subtract two readings (or export them as a Prometheus histogram).
class latency_histogram {
public:
    static constexpr std::size_t sub_buckets = 16;
    static constexpr std::size_t bucket_count = sub_buckets + (64 - 4) * sub_buckets;

    /// A reading of one or more histograms: bucket counts, and the sum and maximum of the
    /// samples. A plain value (7.8 KB): read it off the hot path.
    struct counts {
        std::array<std::uint64_t, bucket_count> buckets{};
        std::uint64_t sum_ns = 0;
        std::uint64_t max_ns = 0;

        /// Samples recorded.
        [[nodiscard]] std::uint64_t samples() const noexcept {
            std::uint64_t n = 0;
            for (const std::uint64_t c : buckets) {
                n += c;
            }
            return n;
        }

        /// Samples whose bucket lies wholly at or below `bound_ns`: a cumulative histogram's
        /// `le` count. A sample less than 1/16 octave (6.25 %) below the bound may fall in the
        /// bucket that straddles it and is then counted only in the next bound up, so the
        /// count never claims a sample faster than it was.
        [[nodiscard]] std::uint64_t at_most(std::uint64_t bound_ns) const noexcept {
            std::uint64_t n = 0;
            for (std::size_t i = 0; i < bucket_count && upper_bound_of(i) <= bound_ns; ++i) {
                n += buckets[i];
            }
            return n;
        }

        /// The `q`-quantile (0 <= q <= 1) of these counts: the upper bound of the bucket that
        /// holds it, capped at the maximum; 0 without samples. Never allocates.
        [[nodiscard]] double quantile(double q) const noexcept { return quantile(q, samples()); }

        /// Percentiles of these counts.
        [[nodiscard]] latency_summary summary() const noexcept {
            latency_summary s;
            s.samples = samples();
            if (s.samples == 0) {
                return s;
            }
            s.p50_ns = quantile(0.50, s.samples);
            s.p90_ns = quantile(0.90, s.samples);
            s.p99_ns = quantile(0.99, s.samples);
            s.p999_ns = quantile(0.999, s.samples);
            s.max_ns = static_cast<double>(max_ns);
            return s;
        }

    private:
        /// `quantile(q)` of `n` samples, the sum of the buckets.
        [[nodiscard]] double quantile(double q, std::uint64_t n) const noexcept {
            if (n == 0) {
                return 0;
            }
            const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(n - 1)) + 1;
            std::uint64_t seen = 0;
            for (std::size_t i = 0; i < bucket_count; ++i) {
                seen += buckets[i];
                if (seen >= rank) {
                    return static_cast<double>(std::min(upper_bound_of(i), max_ns));
                }
            }
            return static_cast<double>(max_ns);
        }
    };

    /// Writer thread only. Never allocates, never blocks.
    void record(std::uint64_t ns) noexcept {
        auto& b = buckets_[index_of(ns)];
        b.store(b.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        sum_.store(sum_.load(std::memory_order_relaxed) + ns, std::memory_order_relaxed);
        if (ns > max_.load(std::memory_order_relaxed)) {
            max_.store(ns, std::memory_order_relaxed);
        }
    }

    /// Adds this histogram's counts into `into` (for summing shards). Any thread; the
    /// reading is not a snapshot (a sample being recorded may be in a bucket and not yet in
    /// the sum), which is as good as a scrape needs.
    void accumulate(counts& into) const noexcept {
        for (std::size_t i = 0; i < bucket_count; ++i) {
            into.buckets[i] += buckets_[i].load(std::memory_order_relaxed);
        }
        into.sum_ns += sum_.load(std::memory_order_relaxed);
        into.max_ns = std::max(into.max_ns, max_.load(std::memory_order_relaxed));
    }

    /// This histogram's counts. Any thread.
    [[nodiscard]] counts read() const noexcept {
        counts c;
        accumulate(c);
        return c;
    }

    /// This histogram's percentiles. Any thread.
    [[nodiscard]] latency_summary summary() const noexcept { return read().summary(); }

    static constexpr std::size_t index_of(std::uint64_t ns) noexcept {
        if (ns < sub_buckets) {
            return static_cast<std::size_t>(ns);
        }
        const int octave = std::bit_width(ns) - 1; // >= 4
        const auto sub = static_cast<std::size_t>((ns >> (octave - 4)) & (sub_buckets - 1));
        return sub_buckets + static_cast<std::size_t>(octave - 4) * sub_buckets + sub;
    }

    static constexpr std::uint64_t upper_bound_of(std::size_t index) noexcept {
        if (index < sub_buckets) {
            return index;
        }
        const std::size_t octave = (index - sub_buckets) / sub_buckets + 4;
        const std::size_t sub = (index - sub_buckets) % sub_buckets;
        const std::uint64_t low = (std::uint64_t{sub_buckets} + sub) << (octave - 4);
        return low + ((std::uint64_t{1} << (octave - 4)) - 1);
    }

private:
    std::array<std::atomic<std::uint64_t>, bucket_count> buckets_{};
    std::atomic<std::uint64_t> sum_{0};
    std::atomic<std::uint64_t> max_{0};
};

} // namespace tradeagg
