#pragma once
// The pipeline: owns the token table, the shards and their rings; routes each trade to the
// shard that owns its token; starts, drains and stops the workers; reports statistics.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <tradeagg/config.hpp>
#include <tradeagg/ingress.hpp>
#include <tradeagg/latency_histogram.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/process_stats.hpp>
#include <tradeagg/producer.hpp>
#include <tradeagg/push_gate.hpp>
#include <tradeagg/reclaimer.hpp>
#include <tradeagg/runtime_config.hpp>
#include <tradeagg/shard.hpp>
#include <tradeagg/sink.hpp>
#include <tradeagg/sink/null_sink.hpp>
#include <tradeagg/stats.hpp>
#include <tradeagg/token_cache.hpp>
#include <tradeagg/token_table.hpp>
#include <tradeagg/trade.hpp>
#include <tradeagg/tuning.hpp>
#include <tradeagg/wait_strategy.hpp>

namespace tradeagg {

/// Aggregates trades per token on `config.shards` worker threads and hands the results to a
/// `Sink` (held by value; use `Sink = S&` to keep your own object).
///
/// Life cycle: construct, `start()`, push from any number of threads, `stop()` (or destroy).
/// `stop()` drains every accepted trade into the sink before it returns. A pipeline runs once.
///
/// Resync: a sink that lost what it was given (a Redis restarted without its data) gets it
/// back by calling `resync()`: every shard hands it again every candle it still holds and
/// every token's rolling window and latest trade. A sink with a member
/// `set_resync_handler(std::function<void()>)` is given a handler that calls `resync()` when
/// the pipeline is built, and an empty one at `stop()` (which the destructor calls), after the
/// final flush. The sink may call the handler from any thread, its `consume` included, until
/// it is cleared; clearing must wait for a call in progress and no call may follow it, since
/// the handler points to the pipeline.
template <policy Policy, class Sink = null_sink>
requires sink<std::remove_reference_t<Sink>>
class pipeline {
    using sink_object = std::remove_reference_t<Sink>;
    using shard_type = shard<Policy, sink_object>;

public:
    using policy_type = Policy;
    using sink_type = sink_object;

    /// One producer thread's handle (see producer.hpp).
    using producer = basic_producer<pipeline>;

    /// Checks `cfg` against the policy (throws `config_error`), builds the shards and
    /// constructs the sink from `sink_args`. Allocates; starts no thread.
    template <class... SinkArgs>
    explicit pipeline(runtime_config cfg = {}, SinkArgs&&... sink_args)
        : cfg_(resolve<Policy>(cfg)), on_late_(std::move(cfg.on_late_trade)),
          sink_(std::forward<SinkArgs>(sink_args)...), table_(cfg_.max_tokens, cfg_.shards),
          budget_(cfg_.shards, cfg_.memory_limit_mb << 20, cfg_.max_active_tokens),
          slots_(std::make_unique<detail::producer_slot[]>(Policy::max_producers)),
          gate_(slots_.get(), Policy::max_producers) {
        for (std::size_t i = 0; i < Policy::max_producers; ++i) {
            slots_[i].pushed = std::make_unique<std::atomic<std::uint64_t>[]>(cfg_.shards);
            for (std::size_t s = 0; s < cfg_.shards; ++s) {
                slots_[i].pushed[s].store(0, std::memory_order_relaxed);
            }
        }
        shards_.reserve(cfg_.shards);
        for (std::size_t s = 0; s < cfg_.shards; ++s) {
            shards_.push_back(
                std::make_unique<shard_type>(s, cfg_, on_late_, table_, budget_, sink_));
        }
        // Last: nothing after it may throw, since a pipeline whose construction failed is not
        // destroyed and could not clear the handler.
        if constexpr (sink_takes_resync_handler) {
            sink_.set_resync_handler(std::function<void()>([this] { resync(); }));
        }
    }

