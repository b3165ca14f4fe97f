#pragma once
// When the Redis sink tries a failed transaction again: after `retry_delay`, doubled for each
// further attempt and jittered so that retries from many tokens spread out instead of
// arriving together; and how often tokens whose retries ran out ("parked") are tried anyway.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <utility>
#include <vector>

#include <tradeagg/redis/config.hpp>
#include <tradeagg/redis/sink_nodes.hpp>
#include <tradeagg/redis/sink_updates.hpp>

namespace tradeagg::redis::detail {

/// Tokens waiting for their next attempt, earliest first. I/O thread only.
class retry_schedule {
public:
    /// Keeps a reference to `cfg`, which must outlive it.
    explicit retry_schedule(const redis_config& cfg) noexcept
        : cfg_(cfg), rng_(0x9E3779B97F4A7C15ull ^ static_cast<std::uint64_t>(steady_ns())) {}

    /// How often parked tokens are tried again although their node did not answer: the
    /// longest backoff a token goes through before it parks, within 250 ms .. 5 s.
    [[nodiscard]] std::chrono::milliseconds park_interval() const noexcept {
        const auto base = std::max(cfg_.retry_delay, std::chrono::milliseconds(1));
        const int doublings = std::min(cfg_.max_retries, 6);
        return std::clamp(base * (1 << doublings), std::chrono::milliseconds(250),
                          std::chrono::milliseconds(5'000));
    }

    /// `t` failed its `attempt`-th time (1 for the first): it is due after the backoff.
    void schedule(token_state& t, int attempt, sink_clock::time_point now) {
        heap_.emplace_back(now + backoff(attempt), &t);
        std::push_heap(heap_.begin(), heap_.end(), later_first);
    }

    /// Takes every token due at `now`, earliest first, and calls `f(token_state&)`.
    template <class F>
    void take_due(sink_clock::time_point now, F&& f) {
        while (!heap_.empty() && heap_.front().first <= now) {
            token_state* t = heap_.front().second;
            std::pop_heap(heap_.begin(), heap_.end(), later_first);
            heap_.pop_back();
            f(*t);
        }
    }

private:
    using due = std::pair<sink_clock::time_point, token_state*>;

    static bool later_first(const due& a, const due& b) noexcept { return a.first > b.first; }

    /// `retry_delay` doubled for each further attempt, times a jitter in [0.5, 1.5), at most
    /// 10 s.
    sink_clock::duration backoff(int attempt) {
        const auto base = std::chrono::duration<double, std::milli>(
            std::max(cfg_.retry_delay, std::chrono::milliseconds(1)));
        const double factor = static_cast<double>(1ull << std::min(attempt - 1, 20));
        rng_ ^= rng_ << 13;
        rng_ ^= rng_ >> 7;
        rng_ ^= rng_ << 17;
        const double jitter = 0.5 + static_cast<double>(rng_ >> 11) * 0x1.0p-53;
        const auto d =
            std::min(base * factor * jitter, std::chrono::duration<double, std::milli>(10'000.0));
        return std::chrono::duration_cast<sink_clock::duration>(d);
    }

    const redis_config& cfg_;
    std::vector<due> heap_;
    std::uint64_t rng_;
};

} // namespace tradeagg::redis::detail
