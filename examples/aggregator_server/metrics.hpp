#pragma once
// The server's Prometheus exposition (text format 0.0.4): a writer of the format, the fixed
// bucket bounds of its histograms, the per-route HTTP figures, and the process figures that a
// Prometheus client library exports. Cheap enough to be scraped under load: one pass over
// fixed arrays, no allocation beyond the output string, no label built from data (routes,
// status codes, reasons and results are bounded sets; token names never become labels).

#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <string_view>
#include <type_traits>

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <tradeagg/config.hpp>
#include <tradeagg/latency_histogram.hpp>

namespace aggregator {

/// Bucket bounds (`le`, seconds) of every latency histogram the server exports: apply latency,
/// HTTP request duration and Redis write lag share them, so that one dashboard panel serves
/// all three. 1 µs to 10 s in 1-2.5-5 steps.
inline constexpr std::array<double, 22> latency_bounds_seconds{
    1e-6, 2.5e-6, 5e-6,  1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
    5e-3, 0.01,   0.025, 0.05, 0.1,    0.25, 0.5,  1.0,    2.5,  5.0,  10.0};

/// Writes the Prometheus text format into a string. Names, help texts and label values are
/// the caller's literals (no escaping needed: none holds a backslash, quote or newline).
class prometheus_text {
public:
    explicit prometheus_text(std::string& out) noexcept : out_(out) {}

    /// The `# HELP` and `# TYPE` lines of a metric family; its samples follow.
    void family(std::string_view name, std::string_view help, std::string_view type) {
        out_.append("# HELP ").append(name).append(" ").append(help).append("\n");
        out_.append("# TYPE ").append(name).append(" ").append(type).append("\n");
    }

    /// One sample. `labels` is `k="v",k2="v2"` or empty.
    template <class Number>
    void sample(std::string_view name, std::string_view labels, Number value) {
        out_.append(name);
        if (!labels.empty()) {
            out_.append("{").append(labels).append("}");
        }
        out_.append(" ");
        number(value);
        out_.append("\n");
    }

    /// A family of one unlabelled sample.
    template <class Number>
    void counter(std::string_view name, std::string_view help, Number value) {
        family(name, help, "counter");
        sample(name, {}, value);
    }
    template <class Number>
    void gauge(std::string_view name, std::string_view help, Number value) {
        family(name, help, "gauge");
        sample(name, {}, value);
    }

    /// The `_bucket`, `_sum` and `_count` samples of one histogram, from counts per bound:
    /// `per_bound[i]` samples fell in (bound i-1, bound i], `per_bound.back()` above the last
    /// bound. `labels` (may be empty) is put before `le`.
    void histogram(std::string_view name, std::string_view labels,
                   const std::array<std::uint64_t, latency_bounds_seconds.size() + 1>& per_bound,
                   double sum_seconds) {
        std::string series(name);
        series.append("_bucket");
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i <= latency_bounds_seconds.size(); ++i) {
            cumulative += per_bound[i];
            out_.append(series).append("{");
            if (!labels.empty()) {
                out_.append(labels).append(",");
            }
            out_.append("le=\"");
            if (i < latency_bounds_seconds.size()) {
                number(latency_bounds_seconds[i]);
            } else {
                out_.append("+Inf");
            }
            out_.append("\"} ");
            number(cumulative);
            out_.append("\n");
        }
        series.assign(name).append("_sum");
        sample(series, labels, sum_seconds);
        series.assign(name).append("_count");
        sample(series, labels, cumulative);
    }

