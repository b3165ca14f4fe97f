#pragma once
// Rebuilding a partition a stream consumer has just acquired ("Exactly once" in
// stream_consumer.hpp): its state is loaded from its newest checkpoint and read again from its
// stream after it, up to what the former epochs' groups had delivered; only what Redis lacks is
// written, this epoch's group delivers from there, and the former groups are destroyed.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <hiredis/hiredis.h>

#include <tradeagg/detail/string_map.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/consumer_control.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/partition_checkpoints.hpp>
#include <tradeagg/redis/partition_engine.hpp>
#include <tradeagg/redis/partition_leases.hpp>
#include <tradeagg/redis/partition_writer.hpp>
#include <tradeagg/redis/script_client.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/stream_consumer_config.hpp>
#include <tradeagg/redis/stream_consumer_stats.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/redis/stream_reply.hpp>
#include <tradeagg/runtime_config.hpp>

namespace tradeagg::redis::detail {

/// Starts a partition over from its stream. The consumer's thread only.
template <policy Policy>
class partition_rebuilder {
    using partition = stream_partition<Policy>;
    using engine = partition_engine<Policy>;

public:
    partition_rebuilder(const stream_consumer_config& cfg, const resolved_config<Policy>& pipeline,
                        script_client& client, partition_leases<Policy>& leases,
                        partition_writer<Policy>& writer,
                        partition_checkpoints<Policy>& checkpoints, consumer_control& control)
        : cfg_(cfg), pipeline_(pipeline), client_(client), leases_(leases), writer_(writer),
          checkpoints_(checkpoints), control_(control) {}

    partition_rebuilder(const partition_rebuilder&) = delete;
    partition_rebuilder& operator=(const partition_rebuilder&) = delete;

