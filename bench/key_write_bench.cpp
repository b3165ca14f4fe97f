// BM_key_write: what writing one key costs Redis itself, the floor under every benchmark here
// that writes aggregates. Each run writes the same keys twice into an emptied database, one
// token at a time, nine new keys per token (its latest and rolling hashes, and one candle of
// each of the seven intervals, with the fields and text of keys.hpp), pipelined 100 deep:
//
//   plain         HSET of each hash, and PEXPIRE of each candle: the commands alone, unfenced.
//   token_write   one EVALSHA of `lease_scripts::token_write` per token (lease.hpp), its
//                 arguments built by `add_token_write` (token_write.hpp), as the stream
//                 consumer sends them: the same commands, run by the script after its fence.
//
// The counters are Redis's own CPU time (user + system, from INFO cpu, so the client's work
// is not in them) per key written, for each, and their ratio. Multiplied by the keys a
// workload must write, they bound what one Redis core can persist: the stream benchmarks'
// first 1,000,000 trades make 374 k keys (the candles of every interval, most of them 1 s
// candles, as the stream's event time runs 10 trades per millisecond).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <benchmark/benchmark.h>

#include <tradeagg/interval.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/lease.hpp>
#include <tradeagg/redis/resp.hpp>
#include <tradeagg/redis/stream_consumer_config.hpp>
#include <tradeagg/redis/token_write.hpp>
#include <tradeagg/trade.hpp>

#include "bench_stream.hpp"
#include "pipelined_connection.hpp"
#include "redis_bench_settings.hpp"
#include "redis_benchmarks.hpp"
#include "redis_target.hpp"

