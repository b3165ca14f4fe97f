#pragma once
// Checks that a Redis holds exactly what a memory_sink holds, as the Redis sink's key contract
// (tradeagg/redis/keys.hpp) writes it: every candle, rolling window and latest trade, field
// by field as text, and no other key under the prefix. Shared by the Redis tests and the Redis
// benchmark; streams through the keys, so it suits millions of them.

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <hiredis/hiredis.h>

#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/slot_map.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/sink/memory_sink.hpp>

#include "compare.hpp"

namespace tradeagg::testing {

/// One hash as the sink writes it: (field, text) in the contract's order.
using hash_fields = std::vector<std::pair<std::string, std::string>>;

template <class Value>
hash_fields fields_of(const Value& v) {
    hash_fields h;
    redis::for_each_field(v, [&h](std::string_view f, std::string_view t) {
        h.emplace_back(std::string(f), std::string(t));
    });
    return h;
}

namespace detail {

inline bool is_candle_key(std::string_view key) noexcept {
    return key.find("}:candle:") != std::string_view::npos;
}

/// Sends PTTL for every candle key of `batch`, pipelined, and checks that each has an expiry.
inline void check_expiries(redisContext* c,
                           const std::vector<std::pair<std::string, hash_fields>>& batch,
                           mismatch_log& log) {
    for (const auto& [key, want] : batch) {
        if (is_candle_key(key)) {
            const char* argv[] = {"PTTL", key.data()};
            const std::size_t lengths[] = {4, key.size()};
            redisAppendCommandArgv(c, 2, argv, lengths);
        }
    }
    for (const auto& [key, want] : batch) {
        if (!is_candle_key(key)) {
            continue;
        }
        void* raw = nullptr;
        if (redisGetReply(c, &raw) != REDIS_OK || raw == nullptr) {
            log.add("cannot read from Redis: " + std::string(c->errstr));
            return;
        }
        auto* r = static_cast<redisReply*>(raw);
        if (r->type != REDIS_REPLY_INTEGER || r->integer == -1) {
            log.add(key + ": no expiry");
        }
        freeReplyObject(r);
    }
}

/// Sends HGETALL for every key of `batch`, pipelined, and compares each reply with its hash;
/// every candle key must also have an expiry. With `stream_fields`, a latest hash also holds
/// `epoch` and `stream_id` (written by stream ingest), which are not compared.
inline void compare_batch(redisContext* c,
                          const std::vector<std::pair<std::string, hash_fields>>& batch,
                          mismatch_log& log, bool stream_fields = false) {
    check_expiries(c, batch, log);
    for (const auto& [key, want] : batch) {
        const char* argv[] = {"HGETALL", key.data()};
        const std::size_t lengths[] = {7, key.size()};
        redisAppendCommandArgv(c, 2, argv, lengths);
    }
    for (const auto& [key, want] : batch) {
        void* raw = nullptr;
        if (redisGetReply(c, &raw) != REDIS_OK || raw == nullptr) {
            log.add("cannot read from Redis: " + std::string(c->errstr));
            return;
        }
        auto* r = static_cast<redisReply*>(raw);
        if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
            log.add("missing " + key);
        } else if (r->elements !=
                   2 * (want.size() + (stream_fields && key.ends_with(":latest") ? 2 : 0))) {
            log.add(key + ": " + std::to_string(r->elements / 2) + " fields, want " +
                    std::to_string(want.size()));
        } else {
            for (const auto& [field, text] : want) {
                bool found = false;
                for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
                    if (std::string_view(r->element[i]->str, r->element[i]->len) == field) {
                        found = true;
                        const std::string_view got(r->element[i + 1]->str, r->element[i + 1]->len);
                        if (got != text) {
                            log.add(key + " " + field + " = " + std::string(got) + ", want " +
                                    text);
                        }
                    }
                }
                if (!found) {
                    log.add(key + ": no field " + field);
                }
            }
        }
        freeReplyObject(r);
    }
}

/// Keys under `prefix` in Redis, counted with SCAN.
inline std::size_t count_keys(redisContext* c, const std::string& prefix, mismatch_log& log) {
    std::size_t n = 0;
    std::string cursor = "0";
    const std::string match = prefix + ":{*"; // aggregates: the token's hash tag follows
    do {
        auto* r = static_cast<redisReply*>(
            redisCommand(c, "SCAN %s MATCH %s COUNT 10000", cursor.c_str(), match.c_str()));
        if (r == nullptr || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            log.add("SCAN failed");
            if (r != nullptr) {
                freeReplyObject(r);
            }
            return n;
        }
        cursor.assign(r->element[0]->str, r->element[0]->len);
        n += r->element[1]->elements;
        freeReplyObject(r);
    } while (cursor != "0");
    return n;
}

