// The performance monitor: sampling, tuning the reclamation target, alerts, its thread.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <tradeagg/monitor.hpp>

using namespace tradeagg;
using namespace std::chrono_literals;

namespace {

/// A monitored object whose readings the test sets. Locked, so that a test may change it while
/// a monitor's thread samples it.
struct fake_target {
    mutable std::mutex mutex;
    tradeagg::monitor_sample reading{};
    std::pair<unsigned, unsigned> bounds{50, 1000};
    unsigned target = 100;
    int set_calls = 0;
    bool throw_on_sample = false;

    tradeagg::monitor_sample monitor_sample() {
        const std::lock_guard lock(mutex);
        if (throw_on_sample) {
            throw std::runtime_error("reading failed");
        }
        tradeagg::monitor_sample s = reading;
        s.gc_target_percent = target;
        return s;
    }
    std::pair<unsigned, unsigned> gc_target_bounds() {
        const std::lock_guard lock(mutex);
        return bounds;
    }
    unsigned set_gc_target(unsigned v) {
        const std::lock_guard lock(mutex);
        ++set_calls;
        target = std::clamp(v, bounds.first, bounds.second);
        return target;
    }
    template <class F>
    void change(F f) {
        const std::lock_guard lock(mutex);
        f(reading);
    }
};

/// A clock that never runs: these tests hand step() times of their own.
struct fake_clock {
    using duration = std::chrono::milliseconds;
    using rep = duration::rep;
    using period = duration::period;
    using time_point = std::chrono::time_point<fake_clock, duration>;
    static time_point now() noexcept { return time_point{}; }
};

using fake_monitor = monitor<fake_target, fake_clock>;

fake_clock::time_point at(std::chrono::milliseconds t) {
    return fake_clock::time_point{t};
}

/// The seed's cadence: a sample every 10 s, a tuning step every 60 s.
monitor_options seed_options() {
    monitor_options o;
    o.sample_every = 10s;
    o.tune_every = 60s;
    return o;
}

/// Steps every sample_every from `from` to `to` inclusive.
void run_steps(fake_monitor& m, std::chrono::milliseconds from, std::chrono::milliseconds to) {
    for (auto t = from; t <= to; t += m.options().sample_every) {
        m.step(at(t));
    }
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

template <class Predicate>
bool eventually(Predicate p) {
    // A bound so that a broken monitor fails instead of hanging; never a speed assertion.
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (!p()) {
        if (std::chrono::steady_clock::now() > deadline) {
            return false;
        }
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

struct no_bounds {
    tradeagg::monitor_sample monitor_sample() { return {}; }
    unsigned set_gc_target(unsigned v) { return v; }
};

} // namespace

static_assert(monitorable<fake_target>);
static_assert(!monitorable<no_bounds>);
static_assert(!monitorable<int>);

TEST_CASE("monitor: one sample per step, the latest kept in stats") {
    fake_target target;
    fake_monitor m(target, seed_options());
    CHECK(m.stats().samples == 0);
    for (int i = 0; i < 5; ++i) {
        target.change([&](tradeagg::monitor_sample& s) {
            s.heap_inuse_mb = 10.0 * i;
            s.active_tokens = static_cast<std::size_t>(i);
        });
        m.step(at(10s * i));
    }
    const auto st = m.stats();
    CHECK(st.samples == 5);
    CHECK(st.last.heap_inuse_mb == 40.0);
    CHECK(st.last.active_tokens == 4);
    CHECK(st.last.gc_target_percent == 100);
    CHECK(st.tunings == 0); // 40 s < tune_every
}

TEST_CASE("monitor: cpu_fraction is computed from cpu_seconds over the sample period") {
    fake_target target;
    monitor_options o = seed_options();
    o.cpu_cores = 2;
    fake_monitor m(target, o);
    target.change([](tradeagg::monitor_sample& s) {
        s.cpu_seconds = 100;
        s.cpu_fraction = 0.7; // replaced by the monitor
    });
    m.step(at(0s));
    CHECK(m.stats().last.cpu_fraction == 0.0); // nothing to compare with yet
    target.change([](tradeagg::monitor_sample& s) { s.cpu_seconds = 109; });
    m.step(at(10s));
    CHECK(m.stats().last.cpu_fraction == doctest::Approx(0.45)); // 9 s of 2 cores x 10 s
    target.change([](tradeagg::monitor_sample& s) { s.cpu_seconds = 200; });
    m.step(at(20s));
    CHECK(m.stats().last.cpu_fraction == 1.0); // clamped
    target.change([](tradeagg::monitor_sample& s) { s.cpu_seconds = 50; });
    m.step(at(30s));
    CHECK(m.stats().last.cpu_fraction == 0.0); // CPU time went backwards: no reading
}

TEST_CASE("monitor: tuning runs only every tune_every") {
    fake_target target;
    target.reading.gc_cpu_fraction = 0.2;
    fake_monitor m(target, seed_options());

    run_steps(m, 0s, 50s);
    CHECK(m.stats().samples == 6);
    CHECK(m.stats().tunings == 0);
    CHECK(target.set_calls == 0);

    m.step(at(60s));
    CHECK(m.stats().tunings == 1);
    CHECK(target.target == 150);

    run_steps(m, 70s, 110s);
    CHECK(m.stats().tunings == 1);
    m.step(at(120s));
    CHECK(m.stats().tunings == 2);
    CHECK(target.target == 225);
    CHECK(m.stats().samples == 13);

    // A sample a moment early (less than half a sample period) still tunes: jitter in when the
    // thread wakes does not put tuning off by a whole period.
    run_steps(m, 130s, 170s);
    m.step(at(179s));
    CHECK(m.stats().tunings == 3);
    m.step(at(179s + 54s));
    CHECK(m.stats().tunings == 3); // 54 s < 60 s - 10 s / 2
}

TEST_CASE("monitor: tuning uses the mean of the samples since the previous tuning step") {
    fake_target target;
    std::vector<tuning_event> events;
    monitor_options o = seed_options();
    o.on_tuning = [&](const tuning_event& e) { events.push_back(e); };
    fake_monitor m(target, o);

    // One spike among seven samples: mean 0.2 / 7 < 0.05, no change.
    run_steps(m, 0s, 20s);
    target.change([](tradeagg::monitor_sample& s) { s.gc_cpu_fraction = 0.2; });
    m.step(at(30s));
    target.change([](tradeagg::monitor_sample& s) { s.gc_cpu_fraction = 0.0; });
    run_steps(m, 40s, 60s);
    CHECK(m.stats().tunings == 1);
    CHECK(m.stats().adjustments == 0);
    CHECK(events.empty());

    // The next period starts afresh: its six samples all at 0.06.
    target.change([](tradeagg::monitor_sample& s) { s.gc_cpu_fraction = 0.06; });
    run_steps(m, 70s, 120s);
    REQUIRE(events.size() == 1);
    CHECK(events[0].old_target == 100);
    CHECK(events[0].new_target == 150);
    CHECK(events[0].reason == "gc_cpu_fraction 0.06 > 0.05: raise target 100 -> 150");
}

TEST_CASE("monitor: a high gc_cpu_fraction or CPU use raises the target") {
    fake_target target;
    std::vector<tuning_event> events;
    monitor_options o = seed_options();
    o.on_tuning = [&](const tuning_event& e) { events.push_back(e); };
    o.cpu_cores = 2;

    SUBCASE("gc_cpu_fraction") {
        target.reading.gc_cpu_fraction = 0.14;
        fake_monitor m(target, o);
        run_steps(m, 0s, 60s);
        REQUIRE(events.size() == 1);
        CHECK(events[0].reason == "gc_cpu_fraction 0.14 > 0.05: raise target 100 -> 150");
        const auto st = m.stats();
        CHECK(st.adjustments == 1);
        REQUIRE(st.recent.size() == 1);
        CHECK(st.recent[0].new_target == 150);
        CHECK(target.target == 150);
    }
    SUBCASE("CPU use") {
        fake_monitor m(target, o);
        for (int i = 0; i <= 6; ++i) { // 18 CPU seconds per 10 s on 2 cores: 0.9
            target.change([&](tradeagg::monitor_sample& s) { s.cpu_seconds = 18.0 * i; });
            m.step(at(10s * i));
        }
        REQUIRE(events.size() == 1);
        CHECK(events[0].reason == "cpu_fraction 0.9 > 0.8: raise target 100 -> 150");
        CHECK(target.target == 150);
    }
}

TEST_CASE("monitor: memory near the soft limit lowers the target, and wins over CPU") {
    fake_target target;
    std::vector<tuning_event> events;
    monitor_options o = seed_options();
    o.on_tuning = [&](const tuning_event& e) { events.push_back(e); };
    target.reading.memory_limit_mb = 512; // 0.85 x 512 = 435.2

    SUBCASE("heap in use, with gc CPU high too") {
        target.reading.heap_inuse_mb = 450;
        target.reading.gc_cpu_fraction = 0.3;
        fake_monitor m(target, o);
        run_steps(m, 0s, 60s);
        REQUIRE(events.size() == 1);
        CHECK(events[0].reason ==
              "heap_inuse_mb 450 > 435.2 (0.85 x memory_limit_mb 512): lower target 100 -> 50");
        CHECK(target.target == 50);
    }
    SUBCASE("resident memory") {
        target.reading.heap_inuse_mb = 100;
        target.reading.resident_mb = 500;
        fake_monitor m(target, o);
        run_steps(m, 0s, 60s);
        REQUIRE(events.size() == 1);
        CHECK(contains(events[0].reason, "resident_mb 500 > 435.2"));
        CHECK(contains(events[0].reason, "lower target 100 -> 50"));
    }
    SUBCASE("at the line is not over it") {
        target.reading.memory_limit_mb = 1000;
        target.reading.heap_inuse_mb = 850;
        fake_monitor m(target, o);
        run_steps(m, 0s, 60s);
        CHECK(events.empty());
        CHECK(m.stats().tunings == 1);
    }
    SUBCASE("no limit: memory never lowers") {
        target.reading.memory_limit_mb = 0;
        target.reading.heap_inuse_mb = 100'000;
        fake_monitor m(target, o);
        run_steps(m, 0s, 120s);
        CHECK(events.empty());
        CHECK(m.stats().tunings == 2);
        CHECK(target.set_calls == 0);
    }
    SUBCASE("at the policy min, memory still wins: no raise") {
        target.reading.heap_inuse_mb = 450;
        target.reading.gc_cpu_fraction = 0.3;
        target.target = 50;
        fake_monitor m(target, o);
        run_steps(m, 0s, 60s);
        CHECK(events.empty());
        CHECK(target.target == 50);
    }
}

TEST_CASE("monitor: adjustments stay within the target's bounds") {
    fake_target target;
    target.bounds = {60, 200};
    target.target = 150;
    std::vector<tuning_event> events;
    monitor_options o = seed_options();
    o.on_tuning = [&](const tuning_event& e) { events.push_back(e); };
    fake_monitor m(target, o);

    target.reading.gc_cpu_fraction = 0.5;
    run_steps(m, 0s, 60s);
    REQUIRE(events.size() == 1);
    CHECK(events[0].new_target == 200); // 225 clamped
    CHECK(events[0].reason ==
          "gc_cpu_fraction 0.5 > 0.05: raise target 150 -> 200 (clamped to the policy's max)");

    // At the max, a raise changes nothing: a tuning step, no adjustment, no call, no event.
    run_steps(m, 70s, 120s);
    CHECK(m.stats().tunings == 2);
    CHECK(m.stats().adjustments == 1);
    CHECK(target.set_calls == 1);
    CHECK(events.size() == 1);

    // Lowering: 200 -> 100 -> 60 (50 clamped to the min), then nothing.
    target.change([](tradeagg::monitor_sample& s) {
        s.memory_limit_mb = 100;
        s.heap_inuse_mb = 99;
    });
    run_steps(m, 130s, 300s);
    CHECK(m.stats().tunings == 5);
    REQUIRE(events.size() == 3);
    CHECK(events[1].new_target == 100);
    CHECK(events[2].new_target == 60);
    CHECK(contains(events[2].reason, "lower target 100 -> 60 (clamped to the policy's min)"));
    CHECK_FALSE(contains(events[1].reason, "clamped"));
    CHECK(target.target == 60);
    CHECK(m.stats().recent.size() == 3);
}

TEST_CASE("monitor: stats().recent keeps the latest adjustments") {
    fake_target target;
    target.bounds = {1, 4'000'000'000u};
    target.target = 1;
    target.reading.gc_cpu_fraction = 1;
    monitor_options o = seed_options();
    o.tune_every = o.sample_every; // every sample tunes
    fake_monitor m(target, o);
    run_steps(m, 0s, 10s * 40);
    const auto st = m.stats();
    CHECK(st.adjustments == 40);
    REQUIRE(st.recent.size() == fake_monitor::recent_capacity);
    CHECK(st.recent.back().new_target == target.target);
    for (std::size_t i = 1; i < st.recent.size(); ++i) {
        CHECK(st.recent[i].old_target == st.recent[i - 1].new_target);
    }
}

TEST_CASE("monitor: each alert is raised once per crossing and cleared once") {
    struct kind_case {
        alert_kind kind;
        double threshold;
        void (*set)(tradeagg::monitor_sample&, double);
    };
    const kind_case cases[] = {
        {alert_kind::heap_inuse, 400,
         [](tradeagg::monitor_sample& s, double v) { s.heap_inuse_mb = v; }},
        {alert_kind::gc_cpu, 0.1,
         [](tradeagg::monitor_sample& s, double v) { s.gc_cpu_fraction = v; }},
        {alert_kind::threads, 5000,
         [](tradeagg::monitor_sample& s, double v) { s.threads = static_cast<std::size_t>(v); }},
        {alert_kind::redis_latency, 50,
         [](tradeagg::monitor_sample& s, double v) { s.redis_latency_avg_ms = v; }},
    };
    for (const kind_case& c : cases) {
        CAPTURE(to_string(c.kind));
        fake_target target;
        std::vector<alert> alerts;
        monitor_options o = seed_options();
        o.on_alert = [&](const alert& a) { alerts.push_back(a); };
        fake_monitor m(target, o);
        const double t = c.threshold;
        int step = 0;
        const auto sample = [&](double v) {
            target.change([&](tradeagg::monitor_sample& s) { c.set(s, v); });
            m.step(at(10s * step++));
        };

        sample(t / 2);
        sample(t); // equal is not above
        CHECK(alerts.empty());

        sample(t * 2);
        REQUIRE(alerts.size() == 1);
        CHECK(alerts[0].kind == c.kind);
        CHECK(alerts[0].raised);
        CHECK(alerts[0].value == t * 2);
        CHECK(alerts[0].threshold == t);
        CHECK(contains(alerts[0].message, std::string(to_string(c.kind)) + " "));
        CHECK(contains(alerts[0].message, "alert raised"));
        CHECK(m.stats().alerts_active[static_cast<std::size_t>(c.kind)]);

        sample(t * 3); // still above: nothing new
        sample(t * 2);
        CHECK(alerts.size() == 1);

        sample(t); // back to the threshold clears
        REQUIRE(alerts.size() == 2);
        CHECK_FALSE(alerts[1].raised);
        CHECK(alerts[1].value == t);
        CHECK(contains(alerts[1].message, "alert cleared"));
        CHECK_FALSE(m.stats().alerts_active[static_cast<std::size_t>(c.kind)]);

        sample(t / 4);
        CHECK(alerts.size() == 2);

        sample(t * 2); // a second crossing is a second alert
        sample(t / 2);
        REQUIRE(alerts.size() == 4);
        CHECK(alerts[2].raised);
        CHECK_FALSE(alerts[3].raised);

        const auto st = m.stats();
        CHECK(st.alerts_raised == 2);
        CHECK(st.alerts_cleared == 2);
    }
}

TEST_CASE("monitor: no Redis reading neither raises nor clears the Redis alert") {
    fake_target target;
    std::vector<alert> alerts;
    monitor_options o = seed_options();
    o.on_alert = [&](const alert& a) { alerts.push_back(a); };
    fake_monitor m(target, o);

    m.step(at(0s)); // no Redis sink
    target.change([](tradeagg::monitor_sample& s) { s.redis_latency_avg_ms = 80; });
    m.step(at(10s));
    REQUIRE(alerts.size() == 1);
    CHECK(alerts[0].message == "redis_latency_avg_ms 80 > 50: alert raised");
    target.change([](tradeagg::monitor_sample& s) { s.redis_latency_avg_ms.reset(); });
    m.step(at(20s));
    CHECK(alerts.size() == 1);
    CHECK(m.stats().alerts_active[static_cast<std::size_t>(alert_kind::redis_latency)]);
    target.change([](tradeagg::monitor_sample& s) { s.redis_latency_avg_ms = 12.5; });
    m.step(at(30s));
    REQUIRE(alerts.size() == 2);
    CHECK(alerts[1].message == "redis_latency_avg_ms 12.5 <= 50: alert cleared");
}

TEST_CASE("monitor: a disabled threshold never alerts") {
    fake_target target;
    std::vector<alert> alerts;
    monitor_options o = seed_options();
    o.thresholds.heap_inuse_mb = alert_thresholds::off;
    o.thresholds.threads = alert_thresholds::threads_off;
    o.on_alert = [&](const alert& a) { alerts.push_back(a); };
    fake_monitor m(target, o);
    target.reading.heap_inuse_mb = 1e12;
    target.reading.threads = std::numeric_limits<std::size_t>::max();
    target.reading.gc_cpu_fraction = 0.5; // still enabled
    m.step(at(0s));
    target.reading.heap_inuse_mb = std::numeric_limits<double>::infinity();
    m.step(at(10s));
    REQUIRE(alerts.size() == 1);
    CHECK(alerts[0].kind == alert_kind::gc_cpu);
}

TEST_CASE("monitor: alert kinds are named as the readings they watch") {
    CHECK(to_string(alert_kind::heap_inuse) == "heap_inuse_mb");
    CHECK(to_string(alert_kind::gc_cpu) == "gc_cpu_fraction");
    CHECK(to_string(alert_kind::threads) == "num_goroutines");
    CHECK(to_string(alert_kind::redis_latency) == "redis_latency_avg_ms");
}

TEST_CASE("monitor: bad options are refused") {
    fake_target target;
    const auto refused = [&](void (*change)(monitor_options&)) {
        monitor_options o;
        change(o);
        CHECK_THROWS_AS(fake_monitor(target, o), std::invalid_argument);
    };
    refused([](monitor_options& o) { o.sample_every = 0ms; });
    refused([](monitor_options& o) { o.sample_every = -5ms; });
    refused([](monitor_options& o) { o.tune_every = o.sample_every - 1ms; });
    refused([](monitor_options& o) { o.thresholds.heap_inuse_mb = -1; });
    refused([](monitor_options& o) { o.thresholds.gc_cpu_fraction = -0.1; });
    refused([](monitor_options& o) { o.thresholds.redis_latency_avg_ms = std::nan(""); });
    refused([](monitor_options& o) { o.gc_cpu_high = -1; });
    refused([](monitor_options& o) { o.cpu_high = std::nan(""); });
    refused([](monitor_options& o) { o.memory_high_fraction = 0; });
    refused([](monitor_options& o) { o.raise_factor = 1; });
    refused([](monitor_options& o) { o.lower_factor = 1; });
    refused([](monitor_options& o) { o.lower_factor = 0; });

    monitor_options o;
    o.tune_every = o.sample_every; // equal is fine
    CHECK_NOTHROW(fake_monitor(target, o));
    try {
        monitor_options bad;
        bad.tune_every = 1s;
        fake_monitor m(target, bad);
        FAIL("no exception");
    } catch (const std::invalid_argument& e) {
        CHECK(contains(e.what(), "tune_every"));
    }
}

TEST_CASE("monitor: a throwing callback is counted and the monitor carries on") {
    fake_target target;
    int alert_calls = 0;
    int tuning_calls = 0;
    monitor_options o = seed_options();
    o.on_alert = [&](const alert&) {
        ++alert_calls;
        throw std::runtime_error("alert sink down");
    };
    o.on_tuning = [&](const tuning_event&) {
        ++tuning_calls;
        throw 42;
    };
    fake_monitor m(target, o);
    target.reading.gc_cpu_fraction = 0.5; // an alert and a raise
    run_steps(m, 0s, 60s);
    CHECK(alert_calls == 1);
    CHECK(tuning_calls == 1);
    target.change([](tradeagg::monitor_sample& s) { s.gc_cpu_fraction = 0; });
    run_steps(m, 70s, 120s);
    CHECK(alert_calls == 2); // cleared
    const auto st = m.stats();
    CHECK(st.samples == 13);
    CHECK(st.callback_errors == 3);
    CHECK(st.alerts_raised == 1);
    CHECK(st.alerts_cleared == 1);
    CHECK(st.adjustments == 1);
    CHECK(target.target == 150);
}

TEST_CASE("monitor: callbacks may read stats(), and may not re-enter step()") {
    fake_target target;
    fake_monitor* self = nullptr;
    std::uint64_t seen_samples = 0;
    bool reentry_refused = false;
    monitor_options o = seed_options();
    o.on_alert = [&](const alert&) {
        seen_samples = self->stats().samples; // published before the callback runs
        try {
            self->step(at(1h));
        } catch (const std::logic_error&) {
            reentry_refused = true;
        }
    };
    fake_monitor m(target, o);
    self = &m;
    target.reading.threads = 6000;
    m.step(at(0s));
    CHECK(seen_samples == 1);
    CHECK(reentry_refused);
    CHECK(m.stats().samples == 1);
}

TEST_CASE("monitor: start() samples on its own thread, stop() joins it") {
    fake_target target;
    monitor_options o;
    o.sample_every = 5ms;
    o.tune_every = 10ms;
    target.reading.gc_cpu_fraction = 0.5;
    monitor<fake_target> m(target, o);

    m.start();
    m.start(); // already running: nothing happens
    CHECK(eventually([&] { return m.stats().samples >= 5 && m.stats().tunings >= 1; }));
    m.stop();
    m.stop(); // idempotent
    const auto stopped = m.stats();
    CHECK(stopped.adjustments >= 1);
    std::this_thread::sleep_for(20ms);
    CHECK(m.stats().samples == stopped.samples); // nothing runs after stop()

    m.start(); // runs again after a stop
    CHECK(eventually([&] { return m.stats().samples >= stopped.samples + 3; }));
    target.change([](tradeagg::monitor_sample& s) { s.threads = 9000; }); // while it samples
    CHECK(eventually(
        [&] { return m.stats().alerts_active[static_cast<std::size_t>(alert_kind::threads)]; }));
    CHECK(m.stats().alerts_raised == 2); // gc_cpu at the first sample, then threads
    // The destructor stops it.
}

TEST_CASE("monitor: stop() wakes a thread waiting for a long period") {
    // With a one-hour period, a thread that slept through its wait would keep stop() (and this
    // test) waiting for an hour: stop() returning at all shows it wakes the thread.
    fake_target target;
    monitor_options o;
    o.sample_every = 1h;
    o.tune_every = 1h;
    monitor<fake_target> m(target, o);
    m.start();
    CHECK(eventually([&] { return m.stats().samples == 1; })); // one at once
    m.stop();
    CHECK(m.stats().samples == 1);
}

TEST_CASE("monitor: the thread counts a failing target and carries on") {
    fake_target target;
    monitor_options o;
    o.sample_every = 5ms;
    o.tune_every = 5ms;
    target.throw_on_sample = true;
    monitor<fake_target> m(target, o);
    m.start();
    CHECK(eventually([&] { return m.stats().step_errors >= 2; }));
    CHECK(m.stats().samples == 0);
    {
        const std::lock_guard lock(target.mutex);
        target.throw_on_sample = false;
    }
    CHECK(eventually([&] { return m.stats().samples >= 2; }));
    m.stop();
}

TEST_CASE("monitor: a callback may stop its own monitor's thread") {
    fake_target target;
    monitor<fake_target>* self = nullptr;
    std::atomic<int> calls{0};
    monitor_options o;
    o.sample_every = 5ms;
    o.tune_every = 5ms;
    o.on_alert = [&](const alert& a) {
        ++calls;
        if (a.raised) {
            self->stop(); // asks, does not wait for itself
        }
    };
    target.reading.threads = 6000;
    monitor<fake_target> m(target, o);
    self = &m;
    m.start();
    CHECK(eventually([&] { return calls.load() == 1; }));
    std::this_thread::sleep_for(20ms);
    CHECK(m.stats().samples == 1); // the thread stopped after that step
    CHECK(m.stats().callback_errors == 0);
    m.start(); // joins the stopped thread and starts again
    target.change([](tradeagg::monitor_sample& s) { s.threads = 1; });
    CHECK(eventually([&] { return m.stats().samples >= 3 && calls.load() == 2; })); // cleared
    m.stop();
}

TEST_CASE("a monitor watches and tunes a pipeline") {
    pipeline<throughput_policy, null_sink> p{runtime_config{}};
    p.start();
    auto h = p.make_producer();
    for (int k = 0; k < 200; ++k) {
        const std::string name = "MON" + std::to_string(k);
        REQUIRE(h.push(trade_view{name, 1.0, 1.0, side::buy, 1'000 + k, 1}) == reject_reason::none);
    }
    // The rings alone take more than 1 MiB: memory is over the soft limit.
    p.set_memory_limit_mb(1);
    std::vector<tuning_event> events;
    std::vector<alert> alerts;
    monitored_pipeline<decltype(p)> target(p, [] { return std::optional<double>(75.0); });
    monitor_options o;
    o.sample_every = std::chrono::milliseconds(10);
    o.tune_every = std::chrono::milliseconds(20);
    o.on_tuning = [&](const tuning_event& e) { events.push_back(e); };
    o.on_alert = [&](const alert& a) { alerts.push_back(a); };
    // Only the Redis threshold: the others read the whole test process, whatever ran before.
    o.thresholds.heap_inuse_mb = alert_thresholds::off;
    o.thresholds.gc_cpu_fraction = alert_thresholds::off;
    o.thresholds.threads = alert_thresholds::threads_off;
    // Memory decides the tuning, not the CPU of the tests running beside this one.
    o.gc_cpu_high = 1.0;
    o.cpu_high = 1.0;
    monitor m(target, o);
    const auto t0 = std::chrono::steady_clock::time_point{};
    m.step(t0);
    m.step(t0 + std::chrono::milliseconds(10));
    m.step(t0 + std::chrono::milliseconds(20));
    const auto st = m.stats();
    CHECK(st.last.heap_inuse_mb > 1.0);
    CHECK(st.last.memory_limit_mb == 1.0);
    CHECK(st.last.threads >= 2);
    REQUIRE(st.last.redis_latency_avg_ms.has_value());
    REQUIRE(events.size() == 1);
    CHECK(events[0].old_target == throughput_policy::gc_target_percent);
    CHECK(events[0].new_target == throughput_policy::gc_target_percent / 2);
    CHECK(p.gc_target_percent() == throughput_policy::gc_target_percent / 2);
    CHECK(events[0].reason.find("memory_limit_mb") != std::string::npos);
    // redis_latency_avg_ms 75 > 50: raised once, not once per sample.
    REQUIRE(alerts.size() == 1);
    CHECK(alerts[0].kind == alert_kind::redis_latency);
    CHECK(alerts[0].raised);
    p.stop();
    CHECK(target.set_gc_target(1) == throughput_policy::gc_target_min_percent);
}
