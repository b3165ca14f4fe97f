#pragma once
// A shard's worker: drains its rings a batch at a time, applies trades to the tokens it owns,
// and hands changed aggregates to the sink on every flush tick or when enough have changed.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <tradeagg/config.hpp>
#include <tradeagg/detail/cpu_affinity.hpp>
#include <tradeagg/detail/large_allocator.hpp>
#include <tradeagg/detail/thread_name.hpp>
#include <tradeagg/ingress.hpp>
#include <tradeagg/latency_histogram.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/process_stats.hpp>
#include <tradeagg/reclaimer.hpp>
#include <tradeagg/runtime_config.hpp>
#include <tradeagg/sink.hpp>
#include <tradeagg/stats.hpp>
#include <tradeagg/token_book.hpp>
#include <tradeagg/token_table.hpp>
#include <tradeagg/wait_strategy.hpp>

namespace tradeagg {

/// One worker thread and everything it alone touches. Built and owned by a `pipeline`; the
/// members documented "any thread" may be called concurrently with the worker.
template <policy Policy, sink Sink>
class shard {
public:
    shard(std::size_t index, const resolved_config<Policy>& cfg,
          const std::function<void(const late_trade&)>& on_late, token_table& table,
          memory_budget& budget, Sink& sink)
        : index_(index), batch_width_(cfg.batch_width),
          flush_interval_ms_(cfg.flush_interval.count()), ring_capacity_(cfg.ring_capacity),
          evict_idle_(cfg.evict_idle_tokens), on_late_(on_late), table_(table), budget_(budget),
          sink_(sink), cadence_(cfg.gc_target_percent, Policy::arena_chunk_bytes),
          rings_(std::make_unique<std::atomic<ingress_ring*>[]>(Policy::max_producers)),
          owned_rings_(Policy::max_producers), shared_(cfg.ring_capacity),
          drain_buffer_(Policy::batch_width),
          cpu_(cfg.worker_cpus.empty()
                   ? -1
                   : static_cast<int>(cfg.worker_cpus[index % cfg.worker_cpus.size()])) {
        for (std::size_t i = 0; i < Policy::max_producers; ++i) {
            rings_[i].store(nullptr, std::memory_order_relaxed);
        }
        // Flush buffers keep their capacity between flushes; start them at a useful size.
        candles_.reserve(candle_buffer);
        tokens_.reserve(token_buffer);
    }

    shard(const shard&) = delete;
    shard& operator=(const shard&) = delete;
    ~shard() { join(); }

    /// The ring producer slot `slot` pushes into, created on first use. Called by the pipeline
    /// under its registration lock. Allocates on first use.
    ingress_ring& ring_for(std::size_t slot) {
        if (!owned_rings_[slot]) {
            owned_rings_[slot] = std::make_unique<ingress_ring>(ring_capacity_);
            rings_[slot].store(owned_rings_[slot].get(), std::memory_order_release);
            std::size_t count = ring_count_.load(std::memory_order_relaxed);
            if (slot + 1 > count) {
                ring_count_.store(slot + 1, std::memory_order_release);
            }
        }
        return *owned_rings_[slot];
    }

    /// The multi-producer queue. Any thread.
    shared_ingress_queue& shared_queue() noexcept { return shared_; }

    void start() {
        thread_ = std::thread([this] {
            detail::name_this_thread("tradeagg-shard" + std::to_string(index_));
            if (cpu_ >= 0 && detail::pin_this_thread(static_cast<unsigned>(cpu_))) {
                pinned_cpu_.store(cpu_, std::memory_order_relaxed);
            }
            run();
        });
    }

    /// Asks the worker to drain everything, flush, and exit. Precondition: no producer will
    /// push again. Any thread.
    void request_stop() {
        stop_requested_.store(true, std::memory_order_seq_cst);
        wake();
    }

    void join() {
        if (thread_.joinable()) {
            thread_.join();
        }
    }

