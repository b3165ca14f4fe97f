// tradeagg quickstart: aggregate a synthetic market (2,000,000 trades over 10,000 tokens with
// Zipf popularity) with each shipped policy, then look at what came out.
//
//   tradeagg_quickstart [--trades N] [--tokens N] [--shards N] [--producers N]
//
// What it shows, in the order a program would do it:
//   1. intern token strings once, at the edge; the hot path sees dense ids only;
//   2. build a pipeline<Policy, Sink&> around a sink you own, start it;
//   3. push from several producer threads, each with its own producer handle, each owning a
//      disjoint set of tokens (so every token's trades stay in order);
//   4. move the event-time clock three days past the stream (advance_time): every candle closes,
//      every token is spent, and a forced reclamation (reclaim_now) gives the memory back;
//   5. stop(): every accepted trade is applied and flushed to the sink before it returns;
//   6. read the pipeline's statistics and query the sink's candles and rolling statistics.
// It also shows a refused trade (a NaN price) and the reason the pipeline gives for it.

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <latch>
#include <limits>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <tradeagg/tradeagg.hpp>

#include "../bench/stream.hpp"

namespace {

// ---------------------------------------------------------------------------------------------
// Command line

struct options {
    std::size_t trades = 2'000'000;
    std::size_t tokens = 10'000;
    // One worker per two cores leaves the other half to the producers: latency_policy's
    // workers and producers busy-spin, and more threads than cores would starve them.
    std::size_t shards = std::clamp<std::size_t>(std::thread::hardware_concurrency() / 2, 1, 8);
    std::size_t producers = std::clamp<std::size_t>(std::thread::hardware_concurrency() / 2, 1, 8);
};

constexpr char usage[] =
    "usage: tradeagg_quickstart [--trades N] [--tokens N] [--shards N] [--producers N]\n";

options parse_options(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string_view flag = argv[i];
        if (flag == "--help" || flag == "-h") {
            std::fputs(usage, stdout);
            std::exit(0);
        }
        std::size_t* target = flag == "--trades"      ? &o.trades
                              : flag == "--tokens"    ? &o.tokens
                              : flag == "--shards"    ? &o.shards
                              : flag == "--producers" ? &o.producers
                                                      : nullptr;
        if (target == nullptr || i + 1 >= argc) {
            throw std::invalid_argument("unknown option or missing value: " + std::string(flag));
        }
        const std::string_view value = argv[++i];
        const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), *target);
        if (ec != std::errc{} || end != value.data() + value.size() || *target == 0) {
            throw std::invalid_argument(std::string(flag) + " needs a positive integer, got '" +
                                        std::string(value) + "'");
        }
    }
    return o;
}

// ---------------------------------------------------------------------------------------------
// Formatting

/// 2000000 -> "2,000,000".
std::string grouped(std::uint64_t n) {
    const std::string digits = std::to_string(n);
    std::string out;
    for (std::size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) {
            out += ',';
        }
        out += digits[i];
    }
    return out;
}

/// Event time as "2024-11-29 08:01:00" (UTC).
std::string utc(tradeagg::timestamp_ms ms) {
    using namespace std::chrono;
    const sys_time<milliseconds> tp{milliseconds{ms}};
    const auto day = floor<days>(tp);
    const year_month_day ymd{day};
    const hh_mm_ss hms{tp - day};
    char buf[32];
    std::snprintf(buf, sizeof buf, "%04d-%02u-%02u %02d:%02d:%02d", static_cast<int>(ymd.year()),
                  static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                  static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                  static_cast<int>(hms.seconds().count()));
    return buf;
}

double micros(double ns) {
    return ns / 1'000.0;
}

// ---------------------------------------------------------------------------------------------
// One run of the stream through one policy

