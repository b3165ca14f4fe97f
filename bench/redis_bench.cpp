// tradeagg's Redis benchmark: writing trade aggregates to a real Redis.
//
// The baselines are what one writes without this library: every trade becomes Redis work of
// its own, for each of the seven candles it falls in (1s 1m 5m 15m 1h 4h 1d, the intervals of
// tradeagg::throughput_policy), into hashes
//
//     tradeagg:{<token>}:candle:<interval>:<open_time_ms>
//
// with the fields open high low close volume quote_volume trades taker_buy_volume
// taker_buy_quote_volume vwap open_time close_time first_trade_id last_trade_id. The braces
// are a cluster hash tag: every key of one token lands in the same slot, so one script may
// touch all of them.
//
//   BM_redis_per_trade_lua      one EVALSHA per trade (the script is loaded once with SCRIPT
//                               LOAD); the script updates the seven hashes, reading high and
//                               low to keep them exact.
//   BM_redis_per_trade_hincr    no script: HSETNX, HINCRBYFLOAT, HINCRBY and HSET per trade per
//                               interval (about 49 commands per trade).
//   BM_redis_end_to_end/<policy>  the library's Redis sink behind a pipeline (see below):
//                               trades persisted per second, and the lag to visibility.
//   BM_stream_read_baseline     partition-stream ingest's ceiling: one thread XREADGROUPs,
//                               parses and XACKs 4 partition streams on a Redis Cluster; no
//                               aggregation, no writes.
//   BM_stream_ingest/instances:<n>  1 or 2 stream_consumer<throughput_policy> instances in this
//                               process consume the same 4 streams, aggregate, write every
//                               token's hashes with the fenced script, and acknowledge;
//                               reading 4,096 entries per partition per round (the default),
//                               and, as .../read_count:32768, eight times as many.
//
// Both per-trade baselines pipeline 100 commands deep on one blocking hiredis connection: append
// 100 commands, then read their 100 replies, each checked not to be an error.
//
// The BM_redis_* trades are the stream every benchmark consumes (stream.hpp: 1,048,576 trades,
// 10,000 tokens, Zipf popularity), sent in order from its start. Each iteration runs for a fixed
// wall time (TRADEAGG_REDIS_BENCH_SECONDS, default 2; it also stops at the end of the stream)
// on a database emptied with FLUSHDB first; the time reported is that window, from the first
// command appended to the last reply read (manual time), and the counters trades_per_second
// and commands_per_second are computed over it. Outside the clock, each run reads back the
// seven candles of the last trade's token that hold that trade and checks them against what
// the client sent (trades, open, high, low, close, volume, quote_volume); a mismatch is a
// benchmark error.
//
// The stream benchmarks (section BM_stream_* below) take the first TRADEAGG_STREAM_BENCH_TRADES
// trades of the same stream (default 150,000; at most its 1,048,576) over its 10,000 tokens,
// partitioned among 4 streams as producers do (partition_of), and run once over them per
// iteration: the clock runs from the moment every entry is in its stream until every entry is
// acknowledged (manual time); trades_per_second is computed over it, token_writes_per_second too
// for the consumers. They always use a Redis Cluster of their own, 3 masters on free 127.0.0.1
// ports (tests/redis_cluster.hpp; needs redis-cli), started on first use and stopped at exit,
// whatever REDIS_ADDR says; every master is FLUSHALL'd before each run. Outside the clock, each
// run is checked: every entry read and acknowledged once, and after ingest the cluster holds
// exactly what a memory pipeline given the same trades holds; a difference is a benchmark error.
// The instances, the benchmark's thread and the three redis-servers share the machine's cores:
// on a small machine two instances contend with Redis for CPU rather than adding their own.
//
// Which Redis, for BM_redis_*: REDIS_ADDR (host:port, with REDIS_PASSWORD and REDIS_DB when set, as
// the sink reads them) if set; its database is FLUSHDB'd before every run, so never point it at
// data you want to keep. Otherwise the benchmark starts a redis-server of its own on a free
// 127.0.0.1 port (no persistence, in a temporary directory), on first use, and stops it at exit.
//
// Run: bench/run (prints "Redis" and "Streams" tables after the main one), or
//   tradeagg_redis_bench --benchmark_repetitions=5
//   tradeagg_redis_bench --benchmark_filter=BM_stream --benchmark_repetitions=3
// A quick smoke run:
//   TRADEAGG_REDIS_BENCH_SECONDS=0.2 TRADEAGG_STREAM_BENCH_TRADES=20000 tradeagg_redis_bench

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <sys/time.h>

#include <benchmark/benchmark.h>
#include <hiredis/hiredis.h>

#include <tradeagg/interval.hpp>
#include <tradeagg/pipeline.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/config.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/sink.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/stream_consumer.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/runtime_config.hpp>
#include <tradeagg/sink/memory_sink.hpp>
#include <tradeagg/trade.hpp>

#include "bench_stream.hpp"
#include "redis_cluster.hpp"  // tests/: the 3-master cluster the stream tests use
#include "redis_keyspace.hpp" // tests/: Redis compared with a memory_sink
#include "redis_server.hpp"   // tests/: the fixture the Redis tests use

namespace {

using bench::bench_clock;
using bench::bench_stream;
using bench::bench_stream_config;
using bench::seconds_between;

/// Commands in flight on a baseline's connection.
constexpr std::size_t pipeline_depth = 100;

constexpr std::string_view key_prefix = "tradeagg";

constexpr auto& bench_intervals = tradeagg::throughput_policy::intervals;
constexpr std::size_t interval_count = bench_intervals.size();

/// "1s", "1m", ... "1d", in the order of `bench_intervals`.
const std::array<std::string, interval_count>& interval_names() {
    static const std::array<std::string, interval_count> names = [] {
        std::array<std::string, interval_count> n;
        for (std::size_t i = 0; i < interval_count; ++i) {
            n[i] = std::string(tradeagg::interval_name(bench_intervals[i]).view());
        }
        return n;
    }();
    return names;
}

/// Wall time of one iteration, from TRADEAGG_REDIS_BENCH_SECONDS; set in main.
double run_seconds = 2.0;

/// Benchmarks that reported an error; main's exit status, so a smoke run fails on one.
int failed_benchmarks = 0;

void skip_with_error(benchmark::State& state, const std::string& message) {
    ++failed_benchmarks;
    state.SkipWithError(message.c_str());
}

/// Reads TRADEAGG_REDIS_BENCH_SECONDS: a number of seconds in (0, 3600]. Empty if malformed.
std::optional<double> seconds_from_env() {
    const char* text = std::getenv("TRADEAGG_REDIS_BENCH_SECONDS");
    if (text == nullptr || *text == '\0') {
        return 2.0;
    }
    const std::string_view v(text);
    double value = 0.0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), value);
    if (ec != std::errc{} || end != v.data() + v.size() || !(value > 0.0) || value > 3'600.0) {
        return std::nullopt;
    }
    return value;
}

// ---------------------------------------------------------------------------------------------
// Where the benchmarks write, and a pipelining connection to it.

