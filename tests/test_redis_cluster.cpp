// Redis Cluster: key slots as the cluster specification defines them, checked against the
// specification's examples and against a live cluster's CLUSTER KEYSLOT; the slot map read from
// CLUSTER SLOTS, and MOVED and ASK redirections, against a live cluster.

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>

#include <doctest/doctest.h>

#include <tradeagg/sink/redis_cluster.hpp>
#include <tradeagg/sink/redis_keys.hpp>

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

TEST_CASE("cluster redirections: MOVED and ASK are read; anything else is not one") {
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
