// Stream ingest end to end: two server instances share four partition streams on a three-master
// Redis Cluster, through an instance killed with SIGKILL and restarted (its partitions taken
// over from their checkpoints), a slot range resharded and a master stopped and started again;
// at the end the cluster holds exactly what a reference pipeline given the same trades holds.

#include <doctest/doctest.h>

#ifdef TRADEAGG_SERVER_BINARY

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/tradeagg.hpp>

#include "raw_http_client.hpp"
#include "redis_cluster.hpp"
#include "redis_keyspace.hpp"
#include "server_process.hpp"
#include "trade_stream.hpp"

using namespace std::chrono_literals;
namespace redis = tradeagg::redis;
namespace testing = tradeagg::testing;

namespace {

constexpr std::size_t partitions = 4;
const std::string prefix = "sx";

/// Appends trades (and the odd invalid entry) to the partition streams through the library's
/// cluster client, retrying what a moving or restarting master did not take, and keeping each
/// stream in arrival order: a stream's entries go in batches, each appended by one script (all
/// or nothing), and a stream's next batch waits until the one before is in. (Separate XADDs
/// would not do: a master answering CLUSTERDOWN to some of a pipeline and taking the rest
/// would put the retried ones after later trades, and a token's trades out of order are late.)
class producer {
public:
    explicit producer(int port) : client_(options(port)) {}

    /// Appends trades [from, to) of `s`: an entry each, or with `entry_trades` > 1 packed,
    /// each entry up to that many consecutive trades of one partition.
    void append(const testing::trade_stream& s, std::size_t from, std::size_t to,
                std::size_t entry_trades = 1) {
        std::vector<std::vector<std::string>> entries;
        std::vector<std::size_t> partition;
        for (std::size_t i = from; i < to; ++i) {
            const auto& a = s.arrivals[i];
            const tradeagg::trade_view t{
                s.names[a.token_index], a.t.price, a.t.quantity, a.t.taker, a.t.ts_ms, a.t.id};
            const std::size_t k = redis::partition_of(t.token, partitions);
            if (entry_trades > 1) {
                if (entries.empty() || partition.back() != k ||
                    static_cast<std::size_t>(
                        std::count(entries.back()[3].begin(), entries.back()[3].end(), '\n')) +
                            1 ==
                        entry_trades) {
                    entries.push_back({std::string(redis::packed_format_field),
                                       std::string(redis::packed_format),
                                       std::string(redis::packed_trades_field), ""});
                    partition.push_back(k);
                }
                redis::append_packed(entries.back()[3], t);
                continue;
            }
            std::vector<std::string> fields;
            redis::for_each_field(t, [&fields](std::string_view f, std::string_view v) {
                fields.emplace_back(f);
                fields.emplace_back(v);
            });
            entries.push_back(std::move(fields));
            partition.push_back(k);
        }
        send(entries, [&](std::size_t i) { return partition[i]; });
    }

    /// Entries that hold no valid trade: skipped and counted by the consumer.
    void append_invalid() {
        const std::vector<std::vector<std::string>> bad{
            {"token", "BAD1", "price", "nan", "quantity", "1", "side", "buy", "ts", "1", "id", "1"},
            {"token", "BAD2", "price", "1", "quantity", "1", "side", "sideways", "ts", "1", "id",
             "1"},
            {"price", "1", "quantity", "1", "side", "buy", "ts", "1", "id", "1"},
            // Packed: a bad record spoils the whole entry (its good first record too), and so
            // does a truncated one, an empty one, or a format this version does not know.
            {"format", "1", "trades", "BAD3 1 1 buy 1 1\nBAD3 1 -1 buy 1 2"},
            {"format", "1", "trades", "BAD4 1 1 buy 1 1\nBAD4 1 1 bu"},
            {"format", "1", "trades", ""},
            {"format", "2", "trades", "BAD5 1 1 buy 1 1"}};
        send(bad, [](std::size_t i) { return i % partitions; });
    }

private:
    /// KEYS stream; ARGV n, n field-value words, n, ...: one XADD per entry, in order.
    static constexpr std::string_view append_script = R"lua(
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call('XADD', KEYS[1], '*', unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1
)lua";

    static redis::cluster_client::options options(int port) {
        redis::cluster_client::options o;
        o.seeds.push_back({"127.0.0.1", port, {}});
        o.timeout = 2s;
        return o;
    }