/// The Redis the benchmarks write to, as the sink reads it from the environment: REDIS_ADDR's
/// server (with REDIS_PASSWORD and REDIS_DB) when the variable is set, otherwise a redis-server
/// of our own, started on the first call (so listing or filtering benchmarks starts nothing)
/// and stopped when the process exits. Throws if REDIS_* is malformed or the server cannot be
/// started.
const tradeagg::redis::redis_config& target() {
    static std::optional<tradeagg::testing::redis_server> own;
    static const tradeagg::redis::redis_config config = [] {
        tradeagg::redis::redis_config c = tradeagg::redis::redis_config_from_env(
            [](const char* name) -> const char* { return std::getenv(name); });
        const char* addr = std::getenv("REDIS_ADDR");
        if (addr == nullptr || *addr == '\0') {
            own.emplace();
            c.host = "127.0.0.1";
            c.port = own->port();
        }
        return c;
    }();
    return config;
}

struct reply_deleter {
    void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

/// A blocking hiredis connection that pipelines: `append` adds a command to hiredis's output
/// buffer and, once `depth` commands are pending, `drain` sends them and reads every reply.
/// Throws std::runtime_error on a connection failure or an error reply.
class pipelined_connection {
public:
    pipelined_connection(const tradeagg::redis::redis_config& cfg, std::size_t depth)
        : depth_(depth) {
        c_ = redisConnectWithTimeout(cfg.host.c_str(), cfg.port, timeval{5, 0});
        if (c_ == nullptr || c_->err != 0) {
            const std::string why = c_ != nullptr ? c_->errstr : "out of memory";
            throw std::runtime_error("cannot connect to " + cfg.host + ":" +
                                     std::to_string(cfg.port) + ": " + why);
        }
        // A server that stops answering fails the run instead of hanging it.
        (void)redisSetTimeout(c_, timeval{30, 0});
        if (!cfg.password.empty()) {
            (void)command({"AUTH", cfg.password});
        }
        if (cfg.db != 0) {
            (void)command({"SELECT", std::to_string(cfg.db)});
        }
    }
    pipelined_connection(const pipelined_connection&) = delete;
    pipelined_connection& operator=(const pipelined_connection&) = delete;
    ~pipelined_connection() { redisFree(c_); }

    /// Queues one command; its arguments may be reused as soon as this returns (hiredis copies
    /// them into its output buffer).
    void append(int argc, const char** argv, const std::size_t* lengths) {
        if (redisAppendCommandArgv(c_, argc, argv, lengths) != REDIS_OK) {
            fail("append");
        }
        ++commands_;
        if (++pending_ == depth_) {
            drain();
        }
    }

    /// Sends what is queued and reads the reply of every pending command.
    void drain() {
        for (; pending_ > 0; --pending_) {
            void* r = nullptr;
            if (redisGetReply(c_, &r) != REDIS_OK || r == nullptr) {
                fail("read a reply");
            }
            const reply_ptr reply(static_cast<redisReply*>(r));
            if (reply->type == REDIS_REPLY_ERROR) {
                throw std::runtime_error("Redis replied " + std::string(reply->str, reply->len));
            }
        }
    }

    /// One command, waited for (setup and checks, outside the clock). Throws on an error reply.
    reply_ptr command(std::initializer_list<std::string_view> args) {
        drain();
        std::vector<const char*> argv;
        std::vector<std::size_t> lengths;
        for (const std::string_view a : args) {
            argv.push_back(a.data());
            lengths.push_back(a.size());
        }
        void* r = redisCommandArgv(c_, static_cast<int>(argv.size()), argv.data(), lengths.data());
        if (r == nullptr) {
            fail(std::string(*args.begin()));
        }
        reply_ptr reply(static_cast<redisReply*>(r));
        if (reply->type == REDIS_REPLY_ERROR) {
            throw std::runtime_error(std::string(*args.begin()) + ": Redis replied " +
                                     std::string(reply->str, reply->len));
        }
        return reply;
    }

    /// Commands appended since construction (the one-off `command`s not counted).
    [[nodiscard]] std::uint64_t commands() const noexcept { return commands_; }

private:
    [[noreturn]] void fail(const std::string& what) const {
        throw std::runtime_error("cannot " + what + ": " + std::string(c_->errstr));
    }

    redisContext* c_ = nullptr;
    std::size_t depth_;
    std::size_t pending_ = 0;
    std::uint64_t commands_ = 0;
};

// ---------------------------------------------------------------------------------------------
// What a per-trade writer sends: numbers as text and the candle keys of one trade.

using tradeagg::redis::number_text;

/// The candle keys of one trade, one per interval, rebuilt in place for each trade (no
/// allocation once their capacity has grown), with the candles' open and close times.
class candle_keys {
public:
    candle_keys() {
        for (std::string& k : keys_) {
            k.reserve(128);
        }
    }

    void build(std::string_view token, tradeagg::timestamp_ms ts) {
        for (std::size_t i = 0; i < interval_count; ++i) {
            const std::int64_t width = bench_intervals[i].count();
            open_times_[i] = tradeagg::bucket_open(ts, width);
            open_text_[i].set(open_times_[i]);
            close_text_[i].set(open_times_[i] + width - 1);
            std::string& k = keys_[i];
            k.assign(key_prefix);
            k += ":{";
            k += token;
            k += "}:candle:";
            k += interval_names()[i];
            k += ':';
            k += open_text_[i].view();
        }
    }

    [[nodiscard]] const std::string& key(std::size_t i) const noexcept { return keys_[i]; }
    [[nodiscard]] tradeagg::timestamp_ms open_time(std::size_t i) const noexcept {
        return open_times_[i];
    }
    [[nodiscard]] const number_text& open_text(std::size_t i) const noexcept {
        return open_text_[i];
    }
    [[nodiscard]] const number_text& close_text(std::size_t i) const noexcept {
        return close_text_[i];
    }

private:
    std::array<std::string, interval_count> keys_;
    std::array<tradeagg::timestamp_ms, interval_count> open_times_{};
    std::array<number_text, interval_count> open_text_;
    std::array<number_text, interval_count> close_text_;
};

/// One trade's fields as text.
struct trade_text {
    number_text price;
    number_text quantity;
    number_text quote; ///< price * quantity
    number_text id;

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
    void add(const number_text& n) noexcept { add(n.view()); }
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
constexpr std::string_view per_trade_script = R"lua(
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
    number_text interval_count_text_;
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
    number_text high_;
    number_text low_;
    command_args<16> args_;
    std::unordered_map<candle_id, extremes, candle_id_hash> extremes_;
};

// ---------------------------------------------------------------------------------------------
// The check after each run: the candles of one token, as the client sent them.

/// What the trades sent for one candle add up to.
struct expected_candle {
    std::uint64_t trades = 0;
    double open = 0.0; ///< first to arrive
    double high = 0.0;
    double low = 0.0;
    double close = 0.0; ///< latest to arrive
    double volume = 0.0;
    double quote_volume = 0.0;
};

bool same_sum(double expected, std::string_view text) {
    const double got = std::strtod(std::string(text).c_str(), nullptr);
    return std::abs(got - expected) <= 1e-9 * std::max(std::abs(expected), 1.0);
}

/// Reads back the candles (every interval) of the last trade sent and compares them with what
/// the first `sent` trades add up to. Empty if they agree, otherwise what differs.
std::string check_candles(pipelined_connection& conn, const synthetic::stream& s,
                          std::size_t sent) {
    if (sent == 0) {
        return "no trade was sent";
    }
    const std::vector<tradeagg::trade>& trades = s.trades();
    const tradeagg::trade& last = trades[sent - 1];
    candle_keys keys;
    keys.build(s.names()[last.token], last.ts_ms);

    std::array<expected_candle, interval_count> want{};
    for (std::size_t k = 0; k < sent; ++k) {
        const tradeagg::trade& t = trades[k];
        if (t.token != last.token) {
            continue;
        }
        for (std::size_t i = 0; i < interval_count; ++i) {
            if (tradeagg::bucket_open(t.ts_ms, bench_intervals[i].count()) != keys.open_time(i)) {
                continue;
            }
            expected_candle& e = want[i];
            if (e.trades++ == 0) {
                e.open = e.high = e.low = t.price;
            }
            e.high = std::max(e.high, t.price);
            e.low = std::min(e.low, t.price);
            e.close = t.price;
            e.volume += t.quantity;
            e.quote_volume += t.price * t.quantity;
        }
    }

    for (std::size_t i = 0; i < interval_count; ++i) {
        const std::string& key = keys.key(i);
        const reply_ptr r = conn.command(
            {"HMGET", key, "trades", "open", "high", "low", "close", "volume", "quote_volume"});
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 7) {
            return key + ": HMGET did not return 7 fields";
        }
        std::array<std::string, 7> got;
        for (std::size_t f = 0; f < got.size(); ++f) {
            if (r->element[f]->type != REDIS_REPLY_STRING) {
                return key + ": a field is missing";
            }
            got[f].assign(r->element[f]->str, r->element[f]->len);
        }
        const expected_candle& e = want[i];
        number_text n;
        n.set(static_cast<std::uint64_t>(e.trades));
        if (got[0] != n.view()) {
            return key + ": trades = " + got[0] + ", but the client sent " + std::string(n.view());
        }
        const std::array<std::pair<const char*, double>, 4> prices{
            {{"open", e.open}, {"high", e.high}, {"low", e.low}, {"close", e.close}}};
        for (std::size_t p = 0; p < prices.size(); ++p) {
            n.set(prices[p].second);
            if (got[1 + p] != n.view()) {
                return key + ": " + prices[p].first + " = " + got[1 + p] + ", expected " +
                       std::string(n.view());
            }
        }
        if (!same_sum(e.volume, got[5]) || !same_sum(e.quote_volume, got[6])) {
            return key + ": volume or quote_volume differs from the client's sum";
        }
    }
    return {};
}

