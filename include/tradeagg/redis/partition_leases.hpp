#pragma once
// The partitions a stream consumer tracks, and their leases (lease.hpp): announcing this
// instance among the live ones, aiming for its share of the partitions, and taking, renewing,
// releasing and dropping leases. The overview is stream_consumer.hpp's ("Ownership").

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <hiredis/hiredis.h>

#include <tradeagg/policy.hpp>
#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/consumer_control.hpp>
#include <tradeagg/redis/lease.hpp>
#include <tradeagg/redis/partition_engine.hpp>
#include <tradeagg/redis/script_client.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/stream_consumer_config.hpp>
#include <tradeagg/redis/stream_consumer_stats.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/redis/write_behind.hpp>

namespace tradeagg::redis::detail {

/// Milliseconds since the Unix epoch, the clock of stream entry ids and of the instances'
/// expiry scores.
inline std::int64_t wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

/// One partition as the consumer tracks it: its keys, its lease, and its state while held.
template <policy Policy>
struct stream_partition {
    using clock = std::chrono::steady_clock;

    std::size_t index = 0;
    std::string stream, lease, epoch_key;
    std::uint16_t slot = 0;
    std::uint64_t epoch = 0; ///< 0: not held
    std::string group;       ///< this epoch's consumer group, `<group>@<epoch>`
    clock::time_point renew_at{};
    clock::time_point valid_until{}; ///< the lease may have lapsed after this
    std::unique_ptr<partition_engine<Policy>> state;

    /// Entries handed over to the writer with the changes of one generation (write_behind.hpp).
    struct hand_over {
        std::uint64_t generation = 0;
        std::vector<std::string> ids; ///< to acknowledge once the generation is written
        std::size_t applied = 0;      ///< entries to count as applied then
    };
    std::deque<hand_over> awaiting;  ///< handed over, oldest first, not yet written
    std::vector<std::string> to_ack; ///< written, to acknowledge
    bool lost = false;               ///< dropped during the round

    /// Checkpoints of the partition's state (partition_checkpoints.hpp).
    struct checkpoint_progress {
        stream_id applied; ///< the last entry applied to the state
        stream_id taken;   ///< the entry the last checkpoint taken includes
        clock::time_point due{};
        /// Taken (it includes `taken`), to be written once every write of `generation` (and
        /// before) is in Redis.
        std::string blob;
        std::uint64_t generation = 0;
        bool sending = false; ///< its write is in the round's batch
    };
    checkpoint_progress checkpoint;

    /// Entries read and not yet acknowledged (nor in an XACK being sent).
    [[nodiscard]] std::size_t unacked() const noexcept {
        std::size_t n = to_ack.size();
        for (const hand_over& h : awaiting) {
            n += h.ids.size();
        }
        return n;
    }

    /// Forgets what was read while held.
    void put_down() {
        epoch = 0;
        state.reset();
        awaiting.clear();
        to_ack.clear();
        checkpoint = checkpoint_progress{};
    }

    /// Redis granted (or renewed) the lease for `ttl` to a command sent at `sent`: it is
    /// trusted until a fifth of the TTL before it could lapse, and renewed after a third.
    void leased(clock::time_point sent, std::chrono::milliseconds ttl) noexcept {
        valid_until = sent + ttl - ttl / 5;
        renew_at = sent + ttl / 3;
    }
};

/// Every partition of the consumer's streams and the leases this instance holds on them. The
/// consumer's thread only.
template <policy Policy>
class partition_leases {
public:
    using clock = std::chrono::steady_clock;
    using partition = stream_partition<Policy>;

    partition_leases(const stream_consumer_config& cfg, script_client& client, write_behind& behind,
                     consumer_control& control)
        : cfg_(cfg), client_(client), behind_(behind), control_(control),
          holder_(cfg_.instance + "#" + nonce()) {
        partitions_.resize(cfg_.partitions);
        for (std::size_t k = 0; k < cfg_.partitions; ++k) {
            partition& p = partitions_[k];
            p.index = k;
            p.stream = stream_key(cfg_.key_prefix, k);
            p.lease = lease_key(cfg_.key_prefix, k);
            p.epoch_key = epoch_key(cfg_.key_prefix, k);
            p.slot = key_slot(p.stream);
        }
    }

    partition_leases(const partition_leases&) = delete;
    partition_leases& operator=(const partition_leases&) = delete;

    /// Every partition, held (`epoch` not 0) or not.
    [[nodiscard]] std::vector<partition>& all() noexcept { return partitions_; }

    /// The lease holder's name: instance and a per-process nonce.
    [[nodiscard]] const std::string& holder() const noexcept { return holder_; }

    /// Announces this instance and takes or gives up leases toward its share; `rebuild(p)`
    /// starts each partition taken, false if it could not, and `settle(p)` finishes the writes
    /// of each one given up.
    template <class Rebuild, class Settle>
    void balance(Rebuild&& rebuild, Settle&& settle) {
        const std::string members = cfg_.key_prefix + ":instances";
        const std::uint16_t slot = key_slot(members);
        const std::int64_t now = wall_ms();
        std::vector<cluster_command> cmds{
            {{"ZADD", members, std::to_string(now + cfg_.lease_ttl.count()), cfg_.instance}, slot},
            {{"ZREMRANGEBYSCORE", members, "-inf", std::to_string(now)}, slot},
            {{"ZCARD", members}, slot}};
        std::vector<command_result> r;
        client_.run(cmds, r);
        if (!r[2].ok() || r[2].reply->type != REDIS_REPLY_INTEGER) {
            control_.note_error("instances: " + r[2].error);
            return;
        }
        const auto live = std::max<std::size_t>(static_cast<std::size_t>(r[2].reply->integer), 1);
        const std::size_t share = (cfg_.partitions + live - 1) / live;
        control_.update([&](stream_consumer_stats& s) { s.live_instances = live; });
        std::size_t held = held_count();
        // Preference order: starting at this instance's hash, so instances try different
        // partitions first.
        const std::size_t start = std::hash<std::string>{}(cfg_.instance) % cfg_.partitions;
        for (std::size_t n = 0; n < cfg_.partitions && held > share; ++n) {
            partition& p = partitions_[(start + cfg_.partitions - 1 - n) % cfg_.partitions];
            if (p.epoch != 0) {
                settle(p);
                release(p);
                --held;
            }
        }
        for (std::size_t n = 0; n < cfg_.partitions && held < share && !control_.stopping(); ++n) {
            partition& p = partitions_[(start + n) % cfg_.partitions];
            if (p.epoch == 0 && acquire(p, rebuild)) {
                ++held;
            }
        }
        publish_held();
    }