    /// Builds the state of a partition just acquired from its newest checkpoint and the stream
    /// after it (or the whole stream) up to what the former groups had delivered, writes what
    /// Redis lacks, and starts this epoch's group there. False if Redis did not let it finish.
    bool rebuild(partition& p) {
        p.checkpoint = {};
        // This epoch's group (created with the stream if need be), and how far the former
        // epochs' groups delivered: the new group delivers from there.
        p.group = cfg_.group + "@" + std::to_string(p.epoch);
        command_result created = client_.run_one(
            cluster_command{{"XGROUP", "CREATE", p.stream, p.group, "0", "MKSTREAM"}, p.slot});
        if (!created.ok() && !created.error.starts_with("BUSYGROUP")) {
            control_.note_error(p.stream + ": XGROUP CREATE: " + created.error);
            return false;
        }
        command_result info =
            client_.run_one(cluster_command{{"XINFO", "GROUPS", p.stream}, p.slot});
        if (!info.ok()) {
            control_.note_error(p.stream + ": XINFO GROUPS: " + info.error);
            return false;
        }
        std::vector<std::string> former;
        stream_id delivered{};
        for (consumer_group_info& g : consumer_groups(info.reply.get(), cfg_.group)) {
            if (g.name != p.group) {
                delivered = std::max(delivered, g.delivered);
                former.push_back(std::move(g.name));
            }
        }
        if (delivered != stream_id{}) {
            command_result set = client_.run_one(
                cluster_command{{"XGROUP", "SETID", p.stream, p.group, delivered.text()}, p.slot});
            if (!set.ok()) {
                control_.note_error(p.stream + ": XGROUP SETID: " + set.error);
                return false;
            }
        }
        std::optional<stream_id> checkpoint;
        if (!checkpoints_.load(p, delivered, checkpoint)) {
            return false;
        }
        if (!checkpoint) {
            p.state = std::make_unique<engine>(pipeline_);
        }
        std::string from = checkpoint ? "(" + checkpoint->text() : "-";
        const std::string to = delivered.text();
        tradeagg::detail::string_map<std::optional<stream_id>> stored;
        stream_entries entries;
        std::vector<bool> in_redis; ///< per trade of `entries`: its effect is in Redis already
        while (delivered != stream_id{} && delivered != checkpoint && p.epoch != 0) {
            command_result r = client_.run_one(cluster_command{
                {"XRANGE", p.stream, from, to, "COUNT", std::to_string(cfg_.read_count)}, p.slot});
            if (!r.ok()) {
                control_.note_error(p.stream + ": XRANGE: " + r.error);
                return false;
            }
            entries.clear();
            parse_entries(r.reply.get(), entries);
            if (entries.entries.empty()) {
                break;
            }
            if (!load_stored(entries.trades, stored)) {
                return false;
            }
            // A trade of an entry at or below its token's stored id is in Redis already: it
            // is applied, and what it changed is not written. A token's such trades come
            // before its others, so applying them all first keeps each token's order.
            in_redis.assign(entries.trades.size(), false);
            std::size_t skipped = 0;
            for (const stream_entry_view& e : entries.entries) {
                for (std::size_t i = e.first; i < e.first + e.count; ++i) {
                    const auto s = stored.find(entries.trades[i].token);
                    in_redis[i] = s != stored.end() && s->second && e.id <= *s->second;
                    skipped += in_redis[i] ? 1 : 0;
                }
            }
            writer_.apply(
                p, entries, [&](const stream_entry_view&, std::size_t i) { return in_redis[i]; },
                false);
            p.state->sink.tokens.clear(); // in Redis already
            writer_.apply(
                p, entries, [&](const stream_entry_view&, std::size_t i) { return !in_redis[i]; },
                true);
            writer_.hand_over(p, {}, entries.trades.size() - skipped);
            control_.update([&](stream_consumer_stats& s) {
                s.entries_replayed += entries.entries.size();
                s.entries_skipped += skipped;
            });
            // A long stream takes a while: keep every lease held meanwhile (this one too).
            leases_.renew_due();
            p.checkpoint.applied = entries.entries.back().id;
            from = "(" + std::string(entries.entries.back().id_text);
            if (entries.entries.back().id >= delivered) {
                break;
            }
        }
        // What the rebuild wrote is in Redis before the former groups go: an instance still
        // reading one of them (its lease lapsed unseen) then finds it gone (NOGROUP) and stops.
        if (p.epoch == 0 || !writer_.drain({&p})) {
            return false;
        }
        for (const std::string& name : former) {
            command_result gone =
                client_.run_one(cluster_command{{"XGROUP", "DESTROY", p.stream, name}, p.slot});
            if (!gone.ok()) {
                control_.note_error(p.stream + ": XGROUP DESTROY " + name + ": " + gone.error);
            }
        }
        leases_.renew_due();
        return p.epoch != 0;
    }

private:
    /// Reads the stored `stream_id` of every token of `trades` not looked up yet.
    bool load_stored(const std::vector<trade_view>& trades,
                     tradeagg::detail::string_map<std::optional<stream_id>>& stored) {
        std::vector<cluster_command> cmds;
        std::vector<std::string> names;
        for (const trade_view& t : trades) {
            std::string name(t.token);
            if (stored.contains(name)) {
                continue;
            }
            stored.emplace(name, std::nullopt);
            cmds.push_back(cluster_command{{"HGET", latest_key(cfg_.key_prefix, name), "stream_id"},
                                           token_slot(name)});
            names.push_back(std::move(name));
        }
        if (cmds.empty()) {
            return true;
        }
        std::vector<command_result> r;
        for (int attempt = 0;; ++attempt) {
            client_.run(cmds, r);
            const bool all = std::all_of(r.begin(), r.end(), [](auto& x) { return x.ok(); });
            if (all) {
                break;
            }
            if (attempt == 20 || control_.stopping()) {
                for (const std::string& n : names) {
                    stored.erase(n);
                }
                control_.note_error("reading stored stream ids: " + client_.cluster().last_error());
                return false;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        for (std::size_t i = 0; i < names.size(); ++i) {
            if (r[i].reply->type == REDIS_REPLY_STRING) {
                stored[names[i]] =
                    stream_id::parse(std::string_view(r[i].reply->str, r[i].reply->len));
            }
        }
        return true;
    }

    const stream_consumer_config& cfg_;
    const resolved_config<Policy>& pipeline_;
    script_client& client_;
    partition_leases<Policy>& leases_;
    partition_writer<Policy>& writer_;
    partition_checkpoints<Policy>& checkpoints_;
    consumer_control& control_;
};

} // namespace tradeagg::redis::detail