// ---------------------------------------------------------------------------------------------
// The per-trade baselines' loop.

template <class Writer>
void bm_redis_per_trade(benchmark::State& state) {
    const std::string name(Writer::name);
    std::size_t sent = 0;
    std::uint64_t commands = 0;
    double seconds = 0.0;
    try {
        const synthetic::stream& s = bench_stream();
        const std::vector<tradeagg::trade>& trades = s.trades();
        const std::vector<std::string>& names = s.names();
        const tradeagg::redis::redis_config& where = target();
        const auto duration = std::chrono::duration<double>(run_seconds);
        for (auto _ : state) {
            // Outside the clock: an empty database, a fresh connection, the writer's setup.
            pipelined_connection conn(where, pipeline_depth);
            (void)conn.command({"FLUSHDB"});
            Writer writer;
            writer.prepare(conn);

            const auto t0 = bench_clock::now();
            const auto deadline = t0 + std::chrono::duration_cast<bench_clock::duration>(duration);
            sent = 0;
            while (sent < trades.size() && bench_clock::now() < deadline) {
                const tradeagg::trade& t = trades[sent];
                writer.write(conn, t, names[t.token]);
                ++sent;
            }
            conn.drain();
            const auto t1 = bench_clock::now();
            seconds = seconds_between(t0, t1);
            commands = conn.commands();
            state.SetIterationTime(seconds);

            if (const std::string wrong = check_candles(conn, s, sent); !wrong.empty()) {
                skip_with_error(state, name + ": " + wrong);
                break;
            }
        }
    } catch (const std::exception& e) {
        skip_with_error(state, name + ": " + e.what());
        return;
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(sent));
    state.counters["trades_per_second"] = static_cast<double>(sent) / seconds;
    state.counters["commands_per_second"] = static_cast<double>(commands) / seconds;
    state.counters["commands_per_trade"] =
        static_cast<double>(commands) / static_cast<double>(sent);
    state.counters["trades"] = static_cast<double>(sent);
}

// ---------------------------------------------------------------------------------------------
// BM_redis_end_to_end/<policy>: the library's Redis sink behind a pipeline.
//
// One producer pushes the stream's tokens, prices and sizes as fast as the pipeline takes them,
// as a live feed (event time follows the wall clock; see `live_trade`), for `run_seconds`; then the
// pipeline stops (its final flush) and the sink writes what is pending. The clock runs from the
// first push until Redis has acknowledged everything: trades_per_second is trades persisted per
// second, end to end; applied_trades_per_second counts until the pipeline has applied them.
// A probe thread measures the lag from a trade to its effect being visible in Redis: every
// 5 ms it pushes a trade for token PROBE and polls PROBE's latest hash until that trade shows.
// Outside the clock, a pipeline into a memory_sink takes the same trades and Redis is compared
// with it key by key and field by field (every candle, rolling window and latest trade, and no
// other key); a difference is a benchmark error.

/// The n-th trade of the stream repeated without end, at event time `ts`: a live feed, whose
/// event time advances with the wall clock however fast trades come. (Replaying the stream's
/// own times 100x faster than they happened would open 100x more candles per second than a
/// live feed of the same rate, and measure that instead.) Pass k's ids are shifted by k times
/// the stream's length, so ids stay unique.
tradeagg::trade live_trade(const synthetic::stream& s, std::size_t n, tradeagg::timestamp_ms ts) {
    const std::vector<tradeagg::trade>& trades = s.trades();
    tradeagg::trade t = trades[n % trades.size()];
    t.ts_ms = ts;
    t.id += static_cast<std::uint64_t>(n / trades.size()) * trades.size();
    return t;
}

/// Trades are pushed in chunks of this many, all of one chunk at one event time.
constexpr std::size_t push_chunk = 256;

constexpr std::string_view probe_token = "PROBE";

/// Pushes a probe trade every 5 ms and polls Redis every half millisecond for the latest probe
/// trade it shows: a trade's lag is the time until it, or a later probe (whose write replaces
/// it), is visible.
class lag_probe {
public:
    template <class Pipeline>
    lag_probe(Pipeline& p, const tradeagg::redis::redis_config& where,
              const std::atomic<tradeagg::timestamp_ms>& stream_time)
        : thread_([this, &p, where, &stream_time] { run(p, where, stream_time); }) {}
    lag_probe(const lag_probe&) = delete;
    lag_probe& operator=(const lag_probe&) = delete;
    ~lag_probe() { stop(); }

