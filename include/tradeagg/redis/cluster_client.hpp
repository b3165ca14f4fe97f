#pragma once
// A blocking, pipelined client of a Redis Cluster, or of one plain Redis, for one thread: the
// partition-stream consumer's, whose rounds are request and response anyway.
//
// - The cluster is discovered from any reachable node (seeds first, then nodes already known)
//   with CLUSTER SLOTS. A node that answers that cluster support is disabled is a plain Redis:
//   it then serves every slot, and REDIS_DB is selected on it.
// - A batch of commands is sent as one pipeline per master (each command to the master serving
//   its slot), to every master before any reply is read, so the masters work at once; every
//   reply is read before the batch returns.
// - MOVED re-reads the slot map and sends the command again where it now belongs; ASK sends
//   ASKING and the command to the named node, once. At most `max_redirects` rounds.
// - A command whose connection failed (refused, reset, no reply within `timeout`) gets an error
//   result and is not sent again here: only the caller knows whether it may be. The connection
//   is dropped and made again on next use.
//
// hiredis resolves host names with blocking DNS: give IP addresses. The calling thread must
// not die of SIGPIPE (hiredis writes with write(2)): block or ignore it.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <thread>

#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include <tradeagg/detail/thread_name.hpp>
#include <tradeagg/redis/reply_arena.hpp>
#include <tradeagg/redis/slot_map.hpp>
#include <tradeagg/redis/stream_entry.hpp>

namespace tradeagg::redis {

struct reply_deleter {
    void operator()(redisReply* r) const noexcept { detail::release_reply(r); }
};
/// A reply owned by the caller (built in an arena: reply_arena.hpp).
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

/// A field lookup over a [field, value, ...] reply (a stream entry's, as `trade_from_entry`
/// takes it, or one of XINFO's): the text of a field, or nothing when the reply lacks it, its
/// value is not text, or the reply is not such an array.
inline auto entry_fields(const redisReply* fields) {
    return [fields](std::string_view name) -> std::optional<std::string_view> {
        if (fields == nullptr || fields->type != REDIS_REPLY_ARRAY) {
            return std::nullopt;
        }
        for (std::size_t i = 0; i + 1 < fields->elements; i += 2) {
            const redisReply* k = fields->element[i];
            const redisReply* v = fields->element[i + 1];
            if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING &&
                std::string_view(k->str, k->len) == name) {
                return std::string_view(v->str, v->len);
            }
        }
        return std::nullopt;
    };
}

/// Starts a thread named `name` (for `top -H`) that runs `body` with SIGPIPE blocked, as a
/// thread using cluster_client must.
template <class Body>
[[nodiscard]] std::thread start_client_thread(std::string_view name, Body body) {
    return std::thread([name, body = std::move(body)]() mutable {
        tradeagg::detail::name_this_thread(name);
        sigset_t pipe;
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
        body();
    });
}

/// One command of a batch: its words, and the slot of its keys (any slot for a command
/// without keys). A command with `resp` is sent as that text (the whole command in RESP, e.g.
/// from resp.hpp); its `args` then need hold only its name.
struct cluster_command {
    std::vector<std::string> args;
    std::uint16_t slot = 0;
    std::string resp = {};
};

/// What became of one command: its reply, or why there is none.
struct command_result {
    reply_ptr reply;   ///< null when the command got no reply
    std::string error; ///< an error reply's text, or why there was no reply; "" on success

    [[nodiscard]] bool ok() const noexcept { return reply != nullptr && error.empty(); }
};

class cluster_client {
public:
    struct options {
        std::vector<cluster_node> seeds; ///< at least one
        std::string password;            ///< AUTH on every connection when not empty
        int db = 0;                      ///< SELECT on a plain Redis (a cluster has only db 0)
        std::chrono::milliseconds timeout{3'000}; ///< connect, and each read and write
        int max_redirects = 5;
    };

    struct counters {
        std::uint64_t batches = 0;
        std::uint64_t commands = 0;
        std::uint64_t moved = 0;
        std::uint64_t asked = 0;
        std::uint64_t map_refreshes = 0;
        std::uint64_t connection_failures = 0;
    };

    explicit cluster_client(options o) : opt_(std::move(o)) {}