    /// Wakes a sleeping worker (block and spin_then_yield); called by producers after a push.
    /// Any thread. Takes a mutex only when the worker sleeps, and only the push that takes the
    /// worker's announcement back wakes it: a request's thousand pushes into a napping shard
    /// cost one wake-up, not one per push until the worker runs.
    void notify_pushed() {
        if constexpr (Policy::wait::kind == wait_kind::block) {
            // Both sides use a read-modify-write on `sleeping_`: either this one reads the
            // worker's announcement and wakes it, or the worker's exchange reads this one and
            // so sees the trade just pushed. (No fences: ThreadSanitizer cannot check those.)
            if (sleeping_.fetch_or(0U, std::memory_order_acq_rel) != 0 &&
                sleeping_.exchange(0U, std::memory_order_acq_rel) != 0) {
                wake();
            }
        } else if constexpr (Policy::wait::kind == wait_kind::spin_then_yield) {
            // A plain load: a push that misses the announcement leaves the worker napping until
            // `idle_nap` ends at the latest, which costs less than a read-modify-write per push.
            if (sleeping_.load(std::memory_order_relaxed) != 0 &&
                sleeping_.exchange(0U, std::memory_order_acq_rel) != 0) {
                wake();
            }
        }
    }

    /// Sleeps up to a millisecond for room in a ring (block strategy). Any producer thread.
    void wait_for_space() {
        producers_waiting_.fetch_add(1, std::memory_order_seq_cst);
        {
            std::unique_lock lock(space_mutex_);
            space_cv_.wait_for(lock, std::chrono::milliseconds(1));
        }
        producers_waiting_.fetch_sub(1, std::memory_order_relaxed);
    }

    /// Asks the worker for a reclamation (flush, evict spent tokens, return free memory) and
    /// returns a ticket for `wait_reclaimed`. Any thread; never blocks.
    /// With `drain_all`, the worker applies everything queued first, however much (for a
    /// pipeline whose producers are paused).
    std::uint64_t request_reclaim(bool drain_all = false) {
        if (drain_all) {
            drain_all_.store(true, std::memory_order_relaxed);
        }
        const std::uint64_t ticket = reclaim_requested_.fetch_add(1, std::memory_order_acq_rel) + 1;
        wake();
        return ticket;
    }

    /// Waits until the reclamation of `ticket` has run, and returns what the latest one did.
    /// Any thread but the worker; blocks.
    reclaim_result wait_reclaimed(std::uint64_t ticket) {
        std::unique_lock lock(reclaim_mutex_);
        reclaim_cv_.wait(lock,
                         [&] { return reclaim_done_.load(std::memory_order_acquire) >= ticket; });
        return last_reclaim_;
    }

    /// Asks the worker to hand the sink everything this shard holds at its next flush, which
    /// the request brings forward (see `pipeline::resync`). Requests made before that flush
    /// starts are served by it. Any thread, the worker's own included (a sink's `consume`);
    /// never allocates; takes the worker's mutex (held only for an instant) only when the
    /// worker sleeps.
    void request_resync() noexcept {
        resync_requested_.fetch_add(1, std::memory_order_acq_rel);
        // The handshake of a push: a sleeping worker is woken, and one about to sleep sees the
        // request in `pending()`.
        notify_pushed();
    }

    /// Resyncs this shard's worker has completed (handed to the sink). Any thread; what the
    /// sink was given by a resync happens before the count shows it.
    [[nodiscard]] std::uint64_t resyncs() const noexcept {
        return resyncs_.load(std::memory_order_acquire);
    }

    /// Applies what is queued and runs a reclamation, on the calling thread. Only while the
    /// worker is not running (before `start()` or after `join()`) and nobody pushes.
    reclaim_result reclaim_here() {
        while (drain_round() > 0) {
        }
        flush_changes();
        return reclaim();
    }

    /// Applies what is queued and hands every change to the sink (reclaiming if due), on the
    /// calling thread: a shard driven by its owner instead of a worker (a partition stream's
    /// consumer). Only while the worker is not running and nobody else pushes.
    void apply_here() {
        while (drain_round() > 0) {
        }
        flush();
    }

    /// Writes the shard's aggregation state for `load_state`: the policy's layout fingerprint,
    /// the event clock, the book (`token_book::save`). Only while the worker is not running and
    /// nothing is queued or held for the sink: right after `apply_here`. Allocates as `out`
    /// grows.
    void save_state(detail::byte_writer& out) const {
        out.u64(detail::layout_fingerprint<Policy>);
        out.i64(clock_);
        book_.save(out);
    }

