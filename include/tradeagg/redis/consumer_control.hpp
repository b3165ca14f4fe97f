#pragma once
// What a partition-stream consumer's thread shares with the threads that stop and watch it:
// the stop they ask for, with its deadline, and the figures and errors it publishes to them.
// One mutex guards the stop's deadline, the thread's idle wait and the figures.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include <tradeagg/redis/stream_consumer_stats.hpp>

namespace tradeagg::redis::detail {

class consumer_control {
public:
    using clock = std::chrono::steady_clock;

    /// Asks the consumer's thread to stop by `deadline` from now (the first request's deadline
    /// holds), and wakes it. Any thread.
    void request_stop(std::chrono::milliseconds deadline) {
        {
            const std::lock_guard lock(mutex_);
            if (!stop_at_) {
                stop_at_ = clock::now() + deadline;
            }
        }
        stopping_.store(true);
        wake_.notify_all();
    }

    /// A stop was asked for. Any thread; never blocks.
    [[nodiscard]] bool stopping() const noexcept { return stopping_.load(); }

    /// A stop was asked for and its deadline has passed. Takes the mutex once a stop is asked.
    [[nodiscard]] bool stop_overdue() const {
        return stopping() && clock::now() >= stop_deadline();
    }

    /// Waits `at_most`, or less if a stop is asked for. The consumer's thread.
    void wait_for_stop(std::chrono::milliseconds at_most) {
        std::unique_lock lock(mutex_);
        wake_.wait_for(lock, at_most, [this] { return stopping_.load(); });
    }

    /// The consumer's thread gave up on writes at the stop deadline.
    void stopped_unclean() noexcept { clean_stop_ = false; }

    /// Nothing was left unwritten at the stop. Read once the consumer's thread is joined.
    [[nodiscard]] bool clean_stop() const noexcept { return clean_stop_; }

    /// Publishes `what` as the last error. Takes the mutex.
    void note_error(std::string what) {
        const std::lock_guard lock(mutex_);
        published_.last_error = std::move(what);
    }

    /// Calls `f(stats)` on the published figures, under the mutex.
    template <class F>
    void update(F&& f) {
        const std::lock_guard lock(mutex_);
        f(published_);
    }

    /// A copy of the published figures. Any thread; takes the mutex and allocates.
    [[nodiscard]] stream_consumer_stats stats() const {
        const std::lock_guard lock(mutex_);
        return published_;
    }

private:
    /// When the stop asked for must be done: the far future until one is.
    clock::time_point stop_deadline() const {
        const std::lock_guard lock(mutex_);
        return stop_at_.value_or(clock::time_point::max());
    }

    std::atomic<bool> stopping_{false};
    bool clean_stop_ = true;
    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::optional<clock::time_point> stop_at_;
    stream_consumer_stats published_;
};

} // namespace tradeagg::redis::detail
