// The sink concept and the shipped sinks.

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <tradeagg/tradeagg.hpp>

using namespace tradeagg;

namespace {
struct not_a_sink {};
struct wrong_signature {
    void consume(int) {}
};
struct counting_sink {
    std::atomic<std::uint64_t> candles{0};
    void consume(const flush_batch& b) { candles += b.candles.size(); }
};
} // namespace

static_assert(sink<null_sink>);
static_assert(sink<memory_sink>);
static_assert(sink<callback_sink>);
static_assert(sink<counting_sink>);
static_assert(!sink<not_a_sink>);
static_assert(!sink<wrong_signature>);
static_assert(!sink<int>);

TEST_CASE("memory_sink keeps the latest version and answers by token, interval and time") {
    memory_sink s;
    candle c;
    c.open_time = 60'000;
    c.close_time = 119'999;
    c.open = c.high = c.low = c.close = 5.0;
    c.volume = 1.0;
    c.quote_volume = 5.0;
    c.trades = 1;
    candle_update u{0, "SOL", intervals::m1, 1, c};
    token_update tu{0, "SOL", latest_trade{5.0, 1.0, side::sell, 60'001, 7}, rolling_stats{}};
    s.consume(flush_batch{0, {&u, 1}, {&tu, 1}});
    c.close = 6.0;
    c.trades = 2;
    u.data = c;
    s.consume(flush_batch{0, {&u, 1}, {}});

    const auto got = s.find_candle("SOL", intervals::m1, 60'000);
    REQUIRE(got.has_value());
    CHECK(got->close == 6.0);
    CHECK(got->trades == 2);
    CHECK_FALSE(s.find_candle("SOL", intervals::m1, 0).has_value());
    CHECK_FALSE(s.find_candle("SOL", intervals::m5, 60'000).has_value());
    CHECK_FALSE(s.find_candle("BTC", intervals::m1, 60'000).has_value());
    CHECK(s.candles("SOL", intervals::m1).size() == 1);
    CHECK(s.candles("SOL", intervals::s1).empty());
    CHECK(s.candle_count() == 1);
    CHECK(s.candle_updates() == 2);
    CHECK(s.token_updates() == 1);
    REQUIRE(s.latest("SOL").has_value());
    CHECK(s.latest("SOL")->id == 7);
    CHECK(s.latest("SOL")->taker == side::sell);
    CHECK_FALSE(s.rolling("BTC").has_value());
    CHECK(s.tokens() == std::vector<std::string>{"SOL"});
}

TEST_CASE("memory_sink is safe to read while shards write") {
    runtime_config cfg;
    cfg.shards = 2;
    cfg.flush_interval = std::chrono::milliseconds{1};
    pipeline<throughput_policy, memory_sink> p{cfg};
    p.start();
    std::atomic<bool> done{false};
    std::thread reader([&] {
        while (!done.load()) {
            (void)p.sink().candle_count();
            (void)p.sink().candles("T1", intervals::s1);
            (void)p.sink().rolling("T2");
        }
    });
    auto h = p.make_producer();
    for (int i = 0; i < 20'000; ++i) {
        (void)h.push(trade_view{i % 2 == 0 ? "T1" : "T2", 1.0 + i % 5, 1.0, side::buy, 10'000 + i,
                                static_cast<std::uint64_t>(i)});
    }
    p.stop();
    done = true;
    reader.join();
    CHECK(p.sink().rolling("T1")->trades == 10'000);
    CHECK(p.sink().rolling("T2")->trades == 10'000);
}

TEST_CASE("callback and user sinks see each flush with the shard it came from") {
    std::mutex m;
    std::vector<std::size_t> shards_seen;
    std::uint64_t candle_count = 0;
    runtime_config cfg;
    cfg.shards = 3;
    {
        callback_sink cb([&](const flush_batch& b) {
            const std::lock_guard lock(m);
            shards_seen.push_back(b.shard);
            candle_count += b.candles.size();
            for (const candle_update& u : b.candles) {
                CHECK_FALSE(u.name.empty());
                CHECK(u.width == throughput_policy::intervals[u.interval_index]);
            }
        });
        pipeline<throughput_policy, callback_sink&> p{cfg, cb};
        p.start();
        for (int i = 0; i < 30; ++i) {
            (void)p.push(trade_view{"TOK" + std::to_string(i), 1.0, 1.0, side::buy, 5'000, 1});
        }
        p.stop();
    }
    CHECK(candle_count == 30 * throughput_policy::intervals.size());
    for (const std::size_t s : shards_seen) {
        CHECK(s < 3);
    }

    pipeline<throughput_policy, counting_sink> q{runtime_config{}};
    q.start();
    (void)q.push(trade_view{"X", 1.0, 1.0, side::buy, 5'000, 1});
    q.stop();
    CHECK(q.sink().candles.load() == throughput_policy::intervals.size());
}
