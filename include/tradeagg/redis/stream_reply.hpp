#pragma once
// Stream replies as the partition-stream consumer reads them: the entries of an XREADGROUP or
// XRANGE reply, each with its id and its trade (or why it has none), and a consumer group's
// last delivered id from XINFO GROUPS.

#include <cstddef>
#include <optional>
#include <string_view>
#include <vector>

#include <hiredis/hiredis.h>

#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg::redis::detail {

/// A stream entry as read: its id and the trade (views into the reply).
struct stream_entry_view {
    stream_id id;
    std::string_view id_text;
    std::optional<trade_view> trade;
    std::string_view why;
};

/// Reads a stream reply's entries (`[[id, [field, value, ...]], ...]`).
inline void parse_entries(const redisReply* list, std::vector<stream_entry_view>& out) {
    if (list == nullptr || list->type != REDIS_REPLY_ARRAY) {
        return;
    }
    for (std::size_t i = 0; i < list->elements; ++i) {
        const redisReply* e = list->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
            e->element[0]->type != REDIS_REPLY_STRING) {
            continue;
        }
        stream_entry_view x;
        x.id_text = std::string_view(e->element[0]->str, e->element[0]->len);
        const std::optional<stream_id> id = stream_id::parse(x.id_text);
        if (!id) {
            continue;
        }
        x.id = *id;
        x.trade = trade_from_entry(entry_fields(e->element[1]), x.why);
        out.push_back(x);
    }
}

/// The last id delivered to the consumer group `group`, from XINFO GROUPS (a list of groups,
/// each a list of field, value).
[[nodiscard]] inline std::optional<stream_id> last_delivered(const redisReply* groups,
                                                             std::string_view group) {
    if (groups == nullptr || groups->type != REDIS_REPLY_ARRAY) {
        return std::nullopt;
    }
    for (std::size_t g = 0; g < groups->elements; ++g) {
        const auto field = entry_fields(groups->element[g]);
        if (field("name") == group) {
            const auto last = field("last-delivered-id");
            return last ? stream_id::parse(*last) : std::nullopt;
        }
    }
    return std::nullopt;
}

} // namespace tradeagg::redis::detail
