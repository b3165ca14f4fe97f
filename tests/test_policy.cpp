// The policy concept: the shipped policies and a user's derived one pass; each malformed shape
// is refused. Runtime configuration stays inside the policy's bounds.

#include <array>
#include <chrono>
#include <concepts>
#include <string>

#include <sched.h>

#include <doctest/doctest.h>

#include <tradeagg/tradeagg.hpp>

using namespace tradeagg;
using std::chrono::milliseconds;

namespace {

// The documented way to customise: inherit and override one member.
struct narrow_batches : throughput_policy {
    static constexpr std::size_t batch_width = 16;
};
struct blocking_throughput : throughput_policy {
    using wait = tradeagg::block;
};
struct hourly_only : memory_constrained_policy {
    static constexpr std::array<interval, 2> intervals{intervals::h1, intervals::d1};
    static constexpr milliseconds rolling_bucket{3'600'000};
};

// Each of these breaks one rule.
struct missing_member { // no intervals at all
    static constexpr std::string_view name = "x";
    static constexpr std::size_t ingress_capacity = 1024;
};
struct zero_batch : throughput_policy {
    static constexpr std::size_t batch_width = 0;
};
struct wrong_type_batch : throughput_policy {
    static constexpr int batch_width = 64; // must be std::size_t
};
struct tiny_ring : throughput_policy {
    static constexpr std::size_t ingress_capacity = 1;
};
struct unknown_wait : throughput_policy {
    struct sleepy {};
    using wait = sleepy;
};
struct unknown_emission : throughput_policy {
    struct sometimes {};
    using emit = sometimes;
};
struct idle_emitting_throughput : throughput_policy {
    using emit = emit_when_idle;
};
struct no_emit_member {};
struct patient_emission : throughput_policy {
    struct later : emit_when_idle {
        static constexpr std::chrono::microseconds min_interval{500};
    };
    using emit = later;
};
struct negative_emission_interval : throughput_policy {
    struct never : emit_when_idle {
        static constexpr std::chrono::microseconds min_interval{-1};
    };
    using emit = never;
};
struct stateful : throughput_policy {
    int counter = 0; // a policy holds no data
};
struct non_static_member : throughput_policy {
    std::size_t batch_width = 64; // hides the static one with a data member
};
struct decreasing_intervals : throughput_policy {
    static constexpr std::array<interval, 2> intervals{intervals::m1, intervals::s1};
};
struct unaligned_intervals : throughput_policy {
    static constexpr std::array<interval, 2> intervals{interval{7'000}, interval{60'000}};
};
struct no_intervals : throughput_policy {
    static constexpr std::array<interval, 0> intervals{};
};
struct intervals_as_ints : throughput_policy {
    static constexpr std::array<int, 1> intervals{1000};
};
struct odd_rolling_bucket : throughput_policy {
    static constexpr milliseconds rolling_bucket{7'000}; // does not divide 24 h
};
struct lateness_too_long : throughput_policy {
    static constexpr milliseconds allowed_lateness{86'400'000};
};
struct negative_lateness : throughput_policy {
    static constexpr milliseconds allowed_lateness{-1};
};
struct lateness_in_seconds : throughput_policy {
    static constexpr std::chrono::seconds allowed_lateness{2}; // must be milliseconds
};
struct sample_not_power_of_two : throughput_policy {
    static constexpr std::uint32_t latency_sample_every = 48;
};
struct gc_target_outside_bounds : throughput_policy {
    static constexpr unsigned gc_target_percent = 5'000;
};
struct shrinking_arena : throughput_policy {
    static constexpr std::size_t arena_max_chunk_bytes = 1'024;
};
struct zero_shards : throughput_policy {
    static constexpr std::size_t max_shards = 0;
};
struct no_name : throughput_policy {
    static constexpr const char* name = "no_name";
};
struct zero_flush_interval : throughput_policy {
    static constexpr milliseconds flush_interval{0};
};

} // namespace

static_assert(policy<throughput_policy>);
static_assert(policy<latency_policy>);
static_assert(policy<memory_constrained_policy>);
static_assert(policy<narrow_batches>);
static_assert(policy<blocking_throughput>);
static_assert(policy<hourly_only>);

struct unknown_limit_behaviour : throughput_policy {
    using at_limit = block; // a wait strategy, not a limit behaviour
};
struct memory_limit_as_int : throughput_policy {
    static constexpr int memory_limit_mb = 256;
};

static_assert(!policy<int>);
static_assert(!policy<missing_member>);
static_assert(!policy<zero_batch>);
static_assert(!policy<wrong_type_batch>);
static_assert(!policy<tiny_ring>);
static_assert(!policy<unknown_wait>);
static_assert(!policy<unknown_emission>);
static_assert(policy<idle_emitting_throughput>);
static_assert(policy<patient_emission>);
static_assert(!policy<negative_emission_interval>);
// A policy written before `emit` existed emits on the tick; the shipped ones say what they do.
static_assert(std::same_as<emission_of_t<no_emit_member>, emit_on_tick>);
static_assert(std::same_as<emission_of_t<throughput_policy>, emit_on_tick>);
static_assert(std::same_as<emission_of_t<latency_policy>, emit_when_idle>);
static_assert(std::same_as<emission_of_t<memory_constrained_policy>, emit_on_tick>);
static_assert(!policy<stateful>);
static_assert(!policy<non_static_member>);
static_assert(!policy<decreasing_intervals>);
static_assert(!policy<unaligned_intervals>);
static_assert(!policy<no_intervals>);
static_assert(!policy<intervals_as_ints>);
static_assert(!policy<odd_rolling_bucket>);
static_assert(!policy<lateness_too_long>);
static_assert(!policy<negative_lateness>);
static_assert(!policy<lateness_in_seconds>);
static_assert(!policy<sample_not_power_of_two>);
static_assert(!policy<gc_target_outside_bounds>);
static_assert(!policy<shrinking_arena>);
static_assert(!policy<zero_shards>);
static_assert(!policy<no_name>);
static_assert(!policy<zero_flush_interval>);
static_assert(!policy<unknown_limit_behaviour>);
static_assert(!policy<memory_limit_as_int>);

static_assert(wait_strategy<busy_spin> && wait_strategy<spin_then_yield> && wait_strategy<block>);
static_assert(!wait_strategy<int>);

TEST_CASE("the shipped policies carry the seed's reclamation targets") {
    CHECK(throughput_policy::gc_target_percent == 200);
    CHECK(latency_policy::gc_target_percent == 50);
    CHECK(memory_constrained_policy::gc_target_percent == 50);
    CHECK(std::is_same_v<throughput_policy::wait, spin_then_yield>);
    CHECK(std::is_same_v<latency_policy::wait, busy_spin>);
    CHECK(std::is_same_v<memory_constrained_policy::wait, block>);
}

TEST_CASE("a derived policy changes only what it overrides") {
    pipeline<narrow_batches, null_sink> p{runtime_config{}};
    CHECK(p.config().batch_width == 16);
    CHECK(p.config().ring_capacity == throughput_policy::ingress_capacity);
    pipeline<hourly_only, memory_sink> h{runtime_config{}};
    h.start();
    CHECK(h.push(trade_view{"SOL", 1.0, 1.0, side::buy, 7'200'000, 1}) == reject_reason::none);
    h.stop();
    CHECK(h.sink().candle_count() == 2);
    CHECK(h.sink().candles("SOL", intervals::h1).size() == 1);
}

TEST_CASE_TEMPLATE("runtime values outside the policy's bounds are refused by name", Policy,
                   throughput_policy, latency_policy, memory_constrained_policy) {
    const auto error_of = [](runtime_config cfg) -> std::string {
        try {
            (void)resolve<Policy>(cfg);
        } catch (const config_error& e) {
            return e.field() + " | " + e.what();
        }
        return "";
    };
    CHECK(error_of(runtime_config{}).empty());

    runtime_config c;
    c.shards = 0;
    CHECK(error_of(c).rfind("shards | shards = 0 is out of bounds: ", 0) == 0);
    c.shards = Policy::max_shards + 1;
    CHECK(error_of(c).find(std::string(Policy::name) + " allows 1.." +
                           std::to_string(Policy::max_shards)) != std::string::npos);

    c = {};
    c.batch_width = Policy::batch_width + 1;
    CHECK(error_of(c).rfind("batch_width |", 0) == 0);
    c = {};
    c.ring_capacity = Policy::ingress_capacity * 2;
    CHECK(error_of(c).rfind("ring_capacity |", 0) == 0);
    c = {};
    c.ring_capacity = 1;
    CHECK(error_of(c).rfind("ring_capacity |", 0) == 0);
    c = {};
    c.flush_interval = milliseconds{0};
    CHECK(error_of(c) == "flush_interval | flush_interval = 0 ms is out of bounds: " +
                             std::string(Policy::name) + " allows 1..60000 ms");
    c = {};
    c.max_tokens = Policy::max_tokens + 1;
    CHECK(error_of(c).rfind("max_tokens |", 0) == 0);
    c = {};
    c.gc_target_percent = Policy::gc_target_max_percent + 1;
    CHECK(error_of(c).rfind("gc_target_percent |", 0) == 0);
    c.gc_target_percent = Policy::gc_target_min_percent;
    CHECK(error_of(c).empty());

    c = {};
    c.worker_cpus = {CPU_SETSIZE + 1U};
    const std::string cpus = error_of(c);
    CHECK(cpus.rfind("worker_cpus | worker_cpus: CPU " + std::to_string(CPU_SETSIZE + 1) +
                         " is not one this process may run on (this thread may: ",
                     0) == 0);
    c.worker_cpus = detail::allowed_cpus();
    CHECK(error_of(c).empty());

    runtime_config bad;
    bad.batch_width = 0;
    CHECK_THROWS_AS(pipeline<Policy>{bad}, config_error);
}

TEST_CASE("cpu_list names CPUs as ranges") {
    CHECK(detail::cpu_list({}) == "none");
    CHECK(detail::cpu_list({3}) == "3");
    CHECK(detail::cpu_list({0, 1, 2, 3, 6, 8, 9}) == "0-3,6,8-9");
}
