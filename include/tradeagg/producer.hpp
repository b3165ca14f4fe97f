#pragma once
// A producer handle: one thread's single-producer rings into every shard of a pipeline, the
// wait-free fast path of `push`. `pipeline<P, S>::producer` is `basic_producer<pipeline<P, S>>`;
// `pipeline::make_producer` hands them out.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <mutex>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include <tradeagg/config.hpp>
#include <tradeagg/ingress.hpp>
#include <tradeagg/token_cache.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg {

/// One producer thread's handle: a single-producer ring into every shard of a `Pipeline`.
/// Movable, not copyable; not thread-safe (one thread at a time uses a handle).
/// Must not outlive its pipeline.
template <class Pipeline>
class basic_producer {
public:
    basic_producer(basic_producer&& o) noexcept
        : p_(std::exchange(o.p_, nullptr)), slot_(o.slot_), rings_(std::move(o.rings_)),
          tokens_(std::move(o.tokens_)) {}
    basic_producer& operator=(basic_producer&& o) noexcept {
        if (this != &o) {
            release();
            p_ = std::exchange(o.p_, nullptr);
            slot_ = o.slot_;
            rings_ = std::move(o.rings_);
            tokens_ = std::move(o.tokens_);
        }
        return *this;
    }
    basic_producer(const basic_producer&) = delete;
    basic_producer& operator=(const basic_producer&) = delete;
    ~basic_producer() { release(); }

    /// Pushes one trade if its ring has room. Never blocks, never allocates.
    [[nodiscard]] push_result try_push(const trade& t) {
        const busy_scope busy(*p_, slot());
        if (!p_->accepting_.load(std::memory_order_seq_cst)) {
            return reject(reject_reason::stopped);
        }
        return push_one(t, false);
    }

    /// Pushes one trade, waiting by the policy's strategy while its ring is full.
    /// Returns `none` once accepted. Never allocates.
    reject_reason push(const trade& t) {
        for (unsigned step = 0;;) {
            {
                const busy_scope busy(*p_, slot());
                if (!p_->accepting_.load(std::memory_order_seq_cst)) {
                    return reject(reject_reason::stopped).reason;
                }
                const push_result r = push_one(t, true);
                if (!r.full) {
                    return r.reason;
                }
            }
            wait_for_room(step, t.token);
        }
    }

    /// Interns the token (unpinned: see `token_table`), then as `push(const trade&)`. May
    /// allocate to intern; when the token table is full, first releases the tokens that no
    /// shard holds state for (a brief pause of every producer).
    reject_reason push(const trade_view& t) {
        bool released = false;
        for (unsigned step = 0;;) {
            std::optional<token_id> held;
            {
                const busy_scope busy(*p_, slot());
                if (!p_->accepting_.load(std::memory_order_seq_cst)) {
                    return reject(reject_reason::stopped).reason;
                }
                trade interned;
                const reject_reason r = p_->intern_trade(t, interned, tokens_);
                if (r == reject_reason::none) {
                    const push_result pushed = push_one(interned, true);
                    if (!pushed.full) {
                        return pushed.reason;
                    }
                    held = interned.token;
                } else if (r != reject_reason::token_limit || released) {
                    return reject(r).reason;
                }
            }
            if (!held) { // the table was full
                released = true;
                if (!p_->release_for_interning()) {
                    return reject(reject_reason::token_limit).reason;
                }
                continue;
            }
            // Held back at a limit: wait outside the busy mark, then intern again (the
            // token may have been released meanwhile).
            wait_for_room(step, *held);
        }
    }

    /// Interns the token (unpinned) and pushes the trade if its ring has room: never waits
    /// for room (then `full` is set and nothing was pushed). May allocate to intern; when
    /// the token table is full, first releases the tokens that no shard holds state for (a
    /// brief pause of every producer).
    [[nodiscard]] push_result try_push(const trade_view& t) {
        for (bool released = false;;) {
            {
                const busy_scope busy(*p_, slot());
                if (!p_->accepting_.load(std::memory_order_seq_cst)) {
                    return reject(reject_reason::stopped);
                }
                trade interned;
                const reject_reason r = p_->intern_trade(t, interned, tokens_);
                if (r == reject_reason::none) {
                    return push_one(interned, false);
                }
                if (r != reject_reason::token_limit || released) {
                    return reject(r);
                }
            }
            released = true;
            if (!p_->release_for_interning()) {
                return reject(reject_reason::token_limit);
            }
        }
    }

