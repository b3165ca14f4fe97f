// tradeagg's latency benchmark: latency below saturation, as the field measures it.
//
// Each run offers trades at a fixed rate from one producer thread to one shard and records, for
// every trade, three latencies in full histograms (p50, p99, p99.9, p99.99, max):
//
//   push       what `producer::push` costs the caller (two clock reads included);
//   applied    enqueue -> applied by the shard, as the pipeline records it (its own histogram;
//              the benchmark's policies sample every trade instead of one in N);
//   delivered  intended send time -> the sink sees the trade as its token's latest.
//
// and, for the pipeline, `handover`: how long each flush and hand-over to the sink kept the
// worker from its rings (the worker's own share of the tail; what remains is the thread losing
// its core).
//
// Trade k is intended at t0 + k / rate. The producer spins until that instant (a sleep's
// wake-up would itself be a tail), pushes, and moves on; a push that stalls makes the next
// trades late, and `delivered` counts from the intended time, so a stall is never hidden (no
// coordinated omission). `producer_late` reports how late the producer was at its sends, so a
// reader can tell the pipeline's tail from the producer's.
//
//   BM_latency_ring/rate:<r>            a bare Boost.Lockfree SPSC ring of the same records,
//                                       a consumer thread spinning on it: the one-way
//                                       handoff (from enqueue, as `applied` is, and from the
//                                       intended time) that the pipeline's figures sit on.
//   BM_latency/<policy>/rate:<r>        tradeagg::pipeline<Policy>, one shard, one producer
//                                       handle, a sink that records deliveries.
//
// Rates: 10 k, 100 k and 1 M trades/s, and half the policy's capacity (`rate:half`), measured
// first in the same process by pushing as fast as the producer can. 1,000 tokens with Zipf
// popularity; event time follows the offered time, so no trade is late. Each run lasts
// TRADEAGG_LATENCY_BENCH_SECONDS (default 2). bench/run prints the table and the bars.
//
// TRADEAGG_LATENCY_BENCH_CPUS="P,W" pins the producer to CPU P and the consumer (the shard's
// worker through `runtime_config::worker_cpus`, or the bare ring's consumer) to CPU W; unset,
// nothing is pinned.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>
#include <boost/lockfree/spsc_queue.hpp>

#include <tradeagg/tradeagg.hpp>

#include "stream.hpp"

