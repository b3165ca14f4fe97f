// Redis Cluster: key slots as the cluster specification defines them, checked against the
// specification's examples and against a live cluster's CLUSTER KEYSLOT.

#include <cstdint>
#include <random>
#include <string>
#include <string_view>

#include <doctest/doctest.h>

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
