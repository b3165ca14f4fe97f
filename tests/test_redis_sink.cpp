// The Redis sink against a real redis-server (or a three-master Redis Cluster) the test starts
// itself: the same generated stream under each fault, and Redis checked field by field against
// the memory_sink (itself checked against the reference model) at the end.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <hiredis/hiredis.h>

#include <tradeagg/redis/sink.hpp>
#include <tradeagg/tradeagg.hpp>

#include "compare.hpp"
#include "redis_cluster.hpp"
#include "redis_keyspace.hpp"
#include "redis_server.hpp"
#include "reference_model.hpp"
#include "trade_stream.hpp"

using namespace tradeagg;
using namespace std::chrono_literals;
using tradeagg::redis::redis_config;
using tradeagg::redis::redis_sink;
using tradeagg::testing::redis_server;

namespace {

using policy_type = throughput_policy;

/// Hands every flush to an in-memory sink and to the Redis sink.
struct tee_sink {
    memory_sink& memory;
    redis_sink& redis;
    void consume(const flush_batch& b) {
        memory.consume(b);
        redis.consume(b);
    }
    void set_resync_handler(std::function<void()> f) { redis.set_resync_handler(std::move(f)); }
};

redis_config test_config(int port) {
    redis_config c;
    c.port = port;
    c.read_timeout = 500ms;
    c.write_timeout = 500ms;
    c.retry_delay = 50ms;
    c.max_retries = 3;
    c.pipeline_size = 100;
    c.key_prefix = "t";
    return c;
}

testing::stream_options scenario_stream() {
    testing::stream_options o;
    o.tokens = 200;
    o.trades = 40'000;
    o.ms_per_trade = 20; // 13 minutes of event time: every 1s and 1m candle closes
    return o;
}

/// Runs the stream through a pipeline into memory and Redis over about `duration`, calling
/// `fault(step)` at steps 1..9 of 10 (step 0 is the start). Returns the Redis sink's final
/// statistics after checking that Redis equals the memory sink, which equals the reference.
struct scenario {
    redis_server& server; ///< the Redis compared, or with `cluster` any master of the cluster
    redis_config config;
    bool cluster = false;
    std::chrono::milliseconds duration = 4'000ms;
    std::function<void(int)> fault = [](int) {};
    std::chrono::milliseconds stop_deadline = 20'000ms;
    std::size_t peak_pending = 0;             ///< most keys the sink held at once, sampled
    std::chrono::nanoseconds longest_push{0}; ///< longest time one chunk of pushes took
    redis_sink* sink = nullptr;               ///< the sink while `run` runs (for `fault`)

