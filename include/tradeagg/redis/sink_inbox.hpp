#pragma once
// The Redis sink's inbox: how flushes travel from the shard workers that call `consume` to the
// sink's one I/O thread. A flush is copied into one node and pushed onto a lock-free list; the
// I/O thread takes the whole list at once. So a producer never blocks and never waits for the
// network, and the list cannot fill up the way a ring can: Redis falling behind shows as
// pending keys on the I/O thread, not as a full queue.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include <tradeagg/redis/sink_updates.hpp>
#include <tradeagg/sink.hpp>

namespace tradeagg::redis::detail {

/// A multi-producer, single-consumer list of flushes, taken whole by the consumer.
class sink_inbox {
public:
    sink_inbox() = default;
    sink_inbox(const sink_inbox&) = delete;
    sink_inbox& operator=(const sink_inbox&) = delete;
    ~sink_inbox() { discard(); }

    /// Copies `batch`'s updates into a node and pushes it; an update whose token is empty or
    /// too long is left out and counted in `unusable`. Returns true when the consumer must be
    /// woken (no wake-up is pending since it last called `woken`). Any thread; never blocks;
    /// allocates the node.
    [[nodiscard]] bool push(const flush_batch& batch, std::uint64_t& unusable) {
        auto box = std::make_unique<inbox_node>();
        box->consumed_ns = steady_ns();
        box->updates.reserve(batch.candles.size() + batch.tokens.size());
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
        updates_.fetch_add(box->updates.size(), std::memory_order_relaxed);
        inbox_node* raw = box.release();
        raw->next = head_.load(std::memory_order_relaxed);
        while (!head_.compare_exchange_weak(raw->next, raw, std::memory_order_release,
                                            std::memory_order_relaxed)) {
        }
        return !wake_posted_.exchange(true, std::memory_order_acq_rel);
    }

    /// The consumer is awake: the next `push` wakes it again. Consumer thread.
    void woken() noexcept { wake_posted_.store(false, std::memory_order_seq_cst); }

    /// Takes every node pushed so far and calls `f(update, consumed_ns)` for each update, in
    /// the order the flushes were pushed. Consumer thread; frees the nodes.
    template <class F>
    void drain(F&& f) {
        inbox_node* head = head_.exchange(nullptr, std::memory_order_acquire);
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
                f(u, box->consumed_ns);
            }
            updates_.fetch_sub(box->updates.size(), std::memory_order_release);
        }
    }

    /// Updates pushed and not drained yet. Any thread.
    [[nodiscard]] std::size_t updates() const noexcept {
        return updates_.load(std::memory_order_acquire);
    }

    /// Frees every node not drained (their updates stay counted in `updates`). Consumer
    /// thread, or any thread once no producer can push.
    void discard() noexcept {
        inbox_node* n = head_.exchange(nullptr);
        while (n != nullptr) {
            inbox_node* next = n->next;
            delete n;
            n = next;
        }
    }

private:
    std::atomic<inbox_node*> head_{nullptr};
    std::atomic<bool> wake_posted_{false};
    std::atomic<std::size_t> updates_{0};
};

} // namespace tradeagg::redis::detail