/// What one policy's run leaves behind, for printing and for comparing the policies.
struct run_report {
    std::string_view policy;
    double seconds = 0.0;
    tradeagg::pipeline_stats stats;
    std::uint64_t distinct_candles = 0;
    tradeagg::reject_reason nan_price_reason = tradeagg::reject_reason::none;
    /// The hottest token's candles, every interval of the policy, oldest first.
    std::vector<std::vector<tradeagg::candle>> hot_candles;
    std::optional<tradeagg::rolling_stats> hot_rolling;
    std::optional<tradeagg::latest_trade> hot_latest;
    tradeagg::pipeline_stats before_reclaim; ///< once the stream is applied
    tradeagg::pipeline_stats after_reclaim;  ///< after the clock moved and reclaim_now
    double reclaim_seconds = 0.0;
};

/// Trades handed to a producer handle per call: enough to amortise the call, small enough that
/// a trade is not held back waiting for the rest of its chunk.
constexpr std::size_t push_chunk = 256;

template <class Policy>
run_report run(const synthetic::stream& stream, const options& opt) {
    // The sink lives outside the pipeline (Sink = memory_sink&), so its contents outlive it.
    tradeagg::memory_sink sink;
    tradeagg::runtime_config cfg;
    cfg.shards = opt.shards;
    tradeagg::pipeline<Policy, tradeagg::memory_sink&> p{std::move(cfg), sink};

    // Intern every token string once; from here on trades carry dense ids.
    const std::vector<tradeagg::trade>& trades = stream.intern_into(p);

    // Producer k owns the tokens whose id is k modulo the producer count, so all trades of one
    // token go through one producer, in stream order. Splitting is done before the clock starts.
    std::vector<std::vector<tradeagg::trade>> share(opt.producers);
    for (const tradeagg::trade& t : trades) {
        share[t.token % opt.producers].push_back(t);
    }

    run_report report;
    report.policy = Policy::name;

    // A trade is checked when it is pushed; a refused one is counted and never reaches a shard.
    // This one goes through the string API (usable from any thread, interns on the way).
    report.nan_price_reason = p.push(tradeagg::trade_view{
        .token = stream.names().front(),
        .price = std::numeric_limits<double>::quiet_NaN(),
        .quantity = 1.0,
        .taker = tradeagg::side::buy,
        .ts_ms = stream.config().start_ms,
        .id = 0,
    });

    // One handle per producer thread: its own ring into every shard, no locks on the fast path.
    // All are taken before any thread starts: beyond Policy::max_producers this throws.
    std::vector<typename decltype(p)::producer> handles;
    for (std::size_t k = 0; k < opt.producers; ++k) {
        handles.push_back(p.make_producer());
    }

    p.start();
    std::latch go(1);
    std::vector<std::thread> producers;
    for (std::size_t k = 0; k < opt.producers; ++k) {
        producers.emplace_back([&go, mine = std::span<const tradeagg::trade>(share[k]),
                                handle = std::move(handles[k])]() mutable {
            go.wait();
            for (std::size_t at = 0; at < mine.size(); at += push_chunk) {
                // Waits (by the policy's strategy) while a ring is full; skips invalid trades.
                handle.push(mine.subspan(at, std::min(push_chunk, mine.size() - at)));
            }
        });
    }

    const auto t0 = std::chrono::steady_clock::now();
    go.count_down();
    for (std::thread& t : producers) {
        t.join();
    }
    for (;;) { // every accepted trade applied (or counted late)
        const tradeagg::pipeline_stats st = p.stats();
        if (st.applied + st.late == st.accepted) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    const auto t1 = std::chrono::steady_clock::now();

    // The market's clock moves on three days: every candle closes, every token's state is
    // spent, and a forced reclamation releases it (its last versions stay in the sink).
    // Byte counts are published at each flush: wait for one first.
    std::this_thread::sleep_for(2 * Policy::flush_interval);
    report.before_reclaim = p.stats();
    tradeagg::timestamp_ms last = stream.config().start_ms;
    for (const tradeagg::trade& t : trades) {
        last = std::max(last, t.ts_ms);
    }
    (void)p.advance_time(last + 3 * 86'400'000);
    const auto reclaimed = p.reclaim_now();
    report.after_reclaim = reclaimed.after;
    report.reclaim_seconds = reclaimed.wall_seconds;
    p.stop(); // drains: every accepted trade is now in the sink

    report.seconds = std::chrono::duration<double>(t1 - t0).count();
    report.stats = p.stats(); // exact after stop()
    report.distinct_candles = sink.candle_count();
    const std::string_view hot = stream.names().front();
    for (const tradeagg::interval width : Policy::intervals) {
        report.hot_candles.push_back(sink.candles(hot, width));
    }
    report.hot_rolling = sink.rolling(hot);
    report.hot_latest = sink.latest(hot);
    return report;
}

// ---------------------------------------------------------------------------------------------
// Printing

void print_run(const run_report& r, const options& opt) {
    const tradeagg::pipeline_stats& s = r.stats;
    std::printf("\n%.*s  (%zu shard%s, %zu producer%s)\n", static_cast<int>(r.policy.size()),
                r.policy.data(), opt.shards, opt.shards == 1 ? "" : "s", opt.producers,
                opt.producers == 1 ? "" : "s");
    std::printf("  throughput     %.2f M trades/s  (%s trades in %.3f s, first push to applied)\n",
                static_cast<double>(s.applied) / r.seconds / 1e6, grouped(s.applied).c_str(),
                r.seconds);
    std::printf("  trades         accepted %s, applied %s, late %s, rejected %s",
                grouped(s.accepted).c_str(), grouped(s.applied).c_str(), grouped(s.late).c_str(),
                grouped(s.rejected).c_str());
    for (std::size_t i = 1; i < tradeagg::reject_reason_count; ++i) {
        if (s.rejected_by_reason[i] != 0) {
            const std::string_view why =
                tradeagg::to_string(static_cast<tradeagg::reject_reason>(i));
            std::printf(" (%.*s: %s)", static_cast<int>(why.size()), why.data(),
                        grouped(s.rejected_by_reason[i]).c_str());
        }
    }
    const tradeagg::latency_summary& l = s.apply_latency;
    std::printf("\n  apply latency  p50 %.1f us, p90 %.1f us, p99 %.1f us, p99.9 %.1f us, "
                "max %.1f us  (%s samples, push to applied)\n",
                micros(l.p50_ns), micros(l.p90_ns), micros(l.p99_ns), micros(l.p999_ns),
                micros(l.max_ns), grouped(l.samples).c_str());
    const tradeagg::pipeline_stats& b = r.before_reclaim;
    const tradeagg::pipeline_stats& a = r.after_reclaim;
    std::printf("  token state    %s active tokens, %.0f bytes per active token\n",
                grouped(b.active_tokens).c_str(), b.bytes_per_active_token);
    std::printf(
        "  memory         in use %.1f MB (reserved %.1f MB, resident %.1f MB); clock +3 days "
        "and reclaim_now (%.1f ms): %s tokens evicted, in use %.1f MB, resident %.1f MB\n",
        b.heap_inuse_mb(), b.heap_alloc_mb(),
        static_cast<double>(b.resident_bytes) / (1024.0 * 1024.0), r.reclaim_seconds * 1e3,
        grouped(a.tokens_evicted).c_str(), a.heap_inuse_mb(),
        static_cast<double>(a.resident_bytes) / (1024.0 * 1024.0));
    std::printf("  sink           %s candle updates emitted (%s distinct candles held), "
                "%s token updates, %s flushes\n",
                grouped(s.candle_updates).c_str(), grouped(r.distinct_candles).c_str(),
                grouped(s.token_updates).c_str(), grouped(s.flushes).c_str());
}

void print_hot_token(const run_report& r, std::string_view name) {
    std::printf("\nHottest token %.*s (Zipf rank 1), as %.*s's memory_sink holds it\n",
                static_cast<int>(name.size()), name.data(), static_cast<int>(r.policy.size()),
                r.policy.data());

    // Candles of the second interval of the default set: 1m.
    constexpr std::size_t minute = 1;
    constexpr std::size_t shown = 5;
    const std::vector<tradeagg::candle>& candles = r.hot_candles.at(minute);
    std::printf("  %s candles (%zu, first %zu shown; times UTC):\n",
                std::string(tradeagg::interval_name(tradeagg::intervals::m1).view()).c_str(),
                candles.size(), std::min(shown, candles.size()));
    std::printf("    %-19s %12s %12s %12s %12s %14s %8s %6s  %s\n", "open time", "open", "high",
                "low", "close", "volume", "trades", "buy %", "state");
    for (std::size_t i = 0; i < std::min(shown, candles.size()); ++i) {
        const tradeagg::candle& c = candles[i];
        std::printf("    %-19s %12.6g %12.6g %12.6g %12.6g %14.6g %8s %5.1f%%  %s\n",
                    utc(c.open_time).c_str(), c.open, c.high, c.low, c.close, c.volume,
                    grouped(c.trades).c_str(), 100.0 * c.taker_buy_volume / c.volume,
                    c.closed ? "closed" : "open");
    }

    if (r.hot_rolling) {
        const tradeagg::rolling_stats& w = *r.hot_rolling;
        std::printf("  rolling 24h    %s .. %s\n", utc(w.window_start).c_str(),
                    utc(w.window_end).c_str());
        std::printf("                 open %.6g, last %.6g (%+.3f %%), high %.6g, low %.6g\n",
                    w.open, w.last, w.price_change_percent, w.high, w.low);
        std::printf("                 volume %.6g, quote volume %.6g, vwap %.6g, %s trades\n",
                    w.volume, w.quote_volume, w.vwap, grouped(w.trades).c_str());
    }
    if (r.hot_latest) {
        const tradeagg::latest_trade& t = *r.hot_latest;
        const std::string_view side = tradeagg::to_string(t.taker);
        std::printf("  latest trade   #%s at %s: %.*s %.6g @ %.6g\n", grouped(t.id).c_str(),
                    utc(t.ts_ms).c_str(), static_cast<int>(side.size()), side.data(), t.quantity,
                    t.price);
    }
}

/// True if two runs hold exactly the same candles for the hottest token.
bool same_candles(const run_report& a, const run_report& b) {
    return a.hot_candles == b.hot_candles;
}

/// Runs one policy and prints its report, or why it could not run (for instance --shards above
/// the policy's max_shards: the config_error names the field and the bound).
template <class Policy>
void run_and_print(const synthetic::stream& stream, const options& opt,
                   std::vector<run_report>& reports) {
    try {
        reports.push_back(run<Policy>(stream, opt));
        print_run(reports.back(), opt);
    } catch (const std::exception& e) {
        std::printf("\n%.*s  skipped: %s\n", static_cast<int>(Policy::name.size()),
                    Policy::name.data(), e.what());
    }
}

} // namespace

