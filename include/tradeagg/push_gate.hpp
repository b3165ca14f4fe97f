#pragma once
// Who is inside a push into a pipeline, and a pause that holds new pushes back. Each producer
// handle marks its slot `busy` for the duration of a push; a push through the shared queues is
// counted in flight. `stop()` waits until nobody is inside before draining, and a token release
// pauses the gate and waits the same way before it forgets tokens, so no push is half done
// with a token that is being released.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <thread>

#include <tradeagg/config.hpp>
#include <tradeagg/ingress.hpp>

namespace tradeagg::detail {

/// The marks of every push in progress and the pause flag. Thread-safe.
class push_gate {
public:
    /// Watches the `busy` flags of `slots[0 .. count)`, which must outlive the gate.
    push_gate(const producer_slot* slots, std::size_t count) noexcept
        : slots_(slots), count_(count) {}

    /// Marks a push as in progress (`mark`, seq_cst) unless the gate is paused; while it is,
    /// takes the mark back (`unmark`) and waits. The seq_cst pair means a pause either sees
    /// the mark or is seen by the check. Never allocates; sleeps while paused.
    template <class Mark, class Unmark>
    void enter_unpaused(Mark&& mark, Unmark&& unmark) const noexcept {
        for (;;) {
            mark();
            if (!paused_.load(std::memory_order_seq_cst)) {
                return;
            }
            unmark();
            while (paused_.load(std::memory_order_acquire)) {
                std::this_thread::sleep_for(std::chrono::microseconds(50));
            }
        }
    }

    /// Runs `f` counted as a push in flight on the shared queues; while the gate is paused,
    /// waits first.
    template <class F>
    auto shared_push(F&& f) {
        struct in_flight {
            explicit in_flight(push_gate& g) noexcept : n(g.shared_in_flight_) {
                g.enter_unpaused([&] { n.fetch_add(1, std::memory_order_seq_cst); },
                                 [&] { n.fetch_sub(1, std::memory_order_release); });
            }
            ~in_flight() { n.fetch_sub(1, std::memory_order_release); }
            in_flight(const in_flight&) = delete;
            in_flight& operator=(const in_flight&) = delete;
            std::atomic<int>& n;
        } guard(*this);
        return f();
    }

    /// Holds new pushes back (those inside go on) until `resume`.
    void pause() noexcept { paused_.store(true, std::memory_order_seq_cst); }
    void resume() noexcept { paused_.store(false, std::memory_order_seq_cst); }

    /// Waits until no push is inside, yielding. For `stop()`, once nothing new can enter.
    void wait_empty() const noexcept {
        (void)wait_until_empty(std::chrono::steady_clock::time_point::max());
    }

    /// Waits, up to `limit`, until no push is inside; false if one still is. Precondition:
    /// paused (a push waiting at a limit holds its mark, so this can time out).
    [[nodiscard]] bool wait_quiescent(std::chrono::milliseconds limit) const noexcept {
        return wait_until_empty(std::chrono::steady_clock::now() + limit);
    }

private:
    [[nodiscard]] bool
    wait_until_empty(std::chrono::steady_clock::time_point deadline) const noexcept {
        while (!empty()) {
            if (std::chrono::steady_clock::now() >= deadline) {
                return false;
            }
            std::this_thread::yield();
        }
        return true;
    }

    [[nodiscard]] bool empty() const noexcept {
        for (std::size_t i = 0; i < count_; ++i) {
            if (slots_[i].busy.load(std::memory_order_seq_cst)) {
                return false;
            }
        }
        return shared_in_flight_.load(std::memory_order_seq_cst) == 0;
    }

    const producer_slot* slots_;
    std::size_t count_;
    std::atomic<bool> paused_{false}; ///< read by every push: on its own line below
    alignas(cache_line_size) std::atomic<int> shared_in_flight_{0};
};

} // namespace tradeagg::detail
