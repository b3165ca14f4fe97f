#pragma once
// What a run prints: a progress line a second (--progress) and the final summary, as text or as
// one JSON object (--json).

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include <sys/resource.h>

#include "address.hpp"
#include "connection_stats.hpp"
#include "diagnostics.hpp"
#include "latency_histogram.hpp"
#include "options.hpp"

namespace loadgen {

/// The CPU time of the whole process so far, user and system, in seconds.
inline double cpu_seconds() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    const auto s = [](const timeval& t) {
        return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6;
    };
    return s(u.ru_utime) + s(u.ru_stime);
}

inline double ms(std::uint64_t ns) {
    return static_cast<double>(ns) * 1e-6;
}

inline double per_second(std::uint64_t n, double seconds) {
    return seconds > 0 ? static_cast<double>(n) / seconds : 0.0;
}

/// The figures of a finished run.
struct summary {
    double elapsed_s = 0;
    double cpu_s = 0;
    std::size_t abandoned = 0; ///< connections still waiting for an answer at the end
    totals t;
    std::optional<totals> probe; ///< with --probe
};

/// One progress update on stderr: on a terminal it rewrites the line before (and the caller
/// ends the last one with a newline); in a log or a pipe each update is a line of its own.
inline void print_progress(double elapsed_s, const totals& now, const totals& before,
                           double window_s, bool in_place) {
    latency_histogram::counts window{};
    for (std::size_t i = 0; i < latency_histogram::buckets; ++i) {
        window[i] = now.latency[i] - before.latency[i];
    }
    std::fprintf(stderr,
                 "%s[%6.1fs] accepted %10.0f trades/s  requests %8.0f/s  p50 %8.2f ms  p99 %8.2f ms"
                 "  4xx %llu  5xx %llu  io errors %llu%s",
                 in_place ? "\r" : "", elapsed_s,
                 per_second(now.trades_accepted - before.trades_accepted, window_s),
                 per_second(now.requests - before.requests, window_s),
                 ms(latency_histogram::quantile(window, 0.50, now.max_ns)),
                 ms(latency_histogram::quantile(window, 0.99, now.max_ns)),
                 static_cast<unsigned long long>(now.status_range(400, 500)),
                 static_cast<unsigned long long>(now.status_range(500, 600)),
                 static_cast<unsigned long long>(now.io_errors), in_place ? "\x1b[K" : "\n");
}

