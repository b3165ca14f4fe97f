#pragma once
// The monitor's alerts: the thresholds (the seed's recommended ones by default), what each
// watches, and a crossing as the monitor reports it.

#include <cstddef>
#include <limits>
#include <string>
#include <string_view>

namespace tradeagg {

/// Alert levels; a reading strictly greater than its threshold raises an alert. The defaults
/// are the seed's recommended thresholds. Disable one by setting it to `off` (infinity), or
/// `threads` to `threads_off`: no reading is greater than those.
struct alert_thresholds {
    static constexpr double off = std::numeric_limits<double>::infinity();
    static constexpr std::size_t threads_off = std::numeric_limits<std::size_t>::max();

    double heap_inuse_mb = 400;
    double gc_cpu_fraction = 0.1;
    std::size_t threads = 5000;
    double redis_latency_avg_ms = 50;
};

/// What an alert is about: one per threshold in `alert_thresholds`.
enum class alert_kind { heap_inuse, gc_cpu, threads, redis_latency };

/// The number of `alert_kind` values, for arrays indexed by kind.
inline constexpr std::size_t alert_kind_count = 4;

/// The seed's name of the metric an alert watches (operators of the old service know these);
/// `num_goroutines` is `monitor_sample::threads`, the process's thread count. Never allocates.
[[nodiscard]] constexpr std::string_view to_string(alert_kind k) noexcept {
    switch (k) {
    case alert_kind::heap_inuse:
        return "heap_inuse_mb";
    case alert_kind::gc_cpu:
        return "gc_cpu_fraction";
    case alert_kind::threads:
        return "num_goroutines";
    case alert_kind::redis_latency:
        return "redis_latency_avg_ms";
    }
    return "unknown";
}

/// A threshold crossing: `raised` when the reading went above the threshold, cleared
/// (`raised == false`) when it came back to or below it.
struct alert {
    alert_kind kind = alert_kind::heap_inuse;
    double value = 0;     ///< the reading that crossed
    double threshold = 0; ///< the level it crossed
    bool raised = false;  ///< true: went above; false: back to or below (cleared)
    std::string message;  ///< e.g. "heap_inuse_mb 412.5 > 400: alert raised"
};

} // namespace tradeagg
