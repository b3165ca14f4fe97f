#pragma once
// A shard's worker: drains its rings a batch at a time, applies trades to the tokens it owns,
// and hands changed aggregates to the sink on every flush tick or when enough have changed.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <tradeagg/config.hpp>
#include <tradeagg/ingress.hpp>
#include <tradeagg/latency_histogram.hpp>
#include <tradeagg/policy.hpp>
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
          const std::function<void(const late_trade&)>& on_late, const token_table& table,
          Sink& sink)
        : index_(index), batch_width_(cfg.batch_width), flush_interval_(cfg.flush_interval),
          ring_capacity_(cfg.ring_capacity), on_late_(on_late), table_(table), sink_(sink),
          rings_(std::make_unique<std::atomic<ingress_ring*>[]>(Policy::max_producers)),
          owned_rings_(Policy::max_producers), shared_(cfg.ring_capacity),
          drain_buffer_(cfg.batch_width) {
        for (std::size_t i = 0; i < Policy::max_producers; ++i) {
            rings_[i].store(nullptr, std::memory_order_relaxed);
        }
        // Flush buffers keep their capacity between flushes; start them at a useful size.
        candles_.reserve(4'096);
        tokens_.reserve(1'024);
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
        thread_ = std::thread([this] { run(); });
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

    /// Wakes a sleeping worker (block strategy); called by producers after a push.
    /// Any thread. Takes a mutex only when the worker sleeps.
    void notify_pushed() {
        if constexpr (Policy::wait::kind == wait_kind::block) {
            // Both sides use a read-modify-write on `sleeping_`: either this one reads the
            // worker's announcement and wakes it, or the worker's exchange reads this one and
            // so sees the trade just pushed. (No fences: ThreadSanitizer cannot check those.)
            if (sleeping_.fetch_or(0U, std::memory_order_acq_rel) != 0) {
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
    [[nodiscard]] const token_book<Policy>& book() const noexcept { return book_; }
    [[nodiscard]] std::size_t shared_pushed() const noexcept {
        return shared_pushed_.load(std::memory_order_relaxed);
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
        auto next_flush = clock::now() + flush_interval_;
        unsigned idle_steps = 0;
        for (;;) {
            const std::size_t taken = drain_round();
            if (taken > 0) {
                idle_steps = 0;
                if (book_.dirty_count() >= Policy::flush_threshold) {
                    flush();
                } else if (candles_.size() >= retired_handover) {
                    hand_over(); // final candles: nothing to coalesce, so no need to wait
                }
                if constexpr (Policy::wait::kind == wait_kind::block) {
                    if (producers_waiting_.load(std::memory_order_relaxed) > 0) {
                        const std::lock_guard lock(space_mutex_);
                        space_cv_.notify_all();
                    }
                }
            }
            const auto now = clock::now();
            if (now >= next_flush) {
                flush();
                next_flush = now + flush_interval_;
            }
            if (taken > 0) {
                continue;
            }
            if (stop_requested_.load(std::memory_order_seq_cst)) {
                // Producers have quiesced before the request, so empty rings stay empty.
                if (drain_round() == 0) {
                    break;
                }
                continue;
            }
            idle(idle_steps, next_flush);
        }
        flush();
    }

    void idle(unsigned& steps, clock::time_point next_flush) {
        if (detail::backoff<Policy::wait::kind>(steps)) {
            return;
        }
        std::unique_lock lock(mutex_);
        sleeping_.exchange(1U, std::memory_order_acq_rel);
        if (!pending() && !stop_requested_.load(std::memory_order_seq_cst)) {
            cv_.wait_until(lock, next_flush);
        }
        sleeping_.store(0U, std::memory_order_relaxed);
        steps = 0;
    }

    bool pending() {
        const std::size_t n = ring_count_.load(std::memory_order_acquire);
        for (std::size_t i = 0; i < n; ++i) {
            ingress_ring* r = rings_[i].load(std::memory_order_acquire);
            if (r != nullptr && r->read_available() > 0) {
                return true;
            }
        }
        return !shared_.empty();
    }

    std::size_t drain_round() {
        std::size_t total = 0;
        const std::size_t n = ring_count_.load(std::memory_order_acquire);
        for (std::size_t i = 0; i < n; ++i) {
            ingress_ring* r = rings_[i].load(std::memory_order_acquire);
            if (r == nullptr) {
                continue;
            }
            const std::size_t got = r->pop(drain_buffer_.data(), batch_width_);
            if (got > 0) {
                apply_batch(got);
                total += got;
            }
        }
        std::size_t got = 0;
        while (got < batch_width_ && shared_.pop(drain_buffer_[got])) {
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
            auto& state = book_.get(rec.t.token, table_);
            if (state.is_late(rec.t)) {
                ++late;
                report_late(rec.t, state.name, state.watermark);
            } else {
                state.apply(rec.t, candles_, book_.rolling_bytes());
                book_.mark_dirty(state);
                ++applied;
            }
            if (rec.enqueued_ns != 0) {
                const std::int64_t dt = detail::now_ns() - rec.enqueued_ns;
                latency_.record(dt > 0 ? static_cast<std::uint64_t>(dt) : 0);
            }
        }
        detail::bump(applied_, applied);
        detail::bump(late_, late);
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
    static constexpr std::size_t retired_handover =
        Policy::flush_threshold < 2'048 ? Policy::flush_threshold : 2'048;

    void flush() {
        book_.collect(candles_, tokens_);
        hand_over();
        book_.publish_bytes();
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
    const std::size_t batch_width_;
    const std::chrono::milliseconds flush_interval_;
    const std::size_t ring_capacity_;
    const std::function<void(const late_trade&)>& on_late_;
    const token_table& table_;
    Sink& sink_;

    std::unique_ptr<std::atomic<ingress_ring*>[]> rings_;
    std::vector<std::unique_ptr<ingress_ring>> owned_rings_;
    std::atomic<std::size_t> ring_count_{0};
    shared_ingress_queue shared_;

    token_book<Policy> book_;
    std::vector<ingress_record> drain_buffer_;
    std::vector<candle_update> candles_;
    std::vector<token_update> tokens_;
    latency_histogram latency_;

    alignas(cache_line_size) std::atomic<std::uint64_t> applied_{0};
    std::atomic<std::uint64_t> late_{0};
    std::atomic<std::uint64_t> flushes_{0};
    std::atomic<std::uint64_t> candle_updates_{0};
    std::atomic<std::uint64_t> token_updates_{0};
    std::atomic<std::uint64_t> sink_errors_{0};

    alignas(cache_line_size) std::atomic<std::uint64_t> shared_pushed_{0};
    alignas(cache_line_size) std::atomic<bool> stop_requested_{false};
    std::atomic<unsigned> sleeping_{0};
    std::atomic<int> producers_waiting_{0};
    std::mutex mutex_;
    std::condition_variable cv_;
    std::mutex space_mutex_;
    std::condition_variable space_cv_;
    std::thread thread_;
};

} // namespace tradeagg
