#pragma once
// The Redis sink: writes every aggregate a pipeline flushes to Redis (keys and fields in
// keys.hpp), through hiredis's asynchronous client on one Boost.Asio I/O thread, to one
// Redis or to the masters of a Redis Cluster.
//
// Where writes go:
// - `host:port` and `more_seeds` (REDIS_ADDR, comma-separated) are seeds. Every connection
//   starts with `INFO server`. A node whose `redis_mode` is not `cluster` is a plain Redis: the
//   first such seed to answer takes every write (after `SELECT db` when `db` is not 0), over one
//   connection. A cluster node is asked `CLUSTER SLOTS`, and each token is then written to the
//   master serving its slot (all of a token's keys carry the `{token}` hash tag, so they share
//   one slot), over one pipelined connection per master. A cluster has database 0 only: `db`
//   does not apply to it.
// - MOVED: the slot's new owner takes the token's next write at once, and the slot map is read
//   again. ASK (a slot in migration): the next write goes to the named node, after ASKING, once.
//   More than `max_redirects` redirections of one token in a row count as a failed write (see
//   below). While a slot migrates, Redis runs a transaction of several keys only on a node
//   that holds all of them, and answers TRYAGAIN elsewhere; the sink retries until the
//   migration ends, so a migration that stalls holds that slot's tokens back. A lost
//   connection to a master and CLUSTERDOWN also read the map again (a failover moves slots);
//   the map is read from any connected node, at most every `retry_delay` (clamped to 100 ms
//   .. 1 s).
//
// How it stays exact and out of the workers' way:
// - `consume` (on shard workers) copies the batch into a node and pushes it onto a lock-free
//   list; it never blocks, never waits for the network, and allocates one node per flush. The
//   I/O thread takes the whole list at once, so the list cannot fill up the way a ring can.
// - On the I/O thread, updates are coalesced per key: a key keeps only its latest version not
//   yet written. So Redis falling behind costs memory per key, not per update.
// - A token's keys are written together: one MULTI/EXEC transaction carries the latest version
//   of every key of the token not yet acknowledged (HSET of every field; PEXPIRE for candles
//   when due). A token has at most one transaction in flight; what arrives meanwhile goes in the
//   next one, sent once the first is answered. So one key's writes never overtake each other,
//   and because the inbox is taken a whole flush at a time and a token's updates come from one
//   shard, every transaction moves Redis from the token's state after one flush to its state
//   after a later one: a reader (or Redis after a crash, its AOF holding whole transactions)
//   never sees a token's candles, rolling window and latest trade from different flushes.
//   The exceptions are Redis's own: a command failing inside EXEC (e.g. WRONGTYPE, if something
//   else wrote the key) does not undo the others, and a resync after a restart (below) rewrites
//   what the journal still holds.
// - Every write is an absolute value, so sending one again after an unknown outcome is exact.
// - Up to `pipeline_size` commands are in flight per connection (a transaction larger than that
//   goes alone). A command without a reply after `read_timeout` (or a connection that cannot
//   write for `write_timeout`) drops that connection with `redisAsyncFree`, which fails what was
//   in flight on it; a failed transaction (lost, or refused: OOM, TRYAGAIN, CLUSTERDOWN, ...) is
//   sent again after `retry_delay`, backing off with jitter, up to `max_retries` times, and then
//   kept ("parked") until that master acknowledges a write again, or every few hundred ms. A
//   master that is down holds back only the tokens of its slots; the others keep being written.
//   Nothing accepted is dropped, except new keys beyond `max_pending_updates` (counted).
// - A dropped connection may still have writes in Redis's input buffer (a stopped Redis reads
//   them when it resumes). Before writing on a new connection to the same node, the sink kills
//   the old one by its client id (`CLIENT KILL ID`): once that answers, nothing sent on the old
//   connection can be applied after what is sent on the new one. (A write left in the buffer of
//   a stopped master whose slot then moves to another master is Redis Cluster's own failover
//   window: the sink cannot fence a node it cannot reach.)
// - A changed `run_id` of a node means it restarted and may have lost everything. The sink then
//   writes again what it has written to that node's slots (a journal of the latest written
//   value per key, bounded by `resync_journal_bytes`) and asks the pipeline to hand over every
//   live candle and rolling window again (`resync`; that is every token, not only the node's:
//   the pipeline does not know slots, and writing a live value again is harmless).
//
// hiredis 0.14.1 resolves host names with blocking DNS: give IP addresses.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <pthread.h>
#include <signal.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <tradeagg/config.hpp>
#include <tradeagg/detail/thread_name.hpp>
#include <tradeagg/latency_histogram.hpp>
#include <tradeagg/redis/asio_connection.hpp>
#include <tradeagg/redis/config.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/sink_stats.hpp>
#include <tradeagg/redis/sink_updates.hpp>
#include <tradeagg/redis/slot_map.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/write_journal.hpp>
#include <tradeagg/runtime_config.hpp>
#include <tradeagg/sink.hpp>

namespace tradeagg::redis {

namespace detail {

/// The sink's state, owned jointly by the sink and by the handlers queued on the io_context
/// (so a handler that runs after the sink is gone finds it alive). Everything not atomic is
/// touched only on the io_context's thread.
class sink_core : public std::enable_shared_from_this<sink_core> {
    using clock = std::chrono::steady_clock;

public:
    static constexpr std::size_t max_prefix = 256;
    /// Redirections of one token followed in a row before one counts as a failed write.
    static constexpr int max_redirects = 5;

