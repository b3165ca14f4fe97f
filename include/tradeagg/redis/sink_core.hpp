#pragma once
// The Redis sink's core: what is pending per key and per token (coalesced on the I/O thread),
// the transactions that write them and their replies, retries, parking and redirections, the
// journal of written values and the resync after a restart, the clock, stopping, and the
// figures other threads read. Its connections are its base's (sink_connections.hpp); sink.hpp
// tells the whole story and holds `redis_sink`, the sink users hold.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <tradeagg/latency_histogram.hpp>
#include <tradeagg/redis/config.hpp>
#include <tradeagg/redis/retry_schedule.hpp>
#include <tradeagg/redis/sink_connections.hpp>
#include <tradeagg/redis/sink_inbox.hpp>
#include <tradeagg/redis/sink_nodes.hpp>
#include <tradeagg/redis/sink_routes.hpp>
#include <tradeagg/redis/sink_stats.hpp>
#include <tradeagg/redis/sink_transaction.hpp>
#include <tradeagg/redis/sink_updates.hpp>
#include <tradeagg/redis/slot_map.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/write_journal.hpp>
#include <tradeagg/sink.hpp>

namespace tradeagg::redis::detail {

/// The sink's state, owned jointly by the sink and by the handlers queued on the io_context
/// (so a handler that runs after the sink is gone finds it alive): what is pending per key and
/// per token, its transactions and their retries, the journal, the clock and stopping. Its
/// connections are its base's. Everything not atomic is touched only on the io_context's
/// thread.
class sink_core final : public sink_connections {
public:
    static constexpr std::size_t max_prefix = 256;
    /// Redirections of one token followed in a row before one counts as a failed write.
    static constexpr int max_redirects = 5;

    sink_core(redis_config cfg, boost::asio::io_context& io)
        : sink_connections(std::move(cfg), io), tick_timer_(io),
          tick_(std::clamp(std::min({cfg_.read_timeout, cfg_.write_timeout,
                                     std::max(cfg_.retry_delay, std::chrono::milliseconds(1))}) /
                               4,
                           std::chrono::milliseconds(1), std::chrono::milliseconds(25))),
          writer_(cfg_), retries_(cfg_) {}