int main(int argc, char** argv) {
    options opt;
    try {
        opt = parse_options(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tradeagg_quickstart: %s\n%s", e.what(), usage);
        return 2;
    }

    std::printf("Generating %s trades over %s tokens (Zipf s = 1) ...\n",
                grouped(opt.trades).c_str(), grouped(opt.tokens).c_str());
    const synthetic::stream stream{
        synthetic::stream_config{.trades = opt.trades, .tokens = opt.tokens}};

    std::vector<run_report> reports;
    run_and_print<tradeagg::throughput_policy>(stream, opt, reports);
    run_and_print<tradeagg::latency_policy>(stream, opt, reports);
    run_and_print<tradeagg::memory_constrained_policy>(stream, opt, reports);
    if (reports.empty()) {
        return 1;
    }

    const run_report& first = reports.front();
    const std::string_view why = tradeagg::to_string(first.nan_price_reason);
    std::printf("\nA trade with a NaN price was refused at push: reject_reason \"%.*s\"\n",
                static_cast<int>(why.size()), why.data());

    print_hot_token(first, stream.names().front());

    // Policies change how trades are moved and stored, never the result.
    bool all_same = true;
    for (const run_report& r : reports) {
        all_same = all_same && same_candles(first, r);
    }
    std::printf("\nThe %zu policies produced identical candles (all intervals) for %s: %s\n",
                reports.size(), stream.names().front().c_str(), all_same ? "yes" : "NO");
    return all_same ? 0 : 1;
}
