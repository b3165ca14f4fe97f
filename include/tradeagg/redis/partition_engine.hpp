#pragma once
// A partition's own aggregation state in the stream consumer: a token table and a shard that
// the consumer's thread drives (`shard::apply_here`), a sink that keeps what the shard's flushes
// changed until the round writes it (token_write.hpp), and each token's last applied entry.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include <tradeagg/detail/string_map.hpp>
#include <tradeagg/ingress.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/reclaimer.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/redis/token_write.hpp>
#include <tradeagg/runtime_config.hpp>
#include <tradeagg/shard.hpp>
#include <tradeagg/sink.hpp>
#include <tradeagg/token_table.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg::redis::detail {

/// The partition shard's sink: per token, the last flushed version of each candle, of its latest
/// trade and of its rolling window.
struct capture_sink {
    tradeagg::detail::string_map<token_changes> tokens;

    void consume(const flush_batch& b) {
        for (const candle_update& c : b.candles) {
            tradeagg::detail::find_or_add(tokens, c.name).put(c);
        }
        for (const token_update& u : b.tokens) {
            token_changes& t = tradeagg::detail::find_or_add(tokens, u.name);
            t.has_token = true;
            t.latest = u.latest;
            t.rolling = u.rolling;
        }
    }
};

/// A partition's aggregation state: its own token table and shard, driven on the consumer's
/// thread.
template <policy Policy>
struct partition_engine {
    explicit partition_engine(const resolved_config<Policy>& rc)
        : table(rc.max_tokens, 1), budget(1, rc.memory_limit_mb << 20, rc.max_active_tokens),
          worker(0, rc, on_late, table, budget, sink), ring(&worker.ring_for(0)) {}

    capture_sink sink;
    std::uint64_t late = 0; ///< trades found late, since the consumer last took the count
    std::function<void(const late_trade&)> on_late = [this](const late_trade&) { ++late; };
    token_table table;
    memory_budget budget;
    shard<Policy, capture_sink> worker;
    ingress_ring* ring;
    tradeagg::detail::string_map<stream_id> applied; ///< last entry applied, per token

    /// Queues a trade (applying what is queued when the ring is full). False with `why`
    /// if the token cannot be taken.
    bool push(const trade_view& t, std::string_view& why) {
        const token_table::intern_result r = table.intern(t.token);
        if (r.reason != reject_reason::none) {
            why = to_string(r.reason);
            return false;
        }
        const ingress_record rec{trade{r.id, t.taker, t.price, t.quantity, t.ts_ms, t.id}, 0};
        while (!ring->push(rec)) {
            worker.apply_here();
        }
        return true;
    }
};

} // namespace tradeagg::redis::detail