namespace bench {
namespace {

using tradeagg::redis::detail::resp_builder;
using tradeagg::redis::detail::token_changes;

/// Candles expire this many of their intervals after they are created, as the consumer's do.
const std::size_t candle_retention_intervals =
    tradeagg::redis::stream_consumer_config{}.candle_retention_intervals;

/// Redis's CPU seconds so far (used_cpu_user + used_cpu_sys of INFO cpu).
double server_cpu_seconds(pipelined_connection& conn) {
    const reply_ptr r = conn.command({"INFO", "cpu"});
    const std::string_view text(r->str, r->len);
    double total = 0.0;
    for (const std::string_view field : {"used_cpu_user:", "used_cpu_sys:"}) {
        const std::size_t at = text.find(field);
        if (at == std::string_view::npos) {
            throw std::runtime_error("INFO cpu has no " + std::string(field));
        }
        total += std::stod(std::string(text.substr(at + field.size(), 32)));
    }
    return total;
}

/// A token's write as the stream consumer makes it after one trade: its latest trade, rolling
/// statistics, and a new candle of every interval of throughput_policy holding the trade.
token_changes changes_of(const tradeagg::trade& t) {
    token_changes c;
    c.has_token = true;
    c.latest = {t.price, t.quantity, t.taker, t.ts_ms, t.id};
    c.rolling = {
        t.ts_ms - t.ts_ms % 60'000, t.ts_ms, t.price, t.price, t.price, t.price, t.quantity,
        t.price * t.quantity,       t.price, 1,       0.0,     0.0};
    c.last_applied = tradeagg::redis::stream_id{static_cast<std::uint64_t>(t.ts_ms), t.id};
    std::uint32_t index = 0;
    for (const tradeagg::interval width : tradeagg::throughput_policy::intervals) {
        tradeagg::candle_update u;
        u.width = width;
        u.interval_index = index++;
        tradeagg::candle& k = u.data;
        k.open_time = tradeagg::bucket_open(t.ts_ms, width.count());
        k.close_time = k.open_time + width.count() - 1;
        k.open = k.high = k.low = k.close = t.price;
        k.volume = t.quantity;
        k.quote_volume = t.price * t.quantity;
        k.trades = 1;
        if (t.taker == tradeagg::side::buy) {
            k.taker_buy_volume = k.volume;
            k.taker_buy_quote_volume = k.quote_volume;
        }
        k.first_trade_id = k.last_trade_id = t.id;
        c.candles.push_back(u);
    }
    return c;
}

/// The plain commands for `c`: HSET of the latest hash (with the epoch and stream id the script
/// adds), of the rolling hash, and of each candle, then PEXPIRE of each candle.
void append_plain(pipelined_connection& conn, resp_builder& b, std::string_view name,
                  const token_changes& c, std::uint64_t epoch) {
    const auto hset = [&](const std::string& key, const auto& value, const auto&... leading_pairs) {
        b.add("HSET");
        b.add(key);
        (b.add(leading_pairs), ...);
        tradeagg::redis::for_each_field(value, [&b](std::string_view f, std::string_view v) {
            b.add(f);
            b.add(v);
        });
        conn.append_formatted(b.take());
    };
    hset(tradeagg::redis::latest_key(key_prefix, name), c.latest, std::string_view("epoch"),
         tradeagg::redis::number_text(epoch).view(), std::string_view("stream_id"),
         std::string_view(c.last_applied->text()));
    hset(tradeagg::redis::rolling_key(key_prefix, name), c.rolling);
    for (const tradeagg::candle_update& u : c.candles) {
        const std::string key =
            tradeagg::redis::candle_key(key_prefix, name, u.width, u.data.open_time);
        hset(key, u.data);
        b.add("PEXPIRE");
        b.add(key);
        b.add(
            tradeagg::redis::number_text(static_cast<std::uint64_t>(tradeagg::redis::candle_ttl_ms(
                                             candle_retention_intervals, u.width.count())))
                .view());
        conn.append_formatted(b.take());
    }
}

struct pass_result {
    double server_seconds = 0.0;
    double wall_seconds = 0.0;
    std::uint64_t keys = 0;
};

/// Empties the database, then writes every token's keys once, plainly or by the script.
pass_result write_pass(pipelined_connection& conn, const std::vector<token_changes>& writes,
                       const std::vector<std::string>& names, bool scripted,
                       const std::string& sha) {
    (void)conn.command({"FLUSHDB"});
    resp_builder b;
    pass_result r;
    const double cpu0 = server_cpu_seconds(conn);
    const auto t0 = bench_clock::now();
    for (std::size_t k = 0; k < writes.size(); ++k) {
        const token_changes& c = writes[k];
        if (scripted) {
            b.add("EVALSHA");
            b.add(sha);
            b.add(tradeagg::redis::number_text(
                      static_cast<std::uint64_t>(tradeagg::redis::detail::token_write_keys(c)))
                      .view());
            tradeagg::redis::detail::add_token_write(b, key_prefix, names[k], c, 1,
                                                     candle_retention_intervals);
            conn.append_formatted(b.take());
        } else {
            append_plain(conn, b, names[k], c, 1);
        }
        r.keys += tradeagg::redis::detail::token_write_keys(c);
    }
    conn.drain();
    r.wall_seconds = seconds_between(t0, bench_clock::now());
    r.server_seconds = server_cpu_seconds(conn) - cpu0;
    return r;
}

void bm_key_write(benchmark::State& state) {
    const std::string name = "BM_key_write";
    pass_result plain;
    pass_result scripted;
    const bool ran = run_or_fail(state, name, [&] {
        const synthetic::stream& s = bench_stream();
        // Each token's first trade, one write per token.
        std::vector<token_changes> writes;
        std::vector<std::string> names;
        std::vector<bool> seen(s.names().size(), false);
        for (const tradeagg::trade& t : s.trades()) {
            if (!seen[t.token]) {
                seen[t.token] = true;
                writes.push_back(changes_of(t));
                names.push_back(s.names()[t.token]);
            }
        }
        pipelined_connection conn(target(), pipeline_depth);
        const reply_ptr loaded =
            conn.command({"SCRIPT", "LOAD", tradeagg::redis::lease_scripts::token_write});
        const std::string sha(loaded->str, loaded->len);
        for (auto _ : state) {
            plain = write_pass(conn, writes, names, false, sha);
            scripted = write_pass(conn, writes, names, true, sha);
            state.SetIterationTime(plain.wall_seconds + scripted.wall_seconds);
            const reply_ptr keys = conn.command({"DBSIZE"});
            if (static_cast<std::uint64_t>(keys->integer) != scripted.keys) {
                check_failed(state, name,
                             "the script wrote " + std::to_string(keys->integer) + " keys, not " +
                                 std::to_string(scripted.keys));
                break;
            }
        }
    });
    if (!ran) {
        return;
    }
    const auto per_key_us = [](const pass_result& r) {
        return r.server_seconds * 1e6 / static_cast<double>(r.keys);
    };
    state.counters["keys"] = static_cast<double>(plain.keys);
    state.counters["plain_server_us_per_key"] = per_key_us(plain);
    state.counters["token_write_server_us_per_key"] = per_key_us(scripted);
    state.counters["token_write_vs_plain"] = per_key_us(scripted) / per_key_us(plain);
    state.counters["plain_keys_per_second"] = static_cast<double>(plain.keys) / plain.wall_seconds;
    state.counters["token_write_keys_per_second"] =
        static_cast<double>(scripted.keys) / scripted.wall_seconds;
}

} // namespace

void register_key_write() {
    configure(benchmark::RegisterBenchmark("BM_key_write", bm_key_write));
}

} // namespace bench
