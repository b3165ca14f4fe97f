#pragma once
// What each connection counts, and the sum of all of them at one moment.

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "latency_histogram.hpp"

namespace loadgen {

/// What one connection did. Written by its thread, read by the main thread for progress lines
/// and the summary; relaxed atomics, since every figure is a count read on its own.
struct alignas(64) connection_stats {
    static constexpr std::size_t statuses = 600;

    std::atomic<std::uint64_t> requests{0}; ///< responses received
    std::atomic<std::uint64_t> trades_sent{0};
    std::atomic<std::uint64_t> trades_accepted{0};
    std::atomic<std::uint64_t> io_errors{0};
    std::atomic<std::uint64_t> backoff_ns{0};                  ///< time slept on Retry-After
    std::array<std::atomic<std::uint64_t>, statuses> status{}; ///< by code; 0: out of range
    latency_histogram latency;
    std::atomic<bool> finished{false};

    /// The owning connection thread only: one writer, so a plain load and store do, without
    /// a locked instruction.
    static void add(std::atomic<std::uint64_t>& a, std::uint64_t n) noexcept {
        a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
};

/// The figures of all connections at one moment.
struct totals {
    std::uint64_t requests = 0;
    std::uint64_t trades_sent = 0;
    std::uint64_t trades_accepted = 0;
    std::uint64_t io_errors = 0;
    std::uint64_t backoff_ns = 0;
    std::uint64_t max_ns = 0;
    std::array<std::uint64_t, connection_stats::statuses> status{};
    latency_histogram::counts latency{};

    [[nodiscard]] std::uint64_t status_range(std::size_t lo, std::size_t hi) const noexcept {
        std::uint64_t n = 0;
        for (std::size_t s = lo; s < hi; ++s) {
            n += status[s];
        }
        return n;
    }
};

inline totals sum(const std::vector<std::unique_ptr<connection_stats>>& all) {
    totals t;
    for (const auto& c : all) {
        t.requests += c->requests.load(std::memory_order_relaxed);
        t.trades_sent += c->trades_sent.load(std::memory_order_relaxed);
        t.trades_accepted += c->trades_accepted.load(std::memory_order_relaxed);
        t.io_errors += c->io_errors.load(std::memory_order_relaxed);
        t.backoff_ns += c->backoff_ns.load(std::memory_order_relaxed);
        t.max_ns = std::max(t.max_ns, c->latency.max());
        for (std::size_t s = 0; s < connection_stats::statuses; ++s) {
            t.status[s] += c->status[s].load(std::memory_order_relaxed);
        }
        c->latency.add_to(t.latency);
    }
    return t;
}

} // namespace loadgen