    /// Pushes no more probes; polling goes on, so the lag of those in flight is still seen.
    void stop_pushing() { pushing_ = false; }
    /// Polls until every probe pushed is visible (or `timeout`), then stops. Afterwards
    /// `trades()` and `lags_ms()` are complete.
    void stop(std::chrono::milliseconds timeout = std::chrono::milliseconds(0)) {
        pushing_ = false;
        finish_by_ = bench_clock::now() + timeout;
        finishing_ = true;
        if (thread_.joinable()) {
            thread_.join();
        }
    }
    [[nodiscard]] const std::vector<tradeagg::trade>& trades() const noexcept { return trades_; }
    /// Lags of the probes, from push to seen in Redis.
    [[nodiscard]] const std::vector<double>& lags_ms() const noexcept { return lags_ms_; }
    [[nodiscard]] const std::string& error() const noexcept { return error_; }

private:
    template <class Pipeline>
    void run(Pipeline& p, const tradeagg::redis::redis_config& where,
             const std::atomic<tradeagg::timestamp_ms>& stream_time) {
        try {
            pipelined_connection conn(where, 1);
            auto producer = p.make_producer();
            const tradeagg::token_id token = p.intern(probe_token).id;
            const std::string key = tradeagg::redis::latest_key(key_prefix, probe_token);
            std::vector<bench_clock::time_point> pushed_at;
            std::size_t seen = 0; // probes whose lag is recorded
            auto next_push = bench_clock::now();
            tradeagg::timestamp_ms ts = 0;
            while (!finishing_ ||
                   (seen < pushed_at.size() && bench_clock::now() < finish_by_.load())) {
                const auto now = bench_clock::now();
                if (pushing_ && now >= next_push) {
                    ts = std::max(ts, stream_time.load(std::memory_order_relaxed));
                    const tradeagg::trade t{token, tradeagg::side::buy, 100.0, 1.0,
                                            ts,    trades_.size() + 1};
                    if (producer.push(t) == tradeagg::reject_reason::none) {
                        trades_.push_back(t);
                        pushed_at.push_back(now);
                    } else {
                        pushing_ = false; // the pipeline is stopping
                    }
                    next_push = now + std::chrono::milliseconds(5);
                }
                const reply_ptr r = conn.command({"HGET", key, "trade_id"});
                if (r->type == REDIS_REPLY_STRING) {
                    const auto visible =
                        static_cast<std::size_t>(std::strtoull(r->str, nullptr, 10));
                    const auto at = bench_clock::now();
                    for (; seen < std::min(visible, pushed_at.size()); ++seen) {
                        lags_ms_.push_back(
                            std::chrono::duration<double, std::milli>(at - pushed_at[seen])
                                .count());
                    }
                }
                std::this_thread::sleep_for(std::chrono::microseconds(500));
            }
        } catch (const std::exception& e) {
            error_ = e.what();
        }
    }

    std::atomic<bool> pushing_{true};
    std::atomic<bool> finishing_{false};
    std::atomic<bench_clock::time_point> finish_by_{bench_clock::time_point::max()};
    std::vector<tradeagg::trade> trades_;
    std::vector<double> lags_ms_;
    std::string error_;
    std::thread thread_; // last: starts once the rest is built
};

double percentile(std::vector<double> v, double q) {
    if (v.empty()) {
        return 0.0;
    }
    std::sort(v.begin(), v.end());
    return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1))];
}

/// The same trades through a pipeline into memory, then Redis compared with it.
template <class Policy>
std::string check_against_memory(const synthetic::stream& s,
                                 const std::vector<tradeagg::timestamp_ms>& chunk_times,
                                 const std::vector<tradeagg::trade>& probes,
                                 const tradeagg::redis::redis_config& where) {
    tradeagg::runtime_config rc;
    tradeagg::pipeline<Policy, tradeagg::memory_sink> p{rc};
    p.start();
    std::vector<tradeagg::token_id> ids;
    for (const std::string& n : s.names()) {
        ids.push_back(p.intern(n).id);
    }
    const tradeagg::token_id probe = p.intern(probe_token).id;
    auto producer = p.make_producer();
    for (std::size_t c = 0; c < chunk_times.size(); ++c) {
        for (std::size_t i = 0; i < push_chunk; ++i) {
            tradeagg::trade t = live_trade(s, c * push_chunk + i, chunk_times[c]);
            t.token = ids[t.token];
            (void)producer.push(t);
        }
    }
    for (tradeagg::trade t : probes) {
        t.token = probe;
        (void)producer.push(t);
    }
    p.stop();
    std::size_t keys = 0;
    const tradeagg::testing::mismatch_log log = tradeagg::testing::compare_redis_with(
        where.host, where.port, p.sink(), std::string(key_prefix), Policy::intervals, &keys);
    if (log.count != 0) {
        return std::to_string(log.count) + " differences between Redis and the reference, e.g. " +
               log.first.front();
    }
    return {};
}

template <class Policy>
void bm_redis_end_to_end(benchmark::State& state) {
    const std::string name = "BM_redis_end_to_end";
    std::size_t pushed = 0;
    double persisted_seconds = 0.0;
    double applied_seconds = 0.0;
    tradeagg::redis::sink_stats sink_stats;
    std::vector<double> lags;
    try {
        const synthetic::stream& s = bench_stream();
        tradeagg::redis::redis_config where = target();
        where.key_prefix = std::string(key_prefix);
        const auto duration = std::chrono::duration<double>(run_seconds);
        for (auto _ : state) {
            {
                pipelined_connection conn(where, 1);
                (void)conn.command({"FLUSHDB"});
            }
            tradeagg::redis::redis_sink sink(where);
            tradeagg::runtime_config rc;
            tradeagg::pipeline<Policy, tradeagg::redis::redis_sink&> p{rc, sink};
            std::vector<tradeagg::token_id> ids;
            for (const std::string& n : s.names()) {
                ids.push_back(p.intern(n).id);
            }
            p.start();
            const tradeagg::timestamp_ms start_ms = s.trades().front().ts_ms;
            std::atomic<tradeagg::timestamp_ms> stream_time{start_ms};
            lag_probe probe(p, where, stream_time);
            auto producer = p.make_producer();
            std::array<tradeagg::trade, push_chunk> chunk{};
            std::vector<tradeagg::timestamp_ms> chunk_times;
            const auto t0 = bench_clock::now();
            const auto deadline = t0 + std::chrono::duration_cast<bench_clock::duration>(duration);
            pushed = 0;
            for (auto now = t0; now < deadline; now = bench_clock::now()) {
                const tradeagg::timestamp_ms ts =
                    start_ms +
                    std::chrono::duration_cast<std::chrono::milliseconds>(now - t0).count();
                stream_time.store(ts, std::memory_order_relaxed);
                for (std::size_t i = 0; i < chunk.size(); ++i) {
                    chunk[i] = live_trade(s, pushed + i, ts);
                    chunk[i].token = ids[chunk[i].token];
                }
                const std::size_t n = producer.push(std::span<const tradeagg::trade>(chunk));
                if (n != chunk.size()) {
                    throw std::runtime_error("the pipeline refused a trade");
                }
                pushed += n;
                chunk_times.push_back(ts);
            }
            probe.stop_pushing();
            p.stop();
            const auto t_applied = bench_clock::now();
            const tradeagg::redis::stop_report report = sink.stop(std::chrono::seconds(120));
            const auto t_persisted = bench_clock::now();
            probe.stop(std::chrono::seconds(5)); // every probe is in Redis by now
            applied_seconds = seconds_between(t0, t_applied);
            persisted_seconds = seconds_between(t0, t_persisted);
            state.SetIterationTime(persisted_seconds);
            sink_stats = report.stats;
            lags = probe.lags_ms();
            if (!probe.error().empty()) {
                skip_with_error(state, name + ": probe: " + probe.error());
                break;
            }
            if (!report.complete) {
                skip_with_error(state, name + ": " + std::to_string(report.unwritten) +
                                           " keys not written: " + report.stats.last_error);
                break;
            }
            if (const std::string wrong =
                    check_against_memory<Policy>(s, chunk_times, probe.trades(), where);
                !wrong.empty()) {
                skip_with_error(state, name + ": " + wrong);
                break;
            }
        }
    } catch (const std::exception& e) {
        skip_with_error(state, name + ": " + e.what());
        return;
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(pushed));
    state.counters["trades_per_second"] = static_cast<double>(pushed) / persisted_seconds;
    state.counters["applied_trades_per_second"] = static_cast<double>(pushed) / applied_seconds;
    state.counters["commands_per_second"] =
        static_cast<double>(sink_stats.commands_sent) / persisted_seconds;
    state.counters["commands_per_trade"] =
        static_cast<double>(sink_stats.commands_sent) / static_cast<double>(pushed);
    state.counters["updates_coalesced"] = static_cast<double>(sink_stats.updates_coalesced);
    state.counters["updates_written"] = static_cast<double>(sink_stats.updates_written);
    state.counters["lag_p50_ms"] = percentile(lags, 0.50);
    state.counters["lag_p99_ms"] = percentile(lags, 0.99);
    state.counters["lag_samples"] = static_cast<double>(lags.size());
    state.counters["trades"] = static_cast<double>(pushed);
}

