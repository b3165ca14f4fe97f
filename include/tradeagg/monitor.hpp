#pragma once
// The performance monitor: the seed's background task that "collects system metrics every 10
// seconds, performs automatic tuning every 60 seconds, detects performance issues and adjusts
// GC settings based on CPU usage", for anything that satisfies `monitorable`;
// `monitored_pipeline` makes a `pipeline` one.
//
// Every sample_every it takes one `monitor_sample` from its target, raises or clears alerts
// (once per threshold crossing, never once per sample), and every tune_every it moves the
// target's reclamation target (GC target percent, GOGC's meaning; see DESIGN.md
// "Reclamation") by one step of a fixed rule, using the means of the samples taken since the
// previous tuning step:
//
//   1. memory near the soft limit (mean heap_inuse_mb or mean resident_mb above
//      memory_high_fraction x memory_limit_mb, when a limit is set): lower the target
//      (target x lower_factor), so reclamation runs sooner. Memory wins over CPU.
//   2. otherwise, reclamation or the process busy (mean gc_cpu_fraction above gc_cpu_high, or
//      mean cpu_fraction above cpu_high): raise the target (target x raise_factor), so
//      reclamation runs less often.
//   3. otherwise: no change.
//
// The new value is clamped into the target's `gc_target_bounds()`; a step that would not change
// it (already at the bound) is no adjustment and reports nothing.
//
// The monitor runs either on its own thread (`start()`/`stop()`), or by calling `step()` with a
// time of your choosing, which is how tests drive it with a fake clock.

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <concepts>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <tradeagg/alerts.hpp>
#include <tradeagg/config.hpp>
#include <tradeagg/detail/thread_name.hpp>
#include <tradeagg/monitor_target.hpp>

namespace tradeagg {

/// One change of the reclamation target, with the measurement and the rule that caused it,
/// e.g. "gc_cpu_fraction 0.14 > 0.05: raise target 100 -> 150".
struct tuning_event {
    unsigned old_target = 0;
    unsigned new_target = 0;
    std::string reason;
};

/// How often the monitor samples and tunes, what it alerts on, and the tuning rule (see the top
/// of this header).
struct monitor_options {
    std::chrono::milliseconds sample_every{10'000}; ///< > 0; the seed samples every 10 s
    std::chrono::milliseconds tune_every{60'000};   ///< >= sample_every; the seed: every 60 s
    alert_thresholds thresholds{};
    /// Called for every raised and cleared alert; may be empty. Runs on the thread that calls
    /// `step()` (the monitor's own after `start()`); an exception from it is caught and counted
    /// in `callback_errors`. Must not call `step()`.
    std::function<void(const alert&)> on_alert{};
    /// Called for every adjustment, with its reason; may be empty. Same rules as `on_alert`.
    std::function<void(const tuning_event&)> on_tuning{};

    /// Lower the target when mean heap_inuse_mb or resident_mb exceeds this fraction of
    /// memory_limit_mb (> 0; `alert_thresholds::off` disables the rule).
    double memory_high_fraction = 0.85;
    /// Raise the target when mean gc_cpu_fraction exceeds this (>= 0; `off` disables).
    double gc_cpu_high = 0.05;
    /// Raise the target when mean cpu_fraction exceeds this (>= 0; `off` disables).
    double cpu_high = 0.8;
    /// A raise multiplies the target by this (> 1), moving it by at least 1.
    double raise_factor = 1.5;
    /// A lowering multiplies the target by this (0 < f < 1), moving it by at least 1.
    double lower_factor = 0.5;
    /// Cores the process may use, the denominator of cpu_fraction; 0 = the machine's
    /// `std::thread::hardware_concurrency()` (which ignores affinity masks and cgroup quotas:
    /// set this when those limit the process).
    unsigned cpu_cores = 0;
};

namespace detail {

/// A number as an operator reads it: integers without a fraction, others to 6 significant
/// digits. Allocates the string.
[[nodiscard]] inline std::string monitor_number(double v) {
    char buffer[32];
    if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) {
        std::snprintf(buffer, sizeof buffer, "%.0f", v);
    } else {
        std::snprintf(buffer, sizeof buffer, "%.6g", v);
    }
    return buffer;
}

/// The mean of the readings added, skipping NaN (a reading the target could not take).
struct monitor_mean {
    double sum = 0;
    std::uint64_t count = 0;

    void add(double v) noexcept {
        if (!std::isnan(v)) {
            sum += v;
            ++count;
        }
    }
    [[nodiscard]] std::optional<double> value() const noexcept {
        if (count == 0) {
            return std::nullopt;
        }
        return sum / static_cast<double>(count);
    }
};

/// The target moved by `factor` in the rule's direction, by at least 1, before clamping.
[[nodiscard]] inline double scaled_gc_target(unsigned old, double factor, bool up) noexcept {
    const double v = std::round(static_cast<double>(old) * factor);
    return up ? std::max(v, static_cast<double>(old) + 1.0)
              : std::min(v, static_cast<double>(old) - 1.0);
}

/// Marks the calling thread as inside a monitor's step() for its lifetime, so that a callback
/// (or target) calling back into that monitor is caught instead of deadlocking. Scopes nest
/// when one monitor's callback steps another.
class monitor_step_scope {
public:
    explicit monitor_step_scope(const void* monitor) noexcept
        : monitor_(monitor), outer_(innermost()) {
        innermost() = this;
    }
    ~monitor_step_scope() { innermost() = outer_; }
    monitor_step_scope(const monitor_step_scope&) = delete;
    monitor_step_scope& operator=(const monitor_step_scope&) = delete;
    monitor_step_scope(monitor_step_scope&&) = delete;
    monitor_step_scope& operator=(monitor_step_scope&&) = delete;

    /// Whether the calling thread is inside `monitor`'s step(). Never allocates.
    [[nodiscard]] static bool inside(const void* monitor) noexcept {
        for (const monitor_step_scope* s = innermost(); s != nullptr; s = s->outer_) {
            if (s->monitor_ == monitor) {
                return true;
            }
        }
        return false;
    }

private:
    static const monitor_step_scope*& innermost() noexcept {
        thread_local const monitor_step_scope* scope = nullptr;
        return scope;
    }

    const void* monitor_;
    const monitor_step_scope* outer_;
};

} // namespace detail

/// Samples a `Target` periodically, raises and clears alerts, and tunes its reclamation target
/// (see the top of this header for the rule). `Clock` supplies the times `start()` hands to
/// `step()`; tests call `step()` with times of their own instead.
///
/// The target must outlive the monitor. Not copyable or movable (its thread refers to it).
template <monitorable Target, class Clock = std::chrono::steady_clock>
requires requires {
    { Clock::now() } -> std::convertible_to<typename Clock::time_point>;
}
class monitor {
public:
    using clock = Clock;
    using time_point = typename Clock::time_point;