    pipeline(const pipeline&) = delete;
    pipeline& operator=(const pipeline&) = delete;

    /// Stops (draining) if still running, which clears the sink's resync handler.
    ~pipeline() { stop(); }

    /// Starts one worker thread per shard. Throws std::logic_error if called twice or after
    /// `stop()`. Thread-safe.
    void start() {
        const std::lock_guard lock(control_);
        if (started_ || stopped_) {
            throw std::logic_error("tradeagg::pipeline::start: a pipeline starts once");
        }
        for (auto& s : shards_) {
            s->start();
        }
        started_ = true;
    }

    /// Refuses new pushes (`reject_reason::stopped`), waits for pushes in progress, drains every
    /// accepted trade, flushes to the sink and joins the workers. Idempotent. Thread-safe;
    /// blocks. A pipeline never started is started first, so trades pushed before are not lost.
    void stop() {
        const std::lock_guard lock(control_);
        if (stopped_) {
            return;
        }
        accepting_.store(false, std::memory_order_seq_cst);
        gate_.wait_empty();
        if (!started_) {
            for (auto& s : shards_) {
                s->start();
            }
            started_ = true;
        }
        for (auto& s : shards_) {
            s->request_stop();
        }
        for (auto& s : shards_) {
            s->join();
        }
        stopped_ = true;
        workers_done_.store(true, std::memory_order_release);
        if constexpr (sink_takes_resync_handler) {
            sink_.set_resync_handler(std::function<void()>());
        }
    }

    /// Asks every shard to hand the sink again everything it holds: every candle not yet final
    /// (stored or built from finer ones) and every token's rolling window and latest trade, as
    /// absolute values like any update. Each shard does it at a flush it brings forward, with
    /// its changes since the last one, in batches of at most `Policy::flush_threshold` tokens;
    /// `stats().resyncs` counts the shards' completed resyncs. Requests a shard receives before
    /// its resync starts are served by it. Tokens that never took a trade, and candles already
    /// final (handed over when they became final), are not sent again. A no-op after `stop()`;
    /// before `start()`, served at the first flush. Thread-safe (a sink's I/O thread or
    /// `consume` may call it); never allocates; never blocks (a sleeping worker is woken
    /// through its mutex, which is held only for an instant).
    void resync() noexcept {
        if (workers_done_.load(std::memory_order_acquire)) {
            return;
        }
        for (auto& s : shards_) {
            s->request_resync();
        }
    }

    /// A handle for one producer thread: its own ring into every shard, the fast path.
    /// Throws std::length_error when `Policy::max_producers` handles are alive. Thread-safe;
    /// allocates the rings of a slot on its first use.
    [[nodiscard]] producer make_producer() {
        const std::lock_guard lock(registration_);
        for (std::size_t i = 0; i < Policy::max_producers; ++i) {
            if (!slots_[i].in_use.load(std::memory_order_relaxed)) {
                std::vector<ingress_ring*> rings;
                rings.reserve(shards_.size());
                for (auto& s : shards_) {
                    rings.push_back(&s->ring_for(i));
                }
                slots_[i].in_use.store(true, std::memory_order_relaxed);
                return producer(*this, i, std::move(rings));
            }
        }
        throw std::length_error("tradeagg::pipeline::make_producer: all " +
                                std::to_string(Policy::max_producers) +
                                " producer slots are in use (Policy::max_producers)");
    }

    /// Interns a token (validating its spelling). Thread-safe; see `token_table::intern`.
    [[nodiscard]] token_table::intern_result intern(std::string_view token) {
        return table_.intern(token);
    }

    /// Pushes one interned trade from any thread through the shard's multi-producer queue;
    /// waits by the policy's strategy while it is full. Returns `none` once accepted.
    /// Slower than a `producer` (a locked add per trade). Thread-safe; never allocates.
    reject_reason push(const trade& t) {
        for (unsigned step = 0;;) {
            const push_result r = try_push_shared(t);
            if (!r.full) {
                return r.reason;
            }
            if (step == 0) {
                shared_waits_.fetch_add(1, std::memory_order_relaxed);
            }
            wait_full(step, shard_of(t.token)); // outside the in-flight count: see `stop()`
        }
    }

