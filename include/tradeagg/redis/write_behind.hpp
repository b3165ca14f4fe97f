#pragma once
// The stream consumer's token writes, off its reading thread: each partition's changes are
// handed over here after a round, merged per token with what is still waiting (a token changed
// a hundred times while Redis was busy is written once), and written by a thread of their own,
// as fast as Redis takes them, each token by one fenced script (token_write.hpp, lease.hpp).
//
// Generations. Each hand-over of a partition is numbered (its generation); the writer takes
// everything waiting, writes it, and once every write of a take is acknowledged, reports the
// generation it took as written: every entry applied before that hand-over is then in Redis,
// and the consumer may acknowledge it (XACK). A write that fails is merged back under what was
// handed over since (later changes win, candles only it holds stay) and written in the next
// take, so a take that succeeds covers every earlier one.
//
// Listing. A token's name is added to the token set (token_set.hpp) the first time
// this writer writes it, after the write's batch, so that readers can list the tokens.
//
// Epochs. A partition's changes are written under the epoch they were handed over in. A new
// epoch (the partition taken again) or `forget` discards what is waiting; what is in flight
// may still land, as a former epoch's writes may from anywhere: exact prefixes of the stream,
// overwritten by the new holder's, and refused once it has written. A write refused because a
// token holds a larger epoch marks the partition fenced, for the consumer to drop.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <hiredis/hiredis.h>

#include <tradeagg/detail/string_map.hpp>
#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/consumer_control.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/lease.hpp>
#include <tradeagg/redis/resp.hpp>
#include <tradeagg/redis/script_client.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/stream_consumer_config.hpp>
#include <tradeagg/redis/stream_consumer_stats.hpp>
#include <tradeagg/redis/token_set.hpp>
#include <tradeagg/redis/token_write.hpp>

namespace tradeagg::redis::detail {

using token_change_map = tradeagg::detail::string_map<token_changes>;

/// How far a partition's writes have come, for the epoch they were handed over in.
struct write_progress {
    std::uint64_t epoch = 0;   ///< 0: nothing handed over since the partition was forgotten
    std::uint64_t handed = 0;  ///< the last generation handed over
    std::uint64_t written = 0; ///< every generation up to this one is in Redis
    bool fenced = false;       ///< a token holds a larger epoch: the partition was taken over
};

class write_behind {
public:
    write_behind(const stream_consumer_config& cfg, consumer_control& control)
        : cfg_(cfg), control_(control), client_(cfg.redis), lanes_(cfg.partitions) {}

    write_behind(const write_behind&) = delete;
    write_behind& operator=(const write_behind&) = delete;
    ~write_behind() { stop(); }

    /// Starts the writing thread. Once.
    void start() {
        thread_ = start_client_thread("tradeagg-writes", [this] { run(); });
    }

    /// Stops the writing thread after its take in progress; what is still waiting is dropped
    /// (its entries stay unacknowledged, for the partition's next holder).
    void stop() {
        {
            const std::lock_guard lock(mutex_);
            quit_ = true;
        }
        work_.notify_all();
        if (thread_.joinable()) {
            thread_.join();
        }
    }

    /// Hands over a partition's changes (emptying `changes`) to be written under `epoch`, each
    /// token's with its last applied entry from `applied`. Returns the hand-over's generation.
    /// The consumer's thread.
    std::uint64_t hand_over(std::size_t partition, std::uint64_t epoch, token_change_map& changes,
                            const tradeagg::detail::string_map<stream_id>& applied) {
        for (auto& [name, t] : changes) {
            if (const auto id = applied.find(name); id != applied.end()) {
                t.last_applied = id->second;
            }
        }
        std::uint64_t generation = 0;
        {
            const std::lock_guard lock(mutex_);
            lane& l = lanes_[partition];
            if (l.progress.epoch != epoch) {
                l.progress.epoch = epoch;
                l.progress.fenced = false;
                l.progress.written = l.progress.handed;
                l.waiting.clear();
            }
            generation = ++l.progress.handed;
            if (changes.empty() && l.waiting.empty() && !l.in_flight) {
                l.progress.written = generation; // nothing to write, nothing before it waits
            } else if (l.waiting.empty()) {
                l.waiting.swap(changes);
            } else {
                for (auto& [name, t] : changes) {
                    tradeagg::detail::find_or_add(l.waiting, name).absorb(t);
                }
            }
        }
        changes.clear();
        work_.notify_one();
        return generation;
    }

    /// Tokens whose changes wait to be written or are being written. Any thread.
    [[nodiscard]] std::size_t tokens_waiting() const {
        const std::lock_guard lock(mutex_);
        std::size_t n = in_flight_tokens_;
        for (const lane& l : lanes_) {
            n += l.waiting.size();
        }
        return n;
    }

    /// A partition's progress. Any thread.
    [[nodiscard]] write_progress progress(std::size_t partition) const {
        const std::lock_guard lock(mutex_);
        return lanes_[partition].progress;
    }

    /// Discards what waits for a partition given up; later results of writes in flight for it
    /// are ignored.
    void forget(std::size_t partition) {
        const std::lock_guard lock(mutex_);
        lane& l = lanes_[partition];
        l.progress.epoch = 0;
        l.progress.fenced = false;
        l.progress.written = l.progress.handed;
        l.waiting.clear();
    }

    /// Waits up to `at_most` for a take to finish (or for the writer to be idle). Any thread.
    void wait_for_progress(std::chrono::milliseconds at_most) {
        std::unique_lock lock(mutex_);
        const std::uint64_t seen = takes_done_;
        progressed_.wait_for(lock, at_most, [&] { return takes_done_ != seen || quit_; });
    }

private:
    struct lane {
        write_progress progress;
        token_change_map waiting; ///< handed over, not yet taken
        bool in_flight = false;   ///< a take holds some of its changes
    };