    /// Takes the state `save_state` wrote, into a shard that holds none and whose worker is not
    /// running: fed the same trades, it hands its sink what the saved shard would have. Throws
    /// `snapshot_error` on input that does not read back or is another policy layout's; the shard
    /// then holds part of it and must be discarded. Allocates.
    void load_state(detail::byte_reader& in) {
        detail::check_layout_fingerprint<Policy>(in);
        clock_ =
            detail::read_event_time(in, "shard clock", std::numeric_limits<timestamp_ms>::min());
        clock_published_.store(clock_, std::memory_order_relaxed);
        book_.load(in, table_);
        publish();
    }

    /// Trades drained per batch. Any thread.
    [[nodiscard]] std::size_t batch_width() const noexcept {
        return batch_width_.load(std::memory_order_relaxed);
    }
    /// Changes the batch width (the caller checked 1..Policy::batch_width). Any thread.
    void set_batch_width(std::size_t n) noexcept {
        batch_width_.store(n, std::memory_order_relaxed);
    }
    /// The flush tick. Any thread.
    [[nodiscard]] std::chrono::milliseconds flush_interval() const noexcept {
        return std::chrono::milliseconds(flush_interval_ms_.load(std::memory_order_relaxed));
    }
    /// Changes the flush tick, from the next tick on (the caller checked the bounds). Any
    /// thread.
    void set_flush_interval(std::chrono::milliseconds d) noexcept {
        flush_interval_ms_.store(d.count(), std::memory_order_relaxed);
    }

    /// The reclamation target, GOGC's meaning. Any thread.
    [[nodiscard]] unsigned gc_target() const noexcept { return cadence_.target(); }
    /// Changes the reclamation target (the caller checked the policy's bounds). Any thread.
    void set_gc_target(unsigned percent) noexcept { cadence_.set_target(percent); }

    /// Counts trades pushed through the shared queue (any thread; locked add).
    void count_shared_push() noexcept { shared_pushed_.fetch_add(1, std::memory_order_relaxed); }

    /// Counters of this shard. Any thread.
    /// Counters of this shard; the pipeline fills in `queue_depth`, which needs the
    /// producers' counters. Any thread.
    [[nodiscard]] shard_stats stats() const noexcept {
        shard_stats s;
        s.active_tokens = book_.active_tokens();
        s.applied = applied_.load(std::memory_order_relaxed);
        s.late = late_.load(std::memory_order_relaxed);
        s.flushes = flushes_.load(std::memory_order_relaxed);
        s.reclamations = reclamations_.load(std::memory_order_relaxed);
        s.resyncs = resyncs();
        s.tokens_evicted = tokens_evicted_.load(std::memory_order_relaxed);
        s.reclaim_cpu_seconds =
            static_cast<double>(reclaim_cpu_ns_.load(std::memory_order_relaxed)) * 1e-9;
        s.clock = clock_published_.load(std::memory_order_relaxed);
        s.pinned_cpu = pinned_cpu_.load(std::memory_order_relaxed);
        return s;
    }

    [[nodiscard]] std::uint64_t candle_updates() const noexcept {
        return candle_updates_.load(std::memory_order_relaxed);
    }
    [[nodiscard]] std::uint64_t token_updates() const noexcept {
        return token_updates_.load(std::memory_order_relaxed);
    }
    [[nodiscard]] std::uint64_t sink_errors() const noexcept {
        return sink_errors_.load(std::memory_order_relaxed);
    }
    [[nodiscard]] const latency_histogram& latency() const noexcept { return latency_; }
    /// How long each flush and hand-over kept the worker from its rings (collecting, the
    /// sink's `consume`, publishing, reclaiming). One writer, the worker.
    [[nodiscard]] const latency_histogram& handovers() const noexcept { return handovers_; }
    [[nodiscard]] const token_book<Policy>& book() const noexcept { return book_; }
    [[nodiscard]] std::size_t shared_pushed() const noexcept {
        return shared_pushed_.load(std::memory_order_relaxed);
    }
    /// Bytes the worker holds besides token state: flush buffers, drain buffer, histogram.
    /// As of the last flush. Any thread.
    [[nodiscard]] std::size_t buffer_bytes() const noexcept {
        return buffer_bytes_.load(std::memory_order_relaxed);
    }
    /// Bytes of ring storage. Any thread.
    [[nodiscard]] std::size_t ingress_bytes() const noexcept {
        std::size_t rings = 0;
        const std::size_t n = ring_count_.load(std::memory_order_acquire);
        for (std::size_t i = 0; i < n; ++i) {
            rings += rings_[i].load(std::memory_order_acquire) != nullptr ? 1 : 0;
        }
        return (rings + 1) * (ring_capacity_ + 1) * sizeof(ingress_record) +
               drain_buffer_.capacity() * sizeof(ingress_record);
    }

private:
    using clock = std::chrono::steady_clock;

