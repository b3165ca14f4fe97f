#pragma once
// How a thread waits when it cannot proceed: a producer facing a full ring, or a worker facing
// empty ones. Chosen by a policy as a named type (`using wait = tradeagg::busy_spin;`).

#include <chrono>
#include <concepts>
#include <cstdint>
#include <string_view>
#include <thread>

#include <tradeagg/config.hpp>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace tradeagg {

enum class wait_kind : std::uint8_t { busy_spin, spin_then_yield, block };

/// Never gives the core away: lowest wake-up latency, one core burnt per waiting thread.
struct busy_spin {
    static constexpr wait_kind kind = wait_kind::busy_spin;
    static constexpr std::string_view name = "busy_spin";
};

/// Spins briefly, then yields the core to other threads between checks. A worker whose rings
/// stay empty for `yield_for` (10 us) then naps (up to `idle_nap`, woken by the next push), so
/// neither an idle pipeline nor the gaps between a server's requests keep its cores busy with
/// system calls; a flow with gaps under 10 us keeps it awake. A push that finds the worker
/// napping pays for the wake-up (a few microseconds), once per nap.
struct spin_then_yield {
    static constexpr wait_kind kind = wait_kind::spin_then_yield;
    static constexpr std::string_view name = "spin_then_yield";
};

/// Sleeps on a condition variable until woken (or a flush tick is due); costs a system call
/// on wake-up but no CPU while idle.
struct block {
    static constexpr wait_kind kind = wait_kind::block;
    static constexpr std::string_view name = "block";
};

/// Accepts the three wait strategies above.
template <class W>
concept wait_strategy =
    std::same_as<W, busy_spin> || std::same_as<W, spin_then_yield> || std::same_as<W, block>;

namespace detail {

/// One step of a spin loop: a pause hint that lets the sibling hyper-thread run.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#endif
}

/// Spins `spins` times before it starts yielding; used by spin_then_yield and by block before
/// it sleeps (a short spin catches the common case of data arriving a moment later).
inline constexpr unsigned spin_limit = 128;

/// How long a `spin_then_yield` worker yields, after its spins, before it naps. Short: under
/// an HTTP server's load the gaps between requests are longer, and yielding through them took
/// a sixth of the server's CPU (bench/http_ingest).
inline constexpr std::chrono::microseconds yield_for{10};

/// The longest nap of a `spin_then_yield` worker. Producers wake it, without a read-modify-write
/// on their side: a push that misses its announcement waits at most this long.
inline constexpr std::chrono::microseconds idle_nap{1'000};

/// Waits one step by the strategy's rule for the non-blocking kinds; `step` counts calls since
/// the last success. Returns false when a `block` caller should now go to sleep instead.
template <wait_kind Kind>
bool backoff(unsigned& step) noexcept {
    ++step;
    if constexpr (Kind == wait_kind::busy_spin) {
        cpu_relax();
        return true;
    } else {
        if (step < spin_limit) {
            cpu_relax();
            return true;
        }
        if constexpr (Kind == wait_kind::spin_then_yield) {
            std::this_thread::yield();
            return true;
        } else {
            return false;
        }
    }
}

} // namespace detail
} // namespace tradeagg
