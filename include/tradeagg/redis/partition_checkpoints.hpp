#pragma once
// Partition checkpoints ("Checkpoints" in stream_consumer.hpp): every `checkpoint_interval` the
// holder of a partition encodes its state (checkpoint_format.hpp); once Redis has every token
// write covering the entries it includes, one script stores it in the partition's slot, fenced by
// the lease, keeps the one before it, and trims the stream to that one. A new holder loads the
// newest checkpoint that reads back and replays only the entries after it.
//
// Keys, all in the partition's slot {p<k>}:
//   <prefix>:checkpoint:{p<k>}           hash: epoch, id (the entry included), bytes, time_ms,
//                                        previous_epoch, previous_id
//   <prefix>:checkpoint-data:{p<k>}      string: the newest checkpoint
//   <prefix>:checkpoint-previous:{p<k>}  string: the one before it
//   <prefix>:checkpoint-next:{p<k>}      string: the one being stored, for the script's while
// The stream keeps every entry after the previous checkpoint, so a newest checkpoint that does
// not read back falls back to the previous one, still exactly.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <hiredis/hiredis.h>

#include <tradeagg/detail/byte_codec.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/redis/checkpoint_format.hpp>
#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/consumer_control.hpp>
#include <tradeagg/redis/partition_leases.hpp>
#include <tradeagg/redis/script_client.hpp>
#include <tradeagg/redis/stream_consumer_config.hpp>
#include <tradeagg/redis/stream_consumer_stats.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/redis/write_behind.hpp>
#include <tradeagg/runtime_config.hpp>

namespace tradeagg::redis {

/// `<prefix>:checkpoint:{p<partition>}`: what the partition's checkpoints include. Allocates.
[[nodiscard]] inline std::string checkpoint_key(std::string_view prefix, std::size_t partition) {
    return partition_key(prefix, "checkpoint", partition);
}

namespace checkpoint_scripts {

/// Stores a checkpoint, only for the lease's holder, keeping the one before it, and trims the
/// stream to the entry that one includes (or to `floor`, if it is lower).
///
///   KEYS  lease, checkpoint, checkpoint-data, checkpoint-previous, stream, checkpoint-next
///   ARGV  instance, epoch, id (the entry it includes), data, now_ms,
///         floor: "" trims to the previous checkpoint, "-" never trims, an id trims no higher
///   ->    0 if the lease is not the caller's at that epoch; else {1, entries trimmed}
///
/// Its first write is the SET of the new checkpoint, which Redis refuses when it is out of
/// memory; once a script has written, Redis lets it finish. So a refused checkpoint leaves the
/// stored ones and the stream as they were.
inline constexpr std::string_view write = R"lua(
if redis.call('GET', KEYS[1]) ~= ARGV[1] .. ' ' .. ARGV[2] then
  return 0
end
local previous = redis.call('HMGET', KEYS[2], 'epoch', 'id')
if previous[1] and tonumber(previous[1]) > tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[6], ARGV[4])
if previous[2] and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('RENAME', KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[2], 'previous_epoch', previous[1], 'previous_id', previous[2])
end
redis.call('RENAME', KEYS[6], KEYS[3])
redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'id', ARGV[3], 'bytes', #ARGV[4], 'time_ms', ARGV[5])
local trimmed = 0
if previous[2] and ARGV[6] ~= '-' then
  local bound = previous[2]
  if ARGV[6] ~= '' then
    local bm, bs = string.match(bound, '^(%d+)-(%d+)$')
    local fm, fs = string.match(ARGV[6], '^(%d+)-(%d+)$')
    bm, bs, fm, fs = tonumber(bm), tonumber(bs), tonumber(fm), tonumber(fs)
    if fm < bm or (fm == bm and fs < bs) then
      bound = ARGV[6]
    end
  end
  trimmed = redis.call('XTRIM', KEYS[5], 'MINID', bound)
end
return {1, trimmed}
)lua";

} // namespace checkpoint_scripts

namespace detail {

/// Takes, writes and loads a stream consumer's partition checkpoints. The consumer's thread
/// only.
template <policy Policy>
class partition_checkpoints {
public:
    using partition = stream_partition<Policy>;
    using engine = partition_engine<Policy>;
    using clock = std::chrono::steady_clock;

