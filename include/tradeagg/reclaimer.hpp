#pragma once
// Reclamation: when a shard gives memory back (the cadence, GOGC's meaning), and the soft
// memory limit and active-token cap that decide whether new tokens are admitted.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <tradeagg/config.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg {

/// What one shard's reclamation did.
struct reclaim_result {
    std::size_t tokens_evicted = 0; ///< idle tokens whose state was released
    std::size_t bytes_before = 0;   ///< token-state bytes reserved before
    std::size_t bytes_after = 0;    ///< and after
    double cpu_seconds = 0.0;       ///< CPU time the reclamation took on its shard's thread
};

/// When a shard reclaims, with GOGC's meaning: once the token-state bytes in use have grown by
/// `target_percent` over what was in use after the last reclamation (never below `floor`
/// bytes, so a small book is not reclaimed over and over). The target may change at any time.
class reclaim_cadence {
public:
    reclaim_cadence(unsigned target_percent, std::size_t floor_bytes) noexcept
        : target_(target_percent), floor_(floor_bytes), base_(floor_bytes) {}

    /// The growth, in percent, that triggers the next reclamation. Thread-safe.
    [[nodiscard]] unsigned target() const noexcept {
        return target_.load(std::memory_order_relaxed);
    }
    /// Changes the target; takes effect at the shard's next check. Thread-safe.
    void set_target(unsigned percent) noexcept {
        target_.store(percent, std::memory_order_relaxed);
    }

    /// Bytes in use at which the next reclamation triggers. Shard thread.
    [[nodiscard]] std::size_t trigger_bytes() const noexcept {
        return base_ + base_ / 100 * target() + base_ % 100 * target() / 100;
    }
    /// True if `in_use_bytes` reached the trigger. Shard thread.
    [[nodiscard]] bool due(std::size_t in_use_bytes) const noexcept {
        return in_use_bytes >= trigger_bytes();
    }
    /// Records what was in use after a reclamation: the base of the next trigger. Shard thread.
    void reclaimed(std::size_t in_use_bytes) noexcept { base_ = std::max(in_use_bytes, floor_); }

private:
    std::atomic<unsigned> target_;
    std::size_t floor_;
    std::size_t base_;
};

/// The bytes a pipeline holds against its soft limit (GOMEMLIMIT's meaning) and its active
/// tokens against their cap. Each shard publishes its own share; new tokens are admitted while
/// both are below their limits. Approaching the limit (`near_fraction` of it) makes shards
/// reclaim at every flush. Publishing is done by shard threads; reading by anyone.
class memory_budget {
public:
    /// Reclaim at every flush from this fraction of the limit on.
    static constexpr double near_fraction = 0.9;

    /// `limit_bytes` 0: no memory limit. `max_active_tokens` 0: no cap. Allocates.
    memory_budget(std::size_t shards, std::size_t limit_bytes, std::size_t max_active_tokens)
        : shards_(shards), bytes_(std::make_unique<std::atomic<std::size_t>[]>(shards)),
          tokens_(std::make_unique<std::atomic<std::size_t>[]>(shards)), limit_(limit_bytes),
          max_tokens_(max_active_tokens) {
        for (std::size_t s = 0; s < shards; ++s) {
            bytes_[s].store(0, std::memory_order_relaxed);
            tokens_[s].store(0, std::memory_order_relaxed);
        }
    }

    /// A shard's bytes and active tokens, and the bytes shared by all shards (token table);
    /// recomputes admission. Called by each shard's thread. Never allocates.
    void publish(std::size_t shard, std::size_t bytes, std::size_t active_tokens,
                 std::size_t shared_bytes) noexcept {
        bytes_[shard].store(bytes, std::memory_order_relaxed);
        tokens_[shard].store(active_tokens, std::memory_order_relaxed);
        shared_.store(shared_bytes, std::memory_order_relaxed);
        const bool over_memory = limit() != 0 && used_bytes() >= limit();
        const bool over_tokens = max_tokens_ != 0 && active_tokens_total() >= max_tokens_;
        const reject_reason now = over_memory   ? reject_reason::memory_limit
                                  : over_tokens ? reject_reason::active_token_limit
                                                : reject_reason::none;
        // Producers read this line on every push: a store of the same value would still take
        // it from their caches at every flush.
        if (refusal_.load(std::memory_order_relaxed) != now) {
            refusal_.store(now, std::memory_order_relaxed);
        }
    }

    /// Bytes published by every shard plus the shared bytes. Thread-safe.
    [[nodiscard]] std::size_t used_bytes() const noexcept {
        std::size_t total = shared_.load(std::memory_order_relaxed);
        for (std::size_t s = 0; s < shards_; ++s) {
            total += bytes_[s].load(std::memory_order_relaxed);
        }
        return total;
    }
    /// Tokens with state, as last published. Thread-safe.
    [[nodiscard]] std::size_t active_tokens_total() const noexcept {
        std::size_t total = 0;
        for (std::size_t s = 0; s < shards_; ++s) {
            total += tokens_[s].load(std::memory_order_relaxed);
        }
        return total;
    }
    /// The soft limit in bytes, 0 for none. Thread-safe.
    [[nodiscard]] std::size_t limit() const noexcept {
        return limit_.load(std::memory_order_relaxed);
    }
    /// Changes the soft limit (0: none); takes effect at the next publish. Thread-safe.
    void set_limit(std::size_t bytes) noexcept { limit_.store(bytes, std::memory_order_relaxed); }
    /// The active-token cap, 0 for none. Thread-safe.
    [[nodiscard]] std::size_t max_active_tokens() const noexcept { return max_tokens_; }
    /// True once the bytes in use reached `near_fraction` of the limit. Thread-safe.
    [[nodiscard]] bool near_limit() const noexcept {
        const std::size_t l = limit();
        return l != 0 &&
               static_cast<double>(used_bytes()) >= near_fraction * static_cast<double>(l);
    }
    /// False while the memory limit or the token cap is reached: a trade for a token without
    /// state is then refused or waits, as the policy says. Thread-safe; one relaxed load.
    [[nodiscard]] bool admitting() const noexcept { return refusal() == reject_reason::none; }
    /// Why new tokens are not admitted (`memory_limit` first), or `none`. Thread-safe.
    [[nodiscard]] reject_reason refusal() const noexcept {
        return refusal_.load(std::memory_order_relaxed);
    }

private:
    std::size_t shards_;
    std::unique_ptr<std::atomic<std::size_t>[]> bytes_;
    std::unique_ptr<std::atomic<std::size_t>[]> tokens_;
    std::atomic<std::size_t> shared_{0};
    std::atomic<std::size_t> limit_;
    std::size_t max_tokens_;
    alignas(cache_line_size) std::atomic<reject_reason> refusal_{reject_reason::none};
};

namespace detail {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool allocator_replaced = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
    __has_feature(memory_sanitizer)
inline constexpr bool allocator_replaced = true;
#else
inline constexpr bool allocator_replaced = false;
#endif
#else
inline constexpr bool allocator_replaced = false;
#endif

/// Asks the C allocator to give the free memory in its heaps back to the system (glibc's
/// `malloc_trim`; a no-op elsewhere). Takes the allocator's locks: reclamation only. Skipped
/// when a sanitizer replaces the allocator: glibc's heaps are then not the ones in use, and
/// trimming them from a thread that never used them trips glibc's arena accounting when the
/// thread exits.
inline void return_free_memory_to_system() noexcept {
#if defined(__GLIBC__)
    if constexpr (!allocator_replaced) {
        ::malloc_trim(0);
    }
#endif
}

} // namespace detail
} // namespace tradeagg