    /// True once the shards have taken everything this producer pushed: its rings are
    /// empty. A caller that waits for this before letting another producer push for the
    /// same source keeps that source's trades in order across producers (each shard drains
    /// its rings one after another, so a later ring could otherwise overtake). The
    /// producer's own thread only; never blocks, never allocates.
    [[nodiscard]] bool drained() const noexcept {
        for (const ingress_ring* r : rings_) {
            if (r->write_available() != p_->cfg_.ring_capacity) {
                return false;
            }
        }
        return true;
    }

    /// As `pipeline::advance_time`, in order with this producer's trades (the clock travels
    /// through this handle's rings). Waits while a ring is full. Never allocates.
    reject_reason advance_time(timestamp_ms t) {
        const busy_scope busy(*p_, slot());
        if (t < 0 || t > max_timestamp_ms) {
            return reject(reject_reason::timestamp_out_of_range).reason;
        }
        if (!p_->accepting_.load(std::memory_order_seq_cst)) {
            return reject(reject_reason::stopped).reason;
        }
        const ingress_record rec{Pipeline::clock_marker(t), 0};
        for (std::size_t s = 0; s < rings_.size(); ++s) {
            for (unsigned step = 0; !rings_[s]->push(rec);) {
                p_->shards_[s]->notify_pushed();
                p_->wait_full(step, s);
            }
            p_->shards_[s]->notify_pushed();
        }
        return reject_reason::none;
    }

    /// Pushes a batch in order, waiting while rings are full; invalid trades are counted
    /// as rejected and skipped. Returns how many were accepted (all valid ones, unless the
    /// pipeline stopped meanwhile). Never allocates.
    std::size_t push(std::span<const trade> batch) { return push_many(batch, true); }

    /// As `push(span)` but never waits: stops at the first trade whose ring is full.
    /// Returns how many trades of `batch` were consumed (accepted or rejected); the rest
    /// were not touched. Never blocks, never allocates.
    [[nodiscard]] std::size_t try_push(std::span<const trade> batch) {
        return push_many(batch, false);
    }

private:
    friend Pipeline;
    using Policy = typename Pipeline::policy_type;

    basic_producer(Pipeline& p, std::size_t slot, std::vector<ingress_ring*> rings)
        : p_(&p), slot_(slot), rings_(std::move(rings)) {}

    /// Marks the slot busy for one push, so `stop()` and a token release can wait until no
    /// push is half done; while the pipeline is paused, waits before marking.
    struct busy_scope {
        busy_scope(Pipeline& p, detail::producer_slot& s) noexcept : slot(s) {
            p.gate_.enter_unpaused([&] { slot.busy.store(true, std::memory_order_seq_cst); },
                                   [&] { slot.busy.store(false, std::memory_order_release); });
        }
        ~busy_scope() { slot.busy.store(false, std::memory_order_release); }
        busy_scope(const busy_scope&) = delete;
        busy_scope& operator=(const busy_scope&) = delete;
        detail::producer_slot& slot;
    };

    detail::producer_slot& slot() const noexcept { return p_->slots_[slot_]; }

    push_result reject(reject_reason r) {
        detail::bump(slot().rejected[static_cast<std::size_t>(r)]);
        return push_result{r, false};
    }

    ingress_record record(const trade& t) {
        detail::producer_slot& s = slot();
        const bool sample = (s.sample_counter++ & (Policy::latency_sample_every - 1)) == 0;
        return ingress_record{t, sample ? detail::now_ns() : 0};
    }

    /// Waits, outside the busy mark, while a limit holds a trade for `token` back; from
    /// time to time releases unused tokens, which may be what holds the memory.
    void wait_for_room(unsigned& step, token_id token) {
        if (step == 0) {
            detail::bump(slot().backpressure_waits);
        }
        p_->wait_full(step, p_->table_.contains(token) ? p_->shard_of(token) : 0);
        if (step % 128 == 127) {
            (void)p_->release_for_interning();
        }
    }