    void wake() {
        const std::lock_guard lock(mutex_);
        cv_.notify_one();
    }

    void run() {
        auto next_flush = clock::now() + flush_interval();
        unsigned idle_steps = 0;
        for (;;) {
            const std::size_t taken = drain_round();
            if (taken > 0) {
                idle_steps = 0;
                if (book_.dirty_count() >= Policy::flush_threshold) {
                    timed([&] { flush(); });
                } else if (candles_.size() >= retired_handover) {
                    // Final candles: nothing to coalesce, so no need to wait.
                    timed([&] { hand_over(); });
                }
                if constexpr (Policy::wait::kind == wait_kind::block) {
                    if (producers_waiting_.load(std::memory_order_relaxed) > 0) {
                        const std::lock_guard lock(space_mutex_);
                        space_cv_.notify_all();
                    }
                }
            }
            const auto now = clock::now();
            if (now >= next_flush || reclaim_wanted() || resync_wanted()) {
                timed([&] { flush(); });
                next_flush = now + flush_interval();
            }
            if (taken > 0) {
                continue;
            }
            auto wake_by = next_flush;
            if constexpr (emission_of_t<Policy>::when_idle) {
                // The rings are dry: what changed goes to the sink now rather than at the tick,
                // or once `min_interval` has passed since the last such hand-over.
                if (book_.dirty_count() > 0 || !candles_.empty()) {
                    const auto due = last_emit_ + emission_of_t<Policy>::min_interval;
                    if (now >= due) {
                        timed([&] { emit_changes(); });
                        last_emit_ = now;
                        continue;
                    }
                    wake_by = std::min(wake_by, due);
                }
            }
            if (stop_requested_.load(std::memory_order_seq_cst)) {
                // Producers have quiesced before the request, so empty rings stay empty.
                if (drain_round() == 0) {
                    break;
                }
                continue;
            }
            idle(idle_steps, now, wake_by);
        }
        timed([&] { flush(); });
    }

    /// Runs a flush or hand-over and records how long it kept the worker from its rings.
    template <class Step>
    void timed(Step&& step) {
        const std::int64_t start = detail::now_ns();
        step();
        const std::int64_t took = detail::now_ns() - start;
        handovers_.record(took > 0 ? static_cast<std::uint64_t>(took) : 0);
    }

    /// Waits as the policy does, no later than `wake_by` (the next tick or idle hand-over);
    /// `now` is the loop's reading of the clock.
    void idle(unsigned& steps, clock::time_point now, clock::time_point wake_by) {
        if constexpr (Policy::wait::kind == wait_kind::spin_then_yield) {
            // Spins, then yields for `yield_for`, then naps; `steps` counts from the last work.
            if (steps >= detail::spin_limit) {
                if (steps == detail::spin_limit) {
                    yielding_since_ = now;
                }
                if (now - yielding_since_ >= detail::yield_for) {
                    wake_by = std::min(wake_by, now + detail::idle_nap);
                    return nap(wake_by);
                }
            }
            (void)detail::backoff<Policy::wait::kind>(steps);
            return;
        } else if (detail::backoff<Policy::wait::kind>(steps)) {
            return;
        }
        nap(wake_by);
        steps = 0;
    }

