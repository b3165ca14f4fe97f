#pragma once
// The Redis sink: writes every aggregate a pipeline flushes to Redis (keys and fields in
// redis_keys.hpp), through hiredis's asynchronous client on one Boost.Asio I/O thread.
//
// How it stays exact and out of the workers' way:
// - `consume` (on shard workers) copies the batch into a node and pushes it onto a lock-free
//   list; it never blocks, never waits for the network, and allocates one node per flush. The
//   I/O thread takes the whole list at once, so the list cannot fill up the way a ring can.
// - On the I/O thread, updates are coalesced per key: a key has at most one version waiting
//   and one in flight, and a newer version replaces the waiting one. So Redis falling behind
//   costs memory per key, not per update, and writes of one key never overtake each other.
// - Every write is an absolute value (HSET of every field, then PEXPIRE for candles), so
//   sending one again after an unknown outcome is exact.
// - Up to `pipeline_size` commands are in flight. A command without a reply after
//   `read_timeout` (or a connection that cannot write for `write_timeout`) drops the
//   connection with `redisAsyncFree`, which fails what was in flight; failed writes are sent
//   again after `retry_delay`, backing off with jitter, up to `max_retries` times, and then
//   kept ("parked") until Redis answers again. Nothing accepted is dropped, except new keys
//   beyond `max_pending_updates` (counted).
// - A dropped connection may still have writes in Redis's input buffer (a stopped Redis
//   reads them when it resumes). Before writing on a new connection to the same server, the
//   sink kills the old one by its client id (`CLIENT KILL ID`): once that answers, nothing
//   sent on the old connection can be applied after what is sent on the new one.
// - Each connection starts with `INFO server`: a changed `run_id` means Redis restarted and
//   may have lost everything. The sink then writes again what it has written (a journal of
//   the latest written value per key, bounded by `resync_journal_bytes`) and asks the
//   pipeline to hand over every live candle and rolling window again (`resync`).
//
// hiredis 0.14.1 resolves host names with blocking DNS: give an IP address.

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
#include <tradeagg/runtime_config.hpp>
#include <tradeagg/sink.hpp>
#include <tradeagg/sink/asio_hiredis.hpp>
#include <tradeagg/sink/redis_config.hpp>
#include <tradeagg/sink/redis_keys.hpp>

namespace tradeagg::redis {

/// What a Redis sink has done. `latency_avg_ms` and `success_rate` are the seed's
/// `redis_latency_avg_ms` and `redis_success_rate`.
struct sink_stats {
    std::uint64_t updates_received = 0;  ///< candle and token updates handed to `consume`
    std::uint64_t updates_coalesced = 0; ///< replaced by a newer version before being sent
    std::uint64_t updates_written = 0;   ///< versions Redis acknowledged
    std::uint64_t updates_dropped = 0; ///< new keys refused at `max_pending_updates`, or after stop
    std::uint64_t commands_sent = 0;
    std::uint64_t commands_succeeded = 0;
    std::uint64_t commands_failed = 0; ///< error replies, and commands lost with a connection
    std::uint64_t retries = 0;         ///< writes sent again after a failure
    std::uint64_t timeouts = 0;        ///< connections dropped at a read or write deadline
    std::uint64_t connects = 0;        ///< connections that completed their handshake
    std::uint64_t reconnects = 0;      ///< of those, after the first
    std::uint64_t connect_failures = 0;
    std::uint64_t resyncs = 0;           ///< Redis restarts noticed (its run_id changed)
    std::uint64_t resync_updates = 0;    ///< writes queued again from the journal by resyncs
    std::uint64_t journal_forgotten = 0; ///< written values dropped from the journal for room
    std::size_t pending = 0;             ///< keys not yet written (waiting, in flight, parked)
    std::size_t in_flight = 0;           ///< commands sent and not yet answered
    std::size_t parked = 0;              ///< keys whose retries ran out, waiting for Redis
    std::size_t journal_entries = 0;
    std::size_t memory_bytes = 0; ///< pending keys and journal, approximately
    bool connected = false;       ///< a connection has completed its handshake
    double latency_avg_ms = 0.0;  ///< mean reply time of recent commands (about the last 256)
    double success_rate = 1.0;    ///< share of recent commands that succeeded
    latency_summary write_lag;    ///< from `consume` to Redis acknowledging that version
    std::string last_error;       ///< the latest error, "" if none
};

/// What `stop()` could not do.
struct stop_report {
    /// Every update handed to the sink was acknowledged: nothing unwritten, nothing dropped.
    bool complete = false;
    std::size_t unwritten = 0; ///< keys whose latest version Redis did not acknowledge
    std::uint64_t dropped = 0; ///< updates dropped over the sink's life (`updates_dropped`)
    sink_stats stats;          ///< as of the end
};

namespace detail {

enum class key_kind : std::uint8_t { candle, token };

/// Which Redis key an update writes (a token update writes two: rolling and latest).
struct update_key {
    std::array<char, max_token_length> token{};
    std::uint8_t token_size = 0;
    key_kind kind = key_kind::candle;
    std::int64_t width_ms = 0;
    timestamp_ms open_time = 0;