// ---------------------------------------------------------------------------------------------
// BM_stream_read_baseline and BM_stream_ingest/instances:<n>: partition-stream ingest
// (tradeagg/redis/stream_consumer.hpp) on the 3-master cluster of `stream_cluster()`.
//
// Every run starts from a cluster emptied with FLUSHALL on every master. Outside the clock, the
// first `stream_trades` trades of the stream are appended (pipelined XADD through
// `cluster_client`) to one staging stream per partition, `<prefix>:staging:{p<k>}`, whose
// consumer group is created at its start. The staging stream shares its partition's hash tag,
// so one RENAME per partition, all four in one batch, publishes every entry at once onto
// `<prefix>:trades:{p<k>}`: the consumers then find all of them there, instead of following a
// producer's pace.
//
// BM_stream_ingest: the consumers start on empty streams, and the clock starts only once each
// holds its share of the partitions (four for one instance, two each for two). They need a
// balance round for that: an instance that joins finds every lease taken until the first one
// gives up its surplus at its next round (every third of the lease TTL), and a clock running
// through that would time the lease protocol, not ingest. The clock runs from the RENAME batch
// until Redis has acknowledged every entry: the instances' counts of acknowledged entries add
// up to the total, every instance still holds partitions, and XINFO GROUPS confirms it (nothing
// pending, last-delivered id = the last entry's, on every stream).
//
// BM_stream_read_baseline: Redis Streams alone, the ceiling of the above, in the same process:
// one thread reads the published streams (XREADGROUP COUNT 4096 on every partition with entries
// left, one batch, one pipeline per master), parses every entry into a trade as the consumer
// does, and acknowledges them (XACK, 1,000 ids a command, one batch), round after round; no
// lease, no aggregation, no writes. (The consumer reads through a script that checks its lease
// first, and writes and acknowledges once per round as here.)
//
// Checks, outside the clock: after the baseline, every entry was read and acknowledged once;
// after an ingest run, no entry was invalid, both instances stopped cleanly, and the cluster
// holds exactly what a memory pipeline fed the same trades holds (every candle, rolling window
// and latest trade of every token, and no other aggregate key). A difference is a benchmark
// error, and so is a lease lost during a run, seen as soon as it happens: that run would time a
// takeover, not ingest (and see `stream_lease_ttl` for why it might never end).
//
// Counters of BM_stream_ingest, besides trades_per_second: token_writes_per_second (token
// writes acknowledged: one script per token changed in a round, over its latest, rolling and
// candle hashes), rounds, write_retries, entries_replayed (read again by a rebuild: 0 unless a
// read lost its reply), largest_instance_share (the share of the trades in the partitions of
// the busiest instance: two instances can be at most 1 / it times as fast as one) and
// keys_compared (by the check).

using tradeagg::redis::cluster_client;
using tradeagg::redis::cluster_command;
using tradeagg::redis::command_result;

constexpr std::size_t stream_partitions = 4;
constexpr std::string_view stream_group = "tradeagg";
/// The consumer's default. A consumer renews its leases between rounds (and between a
/// rebuild's chunks), not during one: a TTL not much longer than a round (about half a second
/// here with the larger rounds, more on a loaded machine) would lose leases mid-run. A long TTL
/// only delays the split between two instances (by up to two thirds of it), which happens
/// before the clock starts.
constexpr std::chrono::milliseconds stream_lease_ttl{5'000};
/// Entries read per partition per round, by the consumers (STREAM_READ_COUNT's default) and
/// the baseline.
constexpr std::size_t stream_read_count = 4'096;
/// A larger round, run too: a token changed several times in a round is written once, so
/// larger rounds write less per trade (and hold each entry longer before it is acknowledged).
constexpr std::size_t stream_read_count_large = 32'768;

/// "BM_stream_ingest/instances:<n>", and "/read_count:<n>" when not the default.
std::string stream_ingest_name(std::size_t instances, std::size_t read_count) {
    return "BM_stream_ingest/instances:" + std::to_string(instances) +
           (read_count == stream_read_count ? "" : "/read_count:" + std::to_string(read_count));
}
/// Ids per XACK, as the consumer sends them.
constexpr std::size_t stream_ack_chunk = 1'000;
/// XADDs per batch while staging.
constexpr std::size_t stage_batch = 8'192;

/// A few seconds a run: one instance ingests about 22 k trades/s on the 2-core machine this was
/// written on (the baseline reads some 380 k/s).
constexpr std::size_t default_stream_trades = 150'000;

/// Trades per run, from TRADEAGG_STREAM_BENCH_TRADES; set in main.
std::size_t stream_trades = default_stream_trades;

/// Reads TRADEAGG_STREAM_BENCH_TRADES: a count in [1,000, the stream's length]. Empty if
/// malformed.
std::optional<std::size_t> stream_trades_from_env() {
    const char* text = std::getenv("TRADEAGG_STREAM_BENCH_TRADES");
    if (text == nullptr || *text == '\0') {
        return default_stream_trades;
    }
    const std::string_view v(text);
    std::size_t value = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), value);
    if (ec != std::errc{} || end != v.data() + v.size() || value < 1'000 ||
        value > bench_stream_config.trades) {
        return std::nullopt;
    }
    return value;
}

/// The stream benchmarks' cluster: 3 masters on free 127.0.0.1 ports, started on the first call
/// (so listing or filtering benchmarks starts nothing) and stopped when the process exits. Never
/// the Redis at REDIS_ADDR: every run empties every master. Throws if it cannot be started.
tradeagg::testing::redis_cluster& stream_cluster() {
    static tradeagg::testing::redis_cluster cluster(3);
    return cluster;
}

cluster_client::options stream_client_options() {
    tradeagg::testing::redis_cluster& cluster = stream_cluster();
    cluster_client::options o;
    for (std::size_t i = 0; i < cluster.size(); ++i) {
        o.seeds.push_back({"127.0.0.1", cluster.node(i).port(), {}});
    }
    o.timeout = std::chrono::seconds(10);
    return o;
}

/// Runs `cmds`; throws std::runtime_error naming the first command that failed.
void run_checked(cluster_client& client, std::span<const cluster_command> cmds,
                 std::vector<command_result>& results) {
    client.run(cmds, results);
    for (std::size_t i = 0; i < cmds.size(); ++i) {
        if (!results[i].ok()) {
            const std::vector<std::string>& a = cmds[i].args;
            throw std::runtime_error(a[0] + (a.size() > 1 ? " " + a[1] : std::string()) + ": " +
                                     results[i].error);
        }
    }
}

