#pragma once
// Steps 2 to 4 of a stream consumer's round (stream_consumer.hpp), which a rebuild takes too:
// entries applied to their partition's state, what they changed handed to the writer
// (write_behind.hpp), and the entries acknowledged once Redis has every write covering them.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
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
#include <tradeagg/redis/lease.hpp>
#include <tradeagg/redis/partition_leases.hpp>
#include <tradeagg/redis/script_client.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/stream_consumer_config.hpp>
#include <tradeagg/redis/stream_consumer_stats.hpp>
#include <tradeagg/redis/stream_reply.hpp>
#include <tradeagg/redis/write_behind.hpp>

namespace tradeagg::redis::detail {

/// Applies a partition's entries and writes and acknowledges what they changed. The consumer's
/// thread only.
template <policy Policy>
class partition_writer {
public:
    using partition = stream_partition<Policy>;

    partition_writer(const stream_consumer_config& cfg, script_client& client,
                     partition_leases<Policy>& leases, write_behind& behind,
                     consumer_control& control)
        : cfg_(cfg), client_(client), leases_(leases), behind_(behind), control_(control) {}

    partition_writer(const partition_writer&) = delete;
    partition_writer& operator=(const partition_writer&) = delete;

    /// Applies the trades of `in` that `select(entry, i)` picks (`i` indexes `in.trades`) to a
    /// partition's state, in stream order; invalid entries are counted and reported when
    /// `count_invalid`.
    template <class Select>
    void apply(partition& p, const stream_entries& in, Select&& select, bool count_invalid) {
        std::uint64_t invalid = 0;
        for (const stream_entry_view& e : in.entries) {
            if (!e.why.empty()) {
                if (count_invalid) {
                    ++invalid;
                    control_.note_error(p.stream + " entry " + std::string(e.id_text) +
                                        " skipped: " + std::string(e.why));
                }
                continue;
            }
            for (std::size_t i = e.first; i < e.first + e.count; ++i) {
                if (!select(e, i)) {
                    continue;
                }
                const trade_view& t = in.trades[i];
                std::string_view why;
                if (p.state->push(t, why)) {
                    tradeagg::detail::find_or_add(p.state->applied, t.token) = e.id;
                } else if (count_invalid) {
                    ++invalid; // the token table refused it: counted per trade
                    control_.note_error(p.stream + " entry " + std::string(e.id_text) +
                                        " trade skipped: " + std::string(why));
                }
            }
        }
        p.state->worker.apply_here();
        const std::uint64_t late = std::exchange(p.state->late, 0);
        control_.update([&](stream_consumer_stats& s) {
            s.entries_invalid += invalid;
            s.trades_late += late;
        });
    }

    /// Applies every trade of `in`.
    void apply(partition& p, const stream_entries& in) {
        apply(
            p, in, [](const stream_entry_view&, std::size_t) { return true; }, true);
    }

    /// Hands the changes applied to `p` since the last hand-over to the writer (write_behind.hpp),
    /// with `ids`, the entries they include that the consumer is to acknowledge once written,
    /// and `applied`, how many entries to count as applied then.
    void hand_over(partition& p, std::vector<std::string> ids, std::size_t applied) {
        const std::uint64_t generation =
            behind_.hand_over(p.index, p.epoch, p.state->sink.tokens, p.state->applied);
        p.awaiting.push_back({generation, std::move(ids), applied});
    }

