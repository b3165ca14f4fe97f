#pragma once
// What the monitor (monitor.hpp) watches and tunes: a `monitorable` object, which reads as a
// `monitor_sample` and has a reclamation target; and `monitored_pipeline`, which makes a
// `pipeline` one.

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <functional>
#include <optional>
#include <utility>

#include <tradeagg/pipeline.hpp>
#include <tradeagg/stats.hpp>

namespace tradeagg {

/// One reading of the monitored object, filled in by its `monitor_sample()` (except
/// `cpu_fraction`, which the monitor computes).
struct monitor_sample {
    double heap_alloc_mb = 0;   ///< bytes the library reserved from the system, MiB
    double heap_inuse_mb = 0;   ///< bytes in live objects, MiB
    double resident_mb = 0;     ///< process resident set size, MiB
    double gc_cpu_fraction = 0; ///< reclamation CPU / process CPU since start, 0..1
    /// Process CPU time since start, user + system, every thread (`process_stats::cpu_seconds`).
    double cpu_seconds = 0;
    /// Set by the monitor, replacing whatever the target wrote: the growth of `cpu_seconds`
    /// since the previous sample / (wall time between the samples x available cores), clamped
    /// to 0..1. 0 on the first sample, which has nothing to compare with.
    double cpu_fraction = 0;
    std::size_t threads = 0;       ///< threads in the process (the seed's num_goroutines)
    std::size_t active_tokens = 0; ///< tokens with state
    std::optional<double> redis_latency_avg_ms{}; ///< empty when there is no Redis sink
    double memory_limit_mb = 0;                   ///< soft memory limit, 0 = none
    unsigned gc_target_percent = 0;               ///< the reclamation target in force now
};

/// Something the monitor can watch and tune. `monitor_sample()` and `set_gc_target()` are
/// called on the monitor's thread, concurrently with whatever the object's own threads do, so
/// they must be safe for that. `set_gc_target(v)` clamps `v` into `gc_target_bounds()` (the
/// policy's min, max) and returns the value in force afterwards.
///
/// A class with a member function named `monitor_sample` must spell the struct
/// `tradeagg::monitor_sample` inside its own scope.
template <class T>
concept monitorable = requires(T& t, unsigned v) {
    { t.monitor_sample() } -> std::same_as<monitor_sample>;
    { t.gc_target_bounds() } -> std::same_as<std::pair<unsigned, unsigned>>;
    { t.set_gc_target(v) } -> std::same_as<unsigned>;
};

/// A `pipeline` seen by a `monitor`: its statistics as samples, and its reclamation target as
/// what the monitor tunes. The optional `redis_latency_ms` supplies the Redis sink's mean
/// command latency (an empty result: no reading). Must not outlive the pipeline.
template <class Pipeline>
class monitored_pipeline {
public:
    explicit monitored_pipeline(Pipeline& p,
                                std::function<std::optional<double>()> redis_latency_ms = {})
        : pipeline_(p), redis_latency_ms_(std::move(redis_latency_ms)) {}

    /// Reads the pipeline's statistics (see `pipeline::stats`). Any thread; allocates.
    tradeagg::monitor_sample monitor_sample() const {
        const pipeline_stats st = pipeline_.stats();
        tradeagg::monitor_sample s;
        s.heap_alloc_mb = st.heap_alloc_mb();
        s.heap_inuse_mb = st.heap_inuse_mb();
        s.resident_mb = static_cast<double>(st.resident_bytes) / (1024.0 * 1024.0);
        s.gc_cpu_fraction = st.gc_cpu_fraction;
        s.cpu_seconds = st.process_cpu_seconds;
        s.threads = st.threads;
        s.active_tokens = st.active_tokens;
        if (redis_latency_ms_) {
            s.redis_latency_avg_ms = redis_latency_ms_();
        }
        s.memory_limit_mb = static_cast<double>(st.memory_limit_bytes) / (1024.0 * 1024.0);
        s.gc_target_percent = st.gc_target_percent;
        return s;
    }

    /// The policy's bounds of the reclamation target.
    [[nodiscard]] std::pair<unsigned, unsigned> gc_target_bounds() const noexcept {
        return Pipeline::gc_target_bounds();
    }

    /// Sets the reclamation target, clamped into the policy's bounds; returns it. Any thread.
    unsigned set_gc_target(unsigned percent) {
        const auto [low, high] = Pipeline::gc_target_bounds();
        pipeline_.set_gc_target_percent(std::clamp(percent, low, high));
        return pipeline_.gc_target_percent();
    }

private:
    Pipeline& pipeline_;
    std::function<std::optional<double>()> redis_latency_ms_;
};

} // namespace tradeagg