/// Empties every master: the previous run's streams, leases, epochs, instances and aggregates.
void empty_cluster() {
    tradeagg::testing::redis_cluster& cluster = stream_cluster();
    for (std::size_t i = 0; i < cluster.size(); ++i) {
        if (const std::string r = cluster.node(i).command({"FLUSHALL"}); r != "OK") {
            throw std::runtime_error("FLUSHALL on node " + std::to_string(i) + ": " + r);
        }
    }
}

std::string staging_key(std::size_t partition) {
    return tradeagg::redis::partition_key(key_prefix, "staging", partition);
}

/// A run's trades in the staging streams, not yet published.
struct staged_trades {
    std::size_t total = 0;
    std::array<std::size_t, stream_partitions> entries{}; ///< per partition
    /// The id of each partition's last entry ("0-0" if it has none), as XADD returned it.
    std::array<std::string, stream_partitions> last_id;

    /// The share of the trades in the partitions listed in `held` (as stream_consumer_stats
    /// spells them: "0,2").
    [[nodiscard]] double share_of(std::string_view held) const {
        std::size_t sum = 0;
        while (!held.empty()) {
            const std::size_t comma = std::min(held.find(','), held.size());
            std::size_t k = 0;
            const auto [end, ec] = std::from_chars(held.data(), held.data() + comma, k);
            if (ec == std::errc{} && end == held.data() + comma && k < stream_partitions) {
                sum += entries[k];
            }
            held.remove_prefix(std::min(comma + 1, held.size()));
        }
        return static_cast<double>(sum) / static_cast<double>(total);
    }
};

/// Appends the first `count` trades of `s` to the staging streams of their partitions, in
/// order, and creates the consumer group at the start of each. Throws on any failure.
staged_trades stage(cluster_client& client, const synthetic::stream& s, std::size_t count) {
    staged_trades out;
    out.total = count;
    out.last_id.fill("0-0");
    std::array<std::string, stream_partitions> keys;
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        keys[k] = staging_key(k);
    }
    std::vector<cluster_command> batch;
    std::vector<std::size_t> partition; // of each command of the batch
    std::vector<command_result> results;
    const auto send = [&] {
        run_checked(client, batch, results);
        for (std::size_t i = 0; i < batch.size(); ++i) {
            const redisReply* r = results[i].reply.get();
            if (r->type != REDIS_REPLY_STRING) {
                throw std::runtime_error("XADD " + batch[i].args[1] + ": not an entry id");
            }
            // Replies come in order per node, so the last one is the partition's last entry.
            out.last_id[partition[i]].assign(r->str, r->len);
        }
        batch.clear();
        partition.clear();
    };
    const std::vector<tradeagg::trade>& trades = s.trades();
    for (std::size_t n = 0; n < count; ++n) {
        const tradeagg::trade& t = trades[n];
        const tradeagg::trade_view v{
            s.names()[t.token], t.price, t.quantity, t.taker, t.ts_ms, t.id};
        const std::size_t k = tradeagg::redis::partition_of(v.token, stream_partitions);
        cluster_command c{{"XADD", keys[k], "*"}, tradeagg::redis::key_slot(keys[k])};
        tradeagg::redis::for_each_field(v, [&c](std::string_view field, std::string_view text) {
            c.args.emplace_back(field);
            c.args.emplace_back(text);
        });
        batch.push_back(std::move(c));
        partition.push_back(k);
        ++out.entries[k];
        if (batch.size() == stage_batch) {
            send();
        }
    }
    send();
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        batch.push_back({{"XGROUP", "CREATE", keys[k], std::string(stream_group), "0", "MKSTREAM"},
                         tradeagg::redis::key_slot(keys[k])});
    }
    run_checked(client, batch, results);
    return out;
}

/// Moves every staging stream, with its group, onto its partition's stream (replacing the empty
/// one a consumer may have created): one RENAME per partition, in one batch.
void publish(cluster_client& client) {
    std::vector<cluster_command> renames;
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        const std::string to = tradeagg::redis::stream_key(key_prefix, k);
        renames.push_back({{"RENAME", staging_key(k), to}, tradeagg::redis::key_slot(to)});
    }
    std::vector<command_result> results;
    run_checked(client, renames, results);
}

/// The value of `name` in a reply that is a flat list of field, value; null if absent.
const redisReply* field_of(const redisReply* fields, std::string_view name) {
    if (fields == nullptr || fields->type != REDIS_REPLY_ARRAY) {
        return nullptr;
    }
    for (std::size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply* f = fields->element[i];
        if (f->type == REDIS_REPLY_STRING && std::string_view(f->str, f->len) == name) {
            return fields->element[i + 1];
        }
    }
    return nullptr;
}

/// Empty if, on every partition's stream, the group has delivered the last entry and has
/// nothing pending; otherwise the first partition that has not, and how far it is.
std::string unacknowledged(cluster_client& client, const staged_trades& staged) {
    std::vector<cluster_command> cmds;
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        const std::string key = tradeagg::redis::stream_key(key_prefix, k);
        cmds.push_back({{"XINFO", "GROUPS", key}, tradeagg::redis::key_slot(key)});
    }
    std::vector<command_result> results;
    run_checked(client, cmds, results);
    for (std::size_t k = 0; k < stream_partitions; ++k) {
        const redisReply* groups = results[k].reply.get();
        const redisReply* group = nullptr;
        for (std::size_t g = 0; groups->type == REDIS_REPLY_ARRAY && g < groups->elements; ++g) {
            const redisReply* n = field_of(groups->element[g], "name");
            if (n != nullptr && n->type == REDIS_REPLY_STRING &&
                std::string_view(n->str, n->len) == stream_group) {
                group = groups->element[g];
            }
        }
        const redisReply* pending = field_of(group, "pending");
        const redisReply* last = field_of(group, "last-delivered-id");
        if (pending == nullptr || pending->type != REDIS_REPLY_INTEGER || last == nullptr ||
            last->type != REDIS_REPLY_STRING) {
            return "partition " + std::to_string(k) + ": no group " + std::string(stream_group);
        }
        const std::string_view delivered(last->str, last->len);
        if (pending->integer != 0 || delivered != staged.last_id[k]) {
            return "partition " + std::to_string(k) + ": " + std::to_string(pending->integer) +
                   " pending, delivered up to " + std::string(delivered) + " of " +
                   staged.last_id[k];
        }
    }
    return {};
}