    /// Appends `entries[i]` to partition `partition_of(i)`'s stream, in order per stream.
    template <class PartitionOf>
    void send(const std::vector<std::vector<std::string>>& entries, PartitionOf partition_of) {
        constexpr std::size_t batch = 400;
        std::vector<std::vector<redis::cluster_command>> queued(partitions);
        for (std::size_t i = 0; i < entries.size(); ++i) {
            const std::size_t k = partition_of(i);
            const std::string key = redis::stream_key(prefix, k);
            if (queued[k].empty() || queued[k].back().args.size() >= 4 + 13 * batch) {
                queued[k].push_back(
                    {{"EVAL", std::string(append_script), "1", key}, redis::key_slot(key)});
            }
            auto& args = queued[k].back().args;
            args.push_back(std::to_string(entries[i].size()));
            args.insert(args.end(), entries[i].begin(), entries[i].end());
        }
        std::vector<std::size_t> next(partitions, 0);
        for (int attempt = 0;; ++attempt) {
            REQUIRE(attempt < 2'000);
            std::vector<redis::cluster_command> cmds;
            std::vector<std::size_t> whose;
            for (std::size_t k = 0; k < partitions; ++k) {
                if (next[k] < queued[k].size()) {
                    cmds.push_back(queued[k][next[k]]);
                    whose.push_back(k);
                }
            }
            if (cmds.empty()) {
                return;
            }
            std::vector<redis::command_result> r;
            client_.run(cmds, r);
            bool failed = false;
            for (std::size_t i = 0; i < cmds.size(); ++i) {
                if (r[i].ok()) {
                    ++next[whose[i]];
                    continue;
                }
                // A batch without a reply may have been appended. Here connections fail only
                // around a master's restart: a stopped master refuses connections, and the
                // connection it closed when it stopped was idle (the producer waits for every
                // reply before the test stops a master), so what was sent on it after was never
                // read. Anything else fails the test.
                INFO(r[i].error);
                REQUIRE((r[i].error.find("Connection refused") != std::string::npos ||
                         r[i].error.find("Server closed the connection") != std::string::npos ||
                         r[i].error.starts_with("CLUSTERDOWN") ||
                         r[i].error.starts_with("TRYAGAIN") || r[i].error.starts_with("LOADING") ||
                         r[i].error.starts_with("no Redis node reachable")));
                failed = true;
            }
            if (failed) {
                std::this_thread::sleep_for(50ms);
            }
        }
    }

    redis::cluster_client client_;
};

std::string get(std::uint16_t port, const std::string& path) {
    try {
        testing::raw_client c(port);
        if (!c.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n")) {
            return {};
        }
        return c.read_response().res.body();
    } catch (const std::exception&) {
        return {};
    }
}

/// Every stream's group has delivered and acknowledged everything: its last delivered id is
/// the stream's last id, and nothing is pending. (Not XINFO's `lag`: a master that reloads the
/// group from its append-only file no longer knows it, and reports it as nil.)
bool all_acknowledged(testing::redis_cluster& cluster) {
    redis::cluster_client::options o;
    for (std::size_t n = 0; n < cluster.size(); ++n) {
        o.seeds.push_back({"127.0.0.1", cluster.node(n).port(), {}});
    }
    o.timeout = 2s;
    redis::cluster_client client(o);
    for (std::size_t k = 0; k < partitions; ++k) {
        const std::string key = redis::stream_key(prefix, k);
        const std::uint16_t slot = redis::key_slot(key);
        std::vector<redis::cluster_command> cmds{{{"XINFO", "STREAM", key}, slot},
                                                 {{"XINFO", "GROUPS", key}, slot}};
        std::vector<redis::command_result> r;
        client.run(cmds, r);
        if (!r[0].ok() || !r[1].ok() || r[1].reply->type != REDIS_REPLY_ARRAY ||
            r[1].reply->elements != 1) {
            return false;
        }
        const redisReply* group = r[1].reply->element[0];
        long long pending = -1;
        for (std::size_t f = 0; group->type == REDIS_REPLY_ARRAY && f + 1 < group->elements;
             f += 2) {
            const redisReply* name = group->element[f];
            const redisReply* value = group->element[f + 1];
            if (name->type == REDIS_REPLY_STRING &&
                std::string_view(name->str, name->len) == "pending" &&
                value->type == REDIS_REPLY_INTEGER) {
                pending = value->integer;
            }
        }
        const auto last = redis::entry_fields(r[0].reply.get())("last-generated-id");
        const auto delivered = redis::entry_fields(group)("last-delivered-id");
        if (pending != 0 || !last || last != delivered) {
            return false;
        }
    }
    return true;
}

std::vector<std::string> instance_env(const std::string& id, int http_port,
                                      testing::redis_cluster& cluster) {
    const std::string seeds = cluster.seed_list();
    return {"REDIS_ADDR=" + seeds,
            "REDIS_KEY_PREFIX=" + prefix,
            "INGEST_STREAMS=" + std::to_string(partitions),
            "INSTANCE_ID=" + id,
            "STREAM_LEASE_TTL=1500ms",
            "STREAM_READ_COUNT=500",
            "STREAM_CHECKPOINT_INTERVAL=500ms",
            "REDIS_READ_TIMEOUT=1s",
            "HTTP_ADDR=127.0.0.1:" + std::to_string(http_port),
            "HTTP_THREADS=1",
            "SHUTDOWN_TIMEOUT=20s"};
}

} // namespace

TEST_CASE("stream ingest: two instances, SIGKILL, restart, reshard, master restart, exact") {
    testing::redis_cluster cluster(3, true);
    testing::stream_options o;
    o.tokens = 150;
    o.trades = 60'000;
    o.ms_per_trade = 10;
    o.late_fraction = 0.0; // the reference is a pipeline: lateness is tested elsewhere
    const testing::trade_stream s = testing::make_stream(o);
    const std::size_t sixth = s.arrivals.size() / 6;
    producer out(cluster.node(0).port());

    const int port_a = testing::free_port();
    const int port_b = testing::free_port();
    auto a = std::make_unique<testing::server_process>(instance_env("a", port_a, cluster));
    testing::server_process b(instance_env("b", port_b, cluster));
    const auto figure = [](int port, const std::string& name) {
        const std::string body = get(static_cast<std::uint16_t>(port), "/performance");
        const std::string field = "\"" + name + "\":";
        const auto at = body.find(field);
        return at == std::string::npos ? -1 : std::atoi(body.c_str() + at + field.size());
    };
    const auto held = [&](int port) { return figure(port, "partitions_held"); };
    // Both serve, and share the partitions two and two.
    REQUIRE(testing::eventually([&] { return held(port_a) == 2 && held(port_b) == 2; }, 20s));

    // 1. A plain run, with invalid entries among the trades.
    out.append(s, 0, sixth);
    out.append_invalid();
    REQUIRE(testing::eventually([&] { return all_acknowledged(cluster); }, 60s));
    // Each invalid entry was read once, by one of them, and counted.
    CHECK(figure(port_a, "entries_invalid") + figure(port_b, "entries_invalid") == 7);

    CHECK(figure(port_a, "checkpoints_written") > 0);
    CHECK(figure(port_b, "checkpoints_written") > 0);

    // 2. Instance a is killed mid-stream; b takes its partitions over once its leases lapse.
    // Packed entries from here on in places, mixed with single ones in the same streams.
    out.append(s, sixth, sixth + sixth / 2, 37);
    a->signal(SIGKILL);
    CHECK(a->wait() == -1);
    a.reset();
    out.append(s, sixth + sixth / 2, 2 * sixth);
    CHECK(testing::eventually([&] { return held(port_b) == 4; }, 10s));
    // b started a's partitions from a's checkpoints, and replayed only what followed them.
    CHECK(figure(port_b, "checkpoints_loaded") >= 2);
    CHECK(figure(port_b, "checkpoints_refused") == 0);

    // 3. a comes back (same INSTANCE_ID, a new process) and gets its share again.
    a = std::make_unique<testing::server_process>(instance_env("a", port_a, cluster));
    out.append(s, 2 * sixth, 3 * sixth, 100);
    CHECK(testing::eventually([&] { return held(port_a) == 2 && held(port_b) == 2; }, 20s));

    // 4. A slot range moves between masters while trades keep coming.
    const std::string from_id = cluster.node(0).command({"CLUSTER", "MYID"});
    const std::string to_id = cluster.node(1).command({"CLUSTER", "MYID"});
    std::thread reshard([&] {
        const std::string cmd =
            "redis-cli --cluster reshard 127.0.0.1:" + std::to_string(cluster.node(0).port()) +
            " --cluster-from " + from_id + " --cluster-to " + to_id +
            " --cluster-slots 3000 --cluster-yes >/dev/null 2>&1";
        CHECK(std::system(cmd.c_str()) == 0);
    });
    for (std::size_t i = 3 * sixth; i < 4 * sixth; i += sixth / 10) {
        out.append(s, i, std::min(4 * sixth, i + sixth / 10));
        std::this_thread::sleep_for(50ms);
    }
    reshard.join();
    out.append(s, 4 * sixth, 5 * sixth);

    // 5. A master (the one that took the resharded slots) stops and starts again, its
    //    append-only file keeping its data, while trades keep coming: its slots' reads and
    //    writes wait for it, and leases it holds may lapse.
    const std::size_t rest = s.arrivals.size() - 5 * sixth;
    out.append(s, 5 * sixth, 5 * sixth + rest / 3);
    cluster.node(1).stop();
    std::this_thread::sleep_for(300ms);
    cluster.node(1).start();
    out.append(s, 5 * sixth + rest / 3, s.arrivals.size(), 10);

    REQUIRE(testing::eventually([&] { return all_acknowledged(cluster); }, 120s));
    // Nothing read is left unacknowledged, and nothing waits to be written.
    for (const int port : {port_a, port_b}) {
        CHECK(testing::eventually([&] {
            return figure(port, "entries_unacked") == 0 && figure(port, "tokens_waiting") == 0;
        }));
    }
    // Every trade arrived in its token's order: none was late.
    for (const int port : {port_a, port_b}) {
        const std::string body = get(static_cast<std::uint16_t>(port), "/performance");
        INFO(body);
        CHECK(body.find("\"trades_late\":0,") != std::string::npos);
    }
    a->signal(SIGTERM);
    b.signal(SIGTERM);
    CHECK(a->wait() == 0);
    CHECK(b.wait() == 0);

    const auto ref = tradeagg::testing::reference_run(s);
    std::size_t keys = 0;
    const testing::mismatch_log log = testing::compare_cluster_with(
        cluster.node(0).port(), ref->sink(), prefix, tradeagg::throughput_policy::intervals, &keys);
    INFO(log.text());
    CHECK(log.count == 0);
    CHECK(keys > 1'000);
}

#endif