    /// Sleeps until `wake_by`, a push (see `notify_pushed`) or a request. A napping
    /// `spin_then_yield` worker that wakes to nothing naps again at once: it spins and yields
    /// again only after work (the run loop resets its steps when it takes trades).
    void nap(clock::time_point wake_by) {
        std::unique_lock lock(mutex_);
        sleeping_.exchange(1U, std::memory_order_acq_rel);
        if (!pending() && !stop_requested_.load(std::memory_order_seq_cst)) {
            cv_.wait_until(lock, wake_by);
        }
        sleeping_.store(0U, std::memory_order_relaxed);
    }

    bool pending() {
        const std::size_t n = ring_count_.load(std::memory_order_acquire);
        for (std::size_t i = 0; i < n; ++i) {
            ingress_ring* r = rings_[i].load(std::memory_order_acquire);
            if (r != nullptr && r->read_available() > 0) {
                return true;
            }
        }
        return !shared_.empty() || reclaim_wanted() || resync_wanted();
    }

    bool reclaim_wanted() const noexcept {
        return reclaim_requested_.load(std::memory_order_acquire) != reclaim_taken_;
    }

    bool resync_wanted() const noexcept {
        return resync_requested_.load(std::memory_order_acquire) != resync_taken_;
    }

    std::size_t drain_round() {
        const std::size_t width = batch_width();
        std::size_t total = 0;
        const std::size_t n = ring_count_.load(std::memory_order_acquire);
        for (std::size_t i = 0; i < n; ++i) {
            ingress_ring* r = rings_[i].load(std::memory_order_acquire);
            if (r == nullptr) {
                continue;
            }
            const std::size_t got = r->pop(drain_buffer_.data(), width);
            if (got > 0) {
                apply_batch(got);
                total += got;
            }
        }
        std::size_t got = 0;
        while (got < width && shared_.pop(drain_buffer_[got])) {
            ++got;
        }
        if (got > 0) {
            apply_batch(got);
            total += got;
        }
        return total;
    }

    void apply_batch(std::size_t count) {
        std::uint64_t applied = 0;
        std::uint64_t late = 0;
        constexpr std::size_t entry_ahead = 16;
        constexpr std::size_t state_ahead = 6;
        for (std::size_t i = 0; i < count; ++i) {
            if (i + entry_ahead < count) {
                book_.prefetch_entry(drain_buffer_[i + entry_ahead].t.token);
            }
            if (i + state_ahead < count) {
                book_.prefetch(drain_buffer_[i + state_ahead].t.token);
            }
            const ingress_record& rec = drain_buffer_[i];
            if (rec.t.token == clock_token) {
                advance_clock(rec.t.ts_ms);
                continue;
            }
            auto& state = book_.get(rec.t.token, table_);
            if (clock_ > state.watermark &&
                state.advance_to(clock_, candles_, book_.rolling_bytes())) {
                book_.mark_dirty(state);
            }
            if (state.is_late(rec.t)) {
                ++late;
                report_late(rec.t, state.name, state.watermark);
            } else {
                state.apply(rec.t, candles_, book_.rolling_bytes());
                book_.mark_dirty(state);
                ++applied;
            }
            book_.schedule(state);
            if (rec.enqueued_ns != 0) {
                const std::int64_t dt = detail::now_ns() - rec.enqueued_ns;
                latency_.record(dt > 0 ? static_cast<std::uint64_t>(dt) : 0);
            }
        }
        detail::bump(applied_, applied);
        detail::bump(late_, late);
    }

    /// The shard's event-time clock reaches `to`: tokens whose buckets close or become final
    /// by then move forward without a trade of their own.
    void advance_clock(timestamp_ms to) {
        if (to > clock_) {
            clock_ = to;
            book_.advance_clock(clock_, candles_);
            clock_published_.store(clock_, std::memory_order_relaxed);
        }
    }

    void report_late(const trade& t, std::string_view name, timestamp_ms watermark) {
        if (!on_late_) {
            return;
        }
        try {
            on_late_(late_trade{t, name, watermark, index_});
        } catch (...) {
            detail::bump(sink_errors_); // a throwing callback must not stop the worker
        }
    }

    /// Retired candles accumulate as tokens' buckets become final; past this many they are
    /// handed to the sink without waiting for the tick, so the buffer stays cache-sized.
    static constexpr std::size_t candle_buffer = 4'096;
    static constexpr std::size_t token_buffer = 1'024;

