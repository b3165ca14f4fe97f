#pragma once
// The command line: every option, its LOADGEN_<NAME> variable, its check and its --help line.

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "../../bench/stream.hpp"
#include "diagnostics.hpp"

namespace loadgen {

/// The request body (--format): one trade a line, or a JSON array.
enum class body_format { ndjson, json };

/// Every setting of a run.
struct options {
    std::string url = "127.0.0.1:8080";
    std::size_t tokens = 10'000;
    double zipf = 1.0;
    double rate = 0.0; ///< trades per second over all connections; 0: as fast as possible
    std::size_t batch = 1'000;
    double duration_s = 10.0;
    std::size_t connections = 2;
    body_format format = body_format::ndjson;
    double out_of_order = 0.01;
    std::uint64_t max_delay_ms = 2'000;
    std::uint64_t seed = synthetic::stream_config{}.seed;
    bool progress = false;
    bool json = false;
    std::string sink;         ///< non-empty: serve as a trivial sink on this address instead
    std::string probe;        ///< non-empty: also GET this path on a connection of its own
    double probe_rate = 20.0; ///< probe requests per second
    std::size_t streams = 0;  ///< > 0: XADD to this many partition streams instead of HTTP
    std::string redis = "127.0.0.1:6379"; ///< with streams: a Redis or Redis Cluster node
    std::string prefix = "tradeagg";      ///< with streams: the key prefix
    std::size_t entry_trades = 1;         ///< with streams: trades per entry (> 1: packed entries)
};

inline constexpr std::size_t max_tokens = 1'000'000;
inline constexpr std::size_t max_batch = 100'000;
inline constexpr std::size_t max_connections = 256;
inline constexpr double max_duration_s = 7.0 * 24 * 3600;
inline constexpr std::uint64_t max_delay_limit_ms = 3'600'000;

/// All of `s` as an unsigned decimal integer; nullopt otherwise.
inline std::optional<std::uint64_t> parse_uint(std::string_view s) {
    std::uint64_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc{} || end != s.data() + s.size()) {
        return std::nullopt;
    }
    return v;
}

/// All of `s` as a finite number; nullopt otherwise.
inline std::optional<double> parse_double(std::string_view s) {
    double v = 0.0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc{} || end != s.data() + s.size() || !std::isfinite(v)) {
        return std::nullopt;
    }
    return v;
}

inline std::uint64_t uint_in(std::string_view s, std::uint64_t lo, std::uint64_t hi,
                             const std::string& where) {
    const auto v = parse_uint(s);
    if (!v || *v < lo || *v > hi) {
        throw usage_error(where + ": expected an integer in " + std::to_string(lo) + ".." +
                          std::to_string(hi) + ", got '" + std::string(s) + "'");
    }
    return *v;
}

inline double double_in(std::string_view s, double lo, double hi, const std::string& where,
                        bool lo_open = false) {
    const auto v = parse_double(s);
    if (!v || *v < lo || (lo_open && *v == lo) || *v > hi) {
        char range[96];
        std::snprintf(range, sizeof range, lo_open ? "> %g and <= %g" : "in %g..%g", lo, hi);
        throw usage_error(where + ": expected a number " + range + ", got '" + std::string(s) +
                          "'");
    }
    return *v;
}

inline bool flag_value(std::string_view s, const std::string& where) {
    std::string v(s);
    for (char& c : v) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    if (v == "1" || v == "true" || v == "yes" || v == "on") {
        return true;
    }
    if (v.empty() || v == "0" || v == "false" || v == "no" || v == "off") {
        return false;
    }
    throw usage_error(where + ": expected 1/0, true/false, yes/no or on/off, got '" +
                      std::string(s) + "'");
}

struct option_spec {
    std::string_view name; ///< the command-line spelling without "--"
    bool flag;             ///< takes no value on the command line
    std::string_view help;
    void (*apply)(options&, std::string_view value, const std::string& where);
};

