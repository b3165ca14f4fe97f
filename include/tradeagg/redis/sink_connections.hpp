#pragma once
// The Redis sink's connections: one hiredis connection per Redis node it writes to, on Asio,
// with its handshake (AUTH, INFO server, CLIENT ID, SELECT, CLUSTER SLOTS, and the CLIENT KILL
// that fences a connection lost with writes unanswered), PINGs when idle, the read and write
// timeouts, retirement at REDIS_MAX_CONN_AGE and reconnection with backoff; the slot map read
// from a cluster node; and the accounting of every command in flight. `sink_core` derives from
// it and writes through these connections (see sink.hpp for the whole story).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <tradeagg/redis/asio_connection.hpp>
#include <tradeagg/redis/config.hpp>
#include <tradeagg/redis/sink_nodes.hpp>
#include <tradeagg/redis/sink_routes.hpp>
#include <tradeagg/redis/sink_stats.hpp>
#include <tradeagg/redis/sink_updates.hpp>
#include <tradeagg/redis/slot_map.hpp>

namespace tradeagg::redis::detail {

/// The sink's connections and what they share with the rest of the sink (configuration,
/// counters, routing table), owned jointly by the sink and by the handlers queued on the
/// io_context. Everything not atomic is touched only on the io_context's thread.
class sink_connections : public std::enable_shared_from_this<sink_connections> {
public:
    sink_connections(const sink_connections&) = delete;
    sink_connections& operator=(const sink_connections&) = delete;

    /// Normally the sink closed the connections on the I/O thread when it stopped; if the
    /// io_context was never run, nothing else can be running now.
    virtual ~sink_connections() {
        for (const auto& n : routes_.nodes()) {
            if (n->conn.ac != nullptr) {
                redisAsyncContext* ac = n->conn.ac;
                n->conn = connection{};
                ac->data = nullptr; // its callbacks find no sink and return
                redisAsyncFree(ac);
            }
        }
    }

protected:
    using clock = sink_clock;