    /// A histogram from the library's latency counts (nanoseconds).
    void histogram(std::string_view name, std::string_view labels,
                   const tradeagg::latency_histogram::counts& c) {
        std::array<std::uint64_t, latency_bounds_seconds.size() + 1> per_bound{};
        std::uint64_t below = 0;
        for (std::size_t i = 0; i < latency_bounds_seconds.size(); ++i) {
            const auto bound_ns =
                static_cast<std::uint64_t>(std::llround(latency_bounds_seconds[i] * 1e9));
            const std::uint64_t at_most = c.at_most(bound_ns);
            per_bound[i] = at_most - below;
            below = at_most;
        }
        per_bound.back() = c.samples() - below;
        histogram(name, labels, per_bound, static_cast<double>(c.sum_ns) * 1e-9);
    }

private:
    void number(double v) {
        if (std::isnan(v)) {
            out_.append("NaN");
        } else if (std::isinf(v)) {
            out_.append(v > 0 ? "+Inf" : "-Inf");
        } else {
            // As Prometheus's own clients write numbers (Go's %g at the shortest precision:
            // exponent form below 1e-4 and from 1e6), so that `le="0.005"` reads the same from
            // this server as from any other.
            const int exponent =
                v == 0 ? 0 : static_cast<int>(std::floor(std::log10(std::fabs(v))));
            const auto format = exponent < -4 || exponent >= 6 ? std::chars_format::scientific
                                                               : std::chars_format::fixed;
            char buf[64];
            const auto r = std::to_chars(buf, buf + sizeof buf, v, format);
            out_.append(buf, r.ptr);
        }
    }
    void number(std::uint64_t v) {
        char buf[24];
        const auto r = std::to_chars(buf, buf + sizeof buf, v);
        out_.append(buf, r.ptr);
    }
    template <class Integer>
    requires std::is_integral_v<Integer>
    void number(Integer v) { number(static_cast<std::uint64_t>(v)); }

    std::string& out_;
};

/// The server's routes, as request-duration and response labels. `route_of` classifies a
/// request target; the service routes by the same table.
enum class route : std::uint8_t {
    trades,
    tokens,
    health,
    performance,
    performance_gc,
    optimize_throughput,
    optimize_latency,
    metrics,
    api_v3, ///< the Binance-compatible endpoints, /api/v3/...
    other,  ///< no such endpoint, or refused before its header was read
};
inline constexpr std::size_t route_count = 10;

/// The label of a route: its path, with `{token}` for the token's place.
[[nodiscard]] constexpr std::string_view route_label(route r) noexcept {
    constexpr std::array<std::string_view, route_count> labels{
        "/trades",
        "/tokens/{token}",
        "/health",
        "/performance",
        "/performance/gc",
        "/performance/optimize/throughput",
        "/performance/optimize/latency",
        "/metrics",
        "/api/v3/{endpoint}",
        "other",
    };
    return labels[static_cast<std::size_t>(r)];
}

/// The route of a request target (its path; a query string is ignored). Never allocates.
[[nodiscard]] constexpr route route_of(std::string_view target) noexcept {
    const std::string_view path = target.substr(0, target.find('?'));
    if (path.starts_with("/tokens/")) {
        return route::tokens;
    }
    if (path.starts_with("/api/v3/")) {
        return route::api_v3;
    }
    for (std::size_t r = 0; r + 1 < route_count; ++r) {
        if (r != static_cast<std::size_t>(route::tokens) &&
            r != static_cast<std::size_t>(route::api_v3) &&
            path == route_label(static_cast<route>(r))) {
            return static_cast<route>(r);
        }
    }
    return route::other;
}

/// Responses by route and status code, and request durations by route. Written by every HTTP
/// thread (relaxed atomic adds, three per response); read by the exposition.
class http_metrics {
public:
    /// Counts one response. Thread-safe; never allocates, never blocks.
    void observe(std::size_t route_index, unsigned status, std::chrono::nanoseconds took) noexcept {
        auto& r = routes_[route_index < route_count ? route_index
                                                    : static_cast<std::size_t>(route::other)];
        if (status >= first_status && status < first_status + status_count) {
            r.responses[status - first_status].fetch_add(1, std::memory_order_relaxed);
        }
        const double seconds = std::chrono::duration<double>(took).count();
        std::size_t b = 0;
        while (b < latency_bounds_seconds.size() && seconds > latency_bounds_seconds[b]) {
            ++b;
        }
        r.duration[b].fetch_add(1, std::memory_order_relaxed);
        r.duration_ns.fetch_add(static_cast<std::uint64_t>(took.count() > 0 ? took.count() : 0),
                                std::memory_order_relaxed);
    }

