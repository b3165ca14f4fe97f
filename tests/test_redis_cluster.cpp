// Scale-out primitives. Redis Cluster: key slots as the cluster specification defines them,
// checked against the specification's examples and a live cluster's CLUSTER KEYSLOT; the slot
// map read from CLUSTER SLOTS, and MOVED and ASK redirections, against a live cluster. Streams
// ingest: partitions, stream ids, and trades as stream entries, against a live Redis.

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <doctest/doctest.h>

#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/lease.hpp>
#include <tradeagg/redis/resp.hpp>
#include <tradeagg/redis/slot_map.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/stream_consumer.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/redis/stream_reply.hpp>
#include <tradeagg/redis/token_write.hpp>
#include <tradeagg/tradeagg.hpp>

#include "redis_cluster.hpp"

using namespace tradeagg;

TEST_CASE("cluster slots: the specification's examples") {
    CHECK(redis::crc16_xmodem("123456789") == 0x31C3);
    CHECK(redis::crc16_xmodem("") == 0);
    CHECK(redis::key_slot("foo") == 12'182);
    // A hash tag: only what is between the first '{' and the first '}' after it counts.
    CHECK(redis::key_slot("{user1000}.following") == redis::key_slot("user1000"));
    CHECK(redis::key_slot("{user1000}.followers") == redis::key_slot("user1000"));
    CHECK(redis::key_slot("foo{{bar}}zap") == redis::key_slot("{bar"));
    CHECK(redis::key_slot("foo{bar}{zap}") == redis::key_slot("bar"));
    // An empty tag is no tag: the whole key is hashed.
    CHECK(redis::key_slot("foo{}{bar}") == redis::crc16_xmodem("foo{}{bar}") % 16'384);
    CHECK(redis::key_slot("no{brace") == redis::crc16_xmodem("no{brace") % 16'384);
    CHECK(redis::key_slot("}{") == redis::crc16_xmodem("}{") % 16'384);
    // Every key of a token shares the token's slot.
    const std::string_view token = "SOL";
    CHECK(redis::key_slot(redis::candle_key("tradeagg", token, intervals::m1, 60'000)) ==
          redis::token_slot(token));
    CHECK(redis::key_slot(redis::rolling_key("p", token)) == redis::token_slot(token));
    CHECK(redis::key_slot(redis::latest_key("p", token)) == redis::token_slot(token));
    static_assert(redis::key_slot("foo") == 12'182, "computable at compile time");
}

TEST_CASE("cluster slots: equal to a live cluster's CLUSTER KEYSLOT") {
    testing::redis_cluster cluster;
    std::mt19937_64 rng(20261129);
    const std::string alphabet = "ab{}{}xyz0123456789:SOL\x01\xff";
    int checked = 0;
    for (int i = 0; i < 2'000; ++i) {
        std::string key(1 + rng() % 24, ' ');
        for (char& c : key) {
            c = alphabet[rng() % alphabet.size()];
        }
        const std::string answer = cluster.node(i % 3).command({"CLUSTER", "KEYSLOT", key});
        INFO(key);
        REQUIRE(!answer.empty());
        CHECK(std::stoi(answer) == redis::key_slot(key));
        ++checked;
    }
    for (const std::string token :
         {"SOL", "BTCUSDT", "So11111111111111111111111111111111111111112"}) {
        const std::string key = redis::latest_key("tradeagg", token);
        CHECK(std::stoi(cluster.node(0).command({"CLUSTER", "KEYSLOT", key})) ==
              redis::token_slot(token));
    }
    CHECK(checked == 2'000);
}

TEST_CASE("cluster redirections: MOVED and ASK are read, anything else is not one") {
    const auto moved = redis::parse_redirect("MOVED 3999 127.0.0.1:6381", "10.0.0.9");
    REQUIRE(moved);
    CHECK(moved->how == redis::redirect::kind::moved);
    CHECK(moved->slot == 3'999);
    CHECK(moved->to.host == "127.0.0.1");
    CHECK(moved->to.port == 6'381);
    const auto ask = redis::parse_redirect("ASK 16383 ::1:7000", "x");
    REQUIRE(ask);
    CHECK(ask->how == redis::redirect::kind::ask);
    CHECK(ask->slot == 16'383);
    CHECK(ask->to.host == "::1");
    const auto unnamed = redis::parse_redirect("MOVED 1 :7001", "10.0.0.9");
    REQUIRE(unnamed);
    CHECK(unnamed->to.host == "10.0.0.9"); // a node that does not know its address
    for (const std::string_view bad :
         {"MOVED", "MOVED 16384 h:1", "MOVED -1 h:1", "MOVED 1 h:0", "MOVED 1 h:65536", "MOVED 1 h",
          "MOVED x h:1", "ASK 1 h:1x", "ERR wrong number of arguments", "OOM command not allowed",
          "moved 1 h:1", ""}) {
        INFO(bad);
        CHECK_FALSE(redis::parse_redirect(bad, "x"));
    }
}

namespace {

/// The fixture's node listening on `port`.
testing::redis_server& node_on(testing::redis_cluster& c, int port) {
    for (std::size_t i = 0; i < c.size(); ++i) {
        if (c.node(i).port() == port) {
            return c.node(i);
        }
    }
    FAIL("no node on port " << port);
    return c.node(0);
}

redis::slot_map read_slots(testing::redis_server& from) {
    redisContext* c = redisConnect("127.0.0.1", from.port());
    REQUIRE(c != nullptr);
    REQUIRE(c->err == 0);
    auto* r = static_cast<redisReply*>(redisCommand(c, "CLUSTER SLOTS"));
    std::string error;
    std::optional<redis::slot_map> m = redis::slot_map::from_cluster_slots(r, "127.0.0.1", error);
    freeReplyObject(r);
    redisFree(c);
    INFO(error);
    REQUIRE(m);
    return *m;
}

} // namespace

TEST_CASE("cluster slot map: CLUSTER SLOTS routes every key to the node that serves it") {
    testing::redis_cluster cluster;
    const redis::slot_map map = read_slots(cluster.node(1));
    CHECK(map.complete());
    REQUIRE(map.nodes().size() == 3);
    for (const redis::cluster_node& n : map.nodes()) {
        CHECK(n.host == "127.0.0.1");
        CHECK(n.id.size() == 40);
    }
    std::mt19937_64 rng(7);
    for (int i = 0; i < 300; ++i) {
        const std::string token = "T" + std::to_string(rng() % 100'000);
        const std::string key = redis::latest_key("tradeagg", token);
        const redis::cluster_node* owner = map.node_for(redis::key_slot(key));
        REQUIRE(owner != nullptr);
        INFO(key);
        CHECK(node_on(cluster, owner->port).command({"SET", key, "1"}) == "OK");
        // Any other node redirects to the same owner.
        for (std::size_t n = 0; n < cluster.size(); ++n) {
            if (cluster.node(n).port() == owner->port) {
                continue;
            }
            const auto r =
                redis::parse_redirect(cluster.node(n).command({"GET", key}), "127.0.0.1");
            REQUIRE(r);
            CHECK(r->how == redis::redirect::kind::moved);
            CHECK(r->slot == redis::key_slot(key));
            CHECK(r->to == *owner);
        }
    }
    // A map read from a malformed reply is refused with a reason.
    redisReply not_slots{};
    not_slots.type = REDIS_REPLY_STATUS;
    std::string error;
    CHECK_FALSE(redis::slot_map::from_cluster_slots(&not_slots, "h", error));
    CHECK(error.find("CLUSTER SLOTS") != std::string::npos);
    CHECK_FALSE(redis::slot_map::from_cluster_slots(nullptr, "h", error));
}

TEST_CASE("cluster slot map: a slot being migrated answers ASK, a migrated one MOVED") {
    testing::redis_cluster cluster;
    redis::slot_map before = read_slots(cluster.node(0));
    const std::string key = redis::latest_key("tradeagg", "MIGRATING");
    const std::uint16_t slot = redis::key_slot(key);
    const redis::cluster_node source = *before.node_for(slot);
    const redis::cluster_node* target = nullptr;
    for (const redis::cluster_node& n : before.nodes()) {
        if (!(n == source)) {
            target = &n;
            break;
        }
    }
    REQUIRE(target != nullptr);
    testing::redis_server& from = node_on(cluster, source.port);
    testing::redis_server& to = node_on(cluster, target->port);
    const std::string s = std::to_string(slot);
    REQUIRE(to.command({"CLUSTER", "SETSLOT", s, "IMPORTING", source.id}) == "OK");
    REQUIRE(from.command({"CLUSTER", "SETSLOT", s, "MIGRATING", target->id}) == "OK");
    // The key is not on the source: it answers ASK, naming the target.
    const auto ask = redis::parse_redirect(from.command({"GET", key}), "127.0.0.1");
    REQUIRE(ask);
    CHECK(ask->how == redis::redirect::kind::ask);
    CHECK(ask->slot == slot);
    CHECK(ask->to == *target);
    // The migration ends: every node learns the new owner; the source answers MOVED.
    for (std::size_t n = 0; n < cluster.size(); ++n) {
        CHECK(cluster.node(n).command({"CLUSTER", "SETSLOT", s, "NODE", target->id}) == "OK");
    }
    const auto moved = redis::parse_redirect(from.command({"GET", key}), "127.0.0.1");
    REQUIRE(moved);
    CHECK(moved->how == redis::redirect::kind::moved);
    CHECK(moved->to == *target);
    const redis::slot_map after = read_slots(cluster.node(2));
    CHECK(after.node_for(slot)->port == target->port);
    CHECK(after.complete());
}

TEST_CASE("stream partitions: stable, spread, and a partition's keys share one slot") {
    CHECK(redis::stream_key("tradeagg", 3) == "tradeagg:trades:{p3}");
    CHECK(redis::lease_key("tradeagg", 3) == "tradeagg:lease:{p3}");
    std::array<int, 4> per{};
    for (int i = 0; i < 4'000; ++i) {
        const std::string token = "TKN" + std::to_string(i);
        const std::size_t p = redis::partition_of(token, 4);
        REQUIRE(p < 4);
        CHECK(p == redis::crc16_xmodem(token) % 4); // what any client computes
        ++per[p];
    }
    for (const int n : per) {
        CHECK(n > 800); // 1,000 each, give or take
    }
    for (std::size_t k = 0; k < 16; ++k) {
        CHECK(redis::key_slot(redis::stream_key("x", k)) ==
              redis::key_slot(redis::lease_key("y", k)));
    }
    CHECK(redis::partition_of("SOL", 0) == 0);
}

TEST_CASE("stream ids: parsed and ordered as Redis orders them") {
    const auto a = redis::stream_id::parse("1732867200123-0");
    const auto b = redis::stream_id::parse("1732867200123-7");
    const auto c = redis::stream_id::parse("1732867200124");
    REQUIRE(a);
    REQUIRE(b);
    REQUIRE(c);
    CHECK(*a < *b);
    CHECK(*b < *c);
    CHECK(c->seq == 0);
    CHECK(b->text() == "1732867200123-7");
    for (const std::string_view bad :
         {"", "-", "1-", "-1", "a-1", "1-b", "1-2-3", "18446744073709551616-0"}) {
        INFO(bad);
        CHECK_FALSE(redis::stream_id::parse(bad));
    }
}

TEST_CASE("stream entries: a trade written with XADD reads back the same, bad entries say why") {
    testing::redis_server server;
    const trade_view sent{"SOL", 123.45, 2.5, side::sell, 1'732'867'200'123, 42};
    std::vector<std::string> args{"XADD", redis::stream_key("t", 0), "*"};
    redis::for_each_field(sent, [&](std::string_view f, std::string_view v) {
        args.emplace_back(f);
        args.emplace_back(v);
    });
    const auto id = redis::stream_id::parse(server.command(args));
    REQUIRE(id);

    redisContext* c = redisConnect("127.0.0.1", server.port());
    REQUIRE(c != nullptr);
    auto* r = static_cast<redisReply*>(
        redisCommand(c, "XRANGE %s - +", redis::stream_key("t", 0).c_str()));
    REQUIRE(r != nullptr);
    REQUIRE(r->type == REDIS_REPLY_ARRAY);
    REQUIRE(r->elements == 1);
    const redisReply* entry = r->element[0];
    CHECK(redis::stream_id::parse(
              std::string_view(entry->element[0]->str, entry->element[0]->len)) == id);
    const redisReply* fields = entry->element[1];
    std::string_view why;
    const std::optional<trade_view> got = redis::trade_from_entry(redis::entry_fields(fields), why);
    REQUIRE(got);
    CHECK(got->token == sent.token);
    CHECK(got->price == sent.price);
    CHECK(got->quantity == sent.quantity);
    CHECK(got->taker == sent.taker);
    CHECK(got->ts_ms == sent.ts_ms);
    CHECK(got->id == sent.id);
    freeReplyObject(r);
    redisFree(c);

    // Entries that are not trades: the first bad field is named.
    const auto from = [](std::vector<std::pair<std::string, std::string>> kv) {
        return [kv = std::move(kv)](std::string_view name) -> std::optional<std::string_view> {
            for (const auto& [k, v] : kv) {
                if (k == name) {
                    return std::string_view(v);
                }
            }
            return std::nullopt;
        };
    };
    const std::vector<std::pair<std::string, std::string>> good{{"token", "SOL"},  {"price", "1.5"},
                                                                {"quantity", "2"}, {"side", "buy"},
                                                                {"ts", "1000"},    {"id", "1"}};
    CHECK(redis::trade_from_entry(from(good), why));
    const std::vector<std::pair<std::string, std::string_view>> breaks{
        {"price", "nan"}, {"price", "1.5x"}, {"price", ""},    {"quantity", "-1"}, {"side", "hold"},
        {"ts", "soon"},   {"id", "-1"},      {"token", "a{b"}, {"price", "0"},     {"ts", "1e3"}};
    for (const auto& [name, value] : breaks) {
        auto kv = good;
        for (auto& [k, v] : kv) {
            if (k == name) {
                v = value;
            }
        }
        INFO(name << "=" << value);
        why = {};
        CHECK_FALSE(redis::trade_from_entry(from(kv), why));
        CHECK_FALSE(why.empty());
    }
    auto missing = good;
    missing.pop_back();
    CHECK_FALSE(redis::trade_from_entry(from(missing), why));
    CHECK(why == "id");
}

TEST_CASE("packed entries: records read back as written, a bad one spoils the entry, mixed") {
    const std::vector<trade_view> trades{
        {"So11111111111111111111111111111111111111112", 101.5, 2.0, side::buy, 1733011200000, 7},
        {"BONK", 0.000021, 1e9, side::sell, 1733011200001, 8},
        {"SOL", 1e-300, 3.25, side::buy, 0, 18446744073709551615ull}};
    std::string text;
    for (const trade_view& t : trades) {
        redis::append_packed(text, t);
    }
    std::vector<trade_view> back;
    std::string reason;
    CHECK(
        redis::read_packed(text, reason, [&](const trade_view& t) { back.push_back(t); }).empty());
    CHECK(back == trades);
    back.clear();
    CHECK(redis::read_packed(text + "\n", reason, [&](const trade_view& t) {
              back.push_back(t);
          }).empty()); // a final newline
    CHECK(back.size() == 3);

    const std::vector<std::pair<std::string, std::string>> bad{
        {"", "no trades"},
        {"\n", "record 1: price"},
        {"A 1 1 buy 1 1\n\nB 1 1 buy 1 1", "record 2: price"},
        {"A 1 1 buy 1 1\nB 1 -1 buy 1 2", "record 2: quantity_not_positive"},
        {"A 1 1 buy 1 1\nB 1 1 bu", "record 2: ts"},
        {"A 1 1 buy 1", "record 1: id"},
        {"A 1 1 buy 1 1 extra", "record 1: more than six fields"},
        {"A  1 1 buy 1 1", "record 1: more than six fields"},
        {"A 1 1 buy  1", "record 1: ts"},
        {"A 1 1 hold 1 1", "record 1: side"},
        {"A{ 1 1 buy 1 1", "record 1: invalid_token"},
        {"A nan 1 buy 1 1", "record 1: price_not_finite"}};
    for (const auto& [input, expected] : bad) {
        INFO(input);
        CHECK(redis::read_packed(input, reason, [](const trade_view&) {}) == expected);
    }

    // In a stream reply: single and packed entries side by side; a bad packed entry has no
    // trades, and its reason outlives later entries' reasons.
    testing::redis_server server;
    const std::string key = "mixed";
    (void)server.command({"XADD", key, "*", "token", "A", "price", "1", "quantity", "1", "side",
                          "buy", "ts", "1", "id", "1"});
    (void)server.command({"XADD", key, "*", "format", "1", "trades", text});
    (void)server.command(
        {"XADD", key, "*", "format", "1", "trades", "A 1 1 buy 1 1\nB 0 1 buy 1 1"});
    (void)server.command({"XADD", key, "*", "format", "2", "trades", "A 1 1 buy 1 1"});
    (void)server.command({"XADD", key, "*", "format", "1"});
    (void)server.command({"XADD", key, "*", "format", "1", "trades", "A 1 1 buy 1 1 x"});
    redis::cluster_client::options o;
    o.seeds.push_back({"127.0.0.1", server.port(), {}});
    redis::cluster_client client(o);
    const redis::command_result r = client.run_one({{"XRANGE", key, "-", "+"}, 0});
    REQUIRE(r.ok());
    redis::detail::stream_entries got;
    redis::detail::parse_entries(r.reply.get(), got);
    REQUIRE(got.entries.size() == 6);
    CHECK(got.entries[0].why.empty());
    CHECK(got.entries[0].count == 1);
    CHECK(got.entries[1].why.empty());
    CHECK(got.entries[1].first == 1);
    CHECK(got.entries[1].count == 3);
    CHECK(got.trades[2] == trades[1]);
    CHECK(got.entries[2].why == "record 2: price_not_positive");
    CHECK(got.entries[3].why == "unknown packed format");
    CHECK(got.entries[4].why == "packed entry without trades");
    CHECK(got.entries[5].why == "record 1: more than six fields");
    for (std::size_t e = 2; e < 6; ++e) {
        CHECK(got.entries[e].count == 0);
    }
    CHECK(got.trades.size() == 4);
}

TEST_CASE("token changes: newer figures win, candles only the older holds stay") {
    const auto candle_at = [](std::uint32_t interval, timestamp_ms open, double close) {
        candle_update c;
        c.name = "ignored";
        c.interval_index = interval;
        c.width = std::chrono::milliseconds(1'000);
        c.data.open_time = open;
        c.data.close = close;
        return c;
    };
    redis::detail::token_changes older;
    older.put(candle_at(0, 1'000, 1.0));
    older.put(candle_at(1, 0, 1.0));
    older.put(candle_at(0, 1'000, 1.5)); // a newer version of the same candle replaces it
    CHECK(older.candles.size() == 2);
    CHECK(older.candles[0].data.close == 1.5);
    CHECK(older.candles[0].name.empty()); // the map's key is the name
    older.has_token = true;
    older.latest.price = 1.5;
    older.last_applied = redis::stream_id{5, 0};

    redis::detail::token_changes newer;
    newer.put(candle_at(0, 2'000, 2.0)); // the next 1 s candle: the older one closed
    newer.put(candle_at(1, 0, 2.0));
    newer.last_applied = redis::stream_id{9, 1};
    older.absorb(newer); // no latest figures in `newer`: the older ones stay
    CHECK(older.has_token);
    CHECK(older.latest.price == 1.5);
    REQUIRE(older.candles.size() == 3);
    CHECK(older.candles[0].data.close == 1.5); // only the older holds it: kept
    CHECK(older.candles[1].data.close == 2.0); // newer version
    CHECK(older.candles[2].data.open_time == 2'000);
    CHECK(older.last_applied == redis::stream_id{9, 1});

    redis::detail::token_changes latest;
    latest.has_token = true;
    latest.latest.price = 3.0;
    older.absorb(latest); // no entry id: the one held stays
    CHECK(older.latest.price == 3.0);
    CHECK(older.last_applied == redis::stream_id{9, 1});
}

TEST_CASE("resp_builder: a command in RESP, and what an EVALSHA shares with its EVAL") {
    redis::detail::resp_builder b;
    b.add("EVALSHA");
    b.add("abc");
    b.add("1");
    b.add("");
    b.add("k\r\ny");
    CHECK(b.count() == 5);
    const std::string resp = b.take();
    CHECK(resp == "*5\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n1\r\n$0\r\n\r\n$4\r\nk\r\ny\r\n");
    CHECK(b.count() == 0);
    const std::size_t rest = redis::detail::resp_after_two_arguments(resp);
    CHECK(resp.substr(rest) == "$1\r\n1\r\n$0\r\n\r\n$4\r\nk\r\ny\r\n");
    CHECK(redis::detail::resp_after_two_arguments("*1\r\n$3\r\nabc\r\n") == std::string::npos);
    CHECK(redis::detail::resp_after_two_arguments("*2\r\n$9\r\nabc\r\n$1\r\nx\r\n") ==
          std::string::npos);
    b.add("PING");
    CHECK(b.take() == "*1\r\n$4\r\nPING\r\n");
}

namespace {

/// Runs one lease script on `node` for partition `k` of prefix "t"; its integer reply.
long long lease_call(testing::redis_server& node, std::string_view script, std::size_t k,
                     std::vector<std::string> args) {
    std::vector<std::string> cmd{"EVAL", std::string(script)};
    if (script == redis::lease_scripts::acquire) {
        cmd.insert(cmd.end(), {"2", redis::lease_key("t", k), redis::epoch_key("t", k)});
    } else {
        cmd.insert(cmd.end(), {"1", redis::lease_key("t", k)});
    }
    cmd.insert(cmd.end(), args.begin(), args.end());
    const std::string reply = node.command(cmd);
    INFO(reply);
    return std::stoll(reply);
}

/// The lease life of one partition, as two instances see it.
void check_lease_life(testing::redis_server& node, std::size_t k) {
    namespace ls = redis::lease_scripts;
    CHECK(redis::key_slot(redis::lease_key("t", k)) == redis::key_slot(redis::epoch_key("t", k)));
    // A takes the free lease: epoch 1. B cannot, while A holds it. A renews.
    CHECK(lease_call(node, ls::acquire, k, {"instance a", "300"}) == 1);
    CHECK(lease_call(node, ls::acquire, k, {"b", "300"}) == 0);
    CHECK(lease_call(node, ls::renew, k, {"instance a", "1", "300"}) == 1);
    // A acquires what it holds (to start over): a new epoch, and the former one is dead.
    CHECK(lease_call(node, ls::acquire, k, {"instance a", "300"}) == 2);
    CHECK(lease_call(node, ls::renew, k, {"instance a", "1", "300"}) == 0);
    CHECK(lease_call(node, ls::release, k, {"instance a", "1"}) == 0);
    CHECK(lease_call(node, ls::renew, k, {"instance a", "2", "300"}) == 1);
    CHECK(lease_call(node, ls::renew, k, {"b", "2", "300"}) == 0);
    CHECK(lease_call(node, ls::release, k, {"b", "2"}) == 0);
    // A stops renewing: the lease lapses, B takes it with a larger epoch, A has lost it.
    std::this_thread::sleep_for(std::chrono::milliseconds(450));
    CHECK(lease_call(node, ls::acquire, k, {"b", "300"}) == 3);
    CHECK(lease_call(node, ls::renew, k, {"instance a", "2", "300"}) == 0);
    CHECK(lease_call(node, ls::acquire, k, {"instance a", "300"}) == 0);
    CHECK(lease_call(node, ls::release, k, {"instance a", "2"}) == 0);
    // B hands it back; A takes it again, with epoch 4: epochs only grow.
    CHECK(lease_call(node, ls::release, k, {"b", "3"}) == 1);
    CHECK(lease_call(node, ls::acquire, k, {"instance a", "300"}) == 4);
    CHECK(lease_call(node, ls::renew, k, {"instance a", "4", "300"}) == 1);
}

} // namespace

TEST_CASE("partition leases: taken, renewed, lapsed, taken over with a larger epoch") {
    testing::redis_server single;
    check_lease_life(single, 0);
    check_lease_life(single, 1); // partitions are independent
    // On a cluster, at the node serving the partition's slot.
    testing::redis_cluster cluster;
    const redis::slot_map map = read_slots(cluster.node(0));
    const redis::cluster_node* owner = map.node_for(redis::key_slot(redis::lease_key("t", 2)));
    REQUIRE(owner != nullptr);
    check_lease_life(node_on(cluster, owner->port), 2);
}

namespace {

/// token_write for token "SOL" of prefix "t" on `node`: latest price, rolling last and a 1m
/// candle's open all set to `value`; its integer reply.
long long write_token(testing::redis_server& node, std::string_view epoch,
                      std::string_view stream_id, std::string_view value) {
    return std::stoll(node.command({"EVAL",
                                    std::string(redis::lease_scripts::token_write),
                                    "3",
                                    redis::latest_key("t", "SOL"),
                                    redis::rolling_key("t", "SOL"),
                                    redis::candle_key("t", "SOL", intervals::m1, 60'000),
                                    std::string(epoch),
                                    std::string(stream_id),
                                    "1",
                                    "price",
                                    std::string(value),
                                    "1",
                                    "last",
                                    std::string(value),
                                    "60000",
                                    "2",
                                    "open",
                                    std::string(value),
                                    "close",
                                    std::string(value)}));
}

void check_token_writes(testing::redis_server& node) {
    const std::string latest = redis::latest_key("t", "SOL");
    const std::string candle = redis::candle_key("t", "SOL", intervals::m1, 60'000);
    CHECK(write_token(node, "1", "100-0", "10") == 1);
    CHECK(node.command({"HGET", latest, "price"}) == "10");
    CHECK(node.command({"HGET", latest, "epoch"}) == "1");
    CHECK(node.command({"HGET", latest, "stream_id"}) == "100-0");
    CHECK(node.command({"HGET", redis::rolling_key("t", "SOL"), "last"}) == "10");
    CHECK(node.command({"HGET", candle, "close"}) == "10");
    const long long ttl = std::stoll(node.command({"PTTL", candle}));
    CHECK(ttl > 0);
    CHECK(ttl <= 60'000);
    // Already applied at this epoch: refused, nothing changes.
    CHECK(write_token(node, "1", "100-0", "11") == -1);
    CHECK(write_token(node, "1", "99-7", "11") == -1);
    CHECK(node.command({"HGET", latest, "price"}) == "10");
    CHECK(write_token(node, "1", "100-1", "12") == 1);
    CHECK(node.command({"HGET", latest, "stream_id"}) == "100-1");
    // A new holder (epoch 2) writes; the former one (epoch 1) is fenced off from then on.
    CHECK(write_token(node, "2", "101-0", "20") == 1);
    CHECK(write_token(node, "1", "500-0", "13") == 0);
    CHECK(node.command({"HGET", latest, "price"}) == "20");
    CHECK(node.command({"HGET", redis::rolling_key("t", "SOL"), "last"}) == "20");
    CHECK(node.command({"HGET", latest, "epoch"}) == "2");
    // Writes not from a stream (no id) are fenced by epoch only.
    CHECK(write_token(node, "2", "", "21") == 1);
    CHECK(node.command({"HGET", latest, "stream_id"}) == "101-0");
}

} // namespace

TEST_CASE("fenced token writes: atomic, refused from a former holder or as a replay") {
    testing::redis_server single;
    check_token_writes(single);
    testing::redis_cluster cluster;
    const redis::slot_map map = read_slots(cluster.node(0));
    check_token_writes(node_on(cluster, map.node_for(redis::token_slot("SOL"))->port));
}

#ifdef TRADEAGG_LOADGEN_BINARY

#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <thread>

namespace {

/// Runs the load generator with `args` and returns what it printed on standard output.
std::string run_loadgen(const std::vector<std::string>& args, int& status) {
    int out[2];
    REQUIRE(::pipe(out) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::dup2(out[1], STDOUT_FILENO);
        ::close(out[0]);
        ::close(out[1]);
        std::vector<const char*> argv{TRADEAGG_LOADGEN_BINARY};
        for (const std::string& a : args) {
            argv.push_back(a.c_str());
        }
        argv.push_back(nullptr);
        ::execv(TRADEAGG_LOADGEN_BINARY, const_cast<char* const*>(argv.data()));
        std::_Exit(127);
    }
    ::close(out[1]);
    std::string text;
    char buf[4096];
    for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) {
        text.append(buf, static_cast<std::size_t>(n));
    }
    ::close(out[0]);
    int st = 0;
    ::waitpid(pid, &st, 0);
    status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return text;
}

/// The unsigned number after "key": in a JSON text; 0 if absent.
std::uint64_t json_count(std::string_view json, std::string_view key) {
    const std::string quoted = "\"" + std::string(key) + "\":";
    const auto at = json.find(quoted);
    std::uint64_t v = 0;
    if (at != std::string_view::npos) {
        const char* p = json.data() + at + quoted.size();
        std::from_chars(p, json.data() + json.size(), v);
    }
    return v;
}

/// Moves `slot`, which holds only `key`, from the node serving it to `to`, as `redis-cli
/// --cluster reshard` does: IMPORTING, MIGRATING, MIGRATE of the key, then the new owner
/// everywhere. While MIGRATING, a write for a key the source no longer has is redirected
/// (ASK), so once moved the key stays moved.
void migrate_slot(testing::redis_cluster& cluster, std::uint16_t slot, const std::string& key,
                  const redis::cluster_node& from, const redis::cluster_node& to) {
    testing::redis_server& source = node_on(cluster, from.port);
    testing::redis_server& target = node_on(cluster, to.port);
    const std::string s = std::to_string(slot);
    REQUIRE(target.command({"CLUSTER", "SETSLOT", s, "IMPORTING", from.id}) == "OK");
    REQUIRE(source.command({"CLUSTER", "SETSLOT", s, "MIGRATING", to.id}) == "OK");
    REQUIRE(source.command({"MIGRATE", "127.0.0.1", std::to_string(to.port), key, "0", "5000"}) ==
            "OK");
    REQUIRE(source.command({"CLUSTER", "COUNTKEYSINSLOT", s}) == "0");
    for (std::size_t n = 0; n < cluster.size(); ++n) {
        CHECK(cluster.node(n).command({"CLUSTER", "SETSLOT", s, "NODE", to.id}) == "OK");
    }
}

} // namespace

TEST_CASE("loadgen --streams: each trade in its token's partition, in order, as a slot moves") {
    testing::redis_cluster cluster;
    const redis::slot_map map = read_slots(cluster.node(0));
    const std::string moving = redis::stream_key("lg", 0);
    const std::uint16_t slot = redis::key_slot(moving);
    const redis::cluster_node from = *map.node_for(slot);
    redis::cluster_node to;
    for (const redis::cluster_node& n : map.nodes()) {
        if (!(n == from)) {
            to = n;
        }
    }
    std::string length_when_moved;
    std::thread mover([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(800));
        migrate_slot(cluster, slot, moving, from, to);
        length_when_moved = node_on(cluster, to.port).command({"XLEN", moving});
    });
    int status = -1;
    const std::string json = run_loadgen({"--streams", "4", "--redis",
                                          "127.0.0.1:" + std::to_string(cluster.node(1).port()),
                                          "--prefix", "lg", "--duration", "2", "--connections", "2",
                                          "--batch", "200", "--tokens", "300", "--json"},
                                         status);
    mover.join();
    INFO(json);
    REQUIRE(status == 0);
    const std::uint64_t accepted = json_count(json, "trades_accepted");
    CHECK(accepted == json_count(json, "trades_sent"));
    CHECK(json_count(json, "io_errors") == 0);

    const redis::slot_map after = read_slots(cluster.node(2));
    CHECK(after.node_for(slot)->port == to.port);
    // The generator kept appending to the moved stream, through ASK and MOVED, after the move.
    REQUIRE(!length_when_moved.empty());
    CHECK(std::stoull(node_on(cluster, to.port).command({"XLEN", moving})) >
          std::stoull(length_when_moved));
    std::uint64_t total = 0;
    for (std::size_t k = 0; k < 4; ++k) {
        const std::string key = redis::stream_key("lg", k);
        const redis::cluster_node* owner = after.node_for(redis::key_slot(key));
        REQUIRE(owner != nullptr);
        redisContext* c = redisConnect("127.0.0.1", owner->port);
        REQUIRE(c != nullptr);
        // Per (token, connection): ids only grow (a connection's ids grow with time).
        std::map<std::pair<std::string, std::uint64_t>, std::uint64_t> last;
        std::string start = "-";
        for (;;) {
            auto* r = static_cast<redisReply*>(
                redisCommand(c, "XRANGE %s %s + COUNT 5000", key.c_str(), start.c_str()));
            REQUIRE(r != nullptr);
            REQUIRE(r->type == REDIS_REPLY_ARRAY);
            if (r->elements == 0) {
                freeReplyObject(r);
                break;
            }
            for (std::size_t e = 0; e < r->elements; ++e) {
                const redisReply* entry = r->element[e];
                std::string_view why;
                const auto t = redis::trade_from_entry(redis::entry_fields(entry->element[1]), why);
                REQUIRE(t);
                CHECK(redis::partition_of(t->token, 4) == k);
                const std::uint64_t connection = (t->id / 10'000'000) % 2;
                auto& seen = last[{std::string(t->token), connection}];
                CHECK(t->id > seen);
                seen = t->id;
                ++total;
            }
            const redisReply* tail = r->element[r->elements - 1]->element[0];
            const auto id = redis::stream_id::parse(std::string_view(tail->str, tail->len));
            REQUIRE(id);
            start = "(" + id->text();
            freeReplyObject(r);
        }
        redisFree(c);
    }
    CHECK(total == accepted);
}

TEST_CASE("stream consumer: trims what is past the retention, never what it has not applied") {
    testing::redis_server node;
    redis::cluster_client::options o;
    o.seeds.push_back({"127.0.0.1", node.port(), {}});
    redis::cluster_client client(o);
    // Old entries (ids from 1970: past any retention) and fresh ones (ids of now), all valid.
    const std::string key = redis::stream_key("tr", 0);
    constexpr std::size_t old_entries = 10'000;
    constexpr std::size_t fresh_entries = 300;
    std::vector<redis::cluster_command> cmds;
    std::vector<std::string> names;
    for (std::size_t i = 0; i < 20; ++i) {
        names.push_back("TR" + std::to_string(i));
    }
    for (std::size_t i = 0; i < old_entries + fresh_entries; ++i) {
        const trade_view t{names[i % names.size()],
                           1.0 + static_cast<double>(i % 7),
                           1.0,
                           i % 2 == 0 ? side::buy : side::sell,
                           1'700'000'000'000 + static_cast<std::int64_t>(i) * 10,
                           i + 1};
        redis::cluster_command c{
            {"XADD", key, i < old_entries ? std::to_string(i + 1) + "-0" : std::string("*")},
            redis::key_slot(key)};
        redis::for_each_field(t, [&c](std::string_view f, std::string_view v) {
            c.args.emplace_back(f);
            c.args.emplace_back(v);
        });
        cmds.push_back(std::move(c));
    }
    std::vector<redis::command_result> r;
    client.run(cmds, r);
    for (const auto& x : r) {
        REQUIRE(x.ok());
    }

    // One entry per round, trims every 300 ms: trims run while most entries are unread.
    redis::stream_consumer_config c;
    c.key_prefix = "tr";
    c.partitions = 1;
    c.instance = "trimmer";
    c.lease_ttl = std::chrono::milliseconds(300);
    c.read_count = 1;
    c.retention = std::chrono::seconds(60);
    c.checkpoint_interval = std::chrono::milliseconds(0); // the retention alone trims
    c.redis = o;
    redis::stream_consumer<throughput_policy> consumer(
        c, resolve<throughput_policy>(runtime_config{}));
    consumer.start();
    // A second start is an error that says so, and the running consumer goes on.
    CHECK_THROWS_AS(consumer.start(), std::logic_error);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    bool trimmed_early = false;
    while (std::chrono::steady_clock::now() < until) {
        const auto s = consumer.stats();
        trimmed_early = trimmed_early || (s.entries_trimmed > 0 && s.entries_acked < old_entries);
        if (s.entries_acked == old_entries + fresh_entries && s.entries_trimmed >= old_entries) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    CHECK(consumer.stop(std::chrono::seconds(5)));
    const auto s = consumer.stats();
    INFO(s.last_error);
    CHECK(trimmed_early);
    CHECK(s.entries_invalid == 0);
    CHECK(s.trades_applied == old_entries + fresh_entries); // none trimmed before it was applied
    CHECK(s.entries_trimmed == old_entries);                // and the fresh ones are kept
    CHECK(node.command({"XLEN", key}) == std::to_string(fresh_entries));
    // Every trade counted once: a token's latest hash holds its last trade.
    const std::string last_id =
        node.command({"HGET", redis::latest_key("tr", names.back()), "trade_id"});
    CHECK(last_id == std::to_string(old_entries + fresh_entries));
}

#endif