    [[nodiscard]] std::string_view token_view() const noexcept {
        return {token.data(), token_size};
    }
    friend bool operator==(const update_key& a, const update_key& b) noexcept {
        return a.kind == b.kind && a.width_ms == b.width_ms && a.open_time == b.open_time &&
               a.token_view() == b.token_view();
    }
};

struct update_key_hash {
    std::size_t operator()(const update_key& k) const noexcept {
        std::uint64_t h = std::hash<std::string_view>{}(k.token_view());
        h ^= (static_cast<std::uint64_t>(k.open_time) + 0x9E3779B97F4A7C15ull) *
             0xBF58476D1CE4E5B9ull;
        h ^= static_cast<std::uint64_t>(k.width_ms) * 0x94D049BB133111EBull +
             static_cast<std::uint64_t>(k.kind);
        return static_cast<std::size_t>(h ^ (h >> 31));
    }
};

struct token_value {
    rolling_stats rolling;
    latest_trade latest;
};
using update_value = std::variant<candle, token_value>;

struct update {
    update_key key;
    update_value value;
};

/// One flush's updates on their way to the I/O thread.
struct inbox_node {
    inbox_node* next = nullptr;
    std::int64_t consumed_ns = 0;
    std::vector<update> updates;
};

[[nodiscard]] inline std::int64_t steady_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

/// The arguments of one command, built in place for `redisAsyncCommandArgv` (which copies
/// them). Keys and fields are bounded: the prefix by the sink's constructor, tokens by
/// `max_token_length`.
class command_args {
public:
    void clear() noexcept {
        used_ = 0;
        argc_ = 0;
    }
    void add(std::string_view s) noexcept {
        std::memcpy(text_.data() + used_, s.data(), s.size());
        argv_[argc_] = text_.data() + used_;
        len_[argc_] = s.size();
        used_ += s.size();
        ++argc_;
    }
    /// Appends to the last argument (for keys built from parts).
    void extend(std::string_view s) noexcept {
        std::memcpy(text_.data() + used_, s.data(), s.size());
        len_[argc_ - 1] += s.size();
        used_ += s.size();
    }
    [[nodiscard]] int argc() const noexcept { return static_cast<int>(argc_); }
    [[nodiscard]] const char** argv() noexcept { return argv_.data(); }
    [[nodiscard]] const std::size_t* lengths() const noexcept { return len_.data(); }

private:
    std::array<char, 2'048> text_{};
    std::array<const char*, 40> argv_{};
    std::array<std::size_t, 40> len_{};
    std::size_t used_ = 0;
    std::size_t argc_ = 0;
};

/// The sink's state, owned jointly by the sink and by the handlers queued on the io_context
/// (so a handler that runs after the sink is gone finds it alive). Everything not atomic is
/// touched only on the io_context's thread.
class sink_core : public std::enable_shared_from_this<sink_core> {
    using clock = std::chrono::steady_clock;

public:
    static constexpr std::size_t max_prefix = 256;

    sink_core(redis_config cfg, boost::asio::io_context& io)
        : cfg_(std::move(cfg)), io_(io), tick_timer_(io),
          tick_(std::clamp(std::min({cfg_.read_timeout, cfg_.write_timeout,
                                     std::max(cfg_.retry_delay, std::chrono::milliseconds(1))}) /
                               4,
                           std::chrono::milliseconds(1), std::chrono::milliseconds(25))),
          park_retry_(park_retry_interval(cfg_)),
          rng_(0x9E3779B97F4A7C15ull ^ static_cast<std::uint64_t>(steady_ns())) {}

    sink_core(const sink_core&) = delete;
    sink_core& operator=(const sink_core&) = delete;

    ~sink_core() {
        // Normally stop() closed the connection on the I/O thread; if the io_context was never
        // run, nothing else can be running now.
        free_inbox(inbox_.exchange(nullptr));
        if (conn_.ac != nullptr) {
            redisAsyncContext* ac = conn_.ac;
            conn_ = connection{};
            ac->data = nullptr;
            redisAsyncFree(ac);
        }
    }

