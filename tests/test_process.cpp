// Readings of the process from the operating system.

#include <cstddef>
#include <cstring>
#include <memory>
#include <thread>

#include <doctest/doctest.h>

#include <tradeagg/process_stats.hpp>

using namespace tradeagg;

TEST_CASE("process statistics see memory touched and threads started") {
#if defined(__linux__)
    const process_stats before = read_process_stats();
    CHECK(before.resident_bytes > 0);
    CHECK(before.peak_resident_bytes >= before.resident_bytes / 2);
    CHECK(before.threads >= 1);

    // Touch 64 MiB: resident memory must grow by most of it.
    constexpr std::size_t size = std::size_t{64} << 20;
    auto block = std::make_unique<char[]>(size);
    std::memset(block.get(), 1, size);
    const process_stats touched = read_process_stats();
    CHECK(touched.resident_bytes >= before.resident_bytes + size / 2);
    CHECK(touched.peak_resident_bytes >= touched.resident_bytes / 2);
    CHECK(block[size - 1] == 1);

    std::thread extra([] {
        const process_stats inside = read_process_stats();
        CHECK(inside.threads >= 2);
    });
    extra.join();
#else
    CHECK(read_process_stats().resident_bytes == 0);
#endif
}

TEST_CASE("CPU time grows with work, per thread and for the process") {
    const double process_before = read_process_stats().cpu_seconds;
    const double thread_before = thread_cpu_seconds();
    volatile double sink = 0;
    while (thread_cpu_seconds() - thread_before < 0.05) {
        for (int i = 0; i < 10'000; ++i) {
            sink = sink + 1.0;
        }
    }
    CHECK(thread_cpu_seconds() - thread_before >= 0.05);
#if defined(__linux__)
    CHECK(read_process_stats().cpu_seconds - process_before >= 0.04);
#endif
}