namespace {

using tradeagg::detail::now_ns;
using histogram = tradeagg::latency_histogram;

/// A shipped policy with every trade carrying its enqueue time, so that `applied` is a full
/// histogram rather than one trade in 8 or 64. Costs each push and each apply a clock read,
/// as the bare ring's records do.
template <class Policy>
struct every_trade_timed : Policy {
    static constexpr std::uint32_t latency_sample_every = 1;
};

double run_seconds() {
    static const double seconds = [] {
        const char* text = std::getenv("TRADEAGG_LATENCY_BENCH_SECONDS");
        if (text == nullptr || *text == '\0') {
            return 2.0;
        }
        char* end = nullptr;
        const double v = std::strtod(text, &end);
        if (end == text || *end != '\0' || !(v > 0.0) || v > 3600.0) {
            std::fprintf(stderr,
                         "tradeagg_latency_bench: TRADEAGG_LATENCY_BENCH_SECONDS=\"%s\": expected "
                         "seconds in (0, 3600]\n",
                         text);
            std::exit(2);
        }
        return v;
    }();
    return seconds;
}

/// The CPUs of TRADEAGG_LATENCY_BENCH_CPUS: the producer's and the consumer's, if set.
struct cpu_pair {
    unsigned producer;
    unsigned consumer;
};
const std::optional<cpu_pair>& pinned_cpus() {
    static const std::optional<cpu_pair> cpus = []() -> std::optional<cpu_pair> {
        const char* text = std::getenv("TRADEAGG_LATENCY_BENCH_CPUS");
        if (text == nullptr || *text == '\0') {
            return std::nullopt;
        }
        unsigned p = 0;
        unsigned w = 0;
        char tail = 0;
        const std::vector<unsigned> allowed = tradeagg::detail::allowed_cpus();
        const auto ok = [&](unsigned c) {
            return std::find(allowed.begin(), allowed.end(), c) != allowed.end();
        };
        if (std::sscanf(text, "%u,%u%c", &p, &w, &tail) != 2 || !ok(p) || !ok(w)) {
            std::fprintf(stderr,
                         "tradeagg_latency_bench: TRADEAGG_LATENCY_BENCH_CPUS=\"%s\": expected "
                         "\"P,W\", two CPUs of %s\n",
                         text, tradeagg::detail::cpu_list(allowed).c_str());
            std::exit(2);
        }
        return cpu_pair{p, w};
    }();
    return cpus;
}

/// Pins the calling thread to the producer's or the consumer's CPU, if any were given.
void pin(bool producer) {
    if (const auto& cpus = pinned_cpus()) {
        const unsigned cpu = producer ? cpus->producer : cpus->consumer;
        if (!tradeagg::detail::pin_this_thread(cpu)) {
            std::fprintf(stderr, "tradeagg_latency_bench: cannot pin a thread to CPU %u\n", cpu);
            std::exit(2);
        }
    }
}

/// The tokens and their popularity: 1,000 Zipf tokens, whose order of arrival repeats with a
/// period long enough that no cache sees the repetition.
const synthetic::stream& token_order() {
    static const synthetic::stream s{synthetic::stream_config{.trades = 1 << 20, .tokens = 1'000}};
    return s;
}

/// When trade k is meant to be sent.
struct schedule {
    std::int64_t t0_ns = 0;
    double period_ns = 0;

    [[nodiscard]] std::int64_t intended(std::uint64_t k) const noexcept {
        return t0_ns + static_cast<std::int64_t>(static_cast<double>(k) * period_ns);
    }
};

/// Trade k of a run: its token from the Zipf order, its event time following the offered
/// time, its id k (so the sink can find its intended time).
tradeagg::trade trade_at(const std::vector<tradeagg::trade>& order, std::uint64_t k,
                         const schedule& when, tradeagg::timestamp_ms start_ms) {
    tradeagg::trade t = order[k % order.size()];
    t.ts_ms = start_ms + (when.intended(k) - when.t0_ns) / 1'000'000;
    t.id = k;
    return t;
}

/// Records `now - since_ns` (0 if negative: a clock read before the stamp it is compared to).
void record_since(histogram& h, std::int64_t since_ns, std::int64_t now) noexcept {
    h.record(now > since_ns ? static_cast<std::uint64_t>(now - since_ns) : 0);
}

/// Records when each token's latest trade reaches it, from that trade's intended time.
/// Called on the shard's worker only (one shard), so the histogram has one writer.
class delivery_sink {
public:
    void arm(const schedule& when) noexcept { when_ = when; }

    void consume(const tradeagg::flush_batch& batch) {
        const std::int64_t now = now_ns();
        for (const tradeagg::token_update& u : batch.tokens) {
            record_since(delivered_, when_.intended(u.latest.id), now);
        }
    }

    [[nodiscard]] const histogram& delivered() const noexcept { return delivered_; }

private:
    schedule when_;
    histogram delivered_;
};
static_assert(tradeagg::sink<delivery_sink>);

/// Spins until `t_ns`; returns how late the caller already was (0 if on time).
std::uint64_t wait_until(std::int64_t t_ns) noexcept {
    std::int64_t now = now_ns();
    if (now > t_ns) {
        return static_cast<std::uint64_t>(now - t_ns);
    }
    while (now < t_ns) {
        now = now_ns();
    }
    return 0;
}

void set_percentiles(benchmark::State& state, std::string_view what, const histogram::counts& c,
                     double unit_ns);

/// The producer side of a run, the same for the pipeline and for the bare ring: `rate` trades
/// per second for the run's length, trade k offered at its intended time; what each push cost
/// and how late the producer was at each send.
class paced_sender {
public:
    explicit paced_sender(double rate)
        : paced_sender(rate, static_cast<std::uint64_t>(rate * run_seconds())) {}
    /// `count` trades at `rate`; an infinite rate offers every trade at once (each is late).
    paced_sender(double rate, std::uint64_t count) : rate_(rate), count_(count) {}

    [[nodiscard]] std::uint64_t count() const noexcept { return count_; }

    /// A schedule starting 10 ms from now, so that the consumer is running by its first trade.
    [[nodiscard]] schedule start() const noexcept {
        return schedule{now_ns() + 10'000'000, 1e9 / rate_};
    }

    /// Offers every trade, calling `push(trade, now_ns)` at its intended time; returns the
    /// run's length from the schedule's start to the last send, in seconds.
    template <class Push>
    double run(const std::vector<tradeagg::trade>& order, const schedule& when,
               tradeagg::timestamp_ms start_ms, Push&& push) {
        for (std::uint64_t k = 0; k < count_; ++k) {
            const tradeagg::trade t = trade_at(order, k, when, start_ms);
            late_.record(wait_until(when.intended(k)));
            const std::int64_t before = now_ns();
            push(t, before);
            push_cost_.record(static_cast<std::uint64_t>(now_ns() - before));
        }
        seconds_ = static_cast<double>(now_ns() - when.t0_ns) / 1e9;
        return seconds_;
    }

    /// The rate, what was sent, the push cost and the producer's lateness, as counters.
    void report(benchmark::State& state) const {
        state.counters["offered_per_second"] = rate_;
        state.counters["sent_per_second"] = static_cast<double>(count_) / seconds_;
        state.counters["trades"] = static_cast<double>(count_);
        set_percentiles(state, "push_ns", push_cost_.read(), 1.0);
        set_percentiles(state, "producer_late_us", late_.read(), 1e3);
    }

private:
    double rate_;
    std::uint64_t count_;
    double seconds_ = 0;
    histogram push_cost_;
    histogram late_;
};

void set_percentiles(benchmark::State& state, std::string_view what, const histogram::counts& c,
                     double unit_ns) {
    const std::string w(what);
    state.counters[w + "_p50"] = c.quantile(0.50) / unit_ns;
    state.counters[w + "_p99"] = c.quantile(0.99) / unit_ns;
    state.counters[w + "_p999"] = c.quantile(0.999) / unit_ns;
    state.counters[w + "_p9999"] = c.quantile(0.9999) / unit_ns;
    state.counters[w + "_max"] = static_cast<double>(c.max_ns) / unit_ns;
}

std::string rate_name(std::optional<double> rate) {
    if (!rate) {
        return "half";
    }
    return std::to_string(static_cast<long long>(*rate));
}

/// The ceiling under `Policy` of the producer loop the runs use (its clock reads and records
/// included): `paced_sender` offering 1 M trades at once, until the shard has applied them,
/// per second. Measured once per policy; half of it is the `rate:half` runs' offered rate.
template <class Policy>
double capacity() {
    static const double measured = [] {
        using timed = every_trade_timed<Policy>;
        tradeagg::runtime_config cfg;
        cfg.shards = 1;
        tradeagg::pipeline<timed, tradeagg::null_sink> p{cfg};
        const std::vector<tradeagg::trade> order = token_order().intern_into(p);
        p.start();
        auto producer = p.make_producer();
        paced_sender flat(std::numeric_limits<double>::infinity(), 1 << 20);
        const schedule when = flat.start();
        (void)flat.run(order, when, token_order().trades().front().ts_ms,
                       [&](const tradeagg::trade& t, std::int64_t) { (void)producer.push(t); });
        p.stop();
        const double s = static_cast<double>(now_ns() - when.t0_ns) / 1e9;
        return static_cast<double>(flat.count()) / s;
    }();
    return measured;
}

template <class Policy>
void bm_latency(benchmark::State& state, std::optional<double> fixed_rate) {
    using timed = every_trade_timed<Policy>;
    paced_sender sender(fixed_rate ? *fixed_rate : capacity<Policy>() / 2.0);
    std::optional<histogram::counts> applied;
    std::optional<histogram::counts> handovers;
    delivery_sink sink;
    for (auto _ : state) {
        tradeagg::runtime_config cfg;
        cfg.shards = 1;
        if (const auto& cpus = pinned_cpus()) {
            cfg.worker_cpus = {cpus->consumer};
        }
        tradeagg::pipeline<timed, delivery_sink&> p{cfg, sink};
        const std::vector<tradeagg::trade> order = token_order().intern_into(p);
        const tradeagg::timestamp_ms start_ms = token_order().trades().front().ts_ms;
        p.start();
        auto producer = p.make_producer();
        const schedule when = sender.start();
        sink.arm(when);
        const double seconds =
            sender.run(order, when, start_ms,
                       [&](const tradeagg::trade& t, std::int64_t) { (void)producer.push(t); });
        p.stop();
        state.SetIterationTime(seconds);
        applied = p.apply_latency_counts();
        handovers = p.handover_counts();
        const tradeagg::pipeline_stats st = p.stats();
        state.counters["flushes"] = static_cast<double>(st.flushes);
        state.counters["reclamations"] = static_cast<double>(st.reclamations);
        state.counters["reclaim_ms"] = st.reclaim_cpu_seconds * 1e3;
    }
    sender.report(state);
    set_percentiles(state, "applied_us", *applied, 1e3);
    set_percentiles(state, "delivered_us", sink.delivered().read(), 1e3);
    set_percentiles(state, "handover_us", *handovers, 1e3);
}

/// The same records at the same rate through a bare SPSC ring, to a consumer spinning on it.
void bm_latency_ring(benchmark::State& state, double rate) {
    paced_sender sender(rate);
    const std::uint64_t count = sender.count();
    histogram handoff;          // from the record's enqueue stamp, as `applied` is measured
    histogram handoff_intended; // from the intended send time, as `delivered` is measured
    for (auto _ : state) {
        boost::lockfree::spsc_queue<tradeagg::ingress_record> ring(65'536);
        const std::vector<tradeagg::trade>& order = token_order().trades();
        const schedule when = sender.start();
        std::atomic<bool> done{false};
        std::thread consumer([&] {
            pin(false);
            tradeagg::ingress_record r;
            std::uint64_t seen = 0;
            while (seen < count) {
                if (!ring.pop(r)) {
                    if (done.load(std::memory_order_acquire) && ring.read_available() == 0) {
                        break;
                    }
                    continue;
                }
                const std::int64_t now = now_ns();
                record_since(handoff, r.enqueued_ns, now);
                record_since(handoff_intended, when.intended(r.t.id), now);
                ++seen;
            }
        });
        const double seconds = sender.run(order, when, order.front().ts_ms,
                                          [&](const tradeagg::trade& t, std::int64_t now) {
                                              while (!ring.push(tradeagg::ingress_record{t, now})) {
                                              }
                                          });
        done.store(true, std::memory_order_release);
        consumer.join();
        state.SetIterationTime(seconds);
    }
    sender.report(state);
    set_percentiles(state, "applied_us", handoff.read(), 1e3);
    set_percentiles(state, "delivered_us", handoff_intended.read(), 1e3);
}

void configure(benchmark::internal::Benchmark* b) {
    b->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
}

template <class Policy>
void register_policy() {
    const std::string policy(Policy::name);
    for (const std::optional<double> rate :
         {std::optional<double>(10'000), std::optional<double>(100'000),
          std::optional<double>(1'000'000), std::optional<double>()}) {
        configure(benchmark::RegisterBenchmark(
            ("BM_latency/" + policy + "/rate:" + rate_name(rate)).c_str(),
            [rate](benchmark::State& s) { bm_latency<Policy>(s, rate); }));
    }
}

} // namespace

int main(int argc, char** argv) {
    (void)run_seconds(); // a malformed value fails before anything runs
    pin(true);           // the producer: this thread
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
        return 1;
    }
    benchmark::AddCustomContext("run_seconds", std::to_string(run_seconds()));
    benchmark::AddCustomContext("tokens", "1000");
    if (const auto& cpus = pinned_cpus()) {
        benchmark::AddCustomContext("cpus", std::to_string(cpus->producer) + "," +
                                                std::to_string(cpus->consumer));
    }
    for (const double rate : {10'000.0, 100'000.0, 1'000'000.0}) {
        configure(benchmark::RegisterBenchmark(
            ("BM_latency_ring/rate:" + rate_name(rate)).c_str(),
            [rate](benchmark::State& s) { bm_latency_ring(s, rate); }));
    }
    register_policy<tradeagg::latency_policy>();
    register_policy<tradeagg::throughput_policy>();
    register_policy<tradeagg::memory_constrained_policy>();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