    /// Validates and pushes one trade (the caller holds the busy flag and saw the pipeline
    /// accepting); with `wait`, waits while the ring is full, else reports it full. A trade
    /// that a limit holds back (`wait_for_room`) is reported full either way: the caller
    /// waits for room outside its busy mark.
    push_result push_one(const trade& t, bool wait) {
        const reject_reason r = p_->check(t);
        if (r != reject_reason::none) {
            return reject(r);
        }
        const std::size_t s = p_->shard_of(t.token);
        if constexpr (Policy::at_limit::waits) {
            if (!p_->admitted(t)) {
                if (!wait) {
                    detail::bump(slot().full_rejections);
                }
                return push_result{reject_reason::none, true};
            }
        }
        const ingress_record rec = record(t);
        if (!rings_[s]->push(rec)) {
            if (!wait) {
                detail::bump(slot().full_rejections);
                return push_result{reject_reason::none, true};
            }
            detail::bump(slot().backpressure_waits);
            for (unsigned step = 0; !rings_[s]->push(rec);) {
                p_->shards_[s]->notify_pushed();
                p_->wait_full(step, s);
            }
        }
        detail::bump(slot().pushed[s]);
        p_->shards_[s]->notify_pushed();
        return {};
    }

    std::size_t push_many(std::span<const trade> batch, bool wait) {
        std::size_t accepted = 0;
        std::size_t i = 0;
        {
            const busy_scope busy(*p_, slot());
            if (!p_->accepting_.load(std::memory_order_seq_cst)) {
                for (std::size_t k = 0; k < batch.size(); ++k) {
                    reject(reject_reason::stopped);
                }
                return 0;
            }
            // With `wait_for_room` at a limit, every trade needs its own admission check.
            if (rings_.size() == 1 && (!Policy::at_limit::waits || p_->budget_.admitting())) {
                return push_chunks(batch, wait);
            }
            for (; i < batch.size(); ++i) {
                const push_result r = push_one(batch[i], wait);
                if (r.full) {
                    if (!wait) {
                        return i;
                    }
                    break; // held back at a limit: wait for room outside the busy mark
                }
                accepted += r.accepted() ? 1 : 0;
            }
            if (i == batch.size()) {
                return wait ? accepted : batch.size();
            }
        }
        for (; i < batch.size(); ++i) {
            accepted += push(batch[i]) == reject_reason::none ? 1 : 0;
        }
        return accepted;
    }

    /// One shard: the batch goes to the ring 32 trades at a time. The caller holds the busy
    /// mark and saw the pipeline accepting.
    std::size_t push_chunks(std::span<const trade> batch, bool wait) {
        // Rejections are counted only once it is known how far the ring took the chunk, so
        // a trade the caller must offer again is not counted twice.
        constexpr std::size_t chunk = 32;
        ingress_record staged[chunk];
        std::size_t origin[chunk]; // index in `batch` of each staged record
        reject_reason why[chunk];  // the check of each trade of the chunk
        std::size_t accepted = 0;
        std::size_t i = 0;
        while (i < batch.size()) {
            const std::size_t begin = i;
            const std::size_t end = std::min(batch.size(), begin + chunk);
            std::size_t n = 0;
            for (; i < end; ++i) {
                why[i - begin] = p_->check(batch[i]);
                if (why[i - begin] == reject_reason::none) {
                    origin[n] = i;
                    staged[n++] = record(batch[i]);
                }
            }
            std::size_t done = rings_[0]->push(staged, n);
            if (done < n && wait) {
                detail::bump(slot().backpressure_waits);
                for (unsigned step = 0; done < n;) {
                    const std::size_t more = rings_[0]->push(staged + done, n - done);
                    done += more;
                    if (more == 0) {
                        p_->shards_[0]->notify_pushed();
                        p_->wait_full(step, 0);
                    }
                }
            }
            const std::size_t cut = done < n ? origin[done] : end;
            for (std::size_t k = begin; k < cut; ++k) {
                if (why[k - begin] != reject_reason::none) {
                    reject(why[k - begin]);
                }
            }
            accepted += done;
            detail::bump(slot().pushed[0], done);
            p_->shards_[0]->notify_pushed();
            if (done < n) {
                detail::bump(slot().full_rejections);
                return cut; // the first trade not taken; every earlier one was
            }
        }
        return wait ? accepted : batch.size();
    }

    void release() noexcept {
        if (p_ != nullptr) {
            const std::lock_guard lock(p_->registration_);
            slot().in_use.store(false, std::memory_order_relaxed);
            p_ = nullptr;
        }
    }

    Pipeline* p_;
    std::size_t slot_;
    std::vector<ingress_ring*> rings_;
    token_cache tokens_; ///< the ids of the token strings this handle pushed lately
};

} // namespace tradeagg