    /// How many adjustments `stats().recent` keeps (the latest ones).
    static constexpr std::size_t recent_capacity = 16;

    /// Counters since construction, and the latest reading.
    struct stats_type {
        std::uint64_t samples = 0;         ///< `step()` calls that took a sample
        std::uint64_t tunings = 0;         ///< tuning steps, whether or not they changed anything
        std::uint64_t adjustments = 0;     ///< tuning steps that changed the target
        std::uint64_t alerts_raised = 0;   ///< crossings above a threshold
        std::uint64_t alerts_cleared = 0;  ///< crossings back to or below a threshold
        std::uint64_t callback_errors = 0; ///< exceptions thrown by on_alert / on_tuning
        /// Exceptions from the target (or out of memory) caught by the background thread,
        /// which then carries on with the next sample.
        std::uint64_t step_errors = 0;
        std::array<bool, alert_kind_count> alerts_active{}; ///< index: alert_kind; raised now
        monitor_sample last{};                              ///< the latest sample
        std::vector<tuning_event> recent;                   ///< latest adjustments, oldest first
    };

    /// Checks `options` and keeps them. Throws std::invalid_argument, naming the option, when
    /// sample_every <= 0, tune_every < sample_every, a threshold is negative or NaN, or a tuning
    /// parameter is out of its range. Starts no thread; allocates only to copy the callbacks.
    monitor(Target& target, monitor_options options)
        : target_(target), options_(std::move(options)), cores_(options_.cpu_cores) {
        check_options(options_);
        if (cores_ == 0) {
            cores_ = std::max(1u, std::thread::hardware_concurrency());
        }
    }

    monitor(const monitor&) = delete;
    monitor& operator=(const monitor&) = delete;
    monitor(monitor&&) = delete;
    monitor& operator=(monitor&&) = delete;

    /// Stops the background thread if it runs. Blocks until it has finished its current step.
    ~monitor() { stop(); }