    /// `tradeagg_http_responses_total` and `tradeagg_http_request_duration_seconds`.
    void write(prometheus_text& out) const {
        out.family("tradeagg_http_responses_total",
                   "HTTP responses written, by route and status code", "counter");
        std::string labels;
        for (std::size_t i = 0; i < route_count; ++i) {
            for (std::size_t s = 0; s < status_count; ++s) {
                const std::uint64_t n = routes_[i].responses[s].load(std::memory_order_relaxed);
                if (n == 0) {
                    continue;
                }
                labels.assign("route=\"").append(route_label(static_cast<route>(i)));
                labels.append("\",code=\"").append(std::to_string(first_status + s)).append("\"");
                out.sample("tradeagg_http_responses_total", labels, n);
            }
        }
        out.family("tradeagg_http_request_duration_seconds",
                   "From a request's first byte to its response written, by route", "histogram");
        for (std::size_t i = 0; i < route_count; ++i) {
            const auto& r = routes_[i];
            std::array<std::uint64_t, latency_bounds_seconds.size() + 1> per_bound{};
            for (std::size_t b = 0; b < per_bound.size(); ++b) {
                per_bound[b] = r.duration[b].load(std::memory_order_relaxed);
            }
            labels.assign("route=\"").append(route_label(static_cast<route>(i))).append("\"");
            out.histogram("tradeagg_http_request_duration_seconds", labels, per_bound,
                          static_cast<double>(r.duration_ns.load(std::memory_order_relaxed)) *
                              1e-9);
        }
    }

private:
    static constexpr unsigned first_status = 100;
    static constexpr std::size_t status_count = 500; // 100..599

    struct alignas(tradeagg::cache_line_size) per_route {
        std::array<std::atomic<std::uint64_t>, status_count> responses{};
        std::array<std::atomic<std::uint64_t>, latency_bounds_seconds.size() + 1> duration{};
        std::atomic<std::uint64_t> duration_ns{0};
    };
    std::array<per_route, route_count> routes_{};
};

/// What a Prometheus client library reports of its process beside CPU time and memory
/// (which the pipeline's statistics already read). Zero where /proc cannot tell.
struct process_figures {
    double open_fds = 0;
    double max_fds = 0;
    double start_time_seconds = 0; ///< since the epoch
};

/// Reads /proc/self/fd, /proc/self/stat, /proc/stat and the file limit (tens of
/// microseconds). Thread-safe.
[[nodiscard]] inline process_figures read_process_figures() noexcept {
    process_figures f;
    if (DIR* dir = ::opendir("/proc/self/fd")) {
        std::size_t n = 0;
        while (const dirent* e = ::readdir(dir)) {
            if (e->d_name[0] != '.') {
                ++n;
            }
        }
        ::closedir(dir);
        f.open_fds = static_cast<double>(n > 0 ? n - 1 : 0); // less the directory's own
    }
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
        f.max_fds = static_cast<double>(limit.rlim_cur);
    }
    // /proc/self/stat: "pid (comm) state ..." where comm may hold spaces; fields after the
    // last ')' are numbered from 3. Field 22 is the start time in clock ticks since boot.
    unsigned long long start_ticks = 0;
    bool started_known = false;
    if (std::FILE* stat = std::fopen("/proc/self/stat", "r")) {
        char buf[1024];
        const std::size_t n = std::fread(buf, 1, sizeof buf - 1, stat);
        std::fclose(stat);
        buf[n] = '\0';
        if (const char* p = std::strrchr(buf, ')')) {
            started_known =
                std::sscanf(p + 1,
                            " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d "
                            "%*d %*d %*d %llu",
                            &start_ticks) == 1;
        }
    }
    unsigned long long boot_time = 0;
    if (std::FILE* stat = std::fopen("/proc/stat", "r")) {
        char line[256];
        while (std::fgets(line, sizeof line, stat) != nullptr) {
            if (std::sscanf(line, "btime %llu", &boot_time) == 1) {
                break;
            }
        }
        std::fclose(stat);
    }
    const long ticks_per_second = ::sysconf(_SC_CLK_TCK);
    if (started_known && boot_time != 0 && ticks_per_second > 0) {
        f.start_time_seconds =
            static_cast<double>(boot_time) +
            static_cast<double>(start_ticks) / static_cast<double>(ticks_per_second);
    }
    return f;
}

} // namespace aggregator
