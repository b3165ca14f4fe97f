#pragma once
// What a pipeline lets an operator tune while it runs (the reclamation target, the batch width,
// the flush tick, the soft memory limit), and the seed's two presets, "optimize for throughput"
// and "optimize for latency", as rules from the values in force to the next ones.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <string_view>

#include <tradeagg/policy.hpp>
#include <tradeagg/runtime_config.hpp>

namespace tradeagg {

/// The values tunable while running, as they are now (`pipeline::settings()`).
struct runtime_settings {
    unsigned gc_target_percent = 0;
    std::size_t batch_width = 0;
    std::chrono::milliseconds flush_interval{0};
    std::size_t memory_limit_mb = 0;
};

/// One value a preset changed.
struct setting_change {
    std::string_view setting; ///< as spelled in `runtime_config`
    double before = 0;
    double after = 0;
};

/// The seed's "optimize for throughput": reclamation target up (twice the policy's, within
/// its maximum: fewer reclamations), the widest batches the policy allows, and a flush tick
/// twice the policy's (more coalescing per write). Never lowers a value the operator raised
/// further. The memory limit is left alone.
template <policy Policy>
[[nodiscard]] runtime_settings throughput_preset(const runtime_settings& now) noexcept {
    runtime_settings next = now;
    next.gc_target_percent =
        std::clamp(std::max(now.gc_target_percent, 2 * Policy::gc_target_percent),
                   Policy::gc_target_min_percent, Policy::gc_target_max_percent);
    next.batch_width = Policy::batch_width;
    next.flush_interval = std::clamp(std::max(now.flush_interval, 2 * Policy::flush_interval),
                                     min_flush_interval, max_flush_interval);
    return next;
}

/// The seed's "optimize for latency": reclamation target down (half the policy's, within its
/// minimum: smaller, more frequent reclamations), batches a quarter of the policy's width, and
/// a flush tick a quarter of the policy's (results reach the sink sooner). Never raises a value
/// the operator lowered further. The memory limit is left alone.
template <policy Policy>
[[nodiscard]] runtime_settings latency_preset(const runtime_settings& now) noexcept {
    runtime_settings next = now;
    next.gc_target_percent =
        std::clamp(std::min(now.gc_target_percent, Policy::gc_target_percent / 2),
                   Policy::gc_target_min_percent, Policy::gc_target_max_percent);
    next.batch_width = std::max<std::size_t>(1, Policy::batch_width / 4);
    next.flush_interval = std::clamp(std::min(now.flush_interval, Policy::flush_interval / 4),
                                     min_flush_interval, max_flush_interval);
    return next;
}

} // namespace tradeagg