    /// Starts connecting and ticking. Call once, from any thread.
    void start() {
        boost::asio::post(io_, [self = shared_from_this()] {
            self->connect();
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
            bump(updates_dropped_, n);
            return;
        }
        auto node = std::make_unique<inbox_node>();
        node->consumed_ns = steady_ns();
        node->updates.reserve(n);
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
            node->updates.push_back(up);
        }
        for (const token_update& u : batch.tokens) {
            update up;
            if (!fill_key(up.key, u.name)) {
                ++unusable;
                continue;
            }
            up.key.kind = key_kind::token;
            up.value = token_value{u.rolling, u.latest};
            node->updates.push_back(up);
        }
        bump(updates_dropped_, unusable);
        inbox_updates_.fetch_add(node->updates.size(), std::memory_order_relaxed);
        inbox_node* raw = node.release();
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

    [[nodiscard]] sink_stats stats() const {
        sink_stats s;
        s.updates_received = updates_received_.load(std::memory_order_relaxed);
        s.updates_coalesced = updates_coalesced_.load(std::memory_order_relaxed);
        s.updates_written = updates_written_.load(std::memory_order_relaxed);
        s.updates_dropped = updates_dropped_.load(std::memory_order_relaxed);
        s.commands_sent = commands_sent_.load(std::memory_order_relaxed);
        s.commands_succeeded = commands_succeeded_.load(std::memory_order_relaxed);
        s.commands_failed = commands_failed_.load(std::memory_order_relaxed);
        s.retries = retries_.load(std::memory_order_relaxed);
        s.timeouts = timeouts_.load(std::memory_order_relaxed);
        s.connects = connects_.load(std::memory_order_relaxed);
        s.reconnects = s.connects > 0 ? s.connects - 1 : 0;
        s.connect_failures = connect_failures_.load(std::memory_order_relaxed);
        s.resyncs = resyncs_.load(std::memory_order_relaxed);
        s.resync_updates = resync_updates_.load(std::memory_order_relaxed);
        s.journal_forgotten = journal_forgotten_.load(std::memory_order_relaxed);
        s.pending = pending_published_.load(std::memory_order_relaxed) +
                    inbox_updates_.load(std::memory_order_relaxed);
        s.in_flight = in_flight_published_.load(std::memory_order_relaxed);
        s.parked = parked_published_.load(std::memory_order_relaxed);
        s.journal_entries = journal_published_.load(std::memory_order_relaxed);
        s.memory_bytes = memory_published_.load(std::memory_order_relaxed);
        s.connected = connected_.load(std::memory_order_relaxed);
        s.latency_avg_ms = latency_avg_ms_.load(std::memory_order_relaxed);
        s.success_rate = success_rate_.load(std::memory_order_relaxed);
        s.write_lag = write_lag_.summary();
        {
            const std::lock_guard lock(error_mutex_);
            s.last_error = last_error_;
        }
        return s;
    }

    /// True when everything handed over has been acknowledged. Any thread.
    [[nodiscard]] bool idle() const noexcept {
        return inbox_updates_.load(std::memory_order_acquire) == 0 &&
               pending_published_.load(std::memory_order_acquire) == 0;
    }

    /// Writes what is pending until it is all acknowledged or `deadline` passes, closes the
    /// connection and stops. Any thread but the io_context's; blocks until then (the
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
    /// One connection to Redis and what is outstanding on it.
    struct connection {
        redisAsyncContext* ac = nullptr;
        bool ready = false;       ///< handshake done: writes may go out
        bool closing = false;     ///< being freed or disconnected by the sink
        bool retiring = false;    ///< older than max_conn_age: no new writes, closes when drained
        bool lost_writes = false; ///< writes failed without a reply when it went
        int handshake_left = 0;
        long long client_id = -1;
        std::string run_id;
        clock::time_point opened{};
        clock::time_point last_send{};
        std::deque<clock::time_point> sent; ///< per outstanding command, oldest first
        std::uint64_t writes_seen = 0;
        clock::time_point writes_seen_at{};
    };

    enum class where : std::uint8_t { ready, in_flight, retry, parked };

    /// A key with a version not yet acknowledged.
    struct entry {
        const update_key* key = nullptr;
        update_value value;
        std::uint64_t version = 0;      ///< bumped by each update
        std::uint64_t sent_version = 0; ///< the version last sent
        where at = where::ready;
        int attempts = 0; ///< failed attempts of the current version
        int replies_due = 0;
        bool failed = false;
        std::int64_t pending_since_ns = 0;      ///< consume time of the oldest unwritten version
        std::int64_t next_pending_since_ns = 0; ///< of the first version after the one in flight
        /// When the candle key's expiry was last sent on the current Redis; the epoch when it
        /// is due with the next write (first write, after a failure, after a restart).
        clock::time_point expiry_sent{};
    };

    struct journal_item {
        update_key key;
        update_value value;
        clock::time_point expires = clock::time_point::max();
        clock::time_point expiry_sent{}; ///< as `entry::expiry_sent` when it was written
    };
    /// Bytes one journal item costs: its list node and its index node.
    static constexpr std::size_t journal_item_bytes =
        sizeof(journal_item) + 2 * sizeof(void*) + sizeof(update_key) + 4 * sizeof(void*);
    static constexpr std::size_t entry_bytes =
        sizeof(entry) + sizeof(update_key) + 3 * sizeof(void*);

    enum control_tag : std::uintptr_t {
        tag_auth = 1,
        tag_select,
        tag_info,
        tag_client_id,
        tag_fence,
        tag_ping
    };

    static std::chrono::milliseconds park_retry_interval(const redis_config& c) {
        const auto base = std::max(c.retry_delay, std::chrono::milliseconds(1));
        const int doublings = std::min(c.max_retries, 6);
        return std::clamp(base * (1 << doublings), std::chrono::milliseconds(250),
                          std::chrono::milliseconds(5'000));
    }

    static void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) noexcept {
        c.fetch_add(n, std::memory_order_relaxed);
    }

    static bool fill_key(update_key& k, std::string_view name) noexcept {
        if (name.empty() || name.size() > k.token.size()) {
            return false;
        }
        std::memcpy(k.token.data(), name.data(), name.size());
        k.token_size = static_cast<std::uint8_t>(name.size());
        return true;
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
            std::unique_ptr<inbox_node> node(ordered);
            ordered = ordered->next;
            for (const update& u : node->updates) {
                ingest(u, node->consumed_ns);
            }
            inbox_updates_.fetch_sub(node->updates.size(), std::memory_order_release);
        }
        publish();
    }

    void ingest(const update& u, std::int64_t consumed_ns) {
        bump(updates_received_);
        auto it = pending_.find(u.key);
        if (it == pending_.end()) {
            if (pending_.size() >= cfg_.max_pending_updates) {
                bump(updates_dropped_);
                return;
            }
            it = pending_.emplace(u.key, entry{}).first;
            entry& e = it->second;
            e.key = &it->first;
            if (u.key.kind == key_kind::candle && !journal_.empty()) {
                // Written before: its expiry is known to be set, and when.
                if (const auto j = journal_index_.find(u.key); j != journal_index_.end()) {
                    e.expiry_sent = j->second->expiry_sent;
                }
            }
            e.value = u.value;
            e.version = 1;
            e.pending_since_ns = consumed_ns;
            e.at = where::ready;
            ready_.push_back(&e);
            return;
        }
        entry& e = it->second;
        if (e.version != e.sent_version) {
            bump(updates_coalesced_); // the waiting version is replaced before it went out
        } else if (e.at == where::in_flight) {
            e.next_pending_since_ns = consumed_ns;
        }
        e.value = u.value;
        ++e.version;
    }

    // ---- sending ---------------------------------------------------------------------------

    [[nodiscard]] bool can_send() const noexcept {
        return conn_.ac != nullptr && conn_.ready && !conn_.closing && !conn_.retiring;
    }

    void pump() {
        const std::size_t limit = std::max<std::size_t>(cfg_.pipeline_size, 2);
        while (can_send() && !ready_.empty() && in_flight_ + 2 <= limit) {
            entry* e = ready_.front();
            ready_.pop_front();
            if (!send(*e)) {
                ready_.push_front(e);
                break;
            }
        }
        publish_in_flight();
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

    /// Sends an entry's commands (two, or one for a candle whose expiry is not due). False if
    /// hiredis refused the first (the connection is going away); a refused second fails the
    /// entry when the first is answered.
    bool send(entry& e) {
        command_args& a = args_;
        auto hset = [&a](std::string_view field, std::string_view text) {
            a.add(field);
            a.add(text);
        };
        const auto issue = [&]() {
            return redisAsyncCommandArgv(conn_.ac, &sink_core::on_entry_reply, &e, a.argc(),
                                         a.argv(), a.lengths()) == REDIS_OK;
        };
        const auto* c = std::get_if<candle>(&e.value);
        a.clear();
        a.add("HSET");
        if (c != nullptr) {
            append_candle_key(a, *e.key);
            for_each_field(*c, hset);
        } else {
            append_key(a, *e.key, "rolling:24h");
            for_each_field(std::get<token_value>(e.value).rolling, hset);
        }
        if (!issue()) {
            return false;
        }
        e.replies_due = 1;
        note_sent();
        const clock::time_point now = clock::now();
        if (c == nullptr || expiry_due(e, *c, now)) {
            a.clear();
            if (c != nullptr) {
                a.add("PEXPIRE");
                append_candle_key(a, *e.key);
                a.add(number_text(static_cast<std::uint64_t>(candle_ttl(*e.key).count())).view());
                e.expiry_sent = now;
            } else {
                a.add("HSET");
                append_key(a, *e.key, "latest");
                for_each_field(std::get<token_value>(e.value).latest, hset);
            }
            if (issue()) {
                e.replies_due = 2;
                note_sent();
            } else {
                e.failed = true;
            }
        }
        if (e.attempts > 0) {
            bump(retries_);
        }
        e.sent_version = e.version;
        e.at = where::in_flight;
        return true;
    }

    void note_sent() {
        const auto now = clock::now();
        conn_.sent.push_back(now);
        conn_.last_send = now;
        ++in_flight_;
        bump(commands_sent_);
    }

    /// Bookkeeping common to every reply (or failure without one) on the current connection.
    void note_reply(const redisAsyncContext* ac, bool ok) {
        const auto now = clock::now();
        if (ac == conn_.ac && !conn_.sent.empty()) {
            if (ok) {
                const double ms =
                    std::chrono::duration<double, std::milli>(now - conn_.sent.front()).count();
                const double prev = latency_avg_ms_.load(std::memory_order_relaxed);
                latency_avg_ms_.store(commands_succeeded_.load(std::memory_order_relaxed) == 0
                                          ? ms
                                          : prev + (ms - prev) / 256.0,
                                      std::memory_order_relaxed);
            }
            conn_.sent.pop_front();
        }
        const double rate = success_rate_.load(std::memory_order_relaxed);
        success_rate_.store(rate + ((ok ? 1.0 : 0.0) - rate) / 256.0, std::memory_order_relaxed);
        bump(ok ? commands_succeeded_ : commands_failed_);
    }

    static void on_entry_reply(redisAsyncContext* ac, void* r, void* privdata) {
        auto* self = static_cast<sink_core*>(ac->data);
        if (self == nullptr) {
            return; // the sink is being destroyed: nothing to account for
        }
        self->entry_replied(ac, static_cast<redisReply*>(r), *static_cast<entry*>(privdata));
    }

    void entry_replied(redisAsyncContext* ac, const redisReply* reply, entry& e) {
        const bool ok = reply != nullptr && reply->type != REDIS_REPLY_ERROR;
        note_reply(ac, ok);
        --in_flight_;
        if (reply == nullptr) {
            if (ac == conn_.ac) {
                conn_.lost_writes = true;
                conn_.ready = false; // hiredis is tearing the connection down
            }
            e.failed = true;
        } else if (!ok) {
            e.failed = true;
            note_error(std::string_view(reply->str, reply->len));
        }
        if (--e.replies_due == 0) {
            finish(e);
        }
        if (reply != nullptr) {
            pump();
        }
    }

    /// Both replies of an entry are in.
    void finish(entry& e) {
        const auto now = clock::now();
        if (e.failed) {
            e.failed = false;
            e.expiry_sent = {}; // the expiry may not have been set: send it with the retry
            ++e.attempts;
            if (e.attempts <= cfg_.max_retries || stopping_) {
                e.at = where::retry;
                retry_heap_.emplace_back(now + backoff(e.attempts), &e);
                std::push_heap(retry_heap_.begin(), retry_heap_.end(), later_first);
            } else {
                e.at = where::parked;
                parked_.push_back(&e);
            }
            return;
        }
        bump(updates_written_);
        const std::int64_t lag = steady_ns() - e.pending_since_ns;
        write_lag_.record(lag > 0 ? static_cast<std::uint64_t>(lag) : 0);
        e.attempts = 0;
        if (!parked_.empty()) {
            unpark_all(); // Redis answers again
        }
        if (e.version != e.sent_version) {
            e.pending_since_ns = e.next_pending_since_ns;
            e.at = where::ready;
            ready_.push_back(&e);
            return;
        }
        remember(e);
        pending_.erase(pending_.find(*e.key));
    }

    static bool later_first(const std::pair<clock::time_point, entry*>& a,
                            const std::pair<clock::time_point, entry*>& b) noexcept {
        return a.first > b.first;
    }

    /// `retry_delay` doubled for each further attempt, times a jitter in [0.5, 1.5), at most
    /// 10 s: retries from many keys spread out instead of arriving together.
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

    void unpark_all() {
        for (entry* e : parked_) {
            e->attempts = 0;
            e->at = where::ready;
            ready_.push_back(e);
        }
        parked_.clear();
    }

    // ---- the journal of written values ------------------------------------------------------

    void remember(const entry& e) {
        if (cfg_.resync_journal_bytes < journal_item_bytes) {
            return;
        }
        const clock::time_point expires = e.key->kind == key_kind::candle
                                              ? e.expiry_sent + candle_ttl(*e.key)
                                              : clock::time_point::max();
        const auto found = journal_index_.find(*e.key);
        if (found != journal_index_.end()) {
            found->second->value = e.value;
            found->second->expires = expires;
            found->second->expiry_sent = e.expiry_sent;
            journal_.splice(journal_.end(), journal_, found->second);
            return;
        }
        journal_.push_back(journal_item{*e.key, e.value, expires, e.expiry_sent});
        journal_index_.emplace(*e.key, std::prev(journal_.end()));
        while (journal_.size() * journal_item_bytes > cfg_.resync_journal_bytes) {
            forget_oldest();
            bump(journal_forgotten_);
        }
    }

    void forget_oldest() {
        journal_index_.erase(journal_.front().key);
        journal_.pop_front();
    }

    /// Drops written candles whose keys Redis has expired by now, oldest written first.
    void prune_journal(clock::time_point now) {
        while (!journal_.empty() && journal_.front().expires <= now) {
            forget_oldest();
        }
    }

    /// Redis restarted: write again everything written, and ask for the live state.
    void resync() {
        bump(resyncs_);
        // Expiries were set on the Redis that was lost, not on this one.
        for (auto& [key, e] : pending_) {
            e.expiry_sent = {};
        }
        std::uint64_t queued = 0;
        for (journal_item& j : journal_) {
            j.expiry_sent = {};
            if (pending_.size() >= cfg_.max_pending_updates) {
                break;
            }
            const auto [it, fresh] = pending_.try_emplace(j.key);
            if (!fresh) {
                continue; // a newer version is on its way already
            }
            entry& e = it->second;
            e.key = &it->first;
            e.value = j.value;
            e.version = 1;
            e.pending_since_ns = steady_ns();
            ready_.push_back(&e);
            ++queued;
        }
        bump(resync_updates_, queued);
        note_error("Redis restarted (run_id changed): written values and live state sent again");
        const std::lock_guard lock(resync_mutex_);
        if (resync_handler_) {
            resync_handler_();
        }
    }

    // ---- the connection --------------------------------------------------------------------

    void connect() {
        if (stopped_.load(std::memory_order_relaxed) || conn_.ac != nullptr) {
            return;
        }
        redisAsyncContext* ac = redisAsyncConnect(cfg_.host.c_str(), cfg_.port);
        if (ac == nullptr) {
            connect_failed("cannot allocate a hiredis context");
            return;
        }
        if (ac->err != 0 || !asio_watcher::attach(ac, io_)) {
            const std::string why =
                ac->err != 0 ? std::string(ac->errstr) : std::string("cannot watch the socket");
            redisAsyncFree(ac);
            connect_failed(why);
            return;
        }
        ac->data = this;
        redisAsyncSetConnectCallback(ac, &sink_core::on_connect);
        redisAsyncSetDisconnectCallback(ac, &sink_core::on_disconnect);
        conn_ = connection{};
        conn_.ac = ac;
        conn_.opened = conn_.last_send = conn_.writes_seen_at = clock::now();
        if (!cfg_.password.empty()) {
            control({"AUTH", cfg_.password}, tag_auth);
        }
        if (cfg_.db != 0) {
            const std::string db = std::to_string(cfg_.db);
            control({"SELECT", db}, tag_select);
        }
        control({"INFO", "server"}, tag_info);
        control({"CLIENT", "ID"}, tag_client_id);
    }

    void connect_failed(std::string_view why) {
        bump(connect_failures_);
        note_error("cannot connect to Redis at " + cfg_.host + ":" + std::to_string(cfg_.port) +
                   ": " + std::string(why));
        schedule_reconnect();
    }

    void schedule_reconnect() {
        const auto base = std::chrono::duration<double, std::milli>(
            std::max(cfg_.retry_delay, std::chrono::milliseconds(10)));
        const double factor = static_cast<double>(1u << std::min(reconnect_attempts_, 8));
        const auto delay =
            std::min(base * factor, std::chrono::duration<double, std::milli>(1'000.0));
        ++reconnect_attempts_;
        reconnect_at_ = clock::now() + std::chrono::duration_cast<clock::duration>(delay);
    }

    /// Sends a command of the handshake or a PING, tagged for `on_control_reply`.
    void control(std::initializer_list<std::string_view> words, control_tag tag) {
        command_args& a = args_;
        a.clear();
        for (std::string_view w : words) {
            a.add(w);
        }
        if (redisAsyncCommandArgv(conn_.ac, &sink_core::on_control_reply,
                                  reinterpret_cast<void*>(static_cast<std::uintptr_t>(tag)),
                                  a.argc(), a.argv(), a.lengths()) == REDIS_OK) {
            if (tag != tag_ping) {
                ++conn_.handshake_left;
            }
            note_sent();
        } else if (tag != tag_ping) {
            post_drop(); // a set-up that cannot complete would never time out
        }
    }

    static void on_control_reply(redisAsyncContext* ac, void* r, void* privdata) {
        auto* self = static_cast<sink_core*>(ac->data);
        if (self != nullptr) {
            self->control_replied(
                ac, static_cast<redisReply*>(r),
                static_cast<control_tag>(reinterpret_cast<std::uintptr_t>(privdata)));
        }
    }

    void control_replied(redisAsyncContext* ac, const redisReply* reply, control_tag tag) {
        const bool ok = reply != nullptr && reply->type != REDIS_REPLY_ERROR;
        --in_flight_;
        if (ac != conn_.ac) {
            bump(ok ? commands_succeeded_ : commands_failed_);
            return; // an old connection's leftovers
        }
        note_reply(ac, ok || tag == tag_fence); // "no such client" is a fine answer to a fence
        if (reply == nullptr) {
            conn_.ready = false;
            return; // the connection is going; its disconnect callback follows
        }
        if (tag == tag_ping) {
            return;
        }
        if (!ok && tag != tag_fence) {
            note_error(std::string("Redis refused the connection's set-up: ") +
                       std::string(reply->str, reply->len));
            post_drop();
            return;
        }
        if (tag == tag_info) {
            const std::string_view text(reply->str, reply->len);
            const std::size_t at = text.find("run_id:");
            if (at != std::string_view::npos) {
                const std::size_t from = at + 7;
                const std::size_t to = text.find_first_of("\r\n", from);
                conn_.run_id = std::string(text.substr(from, to - from));
            }
        } else if (tag == tag_client_id && reply->type == REDIS_REPLY_INTEGER) {
            conn_.client_id = reply->integer;
        } else if (tag == tag_fence) {
            fence_id_ = -1;
        }
        if (--conn_.handshake_left > 0) {
            return;
        }
        if (fence_id_ >= 0 && fence_run_id_ == conn_.run_id && tag != tag_fence) {
            // Writes lost with an earlier connection to this same server may still be in its
            // input buffer: end that connection before anything is written on this one.
            const std::string id = std::to_string(fence_id_);
            control({"CLIENT", "KILL", "ID", id}, tag_fence);
            return;
        }
        handshake_done();
    }

    void handshake_done() {
        conn_.ready = true;
        fence_id_ = -1;
        bump(connects_);
        connected_.store(true, std::memory_order_relaxed);
        reconnect_attempts_ = 0;
        if (!known_run_id_.empty() && conn_.run_id != known_run_id_) {
            resync();
        }
        known_run_id_ = conn_.run_id;
        unpark_all();
        pump();
    }

    static void on_connect(const redisAsyncContext* ac, int status) {
        auto* self = static_cast<sink_core*>(ac->data);
        if (self != nullptr && status != REDIS_OK && ac == self->conn_.ac) {
            self->note_error(std::string("cannot connect to Redis: ") + ac->errstr);
            bump(self->connect_failures_);
            self->connection_gone(); // hiredis frees the context after this callback
        }
    }

    static void on_disconnect(const redisAsyncContext* ac, int status) {
        auto* self = static_cast<sink_core*>(ac->data);
        if (self != nullptr && ac == self->conn_.ac) {
            if (status != REDIS_OK) {
                self->note_error(std::string("Redis connection lost: ") + ac->errstr);
            }
            self->connection_gone();
        }
    }

    /// The current connection is gone (or going, inside hiredis): remember what must be fenced
    /// and plan the next one.
    void connection_gone() {
        if (conn_.lost_writes && conn_.client_id >= 0) {
            fence_id_ = conn_.client_id;
            fence_run_id_ = conn_.run_id;
        }
        const bool aged = conn_.retiring && !conn_.lost_writes;
        conn_ = connection{};
        connected_.store(false, std::memory_order_relaxed);
        if (aged) {
            reconnect_at_ = clock::now();
        } else {
            schedule_reconnect();
        }
    }

    /// Drops the connection now: what was in flight fails and is retried. Not from inside a
    /// hiredis callback (use `post_drop`).
    void drop(std::string_view why) {
        if (conn_.ac == nullptr || conn_.closing) {
            return;
        }
        note_error(why);
        redisAsyncContext* ac = conn_.ac;
        conn_.closing = true;
        conn_.ready = false;
        redisAsyncFree(ac); // fails every callback, then calls on_disconnect if it was connected
        if (conn_.ac == ac) {
            connection_gone(); // it never connected, so no disconnect callback came
        }
    }

    void post_drop() {
        boost::asio::post(io_, [self = shared_from_this(), ac = conn_.ac] {
            if (self->conn_.ac == ac) {
                self->drop("connection set-up refused");
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
        check_connection(now);
        while (!retry_heap_.empty() && retry_heap_.front().first <= now) {
            entry* e = retry_heap_.front().second;
            std::pop_heap(retry_heap_.begin(), retry_heap_.end(), later_first);
            retry_heap_.pop_back();
            e->at = where::ready;
            ready_.push_back(e);
        }
        if (!parked_.empty() && (stopping_ || now >= next_park_retry_)) {
            unpark_all();
            next_park_retry_ = now + park_retry_;
        }
        if (conn_.ac == nullptr && now >= reconnect_at_) {
            connect();
        }
        prune_journal(now);
        pump();
        publish();
        if (stopping_ && check_stop(now)) {
            return;
        }
        arm_tick();
    }

    void check_connection(clock::time_point now) {
        if (conn_.ac == nullptr || conn_.closing) {
            return;
        }
        if (!conn_.sent.empty() && now - conn_.sent.front() >= cfg_.read_timeout) {
            bump(timeouts_);
            drop("no reply from Redis within REDIS_READ_TIMEOUT");
            return;
        }
        const auto w = asio_watcher::write_state_of(conn_.ac);
        if (!w.waiting || w.writes != conn_.writes_seen) {
            conn_.writes_seen = w.writes;
            conn_.writes_seen_at = now;
        } else if (now - conn_.writes_seen_at >= cfg_.write_timeout) {
            bump(timeouts_);
            drop("cannot write to Redis within REDIS_WRITE_TIMEOUT");
            return;
        }
        if (!conn_.ready) {
            return;
        }
        if (conn_.sent.empty() && now - conn_.last_send >= cfg_.idle_timeout) {
            control({"PING"}, tag_ping);
        }
        if (!conn_.retiring && now - conn_.opened >= cfg_.max_conn_age) {
            conn_.retiring = true; // no new writes; closes once what is in flight is answered
        }
        if (conn_.retiring && conn_.sent.empty()) {
            conn_.closing = true;
            conn_.ready = false;
            redisAsyncDisconnect(conn_.ac); // nothing pending: disconnects at once
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
        final_report_.dropped = updates_dropped_.load(std::memory_order_relaxed);
        final_report_.complete = empty && final_report_.dropped == 0;
        if (!empty) {
            note_error("stopped with " + std::to_string(pending_.size()) +
                       " keys not written to Redis");
        }
        if (conn_.ac != nullptr && !conn_.closing) {
            redisAsyncContext* ac = conn_.ac;
            conn_.closing = true;
            redisAsyncFree(ac);
            if (conn_.ac == ac) {
                conn_ = connection{};
            }
        }
        connected_.store(false, std::memory_order_relaxed);
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
        in_flight_published_.store(in_flight_, std::memory_order_relaxed);
    }

    void publish() noexcept {
        pending_published_.store(pending_.size(), std::memory_order_release);
        parked_published_.store(parked_.size(), std::memory_order_relaxed);
        journal_published_.store(journal_.size(), std::memory_order_relaxed);
        memory_published_.store(pending_.size() * entry_bytes +
                                    journal_.size() * journal_item_bytes +
                                    ready_.size() * sizeof(entry*),
                                std::memory_order_relaxed);
        publish_in_flight();
    }

    redis_config cfg_;
    boost::asio::io_context& io_;
    boost::asio::steady_timer tick_timer_;
    const std::chrono::milliseconds tick_;
    const std::chrono::milliseconds park_retry_;
    std::uint64_t rng_;
    command_args args_;

    // Shared with producer threads.
    std::atomic<inbox_node*> inbox_{nullptr};
    std::atomic<bool> wake_posted_{false};
    std::atomic<std::size_t> inbox_updates_{0};
    std::atomic<bool> stopped_{false};

    // The I/O thread's.
    connection conn_;
    std::unordered_map<update_key, entry, update_key_hash> pending_;
    std::deque<entry*> ready_;
    std::vector<std::pair<clock::time_point, entry*>> retry_heap_;
    std::vector<entry*> parked_;
    std::list<journal_item> journal_;
    std::unordered_map<update_key, std::list<journal_item>::iterator, update_key_hash>
        journal_index_;
    std::size_t in_flight_ = 0;
    int reconnect_attempts_ = 0;
    clock::time_point reconnect_at_{};
    clock::time_point next_park_retry_{};
    long long fence_id_ = -1;
    std::string fence_run_id_;
    std::string known_run_id_;
    bool stopping_ = false;
    bool stop_done_ = false;
    clock::time_point stop_deadline_{};
    std::vector<std::promise<stop_report>*> stop_waiters_;
    stop_report final_report_;

    std::mutex resync_mutex_;
    std::function<void()> resync_handler_;
    mutable std::mutex error_mutex_;
    std::string last_error_;

    // Counters (written on the I/O thread or by producers, read anywhere).
    std::atomic<std::uint64_t> updates_received_{0};
    std::atomic<std::uint64_t> updates_coalesced_{0};
    std::atomic<std::uint64_t> updates_written_{0};
    std::atomic<std::uint64_t> updates_dropped_{0};
    std::atomic<std::uint64_t> commands_sent_{0};
    std::atomic<std::uint64_t> commands_succeeded_{0};
    std::atomic<std::uint64_t> commands_failed_{0};
    std::atomic<std::uint64_t> retries_{0};
    std::atomic<std::uint64_t> timeouts_{0};
    std::atomic<std::uint64_t> connects_{0};
    std::atomic<std::uint64_t> connect_failures_{0};
    std::atomic<std::uint64_t> resyncs_{0};
    std::atomic<std::uint64_t> resync_updates_{0};
    std::atomic<std::uint64_t> journal_forgotten_{0};
    std::atomic<std::size_t> pending_published_{0};
    std::atomic<std::size_t> in_flight_published_{0};
    std::atomic<std::size_t> parked_published_{0};
    std::atomic<std::size_t> journal_published_{0};
    std::atomic<std::size_t> memory_published_{0};
    std::atomic<bool> connected_{false};
    std::atomic<double> latency_avg_ms_{0.0};
    std::atomic<double> success_rate_{1.0};
    latency_histogram write_lag_;
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
    /// Starts its own I/O thread and connects. Throws `config_error` for a prefix that is
    /// empty, too long, or holds '{' or '}'. Allocates.
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

    /// Called (on the I/O thread) when Redis lost what was written: the pipeline then hands
    /// over every live candle and token again. A pipeline sets this itself. Any thread; an
    /// empty function clears it, waiting for a call in progress.
    void set_resync_handler(std::function<void()> handler) {
        core_->set_resync_handler(std::move(handler));
    }

    /// Counters and gauges. Any thread; allocates (the error text).
    [[nodiscard]] sink_stats stats() const { return core_->stats(); }

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
    /// closes the connection and stops the sink's own thread. Returns what could not be
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
