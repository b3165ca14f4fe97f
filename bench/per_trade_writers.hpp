#pragma once
// What the per-trade baselines send for each trade: lua_writer (BM_redis_per_trade_lua, one
// EVALSHA) and hincr_writer (BM_redis_per_trade_hincr, plain hash commands), each with a
// `prepare` run outside the clock and a `write` per trade.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>

#include <hiredis/hiredis.h>

#include <tradeagg/redis/keys.hpp>
#include <tradeagg/trade.hpp>

#include "candle_keys.hpp"
#include "pipelined_connection.hpp"

namespace bench {

/// One trade's fields as text.
struct trade_text {
    tradeagg::redis::number_text price;
    tradeagg::redis::number_text quantity;
    tradeagg::redis::number_text quote; ///< price * quantity
    tradeagg::redis::number_text id;

    void set(const tradeagg::trade& t) noexcept {
        price.set(t.price);
        quantity.set(t.quantity);
        quote.set(t.price * t.quantity);
        id.set(t.id);
    }
};

/// Collects one command's arguments without allocating.
template <std::size_t N>
class command_args {
public:
    void clear() noexcept { count_ = 0; }
    void add(std::string_view a) noexcept {
        argv_[count_] = a.data();
        lengths_[count_] = a.size();
        ++count_;
    }
    void add(const tradeagg::redis::number_text& n) noexcept { add(n.view()); }
    void send(pipelined_connection& conn) {
        conn.append(static_cast<int>(count_), argv_.data(), lengths_.data());
    }

private:
    std::array<const char*, N> argv_{};
    std::array<std::size_t, N> lengths_{};
    std::size_t count_ = 0;
};

// ---------------------------------------------------------------------------------------------
// BM_redis_per_trade_lua: one EVALSHA per trade.

// KEYS: the trade's candle hashes, one per interval. ARGV: price, quantity, quote (price *
// quantity), taker buy (1 or 0), trade id, then for KEYS[i] its open time ARGV[4 + 2i] and close
// time ARGV[5 + 2i]. Prices and volumes arrive as shortest round-trip text, so storing ARGV[1]
// keeps the client's double exactly; the comparisons read high and low back with tonumber. A
// hash without `high` is a new candle: that is when open, open_time, close_time and
// first_trade_id are written (open only if absent). close and last_trade_id follow the latest
// trade to arrive.
inline constexpr std::string_view per_trade_script = R"lua(
local price = tonumber(ARGV[1])
local buy = ARGV[4] == '1'
for i, key in ipairs(KEYS) do
  local hl = redis.call('HMGET', key, 'high', 'low')
  if not hl[1] then
    redis.call('HSET', key, 'open', ARGV[1], 'high', ARGV[1], 'low', ARGV[1],
               'open_time', ARGV[4 + 2 * i], 'close_time', ARGV[5 + 2 * i],
               'first_trade_id', ARGV[5])
  else
    if price > tonumber(hl[1]) then redis.call('HSET', key, 'high', ARGV[1]) end
    if price < tonumber(hl[2]) then redis.call('HSET', key, 'low', ARGV[1]) end
  end
  local volume = tonumber(redis.call('HINCRBYFLOAT', key, 'volume', ARGV[2]))
  local quote = tonumber(redis.call('HINCRBYFLOAT', key, 'quote_volume', ARGV[3]))
  if buy then
    redis.call('HINCRBYFLOAT', key, 'taker_buy_volume', ARGV[2])
    redis.call('HINCRBYFLOAT', key, 'taker_buy_quote_volume', ARGV[3])
  end
  redis.call('HINCRBY', key, 'trades', 1)
  redis.call('HSET', key, 'close', ARGV[1], 'last_trade_id', ARGV[5],
             'vwap', string.format('%.17g', quote / volume))
end
return #KEYS
)lua";

class lua_writer {
public:
    static constexpr std::string_view name = "BM_redis_per_trade_lua";

    /// Outside the clock: loads the script.
    void prepare(pipelined_connection& conn) {
        const reply_ptr r = conn.command({"SCRIPT", "LOAD", per_trade_script});
        if (r->type != REDIS_REPLY_STRING) {
            throw std::runtime_error("SCRIPT LOAD did not return a digest");
        }
        sha_.assign(r->str, r->len);
        interval_count_text_.set(static_cast<std::uint64_t>(interval_count));
    }