    /// Appends the XACKs of every entry of `parts` whose writes are in Redis to `cmds` (noting
    /// whose they are in `owner`), and drops a partition found taken over.
    void collect_acks(const std::vector<partition*>& parts, std::vector<cluster_command>& cmds,
                      std::vector<partition*>& owner) {
        std::uint64_t applied = 0;
        for (partition* p : parts) {
            const std::optional<write_progress> w = progress_if_held(*p);
            if (!w) {
                continue;
            }
            while (!p->awaiting.empty() && w->epoch == p->epoch &&
                   p->awaiting.front().generation <= w->written) {
                auto& done = p->awaiting.front();
                applied += done.applied;
                for (std::string& id : done.ids) {
                    p->to_ack.push_back(std::move(id));
                }
                p->awaiting.pop_front();
            }
            constexpr std::size_t chunk = 1'000;
            for (std::size_t from = 0; from < p->to_ack.size(); from += chunk) {
                cluster_command c{{"XACK", p->stream, p->group}, p->slot};
                const std::size_t to = std::min(p->to_ack.size(), from + chunk);
                for (std::size_t i = from; i < to; ++i) {
                    c.args.push_back(std::move(p->to_ack[i]));
                }
                cmds.push_back(std::move(c));
                owner.push_back(p);
            }
            p->to_ack.clear();
        }
        if (applied != 0) {
            control_.update([&](stream_consumer_stats& s) { s.trades_applied += applied; });
        }
    }

    /// Takes the replies of the XACKs `collect_acks` added to `cmds` (one per `owner`, from
    /// `first` on): the entries acknowledged are counted, those of a failed XACK are sent again
    /// next time.
    void acked(const std::vector<cluster_command>& cmds, const std::vector<command_result>& r,
               std::size_t first, const std::vector<partition*>& owner) {
        std::uint64_t count = 0;
        for (std::size_t i = first; i < first + owner.size(); ++i) {
            partition& p = *owner[i - first];
            if (r[i].ok()) {
                count += cmds[i].args.size() - 3;
            } else {
                control_.note_error("XACK: " + r[i].error);
                if (p.epoch != 0) {
                    p.to_ack.insert(p.to_ack.end(), cmds[i].args.begin() + 3, cmds[i].args.end());
                }
            }
        }
        control_.update([&](stream_consumer_stats& s) { s.entries_acked += count; });
    }

    /// Acknowledges what `collect_acks` finds ready, in up to ten attempts. What is still
    /// unacknowledged then stays pending: harmless, as the partition's next holder claims and
    /// acknowledges it.
    void ack(const std::vector<partition*>& parts) {
        std::vector<cluster_command> cmds;
        std::vector<partition*> owner;
        std::vector<command_result> r;
        for (int attempt = 0; attempt < 10; ++attempt) {
            if (attempt > 0) {
                std::this_thread::sleep_for(std::chrono::milliseconds(50) * attempt);
            }
            cmds.clear();
            owner.clear();
            collect_acks(parts, cmds, owner);
            if (cmds.empty()) {
                return;
            }
            client_.run(cmds, r);
            acked(cmds, r, 0, owner);
        }
    }

    /// Waits until everything handed over for `parts` is written (renewing the leases
    /// meanwhile), then acknowledges it. Gives up at the stop's deadline; a partition found
    /// taken over, or whose lease could not be renewed, is dropped. True if every partition
    /// was drained and is still held.
    bool drain(const std::vector<partition*>& parts) {
        for (;;) {
            bool done = true;
            for (partition* p : parts) {
                if (const std::optional<write_progress> w = progress_if_held(*p)) {
                    done = done && !(w->epoch == p->epoch && w->written < w->handed);
                }
            }
            if (done) {
                break;
            }
            if (control_.stop_overdue()) {
                control_.stopped_unclean();
                return false;
            }
            behind_.wait_for_progress(std::chrono::milliseconds(20));
            leases_.renew_due();
        }
        ack(parts);
        return std::all_of(parts.begin(), parts.end(), [](partition* p) { return p->epoch != 0; });
    }

private:
    /// The writer's progress on `p`, if `p` is held; drops `p` (nothing) if one of its writes
    /// was refused for a newer epoch.
    std::optional<write_progress> progress_if_held(partition& p) {
        if (p.epoch == 0) {
            return std::nullopt;
        }
        const write_progress w = behind_.progress(p.index);
        if (w.epoch == p.epoch && w.fenced) {
            leases_.drop(p, "partition " + std::to_string(p.index) +
                                ": a token holds a newer epoch (taken over)");
            return std::nullopt;
        }
        return w;
    }

    const stream_consumer_config& cfg_;
    script_client& client_;
    partition_leases<Policy>& leases_;
    write_behind& behind_;
    consumer_control& control_;
};

} // namespace tradeagg::redis::detail