inline constexpr std::array<option_spec, 20> option_specs{{
    {"url", false, "server address host:port, or http://host:port (default 127.0.0.1:8080)",
     [](options& o, std::string_view v, const std::string& where) {
         if (v.empty()) {
             throw usage_error(where + ": expected host:port, got an empty value");
         }
         o.url = v;
     }},
    {"tokens", false, "number of distinct tokens, 1..1000000 (default 10000)",
     [](options& o, std::string_view v, const std::string& where) {
         o.tokens = uint_in(v, 1, max_tokens, where);
     }},
    {"zipf", false, "Zipf exponent of token popularity, 0..10; 0 is uniform (default 1.0)",
     [](options& o, std::string_view v, const std::string& where) {
         o.zipf = double_in(v, 0.0, 10.0, where);
     }},
    {"rate", false, "trades per second over all connections; 0 = as fast as possible (default 0)",
     [](options& o, std::string_view v, const std::string& where) {
         o.rate = double_in(v, 0.0, 1e9, where);
     }},
    {"batch", false, "trades per request, 1..100000 (default 1000)",
     [](options& o, std::string_view v, const std::string& where) {
         o.batch = uint_in(v, 1, max_batch, where);
     }},
    {"duration", false, "seconds to send for (default 10)",
     [](options& o, std::string_view v, const std::string& where) {
         o.duration_s = double_in(v, 0.0, max_duration_s, where, true);
     }},
    {"connections", false, "keep-alive connections, one thread each, 1..256 (default 2)",
     [](options& o, std::string_view v, const std::string& where) {
         o.connections = uint_in(v, 1, max_connections, where);
     }},
    {"format", false, "request body: ndjson or json (a JSON array) (default ndjson)",
     [](options& o, std::string_view v, const std::string& where) {
         if (v == "ndjson") {
             o.format = body_format::ndjson;
         } else if (v == "json") {
             o.format = body_format::json;
         } else {
             throw usage_error(where + ": expected ndjson or json, got '" + std::string(v) + "'");
         }
     }},
    {"out-of-order", false,
     "fraction of trades whose ts is moved back by up to --max-delay-ms, 0..1 (default 0.01)",
     [](options& o, std::string_view v, const std::string& where) {
         o.out_of_order = double_in(v, 0.0, 1.0, where);
     }},
    {"max-delay-ms", false, "largest out-of-order delay in ms, 0..3600000 (default 2000)",
     [](options& o, std::string_view v, const std::string& where) {
         o.max_delay_ms = uint_in(v, 0, max_delay_limit_ms, where);
     }},
    {"seed", false, "seed of the synthetic market, an unsigned 64-bit integer",
     [](options& o, std::string_view v, const std::string& where) {
         o.seed = uint_in(v, 0, std::numeric_limits<std::uint64_t>::max(), where);
     }},
    {"progress", true,
     "print progress once a second to stderr: rewritten in place on a terminal, one line per "
     "second otherwise",
     [](options& o, std::string_view v, const std::string& where) {
         o.progress = flag_value(v, where);
     }},
    {"json", true, "print the final summary as one JSON object on stdout",
     [](options& o, std::string_view v, const std::string& where) {
         o.json = flag_value(v, where);
     }},
    {"sink", false,
     "serve as a trivial sink on host:port instead (answers POST /trades with 202 and the "
     "number of trades), to measure the generator alone",
     [](options& o, std::string_view v, const std::string& where) {
         if (v.empty()) {
             throw usage_error(where + ": expected host:port, got an empty value");
         }
         o.sink = v;
     }},
    {"probe", false,
     "also GET this path (e.g. /performance) on a keep-alive connection of its own during the "
     "run, and report its latency: what a monitor polling the server sees under the load",
     [](options& o, std::string_view v, const std::string& where) {
         if (!v.starts_with('/') || v.find_first_of(" \t\r\n") != std::string_view::npos) {
             throw usage_error(where + ": expected a path starting with '/', got '" +
                               std::string(v) + "'");
         }
         o.probe = v;
     }},
    {"probe-rate", false, "probe requests per second, 0.1..1000 (default 20)",
     [](options& o, std::string_view v, const std::string& where) {
         o.probe_rate = double_in(v, 0.1, 1000.0, where);
     }},
    {"streams", false,
     "append the trades to this many partition streams in Redis (XADD to "
     "<prefix>:trades:{p<k>}, k = CRC16(token) mod N) instead of POSTing them, 0..1024; "
     "0 = HTTP (default 0)",
     [](options& o, std::string_view v, const std::string& where) {
         o.streams = uint_in(v, 0, 1024, where);
     }},
    {"redis", false,
     "with --streams: a Redis, or any node of a Redis Cluster, host:port (default REDIS_ADDR, "
     "then 127.0.0.1:6379)",
     [](options& o, std::string_view v, const std::string& where) {
         if (v.empty()) {
             throw usage_error(where + ": expected host:port, got an empty value");
         }
         o.redis = v;
     }},
    {"entry-trades", false,
     "with --streams: trades per stream entry, 1..100000; above 1 a partition's trades are "
     "packed into entries of up to that many (the packed format of stream_entry.hpp) "
     "(default 1)",
     [](options& o, std::string_view v, const std::string& where) {
         o.entry_trades = uint_in(v, 1, 100'000, where);
     }},
    {"prefix", false, "with --streams: the key prefix (default REDIS_KEY_PREFIX, then tradeagg)",
     [](options& o, std::string_view v, const std::string& where) {
         if (v.empty() || v.find_first_of("{} ") != std::string_view::npos) {
             throw usage_error(where + ": expected a prefix without braces or spaces, got '" +
                               std::string(v) + "'");
         }
         o.prefix = v;
     }},
}};

inline std::string env_name(std::string_view name) {
    std::string env = "LOADGEN_";
    for (const char c : name) {
        env += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    return env;
}

inline void print_help() {
    std::printf("usage: %.*s [--option value]...\n\n"
                "Sends synthetic trades to the aggregator server's POST /trades over keep-alive\n"
                "HTTP/1.1 and reports accepted trades per second and response latency.\n\n",
                static_cast<int>(program.size()), program.data());
    for (const option_spec& spec : option_specs) {
        std::printf("  --%.*s%s  (%s)\n      %.*s\n", static_cast<int>(spec.name.size()),
                    spec.name.data(), spec.flag ? "" : " V", env_name(spec.name).c_str(),
                    static_cast<int>(spec.help.size()), spec.help.data());
    }
    std::printf("\nWithout --url or LOADGEN_URL, HTTP_ADDR is used when set.\n"
                "Exit status: 0 when trades were accepted, 1 when none were or the server is\n"
                "unreachable, 2 for a bad option.\n");
}

/// Environment first, then the command line, which wins. Returns nullopt after --help.
inline std::optional<options> parse_options(int argc, char** argv) {
    options o;
    if (const char* addr = std::getenv("HTTP_ADDR"); addr != nullptr && *addr != '\0') {
        o.url = addr;
    }
    if (const char* addr = std::getenv("REDIS_ADDR"); addr != nullptr && *addr != '\0') {
        o.redis = addr;
    }
    if (const char* prefix = std::getenv("REDIS_KEY_PREFIX"); prefix != nullptr && *prefix) {
        o.prefix = prefix;
    }
    for (const option_spec& spec : option_specs) {
        const std::string env = env_name(spec.name);
        if (const char* v = std::getenv(env.c_str()); v != nullptr) {
            spec.apply(o, v, env + " (--" + std::string(spec.name) + ")");
        }
    }
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            print_help();
            return std::nullopt;
        }
        if (!arg.starts_with("--")) {
            throw usage_error("unexpected argument '" + std::string(arg) + "' (see --help)");
        }
        arg.remove_prefix(2);
        std::optional<std::string_view> inline_value;
        if (const auto eq = arg.find('='); eq != std::string_view::npos) {
            inline_value = arg.substr(eq + 1);
            arg = arg.substr(0, eq);
        }
        const auto spec = std::find_if(option_specs.begin(), option_specs.end(),
                                       [&](const option_spec& s) { return s.name == arg; });
        const std::string where = "--" + std::string(arg);
        if (spec == option_specs.end()) {
            throw usage_error("unknown option " + where + " (see --help)");
        }
        if (spec->flag) {
            spec->apply(o, inline_value.value_or("1"), where);
        } else if (inline_value) {
            spec->apply(o, *inline_value, where);
        } else if (i + 1 < argc) {
            spec->apply(o, argv[++i], where);
        } else {
            throw usage_error(where + ": missing value");
        }
    }
    return o;
}

} // namespace loadgen