void bm_stream_read_baseline(benchmark::State& state) {
    const std::string name = "BM_stream_read_baseline";
    std::size_t total = 0;
    std::uint64_t read_commands = 0;
    double seconds = 0.0;
    try {
        const synthetic::stream& s = bench_stream();
        std::array<std::string, stream_partitions> keys;
        for (std::size_t k = 0; k < stream_partitions; ++k) {
            keys[k] = tradeagg::redis::stream_key(key_prefix, k);
        }
        const std::string count_text = std::to_string(stream_read_count);
        for (auto _ : state) {
            // Outside the clock: an empty cluster, the trades staged and published.
            empty_cluster();
            cluster_client client(stream_client_options());
            const staged_trades staged = stage(client, s, stream_trades);
            publish(client);
            total = staged.total;

            std::array<std::size_t, stream_partitions> read{};
            std::size_t read_total = 0;
            std::size_t acked = 0;
            double price_sum = 0.0; // keeps the parsing from being optimized away
            std::vector<cluster_command> reads;
            std::vector<std::size_t> partition; // of each read
            std::vector<cluster_command> acks;
            std::vector<command_result> read_replies;
            std::vector<command_result> ack_replies;
            read_commands = 0;
            const auto t0 = bench_clock::now();
            while (read_total < total) {
                reads.clear();
                partition.clear();
                for (std::size_t k = 0; k < stream_partitions; ++k) {
                    if (read[k] < staged.entries[k]) {
                        reads.push_back({{"XREADGROUP", "GROUP", std::string(stream_group),
                                          "baseline", "COUNT", count_text, "STREAMS", keys[k], ">"},
                                         tradeagg::redis::key_slot(keys[k])});
                        partition.push_back(k);
                    }
                }
                run_checked(client, reads, read_replies);
                read_commands += reads.size();
                acks.clear();
                for (std::size_t i = 0; i < reads.size(); ++i) {
                    const std::size_t k = partition[i];
                    // [[key, [[id, [field, value, ...]], ...]]]; nil when nothing is new.
                    const redisReply* r = read_replies[i].reply.get();
                    const redisReply* list = r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
                                                     r->element[0]->type == REDIS_REPLY_ARRAY &&
                                                     r->element[0]->elements == 2
                                                 ? r->element[0]->element[1]
                                                 : nullptr;
                    if (list == nullptr || list->type != REDIS_REPLY_ARRAY || list->elements == 0) {
                        throw std::runtime_error(keys[k] + ": nothing to read after " +
                                                 std::to_string(read[k]) + " of " +
                                                 std::to_string(staged.entries[k]) + " entries");
                    }
                    cluster_command ack{{"XACK", keys[k], std::string(stream_group)},
                                        tradeagg::redis::key_slot(keys[k])};
                    for (std::size_t e = 0; e < list->elements; ++e) {
                        const redisReply* entry = list->element[e];
                        if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
                            entry->element[0]->type != REDIS_REPLY_STRING) {
                            throw std::runtime_error(keys[k] + ": an entry is not [id, fields]");
                        }
                        const std::string_view id(entry->element[0]->str, entry->element[0]->len);
                        std::string_view why;
                        const std::optional<tradeagg::trade_view> t =
                            tradeagg::redis::trade_from_entry(
                                tradeagg::redis::entry_fields(entry->element[1]), why);
                        if (!tradeagg::redis::stream_id::parse(id) || !t) {
                            throw std::runtime_error(keys[k] + " entry " + std::string(id) +
                                                     ": invalid " + std::string(why));
                        }
                        price_sum += t->price;
                        ack.args.emplace_back(id);
                        if (ack.args.size() == 3 + stream_ack_chunk) {
                            acks.push_back(std::move(ack));
                            ack = cluster_command{{"XACK", keys[k], std::string(stream_group)},
                                                  tradeagg::redis::key_slot(keys[k])};
                        }
                    }
                    if (ack.args.size() > 3) {
                        acks.push_back(std::move(ack));
                    }
                    read[k] += list->elements;
                    read_total += list->elements;
                }
                run_checked(client, acks, ack_replies);
                for (const command_result& r : ack_replies) {
                    acked += static_cast<std::size_t>(r.reply->integer);
                }
            }
            const auto t1 = bench_clock::now();
            benchmark::DoNotOptimize(price_sum);
            seconds = seconds_between(t0, t1);
            state.SetIterationTime(seconds);

            if (read_total != total || acked != total) {
                skip_with_error(state, name + ": read " + std::to_string(read_total) +
                                           " and acknowledged " + std::to_string(acked) +
                                           " entries of " + std::to_string(total));
                break;
            }
            if (const std::string left = unacknowledged(client, staged); !left.empty()) {
                skip_with_error(state, name + ": " + left);
                break;
            }
        }
    } catch (const std::exception& e) {
        skip_with_error(state, name + ": " + e.what());
        return;
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(total));
    state.counters["trades_per_second"] = static_cast<double>(total) / seconds;
    state.counters["read_commands"] = static_cast<double>(read_commands);
    state.counters["trades"] = static_cast<double>(total);
}

using bench_consumer = tradeagg::redis::stream_consumer<tradeagg::throughput_policy>;