    /// Interns the token (unpinned: see `token_table`), then as `push(const trade&)`.
    /// Thread-safe; may allocate to intern. When the token table is full, first releases the
    /// tokens that no shard holds state for (a brief pause of every producer).
    reject_reason push(const trade_view& t) {
        bool released = false;
        for (unsigned step = 0;;) {
            std::size_t shard = 0;
            const push_result r = gate_.shared_push([&] {
                if (!accepting_.load(std::memory_order_seq_cst)) {
                    count_shared_reject(reject_reason::stopped);
                    return push_result{reject_reason::stopped, false};
                }
                trade interned;
                const reject_reason why = intern_trade(t, interned);
                if (why == reject_reason::none) {
                    shard = shard_of(interned.token);
                    return try_push_shared_counted(interned);
                }
                if (why != reject_reason::token_limit) {
                    count_shared_reject(why);
                }
                return push_result{why, false};
            });
            if (r.reason == reject_reason::token_limit) {
                if (!released && release_for_interning()) {
                    released = true;
                    continue;
                }
                count_shared_reject(r.reason);
                return r.reason;
            }
            if (!r.full) {
                return r.reason;
            }
            // Full, or held back at a limit: wait outside the in-flight count (a token release
            // or `stop()` waits for that count), then intern again (the token may have been
            // released meanwhile).
            if (step == 0) {
                shared_waits_.fetch_add(1, std::memory_order_relaxed);
            }
            wait_full(step, shard);
            if (step % 128 == 127) {
                (void)release_for_interning(); // unused tokens may be what holds memory
            }
        }
    }

    /// Pushes one interned trade from any thread if its shard's queue has room.
    /// Thread-safe; never blocks, never allocates.
    [[nodiscard]] push_result try_push(const trade& t) {
        const push_result r = try_push_shared(t);
        if (r.full) {
            shared_full_.fetch_add(1, std::memory_order_relaxed);
        }
        return r;
    }

    /// Declares that event time has reached `t` for every token, through the shared queues
    /// (use a `producer`'s to keep it in order with that producer's trades). From then on, as
    /// if each token had a trade at `t`: its candles ending by `t` close (and are emitted
    /// closed), those that ended `allowed_lateness` before become final, and a later trade for
    /// them is late; once nothing in a token's state can change (see `token_state::spent_at`:
    /// 24 hours and the longest interval after its last trade) a reclamation releases it, and a
    /// trade for it afterwards starts a fresh state that ends exactly as the kept one would.
    /// Without calls to this, each token's clock is its own latest trade, and idle tokens are
    /// kept. Waits while a queue is full. Thread-safe; never allocates.
    reject_reason advance_time(timestamp_ms t) {
        if (t < 0 || t > max_timestamp_ms) {
            count_shared_reject(reject_reason::timestamp_out_of_range);
            return reject_reason::timestamp_out_of_range;
        }
        const trade marker = clock_marker(t);
        for (std::size_t s = 0; s < shards_.size(); ++s) {
            const reject_reason r = gate_.shared_push([&]() -> reject_reason {
                for (unsigned step = 0;;) {
                    if (!accepting_.load(std::memory_order_seq_cst)) {
                        return reject_reason::stopped;
                    }
                    if (shards_[s]->shared_queue().bounded_push(ingress_record{marker, 0})) {
                        shards_[s]->notify_pushed();
                        return reject_reason::none;
                    }
                    wait_full(step, s);
                }
            });
            if (r != reject_reason::none) {
                return r;
            }
        }
        return reject_reason::none;
    }

