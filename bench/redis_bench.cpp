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
//
// Both baselines pipeline 100 commands deep on one blocking hiredis connection: append 100
// commands, then read their 100 replies, each checked not to be an error.
//
// The trades are the stream every benchmark consumes (stream.hpp: 1,048,576 trades, 10,000
// tokens, Zipf popularity), sent in order from its start. Each iteration runs for a fixed
// wall time (TRADEAGG_REDIS_BENCH_SECONDS, default 2; it also stops at the end of the stream)
// on a database emptied with FLUSHDB first; the time reported is that window, from the first
// command appended to the last reply read (manual time), and the counters trades_per_second
// and commands_per_second are computed over it. Outside the clock, each run reads back the
// seven candles of the last trade's token that hold that trade and checks them against what
// the client sent (trades, open, high, low, close, volume, quote_volume); a mismatch is a
// benchmark error.
//
// Which Redis: REDIS_ADDR (host:port, with REDIS_PASSWORD and REDIS_DB when set, as the sink
// reads them) if set; its database is FLUSHDB'd before every run, so never point it at data you
// want to keep. Otherwise the benchmark starts a redis-server of its own on a free 127.0.0.1
// port (no persistence, in a temporary directory), on first use, and stops it at exit.
//
// Run: bench/run (prints a "Redis" table after the main one), or
//   tradeagg_redis_bench --benchmark_repetitions=5
// A quick smoke run: TRADEAGG_REDIS_BENCH_SECONDS=0.2 tradeagg_redis_bench

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
#include <tradeagg/sink/memory_sink.hpp>
#include <tradeagg/sink/redis_config.hpp>
#include <tradeagg/sink/redis_keys.hpp>
#include <tradeagg/sink/redis_sink.hpp>
#include <tradeagg/trade.hpp>

#include "bench_stream.hpp"
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

/// One iteration is `run_seconds` of writing; repetitions come from the command line.
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

    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    if (failed_benchmarks != 0) {
        std::fprintf(stderr, "tradeagg_redis_bench: %d benchmark run(s) reported an error\n",
                     failed_benchmarks);
        return 1;
    }
    return 0;
}
