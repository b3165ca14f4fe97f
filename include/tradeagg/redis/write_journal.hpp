#pragma once
// A Redis sink's journal of written values: the latest value Redis acknowledged per key, kept
// so that a Redis that restarted without its data can be written again. Bounded in bytes (the
// least recently written key is forgotten first) and pruned of candles whose keys Redis has
// expired by now. Single-threaded: the sink's I/O thread.

#include <chrono>
#include <cstddef>
#include <iterator>
#include <list>
#include <unordered_map>

#include <tradeagg/config.hpp>
#include <tradeagg/redis/sink_updates.hpp>

namespace tradeagg::redis::detail {

class write_journal {
    using clock = std::chrono::steady_clock;

public:
    /// One key's written value.
    struct item {
        update_key key;
        update_value value;
        clock::time_point expires = clock::time_point::max(); ///< when Redis drops the key
        clock::time_point expiry_sent{}; ///< when its expiry was last sent (see the sink)
    };

    /// Bytes one item costs: its list node and its index node.
    static constexpr std::size_t item_bytes =
        sizeof(item) + 2 * sizeof(void*) + sizeof(update_key) + 4 * sizeof(void*);

    /// Records `key`'s written value (the latest written, so the key moves to the back), then
    /// forgets the oldest items beyond `budget_bytes`; returns how many it forgot. A budget
    /// below one item keeps nothing. Allocates.
    std::size_t remember(const update_key& key, const update_value& value,
                         clock::time_point expires, clock::time_point expiry_sent,
                         std::size_t budget_bytes) {
        if (budget_bytes < item_bytes) {
            return 0;
        }
        if (const auto found = index_.find(key); found != index_.end()) {
            found->second->value = value;
            found->second->expires = expires;
            found->second->expiry_sent = expiry_sent;
            items_.splice(items_.end(), items_, found->second);
            return 0;
        }
        items_.push_back(item{key, value, expires, expiry_sent});
        index_.emplace(key, std::prev(items_.end()));
        std::size_t forgotten = 0;
        while (items_.size() * item_bytes > budget_bytes) {
            forget_oldest();
            ++forgotten;
        }
        return forgotten;
    }

    /// The item of `key`, or null.
    [[nodiscard]] const item* find(const update_key& key) const {
        const auto found = index_.find(key);
        return found == index_.end() ? nullptr : &*found->second;
    }

    /// Forgets the candles whose keys Redis has expired by `now`, oldest written first.
    void prune(clock::time_point now) {
        while (!items_.empty() && items_.front().expires <= now) {
            forget_oldest();
        }
    }

    /// The items, least recently written first. A caller may change an item's `expiry_sent`.
    [[nodiscard]] auto begin() noexcept { return items_.begin(); }
    [[nodiscard]] auto end() noexcept { return items_.end(); }

    [[nodiscard]] bool empty() const noexcept { return items_.empty(); }
    [[nodiscard]] std::size_t size() const noexcept { return items_.size(); }
    /// Approximately what the journal holds in memory.
    [[nodiscard]] std::size_t bytes() const noexcept { return items_.size() * item_bytes; }

private:
    void forget_oldest() {
        index_.erase(items_.front().key);
        items_.pop_front();
    }

    std::list<item> items_;
    std::unordered_map<update_key, std::list<item>::iterator, update_key_hash> index_;
};

} // namespace tradeagg::redis::detail