    static constexpr std::size_t retired_handover =
        Policy::flush_threshold < 2'048 ? Policy::flush_threshold : 2'048;

    /// Hands every change to the sink (everything held, if a resync was asked for), then
    /// reclaims if one was asked for, the book grew past the cadence's trigger, or memory is
    /// near the soft limit.
    void flush() {
        const std::uint64_t requested = reclaim_requested_.load(std::memory_order_acquire);
        const bool asked = requested != reclaim_taken_;
        if (asked) {
            // What was pushed before the request is applied first: a bounded number of rounds,
            // so a steady stream of pushes cannot hold the reclamation off, or all of it when
            // the producers are paused.
            const bool all = drain_all_.exchange(false, std::memory_order_relaxed);
            for (int round = 0; (all || round < 64) && drain_round() > 0; ++round) {
            }
        }
        // Read before the book is marked: a request that comes later (a sink may make one from
        // the `consume` this flush calls) needs a resync of its own.
        const std::uint64_t resync = resync_requested_.load(std::memory_order_acquire);
        if (resync != resync_taken_) {
            resync_taken_ = resync;
            resync_all();
        } else {
            flush_changes();
        }
        if (asked || cadence_.due(book_.live_bytes_now()) || budget_.near_limit()) {
            reclaim_taken_ = requested;
            const reclaim_result r = reclaim();
            {
                const std::lock_guard lock(reclaim_mutex_);
                last_reclaim_ = r;
                reclaim_done_.store(requested, std::memory_order_release);
            }
            reclaim_cv_.notify_all();
        }
    }

    void flush_changes() {
        emit_changes();
        publish();
    }

    /// What changed, to the sink. An idle hand-over stops here, without the byte counts a flush
    /// publishes: producers read the memory budget on every push, and a store there on every
    /// hand-over would move its cache line to the worker each time.
    void emit_changes() {
        book_.collect(candles_, tokens_);
        hand_over();
    }

