#pragma once
// Pinning a thread to one CPU (Linux; elsewhere pinning is reported unsupported).

#include <cstddef>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace tradeagg::detail {

#if defined(__linux__)
inline constexpr bool can_pin_threads = true;
#else
inline constexpr bool can_pin_threads = false;
#endif

/// The CPUs the calling thread may run on, in increasing order; empty where unknown.
inline std::vector<unsigned> allowed_cpus() {
    std::vector<unsigned> cpus;
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        for (unsigned c = 0; c < CPU_SETSIZE; ++c) {
            if (CPU_ISSET(c, &set)) {
                cpus.push_back(c);
            }
        }
    }
#endif
    return cpus;
}

/// `cpus` as a list for messages: "0-3,6".
inline std::string cpu_list(const std::vector<unsigned>& cpus) {
    std::string out;
    for (std::size_t i = 0; i < cpus.size();) {
        std::size_t j = i;
        while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) {
            ++j;
        }
        out += (out.empty() ? "" : ",") + std::to_string(cpus[i]);
        if (j > i) {
            out += "-" + std::to_string(cpus[j]);
        }
        i = j + 1;
    }
    return out.empty() ? "none" : out;
}

/// Pins the calling thread to `cpu`. False if the system refused (or cannot pin).
inline bool pin_this_thread(unsigned cpu) noexcept {
#if defined(__linux__)
    if (cpu >= CPU_SETSIZE) {
        return false;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
#else
    (void)cpu;
    return false;
#endif
}

/// The CPUs of `cpus` a thread of this process may be pinned to, whatever the calling thread's
/// own affinity: found by pinning a short-lived thread to each in turn. Allocates; starts a
/// thread.
inline std::vector<unsigned> pinnable_cpus(const std::vector<unsigned>& cpus) {
    std::vector<unsigned> ok;
    std::thread probe([&] {
        for (const unsigned cpu : cpus) {
            if (pin_this_thread(cpu)) {
                ok.push_back(cpu);
            }
        }
    });
    probe.join();
    return ok;
}

} // namespace tradeagg::detail
