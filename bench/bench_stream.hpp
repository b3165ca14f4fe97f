#pragma once
// What every benchmark binary shares: its clock, and the one synthetic stream the benchmarks
// consume (stream.hpp), generated once by the first benchmark that uses it, before its clock
// starts. Not generated in main: the stream would otherwise sit in the resident set that
// BM_memory_churn measures from.

#include <chrono>

#include "stream.hpp"

namespace bench {

using bench_clock = std::chrono::steady_clock;

inline double seconds_between(bench_clock::time_point from, bench_clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
}

inline constexpr synthetic::stream_config bench_stream_config{.trades = 1'048'576,
                                                              .tokens = 10'000};

inline const synthetic::stream& bench_stream() {
    static const synthetic::stream s{bench_stream_config};
    return s;
}

} // namespace bench
