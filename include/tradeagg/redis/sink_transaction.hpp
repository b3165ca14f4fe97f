#pragma once
// The commands of one token's transaction, as the Redis sink sends them: [ASKING,] MULTI, for
// each pending key its latest version (HSET of every field; PEXPIRE for a candle when due; HSET
// of rolling and of latest for the token's own key), EXEC. Keys are spelled as keys.hpp spells
// them, built in place without allocating.

#include <chrono>
#include <cstdint>
#include <string_view>
#include <variant>

#include <tradeagg/candle.hpp>
#include <tradeagg/interval.hpp>
#include <tradeagg/redis/config.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/sink_nodes.hpp>
#include <tradeagg/redis/sink_updates.hpp>

namespace tradeagg::redis::detail {

/// What became of a transaction's commands: how many hiredis took, and whether it refused one
/// (after which none is offered to it).
struct issued_commands {
    int issued = 0;
    bool refused = false;
};

/// Builds transactions for keys under one configuration's prefix and retention. I/O thread.
class transaction_writer {
public:
    /// Keeps a reference to `cfg`, which must outlive it.
    explicit transaction_writer(const redis_config& cfg) noexcept : cfg_(cfg) {}

    /// The expiry of a candle key: `candle_retention_intervals` intervals, capped at 2^50 ms.
    [[nodiscard]] std::chrono::milliseconds candle_ttl(const update_key& k) const noexcept {
        return std::chrono::milliseconds(
            static_cast<std::int64_t>(candle_ttl_ms(cfg_.candle_retention_intervals, k.width_ms)));
    }

    /// Offers `t`'s transaction to `issue(args)` one command at a time, through `args`;
    /// `issue` returns false when hiredis refused the command. Returns with nothing issued if
    /// neither ASKING nor MULTI was taken (the connection is going away); otherwise marks each
    /// key's version as sent and each expiry it carries as set at `now`. A refusal after the
    /// first command fails the transaction when what was sent is answered (without EXEC,
    /// Redis applies none of it).
    template <class Issue>
    issued_commands write(command_args& a, token_state& t, bool asking, sink_clock::time_point now,
                          Issue&& issue) const {
        issued_commands r;
        const auto offer = [&]() {
            if (r.refused || !issue(a)) {
                r.refused = true;
                return;
            }
            ++r.issued;
        };
        const auto hset = [&a](std::string_view field, std::string_view text) {
            a.add(field);
            a.add(text);
        };
        if (asking) {
            a.clear();
            a.add("ASKING");
            offer();
        }
        a.clear();
        a.add("MULTI");
        offer();
        if (r.issued == 0) {
            return r;
        }
        for (entry* e : t.keys) {
            const auto* c = std::get_if<candle>(&e->value);
            a.clear();
            a.add("HSET");
            if (c != nullptr) {
                append_candle_key(a, *e->key);
                for_each_field(*c, hset);
            } else {
                append_key(a, *e->key, "rolling:24h");
                for_each_field(std::get<token_value>(e->value).rolling, hset);
            }
            offer();
            if (c == nullptr || expiry_due(*e, *c, now)) {
                a.clear();
                if (c != nullptr) {
                    a.add("PEXPIRE");
                    append_candle_key(a, *e->key);
                    a.add(number_text(static_cast<std::uint64_t>(candle_ttl(*e->key).count()))
                              .view());
                    e->expiry_sent = now;
                } else {
                    a.add("HSET");
                    append_key(a, *e->key, "latest");
                    for_each_field(std::get<token_value>(e->value).latest, hset);
                }
                offer();
            }
            e->sent_version = e->version;
        }
        a.clear();
        a.add("EXEC");
        offer();
        return r;
    }

private:
    void append_key(command_args& a, const update_key& k, std::string_view kind) const {
        a.add(cfg_.key_prefix);
        a.extend(":{");
        a.extend(k.token_view());
        a.extend("}:");
        a.extend(kind);
    }

    /// `<prefix>:{<token>}:candle:<interval>:<open_time>`, as `candle_key` spells it.
    void append_candle_key(command_args& a, const update_key& k) const {
        append_key(a, k, "candle:");
        a.extend(interval_name(interval(k.width_ms)).view());
        a.extend(":");
        a.extend(number_text(k.open_time).view());
    }

    /// Whether a candle write carries PEXPIRE: with the key's first write on this Redis (or
    /// the first since the journal forgot it, or since a failed write), with its closing
    /// write, and at most once per interval in between. A key thus expires between
    /// `candle_retention_intervals` - 1 and `candle_retention_intervals` intervals after its
    /// last write and exactly that many after its closing write, and a key written often costs
    /// one command per write instead of two.
    [[nodiscard]] static bool expiry_due(const entry& e, const candle& c,
                                         sink_clock::time_point now) noexcept {
        return c.closed || e.expiry_sent == sink_clock::time_point{} ||
               now - e.expiry_sent >= std::chrono::milliseconds(e.key->width_ms);
    }

    const redis_config& cfg_;
};

} // namespace tradeagg::redis::detail