    redis::sink_stats run() {
        const testing::trade_stream s = testing::make_stream(scenario_stream());
        memory_sink memory;
        redis_sink rs(config);
        sink = &rs;
        tee_sink tee{memory, rs};
        runtime_config cfg;
        cfg.shards = 2;
        cfg.flush_interval = 20ms;
        std::mutex late_mutex;
        testing::late_counts late;
        cfg.on_late_trade = [&](const late_trade& l) {
            const std::lock_guard lock(late_mutex);
            ++late[std::string(l.token)];
        };
        testing::reference_model<policy_type> ref;
        std::atomic<bool> sampling{true};
        std::thread sampler([&] {
            while (sampling) {
                peak_pending = std::max(peak_pending, rs.stats().pending);
                std::this_thread::sleep_for(2ms);
            }
        });
        {
            pipeline<policy_type, tee_sink&> p{cfg, tee};
            p.start();
            std::vector<token_id> ids;
            for (const std::string& n : s.names) {
                ids.push_back(p.intern(n).id);
            }
            auto producer = p.make_producer();
            const std::size_t steps = 10;
            const std::size_t per_step = (s.arrivals.size() + steps - 1) / steps;
            // Signed: a step that overruns its time must see a negative time left, not a
            // wrapped-around one (a duration divided by a size_t is unsigned).
            const std::chrono::milliseconds step_time = duration / static_cast<int>(steps);
            for (std::size_t step = 0; step < steps; ++step) {
                if (step > 0) {
                    fault(static_cast<int>(step));
                }
                const auto step_end = std::chrono::steady_clock::now() + step_time;
                const std::size_t from = step * per_step;
                const std::size_t to = std::min(s.arrivals.size(), from + per_step);
                const std::size_t chunk = 200;
                for (std::size_t i = from; i < to; i += chunk) {
                    const auto pushing = std::chrono::steady_clock::now();
                    for (std::size_t j = i; j < std::min(to, i + chunk); ++j) {
                        trade t = s.arrivals[j].t;
                        t.token = ids[s.arrivals[j].token_index];
                        REQUIRE(producer.push(t) == reject_reason::none);
                    }
                    longest_push =
                        std::max(longest_push, std::chrono::steady_clock::now() - pushing);
                    for (std::size_t j = i; j < std::min(to, i + chunk); ++j) {
                        ref.push(s.names[s.arrivals[j].token_index], s.arrivals[j].t);
                    }
                    // Spread the step's trades over its time, so faults land mid-stream.
                    const auto left = step_end - std::chrono::steady_clock::now();
                    const auto chunks_left = static_cast<long>((to - i + chunk - 1) / chunk);
                    if (left > 0ms && chunks_left > 0) {
                        std::this_thread::sleep_for(left / chunks_left);
                    }
                }
            }
            p.stop();
        }
        const redis::stop_report report = rs.stop(stop_deadline);
        sink = nullptr;
        sampling = false;
        sampler.join();
        INFO("last error: " << report.stats.last_error);
        CHECK(report.complete);
        CHECK(report.unwritten == 0);
        CHECK(report.stats.updates_dropped == 0);

        const testing::mismatch_log against_ref = compare_with_reference(memory, ref, &late);
        INFO(against_ref.text());
        CHECK(against_ref.count == 0);

        std::size_t keys = 0;
        const testing::mismatch_log log =
            cluster ? testing::compare_cluster_with(server.port(), memory, config.key_prefix,
                                                    policy_type::intervals, &keys,
                                                    testing::latest_writer::sink)
                    : testing::compare_redis_with("127.0.0.1", server.port(), memory,
                                                  config.key_prefix, policy_type::intervals, &keys);
        INFO(log.text());
        CHECK(log.count == 0);
        CHECK(keys > 1'000);
        return report.stats;
    }
};

} // namespace

TEST_CASE("redis keys: numbers read back exactly, keys and fields as documented") {
    for (const double v : {0.1, 1.0 / 3.0, 123456.789, 5e-324, 1.7976931348623157e308, 42.0}) {
        const redis::number_text t(v);
        double back = 0;
        const auto [end, ec] =
            std::from_chars(t.view().data(), t.view().data() + t.view().size(), back);
        CHECK(ec == std::errc{});
        CHECK(back == v);
    }
    CHECK(redis::number_text(std::uint64_t{18'446'744'073'709'551'615ull}).view() ==
          "18446744073709551615");
    CHECK(redis::candle_key("tradeagg", "SOL", intervals::m15, 1'732'867'200'000) ==
          "tradeagg:{SOL}:candle:15m:1732867200000");
    CHECK(redis::rolling_key("tradeagg", "SOL") == "tradeagg:{SOL}:rolling:24h");
    CHECK(redis::latest_key("tradeagg", "SOL") == "tradeagg:{SOL}:latest");
    candle c;
    c.open = 1.5;
    c.volume = 2.0;
    c.quote_volume = 3.0;
    c.closed = true;
    const testing::hash_fields h = testing::fields_of(c);
    REQUIRE(h.size() == 15);
    CHECK(h[9] == std::pair<std::string, std::string>("vwap", "1.5"));
    CHECK(h[14] == std::pair<std::string, std::string>("closed", "1"));
    latest_trade l;
    l.taker = side::sell;
    CHECK(testing::fields_of(l)[2].second == "sell");
    CHECK(testing::fields_of(rolling_stats{}).size() == 12);
}

TEST_CASE("redis sink: a bad key prefix is a configuration error") {
    redis_config c;
    c.port = 1;
    c.key_prefix = "a{b}";
    CHECK_THROWS_AS(redis_sink{c}, config_error);
    c.key_prefix = "";
    CHECK_THROWS_AS(redis_sink{c}, config_error);
}

TEST_CASE("redis sink: plain run, Redis equals the reference, candle keys expire") {
    redis_server server;
    scenario sc{server, test_config(server.port())};
    const redis::sink_stats st = sc.run();
    CHECK(st.connects == 1);
    CHECK(st.commands_failed == 0);
    CHECK(st.retries == 0);
    CHECK(st.success_rate == doctest::Approx(1.0));
    CHECK(st.latency_avg_ms > 0.0);
    CHECK(st.updates_written > 0);
    CHECK(st.write_lag.samples > 0);
    // A token update is two HSETs; a candle write carries PEXPIRE only when due, so hot keys
    // cost one command per write (every candle key has an expiry: compare_redis_with checks).
    CHECK(st.commands_sent < 2 * st.updates_written);
    const std::string ttl = server.command(
        {"PTTL",
         "t:{TKN0}:candle:1s:" + std::to_string((scenario_stream().start_ms / 1000 + 5) * 1000)});
    CHECK(std::stoll(ttl) > 900'000); // 1000 intervals of 1 s, minus the test's run time
    CHECK(std::stoll(ttl) <= 1'000'000);
    CHECK(server.command({"PTTL", "t:{TKN0}:latest"}) == "-1");
}

TEST_CASE("redis sink: Redis stopped (SIGSTOP) for 3 s mid-stream") {
    redis_server server;
    std::atomic<bool> paused{false};
    scenario sc{server, test_config(server.port())};
    sc.duration = 6'000ms;
    sc.fault = [&](int step) {
        if (step == 3) {
            server.pause();
            paused = true;
        }
    };
    // The producer keeps pushing through the pause: the test's own pacing would stall if it
    // were blocked. Resume from another thread 3 s later.
    std::thread resumer([&] {
        while (!paused) {
            std::this_thread::sleep_for(5ms);
        }
        std::this_thread::sleep_for(3s);
        server.resume();
    });
    const auto started = std::chrono::steady_clock::now();
    const redis::sink_stats st = sc.run();
    resumer.join();
    CHECK(st.timeouts >= 1);
    CHECK(st.reconnects >= 1);
    CHECK(st.retries >= 1);
    // Producers were never held up by the stopped Redis (a blocked push would take seconds).
    CHECK(sc.longest_push < 1s);
    CHECK(std::chrono::steady_clock::now() - started < 30s);
}

TEST_CASE("redis sink: Redis killed (SIGKILL) and restarted empty mid-stream: resync") {
    redis_server server;
    scenario sc{server, test_config(server.port())};
    sc.fault = [&](int step) {
        if (step == 6) {
            server.kill();
            server.start();
        }
    };
    const redis::sink_stats st = sc.run();
    CHECK(st.resyncs == 1);
    CHECK(st.resync_updates > 0);
    CHECK(st.reconnects >= 1);
}

TEST_CASE("redis sink: connections killed with CLIENT KILL five times") {
    redis_server server;
    scenario sc{server, test_config(server.port())};
    std::mt19937 rng(7);
    sc.fault = [&](int step) {
        if (step % 2 == 1) { // steps 1, 3, 5, 7, 9
            std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 200));
            (void)server.command({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
        }
    };
    const redis::sink_stats st = sc.run();
    CHECK(st.reconnects >= 5);
    CHECK(st.resyncs == 0);
}

TEST_CASE("redis sink: Redis down when the sink starts, up 3 s later") {
    redis_server server;
    server.stop();
    std::thread starter([&] {
        std::this_thread::sleep_for(3s);
        server.start();
    });
    scenario sc{server, test_config(server.port())};
    const redis::sink_stats st = sc.run();
    starter.join();
    CHECK(st.connect_failures >= 1);
    CHECK(st.connects == 1);
    CHECK(st.resyncs == 0);
}

TEST_CASE("redis sink: maxmemory 1 for 2 s: OOM replies retried with backoff") {
    redis_server server;
    scenario sc{server, test_config(server.port())};
    sc.duration = 5'000ms;
    std::thread restorer;
    sc.fault = [&](int step) {
        if (step == 4) {
            (void)server.command({"CONFIG", "SET", "maxmemory", "1"});
            restorer = std::thread([&] {
                std::this_thread::sleep_for(2s);
                (void)server.command({"CONFIG", "SET", "maxmemory", "0"});
            });
        }
    };
    const redis::sink_stats st = sc.run();
    restorer.join();
    CHECK(st.commands_failed > 0);
    CHECK(st.retries > 0);
    CHECK(sc.longest_push < 1s);
    // Backoff, not a tight loop. A key is tried after 50, 100 and 200 ms (with jitter), then
    // parked and tried again every 400 ms: in 2 s at most about 9 attempts of 2 commands. A
    // tight loop would fail hundreds of times per key.
    INFO("failed commands: " << st.commands_failed << ", peak keys pending: " << sc.peak_pending);
    CHECK(sc.peak_pending > 0);
    CHECK(st.commands_failed <= 24 * sc.peak_pending);
}

namespace {

/// A flush of `n` distinct 1s candles of token "SOL".
std::vector<candle_update> candles_for(std::size_t n) {
    std::vector<candle_update> out;
    for (std::size_t i = 0; i < n; ++i) {
        candle c;
        c.open_time = 1'732'867'200'000 + static_cast<timestamp_ms>(i) * 1'000;
        c.close_time = c.open_time + 999;
        c.open = c.high = c.low = c.close = 10.0 + static_cast<double>(i);
        c.volume = 1.0;
        c.quote_volume = c.open;
        c.trades = 1;
        out.push_back(candle_update{0, "SOL", intervals::s1, 0, c});
    }
    return out;
}

} // namespace

TEST_CASE("redis sink: stop reports what Redis could not take, and what was dropped") {
    redis_server server;
    server.stop(); // nothing answers on the port
    redis_config c = test_config(server.port());
    c.max_pending_updates = 10;
    redis_sink rs(c);
    const std::vector<candle_update> updates = candles_for(25);
    rs.consume(flush_batch{0, updates, {}});
    const redis::stop_report r = rs.stop(300ms);
    CHECK_FALSE(r.complete);
    CHECK(r.unwritten == 10);
    CHECK(r.dropped == 15);
    CHECK(r.stats.updates_dropped == 15);
    CHECK(r.stats.connect_failures >= 1);
    CHECK_FALSE(r.stats.last_error.empty());
    // After stop, updates are counted as dropped, not queued.
    rs.consume(flush_batch{0, updates, {}});
    CHECK(rs.stats().updates_dropped == 40);
    CHECK(rs.stop(1s).unwritten == 10); // idempotent: the first report
}

TEST_CASE("redis sink: an old connection is replaced (REDIS_MAX_CONN_AGE) without a failure") {
    redis_server server;
    redis_config c = test_config(server.port());
    c.max_conn_age = 400ms;
    scenario sc{server, c};
    const redis::sink_stats st = sc.run();
    CHECK(st.reconnects >= 3);
    CHECK(st.commands_failed == 0);
    CHECK(st.timeouts == 0);
}

TEST_CASE("redis sink: an idle connection is pinged (REDIS_IDLE_TIMEOUT)") {
    redis_server server;
    redis_config c = test_config(server.port());
    c.idle_timeout = 50ms;
    redis_sink rs(c);
    const std::vector<candle_update> updates = candles_for(3);
    rs.consume(flush_batch{0, updates, {}});
    REQUIRE(rs.wait_idle(5s));
    const std::uint64_t sent = rs.stats().commands_sent;
    std::this_thread::sleep_for(400ms);
    const redis::sink_stats st = rs.stats();
    CHECK(st.commands_sent >= sent + 3); // PINGs, about one per 50 ms
    CHECK(st.commands_failed == 0);
    CHECK(rs.stop(1s).complete);
    CHECK(server.command({"HGET", "t:{SOL}:candle:1s:1732867202000", "open"}) == "12");
}

// ---- on a Redis Cluster ----------------------------------------------------------------------

namespace {

/// What one Redis executes, read with MONITOR on a connection of its own until `stop`: each
/// line's client, command and first argument.
class monitor_log {
public:
    struct line {
        std::string client;
        std::string command;
        std::string key;
    };

    explicit monitor_log(redis_server& server) : server_(server) {
        redisContext* c = redisConnect("127.0.0.1", server.port());
        REQUIRE(c != nullptr);
        REQUIRE(c->err == 0);
        auto* ok = static_cast<redisReply*>(redisCommand(c, "MONITOR"));
        REQUIRE(ok != nullptr);
        freeReplyObject(ok);
        thread_ = std::thread([this, c] { read(c); });
    }
    monitor_log(const monitor_log&) = delete;
    monitor_log& operator=(const monitor_log&) = delete;
    ~monitor_log() { stop(); }

    /// Ends the reading (a PING wakes the reader up) and returns what was read.
    const std::vector<line>& stop() {
        if (thread_.joinable()) {
            done_ = true;
            (void)server_.command({"PING"});
            thread_.join();
        }
        return lines_;
    }

private:
    /// The text between the `n`th pair of quotes after the client's brackets ("" if none).
    static std::string quoted(std::string_view text, std::size_t n) {
        std::size_t at = text.find(']');
        for (std::size_t i = 0; at != std::string_view::npos; ++i) {
            const std::size_t open = text.find('"', at + 1);
            if (open == std::string_view::npos) {
                break;
            }
            std::size_t close = open + 1;
            while (close < text.size() && text[close] != '"') {
                close += text[close] == '\\' ? 2 : 1;
            }
            if (i == n) {
                return std::string(text.substr(open + 1, close - open - 1));
            }
            at = close;
        }
        return {};
    }

    void read(redisContext* c) {
        while (!done_) {
            void* raw = nullptr;
            if (redisGetReply(c, &raw) != REDIS_OK || raw == nullptr) {
                break;
            }
            auto* r = static_cast<redisReply*>(raw);
            const std::string_view text(r->str, r->len);
            const std::size_t open = text.find('[');
            const std::size_t close = text.find(']');
            if (open != std::string_view::npos && close != std::string_view::npos) {
                const std::string_view inside = text.substr(open + 1, close - open - 1);
                lines_.push_back(line{std::string(inside.substr(inside.find(' ') + 1)),
                                      quoted(text, 0), quoted(text, 1)});
            }
            freeReplyObject(r);
        }
        redisFree(c);
    }

    redis_server& server_;
    std::atomic<bool> done_{false};
    std::vector<line> lines_;
    std::thread thread_;
};

/// Checks that every write of a key under `prefix` is inside a MULTI ... EXEC of its client,
/// with the keys of one token only, and that a transaction writing the rolling window also
/// writes the latest trade. Returns the transactions seen.
std::size_t check_transactions(const std::vector<monitor_log::line>& lines,
                               const std::string& prefix, testing::mismatch_log& log) {
    struct open_transaction {
        bool open = false;
        std::string token;
        int rolling = 0;
        int latest = 0;
    };
    std::map<std::string, open_transaction> by_client;
    std::size_t transactions = 0;
    for (const monitor_log::line& l : lines) {
        open_transaction& t = by_client[l.client];
        if (l.command == "MULTI") {
            if (t.open) {
                log.add(l.client + ": MULTI inside a transaction");
            }
            t = open_transaction{true, {}, 0, 0};
        } else if (l.command == "EXEC") {
            if (!t.open) {
                log.add(l.client + ": EXEC outside a transaction");
            } else if (t.rolling != t.latest) {
                log.add(l.client + ": " + t.token + "'s rolling window and latest trade apart");
            }
            t.open = false;
            ++transactions;
        } else if ((l.command == "HSET" || l.command == "PEXPIRE") &&
                   l.key.starts_with(prefix + ":{")) {
            const std::size_t from = prefix.size() + 2;
            const std::string token = l.key.substr(from, l.key.find('}', from) - from);
            if (!t.open) {
                log.add(l.client + ": " + l.key + " written outside a transaction");
            } else if (t.token.empty()) {
                t.token = token;
            } else if (t.token != token) {
                log.add(l.client + ": " + t.token + " and " + token + " in one transaction");
            }
            t.rolling += l.key.ends_with(":rolling:24h") ? 1 : 0;
            t.latest += l.key.ends_with(":latest") ? 1 : 0;
        }
    }
    return transactions;
}

/// Sum of one `INFO commandstats` count (e.g. "cmdstat_exec") over every master.
std::uint64_t command_calls(testing::redis_cluster& cluster, const std::string& name) {
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < cluster.size(); ++i) {
        const std::string text = cluster.node(i).command({"INFO", "commandstats"});
        const std::size_t at = text.find(name + ":calls=");
        if (at != std::string::npos) {
            total += std::stoull(text.substr(at + name.size() + 7));
        }
    }
    return total;
}

/// The sink's settings for `cluster`: seeds a closed port first (a seed that is down), then one
/// master.
redis_config cluster_config(testing::redis_cluster& cluster) {
    redis_config c = test_config(testing::free_port());
    c.more_seeds.emplace_back("127.0.0.1", cluster.node(1).port());
    return c;
}

} // namespace

TEST_CASE("redis sink on a cluster: three masters, exact, each token's keys in one transaction") {
    testing::redis_cluster cluster(3);
    redis_config c = cluster_config(cluster);
    // What is counted below assumes no connection is dropped: deadlines a slow (sanitized,
    // shared, monitored) run cannot reach.
    c.read_timeout = 3s;
    c.write_timeout = 3s;
    scenario sc{cluster.node(0), c};
    sc.cluster = true;
    monitor_log monitor(cluster.node(2));
    const redis::sink_stats st = sc.run();
    INFO("timeouts: " << st.timeouts << ", last error: " << st.last_error);
    testing::mismatch_log txn_log;
    const std::size_t watched = check_transactions(monitor.stop(), "t", txn_log);
    INFO(txn_log.text());
    CHECK(txn_log.count == 0);
    CHECK(watched > 100);
    CHECK(st.cluster);
    CHECK(st.nodes == 3);
    CHECK(st.connects == 3);
    CHECK(st.connect_failures >= 1); // the seed that is down
    CHECK(st.slot_map_reads >= 1);
    CHECK(st.moved == 0);
    // The only failures: the set-up (INFO, CLIENT ID) of each attempt on the seed that is down.
    CHECK(st.commands_failed == 2 * st.connect_failures);
    CHECK(st.retries == 0);
    // Every transaction the sink sent ran, once (the masters have seen no other client).
    CHECK(command_calls(cluster, "cmdstat_exec") == st.transactions);
    CHECK(command_calls(cluster, "cmdstat_multi") == st.transactions);
}

TEST_CASE("redis sink on a cluster: 3000 slots resharded mid-stream (MOVED, ASK), exact") {
    testing::redis_cluster cluster(3);
    scenario sc{cluster.node(0), cluster_config(cluster)};
    sc.cluster = true;
    sc.duration = 5'000ms;
    std::thread reshard;
    sc.fault = [&](int step) {
        if (step == 2) {
            reshard = std::thread([&] {
                const std::string cmd =
                    "redis-cli --cluster reshard 127.0.0.1:" +
                    std::to_string(cluster.node(0).port()) + " --cluster-from " +
                    cluster.node(0).command({"CLUSTER", "MYID"}) + " --cluster-to " +
                    cluster.node(1).command({"CLUSTER", "MYID"}) +
                    " --cluster-slots 3000 --cluster-yes >/dev/null 2>&1";
                CHECK(std::system(cmd.c_str()) == 0);
            });
        } else if (step == 9) {
            reshard.join(); // the cluster is compared with the reference once the slots moved
        }
    };
    const redis::sink_stats st = sc.run();
    INFO("moved " << st.moved << ", asked " << st.asked << ", map reads " << st.slot_map_reads);
    CHECK(st.moved > 0);
    CHECK(st.slot_map_reads >= 2);
    CHECK(st.nodes == 3);
}

TEST_CASE("redis sink on a cluster: a master stopped for 2 s and started again, exact") {
    testing::redis_cluster cluster(3, true);
    scenario sc{cluster.node(0), cluster_config(cluster)};
    sc.cluster = true;
    sc.duration = 5'000ms;
    std::uint64_t written_when_stopped = 0;
    std::uint64_t written_while_stopped = 0;
    std::thread restarter;
    sc.fault = [&](int step) {
        if (step == 3) {
            written_when_stopped = sc.sink->stats().updates_written;
            cluster.node(2).stop();
            restarter = std::thread([&, sink = sc.sink] {
                std::this_thread::sleep_for(2s);
                written_while_stopped = sink->stats().updates_written - written_when_stopped;
                cluster.node(2).start();
            });
        }
    };
    const redis::sink_stats st = sc.run();
    restarter.join();
    // The other masters' tokens kept being written while one master was down.
    CHECK(written_while_stopped > 1'000);
    CHECK(st.resyncs == 1); // the restarted master's run_id changed
    CHECK(st.reconnects >= 1);
    CHECK(st.retries >= 1);
    CHECK(sc.longest_push < 1s);
}

TEST_CASE("redis sink on a cluster: slots unassigned for 1 s (CLUSTERDOWN, no owner), exact") {
    testing::redis_cluster cluster(3); // full coverage required: an unserved slot stops them all
    scenario sc{cluster.node(0), cluster_config(cluster)};
    sc.cluster = true;
    std::thread restorer;
    sc.fault = [&](int step) {
        if (step == 3) {
            // Slots 0..999 are node 0's (`redis-cli --cluster create` gives it the first third):
            // unassigned everywhere, their keys stay where they are.
            for (std::size_t i = 0; i < cluster.size(); ++i) {
                REQUIRE(cluster.node(i).command({"CLUSTER", "DELSLOTSRANGE", "0", "999"}) == "OK");
            }
            restorer = std::thread([&] {
                std::this_thread::sleep_for(1s);
                CHECK(cluster.node(0).command({"CLUSTER", "ADDSLOTSRANGE", "0", "999"}) == "OK");
            });
        } else if (step == 9) {
            restorer.join(); // and the cluster is whole again before it is compared
            const auto until = std::chrono::steady_clock::now() + 10s;
            while (!cluster.ready() && std::chrono::steady_clock::now() < until) {
                std::this_thread::sleep_for(20ms);
            }
            REQUIRE(cluster.ready());
        }
    };
    const redis::sink_stats st = sc.run();
    std::uint64_t clusterdown = 0;
    for (std::size_t i = 0; i < cluster.size(); ++i) {
        const std::string text = cluster.node(i).command({"INFO", "errorstats"});
        const std::size_t at = text.find("errorstat_CLUSTERDOWN:count=");
        if (at != std::string::npos) {
            clusterdown += std::stoull(text.substr(at + 28));
        }
    }
    CHECK(clusterdown > 0); // refused writes, retried until the slots were served again
    CHECK(st.retries >= 1);
    CHECK(st.slot_map_reads >= 2);
    CHECK(st.nodes == 3);
}

namespace {

/// The cluster's slot map, as node 0 tells it.
redis::slot_map slots_of(testing::redis_cluster& cluster) {
    redisContext* c = redisConnect("127.0.0.1", cluster.node(0).port());
    REQUIRE(c != nullptr);
    auto* r = static_cast<redisReply*>(redisCommand(c, "CLUSTER SLOTS"));
    std::string why;
    std::optional<redis::slot_map> m = redis::slot_map::from_cluster_slots(r, "127.0.0.1", why);
    if (r != nullptr) {
        freeReplyObject(r);
    }
    redisFree(c);
    REQUIRE(m);
    return *m;
}

redis_server& node_on(testing::redis_cluster& cluster, int port) {
    for (std::size_t i = 0; i < cluster.size(); ++i) {
        if (cluster.node(i).port() == port) {
            return cluster.node(i);
        }
    }
    FAIL("no node on port " << port);
    return cluster.node(0);
}

} // namespace

TEST_CASE("redis sink on a cluster: a slot in migration: ASK, TRYAGAIN, then MOVED, exact") {
    testing::redis_cluster cluster(3);
    const redis::slot_map before = slots_of(cluster);
    const std::uint16_t slot = redis::token_slot("SOL");
    const redis::cluster_node from = *before.node_for(slot);
    redis::cluster_node to;
    for (const redis::cluster_node& n : before.nodes()) {
        if (!(n == from)) {
            to = n;
        }
    }
    redis_server& source = node_on(cluster, from.port);
    redis_server& target = node_on(cluster, to.port);
    const std::string s = std::to_string(slot);
    redis_sink rs(cluster_config(cluster));
    const std::vector<candle_update> first = candles_for(3);
    rs.consume(flush_batch{0, first, {}});
    REQUIRE(rs.wait_idle(5s));

    REQUIRE(target.command({"CLUSTER", "SETSLOT", s, "IMPORTING", from.id}) == "OK");
    REQUIRE(source.command({"CLUSTER", "SETSLOT", s, "MIGRATING", to.id}) == "OK");
    // Two more candles of SOL: the source still has its first three keys, not these, so it
    // answers ASK; the target cannot run a transaction of keys it does not all have (TRYAGAIN).
    const std::vector<candle_update> more = candles_for(5);
    rs.consume(flush_batch{0, more, {}});
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (rs.stats().asked == 0 && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(5ms);
    }
    REQUIRE(rs.stats().asked >= 1);
    std::this_thread::sleep_for(200ms);
    CHECK_FALSE(rs.idle());

    // The migration ends as redis-cli's does: the keys move, then the slot, everywhere.
    std::vector<std::string> migrate{"MIGRATE", "127.0.0.1", std::to_string(to.port), "", "0",
                                     "5000",    "KEYS"};
    for (const candle_update& u : first) {
        migrate.push_back(redis::candle_key("t", "SOL", u.width, u.data.open_time));
    }
    REQUIRE(source.command(migrate) == "OK");
    for (std::size_t i = 0; i < cluster.size(); ++i) {
        REQUIRE(cluster.node(i).command({"CLUSTER", "SETSLOT", s, "NODE", to.id}) == "OK");
    }
    REQUIRE(rs.wait_idle(5s));
    const redis::sink_stats st = rs.stats();
    CHECK(st.moved >= 1);
    CHECK(st.retries >= 1);
    CHECK(target.command({"INFO", "errorstats"}).find("errorstat_TRYAGAIN:") != std::string::npos);
    CHECK(rs.stop(1s).complete);
    CHECK(source.command({"CLUSTER", "COUNTKEYSINSLOT", s}) == "0");
    for (const candle_update& u : more) {
        CHECK(target.command({"HGET", redis::candle_key("t", "SOL", u.width, u.data.open_time),
                              "open"}) == redis::number_text(u.data.open).view());
    }
}