    partition_checkpoints(const stream_consumer_config& cfg,
                          const resolved_config<Policy>& pipeline, script_client& client,
                          partition_leases<Policy>& leases, write_behind& behind,
                          consumer_control& control)
        : cfg_(cfg), pipeline_(pipeline), client_(client), leases_(leases), behind_(behind),
          control_(control) {}

    partition_checkpoints(const partition_checkpoints&) = delete;
    partition_checkpoints& operator=(const partition_checkpoints&) = delete;

    /// Checkpoints are taken (`checkpoint_interval` above zero).
    [[nodiscard]] bool enabled() const noexcept { return cfg_.checkpoint_interval.count() > 0; }

    /// The state of `p` now includes every entry up to `last` (its changes handed to the
    /// writer): takes a checkpoint if one is due.
    void applied(partition& p, const stream_id& last) {
        p.checkpoint.applied = last;
        take_if_due(p);
    }

    /// Takes a checkpoint of `p` if checkpoints are on, one is due, none waits to be written, and
    /// the state changed since the last one. Allocates the checkpoint (the state's size).
    void take_if_due(partition& p) {
        auto& c = p.checkpoint;
        if (!enabled() || p.epoch == 0 || !p.state || !c.blob.empty() || c.applied <= c.taken ||
            clock::now() < c.due) {
            return;
        }
        c.blob = encode_checkpoint(*p.state, checkpoint_header{p.index, p.epoch, c.applied});
        c.generation = p.awaiting.empty() ? 0 : p.awaiting.back().generation;
        c.taken = c.applied;
        c.due = clock::now() + cfg_.checkpoint_interval;
    }

    /// Takes and stores a checkpoint of each of `parts` whose state changed since its last one,
    /// whenever one is due: for partitions given up (released, or at stop) after their writes
    /// were drained, so that the next holder replays nothing. Stored only if every write it
    /// covers is in Redis (a drain cut short by the stop's deadline stores nothing); a
    /// checkpoint Redis refuses is counted as any. The next holder then starts from the one
    /// before.
    void store_now(const std::vector<partition*>& parts) {
        if (!enabled()) {
            return;
        }
        std::vector<partition*> due;
        for (partition* p : parts) {
            if (p->epoch != 0 && !p->checkpoint.sending) {
                p->checkpoint.blob.clear(); // one taken earlier includes less
                p->checkpoint.due = {};
                take_if_due(*p);
                due.push_back(p);
            }
        }
        std::vector<cluster_command> cmds;
        std::vector<partition*> owner;
        collect_writes(due, cmds, owner);
        if (cmds.empty()) {
            return;
        }
        std::vector<command_result> r;
        client_.run(cmds, r);
        written(r, 0, owner);
    }

    /// Appends the write of every checkpoint of `parts` whose entries' writes are all in Redis
    /// to `cmds` (noting whose it is in `owner`).
    void collect_writes(const std::vector<partition*>& parts, std::vector<cluster_command>& cmds,
                        std::vector<partition*>& owner) {
        for (partition* p : parts) {
            auto& c = p->checkpoint;
            if (p->epoch == 0 || c.blob.empty() || c.sending) {
                continue;
            }
            const write_progress w = behind_.progress(p->index);
            if (c.generation != 0 && (w.epoch != p->epoch || w.written < c.generation)) {
                continue;
            }
            std::string floor;
            if (cfg_.retention && cfg_.retention->count() == 0) {
                floor = "-";
            } else if (cfg_.retention) {
                const std::int64_t at = wall_ms() - cfg_.retention->count();
                floor =
                    stream_id{static_cast<std::uint64_t>(std::max<std::int64_t>(at, 0)), 0}.text();
            }
            cmds.push_back(client_.script(
                checkpoint_scripts::write, p->slot,
                {p->lease, checkpoint_key(cfg_.key_prefix, p->index),
                 partition_key(cfg_.key_prefix, "checkpoint-data", p->index),
                 partition_key(cfg_.key_prefix, "checkpoint-previous", p->index), p->stream,
                 partition_key(cfg_.key_prefix, "checkpoint-next", p->index), leases_.holder(),
                 std::to_string(p->epoch), c.taken.text(), c.blob, std::to_string(wall_ms()),
                 std::move(floor)},
                6));
            c.sending = true;
            owner.push_back(p);
        }
    }

