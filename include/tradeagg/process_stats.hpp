#pragma once
// What the operating system says about this process: resident memory, CPU time, threads.
// These sit beside the library's own byte counts, which cover only what it allocated itself.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>

#if defined(__linux__)
#include <sys/resource.h>
#include <unistd.h>
#endif

#include <tradeagg/config.hpp>

namespace tradeagg {

/// A reading of the process as a whole. A field the platform cannot provide stays zero (only
/// Linux provides all of them).
struct process_stats {
    std::size_t resident_bytes = 0;      ///< resident set size now
    std::size_t virtual_bytes = 0;       ///< virtual memory size now
    std::size_t peak_resident_bytes = 0; ///< highest resident set size so far
    std::size_t threads = 0;             ///< threads in the process
    double cpu_seconds = 0.0;            ///< user + system CPU time of every thread
};

namespace detail {

#if defined(__linux__)
/// The number after `key` in /proc/self/status (e.g. "VmHWM:" in kB, "Threads:"), or 0.
inline std::size_t proc_status_value(const char* key) noexcept {
    std::FILE* f = std::fopen("/proc/self/status", "r");
    if (f == nullptr) {
        return 0;
    }
    char line[256];
    std::size_t value = 0;
    const std::size_t key_length = std::strlen(key);
    while (std::fgets(line, sizeof line, f) != nullptr) {
        if (std::strncmp(line, key, key_length) == 0) {
            unsigned long long v = 0;
            if (std::sscanf(line + key_length, "%llu", &v) == 1) {
                value = static_cast<std::size_t>(v);
            }
            break;
        }
    }
    std::fclose(f);
    return value;
}
#endif

} // namespace detail

/// Reads the process's resident memory, peak, thread count and CPU time. Thread-safe; opens
/// two /proc files (a few microseconds): call it from a monitor, not from a hot loop.
[[nodiscard]] inline process_stats read_process_stats() noexcept {
    process_stats s;
#if defined(__linux__)
    if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
        unsigned long long pages_total = 0;
        unsigned long long pages_resident = 0;
        if (std::fscanf(f, "%llu %llu", &pages_total, &pages_resident) == 2) {
            const long page = ::sysconf(_SC_PAGESIZE);
            const auto page_bytes = static_cast<std::size_t>(page > 0 ? page : 4096);
            s.resident_bytes = static_cast<std::size_t>(pages_resident) * page_bytes;
            s.virtual_bytes = static_cast<std::size_t>(pages_total) * page_bytes;
        }
        std::fclose(f);
    }
    s.peak_resident_bytes = detail::proc_status_value("VmHWM:") * 1024;
    s.threads = detail::proc_status_value("Threads:");
    rusage usage{};
    if (::getrusage(RUSAGE_SELF, &usage) == 0) {
        s.cpu_seconds = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                        static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) * 1e-6;
    }
#endif
    return s;
}

/// CPU seconds the calling thread has consumed (to charge work, such as a reclamation, to the
/// thread that did it). Zero where the platform has no per-thread clock. Never allocates.
[[nodiscard]] inline double thread_cpu_seconds() noexcept {
#if defined(CLOCK_THREAD_CPUTIME_ID)
    timespec ts{};
    if (::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) {
        return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
    }
#endif
    return 0.0;
}

} // namespace tradeagg