    /// One partition's part of a take.
    struct taken {
        std::size_t partition = 0;
        std::uint64_t epoch = 0;
        std::uint64_t generation = 0;
        token_change_map tokens;
        bool failed = false;
        bool fenced = false;
    };

    void run() {
        std::vector<taken> take;
        std::vector<cluster_command> cmds;
        std::vector<std::pair<std::size_t, token_change_map::iterator>> who; // take, token
        std::vector<command_result> r;
        auto backoff = std::chrono::milliseconds(0);
        for (;;) {
            take.clear();
            {
                std::unique_lock lock(mutex_);
                work_.wait(lock, [&] { return quit_ || any_waiting(); });
                if (quit_) {
                    return;
                }
                for (std::size_t k = 0; k < lanes_.size(); ++k) {
                    lane& l = lanes_[k];
                    if (!l.waiting.empty() && l.progress.epoch != 0) {
                        take.push_back({k, l.progress.epoch, l.progress.handed, {}, false, false});
                        take.back().tokens.swap(l.waiting);
                        l.in_flight = true;
                        in_flight_tokens_ += take.back().tokens.size();
                    }
                }
            }
            cmds.clear();
            who.clear();
            for (std::size_t i = 0; i < take.size(); ++i) {
                for (auto it = take[i].tokens.begin(); it != take[i].tokens.end(); ++it) {
                    cmds.push_back(client_.script_resp(
                        lease_scripts::token_write, token_slot(it->first),
                        token_write_keys(it->second), [&](resp_builder& b) {
                            add_token_write(b, cfg_.key_prefix, it->first, it->second,
                                            take[i].epoch, cfg_.candle_retention_intervals);
                        }));
                    who.emplace_back(i, it);
                }
            }
            client_.run(cmds, r);
            register_tokens(take);
            std::uint64_t written = 0;
            std::uint64_t failed = 0;
            std::string error;
            for (std::size_t c = 0; c < cmds.size(); ++c) {
                taken& t = take[who[c].first];
                if (r[c].ok() && r[c].reply->type == REDIS_REPLY_INTEGER) {
                    if (r[c].reply->integer == 0) {
                        t.fenced = true;
                    } else {
                        ++written; // 1, or -1: Redis holds this entry's effect already
                        t.tokens.erase(who[c].second);
                    }
                    continue;
                }
                t.failed = true;
                ++failed;
                error = r[c].ok() ? "an unexpected reply" : r[c].error;
            }
            {
                const std::lock_guard lock(mutex_);
                for (taken& t : take) {
                    lane& l = lanes_[t.partition];
                    l.in_flight = false;
                    if (l.progress.epoch != t.epoch) {
                        // Forgotten or taken again meanwhile: this take is not the epoch's.
                        if (l.waiting.empty()) {
                            l.progress.written = l.progress.handed;
                        }
                        continue;
                    }
                    if (t.fenced) {
                        l.progress.fenced = true;
                        l.waiting.clear();
                    } else if (t.failed) {
                        // What failed goes back under what was handed over since.
                        for (auto& [name, older] : t.tokens) {
                            auto newer = l.waiting.find(name);
                            if (newer == l.waiting.end()) {
                                l.waiting.emplace(name, std::move(older));
                            } else {
                                older.absorb(newer->second);
                                newer->second = std::move(older);
                            }
                        }
                    } else {
                        // Hand-overs since with nothing to write are covered too.
                        l.progress.written = l.waiting.empty() ? l.progress.handed : t.generation;
                    }
                }
                ++takes_done_;
                in_flight_tokens_ = 0;
            }
            progressed_.notify_all();
            control_.update([&](stream_consumer_stats& s) {
                s.token_writes += written;
                s.write_retries += failed;
            });
            if (failed != 0) {
                control_.note_error("token write: " + error);
                backoff = std::clamp(backoff * 2, std::chrono::milliseconds(20),
                                     std::chrono::milliseconds(500));
                std::unique_lock lock(mutex_);
                work_.wait_for(lock, backoff, [&] { return quit_; });
            } else {
                backoff = std::chrono::milliseconds(0);
            }
        }
    }

    /// Adds the names of a take's tokens not added yet to the token set (token_set.hpp), where
    /// readers list the tokens. A failed add is tried again with the next take holding one of
    /// them.
    void register_tokens(const std::vector<taken>& take) {
        std::vector<std::string> names;
        for (const taken& t : take) {
            for (const auto& [name, changes] : t.tokens) {
                if (!registered_.contains(name)) {
                    names.push_back(name);
                }
            }
        }
        const std::size_t added = add_to_token_set(client_.cluster(), cfg_.key_prefix, names);
        registered_.insert(
            std::make_move_iterator(names.begin()),
            std::make_move_iterator(names.begin() + static_cast<std::ptrdiff_t>(added)));
    }

    bool any_waiting() const {
        return std::any_of(lanes_.begin(), lanes_.end(), [](const lane& l) {
            return !l.waiting.empty() && l.progress.epoch != 0;
        });
    }

    const stream_consumer_config& cfg_;
    consumer_control& control_;
    script_client client_; ///< the writing thread's own connections
    mutable std::mutex mutex_;
    std::condition_variable work_;       ///< something waits, or stop
    std::condition_variable progressed_; ///< a take finished
    std::vector<lane> lanes_;            ///< per partition
    std::uint64_t takes_done_ = 0;
    std::size_t in_flight_tokens_ = 0; ///< in the take being written
    /// Tokens this writer added to the token set (the writing thread's).
    tradeagg::detail::string_set registered_;
    bool quit_ = false;
    std::thread thread_;
};

} // namespace tradeagg::redis::detail