    /// Hands the sink everything the book holds, with what changed since the last flush. In
    /// batches of at most `flush_threshold` tokens, as a flush has: the whole book at once
    /// would grow the flush buffers (and the sink's batch) to the size of the book.
    void resync_all() {
        book_.mark_all_dirty();
        do {
            book_.collect(candles_, tokens_, Policy::flush_threshold);
            hand_over();
        } while (book_.dirty_count() > 0);
        publish();
        // Release: whoever reads the count sees what the sink was given.
        resyncs_.store(resyncs_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }

    /// Evicts spent tokens, returns free arena chunks and asks the allocator to give memory
    /// back; its CPU time is charged to reclamation. Right after a flush (nothing is dirty).
    reclaim_result reclaim() {
        const double cpu_before = thread_cpu_seconds();
        reclaim_result r;
        r.bytes_before = book_.reserved_bytes_now();
        if (evict_idle_) {
            r.tokens_evicted = book_.evict_spent(table_);
        }
        book_.compact();
        book_.trim_directory();
        shrink_buffers();
        detail::return_free_memory_to_system();
        r.bytes_after = book_.reserved_bytes_now();
        cadence_.reclaimed(book_.live_bytes_now());
        r.cpu_seconds = thread_cpu_seconds() - cpu_before;
        detail::bump(reclamations_);
        detail::bump(tokens_evicted_, r.tokens_evicted);
        detail::bump(reclaim_cpu_ns_, static_cast<std::uint64_t>(r.cpu_seconds * 1e9));
        publish();
        return r;
    }

    /// Gives back flush-buffer capacity beyond the starting size: a clock jump that retires
    /// every token's candles at once grows it far beyond what a flush needs.
    void shrink_buffers() noexcept {
        try {
            if (candles_.capacity() > 2 * candle_buffer) {
                decltype(candles_)().swap(candles_);
                candles_.reserve(candle_buffer);
            }
            if (tokens_.capacity() > 2 * token_buffer) {
                decltype(tokens_)().swap(tokens_);
                tokens_.reserve(token_buffer);
            }
        } catch (...) {
            // Out of memory for the smaller buffer: it grows again on use.
        }
    }

    /// Makes the byte counts readable and tells the memory budget.
    void publish() {
        book_.publish_bytes();
        buffer_bytes_.store(candles_.capacity() * sizeof(candle_update) +
                                tokens_.capacity() * sizeof(token_update) +
                                2 * sizeof(latency_histogram),
                            std::memory_order_relaxed);
        budget_.publish(index_,
                        book_.reserved_bytes() + book_.directory_bytes() + buffer_bytes() +
                            ingress_bytes(),
                        book_.active_tokens(), table_.memory_bytes());
    }

    /// Gives the sink what is buffered: retired candles, and what a collect added.
    void hand_over() {
        if (!candles_.empty() || !tokens_.empty()) {
            try {
                sink_.consume(flush_batch{index_, candles_, tokens_});
            } catch (...) {
                detail::bump(sink_errors_);
            }
            detail::bump(flushes_);
            detail::bump(candle_updates_, candles_.size());
            detail::bump(token_updates_, tokens_.size());
            candles_.clear();
            tokens_.clear();
        }
    }

    const std::size_t index_;
    std::atomic<std::size_t> batch_width_;
    std::atomic<std::int64_t> flush_interval_ms_;
    const std::size_t ring_capacity_;
    const bool evict_idle_;
    const std::function<void(const late_trade&)>& on_late_;
    token_table& table_;
    memory_budget& budget_;
    Sink& sink_;
    reclaim_cadence cadence_;
    timestamp_ms clock_ = std::numeric_limits<timestamp_ms>::min(); ///< worker's event clock
    std::uint64_t reclaim_taken_ = 0;    ///< the last request the worker started on
    std::uint64_t resync_taken_ = 0;     ///< the last resync request the worker served
    clock::time_point last_emit_{};      ///< the worker's last idle hand-over
    clock::time_point yielding_since_{}; ///< when an idle `spin_then_yield` worker began yielding

    std::unique_ptr<std::atomic<ingress_ring*>[]> rings_;
    std::vector<std::unique_ptr<ingress_ring>> owned_rings_;
    std::atomic<std::size_t> ring_count_{0};
    shared_ingress_queue shared_;

    token_book<Policy> book_;
    std::vector<ingress_record> drain_buffer_;
    std::vector<candle_update, detail::large_allocator<candle_update>> candles_;
    std::vector<token_update, detail::large_allocator<token_update>> tokens_;
    latency_histogram latency_;
    latency_histogram handovers_;

    alignas(cache_line_size) std::atomic<std::uint64_t> applied_{0};
    std::atomic<std::uint64_t> late_{0};
    std::atomic<std::uint64_t> flushes_{0};
    std::atomic<std::uint64_t> candle_updates_{0};
    std::atomic<std::uint64_t> token_updates_{0};
    std::atomic<std::uint64_t> sink_errors_{0};
    std::atomic<std::uint64_t> reclamations_{0};
    std::atomic<std::uint64_t> tokens_evicted_{0};
    std::atomic<std::uint64_t> reclaim_cpu_ns_{0};
    std::atomic<std::uint64_t> resyncs_{0};
    std::atomic<timestamp_ms> clock_published_{std::numeric_limits<timestamp_ms>::min()};
    std::atomic<std::size_t> buffer_bytes_{0};

    alignas(cache_line_size) std::atomic<std::uint64_t> reclaim_requested_{0};
    std::atomic<bool> drain_all_{false};
    std::atomic<std::uint64_t> resync_requested_{0};
    std::atomic<std::uint64_t> reclaim_done_{0};
    std::mutex reclaim_mutex_;
    std::condition_variable reclaim_cv_;
    reclaim_result last_reclaim_;

    alignas(cache_line_size) std::atomic<std::uint64_t> shared_pushed_{0};
    alignas(cache_line_size) std::atomic<bool> stop_requested_{false};
    std::atomic<unsigned> sleeping_{0};
    std::atomic<int> producers_waiting_{0};
    std::mutex mutex_;
    std::condition_variable cv_;
    std::mutex space_mutex_;
    std::condition_variable space_cv_;
    const int cpu_;                   ///< the CPU to pin the worker to, -1 for none
    std::atomic<int> pinned_cpu_{-1}; ///< the CPU the worker runs pinned to, -1 for none
    std::thread thread_;
};

} // namespace tradeagg