    /// What `reclaim_now` did: the statistics before and after, and each shard's part.
    struct reclaim_report {
        pipeline_stats before;
        pipeline_stats after;
        std::size_t tokens_evicted = 0;  ///< token states released by the shards
        std::size_t tokens_released = 0; ///< tokens forgotten by the token table
        std::size_t bytes_released = 0;  ///< token-state bytes given back, all shards
        double cpu_seconds = 0.0;        ///< reclamation CPU time, all shards
        double wall_seconds = 0.0;       ///< how long the call took
        std::vector<reclaim_result> shards;
    };

    /// Forces a reclamation on every shard (each on its own thread: apply what is queued,
    /// flush, evict spent tokens, return free arena chunks, ask the allocator to give memory
    /// back) and waits for it; then forgets the tokens interned by `push(trade_view)` that no
    /// shard holds state for (producers pause for that: see `token_table`). Thread-safe;
    /// blocks; allocates the report.
    reclaim_report reclaim_now() {
        const std::lock_guard lock(control_);
        reclaim_report report;
        const auto started = std::chrono::steady_clock::now();
        report.before = stats();
        report.shards = reclaim_shards(false);
        for (const reclaim_result& r : report.shards) {
            report.tokens_evicted += r.tokens_evicted;
            report.bytes_released +=
                r.bytes_before > r.bytes_after ? r.bytes_before - r.bytes_after : 0;
            report.cpu_seconds += r.cpu_seconds;
        }
        std::size_t with_state = 0;
        for (auto& s : shards_) {
            with_state += s->stats().active_tokens;
        }
        if (table_.size() > with_state) {
            report.tokens_released = release_unused_tokens_locked();
        }
        // The shards trimmed the allocator each on its own, while the others (and the token
        // table) were still freeing: once more now that everything is back.
        detail::return_free_memory_to_system();
        report.after = stats();
        report.wall_seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        return report;
    }

    /// The reclamation target in force (GOGC's meaning). Thread-safe.
    [[nodiscard]] unsigned gc_target_percent() const noexcept {
        return shards_.front()->gc_target();
    }
    /// The policy's bounds of the reclamation target.
    [[nodiscard]] static constexpr std::pair<unsigned, unsigned> gc_target_bounds() noexcept {
        return {Policy::gc_target_min_percent, Policy::gc_target_max_percent};
    }
    /// Changes the reclamation target on every shard. Throws `config_error` outside the
    /// policy's bounds. Thread-safe.
    void set_gc_target_percent(unsigned percent) {
        detail::check_range<unsigned>("gc_target_percent", Policy::name, percent,
                                      Policy::gc_target_min_percent, Policy::gc_target_max_percent);
        for (auto& s : shards_) {
            s->set_gc_target(percent);
        }
    }
    /// Changes the soft memory limit (0: none), in MiB. Throws `config_error` above
    /// `max_memory_limit_mb`. Takes effect at each shard's next flush. Thread-safe.
    void set_memory_limit_mb(std::size_t mb) {
        detail::check_range<std::size_t>("memory_limit_mb", Policy::name, mb, 0,
                                         max_memory_limit_mb, " MiB");
        budget_.set_limit(mb << 20);
    }

    /// The token table. Thread-safe.
    [[nodiscard]] token_table& tokens() noexcept { return table_; }
    [[nodiscard]] const token_table& tokens() const noexcept { return table_; }

    /// The sink. Its own thread-safety rules apply.
    [[nodiscard]] sink_object& sink() noexcept { return sink_; }
    [[nodiscard]] const sink_object& sink() const noexcept { return sink_; }

    /// The configuration the pipeline was built with (the tunable values may have changed
    /// since: see `settings()`).
    [[nodiscard]] const resolved_config<Policy>& config() const noexcept { return cfg_; }

    /// The values tunable while running (tuning.hpp).
    using runtime_settings = tradeagg::runtime_settings;
    /// One value a preset changed (tuning.hpp).
    using setting_change = tradeagg::setting_change;