/// Waits until each consumer holds an equal share of the partitions. Throws after `timeout`,
/// naming what each holds.
void wait_for_shares(const std::vector<std::unique_ptr<bench_consumer>>& consumers,
                     std::chrono::seconds timeout) {
    const std::size_t share = stream_partitions / consumers.size();
    const auto deadline = bench_clock::now() + timeout;
    for (;;) {
        std::string held;
        bool settled = true;
        for (const auto& c : consumers) {
            const tradeagg::redis::stream_consumer_stats st = c->stats();
            settled = settled && st.partitions_held == share;
            held += (held.empty() ? "" : "; ") + ("[" + st.held + "]") +
                    (st.last_error.empty() ? "" : " " + st.last_error);
        }
        if (settled) {
            return;
        }
        if (bench_clock::now() > deadline) {
            throw std::runtime_error("the instances did not settle on " + std::to_string(share) +
                                     " partitions each: they hold " + held);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

/// The first `count` trades of `s` through a memory pipeline, and the cluster compared with it.
/// Empty if they agree, otherwise what differs; `keys` is set to the keys compared.
std::string check_cluster(const synthetic::stream& s, std::size_t count, std::size_t& keys) {
    tradeagg::pipeline<tradeagg::throughput_policy, tradeagg::memory_sink> ref{
        tradeagg::runtime_config{}};
    const std::vector<tradeagg::trade>& trades = s.intern_into(ref);
    ref.start();
    {
        auto producer = ref.make_producer();
        for (std::size_t n = 0; n < count; ++n) {
            (void)producer.push(trades[n]);
        }
    }
    ref.stop();
    const tradeagg::testing::mismatch_log log = tradeagg::testing::compare_cluster_with(
        stream_cluster().node(0).port(), ref.sink(), std::string(key_prefix),
        tradeagg::throughput_policy::intervals, &keys);
    if (log.count != 0) {
        return std::to_string(log.count) + " differences between the cluster and the reference, " +
               "e.g. " + log.first.front();
    }
    return {};
}

void bm_stream_ingest(benchmark::State& state, std::size_t instances, std::size_t read_count) {
    const std::string name = stream_ingest_name(instances, read_count);
    std::size_t total = 0;
    double seconds = 0.0;
    double busiest_share = 0.0;                 // of the trades, read by the busiest instance
    tradeagg::redis::stream_consumer_stats sum; // over the instances, when the clock stopped
    std::size_t keys = 0;
    try {
        const synthetic::stream& s = bench_stream();
        const tradeagg::resolved_config<tradeagg::throughput_policy> resolved =
            tradeagg::resolve<tradeagg::throughput_policy>(tradeagg::runtime_config{});
        for (auto _ : state) {
            // Outside the clock: an empty cluster, the trades staged, the instances started and
            // settled on their shares of the (still empty) partition streams.
            empty_cluster();
            cluster_client client(stream_client_options());
            const staged_trades staged = stage(client, s, stream_trades);
            total = staged.total;
            std::vector<std::unique_ptr<bench_consumer>> consumers;
            for (std::size_t i = 0; i < instances; ++i) {
                tradeagg::redis::stream_consumer_config cfg;
                cfg.key_prefix = std::string(key_prefix);
                cfg.partitions = stream_partitions;
                cfg.instance = "bench-" + std::to_string(i);
                cfg.group = std::string(stream_group);
                cfg.lease_ttl = stream_lease_ttl;
                cfg.read_count = read_count;
                cfg.redis = stream_client_options();
                consumers.push_back(std::make_unique<bench_consumer>(std::move(cfg), resolved));
            }
            for (const auto& c : consumers) {
                c->start();
            }
            wait_for_shares(consumers, std::chrono::seconds(30));
            busiest_share = 0.0;
            for (const auto& c : consumers) {
                busiest_share = std::max(busiest_share, staged.share_of(c->stats().held));
            }

            const auto t0 = bench_clock::now();
            publish(client);
            // Polls the instances' counts (cheap: a mutex each) and asks Redis only once they
            // add up, so the polling itself takes next to nothing from the run.
            const auto deadline = t0 + std::chrono::minutes(10);
            for (;;) {
                std::size_t acked = 0;
                bool all_hold = true;
                for (const auto& c : consumers) {
                    const tradeagg::redis::stream_consumer_stats st = c->stats();
                    if (st.lost != 0) {
                        throw std::runtime_error("an instance lost a lease during the run: " +
                                                 st.last_error);
                    }
                    acked += st.entries_acked;
                    all_hold = all_hold && st.partitions_held > 0;
                }
                if (acked >= total && all_hold && unacknowledged(client, staged).empty()) {
                    break;
                }
                if (bench_clock::now() > deadline) {
                    throw std::runtime_error("not every entry acknowledged within 10 minutes: " +
                                             unacknowledged(client, staged));
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
            const auto t1 = bench_clock::now();
            seconds = seconds_between(t0, t1);
            state.SetIterationTime(seconds);

            sum = {};
            for (const auto& c : consumers) {
                const tradeagg::redis::stream_consumer_stats st = c->stats();
                sum.rounds += st.rounds;
                sum.entries_replayed += st.entries_replayed;
                sum.entries_invalid += st.entries_invalid;
                sum.token_writes += st.token_writes;
                sum.write_retries += st.write_retries;
                if (!st.last_error.empty()) {
                    sum.last_error = st.last_error;
                }
            }
            bool clean = true;
            for (const auto& c : consumers) {
                clean = c->stop(std::chrono::seconds(10)) && clean;
            }
            if (!clean || sum.entries_invalid != 0) {
                skip_with_error(state, name + ": " + std::to_string(sum.entries_invalid) +
                                           " invalid entries, or writes left at stop; " +
                                           sum.last_error);
                break;
            }
            if (const std::string wrong = check_cluster(s, total, keys); !wrong.empty()) {
                skip_with_error(state, name + ": " + wrong);
                break;
            }
        }
    } catch (const std::exception& e) {
        skip_with_error(state, name + ": " + e.what());
        return;
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(total));
    state.counters["trades_per_second"] = static_cast<double>(total) / seconds;
    state.counters["token_writes_per_second"] = static_cast<double>(sum.token_writes) / seconds;
    state.counters["token_writes"] = static_cast<double>(sum.token_writes);
    state.counters["rounds"] = static_cast<double>(sum.rounds);
    state.counters["write_retries"] = static_cast<double>(sum.write_retries);
    state.counters["entries_replayed"] = static_cast<double>(sum.entries_replayed);
    state.counters["largest_instance_share"] = busiest_share;
    state.counters["keys_compared"] = static_cast<double>(keys);
    state.counters["trades"] = static_cast<double>(total);
}

/// One iteration is one run (`run_seconds` of writing, or one pass over the streams);
/// repetitions come from the command line.
void configure(benchmark::internal::Benchmark* b) {
    b->UseManualTime()->Iterations(1)->Unit(benchmark::kMillisecond);
}

} // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
        return 1;
    }
    const std::optional<double> seconds = seconds_from_env();
    if (!seconds) {
        std::fprintf(stderr, "tradeagg_redis_bench: TRADEAGG_REDIS_BENCH_SECONDS must be a "
                             "number of seconds in (0, 3600], e.g. 2 or 0.2\n");
        return 2;
    }
    run_seconds = *seconds;
    const std::optional<std::size_t> trades = stream_trades_from_env();
    if (!trades) {
        std::fprintf(stderr,
                     "tradeagg_redis_bench: TRADEAGG_STREAM_BENCH_TRADES must be a number of "
                     "trades in [1000, %zu], e.g. 150000\n",
                     bench_stream_config.trades);
        return 2;
    }
    stream_trades = *trades;
    const char* addr = std::getenv("REDIS_ADDR");
    benchmark::AddCustomContext("redis", addr != nullptr && *addr != '\0'
                                             ? std::string("REDIS_ADDR=") + addr
                                             : std::string("own redis-server on 127.0.0.1"));
    number_text seconds_text;
    seconds_text.set(run_seconds);
    benchmark::AddCustomContext("run_seconds", std::string(seconds_text.view()));
    benchmark::AddCustomContext("pipeline_depth", std::to_string(pipeline_depth));
    benchmark::AddCustomContext("stream_trades", std::to_string(bench_stream_config.trades));
    benchmark::AddCustomContext("stream_tokens", std::to_string(bench_stream_config.tokens));
    benchmark::AddCustomContext("stream_zipf_s", "1.0");
    benchmark::AddCustomContext("streams_cluster", "own 3 masters on 127.0.0.1");
    benchmark::AddCustomContext("streams_partitions", std::to_string(stream_partitions));
    benchmark::AddCustomContext("streams_trades", std::to_string(stream_trades));
    benchmark::AddCustomContext("streams_read_count", std::to_string(stream_read_count));
    benchmark::AddCustomContext("streams_lease_ttl_ms", std::to_string(stream_lease_ttl.count()));

    configure(
        benchmark::RegisterBenchmark("BM_redis_per_trade_lua", bm_redis_per_trade<lua_writer>));
    configure(
        benchmark::RegisterBenchmark("BM_redis_per_trade_hincr", bm_redis_per_trade<hincr_writer>));
    configure(benchmark::RegisterBenchmark("BM_redis_end_to_end/throughput_policy",
                                           bm_redis_end_to_end<tradeagg::throughput_policy>));
    configure(benchmark::RegisterBenchmark("BM_redis_end_to_end/latency_policy",
                                           bm_redis_end_to_end<tradeagg::latency_policy>));
    configure(
        benchmark::RegisterBenchmark("BM_redis_end_to_end/memory_constrained_policy",
                                     bm_redis_end_to_end<tradeagg::memory_constrained_policy>));
    configure(benchmark::RegisterBenchmark("BM_stream_read_baseline", bm_stream_read_baseline));
    for (const std::size_t read_count : {stream_read_count, stream_read_count_large}) {
        for (const std::size_t instances : {std::size_t{1}, std::size_t{2}}) {
            configure(
                benchmark::RegisterBenchmark(stream_ingest_name(instances, read_count).c_str(),
                                             bm_stream_ingest, instances, read_count));
        }
    }

    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    if (failed_benchmarks != 0) {
        std::fprintf(stderr, "tradeagg_redis_bench: %d benchmark run(s) reported an error\n",
                     failed_benchmarks);
        return 1;
    }
    return 0;
}