    void write(pipelined_connection& conn, const tradeagg::trade& t, std::string_view token) {
        keys_.build(token, t.ts_ms);
        text_.set(t);
        args_.clear();
        args_.add("EVALSHA");
        args_.add(sha_);
        args_.add(interval_count_text_);
        for (std::size_t i = 0; i < interval_count; ++i) {
            args_.add(keys_.key(i));
        }
        args_.add(text_.price);
        args_.add(text_.quantity);
        args_.add(text_.quote);
        args_.add(t.taker == tradeagg::side::buy ? "1" : "0");
        args_.add(text_.id);
        for (std::size_t i = 0; i < interval_count; ++i) {
            args_.add(keys_.open_text(i));
            args_.add(keys_.close_text(i));
        }
        args_.send(conn);
    }

private:
    std::string sha_;
    tradeagg::redis::number_text interval_count_text_;
    candle_keys keys_;
    trade_text text_;
    command_args<3 + interval_count + 5 + 2 * interval_count> args_;
};

// ---------------------------------------------------------------------------------------------
// BM_redis_per_trade_hincr: plain hash commands per trade per interval, no script.
//
// Sums are exact this way (HINCRBYFLOAT, HINCRBY) and open and first_trade_id are set only if
// absent (HSETNX), but high and low cannot be: Redis has no compare-and-set on a hash field, so
// a max or min needs a read (a round trip, or a script). Here the client keeps each candle's
// running high and low in memory and writes them with HSET, which is right only while one
// client writes each token. vwap is not stored: it needs the sums too, and a client that kept
// those would have no reason to increment them in Redis; a reader divides quote_volume by
// volume. close and last_trade_id follow the latest trade to arrive.

class hincr_writer {
public:
    static constexpr std::string_view name = "BM_redis_per_trade_hincr";

    /// Outside the clock: forgets the previous run's candles.
    void prepare(pipelined_connection&) { extremes_.clear(); }

    void write(pipelined_connection& conn, const tradeagg::trade& t, std::string_view token) {
        keys_.build(token, t.ts_ms);
        text_.set(t);
        const bool buy = t.taker == tradeagg::side::buy;
        for (std::size_t i = 0; i < interval_count; ++i) {
            const std::string& key = keys_.key(i);
            const auto [it, inserted] =
                extremes_.try_emplace(candle_id{t.token, i, keys_.open_time(i)}, t.price, t.price);
            if (!inserted) {
                it->second.high = std::max(it->second.high, t.price);
                it->second.low = std::min(it->second.low, t.price);
            }
            high_.set(it->second.high);
            low_.set(it->second.low);

            send(conn, {"HSETNX", key, "open", text_.price.view()});
            send(conn, {"HSETNX", key, "first_trade_id", text_.id.view()});
            send(conn, {"HINCRBYFLOAT", key, "volume", text_.quantity.view()});
            send(conn, {"HINCRBYFLOAT", key, "quote_volume", text_.quote.view()});
            if (buy) {
                send(conn, {"HINCRBYFLOAT", key, "taker_buy_volume", text_.quantity.view()});
                send(conn, {"HINCRBYFLOAT", key, "taker_buy_quote_volume", text_.quote.view()});
            }
            send(conn, {"HINCRBY", key, "trades", "1"});
            send(conn, {"HSET", key, "close", text_.price.view(), "last_trade_id", text_.id.view(),
                        "high", high_.view(), "low", low_.view(), "open_time",
                        keys_.open_text(i).view(), "close_time", keys_.close_text(i).view()});
        }
    }

private:
    struct candle_id {
        tradeagg::token_id token;
        std::size_t interval;
        tradeagg::timestamp_ms open_time;
        bool operator==(const candle_id&) const = default;
    };
    struct candle_id_hash {
        std::size_t operator()(const candle_id& c) const noexcept {
            const auto h = (static_cast<std::uint64_t>(c.open_time) * 0x9E37'79B9'7F4A'7C15ULL) ^
                           (static_cast<std::uint64_t>(c.token) << 3) ^ c.interval;
            return static_cast<std::size_t>(h ^ (h >> 29));
        }
    };
    struct extremes {
        double high;
        double low;
    };

    void send(pipelined_connection& conn, std::initializer_list<std::string_view> args) {
        args_.clear();
        for (const std::string_view a : args) {
            args_.add(a);
        }
        args_.send(conn);
    }

    candle_keys keys_;
    trade_text text_;
    tradeagg::redis::number_text high_;
    tradeagg::redis::number_text low_;
    command_args<16> args_;
    std::unordered_map<candle_id, extremes, candle_id_hash> extremes_;
};

} // namespace bench