    /// The tunable values in force. Thread-safe.
    [[nodiscard]] runtime_settings settings() const noexcept {
        return runtime_settings{gc_target_percent(), shards_.front()->batch_width(),
                                shards_.front()->flush_interval(), budget_.limit() >> 20};
    }

    /// Changes the trades drained per batch on every shard. Throws `config_error` outside
    /// 1..Policy::batch_width. Thread-safe.
    void set_batch_width(std::size_t n) {
        detail::check_range<std::size_t>("batch_width", Policy::name, n, 1, Policy::batch_width);
        for (auto& s : shards_) {
            s->set_batch_width(n);
        }
    }
    /// Changes the flush tick on every shard, from its next tick. Throws `config_error` outside
    /// 1 ms..60 s. Thread-safe.
    void set_flush_interval(std::chrono::milliseconds d) {
        detail::check_range<long long>("flush_interval", Policy::name, d.count(),
                                       min_flush_interval.count(), max_flush_interval.count(),
                                       " ms");
        for (auto& s : shards_) {
            s->set_flush_interval(d);
        }
    }

    /// Applies `throughput_preset` (tuning.hpp): fewer reclamations, wider batches, a longer
    /// flush tick. Returns what changed. Thread-safe; allocates the result.
    std::vector<setting_change> optimize_for_throughput() {
        const std::lock_guard lock(tuning_);
        const runtime_settings now = settings();
        return apply_settings(now, throughput_preset<Policy>(now));
    }

    /// Applies `latency_preset` (tuning.hpp): smaller, more frequent reclamations, narrower
    /// batches, a shorter flush tick. Returns what changed. Thread-safe; allocates the result.
    std::vector<setting_change> optimize_for_latency() {
        const std::lock_guard lock(tuning_);
        const runtime_settings now = settings();
        return apply_settings(now, latency_preset<Policy>(now));
    }

    /// The shard that owns a token (stable hash of its string). Precondition: interned.
    [[nodiscard]] std::size_t shard_of(token_id id) const noexcept {
        return shards_.size() == 1 ? 0 : table_.shard_of(id);
    }

    /// The apply-latency histogram of every shard summed (the counts behind
    /// `stats().apply_latency`), cumulative since start: for exporting the whole distribution.
    /// Thread-safe; never allocates, never blocks the workers.
    [[nodiscard]] latency_histogram::counts apply_latency_counts() const noexcept {
        latency_histogram::counts c;
        for (const auto& sh : shards_) {
            sh->latency().accumulate(c);
        }
        return c;
    }

    /// How long each flush and hand-over kept a worker from its rings, every shard summed:
    /// the time trades arriving meanwhile wait besides their own apply, the sink's `consume`
    /// included (it runs on the worker). The counts behind `stats().handovers`. Thread-safe;
    /// never allocates, never blocks the workers.
    [[nodiscard]] latency_histogram::counts handover_counts() const noexcept {
        latency_histogram::counts c;
        for (const auto& sh : shards_) {
            sh->handovers().accumulate(c);
        }
        return c;
    }