    /// Starts the background thread, which calls `step(Clock::now())` at once and then every
    /// sample_every. Does nothing if it is already running; after `stop()` it starts again.
    /// Thread-safe; allocates the thread. Throws std::logic_error when called from inside
    /// `step()` (a callback or the target).
    void start() {
        if (detail::monitor_step_scope::inside(this)) {
            throw std::logic_error("tradeagg::monitor::start() called from inside step()");
        }
        const std::lock_guard control(control_mutex_);
        if (thread_.joinable()) {
            {
                const std::lock_guard wake(wake_mutex_);
                if (!stop_requested_) {
                    return;
                }
            }
            thread_.join(); // a stop asked for from inside step(), not yet waited for
        }
        {
            const std::lock_guard wake(wake_mutex_);
            stop_requested_ = false;
        }
        thread_ = std::thread([this] {
            detail::name_this_thread("tradeagg-monitor");
            run();
        });
    }

    /// Stops the background thread: wakes it at once (it waits on a condition variable, not in
    /// a sleep) and joins it, so it blocks for at most the step in progress. Idempotent;
    /// thread-safe. Called from inside `step()` (a callback or the target), it only asks the
    /// thread to stop and returns; the next `start()`, `stop()` or the destructor joins it.
    void stop() {
        if (detail::monitor_step_scope::inside(this)) {
            request_stop();
            return;
        }
        const std::lock_guard control(control_mutex_);
        request_stop();
        if (thread_.joinable()) {
            thread_.join();
        }
    }

    /// Takes one sample at time `now`: computes cpu_fraction, raises and clears alerts, and
    /// runs a tuning step when one is due (the first call starts the tuning period; a step is
    /// due at the first sample at least tune_every - sample_every / 2 after the previous one, so
    /// that a sample taken a moment early does not put tuning off by a whole period). Then
    /// calls the callbacks, on this thread, without holding the lock `stats()` takes.
    ///
    /// Thread-safe: concurrent calls run one after the other. Do not mix your own times with a
    /// running background thread. Allocates only the messages of alerts and adjustments (and
    /// whatever the target allocates). An exception from the target propagates. Throws
    /// std::logic_error when called from inside `step()`.
    void step(time_point now) {
        if (detail::monitor_step_scope::inside(this)) {
            throw std::logic_error("tradeagg::monitor::step() called from inside step()");
        }
        const std::lock_guard serial(step_mutex_);
        const detail::monitor_step_scope scope(this);

        monitor_sample sample = target_.monitor_sample();
        const bool cpu_known = measure_cpu(sample, now);
        std::vector<alert> alerts;
        check_alerts(sample, alerts);
        window_.heap_inuse_mb.add(sample.heap_inuse_mb);
        window_.resident_mb.add(sample.resident_mb);
        window_.gc_cpu_fraction.add(sample.gc_cpu_fraction);
        if (cpu_known) {
            window_.cpu_fraction.add(sample.cpu_fraction);
        }
        {
            const std::lock_guard lock(stats_mutex_);
            ++stats_.samples;
            stats_.last = sample;
            for (const alert& a : alerts) {
                ++(a.raised ? stats_.alerts_raised : stats_.alerts_cleared);
                stats_.alerts_active[static_cast<std::size_t>(a.kind)] = a.raised;
            }
        }
        for (const alert& a : alerts) {
            notify(options_.on_alert, a);
        }

        if (!tuning_due(now)) {
            return;
        }
        std::optional<tuning_event> event = tune(sample);
        {
            const std::lock_guard lock(stats_mutex_);
            ++stats_.tunings;
            if (event) {
                ++stats_.adjustments;
                if (stats_.recent.size() == recent_capacity) {
                    stats_.recent.erase(stats_.recent.begin());
                }
                stats_.recent.push_back(*event);
            }
        }
        if (event) {
            notify(options_.on_tuning, *event);
        }
    }

    /// A snapshot of the counters and the latest sample. Any thread; allocates the copy of
    /// `recent`; blocks only while a step publishes its results (never during a callback).
    [[nodiscard]] stats_type stats() const {
        const std::lock_guard lock(stats_mutex_);
        return stats_;
    }

    /// The options in force. Any thread; they never change.
    [[nodiscard]] const monitor_options& options() const noexcept { return options_; }

private:
    /// Means of the readings since the previous tuning step.
    struct tuning_window {
        detail::monitor_mean heap_inuse_mb;
        detail::monitor_mean resident_mb;
        detail::monitor_mean gc_cpu_fraction;
        detail::monitor_mean cpu_fraction;
    };