    /// Commands sent to a node before the next node gets its turn.
    static constexpr std::size_t send_chunk = 256;

    /// Sends `commands` and fills `results` (one per command, in order). See the header comment.
    void run(std::span<const cluster_command> commands, std::vector<command_result>& results) {
        ++counters_.batches;
        counters_.commands += commands.size();
        results.clear();
        results.resize(commands.size());
        std::vector<std::size_t> unrouted(commands.size());
        for (std::size_t i = 0; i < unrouted.size(); ++i) {
            unrouted[i] = i;
        }
        std::vector<std::pair<std::size_t, cluster_node>> asks;
        for (int round = 0; (!unrouted.empty() || !asks.empty()) && round <= opt_.max_redirects;
             ++round) {
            if (!unrouted.empty() && !routing_known() && !refresh()) {
                for (const std::size_t i : unrouted) {
                    results[i].error = "no Redis node reachable: " + last_error_;
                }
                unrouted.clear();
            }
            // One pipeline per node: (command index, ASKING first).
            std::map<std::pair<std::string, int>, std::vector<std::pair<std::size_t, bool>>>
                by_node;
            for (const std::size_t i : unrouted) {
                const cluster_node* n = node_for(commands[i].slot);
                if (n == nullptr) {
                    results[i].error =
                        "CLUSTERDOWN no node serves slot " + std::to_string(commands[i].slot);
                    stale_ = true;
                    continue;
                }
                by_node[{n->host, n->port}].emplace_back(i, false);
            }
            for (const auto& [i, to] : asks) {
                by_node[{to.host, to.port}].emplace_back(i, true);
            }
            unrouted.clear();
            asks.clear();
            // Every node's share is sent before any reply is read, so the masters work on
            // theirs at the same time. (A node never waits for its replies to be read: it
            // buffers them.) The shares go out a chunk at a time to each node in turn: a
            // write blocks until the node has read most of what it is given, and a large
            // share sent whole would keep the other nodes waiting for it.
            std::vector<const address*> sent;
            std::vector<std::pair<const address*, redisContext*>> sending;
            for (auto& [where, list] : by_node) {
                redisContext* c = connection(where);
                if (c == nullptr) {
                    stale_ = true; // the node may have gone for good: ask the others next time
                    fail(list, 0, last_error_, results);
                    continue;
                }
                sending.emplace_back(&where, c);
                sent.push_back(&where);
            }
            for (std::size_t from = 0; !sending.empty(); from += send_chunk) {
                for (std::size_t k = 0; k < sending.size();) {
                    const auto [where, c] = sending[k];
                    const auto& list = by_node[*where];
                    if (!send(*where, c, commands, list, from, results)) {
                        sent.erase(std::find(sent.begin(), sent.end(), where));
                        sending.erase(sending.begin() + static_cast<std::ptrdiff_t>(k));
                    } else if (from + send_chunk >= list.size()) {
                        sending.erase(sending.begin() + static_cast<std::ptrdiff_t>(k));
                    } else {
                        ++k;
                    }
                }
            }
            bool moved = false;
            for (const address* where : sent) {
                receive(*where, by_node[*where], results, unrouted, asks, moved);
            }
            if (moved) {
                stale_ = true;
                (void)refresh();
            }
        }
        for (const std::size_t i : unrouted) {
            results[i].reply.reset();
            results[i].error = "too many redirects";
        }
        for (const auto& [i, to] : asks) {
            results[i].reply.reset();
            results[i].error = "too many redirects";
        }
    }

    /// Runs one command (as a batch of one).
    command_result run_one(cluster_command c) {
        std::vector<command_result> r;
        run(std::span<const cluster_command>(&c, 1), r);
        return std::move(r.front());
    }

    /// True once a node answered that it is not part of a cluster.
    [[nodiscard]] bool plain() const noexcept { return plain_.has_value(); }
    [[nodiscard]] const counters& stats() const noexcept { return counters_; }
    [[nodiscard]] const std::string& last_error() const noexcept { return last_error_; }
    /// The masters known (the plain node alone for a plain Redis).
    [[nodiscard]] std::vector<cluster_node> masters() const {
        if (plain_) {
            return {*plain_};
        }
        return map_ ? map_->nodes() : std::vector<cluster_node>{};
    }

private:
    struct context_deleter {
        void operator()(redisContext* c) const noexcept { redisFree(c); }
    };
    using context_ptr = std::unique_ptr<redisContext, context_deleter>;
    using address = std::pair<std::string, int>;