    /// A snapshot of every counter, and of the process (resident memory, threads, CPU time,
    /// read from the operating system: tens of microseconds). Thread-safe; allocates the
    /// per-shard vector; never blocks the workers or producers.
    [[nodiscard]] pipeline_stats stats() const {
        pipeline_stats st;
        st.policy = Policy::name;
        std::vector<std::uint64_t> pushed(shards_.size(), 0);
        for (std::size_t i = 0; i < Policy::max_producers; ++i) {
            const detail::producer_slot& slot = slots_[i];
            st.producers += slot.in_use.load(std::memory_order_relaxed) ? 1 : 0;
            for (std::size_t r = 0; r < reject_reason_count; ++r) {
                st.rejected_by_reason[r] += slot.rejected[r].load(std::memory_order_relaxed);
            }
            st.backpressure_waits += slot.backpressure_waits.load(std::memory_order_relaxed);
            st.full_rejections += slot.full_rejections.load(std::memory_order_relaxed);
        }
        for (std::size_t r = 0; r < reject_reason_count; ++r) {
            st.rejected_by_reason[r] += shared_rejected_[r].load(std::memory_order_relaxed);
            st.rejected += st.rejected_by_reason[r];
        }
        st.backpressure_waits += shared_waits_.load(std::memory_order_relaxed);
        st.full_rejections += shared_full_.load(std::memory_order_relaxed);

        std::size_t counted_tokens = 0; // as of the byte counts: each shard's last flush
        for (std::size_t s = 0; s < shards_.size(); ++s) {
            const shard_type& sh = *shards_[s];
            // Workers' counters first: a depth computed from a later `pushed` is never negative.
            shard_stats ss = sh.stats();
            std::uint64_t by_handles = 0;
            for (std::size_t i = 0; i < Policy::max_producers; ++i) {
                by_handles += slots_[i].pushed[s].load(std::memory_order_relaxed);
            }
            const std::uint64_t in = by_handles + sh.shared_pushed();
            const std::uint64_t out = ss.applied + ss.late;
            ss.queue_depth = in > out ? static_cast<std::size_t>(in - out) : 0;
            st.accepted += in;
            st.applied += ss.applied;
            st.late += ss.late;
            st.flushes += ss.flushes;
            st.active_tokens += ss.active_tokens;
            st.candle_updates += sh.candle_updates();
            st.token_updates += sh.token_updates();
            st.sink_errors += sh.sink_errors();
            st.arena_reserved_bytes += sh.book().reserved_bytes();
            st.arena_live_bytes += sh.book().live_bytes();
            counted_tokens += sh.book().published_active_tokens();
            st.buffer_bytes += sh.buffer_bytes();
            st.reclamations += ss.reclamations;
            st.resyncs += ss.resyncs;
            st.tokens_evicted += ss.tokens_evicted;
            st.reclaim_cpu_seconds += ss.reclaim_cpu_seconds;
            st.ingress_bytes += sh.ingress_bytes();
            st.table_bytes += sh.book().directory_bytes();
            st.shards.push_back(ss);
        }
        st.interned_tokens = table_.size();
        st.tokens_released = released_tokens_.load(std::memory_order_relaxed);
        st.table_bytes += table_.memory_bytes();
        st.bytes_per_active_token = counted_tokens > 0 ? static_cast<double>(st.arena_live_bytes) /
                                                             static_cast<double>(counted_tokens)
                                                       : 0.0;
        st.apply_latency = apply_latency_counts().summary();
        st.handovers = handover_counts().summary();
        const std::size_t shared = st.ingress_bytes + st.table_bytes + st.buffer_bytes;
        st.heap_alloc_bytes = st.arena_reserved_bytes + shared;
        st.heap_inuse_bytes = st.arena_live_bytes + shared;
        const process_stats ps = read_process_stats();
        st.resident_bytes = ps.resident_bytes;
        st.virtual_bytes = ps.virtual_bytes;
        st.peak_resident_bytes = ps.peak_resident_bytes;
        st.threads = ps.threads;
        st.process_cpu_seconds = ps.cpu_seconds;
        st.gc_cpu_fraction =
            ps.cpu_seconds > 0.0 ? std::min(1.0, st.reclaim_cpu_seconds / ps.cpu_seconds) : 0.0;
        st.gc_target_percent = gc_target_percent();
        st.memory_limit_bytes = budget_.limit();
        st.max_active_tokens = budget_.max_active_tokens();
        st.admitting_new_tokens = budget_.admitting();
        return st;
    }

    /// Fixed bytes of one token's state under this policy (the rolling ring is extra and grows
    /// with the sub-buckets the token traded in).
    static constexpr std::size_t token_state_bytes = token_book<Policy>::state_bytes;

private:
    template <class>
    friend class basic_producer;