    sink_core(redis_config cfg, boost::asio::io_context& io)
        : cfg_(std::move(cfg)), io_(io), tick_timer_(io),
          tick_(std::clamp(std::min({cfg_.read_timeout, cfg_.write_timeout,
                                     std::max(cfg_.retry_delay, std::chrono::milliseconds(1))}) /
                               4,
                           std::chrono::milliseconds(1), std::chrono::milliseconds(25))),
          park_retry_(park_retry_interval(cfg_)),
          refresh_spacing_(std::clamp(cfg_.retry_delay, std::chrono::milliseconds(100),
                                      std::chrono::milliseconds(1'000))),
          owners_(cluster_slot_count, nullptr),
          rng_(0x9E3779B97F4A7C15ull ^ static_cast<std::uint64_t>(steady_ns())) {
        for (const auto& [host, port] : cfg_.seeds()) {
            node_at(host, port).seed = true;
        }
    }

    sink_core(const sink_core&) = delete;
    sink_core& operator=(const sink_core&) = delete;

    ~sink_core() {
        // Normally stop() closed the connections on the I/O thread; if the io_context was never
        // run, nothing else can be running now.
        free_inbox(inbox_.exchange(nullptr));
        for (const auto& n : nodes_) {
            if (n->conn.ac != nullptr) {
                redisAsyncContext* ac = n->conn.ac;
                n->conn = connection{};
                ac->data = nullptr; // its callbacks find no sink and return
                redisAsyncFree(ac);
            }
        }
    }

    /// Starts connecting and ticking. Call once, from any thread.
    void start() {
        boost::asio::post(io_, [self = shared_from_this()] {
            self->for_each_node([&](node& n) { self->connect(n); });
            self->arm_tick();
        });
    }

    /// Copies a batch for the I/O thread. Any thread; never blocks; allocates one node.
    void enqueue(const flush_batch& batch) {
        const std::size_t n = batch.candles.size() + batch.tokens.size();
        if (n == 0) {
            return;
        }
        if (stopped_.load(std::memory_order_acquire)) {
            bump(count_.updates_dropped, n);
            return;
        }
        auto box = std::make_unique<inbox_node>();
        box->consumed_ns = steady_ns();
        box->updates.reserve(n);
        std::uint64_t unusable = 0;
        for (const candle_update& u : batch.candles) {
            update up;
            if (!fill_key(up.key, u.name)) {
                ++unusable;
                continue;
            }
            up.key.kind = key_kind::candle;
            up.key.width_ms = u.width.count();
            up.key.open_time = u.data.open_time;
            up.value = u.data;
            box->updates.push_back(up);
        }
        for (const token_update& u : batch.tokens) {
            update up;
            if (!fill_key(up.key, u.name)) {
                ++unusable;
                continue;
            }
            up.key.kind = key_kind::token;
            up.value = token_value{u.rolling, u.latest};
            box->updates.push_back(up);
        }
        bump(count_.updates_dropped, unusable);
        inbox_updates_.fetch_add(box->updates.size(), std::memory_order_relaxed);
        inbox_node* raw = box.release();
        raw->next = inbox_.load(std::memory_order_relaxed);
        while (!inbox_.compare_exchange_weak(raw->next, raw, std::memory_order_release,
                                             std::memory_order_relaxed)) {
        }
        if (!wake_posted_.exchange(true, std::memory_order_acq_rel)) {
            boost::asio::post(io_, [self = shared_from_this()] {
                self->wake_posted_.store(false, std::memory_order_seq_cst);
                self->drain_inbox();
                self->pump();
            });
        }
    }

    void set_resync_handler(std::function<void()> handler) {
        const std::lock_guard lock(resync_mutex_);
        resync_handler_ = std::move(handler);
    }

    [[nodiscard]] latency_histogram::counts write_lag_counts() const noexcept {
        return count_.write_lag.read();
    }

    [[nodiscard]] sink_stats stats() const {
        sink_stats s = count_.read();
        s.pending += inbox_updates_.load(std::memory_order_relaxed);
        {
            const std::lock_guard lock(error_mutex_);
            s.last_error = last_error_;
        }
        return s;
    }

    /// True when everything handed over has been acknowledged. Any thread.
    [[nodiscard]] bool idle() const noexcept {
        return inbox_updates_.load(std::memory_order_acquire) == 0 &&
               count_.pending_published.load(std::memory_order_acquire) == 0;
    }

    /// Writes what is pending until it is all acknowledged or `deadline` passes, closes the
    /// connections and stops. Any thread but the io_context's; blocks until then (the
    /// io_context must be running). Idempotent.
    stop_report stop(std::chrono::milliseconds deadline) {
        if (io_.get_executor().running_in_this_thread()) {
            throw std::logic_error("redis_sink::stop called on its own I/O thread");
        }
        std::promise<stop_report> done;
        auto result = done.get_future();
        boost::asio::post(io_, [self = shared_from_this(), deadline, &done] {
            self->begin_stop(deadline, done);
        });
        return result.get();
    }

private:
    struct node;
    struct token_state;

    /// One connection to a node and what is outstanding on it.
    struct connection {
        redisAsyncContext* ac = nullptr;
        bool ready = false;       ///< handshake done: writes may go out
        bool closing = false;     ///< being freed or disconnected by the sink
        bool retiring = false;    ///< older than max_conn_age: no new writes, closes when drained
        bool lost_writes = false; ///< writes failed without a reply when it went
        bool cluster = false;     ///< the node said `redis_mode:cluster`
        int handshake_left = 0;
        long long client_id = -1;
        std::string run_id;
        clock::time_point opened{};
        clock::time_point last_send{};
        std::deque<clock::time_point> sent; ///< per outstanding command, oldest first
        std::uint64_t writes_seen = 0;
        clock::time_point writes_seen_at{};
    };

    /// A Redis the sink knows: a seed, a master of the slot map, or the target of a redirect.
    /// Nodes live as long as the sink (a cluster has few), so pointers to them stay valid.
    struct node {
        sink_core* core = nullptr;
        std::string host;
        int port = 0;
        bool seed = false;
        std::size_t slots = 0; ///< slots the current map gives it
        connection conn;
        std::deque<token_state*> ready;   ///< tokens to write here, oldest first
        std::vector<token_state*> parked; ///< tokens whose retries ran out here
        int reconnect_attempts = 0;
        clock::time_point reconnect_at{};
        bool ever_connected = false;
        /// The client id of a connection that went with writes unanswered, to kill before
        /// writing on the next one, and the run_id of the server it was on.
        long long fence_id = -1;
        std::string fence_run_id;
        std::string known_run_id; ///< of the last connection that completed its handshake

        [[nodiscard]] std::string name() const { return host + ":" + std::to_string(port); }
    };

    enum class where : std::uint8_t { idle, unrouted, ready, in_flight, retry, parked };

    /// A key with a version not yet acknowledged.
    struct entry {
        const update_key* key = nullptr;
        token_state* token = nullptr;
        update_value value;
        std::uint64_t version = 0;              ///< bumped by each update
        std::uint64_t sent_version = 0;         ///< the version last sent
        std::int64_t pending_since_ns = 0;      ///< consume time of the oldest unwritten version
        std::int64_t next_pending_since_ns = 0; ///< of the first version after the one in flight
        /// When the candle key's expiry was last sent on the current Redis; the epoch when it
        /// is due with the next write (first write, after a failure, after a restart).
        clock::time_point expiry_sent{};
    };

    /// A token with keys not yet acknowledged: the unit written in one transaction.
    struct token_state {
        const update_key* id = nullptr; ///< the token (as a token-kind key)
        std::uint16_t slot = 0;
        where at = where::idle;
        std::vector<entry*> keys;   ///< its pending keys; [0, sent_count) are in the transaction
        std::size_t sent_count = 0; ///< keys in the transaction in flight (or last sent)
        int attempts = 0;           ///< failed transactions of the current versions
        int redirects = 0;          ///< redirections followed in a row
        int replies_due = 0;
        bool failed = false;
        node* ask_to = nullptr;             ///< the next transaction goes here, after ASKING
        std::optional<redirect> redirected; ///< the first redirection of the one in flight
    };

    /// Bytes one pending key costs: its map node and its place in its token's list.
    static constexpr std::size_t entry_bytes =
        sizeof(entry) + sizeof(update_key) + 4 * sizeof(void*);
    static constexpr std::size_t token_bytes =
        sizeof(token_state) + sizeof(update_key) + 4 * sizeof(void*);

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

    /// Whether the seeds are known to be one Redis or a cluster yet.
    enum class topology : std::uint8_t { unknown, plain, cluster };

    static std::chrono::milliseconds park_retry_interval(const redis_config& c) {
        const auto base = std::max(c.retry_delay, std::chrono::milliseconds(1));
        const int doublings = std::min(c.max_retries, 6);
        return std::clamp(base * (1 << doublings), std::chrono::milliseconds(250),
                          std::chrono::milliseconds(5'000));
    }

    static void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
        c.fetch_add(n, std::memory_order_relaxed);
    }

    void note_error(std::string_view what) {
        const std::lock_guard lock(error_mutex_);
        last_error_.assign(what);
    }

    // ---- the inbox -------------------------------------------------------------------------

    static void free_inbox(inbox_node* n) noexcept {
        while (n != nullptr) {
            inbox_node* next = n->next;
            delete n;
            n = next;
        }
    }

    void drain_inbox() {
        inbox_node* head = inbox_.exchange(nullptr, std::memory_order_acquire);
        inbox_node* ordered = nullptr; // the list is newest first: reverse it
        while (head != nullptr) {
            inbox_node* next = head->next;
            head->next = ordered;
            ordered = head;
            head = next;
        }
        while (ordered != nullptr) {
            std::unique_ptr<inbox_node> box(ordered);
            ordered = ordered->next;
            for (const update& u : box->updates) {
                ingest(u, box->consumed_ns);
            }
            inbox_updates_.fetch_sub(box->updates.size(), std::memory_order_release);
        }
        publish();
    }

    void ingest(const update& u, std::int64_t consumed_ns) {
        bump(count_.updates_received);
        const auto it = pending_.find(u.key);
        if (it == pending_.end()) {
            if (pending_.size() >= cfg_.max_pending_updates) {
                bump(count_.updates_dropped);
                return;
            }
            add_entry(u.key, u.value, consumed_ns);
            return;
        }
        entry& e = it->second;
        if (e.version != e.sent_version) {
            bump(count_.updates_coalesced); // the waiting version is replaced before it went out
        } else if (e.token->at == where::in_flight) {
            e.next_pending_since_ns = consumed_ns;
        }
        e.value = u.value;
        ++e.version;
    }

    /// A key not pending yet: joins its token, which is queued if it was not waiting already.
    void add_entry(const update_key& key, const update_value& value, std::int64_t since_ns) {
        const auto it = pending_.try_emplace(key).first;
        entry& e = it->second;
        e.key = &it->first;
        e.value = value;
        e.version = 1;
        e.pending_since_ns = since_ns;
        if (key.kind == key_kind::candle && !journal_.empty()) {
            // Written before: its expiry is known to be set, and when.
            if (const write_journal::item* j = journal_.find(key)) {
                e.expiry_sent = j->expiry_sent;
            }
        }
        const update_key id = token_of(key);
        auto [t_it, fresh] = tokens_.try_emplace(id);
        token_state& t = t_it->second;
        if (fresh) {
            t.id = &t_it->first;
            t.slot = token_slot(id.token_view());
        }
        e.token = &t;
        t.keys.push_back(&e);
        if (t.at == where::parked) {
            ++parked_keys_;
        } else if (t.at == where::idle) {
            make_ready(t);
        }
    }

    // ---- routing ---------------------------------------------------------------------------

    /// Calls `f(node&)` for every node, including any that `f` makes known (a hiredis
    /// callback run by `f` may follow a redirection to a new node). Never allocates itself.
    template <class F>
    void for_each_node(F&& f) {
        for (std::size_t i = 0; i < nodes_.size(); ++i) {
            f(*nodes_[i]);
        }
    }

    /// The node at an address, made known if it was not. Allocates for a new one.
    node& node_at(std::string_view host, int port) {
        for (const auto& n : nodes_) {
            if (n->port == port && n->host == host) {
                return *n;
            }
        }
        nodes_.push_back(std::make_unique<node>());
        nodes_.back()->core = this;
        nodes_.back()->host = std::string(host);
        nodes_.back()->port = port;
        return *nodes_.back();
    }

    /// The node serving `slot`, or null while that is not known.
    [[nodiscard]] node* owner(std::uint16_t slot) const noexcept {
        switch (topology_) {
        case topology::plain:
            return plain_node_;
        case topology::cluster:
            return owners_[slot];
        case topology::unknown:
            break;
        }
        return nullptr;
    }

    /// Queues an idle token where its next transaction goes: the ASK target, the node serving
    /// its slot, or (while that is unknown) the unrouted list.
    void make_ready(token_state& t) {
        node* n = t.ask_to != nullptr ? t.ask_to : owner(t.slot);
        if (n == nullptr) {
            t.at = where::unrouted;
            unrouted_.push_back(&t);
            request_refresh();
            return;
        }
        t.at = where::ready;
        n->ready.push_back(&t);
    }

    /// Whether a node should have a connection: a seed until the topology is known (or while
    /// no node can be asked for the map), the plain Redis, a master serving slots, or a node
    /// with writes queued for it (an ASK target).
    [[nodiscard]] bool wanted(const node& n) const noexcept {
        switch (topology_) {
        case topology::unknown:
            return n.seed;
        case topology::plain:
            return &n == plain_node_;
        case topology::cluster:
            return n.slots > 0 || !n.ready.empty() ||
                   (n.seed && refresh_wanted_ && !any_node_ready());
        }
        return false;
    }

    [[nodiscard]] bool any_node_ready() const noexcept {
        for (const auto& n : nodes_) {
            if (n->conn.ready && !n->conn.closing) {
                return true;
            }
        }
        return false;
    }

    /// Asks for the slot map to be read (again) from a cluster node: on a cluster, or while
    /// the topology is unknown (a cluster node whose first CLUSTER SLOTS failed is asked again).
    /// A plain Redis has no map.
    void request_refresh() noexcept {
        if (topology_ != topology::plain) {
            refresh_wanted_ = true;
        }
    }

    /// Sends CLUSTER SLOTS on a connected node if a read of the map is wanted and due.
    void maybe_refresh(clock::time_point now) {
        if (!refresh_wanted_ || slots_pending_ || now < next_refresh_at_ || stopped_.load()) {
            return;
        }
        node* best = nullptr;
        for (const auto& n : nodes_) {
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

    /// A CLUSTER SLOTS reply from `n`: becomes the slot map if it is one.
    void slots_replied(node& n, const redisReply* reply) {
        std::string why;
        std::optional<slot_map> m = slot_map::from_cluster_slots(reply, n.host, why);
        if (!m) {
            note_error(n.name() + ": " + why);
            request_refresh();
            return;
        }
        install(*m);
    }

    /// Takes `m` as the slot map: every slot's owner, and every queued token moved to the node
    /// that now serves it. An incomplete map (slots without a master) is used for the slots it
    /// has, and read again later.
    void install(const slot_map& m) {
        topology_ = topology::cluster;
        bump(count_.slot_map_reads);
        std::vector<node*> by_index;
        by_index.reserve(m.nodes().size());
        for (const cluster_node& c : m.nodes()) {
            by_index.push_back(&node_at(c.host, c.port));
        }
        for (const auto& n : nodes_) {
            n->slots = 0;
        }
        bool complete = true;
        for (std::size_t s = 0; s < cluster_slot_count; ++s) {
            const std::uint16_t i = m.index_for(static_cast<std::uint16_t>(s));
            node* n = i == slot_map::no_node ? nullptr : by_index[i];
            owners_[s] = n;
            if (n != nullptr) {
                ++n->slots;
            } else {
                complete = false;
            }
        }
        refresh_wanted_ = !complete;
        reroute();
        const auto now = clock::now();
        for_each_node([this, now](node& n) {
            if (n.conn.ac == nullptr && now >= n.reconnect_at) {
                connect(n);
            }
        });
    }

    /// Moves every queued token to the node that serves its slot now (an ASK target keeps its
    /// token: the redirection is for that one transaction).
    void reroute() {
        std::vector<token_state*> moving;
        for (const auto& n : nodes_) {
            std::deque<token_state*> stay;
            for (token_state* t : n->ready) {
                if (t->ask_to == n.get() || owner(t->slot) == n.get()) {
                    stay.push_back(t);
                } else {
                    moving.push_back(t);
                }
            }
            n->ready.swap(stay);
        }
        moving.insert(moving.end(), unrouted_.begin(), unrouted_.end());
        unrouted_.clear();
        for (token_state* t : moving) {
            t->at = where::idle;
            make_ready(*t);
        }
    }

    /// A node cannot be reached: tokens sent to it only by an ASK go back to their slot's
    /// owner (which will redirect them again if the migration still runs), and the map is read
    /// again in case a failover moved its slots.
    void node_unreachable(node& n) {
        request_refresh();
        std::vector<token_state*> moving;
        std::deque<token_state*> stay;
        for (token_state* t : n.ready) {
            if (t->ask_to == &n) {
                t->ask_to = nullptr;
                moving.push_back(t);
            } else {
                stay.push_back(t);
            }
        }
        n.ready.swap(stay);
        for (token_state* t : moving) {
            t->at = where::idle;
            make_ready(*t);
        }
    }

    // ---- sending ---------------------------------------------------------------------------

    [[nodiscard]] static bool can_send(const node& n) noexcept {
        return n.conn.ac != nullptr && n.conn.ready && !n.conn.closing && !n.conn.retiring;
    }

    void pump() {
        for_each_node([this](node& n) { pump(n); });
        publish_in_flight();
    }

    void pump(node& n) {
        const std::size_t limit = std::max<std::size_t>(cfg_.pipeline_size, 2);
        while (can_send(n) && !n.ready.empty()) {
            token_state* t = n.ready.front();
            if (t->ask_to == nullptr && owner(t->slot) != &n) {
                n.ready.pop_front(); // its slot moved since it was queued
                t->at = where::idle;
                make_ready(*t);
                continue;
            }
            // ASKING, MULTI, at most two commands per key, EXEC; a larger one goes alone.
            const std::size_t need = 3 + 2 * t->keys.size();
            if (!n.conn.sent.empty() && n.conn.sent.size() + need > limit) {
                break;
            }
            n.ready.pop_front();
            if (!send(n, *t)) {
                n.ready.push_front(t);
                break;
            }
        }
    }

    void append_key(command_args& a, const update_key& k, std::string_view kind) const {
        a.add(cfg_.key_prefix);
        a.extend(":{");
        a.extend(k.token_view());
        a.extend("}:");
        a.extend(kind);
    }

    /// `<prefix>:{<token>}:candle:<interval>:<open_time>`, as `candle_key` spells it.
    void append_candle_key(command_args& a, const update_key& k) const {
        append_key(a, k, "candle:");
        a.extend(interval_name(interval(k.width_ms)).view());
        a.extend(":");
        a.extend(number_text(k.open_time).view());
    }

    /// The expiry of a candle key: `candle_retention_intervals` intervals, capped at 2^50 ms.
    [[nodiscard]] std::chrono::milliseconds candle_ttl(const update_key& k) const noexcept {
        return std::chrono::milliseconds(
            static_cast<std::int64_t>(candle_ttl_ms(cfg_.candle_retention_intervals, k.width_ms)));
    }

    /// Whether a candle write carries PEXPIRE: with the key's first write on this Redis (or
    /// the first since the journal forgot it, or since a failed write), with its closing
    /// write, and at most once per interval in between. A key thus expires between
    /// `candle_retention_intervals` - 1 and `candle_retention_intervals` intervals after its
    /// last write and exactly that many after its closing write, and a key written often costs
    /// one command per write instead of two.
    [[nodiscard]] static bool expiry_due(const entry& e, const candle& c,
                                         clock::time_point now) noexcept {
        return c.closed || e.expiry_sent == clock::time_point{} ||
               now - e.expiry_sent >= std::chrono::milliseconds(e.key->width_ms);
    }

    /// Sends a token's transaction to `n`: [ASKING,] MULTI, each pending key's latest version
    /// (HSET, and PEXPIRE when due; HSET of rolling and of latest for the token's own key),
    /// EXEC. False if hiredis refused the first command (the connection is going away); a
    /// refusal after that fails the transaction when what was sent is answered (without EXEC,
    /// Redis applies none of it).
    bool send(node& n, token_state& t) {
        command_args& a = args_;
        int issued = 0;
        bool refused = false;
        const auto issue = [&]() {
            if (refused || redisAsyncCommandArgv(n.conn.ac, &sink_core::on_txn_reply, &t, a.argc(),
                                                 a.argv(), a.lengths()) != REDIS_OK) {
                refused = true;
                return;
            }
            ++issued;
            note_sent(n);
        };
        const auto hset = [&a](std::string_view field, std::string_view text) {
            a.add(field);
            a.add(text);
        };
        const bool asking = t.ask_to == &n;
        if (asking) {
            a.clear();
            a.add("ASKING");
            issue();
        }
        a.clear();
        a.add("MULTI");
        issue();
        if (issued == 0) {
            return false;
        }
        const clock::time_point now = clock::now();
        for (entry* e : t.keys) {
            const auto* c = std::get_if<candle>(&e->value);
            a.clear();
            a.add("HSET");
            if (c != nullptr) {
                append_candle_key(a, *e->key);
                for_each_field(*c, hset);
            } else {
                append_key(a, *e->key, "rolling:24h");
                for_each_field(std::get<token_value>(e->value).rolling, hset);
            }
            issue();
            if (c == nullptr || expiry_due(*e, *c, now)) {
                a.clear();
                if (c != nullptr) {
                    a.add("PEXPIRE");
                    append_candle_key(a, *e->key);
                    a.add(number_text(static_cast<std::uint64_t>(candle_ttl(*e->key).count()))
                              .view());
                    e->expiry_sent = now;
                } else {
                    a.add("HSET");
                    append_key(a, *e->key, "latest");
                    for_each_field(std::get<token_value>(e->value).latest, hset);
                }
                issue();
            }
            e->sent_version = e->version;
        }
        a.clear();
        a.add("EXEC");
        issue();
        t.failed = refused;
        t.replies_due = issued;
        t.sent_count = t.keys.size();
        t.ask_to = nullptr;
        t.redirected.reset();
        t.at = where::in_flight;
        bump(count_.transactions);
        if (t.attempts > 0) {
            bump(count_.retries, t.sent_count);
        }
        return true;
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
        sink_core* core;
        node* at;
    };
    static callback_target target_of(const redisAsyncContext* ac) noexcept {
        auto* n = static_cast<node*>(ac->data);
        return {n == nullptr ? nullptr : n->core, n};
    }

    static void on_txn_reply(redisAsyncContext* ac, void* r, void* privdata) {
        const callback_target to = target_of(ac);
        if (to.core != nullptr) {
            to.core->txn_replied(*to.at, ac, static_cast<redisReply*>(r),
                                 *static_cast<token_state*>(privdata));
        }
    }

    /// One reply of a token's transaction: MULTI's OK, a command's QUEUED (or its refusal:
    /// MOVED, ASK, OOM...), then EXEC's array of results (or EXECABORT, or nothing).
    void txn_replied(node& n, redisAsyncContext* ac, const redisReply* reply, token_state& t) {
        const bool ok = reply != nullptr && reply->type != REDIS_REPLY_ERROR;
        note_reply(n, ac, ok);
        const bool last = --t.replies_due == 0;
        if (reply == nullptr) {
            if (ac == n.conn.ac) {
                n.conn.lost_writes = true;
                n.conn.ready = false; // hiredis is tearing the connection down
            }
            t.failed = true;
        } else if (!ok) {
            t.failed = true;
            const std::string_view text(reply->str, reply->len);
            auto to = topology_ == topology::cluster ? parse_redirect(text, n.host) : std::nullopt;
            if (to) {
                if (!t.redirected) {
                    t.redirected = std::move(to);
                }
            } else if (!(t.redirected && text.starts_with("EXECABORT"))) {
                note_error(n.name() + ": " + std::string(text));
                if (text.starts_with("CLUSTERDOWN")) {
                    request_refresh();
                }
            }
        } else if (last && !t.failed) {
            // EXEC: an array of each command's result, or nil if the transaction was aborted.
            if (reply->type != REDIS_REPLY_ARRAY) {
                t.failed = true;
                note_error(n.name() + ": EXEC did not run the transaction");
            } else {
                for (std::size_t i = 0; i < reply->elements; ++i) {
                    const redisReply* r = reply->element[i];
                    if (r->type == REDIS_REPLY_ERROR) {
                        t.failed = true;
                        note_error(n.name() + ": " + std::string(r->str, r->len));
                        break;
                    }
                }
            }
        }
        if (last) {
            finish(n, t);
        }
        if (reply != nullptr) {
            pump();
        }
    }

    /// Every reply of a token's transaction is in.
    void finish(node& n, token_state& t) {
        const auto now = clock::now();
        t.at = where::idle;
        if (t.failed) {
            t.failed = false;
            for (std::size_t i = 0; i < t.sent_count; ++i) {
                t.keys[i]->expiry_sent = {}; // the expiry may not have been set: send it again
            }
            std::optional<redirect> to = std::move(t.redirected);
            t.redirected.reset();
            if (to && t.redirects < max_redirects) {
                ++t.redirects;
                node& there = node_at(to->to.host, to->to.port);
                if (to->how == redirect::kind::moved) {
                    bump(count_.moved);
                    // The slot is served there now; the rest of the map is read again.
                    if (node*& o = owners_[to->slot]; o != &there) {
                        if (o != nullptr) {
                            --o->slots;
                        }
                        o = &there;
                        ++there.slots;
                    }
                    request_refresh();
                } else {
                    bump(count_.asked);
                    t.ask_to = &there;
                }
                make_ready(t);
                if (there.conn.ac == nullptr && now >= there.reconnect_at) {
                    connect(there);
                }
                return;
            }
            t.redirects = 0;
            ++t.attempts;
            if (t.attempts <= cfg_.max_retries || stopping_) {
                t.at = where::retry;
                retry_heap_.emplace_back(now + backoff(t.attempts), &t);
                std::push_heap(retry_heap_.begin(), retry_heap_.end(), later_first);
            } else {
                t.at = where::parked;
                n.parked.push_back(&t);
                parked_keys_ += t.keys.size();
            }
            return;
        }
        t.attempts = 0;
        t.redirects = 0;
        const std::int64_t done_ns = steady_ns();
        std::size_t kept = 0;
        for (std::size_t i = 0; i < t.keys.size(); ++i) {
            entry* e = t.keys[i];
            if (i < t.sent_count) {
                bump(count_.updates_written);
                const std::int64_t lag = done_ns - e->pending_since_ns;
                count_.write_lag.record(lag > 0 ? static_cast<std::uint64_t>(lag) : 0);
                if (e->version == e->sent_version) {
                    remember(*e);
                    pending_.erase(pending_.find(*e->key));
                    continue;
                }
                e->pending_since_ns = e->next_pending_since_ns;
            }
            t.keys[kept++] = e;
        }
        t.keys.resize(kept);
        t.sent_count = 0;
        if (!n.parked.empty()) {
            unpark(n); // the node answers again
        }
        if (t.keys.empty()) {
            tokens_.erase(tokens_.find(*t.id));
            return;
        }
        make_ready(t);
    }

    static bool later_first(const std::pair<clock::time_point, token_state*>& a,
                            const std::pair<clock::time_point, token_state*>& b) noexcept {
        return a.first > b.first;
    }

    /// `retry_delay` doubled for each further attempt, times a jitter in [0.5, 1.5), at most
    /// 10 s: retries from many tokens spread out instead of arriving together.
    clock::duration backoff(int attempt) {
        const auto base = std::chrono::duration<double, std::milli>(
            std::max(cfg_.retry_delay, std::chrono::milliseconds(1)));
        const double factor = static_cast<double>(1ull << std::min(attempt - 1, 20));
        rng_ ^= rng_ << 13;
        rng_ ^= rng_ >> 7;
        rng_ ^= rng_ << 17;
        const double jitter = 0.5 + static_cast<double>(rng_ >> 11) * 0x1.0p-53;
        const auto d =
            std::min(base * factor * jitter, std::chrono::duration<double, std::milli>(10'000.0));
        return std::chrono::duration_cast<clock::duration>(d);
    }

    /// The tokens parked on `n` are queued again (to wherever their slot is served now).
    void unpark(node& n) {
        std::vector<token_state*> list;
        list.swap(n.parked);
        for (token_state* t : list) {
            t->attempts = 0;
            parked_keys_ -= t->keys.size();
            t->at = where::idle;
            make_ready(*t);
        }
    }

    void unpark_all() {
        for_each_node([this](node& n) { unpark(n); });
    }

    // ---- the journal of written values ------------------------------------------------------

    void remember(const entry& e) {
        const clock::time_point expires = e.key->kind == key_kind::candle
                                              ? e.expiry_sent + candle_ttl(*e.key)
                                              : clock::time_point::max();
        bump(count_.journal_forgotten,
             journal_.remember(*e.key, e.value, expires, e.expiry_sent, cfg_.resync_journal_bytes));
    }

    /// Node `n` restarted: write again everything written to its slots, and ask for the live
    /// state (of every token: see the top of this header).
    void resync(node& n) {
        bump(count_.resyncs);
        // Expiries were set on the Redis that was lost, not on this one.
        for (auto& [key, e] : pending_) {
            if (owner(e.token->slot) == &n) {
                e.expiry_sent = {};
            }
        }
        std::uint64_t queued = 0;
        for (write_journal::item& j : journal_) {
            if (owner(token_slot(j.key.token_view())) != &n) {
                continue;
            }
            j.expiry_sent = {};
            if (pending_.size() >= cfg_.max_pending_updates) {
                break;
            }
            if (pending_.contains(j.key)) {
                continue; // a newer version is on its way already
            }
            add_entry(j.key, j.value, steady_ns());
            ++queued;
        }
        bump(count_.resync_updates, queued);
        note_error("Redis at " + n.name() +
                   " restarted (run_id changed): written values and live state sent again");
        const std::lock_guard lock(resync_mutex_);
        if (resync_handler_) {
            resync_handler_();
        }
    }

    // ---- connections -----------------------------------------------------------------------

    void connect(node& n) {
        if (stopped_.load(std::memory_order_relaxed) || n.conn.ac != nullptr || !wanted(n)) {
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
        redisAsyncSetConnectCallback(ac, &sink_core::on_connect);
        redisAsyncSetDisconnectCallback(ac, &sink_core::on_disconnect);
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
        node_unreachable(n);
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
        if (redisAsyncCommandArgv(n.conn.ac, &sink_core::on_control_reply,
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
                request_refresh();
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
            if (topology_ == topology::unknown) {
                topology_ = topology::plain;
                plain_node_ = &n;
                refresh_wanted_ = false;
                reroute();
            }
            if (cfg_.db != 0) {
                const std::string db = std::to_string(cfg_.db);
                control(n, {"SELECT", db}, tag_select);
            }
        } else if ((topology_ == topology::unknown || refresh_wanted_) && !slots_pending_) {
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
        if (!n.known_run_id.empty() && n.conn.run_id != n.known_run_id) {
            resync(n);
        }
        n.known_run_id = n.conn.run_id;
        unpark(n);
        pump();
        publish();
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
            node_unreachable(n);
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

    // ---- the clock -------------------------------------------------------------------------

    void arm_tick() {
        tick_timer_.expires_after(tick_);
        tick_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
            if (!ec) {
                self->on_tick();
            }
        });
    }

    void on_tick() {
        const auto now = clock::now();
        drain_inbox();
        for_each_node([this, now](node& n) { check_connection(n, now); });
        while (!retry_heap_.empty() && retry_heap_.front().first <= now) {
            token_state* t = retry_heap_.front().second;
            std::pop_heap(retry_heap_.begin(), retry_heap_.end(), later_first);
            retry_heap_.pop_back();
            t->at = where::idle;
            make_ready(*t);
        }
        if (stopping_ || now >= next_park_retry_) {
            unpark_all();
            next_park_retry_ = now + park_retry_;
        }
        maybe_refresh(now);
        for_each_node([this, now](node& n) {
            if (n.conn.ac == nullptr && now >= n.reconnect_at) {
                connect(n);
            }
        });
        journal_.prune(now);
        pump();
        publish();
        if (stopping_ && check_stop(now)) {
            return;
        }
        arm_tick();
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

    // ---- stopping --------------------------------------------------------------------------

    void begin_stop(std::chrono::milliseconds deadline, std::promise<stop_report>& done) {
        if (stop_done_) {
            done.set_value(final_report_);
            return;
        }
        stop_waiters_.push_back(&done);
        if (!stopping_) {
            stopping_ = true;
            stop_deadline_ = clock::now() + deadline;
            unpark_all();
            pump();
        }
        check_stop(clock::now());
    }

    /// Finishes stopping once everything is written or the deadline passed. True if it did.
    bool check_stop(clock::time_point now) {
        drain_inbox();
        const bool empty = pending_.empty() && inbox_updates_.load() == 0;
        if (!empty && now < stop_deadline_) {
            return false;
        }
        stopped_.store(true, std::memory_order_release);
        free_inbox(inbox_.exchange(nullptr)); // nothing arrives after stop; counted as dropped
        final_report_.unwritten = pending_.size();
        final_report_.dropped = count_.updates_dropped.load(std::memory_order_relaxed);
        final_report_.complete = empty && final_report_.dropped == 0;
        if (!empty) {
            note_error("stopped with " + std::to_string(pending_.size()) +
                       " keys not written to Redis");
        }
        for_each_node([](node& n) {
            if (n.conn.ac != nullptr && !n.conn.closing) {
                redisAsyncContext* ac = n.conn.ac;
                n.conn.closing = true;
                redisAsyncFree(ac);
                if (n.conn.ac == ac) {
                    n.conn = connection{};
                }
            }
        });
        tick_timer_.cancel();
        publish();
        final_report_.stats = stats();
        stop_done_ = true;
        for (std::promise<stop_report>* w : stop_waiters_) {
            w->set_value(final_report_);
        }
        stop_waiters_.clear();
        return true;
    }

    // ---- figures for other threads ---------------------------------------------------------

    void publish_in_flight() noexcept {
        count_.in_flight_published.store(in_flight_, std::memory_order_relaxed);
    }

    void publish() noexcept {
        std::size_t serving = 0;
        std::size_t connected = 0;
        std::size_t queued = unrouted_.size();
        for (const auto& n : nodes_) {
            const bool serves =
                topology_ == topology::plain ? n.get() == plain_node_ : n->slots > 0;
            if (serves) {
                ++serving;
                connected += n->conn.ready && !n->conn.closing ? 1 : 0;
            }
            queued += n->ready.size() + n->parked.size();
        }
        count_.pending_published.store(pending_.size(), std::memory_order_release);
        count_.parked_published.store(parked_keys_, std::memory_order_relaxed);
        count_.journal_published.store(journal_.size(), std::memory_order_relaxed);
        count_.memory_published.store(pending_.size() * entry_bytes + tokens_.size() * token_bytes +
                                          journal_.bytes() + queued * sizeof(token_state*),
                                      std::memory_order_relaxed);
        count_.cluster_published.store(topology_ == topology::cluster, std::memory_order_relaxed);
        count_.nodes_published.store(serving, std::memory_order_relaxed);
        count_.nodes_connected_published.store(connected, std::memory_order_relaxed);
        publish_in_flight();
    }

    redis_config cfg_;
    boost::asio::io_context& io_;
    boost::asio::steady_timer tick_timer_;
    const std::chrono::milliseconds tick_;
    const std::chrono::milliseconds park_retry_;
    const std::chrono::milliseconds refresh_spacing_;
    command_args args_;

    // Shared with producer threads.
    std::atomic<inbox_node*> inbox_{nullptr};
    std::atomic<bool> wake_posted_{false};
    std::atomic<std::size_t> inbox_updates_{0};
    std::atomic<bool> stopped_{false};

    // The I/O thread's.
    std::vector<std::unique_ptr<node>> nodes_;
    topology topology_ = topology::unknown;
    node* plain_node_ = nullptr;
    std::vector<node*> owners_; ///< per slot, on a cluster
    bool refresh_wanted_ = false;
    bool slots_pending_ = false; ///< a CLUSTER SLOTS is in flight
    clock::time_point next_refresh_at_{};
    std::unordered_map<update_key, entry, update_key_hash> pending_;
    std::unordered_map<update_key, token_state, update_key_hash> tokens_;
    std::deque<token_state*> unrouted_;
    std::vector<std::pair<clock::time_point, token_state*>> retry_heap_;
    std::size_t parked_keys_ = 0;
    write_journal journal_;
    std::size_t in_flight_ = 0;
    std::uint64_t rng_;
    clock::time_point next_park_retry_{};
    bool stopping_ = false;
    bool stop_done_ = false;
    clock::time_point stop_deadline_{};
    std::vector<std::promise<stop_report>*> stop_waiters_;
    stop_report final_report_;

    std::mutex resync_mutex_;
    std::function<void()> resync_handler_;
    mutable std::mutex error_mutex_;
    std::string last_error_;
    sink_counters count_;
};

} // namespace detail

/// A sink that writes every update to Redis (see the top of this header). Satisfies
/// `tradeagg::sink`; give it to a pipeline by reference (`pipeline<P, redis_sink&>`) so that it
/// outlives the pipeline's final flush and can be stopped after it.
///
/// Threading: `consume` may be called from any number of threads at once; `stats`, `idle` and
/// `set_resync_handler` from any thread; `stop` from any thread but the sink's I/O thread.
class redis_sink {
public:
    /// Starts its own I/O thread and connects to the seeds. Throws `config_error` for a prefix that
    /// is empty, too long, or holds '{' or '}'. Allocates.
    explicit redis_sink(redis_config cfg)
        : own_io_(std::make_unique<boost::asio::io_context>(1)),
          guard_(std::make_unique<guard_type>(own_io_->get_executor())),
          core_(make_core(std::move(cfg), *own_io_)) {
        thread_ = std::thread([io = own_io_.get()] {
            tradeagg::detail::name_this_thread("tradeagg-redis");
            // hiredis writes with write(2): a connection Redis has closed raises SIGPIPE, whose
            // default action ends the process. Blocked here, it stays pending on this thread
            // and the write fails with EPIPE, which hiredis reports as a lost connection.
            sigset_t pipe;
            sigemptyset(&pipe);
            sigaddset(&pipe, SIGPIPE);
            pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
            io->run();
        });
        core_->start();
    }

    /// Runs on `io`, which the caller runs on exactly one thread (all of the sink's handlers
    /// and hiredis callbacks run there) and keeps running until `stop()` returns. That thread
    /// must not die of SIGPIPE when Redis closes a connection: ignore SIGPIPE in the process,
    /// or block it in that thread (the sink's own thread does).
    redis_sink(redis_config cfg, boost::asio::io_context& io)
        : core_(make_core(std::move(cfg), io)) {
        core_->start();
    }

    redis_sink(const redis_sink&) = delete;
    redis_sink& operator=(const redis_sink&) = delete;

    /// Stops (as `stop(write_timeout)` does) if `stop` was not called.
    ~redis_sink() {
        if (!stopped_) {
            (void)stop(stop_deadline_);
        }
    }

    /// Hands a flush to the I/O thread. Any thread; never blocks; allocates one node.
    void consume(const flush_batch& batch) { core_->enqueue(batch); }

    /// Called (on the I/O thread) when Redis (or one master of a cluster) lost what was
    /// written: the pipeline then hands over every live candle and token again. A pipeline sets
    /// this itself. Any thread; an empty function clears it, waiting for a call in progress.
    void set_resync_handler(std::function<void()> handler) {
        core_->set_resync_handler(std::move(handler));
    }

    /// Counters and gauges. Any thread; allocates (the error text).
    [[nodiscard]] sink_stats stats() const { return core_->stats(); }
    /// The write-lag histogram behind `stats().write_lag`, cumulative since construction: for
    /// exporting the whole distribution. Thread-safe; never allocates.
    [[nodiscard]] latency_histogram::counts write_lag_counts() const noexcept {
        return core_->write_lag_counts();
    }

    /// True when everything handed over has been acknowledged by Redis. Any thread.
    [[nodiscard]] bool idle() const noexcept { return core_->idle(); }

    /// Waits until `idle()` or `timeout`; returns `idle()`. Any thread; blocks (polls).
    bool wait_idle(std::chrono::milliseconds timeout) const {
        const auto until = std::chrono::steady_clock::now() + timeout;
        while (!idle()) {
            if (std::chrono::steady_clock::now() >= until) {
                return false;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return true;
    }

    /// Writes everything pending, retrying as configured but no longer than `deadline`, then
    /// closes the connections and stops the sink's own thread. Returns what could not be
    /// written; updates handed over afterwards are dropped (counted). Call after the
    /// pipeline's `stop()`. Any thread but the sink's I/O thread; blocks. Idempotent.
    stop_report stop(std::chrono::milliseconds deadline) {
        const std::lock_guard lock(stop_mutex_);
        if (stopped_) {
            return report_;
        }
        report_ = core_->stop(deadline);
        if (own_io_) {
            guard_.reset();
            thread_.join(); // run() returns once the cancelled waits have run
        }
        stopped_ = true;
        return report_;
    }

private:
    using guard_type = boost::asio::executor_work_guard<boost::asio::io_context::executor_type>;

    static std::shared_ptr<detail::sink_core> make_core(redis_config cfg,
                                                        boost::asio::io_context& io) {
        const std::string_view prefix = cfg.key_prefix;
        if (prefix.empty() || prefix.size() > detail::sink_core::max_prefix ||
            prefix.find_first_of("{} \r\n") != std::string_view::npos) {
            throw config_error("key_prefix",
                               "key_prefix = \"" + cfg.key_prefix +
                                   "\": expected 1 to 256 characters without braces or spaces");
        }
        return std::make_shared<detail::sink_core>(std::move(cfg), io);
    }

    std::unique_ptr<boost::asio::io_context> own_io_;
    std::unique_ptr<guard_type> guard_;
    std::shared_ptr<detail::sink_core> core_;
    std::thread thread_;
    std::mutex stop_mutex_;
    bool stopped_ = false;
    stop_report report_;
    std::chrono::milliseconds stop_deadline_{5'000};
};
static_assert(sink<redis_sink>);

} // namespace tradeagg::redis
