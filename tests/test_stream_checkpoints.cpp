// Partition checkpoints of stream ingest: the stored format reads back whole or is refused; the
// script that stores one is fenced by the lease, keeps the one before and trims the stream; a
// new holder (after a SIGKILL) starts from the newest that reads back and replays only what
// follows it, exactly; one that stops stores a checkpoint of everything; and Redis running out
// of memory while a checkpoint is stored loses nothing.

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <tradeagg/redis/checkpoint_format.hpp>
#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/partition_checkpoints.hpp>
#include <tradeagg/redis/stream_consumer.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/redis/stream_reply.hpp>
#include <tradeagg/tradeagg.hpp>

#include "redis_cluster.hpp"
#include "redis_keyspace.hpp"
#include "trade_stream.hpp"

using namespace tradeagg;
namespace testing = tradeagg::testing;

namespace {

constexpr std::size_t partitions = 4;
const std::string prefix = "ck";

bool eventually(const std::function<bool()>& done,
                std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() >= until) {
            return done();
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
}

testing::trade_stream checkpoint_stream() {
    testing::stream_options o;
    o.tokens = 300;
    o.trades = 24'000;
    o.ms_per_trade = 20;
    o.late_fraction = 0.0; // the reference is a pipeline: lateness is tested elsewhere
    return testing::make_stream(o);
}

redis::cluster_client::options options(int port) {
    redis::cluster_client::options o;
    o.seeds.push_back({"127.0.0.1", port, {}});
    o.timeout = std::chrono::seconds(2);
    return o;
}

/// Appends arrivals [from, to) of `s` to the partition streams, one entry each, in order.
void append(redis::cluster_client& client, const testing::trade_stream& s, std::size_t from,
            std::size_t to) {
    std::vector<redis::cluster_command> cmds;
    for (std::size_t i = from; i < to; ++i) {
        const auto& a = s.arrivals[i];
        const trade_view t{
            s.names[a.token_index], a.t.price, a.t.quantity, a.t.taker, a.t.ts_ms, a.t.id};
        const std::string key = redis::stream_key(prefix, redis::partition_of(t.token, partitions));
        redis::cluster_command c{{"XADD", key, "*"}, redis::key_slot(key)};
        redis::for_each_field(t, [&c](std::string_view f, std::string_view v) {
            c.args.emplace_back(f);
            c.args.emplace_back(v);
        });
        cmds.push_back(std::move(c));
    }
    std::vector<redis::command_result> r;
    client.run(cmds, r);
    for (const auto& x : r) {
        REQUIRE(x.ok());
    }
}

redis::stream_consumer_config consumer_config(const std::string& instance, int port,
                                              std::chrono::milliseconds interval) {
    redis::stream_consumer_config c;
    c.key_prefix = prefix;
    c.partitions = partitions;
    c.instance = instance;
    c.lease_ttl = std::chrono::milliseconds(1'500);
    c.read_count = 500;
    c.checkpoint_interval = interval;
    c.redis = options(port);
    return c;
}

using consumer = redis::stream_consumer<throughput_policy>;

/// Runs a command on the node serving `key`'s slot and returns its reply as text ("" if none).
std::string on_slot(redis::cluster_client& client, const std::string& key,
                    std::vector<std::string> args);

std::string reply_text(const redis::command_result& r) {
    return r.ok() && r.reply->type == REDIS_REPLY_STRING ? std::string(r.reply->str, r.reply->len)
                                                         : std::string();
}

std::string on_slot(redis::cluster_client& client, const std::string& key,
                    std::vector<std::string> args) {
    const auto r = client.run_one({std::move(args), redis::key_slot(key)});
    if (!r.ok()) {
        return {};
    }
    if (r.reply->type == REDIS_REPLY_INTEGER) {
        return std::to_string(r.reply->integer);
    }
    if (r.reply->type == REDIS_REPLY_STATUS) {
        return std::string(r.reply->str, r.reply->len);
    }
    return reply_text(r);
}

/// A field of partition k's checkpoint hash ("" if none).
std::string checkpoint_field(redis::cluster_client& client, std::size_t k, const char* field) {
    const std::string key = redis::checkpoint_key(prefix, k);
    return reply_text(client.run_one({{"HGET", key, field}, redis::key_slot(key)}));
}

std::string last_id(redis::cluster_client& client, std::size_t k) {
    const std::string key = redis::stream_key(prefix, k);
    const auto r =
        client.run_one({{"XREVRANGE", key, "+", "-", "COUNT", "1"}, redis::key_slot(key)});
    if (!r.ok() || r.reply->type != REDIS_REPLY_ARRAY || r.reply->elements == 0) {
        return {};
    }
    const redisReply* e = r.reply->element[0]->element[0];
    return std::string(e->str, e->len);
}

/// Entries of partition k's stream after `id`.
std::size_t entries_after(redis::cluster_client& client, std::size_t k, const std::string& id) {
    const std::string key = redis::stream_key(prefix, k);
    const auto r = client.run_one({{"XRANGE", key, "(" + id, "+"}, redis::key_slot(key)});
    REQUIRE(r.ok());
    return r.reply->elements;
}

/// Every stream's group has delivered and acknowledged everything.
bool all_acknowledged(redis::cluster_client& client) {
    for (std::size_t k = 0; k < partitions; ++k) {
        const std::string key = redis::stream_key(prefix, k);
        const auto r = client.run_one({{"XINFO", "GROUPS", key}, redis::key_slot(key)});
        if (!r.ok() || r.reply->type != REDIS_REPLY_ARRAY || r.reply->elements != 1) {
            return false;
        }
        const redisReply* group = r.reply->element[0];
        const auto fields = redis::entry_fields(group);
        const auto delivered = fields("last-delivered-id");
        long long pending = -1;
        for (std::size_t f = 0; f + 1 < group->elements; f += 2) {
            if (std::string_view(group->element[f]->str, group->element[f]->len) == "pending") {
                pending = group->element[f + 1]->integer;
            }
        }
        if (pending != 0 || !delivered || *delivered != last_id(client, k)) {
            return false;
        }
    }
    return true;
}

/// Every partition's checkpoint hash has `field`.
bool every_checkpoint_has(redis::cluster_client& client, const char* field) {
    for (std::size_t k = 0; k < partitions; ++k) {
        if (checkpoint_field(client, k, field).empty()) {
            return false;
        }
    }
    return true;
}

/// Every partition's newest checkpoint includes its stream's last entry.
bool checkpoints_current(redis::cluster_client& client) {
    for (std::size_t k = 0; k < partitions; ++k) {
        const std::string last = last_id(client, k);
        if (last.empty() || checkpoint_field(client, k, "id") != last) {
            return false;
        }
    }
    return true;
}

void check_exact(testing::redis_cluster& cluster, const testing::trade_stream& s) {
    const auto ref = testing::reference_run(s);
    std::size_t keys = 0;
    const testing::mismatch_log log = testing::compare_cluster_with(
        cluster.node(0).port(), ref->sink(), prefix, throughput_policy::intervals, &keys);
    INFO(log.text());
    CHECK(log.count == 0);
    CHECK(keys > 1'000);
    // Every token traded is listed in the token set, whichever holder wrote it first.
    std::set<std::string> traded;
    for (const testing::stream_trade& a : s.arrivals) {
        traded.insert(s.names[a.token_index]);
    }
    redis::cluster_client client(options(cluster.node(0).port()));
    const std::string key = redis::tokens_key(prefix);
    const redis::command_result listed = client.run_one({{"SMEMBERS", key}, redis::key_slot(key)});
    REQUIRE(listed.ok());
    std::set<std::string> names;
    for (std::size_t i = 0; i < listed.reply->elements; ++i) {
        names.emplace(listed.reply->element[i]->str, listed.reply->element[i]->len);
    }
    CHECK(names == traded);
}

/// What the tests on a cluster share: a 3-master cluster, a client, the trades, the settings.
struct cluster_fixture {
    testing::redis_cluster cluster{3};
    int port = cluster.node(0).port();
    redis::cluster_client client{options(port)};
    testing::trade_stream s = checkpoint_stream();
    std::size_t half = s.arrivals.size() / 2;
    resolved_config<throughput_policy> pipeline = resolve<throughput_policy>(runtime_config{});
};

} // namespace

TEST_CASE("checkpoint format: reads back whole, or is refused and never applied") {
    using engine_type = redis::detail::partition_engine<throughput_policy>;
    const auto pipeline = resolve<throughput_policy>(runtime_config{});
    const testing::trade_stream s = checkpoint_stream();
    engine_type engine(pipeline);
    std::string_view why;
    for (std::size_t i = 0; i < 2'000; ++i) {
        const auto& a = s.arrivals[i];
        REQUIRE(engine.push(trade_view{s.names[a.token_index], a.t.price, a.t.quantity, a.t.taker,
                                       a.t.ts_ms, a.t.id},
                            why));
        engine.applied[s.names[a.token_index]] = redis::stream_id{i + 1, 0};
    }
    engine.worker.apply_here();
    const redis::detail::checkpoint_header h{2, 9, redis::stream_id{2'000, 0}};
    const std::string blob = redis::detail::encode_checkpoint(engine, h);

    auto [back, loaded] = redis::detail::decode_checkpoint<throughput_policy>(blob, 2, pipeline);
    CHECK(back.partition == 2);
    CHECK(back.epoch == 9);
    CHECK(back.includes == h.includes);
    CHECK(loaded->applied == engine.applied);
    // Encoding the loaded state gives the same bytes: nothing was lost or changed.
    CHECK(redis::detail::encode_checkpoint(*loaded, h) == blob);

    // Another partition's, every truncation, and a flipped byte anywhere are refused.
    CHECK_THROWS_AS((void)redis::detail::decode_checkpoint<throughput_policy>(blob, 1, pipeline),
                    snapshot_error);
    for (std::size_t n = 0; n < blob.size(); n += 1 + n / 8) {
        CAPTURE(n);
        CHECK_THROWS_AS((void)redis::detail::decode_checkpoint<throughput_policy>(blob.substr(0, n),
                                                                                  2, pipeline),
                        snapshot_error);
    }
    for (std::size_t at = 0; at < blob.size(); at += 1 + at / 4) {
        CAPTURE(at);
        std::string bad = blob;
        bad[at] = static_cast<char>(bad[at] ^ 0x10);
        CHECK_THROWS_AS((void)redis::detail::decode_checkpoint<throughput_policy>(bad, 2, pipeline),
                        snapshot_error);
    }
    // Another policy's layout is refused even with a valid checksum.
    CHECK_THROWS_AS((void)redis::detail::decode_checkpoint<memory_constrained_policy>(
                        blob, 2, resolve<memory_constrained_policy>(runtime_config{})),
                    snapshot_error);
}

TEST_CASE("checkpoint script: fenced by the lease, keeps the one before, trims to it") {
    testing::redis_cluster cluster(3);
    redis::cluster_client client(options(cluster.node(0).port()));
    const std::string lease = redis::lease_key(prefix, 0);
    const std::string meta = redis::checkpoint_key(prefix, 0);
    const std::string data = redis::partition_key(prefix, "checkpoint-data", 0);
    const std::string previous = redis::partition_key(prefix, "checkpoint-previous", 0);
    const std::string stream = redis::stream_key(prefix, 0);
    const std::uint16_t slot = redis::key_slot(stream);
    for (int i = 1; i <= 10; ++i) {
        REQUIRE(client.run_one({{"XADD", stream, std::to_string(i) + "-0", "f", "v"}, slot}).ok());
    }
    const auto write = [&](const std::string& holder, const std::string& epoch,
                           const std::string& id, const std::string& blob,
                           const std::string& floor) {
        return client.run_one(
            {{"EVAL", std::string(redis::checkpoint_scripts::write), "6", lease, meta, data,
              previous, stream, redis::partition_key(prefix, "checkpoint-next", 0), holder, epoch,
              id, blob, "123", floor},
             slot});
    };
    const auto integer = [](const redis::command_result& r) {
        return r.ok() && r.reply->type == REDIS_REPLY_INTEGER ? r.reply->integer : -1;
    };
    const auto stored = [&](const std::string& key) {
        return reply_text(client.run_one({{"GET", key}, slot}));
    };
    // Not the lease's holder, or at another epoch: refused, nothing stored.
    REQUIRE(client.run_one({{"SET", lease, "x 7"}, slot}).ok());
    CHECK(integer(write("y", "7", "4-0", "one", "")) == 0);
    CHECK(integer(write("x", "6", "4-0", "one", "")) == 0);
    CHECK(stored(data).empty());
    // The holder: stored; nothing trimmed yet (there is no checkpoint before it).
    auto r = write("x", "7", "4-0", "one", "");
    REQUIRE(r.ok());
    REQUIRE(r.reply->type == REDIS_REPLY_ARRAY);
    CHECK(r.reply->element[1]->integer == 0);
    CHECK(stored(data) == "one");
    // The next keeps it as the previous and trims the stream to the entry it includes.
    r = write("x", "7", "8-0", "two", "");
    REQUIRE(r.ok());
    CHECK(r.reply->element[1]->integer == 3); // 1-0, 2-0, 3-0
    CHECK(stored(data) == "two");
    CHECK(stored(previous) == "one");
    CHECK(checkpoint_field(client, 0, "previous_id") == "4-0");
    CHECK(checkpoint_field(client, 0, "id") == "8-0");
    CHECK(checkpoint_field(client, 0, "bytes") == "3");
    // A retention floor lower than the previous checkpoint trims no further than it; "-" never.
    r = write("x", "7", "9-0", "three", "6-0");
    CHECK(r.reply->element[1]->integer == 2); // 4-0, 5-0: 6-0 is within the floor
    r = write("x", "7", "10-0", "four", "-");
    CHECK(r.reply->element[1]->integer == 0);
    CHECK(on_slot(client, stream, {"XLEN", stream}) == "5");
    // A checkpoint of a later epoch is kept from a lease that went back to an earlier one.
    REQUIRE(client.run_one({{"HSET", meta, "epoch", "12"}, slot}).ok());
    CHECK(integer(write("x", "7", "10-0", "five", "")) == 0);
    CHECK(stored(data) == "four");
}

TEST_CASE_FIXTURE(
    cluster_fixture,
    "stream checkpoints: a new holder starts from the newest, replays what follows, exact") {

    // a, in a process of its own, takes one checkpoint per partition at its first round, then
    // none for a minute, and is killed (SIGKILL: no checkpoint at stop, no lease released): what
    // it applied after those checkpoints is replayed by the next holder.
    append(client, s, 0, half);
    const pid_t doomed = ::fork();
    REQUIRE(doomed >= 0);
    if (doomed == 0) {
        try {
            consumer a(consumer_config("a", port, std::chrono::seconds(60)), pipeline);
            a.start();
            for (;;) {
                ::pause();
            }
        } catch (...) {
            std::_Exit(1);
        }
    }
    const bool applied =
        eventually([&] { return all_acknowledged(client) && every_checkpoint_has(client, "id"); });
    ::kill(doomed, SIGKILL);
    ::waitpid(doomed, nullptr, 0);
    REQUIRE(applied);
    std::size_t after_checkpoints = 0;
    for (std::size_t k = 0; k < partitions; ++k) {
        const std::string id = checkpoint_field(client, k, "id");
        REQUIRE_FALSE(id.empty());
        after_checkpoints += entries_after(client, k, id);
    }
    CHECK(after_checkpoints > 0);
    CHECK(after_checkpoints < half);

    append(client, s, half, s.arrivals.size());
    consumer b(consumer_config("b", port, std::chrono::milliseconds(200)), pipeline);
    b.start();
    REQUIRE(eventually([&] { return all_acknowledged(client); }));
    // b checkpoints what it applied, each one trimming the stream to the one before.
    REQUIRE(eventually([&] { return checkpoints_current(client); }));
    REQUIRE(eventually([&] {
        const std::string key = redis::stream_key(prefix, 0);
        return on_slot(client, key, {"XLEN", key}) ==
               std::to_string(entries_after(client, 0, checkpoint_field(client, 0, "previous_id")) +
                              1);
    }));
    // Each stream has one group left, b's epoch's: a's were destroyed once b had rebuilt, so a
    // that outlived its lease unseen would find its group gone at its next read.
    for (std::size_t k = 0; k < partitions; ++k) {
        const std::string key = redis::stream_key(prefix, k);
        const std::string epoch = on_slot(client, key, {"GET", redis::epoch_key(prefix, k)});
        const auto groups = client.run_one({{"XINFO", "GROUPS", key}, redis::key_slot(key)});
        REQUIRE(groups.ok());
        const auto ours = redis::detail::consumer_groups(groups.reply.get(), "tradeagg");
        REQUIRE(ours.size() == 1);
        CHECK(ours.front().name == "tradeagg@" + epoch);
        const auto late = client.run_one(
            {{"XREADGROUP", "GROUP", "tradeagg@1", "a", "COUNT", "1", "STREAMS", key, ">"},
             redis::key_slot(key)});
        CHECK(late.error.starts_with("NOGROUP"));
    }
    CHECK(b.stop(std::chrono::seconds(10)));
    const auto st = b.stats();
    INFO(st.last_error);
    CHECK(st.checkpoints_loaded == partitions);
    CHECK(st.checkpoints_refused == 0);
    CHECK(st.entries_replayed == after_checkpoints); // not the half a applied before them
    CHECK(st.entries_trimmed > 0);
    CHECK(st.checkpoint_bytes > 0);
    check_exact(cluster, s);
}

TEST_CASE_FIXTURE(
    cluster_fixture,
    "stream checkpoints: corrupt, truncated or foreign ones are refused, nothing lost") {
    const auto data = [](std::size_t k) {
        return redis::partition_key(prefix, "checkpoint-data", k);
    };
    const auto previous = [](std::size_t k) {
        return redis::partition_key(prefix, "checkpoint-previous", k);
    };

    append(client, s, 0, half);
    {
        // The streams are never trimmed here, so a partition with no checkpoint that reads back
        // can replay its whole stream.
        auto c = consumer_config("a", port, std::chrono::milliseconds(100));
        c.retention = std::chrono::milliseconds(0);
        consumer a(c, pipeline);
        a.start();
        REQUIRE(eventually([&] { return a.stats().trades_applied == half; }));
        REQUIRE(eventually([&] {
            return checkpoints_current(client) && every_checkpoint_has(client, "previous_id");
        }));
        CHECK(a.stop(std::chrono::seconds(10)));
    }
    const auto flip = [&](const std::string& key) {
        const std::string len = on_slot(client, key, {"STRLEN", key});
        const std::string at = std::to_string(std::stoul(len) / 2);
        const std::string byte = on_slot(client, key, {"GETRANGE", key, at, at});
        REQUIRE(byte.size() == 1);
        REQUIRE(on_slot(client, key,
                        {"SETRANGE", key, at, std::string(1, static_cast<char>(byte[0] ^ 0x01))}) ==
                len);
    };
    // 0: the newest has a flipped byte: the one before is loaded.
    flip(data(0));
    // 1: the newest is cut short and the one before flipped: the whole stream is replayed.
    const std::string cut =
        std::to_string(std::stoul(on_slot(client, data(1), {"STRLEN", data(1)})) / 3);
    REQUIRE(on_slot(client, data(1),
                    {"SET", data(1), on_slot(client, data(1), {"GETRANGE", data(1), "0", cut})}) ==
            "OK");
    flip(previous(1));
    // 2: the newest is partition 3's: the one before is loaded.
    REQUIRE(on_slot(client, data(2),
                    {"SET", data(2), on_slot(client, data(3), {"GET", data(3)})}) == "OK");
    // 3: untouched.
    append(client, s, half, s.arrivals.size());
    consumer b(consumer_config("b", port, std::chrono::seconds(60)), pipeline);
    b.start();
    REQUIRE(eventually([&] { return all_acknowledged(client); }));
    CHECK(b.stop(std::chrono::seconds(10)));
    const auto st = b.stats();
    CHECK(st.checkpoints_refused == 4);
    CHECK(st.checkpoints_loaded == 3);
    CHECK(st.last_error.find("refused") != std::string::npos);
    check_exact(cluster, s);
}

TEST_CASE_FIXTURE(cluster_fixture,
                  "stream checkpoints: Redis out of memory while one is stored loses nothing") {
    const auto set_maxmemory = [&](const char* bytes) {
        for (std::size_t n = 0; n < cluster.size(); ++n) {
            (void)cluster.node(n).command({"CONFIG", "SET", "maxmemory", bytes});
        }
    };
    const std::string stream0 = redis::stream_key(prefix, 0);
    const std::size_t part = s.arrivals.size() / 8;

    consumer a(consumer_config("a", port, std::chrono::seconds(4)), pipeline);
    a.start();
    // Trades whose writes are all in and whose checkpoint is not taken yet (the one after the
    // first round is, the next one is due 4 s later); then Redis has no memory left for any
    // write (the checkpoint's first one), while its reads still work.
    std::size_t sent = 0;
    bool between = false;
    for (int attempt = 0; attempt < 5 && !between; ++attempt) {
        const std::uint64_t written = a.stats().checkpoints_written;
        const std::size_t to = sent + part;
        append(client, s, sent, to);
        sent = to;
        REQUIRE(eventually(
            [&] { return a.stats().entries_acked == sent && a.stats().tokens_waiting == 0; }));
        set_maxmemory("1");
        std::this_thread::sleep_for(std::chrono::milliseconds(200)); // a write in flight lands
        between = a.stats().checkpoints_written == written && !checkpoints_current(client);
        if (!between) {
            set_maxmemory("0"); // a checkpoint came in between: once more
            REQUIRE(eventually([&] { return checkpoints_current(client); }));
        }
    }
    REQUIRE(between);
    std::vector<std::string> stored(partitions);
    for (std::size_t k = 0; k < partitions; ++k) {
        stored[k] = checkpoint_field(client, k, "id");
    }
    const std::string length = on_slot(client, stream0, {"XLEN", stream0});
    REQUIRE(eventually([&] { return a.stats().checkpoint_errors > 0; }, std::chrono::seconds(20)));
    CHECK(a.stats().last_error.find("OOM") != std::string::npos);
    // Refused whole: the stored checkpoints and the stream are as they were.
    for (std::size_t k = 0; k < partitions; ++k) {
        CHECK(checkpoint_field(client, k, "id") == stored[k]);
    }
    CHECK(on_slot(client, stream0, {"XLEN", stream0}) == length);
    // Memory back: the next checkpoint is stored, and more trades go through.
    set_maxmemory("0");
    REQUIRE(eventually([&] { return checkpoints_current(client); }));
    append(client, s, sent, s.arrivals.size());
    REQUIRE(eventually([&] {
        return a.stats().entries_acked == s.arrivals.size() && a.stats().tokens_waiting == 0;
    }));
    CHECK(a.stop(std::chrono::seconds(10)));

    // A new holder from those checkpoints: still exact.
    consumer b(consumer_config("b", port, std::chrono::seconds(60)), pipeline);
    b.start();
    REQUIRE(eventually([&] { return b.stats().partitions_held == partitions; }));
    CHECK(b.stop(std::chrono::seconds(10)));
    CHECK(b.stats().checkpoints_loaded == partitions);
    CHECK(b.stats().entries_replayed == 0); // a stored a checkpoint of everything as it stopped
    check_exact(cluster, s);
}