    static void check_options(const monitor_options& o) {
        const auto fail = [](const std::string& what) {
            throw std::invalid_argument("tradeagg::monitor: " + what);
        };
        if (o.sample_every.count() <= 0) {
            fail("sample_every must be > 0 ms (got " + std::to_string(o.sample_every.count()) +
                 " ms)");
        }
        if (o.tune_every < o.sample_every) {
            fail("tune_every (" + std::to_string(o.tune_every.count()) +
                 " ms) must be >= sample_every (" + std::to_string(o.sample_every.count()) +
                 " ms)");
        }
        const auto non_negative = [&](const char* name, double v) {
            if (!(v >= 0)) {
                fail(std::string(name) + " must be >= 0 (got " + detail::monitor_number(v) + ")");
            }
        };
        non_negative("thresholds.heap_inuse_mb", o.thresholds.heap_inuse_mb);
        non_negative("thresholds.gc_cpu_fraction", o.thresholds.gc_cpu_fraction);
        non_negative("thresholds.redis_latency_avg_ms", o.thresholds.redis_latency_avg_ms);
        non_negative("gc_cpu_high", o.gc_cpu_high);
        non_negative("cpu_high", o.cpu_high);
        if (!(o.memory_high_fraction > 0)) {
            fail("memory_high_fraction must be > 0 (got " +
                 detail::monitor_number(o.memory_high_fraction) + ")");
        }
        if (!(o.raise_factor > 1) || !std::isfinite(o.raise_factor)) {
            fail("raise_factor must be finite and > 1 (got " +
                 detail::monitor_number(o.raise_factor) + ")");
        }
        if (!(o.lower_factor > 0 && o.lower_factor < 1)) {
            fail("lower_factor must be in (0, 1) (got " + detail::monitor_number(o.lower_factor) +
                 ")");
        }
    }

    /// Fills `sample.cpu_fraction` from the CPU time used since the previous sample. Returns
    /// false when there is nothing to compare with (first sample, time not moving forward, CPU
    /// time going backwards or unreadable).
    bool measure_cpu(monitor_sample& sample, time_point now) noexcept {
        sample.cpu_fraction = 0;
        bool known = false;
        if (previous_time_ && now > *previous_time_ && std::isfinite(sample.cpu_seconds) &&
            sample.cpu_seconds >= previous_cpu_seconds_) {
            const double wall = std::chrono::duration<double>(now - *previous_time_).count();
            sample.cpu_fraction = std::clamp(
                (sample.cpu_seconds - previous_cpu_seconds_) / (wall * cores_), 0.0, 1.0);
            known = true;
        }
        previous_time_ = now;
        previous_cpu_seconds_ = sample.cpu_seconds;
        return known;
    }

    void check_alerts(const monitor_sample& s, std::vector<alert>& out) {
        const alert_thresholds& t = options_.thresholds;
        check_alert(alert_kind::heap_inuse, s.heap_inuse_mb, t.heap_inuse_mb, out);
        check_alert(alert_kind::gc_cpu, s.gc_cpu_fraction, t.gc_cpu_fraction, out);
        // Compared as integers: a double cannot tell threads_off from threads_off - 1.
        crossing(alert_kind::threads, s.threads > t.threads, static_cast<double>(s.threads),
                 static_cast<double>(t.threads), out);
        if (s.redis_latency_avg_ms) {
            check_alert(alert_kind::redis_latency, *s.redis_latency_avg_ms, t.redis_latency_avg_ms,
                        out);
        }
    }

    void check_alert(alert_kind kind, double value, double threshold, std::vector<alert>& out) {
        if (!std::isnan(value)) { // NaN: no reading, which neither raises nor clears
            crossing(kind, value > threshold, value, threshold, out);
        }
    }

    void crossing(alert_kind kind, bool above, double value, double threshold,
                  std::vector<alert>& out) {
        bool& was_above = above_[static_cast<std::size_t>(kind)];
        if (above == was_above) {
            return;
        }
        was_above = above;
        std::string message = std::string(to_string(kind)) + " " + detail::monitor_number(value) +
                              (above ? " > " : " <= ") + detail::monitor_number(threshold) +
                              (above ? ": alert raised" : ": alert cleared");
        out.push_back(alert{kind, value, threshold, above, std::move(message)});
    }

    bool tuning_due(time_point now) {
        if (!tune_start_) {
            tune_start_ = now;
            return false;
        }
        // elapsed >= tune_every - sample_every / 2, in integers.
        if (2 * (now - *tune_start_) < 2 * options_.tune_every - options_.sample_every) {
            return false;
        }
        tune_start_ = now;
        return true;
    }

