#pragma once
// The server's log: one line per event on stderr, with a UTC timestamp.

#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>
#include <string_view>

namespace aggregator {

/// Writes one log line to stderr with a UTC timestamp. Thread-safe (one write per line).
inline void log_line(std::string_view text) {
    const auto now = std::chrono::system_clock::now();
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char stamp[32];
    const std::size_t n = std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ ", &tm);
    std::string line(stamp, n);
    line.append(text);
    line.push_back('\n');
    std::fwrite(line.data(), 1, line.size(), stderr);
}

/// A number for a log line: "200", "0.25", "7.62".
inline std::string log_number(double v) {
    char buf[32];
    const int n = std::snprintf(buf, sizeof buf, "%.6g", v);
    return std::string(buf, static_cast<std::size_t>(n));
}

} // namespace aggregator