inline std::string json_string(std::string_view s) {
    std::string out = "\"";
    for (const char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char esc[8];
            std::snprintf(esc, sizeof esc, "\\u%04x", static_cast<unsigned>(c));
            out += esc;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

/// The probe's figures: "GET /performance: 160 requests, non-2xx 0, io errors 0, p50 ..."
/// as text, or a JSON object.
inline std::string probe_summary(const options& o, const totals& p, bool json) {
    const auto q = [&](double x) {
        return ms(latency_histogram::quantile(p.latency, x, p.max_ns));
    };
    const auto non_2xx = static_cast<unsigned long long>(p.requests - p.status_range(200, 300));
    char buf[512];
    if (json) {
        std::snprintf(buf, sizeof buf,
                      "{\"path\":%s,\"requests\":%llu,\"non_2xx\":%llu,\"io_errors\":%llu,"
                      "\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}}",
                      json_string(o.probe).c_str(), static_cast<unsigned long long>(p.requests),
                      non_2xx, static_cast<unsigned long long>(p.io_errors), q(0.50), q(0.90),
                      q(0.99), ms(p.max_ns));
    } else {
        std::snprintf(buf, sizeof buf,
                      "GET %s: %llu requests, non-2xx %llu, io errors %llu; p50 %.3f ms  p90 "
                      "%.3f ms  p99 %.3f ms  max %.3f ms",
                      o.probe.c_str(), static_cast<unsigned long long>(p.requests), non_2xx,
                      static_cast<unsigned long long>(p.io_errors), q(0.50), q(0.90), q(0.99),
                      ms(p.max_ns));
    }
    return buf;
}

inline void print_summary(const options& o, const address& a, const summary& s) {
    const totals& t = s.t;
    const auto q = [&](double p) {
        return ms(latency_histogram::quantile(t.latency, p, t.max_ns));
    };
    const auto u = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
    const char* format = o.format == body_format::ndjson ? "ndjson" : "json";
    const double trades_per_cpu_s = s.cpu_s > 0 ? static_cast<double>(t.trades_sent) / s.cpu_s : 0;
    if (o.json) {
        std::string statuses;
        for (std::size_t code = 0; code < connection_stats::statuses; ++code) {
            if (t.status[code] != 0) {
                statuses += (statuses.empty() ? "\"" : ",\"") +
                            (code == 0 ? std::string("other") : std::to_string(code)) +
                            "\":" + std::to_string(t.status[code]);
            }
        }
        std::printf(
            "{\"url\":%s,\"connections\":%zu,\"batch\":%zu,\"format\":\"%s\",\"tokens\":%zu,"
            "\"zipf\":%g,\"rate\":%g,\"out_of_order\":%g,\"max_delay_ms\":%llu,\"seed\":%llu,"
            "\"duration_s\":%.3f,\"requests\":%llu,\"requests_per_s\":%.1f,\"trades_sent\":%llu,"
            "\"trades_accepted\":%llu,\"accepted_per_s\":%.1f,\"latency_ms\":{\"p50\":%.3f,"
            "\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f},\"status\":{%s},\"status_4xx\":%llu,"
            "\"status_5xx\":%llu,\"retry_after_s\":%.3f,\"io_errors\":%llu,"
            "\"abandoned_connections\":%zu,\"cpu_s\":%.3f,\"trades_per_cpu_s\":%.0f%s%s}\n",
            json_string(a.host_header).c_str(), o.connections, o.batch, format, o.tokens, o.zipf,
            o.rate, o.out_of_order, u(o.max_delay_ms), u(o.seed), s.elapsed_s, u(t.requests),
            per_second(t.requests, s.elapsed_s), u(t.trades_sent), u(t.trades_accepted),
            per_second(t.trades_accepted, s.elapsed_s), q(0.50), q(0.90), q(0.99), ms(t.max_ns),
            statuses.c_str(), u(t.status_range(400, 500)), u(t.status_range(500, 600)),
            static_cast<double>(t.backoff_ns) * 1e-9, u(t.io_errors), s.abandoned, s.cpu_s,
            trades_per_cpu_s, s.probe ? ",\"probe\":" : "",
            s.probe ? probe_summary(o, *s.probe, true).c_str() : "");
        return;
    }
    std::printf("%.*s -> %s: %zu connection%s, batch %zu (%s), %zu tokens, zipf %g, rate %s\n",
                static_cast<int>(program.size()), program.data(), a.host_header.c_str(),
                o.connections, o.connections == 1 ? "" : "s", o.batch, format, o.tokens, o.zipf,
                o.rate > 0 ? (std::to_string(static_cast<long long>(o.rate)) + "/s").c_str()
                           : "unlimited");
    std::printf("  duration         %.2f s\n", s.elapsed_s);
    std::printf("  requests         %llu (%.1f/s)\n", u(t.requests),
                per_second(t.requests, s.elapsed_s));
    std::printf("  trades sent      %llu\n", u(t.trades_sent));
    std::printf("  trades accepted  %llu (%.0f trades/s)\n", u(t.trades_accepted),
                per_second(t.trades_accepted, s.elapsed_s));
    std::printf("  latency          p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  max %.3f ms\n", q(0.50),
                q(0.90), q(0.99), ms(t.max_ns));
    std::printf("  status          ");
    bool any = false;
    for (std::size_t code = 0; code < connection_stats::statuses; ++code) {
        if (t.status[code] != 0) {
            std::printf(" %s: %llu", code == 0 ? "other" : std::to_string(code).c_str(),
                        u(t.status[code]));
            any = true;
        }
    }
    std::printf("%s\n", any ? "" : " (no response)");
    if (t.backoff_ns != 0) {
        std::printf("  503 backoff      %.2f s slept on Retry-After\n",
                    static_cast<double>(t.backoff_ns) * 1e-9);
    }
    if (t.io_errors != 0) {
        std::printf("  io errors        %llu\n", u(t.io_errors));
    }
    if (s.abandoned != 0) {
        std::printf("  abandoned        %zu connections still waiting for an answer\n",
                    s.abandoned);
    }
    std::printf("  generator cpu    %.2f s (%.0f%% of one core), %.0f trades sent per cpu-second\n",
                s.cpu_s, s.elapsed_s > 0 ? 100.0 * s.cpu_s / s.elapsed_s : 0.0, trades_per_cpu_s);
    if (s.probe) {
        std::printf("  probe            %s\n", probe_summary(o, *s.probe, false).c_str());
    }
}

} // namespace loadgen