    [[nodiscard]] bool routing_known() const noexcept {
        return !stale_ && (plain_.has_value() || (map_ && map_->complete()));
    }

    [[nodiscard]] const cluster_node* node_for(std::uint16_t slot) const noexcept {
        if (plain_) {
            return &*plain_;
        }
        return map_ ? map_->node_for(slot) : nullptr;
    }

    /// Reads the slot map from the first node that gives one. False if none did.
    bool refresh() {
        ++counters_.map_refreshes;
        std::vector<cluster_node> candidates;
        if (plain_) {
            candidates.push_back(*plain_);
        }
        if (map_) {
            candidates.insert(candidates.end(), map_->nodes().begin(), map_->nodes().end());
        }
        candidates.insert(candidates.end(), opt_.seeds.begin(), opt_.seeds.end());
        for (const cluster_node& n : candidates) {
            redisContext* c = connection({n.host, n.port});
            if (c == nullptr) {
                continue;
            }
            reply_ptr r(static_cast<redisReply*>(redisCommand(c, "CLUSTER SLOTS")));
            if (!r) {
                drop({n.host, n.port}, c->errstr);
                continue;
            }
            if (r->type == REDIS_REPLY_ERROR &&
                std::string_view(r->str, r->len).find("cluster support disabled") !=
                    std::string_view::npos) {
                plain_ = cluster_node{n.host, n.port, {}};
                map_.reset();
                stale_ = false;
                // A plain Redis takes SELECT; the connection made before this was known did not.
                if (opt_.db != 0) {
                    drop({n.host, n.port}, "reconnecting to select REDIS_DB");
                }
                return true;
            }
            std::string why;
            std::optional<slot_map> m = slot_map::from_cluster_slots(r.get(), n.host, why);
            if (m && m->complete()) {
                map_ = std::move(m);
                plain_.reset();
                stale_ = false;
                return true;
            }
            last_error_ = m ? "CLUSTER SLOTS from " + n.host + ":" + std::to_string(n.port) +
                                  ": some slots have no master"
                            : why;
        }
        return false;
    }

