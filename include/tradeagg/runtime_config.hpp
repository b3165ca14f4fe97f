#pragma once
// Values a running deployment may tune, each within the bounds its policy fixed at compile time.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tradeagg/config.hpp>
#include <tradeagg/detail/cpu_affinity.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg {

/// Runtime settings. An empty optional means "the policy's value".
struct runtime_config {
    std::size_t shards = 1;                     ///< worker threads, 1..Policy::max_shards
    std::optional<std::size_t> ring_capacity{}; ///< per (producer, shard) ring, 2..ingress_capacity
    std::optional<std::size_t> batch_width{};   ///< 1..Policy::batch_width
    std::optional<std::chrono::milliseconds> flush_interval{}; ///< 1 ms..60 s
    std::optional<std::size_t> max_tokens{};     ///< interned tokens, 1..Policy::max_tokens
    std::optional<unsigned> gc_target_percent{}; ///< gc_target_min_percent..gc_target_max_percent
    /// Soft memory limit in MiB (0: none), 0..max_memory_limit_mb; the policy's by default.
    std::optional<std::size_t> memory_limit_mb{};
    /// Tokens with state at once (the seed's MAX_TOKEN_PROCESSORS), 1..Policy::max_tokens.
    std::optional<std::size_t> max_active_tokens{};
    /// Release the state of idle tokens once nothing in it can change (see
    /// `pipeline::advance_time`). Off only to compare runs with and without eviction.
    bool evict_idle_tokens = true;
    /// CPUs the shards' worker threads are pinned to: shard i's to `worker_cpus[i % size]`;
    /// empty, not pinned (the default). Each must be a CPU this process may run on (Linux).
    /// For `busy_spin` workers, give each a core no other busy thread uses.
    std::vector<unsigned> worker_cpus{};
    /// Called on a shard's worker thread for every late trade (never merged); may be empty.
    /// Must be thread-safe when there are several shards; must not block for long.
    std::function<void(const late_trade&)> on_late_trade{};
};

/// A runtime value outside its policy's bounds; `what()` names the field, the value and the bound.
class config_error : public std::invalid_argument {
public:
    config_error(std::string field, const std::string& message)
        : std::invalid_argument(message), field_(std::move(field)) {}
    /// The offending field's name, as spelled in `runtime_config`.
    [[nodiscard]] const std::string& field() const noexcept { return field_; }

private:
    std::string field_;
};

/// A `runtime_config` with every value chosen and checked against `Policy`.
template <policy Policy>
struct resolved_config {
    std::size_t shards = 1;
    std::size_t ring_capacity = Policy::ingress_capacity;
    std::size_t batch_width = Policy::batch_width;
    std::chrono::milliseconds flush_interval = Policy::flush_interval;
    std::size_t max_tokens = Policy::max_tokens;
    unsigned gc_target_percent = Policy::gc_target_percent;
    std::size_t memory_limit_mb = Policy::memory_limit_mb;
    std::size_t max_active_tokens = Policy::max_tokens;
    bool evict_idle_tokens = true;
    std::vector<unsigned> worker_cpus{};
};

/// Largest soft memory limit accepted, in MiB (16 TiB).
inline constexpr std::size_t max_memory_limit_mb = std::size_t{1} << 24;

inline constexpr std::chrono::milliseconds min_flush_interval{1};
inline constexpr std::chrono::milliseconds max_flush_interval{60'000};

namespace detail {
template <class T>
void check_range(const char* field, std::string_view policy_name, T value, T low, T high,
                 const char* unit = "") {
    if (value < low || value > high) {
        throw config_error(field, std::string(field) + " = " + std::to_string(value) + unit +
                                      " is out of bounds: " + std::string(policy_name) +
                                      " allows " + std::to_string(low) + ".." +
                                      std::to_string(high) + unit);
    }
}
} // namespace detail

/// Fills defaults from `Policy` and checks every bound. Throws `config_error` naming the first
/// offending field. Allocates only to build the error.
template <policy Policy>
[[nodiscard]] resolved_config<Policy> resolve(const runtime_config& cfg) {
    resolved_config<Policy> r;
    const std::string_view pn = Policy::name;
    detail::check_range<std::size_t>("shards", pn, cfg.shards, 1, Policy::max_shards);
    r.shards = cfg.shards;
    r.ring_capacity = cfg.ring_capacity.value_or(Policy::ingress_capacity);
    detail::check_range<std::size_t>("ring_capacity", pn, r.ring_capacity, 2,
                                     Policy::ingress_capacity);
    r.batch_width = cfg.batch_width.value_or(Policy::batch_width);
    detail::check_range<std::size_t>("batch_width", pn, r.batch_width, 1, Policy::batch_width);
    r.flush_interval = cfg.flush_interval.value_or(Policy::flush_interval);
    detail::check_range<long long>("flush_interval", pn, r.flush_interval.count(),
                                   min_flush_interval.count(), max_flush_interval.count(), " ms");
    r.max_tokens = cfg.max_tokens.value_or(Policy::max_tokens);
    detail::check_range<std::size_t>("max_tokens", pn, r.max_tokens, 1, Policy::max_tokens);
    r.gc_target_percent = cfg.gc_target_percent.value_or(Policy::gc_target_percent);
    detail::check_range<unsigned>("gc_target_percent", pn, r.gc_target_percent,
                                  Policy::gc_target_min_percent, Policy::gc_target_max_percent);
    r.memory_limit_mb = cfg.memory_limit_mb.value_or(Policy::memory_limit_mb);
    detail::check_range<std::size_t>("memory_limit_mb", pn, r.memory_limit_mb, 0,
                                     max_memory_limit_mb, " MiB");
    r.max_active_tokens = cfg.max_active_tokens.value_or(Policy::max_tokens);
    detail::check_range<std::size_t>("max_active_tokens", pn, r.max_active_tokens, 1,
                                     Policy::max_tokens);
    r.evict_idle_tokens = cfg.evict_idle_tokens;
    if (!cfg.worker_cpus.empty()) {
        if constexpr (!detail::can_pin_threads) {
            throw config_error("worker_cpus", "worker_cpus: pinning threads is supported on "
                                              "Linux only");
        }
        const std::vector<unsigned> usable = detail::pinnable_cpus(cfg.worker_cpus);
        for (const unsigned cpu : cfg.worker_cpus) {
            if (std::find(usable.begin(), usable.end(), cpu) == usable.end()) {
                throw config_error("worker_cpus",
                                   "worker_cpus: CPU " + std::to_string(cpu) +
                                       " is not one this process may run on (this thread may: " +
                                       detail::cpu_list(detail::allowed_cpus()) + ")");
            }
        }
        r.worker_cpus = cfg.worker_cpus;
    }
    return r;
}

} // namespace tradeagg
