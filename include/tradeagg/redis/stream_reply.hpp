#pragma once
// Stream replies as the partition-stream consumer reads them: the entries of an XREADGROUP or
// XRANGE reply, each with its id and its trade (or why it has none), and the consumer groups'
// last delivered ids from XINFO GROUPS.

#include <cstddef>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <hiredis/hiredis.h>

#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg::redis::detail {

/// A stream entry as read: its id and its trades (`count` of a `stream_entries::trades`, from
/// `first`), or why it has none. Views into the reply.
struct stream_entry_view {
    stream_id id;
    std::string_view id_text;
    std::size_t first = 0;
    std::size_t count = 0;
    std::string_view why; ///< not empty: the entry is invalid, and has no trades
};

/// The entries of a stream reply and their trades, in stream order. Reused from read to read.
struct stream_entries {
    std::vector<stream_entry_view> entries;
    std::vector<trade_view> trades;
    std::deque<std::string> reasons; ///< where packed entries' `why` is kept (stable)

    void clear() {
        entries.clear();
        trades.clear();
        reasons.clear();
    }
};

/// Reads a stream reply's entries (`[[id, [field, value, ...]], ...]`) into `out`, after what
/// it holds: single-trade entries and packed ones (stream_entry.hpp) alike.
inline void parse_entries(const redisReply* list, stream_entries& out) {
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
        x.first = out.trades.size();
        const auto field = entry_fields(e->element[1]);
        if (const std::optional<std::string_view> format = field(packed_format_field)) {
            const std::optional<std::string_view> trades = field(packed_trades_field);
            if (*format != packed_format) {
                x.why = "unknown packed format";
            } else if (!trades) {
                x.why = "packed entry without trades";
            } else {
                std::string& reason = out.reasons.emplace_back();
                x.why = read_packed(*trades, reason,
                                    [&](const trade_view& t) { out.trades.push_back(t); });
            }
            if (!x.why.empty()) {
                out.trades.resize(x.first); // whole or not at all
            }
        } else if (const std::optional<trade_view> t = trade_from_entry(field, x.why)) {
            out.trades.push_back(*t);
        }
        x.count = out.trades.size() - x.first;
        out.entries.push_back(x);
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

/// A consumer group of the stream consumer, as XINFO GROUPS lists it.
struct consumer_group_info {
    std::string name;
    stream_id delivered; ///< its last delivered id
};

/// The groups of XINFO GROUPS named `base` or `base@<epoch>` (stream_consumer.hpp, "Reads").
[[nodiscard]] inline std::vector<consumer_group_info> consumer_groups(const redisReply* groups,
                                                                      std::string_view base) {
    std::vector<consumer_group_info> out;
    if (groups == nullptr || groups->type != REDIS_REPLY_ARRAY) {
        return out;
    }
    for (std::size_t g = 0; g < groups->elements; ++g) {
        const auto field = entry_fields(groups->element[g]);
        const auto name = field("name");
        const auto last = field("last-delivered-id");
        if (!name || !last ||
            !(*name == base || (name->starts_with(base) && name->size() > base.size() &&
                                (*name)[base.size()] == '@'))) {
            continue;
        }
        const auto id = stream_id::parse(*last);
        out.push_back({std::string(*name), id.value_or(stream_id{})});
    }
    return out;
}

} // namespace tradeagg::redis::detail
