#pragma once
// What the load generator says on stderr, each line under its name, and the two errors that
// decide its exit status.

#include <atomic>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <string_view>

namespace loadgen {

inline constexpr std::string_view program = "tradeagg_loadgen";

/// A bad option value: one line, naming the option; the exit status is 2.
struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Cannot reach the server, or the sink cannot listen: the exit status is 1.
struct run_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Prints the first I/O error of the run and the first 4xx body, once each.
inline std::atomic<bool> io_error_reported{false};
inline std::atomic<bool> client_error_reported{false};

inline void report_once(std::atomic<bool>& flag, const std::string& line) {
    if (!flag.exchange(true)) {
        std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(program.size()), program.data(),
                     line.c_str());
    }
}

} // namespace loadgen