    redisContext* connection(const address& where) {
        if (const auto it = conns_.find(where); it != conns_.end()) {
            return it->second.get();
        }
        timeval tv{};
        tv.tv_sec = static_cast<time_t>(opt_.timeout.count() / 1'000);
        tv.tv_usec = static_cast<suseconds_t>((opt_.timeout.count() % 1'000) * 1'000);
        context_ptr c(redisConnectWithTimeout(where.first.c_str(), where.second, tv));
        const std::string name = where.first + ":" + std::to_string(where.second);
        if (!c || c->err != 0) {
            ++counters_.connection_failures;
            last_error_ = name + ": " + (c ? c->errstr : "cannot allocate a context");
            return nullptr;
        }
        redisSetTimeout(c.get(), tv);
        detail::use_reply_arenas(c.get());
        const auto setup = [&](std::initializer_list<std::string_view> words) {
            std::vector<const char*> argv;
            std::vector<std::size_t> len;
            for (const std::string_view w : words) {
                argv.push_back(w.data());
                len.push_back(w.size());
            }
            reply_ptr r(static_cast<redisReply*>(
                redisCommandArgv(c.get(), static_cast<int>(argv.size()), argv.data(), len.data())));
            if (!r || r->type == REDIS_REPLY_ERROR) {
                last_error_ = name + ": " + std::string(*words.begin()) + ": " +
                              (r ? std::string(r->str, r->len) : std::string(c->errstr));
                return false;
            }
            return true;
        };
        if (!opt_.password.empty() && !setup({"AUTH", opt_.password})) {
            ++counters_.connection_failures;
            return nullptr;
        }
        if (opt_.db != 0 && plain_ && !setup({"SELECT", std::to_string(opt_.db)})) {
            ++counters_.connection_failures;
            return nullptr;
        }
        return conns_.emplace(where, std::move(c)).first->second.get();
    }

    void drop(const address& where, std::string_view why) {
        last_error_ = where.first + ":" + std::to_string(where.second) + ": " + std::string(why);
        conns_.erase(where);
    }

    static void fail(const std::vector<std::pair<std::size_t, bool>>& list, std::size_t from,
                     const std::string& why, std::vector<command_result>& results) {
        for (std::size_t k = from; k < list.size(); ++k) {
            results[list[k].first].reply.reset();
            results[list[k].first].error = why;
        }
    }

    /// Sends the commands of one node's share of a batch from `from`, up to `send_chunk` of
    /// them (ASKING before those marked so). False, with the whole share failed, if the
    /// connection fails.
    bool send(const address& where, redisContext* c, std::span<const cluster_command> commands,
              const std::vector<std::pair<std::size_t, bool>>& list, std::size_t from,
              std::vector<command_result>& results) {
        const std::size_t to = std::min(list.size(), from + send_chunk);
        for (std::size_t k = from; k < to; ++k) {
            const auto [i, asking] = list[k];
            if (asking) {
                redisAppendCommand(c, "ASKING");
            }
            if (!commands[i].resp.empty()) {
                redisAppendFormattedCommand(c, commands[i].resp.data(), commands[i].resp.size());
                continue;
            }
            argv_.clear();
            lengths_.clear();
            for (const std::string& a : commands[i].args) {
                argv_.push_back(a.data());
                lengths_.push_back(a.size());
            }
            redisAppendCommandArgv(c, static_cast<int>(argv_.size()), argv_.data(),
                                   lengths_.data());
        }
        int done = 0;
        while (done == 0) {
            if (redisBufferWrite(c, &done) != REDIS_OK) {
                lost(where, c, list, 0, results);
                return false;
            }
        }
        return true;
    }

    /// Drops a connection that failed, failing the commands of `list` from `from` on: none of
    /// them got a reply (and may or may not have run).
    void lost(const address& where, redisContext* c,
              const std::vector<std::pair<std::size_t, bool>>& list, std::size_t from,
              std::vector<command_result>& results) {
        ++counters_.connection_failures;
        const std::string why = "connection lost: " + std::string(c->errstr);
        drop(where, why);
        stale_ = true;
        fail(list, from, last_error_, results);
    }

    /// Reads the replies to what `send` sent to one node; redirections go to `unrouted` (MOVED)
    /// and `asks` (ASK).
    void receive(const address& where, const std::vector<std::pair<std::size_t, bool>>& list,
                 std::vector<command_result>& results, std::vector<std::size_t>& unrouted,
                 std::vector<std::pair<std::size_t, cluster_node>>& asks, bool& moved) {
        redisContext* c = conns_.at(where).get();
        for (std::size_t k = 0; k < list.size(); ++k) {
            const auto [i, asking] = list[k];
            void* raw = nullptr;
            if (asking && redisGetReply(c, &raw) == REDIS_OK) {
                detail::release_reply(raw);
                raw = nullptr;
            }
            if ((asking && c->err != 0) || redisGetReply(c, &raw) != REDIS_OK) {
                lost(where, c, list, k, results);
                return;
            }
            reply_ptr r(static_cast<redisReply*>(raw));
            if (r->type == REDIS_REPLY_ERROR) {
                const std::string_view text(r->str, r->len);
                if (const auto to = parse_redirect(text, where.first)) {
                    if (to->how == redirect::kind::moved) {
                        ++counters_.moved;
                        moved = true;
                        unrouted.push_back(i);
                    } else {
                        ++counters_.asked;
                        asks.emplace_back(i, to->to);
                    }
                    results[i].error = std::string(text);
                    continue;
                }
                results[i].error = std::string(text);
            } else {
                results[i].error.clear();
            }
            results[i].reply = std::move(r);
        }
    }

    std::vector<const char*> argv_;    ///< reused by `send`
    std::vector<std::size_t> lengths_; ///< reused by `send`
    options opt_;
    std::map<address, context_ptr> conns_;
    std::optional<slot_map> map_;
    std::optional<cluster_node> plain_;
    bool stale_ = true;
    std::string last_error_;
    counters counters_;
};

} // namespace tradeagg::redis