    sink_connections(redis_config cfg, boost::asio::io_context& io)
        : cfg_(std::move(cfg)), io_(io),
          refresh_spacing_(std::clamp(cfg_.retry_delay, std::chrono::milliseconds(100),
                                      std::chrono::milliseconds(1'000))),
          routes_(this) {
        for (const auto& [host, port] : cfg_.seeds()) {
            routes_.node_at(host, port).seed = true;
        }
    }

    /// `n` completed its handshake and takes writes; `restarted` if its server's run_id is not
    /// the one the last connection to it saw (it may have lost what was written).
    virtual void link_ready(node& n, bool restarted) = 0;

    enum control_tag : std::uintptr_t {
        tag_auth = 1,
        tag_select,
        tag_info,
        tag_client_id,
        tag_fence,
        tag_ping,
        tag_slots_handshake, ///< CLUSTER SLOTS as part of a connection's set-up
        tag_slots_refresh    ///< CLUSTER SLOTS on a connection in use
    };

    static void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
        c.fetch_add(n, std::memory_order_relaxed);
    }

    void note_error(std::string_view what) {
        const std::lock_guard lock(error_mutex_);
        last_error_.assign(what);
    }

    // ---- the slot map ----------------------------------------------------------------------

    /// Sends CLUSTER SLOTS on a connected node if a read of the map is wanted and due.
    void maybe_refresh(clock::time_point now) {
        if (!routes_.refresh_wanted() || slots_pending_ || now < next_refresh_at_ ||
            stopped_.load()) {
            return;
        }
        node* best = nullptr;
        for (const auto& n : routes_.nodes()) {
            if (n->conn.ready && !n->conn.closing && n->conn.cluster &&
                (best == nullptr || n->conn.sent.size() < best->conn.sent.size())) {
                best = n.get();
            }
        }
        if (best != nullptr) {
            next_refresh_at_ = now + refresh_spacing_;
            control(*best, {"CLUSTER", "SLOTS"}, tag_slots_refresh);
        }
    }

    /// A CLUSTER SLOTS reply from `n`: becomes the slot map if it is one, and the nodes that
    /// serve slots now are connected.
    void slots_replied(node& n, const redisReply* reply) {
        std::string why;
        std::optional<slot_map> m = slot_map::from_cluster_slots(reply, n.host, why);
        if (!m) {
            note_error(n.name() + ": " + why);
            routes_.request_refresh();
            return;
        }
        bump(count_.slot_map_reads);
        routes_.install(*m);
        const auto now = clock::now();
        routes_.for_each_node([this, now](node& k) {
            if (k.conn.ac == nullptr && now >= k.reconnect_at) {
                connect(k);
            }
        });
    }

    void note_sent(node& n) {
        const auto now = clock::now();
        n.conn.sent.push_back(now);
        n.conn.last_send = now;
        ++in_flight_;
        bump(count_.commands_sent);
    }

    /// Bookkeeping common to every reply (or failure without one) on a node's connection.
    void note_reply(node& n, const redisAsyncContext* ac, bool ok) {
        --in_flight_;
        const auto now = clock::now();
        if (ac == n.conn.ac && !n.conn.sent.empty()) {
            if (ok) {
                const double ms =
                    std::chrono::duration<double, std::milli>(now - n.conn.sent.front()).count();
                const double prev = count_.latency_avg_ms.load(std::memory_order_relaxed);
                count_.latency_avg_ms.store(
                    count_.commands_succeeded.load(std::memory_order_relaxed) == 0
                        ? ms
                        : prev + (ms - prev) / 256.0,
                    std::memory_order_relaxed);
            }
            n.conn.sent.pop_front();
        }
        const double rate = count_.success_rate.load(std::memory_order_relaxed);
        count_.success_rate.store(rate + ((ok ? 1.0 : 0.0) - rate) / 256.0,
                                  std::memory_order_relaxed);
        bump(ok ? count_.commands_succeeded : count_.commands_failed);
    }

    /// The sink and the node a hiredis callback is for, or null while the sink is being
    /// destroyed (it clears `data` first).
    struct callback_target {
        sink_connections* core;
        node* at;
    };
    static callback_target target_of(const redisAsyncContext* ac) noexcept {
        auto* n = static_cast<node*>(ac->data);
        return {n == nullptr ? nullptr : n->core, n};
    }

    // ---- connections -----------------------------------------------------------------------

    void connect(node& n) {
        if (stopped_.load(std::memory_order_relaxed) || n.conn.ac != nullptr ||
            !routes_.wanted(n)) {
            return;
        }
        redisAsyncContext* ac = redisAsyncConnect(n.host.c_str(), n.port);
        if (ac == nullptr) {
            connect_failed(n, "cannot allocate a hiredis context");
            return;
        }
        if (ac->err != 0 || !asio_watcher::attach(ac, io_)) {
            const std::string why =
                ac->err != 0 ? std::string(ac->errstr) : std::string("cannot watch the socket");
            redisAsyncFree(ac);
            connect_failed(n, why);
            return;
        }
        ac->data = &n;
        redisAsyncSetConnectCallback(ac, &sink_connections::on_connect);
        redisAsyncSetDisconnectCallback(ac, &sink_connections::on_disconnect);
        n.conn = connection{};
        n.conn.ac = ac;
        n.conn.opened = n.conn.last_send = n.conn.writes_seen_at = clock::now();
        if (!cfg_.password.empty()) {
            control(n, {"AUTH", cfg_.password}, tag_auth);
        }
        control(n, {"INFO", "server"}, tag_info);
        control(n, {"CLIENT", "ID"}, tag_client_id);
    }

    void connect_failed(node& n, std::string_view why) {
        bump(count_.connect_failures);
        note_error("cannot connect to Redis at " + n.name() + ": " + std::string(why));
        schedule_reconnect(n);
        routes_.node_unreachable(n);
    }

    void schedule_reconnect(node& n) {
        const auto base = std::chrono::duration<double, std::milli>(
            std::max(cfg_.retry_delay, std::chrono::milliseconds(10)));
        const double factor = static_cast<double>(1u << std::min(n.reconnect_attempts, 8));
        const auto delay =
            std::min(base * factor, std::chrono::duration<double, std::milli>(1'000.0));
        ++n.reconnect_attempts;
        n.reconnect_at = clock::now() + std::chrono::duration_cast<clock::duration>(delay);
    }

    /// Sends a command of the handshake, a PING or a CLUSTER SLOTS, tagged for
    /// `on_control_reply`.
    void control(node& n, std::initializer_list<std::string_view> words, control_tag tag) {
        command_args& a = args_;
        a.clear();
        for (std::string_view w : words) {
            a.add(w);
        }
        const bool setup = tag != tag_ping && tag != tag_slots_refresh;
        if (redisAsyncCommandArgv(n.conn.ac, &sink_connections::on_control_reply,
                                  reinterpret_cast<void*>(static_cast<std::uintptr_t>(tag)),
                                  a.argc(), a.argv(), a.lengths()) == REDIS_OK) {
            if (setup) {
                ++n.conn.handshake_left;
            }
            if (tag == tag_slots_handshake || tag == tag_slots_refresh) {
                slots_pending_ = true;
            }
            note_sent(n);
        } else if (setup) {
            post_drop(n); // a set-up that cannot complete would never time out
        }
    }

    static void on_control_reply(redisAsyncContext* ac, void* r, void* privdata) {
        const callback_target to = target_of(ac);
        if (to.core != nullptr) {
            to.core->control_replied(
                *to.at, ac, static_cast<redisReply*>(r),
                static_cast<control_tag>(reinterpret_cast<std::uintptr_t>(privdata)));
        }
    }

    void control_replied(node& n, const redisAsyncContext* ac, const redisReply* reply,
                         control_tag tag) {
        const bool ok = reply != nullptr && reply->type != REDIS_REPLY_ERROR;
        const bool slots = tag == tag_slots_handshake || tag == tag_slots_refresh;
        if (slots) {
            slots_pending_ = false;
        }
        if (ac != n.conn.ac) {
            --in_flight_;
            bump(ok ? count_.commands_succeeded : count_.commands_failed);
            return; // an old connection's leftovers
        }
        note_reply(n, ac, ok || tag == tag_fence); // "no such client" is a fine answer to a fence
        if (reply == nullptr) {
            n.conn.ready = false;
            if (slots) {
                routes_.request_refresh();
            }
            return; // the connection is going; its disconnect callback follows
        }
        if (tag == tag_ping) {
            return;
        }
        if (slots) {
            // A map the node cannot give now (e.g. still joining) is asked again later; the
            // connection serves its slots meanwhile.
            slots_replied(n, reply);
            if (tag == tag_slots_refresh) {
                return;
            }
        } else if (!ok && tag != tag_fence) {
            note_error("Redis at " + n.name() +
                       " refused the connection's set-up: " + std::string(reply->str, reply->len));
            post_drop(n);
            return;
        } else if (tag == tag_info) {
            info_replied(n, std::string_view(reply->str, reply->len));
        } else if (tag == tag_client_id && reply->type == REDIS_REPLY_INTEGER) {
            n.conn.client_id = reply->integer;
        } else if (tag == tag_fence) {
            n.fence_id = -1;
        }
        if (--n.conn.handshake_left > 0) {
            return;
        }
        if (n.fence_id >= 0 && n.fence_run_id == n.conn.run_id && tag != tag_fence) {
            // Writes lost with an earlier connection to this same server may still be in its
            // input buffer: end that connection before anything is written on this one.
            const std::string id = std::to_string(n.fence_id);
            control(n, {"CLIENT", "KILL", "ID", id}, tag_fence);
            return;
        }
        handshake_done(n);
    }

    /// `INFO server`: the server's run_id, and whether it is a cluster node. A plain Redis
    /// selects the configured database; a cluster node is asked for the slot map when one is
    /// wanted. Both join the handshake, so no write goes out before their replies.
    void info_replied(node& n, std::string_view text) {
        const auto field = [text](std::string_view name) -> std::string_view {
            const std::size_t at = text.find(name);
            if (at == std::string_view::npos) {
                return {};
            }
            const std::size_t from = at + name.size();
            const std::size_t to = text.find_first_of("\r\n", from);
            return text.substr(from, to - from);
        };
        n.conn.run_id = std::string(field("run_id:"));
        n.conn.cluster = field("redis_mode:") == "cluster";
        if (!n.conn.cluster) {
            routes_.plain_server(n);
            if (cfg_.db != 0) {
                const std::string db = std::to_string(cfg_.db);
                control(n, {"SELECT", db}, tag_select);
            }
        } else if ((routes_.topology() == topology::unknown || routes_.refresh_wanted()) &&
                   !slots_pending_) {
            control(n, {"CLUSTER", "SLOTS"}, tag_slots_handshake);
        }
    }

    void handshake_done(node& n) {
        n.conn.ready = true;
        n.fence_id = -1;
        bump(count_.connects);
        if (n.ever_connected) {
            bump(count_.reconnects);
        }
        n.ever_connected = true;
        n.reconnect_attempts = 0;
        const bool restarted = !n.known_run_id.empty() && n.conn.run_id != n.known_run_id;
        n.known_run_id = n.conn.run_id;
        link_ready(n, restarted);
    }

    static void on_connect(const redisAsyncContext* ac, int status) {
        const callback_target to = target_of(ac);
        if (to.core != nullptr && status != REDIS_OK && ac == to.at->conn.ac) {
            to.core->note_error("cannot connect to Redis at " + to.at->name() + ": " + ac->errstr);
            bump(to.core->count_.connect_failures);
            to.core->connection_gone(*to.at); // hiredis frees the context after this callback
        }
    }

    static void on_disconnect(const redisAsyncContext* ac, int status) {
        const callback_target to = target_of(ac);
        if (to.core != nullptr && ac == to.at->conn.ac) {
            if (status != REDIS_OK) {
                to.core->note_error("Redis connection to " + to.at->name() +
                                    " lost: " + ac->errstr);
            }
            to.core->connection_gone(*to.at);
        }
    }

    /// A node's connection is gone (or going, inside hiredis): remember what must be fenced
    /// and plan the next one.
    void connection_gone(node& n) {
        if (n.conn.lost_writes && n.conn.client_id >= 0) {
            n.fence_id = n.conn.client_id;
            n.fence_run_id = n.conn.run_id;
        }
        const bool aged = n.conn.retiring && !n.conn.lost_writes;
        n.conn = connection{};
        if (aged) {
            n.reconnect_at = clock::now();
        } else {
            schedule_reconnect(n);
            routes_.node_unreachable(n);
        }
    }

    /// Drops a node's connection now: what was in flight fails and is retried. Not from
    /// inside a hiredis callback (use `post_drop`).
    void drop(node& n, std::string_view why) {
        if (n.conn.ac == nullptr || n.conn.closing) {
            return;
        }
        note_error(n.name() + ": " + std::string(why));
        redisAsyncContext* ac = n.conn.ac;
        n.conn.closing = true;
        n.conn.ready = false;
        redisAsyncFree(ac); // fails every callback, then calls on_disconnect if it was connected
        if (n.conn.ac == ac) {
            connection_gone(n); // it never connected, so no disconnect callback came
        }
    }

    void post_drop(node& n) {
        boost::asio::post(io_, [self = shared_from_this(), at = &n, ac = n.conn.ac] {
            if (at->conn.ac == ac) {
                self->drop(*at, "connection set-up refused");
            }
        });
    }

    void check_connection(node& n, clock::time_point now) {
        connection& c = n.conn;
        if (c.ac == nullptr || c.closing) {
            return;
        }
        if (!c.sent.empty() && now - c.sent.front() >= cfg_.read_timeout) {
            bump(count_.timeouts);
            drop(n, "no reply from Redis within REDIS_READ_TIMEOUT");
            return;
        }
        const auto w = asio_watcher::write_state_of(c.ac);
        if (!w.waiting || w.writes != c.writes_seen) {
            c.writes_seen = w.writes;
            c.writes_seen_at = now;
        } else if (now - c.writes_seen_at >= cfg_.write_timeout) {
            bump(count_.timeouts);
            drop(n, "cannot write to Redis within REDIS_WRITE_TIMEOUT");
            return;
        }
        if (!c.ready) {
            return;
        }
        if (c.sent.empty() && now - c.last_send >= cfg_.idle_timeout) {
            control(n, {"PING"}, tag_ping);
        }
        if (!c.retiring && now - c.opened >= cfg_.max_conn_age) {
            c.retiring = true; // no new writes; closes once what is in flight is answered
        }
        if (c.retiring && c.sent.empty()) {
            c.closing = true;
            c.ready = false;
            redisAsyncDisconnect(c.ac); // nothing pending: disconnects at once
        }
    }

    redis_config cfg_;
    boost::asio::io_context& io_;
    const std::chrono::milliseconds refresh_spacing_;
    command_args args_;
    std::atomic<bool> stopped_{false}; ///< shared with producer threads
    sink_routes routes_;
    bool slots_pending_ = false; ///< a CLUSTER SLOTS is in flight
    clock::time_point next_refresh_at_{};
    std::size_t in_flight_ = 0;
    mutable std::mutex error_mutex_;
    std::string last_error_;
    sink_counters count_;
};

} // namespace tradeagg::redis::detail