    /// One tuning step over the window, which it empties. Returns the adjustment, if any.
    std::optional<tuning_event> tune(const monitor_sample& latest) {
        const tuning_window w = std::exchange(window_, tuning_window{});
        auto [lo, hi] = target_.gc_target_bounds();
        if (lo > hi) {
            std::swap(lo, hi);
        }
        const unsigned old = latest.gc_target_percent;

        std::string why;
        const auto over = [&why](const char* name, const std::optional<double>& mean, double limit,
                                 const std::string& limit_text) {
            if (mean && *mean > limit) {
                why += (why.empty() ? "" : " and ") + std::string(name) + " " +
                       detail::monitor_number(*mean) + " > " + limit_text;
            }
        };

        bool up = false;
        const double limit_mb = latest.memory_limit_mb;
        if (limit_mb > 0 && std::isfinite(limit_mb)) {
            const double line = options_.memory_high_fraction * limit_mb;
            const std::string text = detail::monitor_number(line) + " (" +
                                     detail::monitor_number(options_.memory_high_fraction) +
                                     " x memory_limit_mb " + detail::monitor_number(limit_mb) + ")";
            over("heap_inuse_mb", w.heap_inuse_mb.value(), line, text);
            over("resident_mb", w.resident_mb.value(), line, text);
        }
        if (why.empty()) {
            over("gc_cpu_fraction", w.gc_cpu_fraction.value(), options_.gc_cpu_high,
                 detail::monitor_number(options_.gc_cpu_high));
            over("cpu_fraction", w.cpu_fraction.value(), options_.cpu_high,
                 detail::monitor_number(options_.cpu_high));
            up = !why.empty();
        }
        if (why.empty()) {
            return std::nullopt;
        }

        const double factor = up ? options_.raise_factor : options_.lower_factor;
        const double scaled = detail::scaled_gc_target(old, factor, up);
        const auto wanted = static_cast<unsigned>(
            std::clamp(scaled, static_cast<double>(lo), static_cast<double>(hi)));
        if (up ? wanted <= old : wanted >= old) {
            return std::nullopt; // already at the bound
        }
        const unsigned applied = target_.set_gc_target(wanted);
        if (applied == old) {
            return std::nullopt;
        }
        why += std::string(up ? ": raise target " : ": lower target ") + std::to_string(old) +
               " -> " + std::to_string(applied);
        if (up ? scaled > hi : scaled < lo) {
            why += up ? " (clamped to the policy's max)" : " (clamped to the policy's min)";
        }
        return tuning_event{old, applied, std::move(why)};
    }

    template <class Callback, class Event>
    void notify(const Callback& callback, const Event& event) noexcept {
        if (!callback) {
            return;
        }
        try {
            callback(event);
        } catch (...) {
            const std::lock_guard lock(stats_mutex_);
            ++stats_.callback_errors;
        }
    }

    void request_stop() {
        {
            const std::lock_guard wake(wake_mutex_);
            stop_requested_ = true;
        }
        wake_.notify_all();
    }

    /// The background thread: a step now, then one every sample_every on the steady clock
    /// (whatever `Clock` is), until asked to stop.
    void run() noexcept {
        using steady = std::chrono::steady_clock;
        auto next = steady::now();
        std::unique_lock wake(wake_mutex_);
        while (!stop_requested_) {
            wake.unlock();
            try {
                step(Clock::now());
            } catch (...) {
                const std::lock_guard lock(stats_mutex_);
                ++stats_.step_errors;
            }
            wake.lock();
            next += options_.sample_every;
            const auto now = steady::now();
            if (next <= now) {
                next = now + options_.sample_every; // overran: skip the missed ticks, no burst
            }
            wake_.wait_until(wake, next, [this] { return stop_requested_; });
        }
    }

    Target& target_;
    const monitor_options options_;
    unsigned cores_;

    // Touched only inside step(), which step_mutex_ serialises.
    std::mutex step_mutex_;
    std::optional<time_point> previous_time_{};
    double previous_cpu_seconds_ = 0;
    std::optional<time_point> tune_start_{};
    tuning_window window_{};
    std::array<bool, alert_kind_count> above_{};

    mutable std::mutex stats_mutex_;
    stats_type stats_{};

    std::mutex control_mutex_; // serialises start() and stop(); held while joining
    std::mutex wake_mutex_;
    std::condition_variable wake_;
    bool stop_requested_ = false;
    std::thread thread_;
};

} // namespace tradeagg
