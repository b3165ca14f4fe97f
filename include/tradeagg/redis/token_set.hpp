#pragma once
// The token set (keys.hpp's `tokens_key`): the names readers list the tokens by. Writers add
// the names of the tokens they write (the stream consumer's writer, the example server's
// registrar); readers scan it (candle_reader.hpp). With a blocking cluster_client.

#include <algorithm>
#include <cstddef>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <hiredis/hiredis.h>

#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/slots.hpp>

namespace tradeagg::redis {

/// Adds `names` to the token set, by SADDs of at most 1,000 names in order. Returns how many of
/// `names` were added: all of them, or the ones before the first SADD that failed.
inline std::size_t add_to_token_set(cluster_client& client, std::string_view prefix,
                                    std::span<const std::string> names) {
    constexpr std::size_t batch = 1'000;
    const std::string key = tokens_key(prefix);
    for (std::size_t from = 0; from < names.size(); from += batch) {
        const std::size_t to = std::min(names.size(), from + batch);
        cluster_command add{{"SADD", key}, key_slot(key)};
        add.args.insert(add.args.end(), names.begin() + static_cast<std::ptrdiff_t>(from),
                        names.begin() + static_cast<std::ptrdiff_t>(to));
        if (!client.run_one(std::move(add)).ok()) {
            return from;
        }
    }
    return names.size();
}

/// The names in the token set, in no particular order, read with SSCAN so that a large set does
/// not hold Redis up. Throws std::runtime_error if Redis does not answer as it should.
[[nodiscard]] inline std::vector<std::string> read_token_set(cluster_client& client,
                                                             std::string_view prefix) {
    const std::string key = tokens_key(prefix);
    std::vector<std::string> out;
    std::string cursor = "0";
    do {
        const command_result r =
            client.run_one({{"SSCAN", key, cursor, "COUNT", "1000"}, key_slot(key)});
        if (!r.ok()) {
            throw std::runtime_error("Redis: " + r.error);
        }
        const redisReply* reply = r.reply.get();
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
            reply->element[0]->type != REDIS_REPLY_STRING ||
            reply->element[1]->type != REDIS_REPLY_ARRAY) {
            throw std::runtime_error("Redis: SSCAN answered something other than a scan");
        }
        cursor.assign(reply->element[0]->str, reply->element[0]->len);
        const redisReply* names = reply->element[1];
        for (std::size_t i = 0; i < names->elements; ++i) {
            out.emplace_back(names->element[i]->str, names->element[i]->len);
        }
    } while (cursor != "0");
    return out;
}

} // namespace tradeagg::redis
