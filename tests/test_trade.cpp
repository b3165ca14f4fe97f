// Validation of trades and tokens, interval names, and the token table.

#include <cmath>
#include <limits>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <tradeagg/tradeagg.hpp>

using namespace tradeagg;

namespace {
trade_view good() {
    return trade_view{"SOL", 123.45, 2.5, side::buy, 1'732'867'200'123, 42};
}
} // namespace

TEST_CASE("every reject reason is produced by the input it names") {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double inf = std::numeric_limits<double>::infinity();
    CHECK(validate(good()) == reject_reason::none);

    struct row {
        trade_view t;
        reject_reason want;
    };
    std::vector<row> rows;
    auto with = [](auto f) {
        trade_view t = good();
        f(t);
        return t;
    };
    rows.push_back({with([&](trade_view& t) { t.price = nan; }), reject_reason::price_not_finite});
    rows.push_back({with([&](trade_view& t) { t.price = inf; }), reject_reason::price_not_finite});
    rows.push_back({with([&](trade_view& t) { t.price = -inf; }), reject_reason::price_not_finite});
    rows.push_back({with([](trade_view& t) { t.price = 0.0; }), reject_reason::price_not_positive});
    rows.push_back(
        {with([](trade_view& t) { t.price = -1.0; }), reject_reason::price_not_positive});
    rows.push_back(
        {with([&](trade_view& t) { t.quantity = nan; }), reject_reason::quantity_not_finite});
    rows.push_back(
        {with([&](trade_view& t) { t.quantity = inf; }), reject_reason::quantity_not_finite});
    rows.push_back(
        {with([](trade_view& t) { t.quantity = 0.0; }), reject_reason::quantity_not_positive});
    rows.push_back(
        {with([](trade_view& t) { t.quantity = -0.0; }), reject_reason::quantity_not_positive});
    rows.push_back(
        {with([](trade_view& t) { t.taker = static_cast<side>(7); }), reject_reason::unknown_side});
    rows.push_back({with([](trade_view& t) { t.token = ""; }), reject_reason::empty_token});
    const std::string long_token(max_token_length + 1, 'A');
    rows.push_back(
        {with([&](trade_view& t) { t.token = long_token; }), reject_reason::token_too_long});
    rows.push_back({with([](trade_view& t) { t.token = "SO L"; }), reject_reason::invalid_token});
    rows.push_back({with([](trade_view& t) { t.token = "SO{L"; }), reject_reason::invalid_token});
    rows.push_back({with([](trade_view& t) { t.token = "SOL\n"; }), reject_reason::invalid_token});
    rows.push_back(
        {with([](trade_view& t) { t.ts_ms = -1; }), reject_reason::timestamp_out_of_range});
    rows.push_back({with([](trade_view& t) { t.ts_ms = max_timestamp_ms + 1; }),
                    reject_reason::timestamp_out_of_range});
    for (const row& r : rows) {
        CAPTURE(to_string(r.want));
        CHECK(validate(r.t) == r.want);
    }

    // A 44-character mint address is a valid token.
    const trade_view mint =
        with([](trade_view& t) { t.token = "So11111111111111111111111111111111111111112"; });
    CHECK(validate(mint) == reject_reason::none);
    const std::string exactly_max(max_token_length, 'Z');
    CHECK(validate_token(exactly_max) == reject_reason::none);

    // Through a pipeline: each rejection is counted under its reason and nothing enters.
    runtime_config cfg;
    cfg.max_tokens = 2;
    pipeline<throughput_policy, memory_sink> p{cfg};
    p.start();
    auto handle = p.make_producer();
    for (const row& r : rows) {
        CHECK(handle.push(r.t) == r.want);
    }
    CHECK(p.push(rows.front().t) == rows.front().want); // the shared path counts too
    CHECK(handle.push(trade{999, side::buy, 1.0, 1.0, 0, 1}) == reject_reason::unknown_token);
    CHECK(handle.push(good()) == reject_reason::none);
    trade_view other = good();
    other.token = "BTC";
    CHECK(handle.push(other) == reject_reason::none);
    other.token = "ETH"; // a third token exceeds max_tokens = 2
    CHECK(handle.push(other) == reject_reason::token_limit);
    p.stop();
    CHECK(handle.push(good()) == reject_reason::stopped);
    CHECK(p.push(good()) == reject_reason::stopped);

    const pipeline_stats st = p.stats();
    CHECK(st.accepted == 2);
    CHECK(st.applied == 2);
    CHECK(st.rejected == rows.size() + 1 + 1 + 1 + 2);
    for (std::size_t r = 1; r < reject_reason_count; ++r) {
        const auto reason = static_cast<reject_reason>(r);
        if (reason == reject_reason::memory_limit || reason == reject_reason::active_token_limit) {
            continue; // the limits have their own tests (test_memory.cpp)
        }
        CAPTURE(to_string(reason));
        CHECK(st.rejected_by_reason[r] > 0);
    }
    CHECK(st.rejected_by_reason[0] == 0);
    CHECK(p.sink().candle_count() == 2 * throughput_policy::intervals.size());
}