    /// Gives up every lease held and this instance's announcement.
    void release_all() {
        for (partition& p : partitions_) {
            if (p.epoch != 0) {
                release(p);
            }
        }
        const std::string members = cfg_.key_prefix + ":instances";
        (void)client_.cluster().run_one(
            cluster_command{{"ZREM", members, cfg_.instance}, key_slot(members)});
        publish_held();
    }

    /// Stops using a partition whose lease is gone or in doubt. Its unacknowledged entries stay
    /// pending, for whoever holds it next.
    void drop(partition& p, std::string why) {
        if (p.epoch == 0) {
            return;
        }
        start_over(p);
        p.lost = true;
        control_.note_error(std::move(why));
        control_.update([](stream_consumer_stats& s) { ++s.lost; });
        publish_held();
    }

    /// Starts a partition over: forgets what was read and what waits to be written (a lease
    /// still held is acquired again under a new epoch at the next balance).
    void start_over(partition& p) {
        p.put_down();
        behind_.forget(p.index);
    }

    /// Renews the leases due, dropping those that were taken over or have lapsed.
    void renew_due() {
        std::vector<cluster_command> cmds;
        std::vector<partition*> who;
        const auto now = clock::now();
        for (partition& p : partitions_) {
            if (p.epoch != 0 && now >= p.renew_at) {
                cmds.push_back(client_.script(lease_scripts::renew, p.slot,
                                              {p.lease, holder_, std::to_string(p.epoch),
                                               std::to_string(cfg_.lease_ttl.count())},
                                              1));
                who.push_back(&p);
            }
        }
        if (cmds.empty()) {
            return;
        }
        std::vector<command_result> r;
        client_.run(cmds, r);
        for (std::size_t i = 0; i < who.size(); ++i) {
            partition& p = *who[i];
            if (r[i].ok() && r[i].reply->type == REDIS_REPLY_INTEGER && r[i].reply->integer == 1) {
                p.leased(now, cfg_.lease_ttl);
            } else if (r[i].ok()) {
                drop(p, "lease " + p.lease + " was taken over");
            } else if (clock::now() >= p.valid_until) {
                drop(p, "lease " + p.lease + " could not be renewed in time: " + r[i].error);
            } else {
                p.renew_at = now + std::chrono::milliseconds(50);
            }
        }
    }

    /// Renews `p`'s lease now; true if it is still this instance's.
    bool renewed(partition& p) {
        p.renew_at = clock::time_point{};
        renew_due();
        return p.epoch != 0 && clock::now() < p.valid_until;
    }

private:
    static std::string nonce() {
        std::random_device rd;
        return std::to_string(rd()) + std::to_string(rd());
    }

    std::size_t held_count() const {
        return static_cast<std::size_t>(
            std::count_if(partitions_.begin(), partitions_.end(),
                          [](const partition& p) { return p.epoch != 0; }));
    }

    void publish_held() {
        std::string list;
        for (const partition& p : partitions_) {
            if (p.epoch != 0) {
                list += (list.empty() ? "" : ",") + std::to_string(p.index);
            }
        }
        control_.update([&](stream_consumer_stats& s) {
            s.partitions_held = held_count();
            s.held = list;
        });
    }

    template <class Rebuild>
    bool acquire(partition& p, Rebuild& rebuild) {
        const auto sent = clock::now();
        command_result r = client_.run_one(client_.script(
            lease_scripts::acquire, p.slot,
            {p.lease, p.epoch_key, holder_, std::to_string(cfg_.lease_ttl.count())}, 2));
        if (!r.ok() || r.reply->type != REDIS_REPLY_INTEGER) {
            if (!r.ok()) {
                control_.note_error("lease " + p.lease + ": " + r.error);
            }
            return false;
        }
        if (r.reply->integer <= 0) {
            return false; // another instance holds it
        }
        p.epoch = static_cast<std::uint64_t>(r.reply->integer);
        p.leased(sent, cfg_.lease_ttl);
        p.lost = false;
        control_.update([](stream_consumer_stats& s) { ++s.acquired; });
        if (!rebuild(p)) {
            drop(p, "rebuild of " + p.stream + " did not finish");
            return false;
        }
        return true;
    }

    void release(partition& p) {
        (void)client_.run_one(client_.script(lease_scripts::release, p.slot,
                                             {p.lease, holder_, std::to_string(p.epoch)}, 1));
        start_over(p);
        control_.update([](stream_consumer_stats& s) { ++s.released; });
    }

    const stream_consumer_config& cfg_;
    script_client& client_;
    write_behind& behind_;
    consumer_control& control_;
    std::string holder_; ///< the lease holder's name: instance and a per-process nonce
    std::vector<partition> partitions_;
};

} // namespace tradeagg::redis::detail