/// Calls `add(key, fields)` for every key `memory` implies.
template <class Intervals, class Add>
void for_each_expected(const memory_sink& memory, const std::string& prefix,
                       const Intervals& intervals, Add&& add) {
    for (const std::string& token : memory.tokens()) {
        for (const interval width : intervals) {
            for (const candle& k : memory.candles(token, width)) {
                add(redis::candle_key(prefix, token, width, k.open_time), fields_of(k));
            }
        }
        if (const auto r = memory.rolling(token)) {
            add(redis::rolling_key(prefix, token), fields_of(*r));
        }
        if (const auto l = memory.latest(token)) {
            add(redis::latest_key(prefix, token), fields_of(*l));
        }
    }
}

} // namespace detail

/// Compares the Redis at 127.0.0.1:`port` (database 0) with `memory`, for the candle intervals
/// `intervals`. Returns the differences (none: `count == 0`); `keys` receives how many keys
/// were expected.
template <class Intervals>
mismatch_log compare_redis_with(const std::string& host, int port, const memory_sink& memory,
                                const std::string& prefix, const Intervals& intervals,
                                std::size_t* keys = nullptr) {
    mismatch_log log;
    redisContext* c = redisConnect(host.c_str(), port);
    if (c == nullptr || c->err != 0) {
        log.add("cannot connect to Redis");
        if (c != nullptr) {
            redisFree(c);
        }
        return log;
    }
    std::vector<std::pair<std::string, hash_fields>> batch;
    std::size_t expected = 0;
    detail::for_each_expected(memory, prefix, intervals, [&](std::string key, hash_fields fields) {
        batch.emplace_back(std::move(key), std::move(fields));
        ++expected;
        if (batch.size() == 1'000) {
            detail::compare_batch(c, batch, log);
            batch.clear();
        }
    });
    detail::compare_batch(c, batch, log);
    const std::size_t found = detail::count_keys(c, prefix, log);
    if (found != expected) {
        log.add(std::to_string(found) + " keys under " + prefix + ":, want " +
                std::to_string(expected));
    }
    redisFree(c);
    if (keys != nullptr) {
        *keys = expected;
    }
    return log;
}

/// Who wrote the latest hashes a comparison reads: the Redis sink (the contract's fields), or
/// stream ingest (which also records `epoch` and `stream_id` there, not compared).
enum class latest_writer : std::uint8_t { sink, stream_ingest };

/// As `compare_redis_with`, for a Redis Cluster reached through any of its masters at
/// 127.0.0.1:`port`: each key is read from the master serving its slot, and keys are counted on
/// every master.
template <class Intervals>
mismatch_log compare_cluster_with(int port, const memory_sink& memory, const std::string& prefix,
                                  const Intervals& intervals, std::size_t* keys = nullptr,
                                  latest_writer writer = latest_writer::stream_ingest) {
    mismatch_log log;
    std::map<int, redisContext*> masters;
    const auto connect = [&](int p) -> redisContext* {
        auto& c = masters[p];
        if (c == nullptr) {
            c = redisConnect("127.0.0.1", p);
        }
        return c != nullptr && c->err == 0 ? c : nullptr;
    };
    std::optional<redis::slot_map> map;
    if (redisContext* c = connect(port)) {
        auto* r = static_cast<redisReply*>(redisCommand(c, "CLUSTER SLOTS"));
        std::string why;
        map = redis::slot_map::from_cluster_slots(r, "127.0.0.1", why);
        if (r != nullptr) {
            freeReplyObject(r);
        }
        if (!map || !map->complete()) {
            log.add("no complete slot map: " + why);
        }
    } else {
        log.add("cannot connect to Redis");
    }
    std::size_t expected = 0;
    if (map && map->complete()) {
        std::map<int, std::vector<std::pair<std::string, hash_fields>>> batches;
        const auto flush = [&](int p) {
            if (redisContext* c = connect(p)) {
                detail::compare_batch(c, batches[p], log, writer == latest_writer::stream_ingest);
            } else {
                log.add("cannot connect to 127.0.0.1:" + std::to_string(p));
            }
            batches[p].clear();
        };
        detail::for_each_expected(memory, prefix, intervals,
                                  [&](std::string key, hash_fields fields) {
                                      const int p = map->node_for(redis::key_slot(key))->port;
                                      batches[p].emplace_back(std::move(key), std::move(fields));
                                      ++expected;
                                      if (batches[p].size() == 1'000) {
                                          flush(p);
                                      }
                                  });
        for (const redis::cluster_node& n : map->nodes()) {
            flush(n.port);
        }
        std::size_t found = 0;
        for (const redis::cluster_node& n : map->nodes()) {
            if (redisContext* c = connect(n.port)) {
                found += detail::count_keys(c, prefix, log);
            }
        }
        if (found != expected) {
            log.add(std::to_string(found) + " keys under " + prefix + ":{, want " +
                    std::to_string(expected));
        }
    }
    for (auto& [p, c] : masters) {
        if (c != nullptr) {
            redisFree(c);
        }
    }
    if (keys != nullptr) {
        *keys = expected;
    }
    return log;
}

} // namespace tradeagg::testing