TEST_CASE("reject reasons and sides have stable names") {
    std::set<std::string_view> names;
    for (std::size_t r = 0; r < reject_reason_count; ++r) {
        names.insert(to_string(static_cast<reject_reason>(r)));
    }
    CHECK(names.size() == reject_reason_count);
    CHECK(names.count("unknown") == 0);
    CHECK(to_string(reject_reason::price_not_finite) == "price_not_finite");
    CHECK(parse_side("buy") == side::buy);
    CHECK(parse_side("SELL") == side::sell);
    CHECK_FALSE(parse_side("hold").has_value());
    CHECK_FALSE(parse_side("").has_value());
    CHECK(to_string(side::sell) == "sell");
}

TEST_CASE("interval names round-trip") {
    const char* names[] = {"1s", "1m", "5m", "15m", "1h", "4h", "1d"};
    for (std::size_t i = 0; i < default_intervals.size(); ++i) {
        CHECK(interval_name(default_intervals[i]).view() == names[i]);
        CHECK(parse_interval(names[i]) == default_intervals[i]);
    }
    CHECK(interval_name(interval{250}).view() == "250ms");
    CHECK(parse_interval("250ms") == interval{250});
    CHECK(parse_interval("").count() == 0);
    CHECK(parse_interval("m").count() == 0);
    CHECK(parse_interval("5x").count() == 0);
    CHECK(bucket_open(1'732'867'261'234, 60'000) == 1'732'867'260'000);
}

TEST_CASE("token table interns once, from many threads, and keeps shards stable") {
    token_table table(10'000, 4);
    std::vector<std::thread> threads;
    std::vector<std::vector<token_id>> seen(4);
    for (int w = 0; w < 4; ++w) {
        threads.emplace_back([&table, &seen, w] {
            for (int i = 0; i < 1'000; ++i) {
                const auto r = table.intern("T" + std::to_string(i));
                seen[static_cast<std::size_t>(w)].push_back(r.id);
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    CHECK(table.size() == 1'000);
    for (int w = 1; w < 4; ++w) {
        CHECK(seen[static_cast<std::size_t>(w)] == seen[0]);
    }
    for (int i = 0; i < 1'000; ++i) {
        const std::string name = "T" + std::to_string(i);
        const auto id = table.find(name);
        REQUIRE(id.has_value());
        CHECK(table.name(*id) == name);
        CHECK(table.shard_of(*id) == token_table::stable_hash(name) % 4);
    }
    // The hash is FNV-1a: fixed values, the same on every machine.
    CHECK(token_table::stable_hash("") == 14'695'981'039'346'656'037ull);
    CHECK(token_table::stable_hash("a") == 0xaf63dc4c8601ec8cull);
    CHECK_FALSE(table.find("missing").has_value());
    CHECK(table.intern("bad token").reason == reject_reason::invalid_token);

    token_table small(1, 1);
    CHECK(small.intern("A").reason == reject_reason::none);
    CHECK(small.intern("A").reason == reject_reason::none);
    CHECK(small.intern("B").reason == reject_reason::token_limit);
}

TEST_CASE("token cache: an id is trusted only for its own name and only until a release") {
    token_table table(100, 1);
    token_cache cache;
    CHECK_FALSE(cache.find("AAA", table).has_value()); // nothing remembered, nothing allocated
    CHECK(cache.memory_bytes() == 0);
    const token_id aaa = table.intern("AAA", false).id;
    cache.remember("AAA", aaa, table);
    CHECK(cache.memory_bytes() == token_cache::entries * 16);
    CHECK(cache.find("AAA", table) == aaa);
    // Every other name misses, those that share AAA's place included.
    for (int i = 0; i < 20'000; ++i) {
        CHECK_FALSE(cache.find("N" + std::to_string(i), table).has_value());
    }
    CHECK_FALSE(cache.find("AAAA", table).has_value());
    CHECK_FALSE(cache.find("AA", table).has_value());
    // Tokens of every length, short ones included, come back as remembered.
    std::vector<std::pair<std::string, token_id>> kept;
    for (const std::string name : {"B", "BC", "BCDEFGH", "BCDEFGHI", "BCDEFGHIJKLMNOPQ",
                                   "So11111111111111111111111111111111111111112"}) {
        kept.emplace_back(name, table.intern(name, false).id);
        cache.remember(name, kept.back().second, table);
    }
    for (const auto& [name, id] : kept) {
        CHECK(cache.find(name, table) == id);
    }
    // A release may hand AAA's id to another token: nothing remembered before it is trusted.
    CHECK(table.release_unused() == 7);
    CHECK(table.releases() == 1);
    const token_id other = table.intern("OTHER", false).id;
    CHECK(other == aaa); // the lowest free id comes back first
    CHECK_FALSE(cache.find("AAA", table).has_value());
    CHECK_FALSE(cache.find("OTHER", table).has_value());
    cache.remember("OTHER", other, table);
    CHECK(cache.find("OTHER", table) == other);
    CHECK_FALSE(cache.find("AAA", table).has_value());
}