    /// True if the sink wants a way to call `resync()` (see the class comment).
    static constexpr bool sink_takes_resync_handler =
        requires(sink_object & s, std::function<void()> handler) {
        s.set_resync_handler(std::move(handler));
    };

    /// Validates a trade at the API edge and interns its token (unpinned) into `out`.
    reject_reason intern_trade(const trade_view& t, trade& out) {
        if (const reject_reason r = validate(t); r != reject_reason::none) {
            return r;
        }
        const auto id = table_.intern(t.token, false);
        out = trade{id.id, t.taker, t.price, t.quantity, t.ts_ms, t.id};
        return id.reason;
    }

    /// As `intern_trade(t, out)`, asking a producer's `cache` first: a token found there is
    /// interned, hence valid, and costs neither the table's lock nor its index. Call inside a
    /// push (a busy mark), where no release can run.
    reject_reason intern_trade(const trade_view& t, trade& out, token_cache& cache) {
        if (const std::optional<token_id> id = cache.find(t.token, table_)) {
            out = trade{*id, t.taker, t.price, t.quantity, t.ts_ms, t.id};
            return validate(out);
        }
        const reject_reason r = intern_trade(t, out);
        if (r == reject_reason::none) {
            cache.remember(t.token, out.token, table_);
        }
        return r;
    }

    /// Moves each setting that differs from `now` to its value in `next`; returns the changes.
    std::vector<setting_change> apply_settings(const runtime_settings& now,
                                               const runtime_settings& next) {
        std::vector<setting_change> changed;
        if (next.gc_target_percent != now.gc_target_percent) {
            set_gc_target_percent(next.gc_target_percent);
            changed.push_back({"gc_target_percent", static_cast<double>(now.gc_target_percent),
                               static_cast<double>(next.gc_target_percent)});
        }
        if (next.batch_width != now.batch_width) {
            set_batch_width(next.batch_width);
            changed.push_back({"batch_width", static_cast<double>(now.batch_width),
                               static_cast<double>(next.batch_width)});
        }
        if (next.flush_interval != now.flush_interval) {
            set_flush_interval(next.flush_interval);
            changed.push_back({"flush_interval", static_cast<double>(now.flush_interval.count()),
                               static_cast<double>(next.flush_interval.count())});
        }
        return changed;
    }

    /// Validates a trade at push; with `refuse_new_tokens`, also refuses a token without state
    /// while a limit is reached.
    reject_reason check(const trade& t) const noexcept {
        if (!table_.contains(t.token)) {
            return reject_reason::unknown_token;
        }
        if (const reject_reason r = validate(t); r != reject_reason::none) {
            return r;
        }
        if constexpr (!Policy::at_limit::waits) {
            if (!budget_.admitting() && !table_.has_state(t.token)) {
                return budget_.refusal();
            }
        }
        return reject_reason::none;
    }

    /// With `wait_for_room`: false while a limit is reached and the token has no state.
    bool admitted(const trade& t) const noexcept {
        return budget_.admitting() || table_.has_state(t.token);
    }

    static trade clock_marker(timestamp_ms t) noexcept {
        return trade{clock_token, side::buy, 0.0, 0.0, t, 0};
    }

    /// Runs a reclamation on every shard and waits for all of them: each on its own thread
    /// (`drain_all`: applying everything queued first, for paused producers), or on the calling
    /// thread when the workers are not running. Precondition: `control_` is held.
    std::vector<reclaim_result> reclaim_shards(bool drain_all) {
        std::vector<reclaim_result> results;
        results.reserve(shards_.size());
        if (started_ && !stopped_) {
            std::vector<std::uint64_t> tickets;
            for (auto& s : shards_) {
                tickets.push_back(s->request_reclaim(drain_all));
            }
            for (std::size_t s = 0; s < shards_.size(); ++s) {
                results.push_back(shards_[s]->wait_reclaimed(tickets[s]));
            }
        } else {
            for (auto& s : shards_) {
                results.push_back(s->reclaim_here());
            }
        }
        return results;
    }