    /// Starts connecting and ticking. Call once, from any thread.
    void start() {
        boost::asio::post(io_, [self = self()] {
            self->routes_.for_each_node([&](node& n) { self->connect(n); });
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
        std::uint64_t unusable = 0;
        const bool wake = inbox_.push(batch, unusable);
        bump(count_.updates_dropped, unusable);
        if (wake) {
            boost::asio::post(io_, [self = self()] {
                self->inbox_.woken();
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
        s.pending += inbox_.updates();
        {
            const std::lock_guard lock(error_mutex_);
            s.last_error = last_error_;
        }
        return s;
    }

    /// True when everything handed over has been acknowledged. Any thread.
    [[nodiscard]] bool idle() const noexcept {
        return inbox_.updates() == 0 &&
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
        boost::asio::post(io_,
                          [self = self(), deadline, &done] { self->begin_stop(deadline, done); });
        return result.get();
    }

private:
    std::shared_ptr<sink_core> self() {
        return std::static_pointer_cast<sink_core>(shared_from_this());
    }

    void link_ready(node& n, bool restarted) override {
        if (restarted) {
            resync(n);
        }
        unpark(n);
        pump();
        publish();
    }

    // ---- the inbox -------------------------------------------------------------------------

    void drain_inbox() {
        inbox_.drain([this](const update& u, std::int64_t consumed_ns) { ingest(u, consumed_ns); });
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
            routes_.make_ready(t);
        }
    }

    // ---- sending ---------------------------------------------------------------------------

    [[nodiscard]] static bool can_send(const node& n) noexcept {
        return n.conn.ac != nullptr && n.conn.ready && !n.conn.closing && !n.conn.retiring;
    }

    void pump() {
        routes_.for_each_node([this](node& n) { pump(n); });
        publish_in_flight();
    }

    void pump(node& n) {
        const std::size_t limit = std::max<std::size_t>(cfg_.pipeline_size, 2);
        while (can_send(n) && !n.ready.empty()) {
            token_state* t = n.ready.front();
            if (t->ask_to == nullptr && routes_.owner(t->slot) != &n) {
                n.ready.pop_front(); // its slot moved since it was queued
                t->at = where::idle;
                routes_.make_ready(*t);
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

    /// Sends a token's transaction to `n` (see sink_transaction.hpp). False if hiredis refused
    /// the first command (the connection is going away); a refusal after that fails the
    /// transaction when what was sent is answered.
    bool send(node& n, token_state& t) {
        const issued_commands r =
            writer_.write(args_, t, t.ask_to == &n, clock::now(), [&](command_args& a) {
                if (redisAsyncCommandArgv(n.conn.ac, &sink_core::on_txn_reply, &t, a.argc(),
                                          a.argv(), a.lengths()) != REDIS_OK) {
                    return false;
                }
                note_sent(n);
                return true;
            });
        if (r.issued == 0) {
            return false;
        }
        t.failed = r.refused;
        t.replies_due = r.issued;
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

    static void on_txn_reply(redisAsyncContext* ac, void* r, void* privdata) {
        const callback_target to = target_of(ac);
        if (to.core != nullptr) {
            static_cast<sink_core*>(to.core)->txn_replied(*to.at, ac, static_cast<redisReply*>(r),
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
            auto to = routes_.topology() == topology::cluster ? parse_redirect(text, n.host)
                                                              : std::nullopt;
            if (to) {
                if (!t.redirected) {
                    t.redirected = std::move(to);
                }
            } else if (!(t.redirected && text.starts_with("EXECABORT"))) {
                note_error(n.name() + ": " + std::string(text));
                if (text.starts_with("CLUSTERDOWN")) {
                    routes_.request_refresh();
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
                node& there = routes_.node_at(to->to.host, to->to.port);
                if (to->how == redirect::kind::moved) {
                    bump(count_.moved);
                    routes_.moved(to->slot, there);
                } else {
                    bump(count_.asked);
                    t.ask_to = &there;
                }
                routes_.make_ready(t);
                if (there.conn.ac == nullptr && now >= there.reconnect_at) {
                    connect(there);
                }
                return;
            }
            t.redirects = 0;
            ++t.attempts;
            if (t.attempts <= cfg_.max_retries || stopping_) {
                t.at = where::retry;
                retries_.schedule(t, t.attempts, now);
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
        routes_.make_ready(t);
    }

    /// The tokens parked on `n` are queued again (to wherever their slot is served now).
    void unpark(node& n) {
        std::vector<token_state*> list;
        list.swap(n.parked);
        for (token_state* t : list) {
            t->attempts = 0;
            parked_keys_ -= t->keys.size();
            t->at = where::idle;
            routes_.make_ready(*t);
        }
    }

    void unpark_all() {
        routes_.for_each_node([this](node& n) { unpark(n); });
    }

    // ---- the journal of written values ------------------------------------------------------

    void remember(const entry& e) {
        const clock::time_point expires = e.key->kind == key_kind::candle
                                              ? e.expiry_sent + writer_.candle_ttl(*e.key)
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
            if (routes_.owner(e.token->slot) == &n) {
                e.expiry_sent = {};
            }
        }
        std::uint64_t queued = 0;
        for (write_journal::item& j : journal_) {
            if (routes_.owner(token_slot(j.key.token_view())) != &n) {
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

    // ---- the clock -------------------------------------------------------------------------

    void arm_tick() {
        tick_timer_.expires_after(tick_);
        tick_timer_.async_wait([self = self()](boost::system::error_code ec) {
            if (!ec) {
                self->on_tick();
            }
        });
    }

    void on_tick() {
        const auto now = clock::now();
        drain_inbox();
        routes_.for_each_node([this, now](node& n) { check_connection(n, now); });
        retries_.take_due(now, [this](token_state& t) {
            t.at = where::idle;
            routes_.make_ready(t);
        });
        if (stopping_ || now >= next_park_retry_) {
            unpark_all();
            next_park_retry_ = now + retries_.park_interval();
        }
        maybe_refresh(now);
        routes_.for_each_node([this, now](node& n) {
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
        const bool empty = pending_.empty() && inbox_.updates() == 0;
        if (!empty && now < stop_deadline_) {
            return false;
        }
        stopped_.store(true, std::memory_order_release);
        inbox_.discard(); // nothing arrives after stop; counted as dropped
        final_report_.unwritten = pending_.size();
        final_report_.dropped = count_.updates_dropped.load(std::memory_order_relaxed);
        final_report_.complete = empty && final_report_.dropped == 0;
        if (!empty) {
            note_error("stopped with " + std::to_string(pending_.size()) +
                       " keys not written to Redis");
        }
        routes_.for_each_node([](node& n) {
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
        const route_figures r = routes_.figures();
        count_.pending_published.store(pending_.size(), std::memory_order_release);
        count_.parked_published.store(parked_keys_, std::memory_order_relaxed);
        count_.journal_published.store(journal_.size(), std::memory_order_relaxed);
        count_.memory_published.store(pending_.size() * entry_bytes + tokens_.size() * token_bytes +
                                          journal_.bytes() + r.queued * sizeof(token_state*),
                                      std::memory_order_relaxed);
        count_.cluster_published.store(routes_.topology() == topology::cluster,
                                       std::memory_order_relaxed);
        count_.nodes_published.store(r.serving, std::memory_order_relaxed);
        count_.nodes_connected_published.store(r.connected, std::memory_order_relaxed);
        publish_in_flight();
    }

    boost::asio::steady_timer tick_timer_;
    const std::chrono::milliseconds tick_;

    // Shared with producer threads.
    sink_inbox inbox_;

    // The I/O thread's.
    transaction_writer writer_;
    retry_schedule retries_;
    std::unordered_map<update_key, entry, update_key_hash> pending_;
    std::unordered_map<update_key, token_state, update_key_hash> tokens_;
    std::size_t parked_keys_ = 0;
    write_journal journal_;
    clock::time_point next_park_retry_{};
    bool stopping_ = false;
    bool stop_done_ = false;
    clock::time_point stop_deadline_{};
    std::vector<std::promise<stop_report>*> stop_waiters_;
    stop_report final_report_;

    std::mutex resync_mutex_;
    std::function<void()> resync_handler_;
};

} // namespace tradeagg::redis::detail
