#pragma once
// The Redis sink's settings, and reading them from the environment with the seed's variable
// names (REDIS_ADDR, REDIS_PASSWORD, REDIS_DB, REDIS_MAX_RETRIES, REDIS_RETRY_DELAY,
// REDIS_PIPELINE_SIZE, REDIS_READ_TIMEOUT, REDIS_WRITE_TIMEOUT, REDIS_IDLE_TIMEOUT,
// REDIS_MAX_CONN_AGE). Needs neither hiredis nor Asio.

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <tradeagg/config.hpp>
#include <tradeagg/runtime_config.hpp>

namespace tradeagg::redis {

/// Where and how the sink talks to Redis. Defaults are the seed's.
struct redis_config {
    std::string host = "127.0.0.1"; ///< an IP address (hiredis resolves names with blocking DNS)
    int port = 6379;
    /// Further seed nodes of a cluster (REDIS_ADDR lists them after the first, comma-separated).
    std::vector<std::pair<std::string, int>> more_seeds;

    /// Every seed: `host:port` first, then `more_seeds`. Allocates.
    [[nodiscard]] std::vector<std::pair<std::string, int>> seeds() const {
        std::vector<std::pair<std::string, int>> all{{host, port}};
        all.insert(all.end(), more_seeds.begin(), more_seeds.end());
        return all;
    }
    std::string password; ///< AUTH when not empty
    int db = 0;           ///< SELECT when not 0
    int max_retries = 3;  ///< attempts after the first, per command
    std::chrono::milliseconds retry_delay{100};
    std::size_t pipeline_size = 100; ///< commands in flight on the connection
    std::chrono::milliseconds read_timeout{3'000};
    std::chrono::milliseconds write_timeout{3'000};
    std::chrono::milliseconds idle_timeout{300'000};   ///< ping an idle connection after this
    std::chrono::milliseconds max_conn_age{1'800'000}; ///< replace a connection this old
    std::string key_prefix = "tradeagg";
    std::size_t candle_retention_intervals = 1'000; ///< a candle key expires after this many
    /// Keys waiting to be written (each holds its latest version); updates for further new
    /// keys are dropped and counted while this many wait.
    std::size_t max_pending_updates = 1'000'000;
    /// Bytes kept of written values so that a Redis that restarted empty can be rewritten;
    /// the oldest written are forgotten first. 0 keeps none (only live state is resynced).
    std::size_t resync_journal_bytes = 64u << 20;
};

/// Parses a duration as the seed writes them: a sequence of decimal numbers with units ms, s, m
/// or h ("100ms", "3s", "5m", "1h30m", "1.5s"). Empty on anything else, on a negative value, or
/// on a value that is not a whole number of milliseconds. Never allocates.
[[nodiscard]] inline std::optional<std::chrono::milliseconds>
parse_duration(std::string_view text) noexcept {
    if (text.empty()) {
        return std::nullopt;
    }
    double total_ms = 0.0;
    std::size_t i = 0;
    while (i < text.size()) {
        const std::size_t start = i;
        bool digits = false;
        bool dot = false;
        while (i < text.size() &&
               ((text[i] >= '0' && text[i] <= '9') || (text[i] == '.' && !dot))) {
            digits = digits || text[i] != '.';
            dot = dot || text[i] == '.';
            ++i;
        }
        if (!digits) {
            return std::nullopt;
        }
        double value = 0.0;
        const auto [end, ec] = std::from_chars(text.data() + start, text.data() + i, value);
        if (ec != std::errc{} || end != text.data() + i) {
            return std::nullopt;
        }
        double unit = 0.0;
        if (text.substr(i, 2) == "ms") {
            unit = 1.0;
            i += 2;
        } else if (i < text.size() && text[i] == 's') {
            unit = 1'000.0;
            ++i;
        } else if (i < text.size() && text[i] == 'm') {
            unit = 60'000.0;
            ++i;
        } else if (i < text.size() && text[i] == 'h') {
            unit = 3'600'000.0;
            ++i;
        } else {
            return std::nullopt; // a number without a unit
        }
        total_ms += value * unit;
    }
    if (!std::isfinite(total_ms) || total_ms > 1e15 || total_ms != std::floor(total_ms)) {
        return std::nullopt;
    }
    return std::chrono::milliseconds(static_cast<std::int64_t>(total_ms));
}

namespace detail {

inline std::string quoted(std::string_view v) {
    return "\"" + std::string(v) + "\"";
}

template <class Int>
Int env_int(std::string_view name, std::string_view text, Int low, Int high) {
    Int value{};
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end != text.data() + text.size() || value < low || value > high) {
        throw config_error(std::string(name), std::string(name) + " = " + quoted(text) +
                                                  ": expected a whole number in " +
                                                  std::to_string(low) + ".." +
                                                  std::to_string(high));
    }
    return value;
}

inline std::chrono::milliseconds env_duration(std::string_view name, std::string_view text,
                                              std::chrono::milliseconds low,
                                              std::chrono::milliseconds high) {
    const auto d = parse_duration(text);
    if (!d || *d < low || *d > high) {
        throw config_error(std::string(name),
                           std::string(name) + " = " + quoted(text) +
                               ": expected a duration such as 100ms, 3s, 5m or 30m, from " +
                               std::to_string(low.count()) + " ms to " +
                               std::to_string(high.count()) + " ms");
    }
    return *d;
}

} // namespace detail

/// Reads the seed's REDIS_* variables through `getenv` (a variable that is unset, or set to the
/// empty string, keeps its default). Throws `config_error` naming the first malformed or
/// out-of-range variable, its value and what is allowed. Allocates.
[[nodiscard]] inline redis_config
redis_config_from_env(const std::function<const char*(const char*)>& getenv) {
    redis_config c;
    const auto get = [&](const char* name) -> std::optional<std::string_view> {
        const char* v = getenv(name);
        if (v == nullptr || *v == '\0') {
            return std::nullopt;
        }
        return std::string_view(v);
    };
    if (const auto v = get("REDIS_ADDR")) {
        // host:port, or a comma-separated list of seed nodes of a cluster.
        std::string_view rest = *v;
        bool first = true;
        while (true) {
            const std::size_t comma = rest.find(',');
            const std::string_view one = rest.substr(0, comma);
            const std::size_t colon = one.rfind(':');
            if (colon == std::string_view::npos || colon == 0) {
                throw config_error("REDIS_ADDR",
                                   "REDIS_ADDR = " + detail::quoted(*v) +
                                       ": expected host:port, e.g. 127.0.0.1:6379, or a comma-"
                                       "separated list of them (seed nodes of a cluster)");
            }
            const std::string_view port = one.substr(colon + 1);
            int value = 0;
            const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
            if (ec != std::errc{} || end != port.data() + port.size() || value < 1 ||
                value > 65'535) {
                throw config_error("REDIS_ADDR", "REDIS_ADDR = " + detail::quoted(*v) +
                                                     ": expected host:port with a port in "
                                                     "1..65535");
            }
            if (first) {
                c.host = std::string(one.substr(0, colon));
                c.port = value;
                first = false;
            } else {
                c.more_seeds.emplace_back(std::string(one.substr(0, colon)), value);
            }
            if (comma == std::string_view::npos) {
                break;
            }
            rest = rest.substr(comma + 1);
        }
    }
    if (const auto v = get("REDIS_PASSWORD")) {
        c.password = std::string(*v);
    }
    if (const auto v = get("REDIS_DB")) {
        c.db = detail::env_int<int>("REDIS_DB", *v, 0, 1'000'000);
    }
    if (const auto v = get("REDIS_MAX_RETRIES")) {
        c.max_retries = detail::env_int<int>("REDIS_MAX_RETRIES", *v, 0, 1'000);
    }
    if (const auto v = get("REDIS_PIPELINE_SIZE")) {
        c.pipeline_size = detail::env_int<std::size_t>("REDIS_PIPELINE_SIZE", *v, 1, 1'000'000);
    }
    using std::chrono::milliseconds;
    if (const auto v = get("REDIS_RETRY_DELAY")) {
        c.retry_delay =
            detail::env_duration("REDIS_RETRY_DELAY", *v, milliseconds(0), milliseconds(600'000));
    }
    if (const auto v = get("REDIS_READ_TIMEOUT")) {
        c.read_timeout = detail::env_duration("REDIS_READ_TIMEOUT", *v, milliseconds(1),
                                              milliseconds(3'600'000));
    }
    if (const auto v = get("REDIS_WRITE_TIMEOUT")) {
        c.write_timeout = detail::env_duration("REDIS_WRITE_TIMEOUT", *v, milliseconds(1),
                                               milliseconds(3'600'000));
    }
    if (const auto v = get("REDIS_IDLE_TIMEOUT")) {
        c.idle_timeout = detail::env_duration("REDIS_IDLE_TIMEOUT", *v, milliseconds(1),
                                              milliseconds(86'400'000));
    }
    if (const auto v = get("REDIS_MAX_CONN_AGE")) {
        c.max_conn_age = detail::env_duration("REDIS_MAX_CONN_AGE", *v, milliseconds(1),
                                              milliseconds(30LL * 86'400'000));
    }
    return c;
}

} // namespace tradeagg::redis