    /// Forgets the tokens no shard holds state for and nobody pinned: pauses every producer,
    /// lets each shard apply what is queued, flush and evict what is spent, then releases them
    /// from the token table. Gives up (returns 0) if producers do not pause within 100 ms
    /// (one waiting at a limit holds its push open). Precondition: `control_` is held.
    std::size_t release_unused_tokens_locked() {
        gate_.pause();
        std::size_t released = 0;
        if (gate_.wait_quiescent(std::chrono::milliseconds(100))) {
            (void)reclaim_shards(true);
            released = table_.release_unused();
        }
        gate_.resume();
        released_tokens_.fetch_add(released, std::memory_order_relaxed);
        return released;
    }

    /// On a full token table: releases unused tokens, at most every 100 ms (a table full of
    /// tokens that all have state would otherwise pause producers at every new token). True
    /// if it released any.
    bool release_for_interning() {
        const std::int64_t now = detail::now_ns();
        std::int64_t last = last_release_ns_.load(std::memory_order_relaxed);
        if (now - last < 100'000'000 ||
            !last_release_ns_.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
            return false;
        }
        const std::lock_guard lock(control_);
        return release_unused_tokens_locked() > 0;
    }

    push_result try_push_shared(const trade& t) {
        return gate_.shared_push([&] { return try_push_shared_counted(t); });
    }

    push_result try_push_shared_counted(const trade& t) {
        if (!accepting_.load(std::memory_order_seq_cst)) {
            count_shared_reject(reject_reason::stopped);
            return {reject_reason::stopped, false};
        }
        const reject_reason r = check(t);
        if (r != reject_reason::none) {
            count_shared_reject(r);
            return {r, false};
        }
        if constexpr (Policy::at_limit::waits) {
            if (!admitted(t)) {
                return {reject_reason::none, true};
            }
        }
        const std::size_t s = shard_of(t.token);
        const bool sample = (shared_sample_.fetch_add(1, std::memory_order_relaxed) &
                             (Policy::latency_sample_every - 1)) == 0;
        if (!shards_[s]->shared_queue().bounded_push(
                ingress_record{t, sample ? detail::now_ns() : 0})) {
            return {reject_reason::none, true};
        }
        shards_[s]->count_shared_push();
        shards_[s]->notify_pushed();
        return {};
    }

    void count_shared_reject(reject_reason r) noexcept {
        shared_rejected_[static_cast<std::size_t>(r)].fetch_add(1, std::memory_order_relaxed);
    }

    void wait_full(unsigned& step, std::size_t shard) {
        if (!detail::backoff<Policy::wait::kind>(step)) {
            shards_[shard]->wait_for_space();
        }
    }

    resolved_config<Policy> cfg_;
    std::function<void(const late_trade&)> on_late_;
    Sink sink_;
    token_table table_;
    memory_budget budget_;
    std::unique_ptr<detail::producer_slot[]> slots_;
    detail::push_gate gate_;
    std::vector<std::unique_ptr<shard_type>> shards_;

    std::mutex control_;
    std::mutex registration_;
    std::mutex tuning_; ///< presets read, then write, several settings
    bool started_ = false;
    bool stopped_ = false;
    std::atomic<bool> workers_done_{false}; ///< `stop()` joined the workers: no resync now

    alignas(cache_line_size) std::atomic<bool> accepting_{true};
    std::atomic<std::int64_t> last_release_ns_{0};
    std::atomic<std::uint64_t> released_tokens_{0};
    alignas(cache_line_size) std::atomic<std::uint64_t> shared_sample_{0};
    std::array<std::atomic<std::uint64_t>, reject_reason_count> shared_rejected_{};
    std::atomic<std::uint64_t> shared_waits_{0};
    std::atomic<std::uint64_t> shared_full_{0};
};

} // namespace tradeagg