    /// Takes the replies of the writes `collect_writes` added (one per `owner`, from `first`
    /// on). A write Redis refused (out of memory, say) is dropped: the next one is due an
    /// interval later, and the stored checkpoints stay as they were, the stream untrimmed.
    void written(const std::vector<command_result>& r, std::size_t first,
                 const std::vector<partition*>& owner) {
        for (std::size_t i = 0; i < owner.size(); ++i) {
            partition& p = *owner[i];
            const command_result& res = r[first + i];
            const std::size_t bytes = p.checkpoint.blob.size();
            p.checkpoint.blob.clear();
            p.checkpoint.blob.shrink_to_fit();
            p.checkpoint.sending = false;
            if (p.epoch == 0) {
                continue;
            }
            if (res.ok() && res.reply->type == REDIS_REPLY_INTEGER) {
                leases_.drop(p, "lease " + p.lease + " is no longer held (checkpoint)");
                continue;
            }
            if (!res.ok() || res.reply->type != REDIS_REPLY_ARRAY || res.reply->elements != 2) {
                control_.note_error(p.stream + ": checkpoint not stored: " +
                                    (res.ok() ? std::string("unexpected reply") : res.error));
                p.checkpoint.taken = stream_id{}; // the next one is taken whatever changed
                control_.update([](stream_consumer_stats& s) { ++s.checkpoint_errors; });
                continue;
            }
            const redisReply* trimmed = res.reply->element[1];
            const std::uint64_t removed = trimmed->type == REDIS_REPLY_INTEGER
                                              ? static_cast<std::uint64_t>(trimmed->integer)
                                              : 0;
            control_.update([&](stream_consumer_stats& s) {
                ++s.checkpoints_written;
                s.checkpoint_bytes = bytes;
                s.entries_trimmed += removed;
            });
        }
    }

    /// Loads the newest stored checkpoint of `p` that reads back and includes no entry past
    /// `delivered` (the group's last delivered), into `p.state`: the entry it includes, from
    /// which to replay; nothing if there is none (replay from the stream's start). A checkpoint
    /// that does not read back is counted and reported, never applied. False if Redis did not
    /// answer.
    bool load(partition& p, const stream_id& delivered, std::optional<stream_id>& from) {
        from.reset();
        if (!enabled()) {
            return true;
        }
        const std::string names[2] = {"checkpoint-data", "checkpoint-previous"};
        for (const std::string& name : names) {
            command_result r = client_.run_one(
                cluster_command{{"GET", partition_key(cfg_.key_prefix, name, p.index)}, p.slot});
            if (!r.ok()) {
                control_.note_error(p.stream + ": reading the checkpoint: " + r.error);
                return false;
            }
            if (r.reply->type != REDIS_REPLY_STRING) {
                continue; // none stored
            }
            const std::string_view blob(r.reply->str, r.reply->len);
            try {
                auto [h, state] = decode_checkpoint<Policy>(blob, p.index, pipeline_);
                if (h.includes > delivered) {
                    throw snapshot_error("it includes entry " + h.includes.text() +
                                         ", past the group's last delivered " + delivered.text() +
                                         " (the stream was recreated?)");
                }
                p.state = std::move(state);
                p.checkpoint.applied = p.checkpoint.taken = h.includes;
                p.checkpoint.due = clock::now() + cfg_.checkpoint_interval;
                from = h.includes;
                control_.update([&](stream_consumer_stats& s) {
                    ++s.checkpoints_loaded;
                    s.checkpoint_bytes = blob.size();
                });
                return true;
            } catch (const snapshot_error& e) {
                control_.note_error(p.stream + ": " + name + " refused: " + e.what());
                control_.update([](stream_consumer_stats& s) { ++s.checkpoints_refused; });
            }
        }
        return true;
    }

private:
    const stream_consumer_config& cfg_;
    const resolved_config<Policy>& pipeline_;
    script_client& client_;
    partition_leases<Policy>& leases_;
    write_behind& behind_;
    consumer_control& control_;
};

} // namespace detail
} // namespace tradeagg::redis
