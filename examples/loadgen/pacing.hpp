#pragma once
// How a connection waits: for the end of the run, and to hold --rate.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>

namespace loadgen {

/// The clock of every wait, and of every latency measured.
using steady = std::chrono::steady_clock;

/// The end of the run, which every sleeping connection wakes up for.
class stop_signal {
public:
    void request() {
        {
            const std::lock_guard lock(mutex_);
            stopped_.store(true, std::memory_order_relaxed);
        }
        cv_.notify_all();
    }

    [[nodiscard]] bool requested() const noexcept {
        return stopped_.load(std::memory_order_relaxed);
    }

    /// Sleeps until `t` or the stop, whichever comes first; true when stopped.
    bool sleep_until(steady::time_point t) {
        std::unique_lock lock(mutex_);
        return cv_.wait_until(lock, t, [this] { return stopped_.load(std::memory_order_relaxed); });
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::atomic<bool> stopped_{false};
};

/// Holds a connection to `rate` trades per second (0: no limit) before it sends `n` more: sleeps
/// until `next_send`, which it then moves on by n / rate; far behind, it does not burst to catch
/// up. True if the run was stopped meanwhile.
inline bool pace(steady::time_point& next_send, std::size_t n, double rate, stop_signal& stop) {
    using namespace std::chrono_literals;
    if (rate <= 0) {
        return false;
    }
    const auto interval =
        std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 * static_cast<double>(n) / rate));
    const steady::time_point now = steady::now();
    if (next_send > now) {
        if (stop.sleep_until(next_send)) {
            return true;
        }
    } else if (now - next_send > 1s) {
        next_send = now;
    }
    next_send += interval;
    return false;
}

} // namespace loadgen
