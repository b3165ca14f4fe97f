// Reading aggregates back (tradeagg/redis/candle_reader.hpp): hashes as keys.hpp writes them
// read back bit for bit, malformed ones refused, and ranges of candles read from a plain Redis
// and from a Redis Cluster: sparse buckets, limits from either end, more buckets than one
// pipelined chunk, the bound on buckets asked for, a malformed hash, Redis gone, and readers on
// several threads sharing the pool.

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <tradeagg/redis/candle_reader.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/slots.hpp>

#include "redis_cluster.hpp"
#include "redis_server.hpp"

using namespace tradeagg;

namespace {

/// A hash's fields as the writers produce them, for the readers.
template <class Value>
std::map<std::string, std::string, std::less<>> fields_of(const Value& v) {
    std::map<std::string, std::string, std::less<>> out;
    redis::for_each_field(v, [&](std::string_view f, std::string_view text) {
        out.emplace(std::string(f), std::string(text));
    });
    return out;
}

template <class Map>
auto lookup(const Map& m) {
    return [&m](std::string_view name) -> std::optional<std::string_view> {
        const auto it = m.find(name);
        return it == m.end() ? std::nullopt : std::optional<std::string_view>(it->second);
    };
}

candle sample_candle(timestamp_ms open, std::int64_t width, double price) {
    candle c;
    c.open_time = open;
    c.close_time = open + width - 1;
    c.open = price;
    c.high = price * 1.5;
    c.low = price / 3.0;
    c.close = price + 0.1;
    c.volume = 1.0 / 7.0;
    c.quote_volume = price / 7.0;
    c.trades = 42;
    c.taker_buy_volume = 1e-9;
    c.taker_buy_quote_volume = 123456789.125;
    c.first_trade_id = 18'446'744'073'709'551'000u;
    c.last_trade_id = 18'446'744'073'709'551'615u;
    c.closed = true;
    return c;
}

/// Writes candles of `token` as the sink does (one HSET of every field per key).
void write_candles(redis::cluster_client& client, std::string_view token, interval width,
                   const std::vector<candle>& candles) {
    std::vector<redis::cluster_command> cmds;
    for (const candle& c : candles) {
        redis::cluster_command cmd{
            {"HSET", redis::candle_key("tradeagg", token, width, c.open_time)},
            redis::token_slot(token)};
        for (const auto& [f, v] : fields_of(c)) {
            cmd.args.push_back(f);
            cmd.args.push_back(v);
        }
        cmds.push_back(std::move(cmd));
    }
    std::vector<redis::command_result> r;
    client.run(cmds, r);
    for (const redis::command_result& x : r) {
        REQUIRE(x.ok());
    }
}

/// Every third 1 m bucket of a day holds a candle: 480 candles over 1,440 buckets.
std::vector<candle> sparse_day(timestamp_ms day, double price) {
    std::vector<candle> out;
    for (int m = 0; m < 1'440; m += 3) {
        out.push_back(sample_candle(day + m * 60'000LL, 60'000, price + m));
    }
    return out;
}

void check_range(redis::candle_reader& reader, std::string_view token,
                 const std::vector<candle>& all) {
    const interval minute = std::chrono::minutes(1);
    const timestamp_ms day = all.front().open_time;
    const timestamp_ms last = day + 1'439 * 60'000LL;
    SUBCASE("oldest first, from the range's start") {
        const auto got = reader.range(token, {minute, day, last, 1'000, false});
        REQUIRE(got.size() == all.size()); // 1,440 buckets: three chunks
        for (std::size_t i = 0; i < got.size(); ++i) {
            CHECK(got[i] == all[i]);
        }
        const auto five = reader.range(token, {minute, day + 60'000, last, 5, false});
        REQUIRE(five.size() == 5);
        CHECK(five.front() == all[1]);
        CHECK(five.back() == all[5]);
    }
    SUBCASE("the newest, still oldest first") {
        const auto got = reader.range(token, {minute, day, last, 4, true});
        REQUIRE(got.size() == 4);
        CHECK(got.front() == all[all.size() - 4]);
        CHECK(got.back() == all.back());
        const auto before = reader.range(token, {minute, day, day + 7 * 60'000, 10, true});
        REQUIRE(before.size() == 3); // minutes 0, 3 and 6
        CHECK(before.back() == all[2]);
    }
    SUBCASE("no candle: an empty range, another token, another interval") {
        CHECK(reader.range(token, {minute, day + 60'000, day + 2 * 60'000, 10, false}).empty());
        CHECK(reader.range("NOPE", {minute, day, last, 10, false}).empty());
        CHECK(reader.range(token, {std::chrono::minutes(5), day, last, 10, false}).empty());
        CHECK(reader.range(token, {minute, last, day, 10, false}).empty()); // reversed
        CHECK(reader.range(token, {minute, day, last, 0, false}).empty());
    }
    SUBCASE("at most max_buckets buckets are asked for") {
        const timestamp_ms newest = all.back().open_time;
        const timestamp_ms far =
            newest + static_cast<std::int64_t>(redis::candle_reader::max_buckets) * 60'000;
        // Newest first from far beyond the last candle: the bound stops just short of it.
        CHECK(reader.range(token, {minute, day, far, 10, true}).empty());
        const auto reach = reader.range(token, {minute, day, far - 60'000, 10, true});
        REQUIRE(reach.size() == 1);
        CHECK(reach.front() == all.back());
    }
}

} // namespace

TEST_CASE("candle reader: every hash reads back as written, malformed ones are refused") {
    const candle c = sample_candle(1'732'867'200'000, 60'000, 1.0 / 3.0);
    auto f = fields_of(c);
    const auto back = redis::candle_from_hash(lookup(f));
    REQUIRE(back);
    CHECK(*back == c);

    rolling_stats r;
    r.window_start = 1;
    r.window_end = 86'400'001;
    r.open = 0.1;
    r.high = 0.7;
    r.low = 1e-300;
    r.last = 0.3;
    r.volume = 1e15;
    r.quote_volume = 2.0 / 3.0;
    r.vwap = 0.25;
    r.trades = 7;
    r.price_change = -0.2;
    r.price_change_percent = -66.66666666666667;
    auto rf = fields_of(r);
    const auto rb = redis::rolling_from_hash(lookup(rf));
    REQUIRE(rb);
    CHECK(rb->window_start == r.window_start);
    CHECK(rb->window_end == r.window_end);
    CHECK(rb->low == r.low);
    CHECK(rb->quote_volume == r.quote_volume);
    CHECK(rb->price_change_percent == r.price_change_percent);
    CHECK(rb->trades == r.trades);

    const latest_trade l{123.456, 0.001, side::sell, 1'732'867'200'123, 99};
    auto lf = fields_of(l);
    const auto lb = redis::latest_from_hash(lookup(lf));
    REQUIRE(lb);
    CHECK(lb->price == l.price);
    CHECK(lb->quantity == l.quantity);
    CHECK(lb->taker == side::sell);
    CHECK(lb->ts_ms == l.ts_ms);
    CHECK(lb->id == l.id);

    // Any field missing, empty, with trailing text, or not a number: nothing.
    for (const auto& [field, text] : fields_of(c)) {
        if (field == "vwap") {
            continue; // not read: quote_volume / volume
        }
        CAPTURE(field);
        auto broken = f;
        broken.erase(field);
        CHECK_FALSE(redis::candle_from_hash(lookup(broken)));
        for (const char* bad : {"", "1x", "x", " 1"}) {
            broken = f;
            broken[field] = bad;
            CHECK_FALSE(redis::candle_from_hash(lookup(broken)));
        }
    }
    f["closed"] = "2";
    CHECK_FALSE(redis::candle_from_hash(lookup(f)));
    lf["side"] = "hold";
    CHECK_FALSE(redis::latest_from_hash(lookup(lf)));
    rf.erase("vwap");
    CHECK_FALSE(redis::rolling_from_hash(lookup(rf)));
}

TEST_CASE("candle reader: ranges from a plain Redis") {
    testing::redis_server server;
    redis::cluster_client::options o;
    o.seeds.push_back({"127.0.0.1", server.port(), {}});
    redis::cluster_client writer(o);
    const std::vector<candle> all = sparse_day(1'732'838'400'000, 10.0);
    write_candles(writer, "SOL", std::chrono::minutes(1), all);
    redis::candle_reader reader(o, "tradeagg", {std::chrono::minutes(1)});
    check_range(reader, "SOL", all);
}

TEST_CASE("candle reader: ranges from a Redis Cluster, tokens on every master") {
    testing::redis_cluster cluster;
    redis::cluster_client::options o;
    o.seeds.push_back({"127.0.0.1", cluster.node(0).port(), {}});
    redis::cluster_client writer(o);
    const std::vector<std::string> tokens{
        "SOL", "bonk", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v", "JUP", "WIF", "PYTH"};
    std::map<std::string, std::vector<candle>> by_token;
    for (std::size_t k = 0; k < tokens.size(); ++k) {
        by_token[tokens[k]] = sparse_day(1'732'838'400'000, 10.0 * static_cast<double>(k + 1));
        write_candles(writer, tokens[k], std::chrono::minutes(1), by_token[tokens[k]]);
    }
    redis::candle_reader reader(o, "tradeagg", {std::chrono::minutes(1)});
    // Readers on several threads share the pool; each token's range is whole and its own.
    std::vector<std::thread> threads;
    std::vector<std::string> wrong(tokens.size());
    for (std::size_t k = 0; k < tokens.size(); ++k) {
        threads.emplace_back([&, k] {
            for (int round = 0; round < 5; ++round) {
                const auto got = reader.range(
                    tokens[k], {std::chrono::minutes(1), 1'732'838'400'000,
                                1'732'838'400'000 + 1'439 * 60'000LL, 1'000, round % 2 == 0});
                const auto& want = by_token[tokens[k]];
                if (got.size() != want.size()) {
                    wrong[k] = "size " + std::to_string(got.size());
                    return;
                }
                for (std::size_t i = 0; i < got.size(); ++i) {
                    if (got[i] != want[i]) {
                        wrong[k] = "candle " + std::to_string(i);
                        return;
                    }
                }
            }
        });
    }
    for (std::thread& t : threads) {
        t.join();
    }
    for (std::size_t k = 0; k < tokens.size(); ++k) {
        CAPTURE(tokens[k]);
        CHECK(wrong[k] == "");
    }
    check_range(reader, "bonk", by_token["bonk"]);
}

TEST_CASE("candle reader: a malformed hash and a Redis gone are errors, not candles") {
    testing::redis_server server;
    redis::cluster_client::options o;
    o.seeds.push_back({"127.0.0.1", server.port(), {}});
    o.timeout = std::chrono::milliseconds(500);
    redis::cluster_client writer(o);
    const timestamp_ms day = 1'732'838'400'000;
    write_candles(writer, "SOL", std::chrono::minutes(1), {sample_candle(day, 60'000, 5.0)});
    (void)server.command(
        {"HSET", redis::candle_key("tradeagg", "SOL", std::chrono::minutes(1), day + 60'000),
         "open", "five"});
    redis::candle_reader reader(o, "tradeagg", {std::chrono::minutes(1)});
    CHECK(reader.range("SOL", {std::chrono::minutes(1), day, day, 10, false}).size() == 1);
    CHECK_THROWS_AS(
        (void)reader.range("SOL", {std::chrono::minutes(1), day, day + 60'000, 10, false}),
        std::runtime_error);
    (void)server.command({"SET", redis::latest_key("tradeagg", "SOL"), "not a hash"});
    CHECK_THROWS_AS((void)reader.summary("SOL"), std::runtime_error);
    server.stop();
    CHECK_THROWS_AS((void)reader.range("SOL", {std::chrono::minutes(1), day, day, 10, false}),
                    std::runtime_error);
    CHECK_THROWS_AS((void)reader.summary("SOL"), std::runtime_error);
    // Back: the reader connects again.
    server.start();
    redis::cluster_client again(o);
    write_candles(again, "SOL", std::chrono::minutes(1), {sample_candle(day, 60'000, 5.0)});
    CHECK(reader.range("SOL", {std::chrono::minutes(1), day, day, 10, false}).size() == 1);
}

namespace {

/// The candles of every width in `widths` that trades at `times` make (each trade in one bucket
/// of every width), written as the sink writes them; returns them by width.
std::map<std::int64_t, std::vector<candle>> write_trades(redis::cluster_client& client,
                                                         std::string_view token,
                                                         const std::vector<timestamp_ms>& times,
                                                         const std::vector<interval>& widths) {
    std::map<std::int64_t, std::vector<candle>> by_width;
    for (const interval width : widths) {
        std::map<timestamp_ms, candle> buckets;
        for (const timestamp_ms t : times) {
            const timestamp_ms open = bucket_open(t, width.count());
            auto [it, fresh] = buckets.try_emplace(
                open, sample_candle(open, width.count(), static_cast<double>(t % 1'000'003)));
            if (!fresh) {
                ++it->second.trades;
            }
        }
        std::vector<candle>& list = by_width[width.count()];
        for (const auto& [open, c] : buckets) {
            list.push_back(c);
        }
        write_candles(client, token, width, list);
    }
    return by_width;
}

} // namespace

TEST_CASE("candle reader: a range is found through the coarser intervals, however long") {
    testing::redis_server server;
    redis::cluster_client::options o;
    o.seeds.push_back({"127.0.0.1", server.port(), {}});
    redis::cluster_client writer(o);
    const std::vector<interval> widths{std::chrono::seconds(1), std::chrono::minutes(1),
                                       std::chrono::hours(1), std::chrono::days(1)};
    // A few trades a month before, then one every 7 s for three hours across midnight: 1,543
    // one-second candles over more than 10,000 seconds, most minutes with eight or nine.
    const timestamp_ms midnight = 1'732'924'800'000;
    std::vector<timestamp_ms> times{midnight - 30 * 86'400'000LL + 5'000,
                                    midnight - 30 * 86'400'000LL + 65'000};
    for (timestamp_ms t = midnight - 5'400'000; t < midnight + 5'400'000; t += 7'000) {
        times.push_back(t);
    }
    const auto all = write_trades(writer, "SOL", times, widths);
    const std::vector<candle>& seconds = all.at(1'000);
    REQUIRE(seconds.size() == times.size());
    redis::candle_reader reader(o, "tradeagg", widths);
    const interval second = std::chrono::seconds(1);
    const timestamp_ms end = midnight + 86'400'000;

    // From the epoch: the oldest first, a month before the rest.
    auto got = reader.range("SOL", {second, 0, end, 1'000, false});
    REQUIRE(got.size() == 1'000);
    CHECK(std::equal(got.begin(), got.end(), seconds.begin()));
    // The newest thousand, and all of them (more than 10,000 buckets from first to last).
    got = reader.range("SOL", {second, 0, end, 1'000, true});
    REQUIRE(got.size() == 1'000);
    CHECK(std::equal(got.begin(), got.end(), seconds.end() - 1'000));
    got = reader.range("SOL", {second, 0, end, 5'000, false});
    CHECK(got == seconds);
    got = reader.range("SOL", {second, 0, end, 5'000, true});
    CHECK(got == seconds);
    // Inside the range: from a time between two candles, and up to one, at every level.
    for (const interval width : widths) {
        CAPTURE(width.count());
        const std::vector<candle>& list = all.at(width.count());
        const std::size_t mid = list.size() / 2;
        std::vector<candle> want(list.begin() + static_cast<std::ptrdiff_t>(mid), list.end());
        if (want.size() > 3) {
            want.resize(3);
        }
        got = reader.range("SOL", {width, list[mid].open_time, end, 3, false});
        CHECK(got == want);
        std::vector<candle> upto(list.begin(), list.begin() + static_cast<std::ptrdiff_t>(mid) + 1);
        if (upto.size() > 2) {
            upto.erase(upto.begin(), upto.end() - 2);
        }
        got = reader.range("SOL", {width, 0, list[mid].open_time, 2, true});
        CHECK(got == upto);
    }
    // A range with no candle between two that have some.
    CHECK(reader
              .range("SOL",
                     {second, midnight - 20 * 86'400'000LL, midnight - 86'400'000LL, 10, false})
              .empty());
}
