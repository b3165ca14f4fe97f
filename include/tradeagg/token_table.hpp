#pragma once
// Interning: token strings become dense ids once, at the edge; the hot path sees only ids.

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <tradeagg/config.hpp>
#include <tradeagg/detail/large_allocator.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg {

/// Maps token strings to dense ids 0, 1, 2, ... and back, and fixes each token's shard.
///
/// A token interned through `intern(name)` (or with `pin`) keeps its id for the table's
/// lifetime: callers may hold it. Tokens interned for a single push (`pin == false`, the
/// string path of a pipeline) can be forgotten once no shard holds state for them
/// (`release_unused`, which a pipeline runs while its producers are paused); their ids are then
/// handed out again, lowest first. A token's name stays valid while it is interned.
class token_table {
public:
    /// Outcome of `intern`: the id, or why the token was refused.
    struct intern_result {
        token_id id = 0;
        reject_reason reason = reject_reason::none;
    };

    /// A table that holds at most `max_tokens` tokens at once, spread over `shards` shards.
    /// Allocates the segment directory.
    token_table(std::size_t max_tokens, std::size_t shards)
        : max_tokens_(max_tokens), shards_(shards == 0 ? 1 : shards),
          segments_(std::make_unique<entry*[]>(segment_count(max_tokens))) {}

    token_table(const token_table&) = delete;
    token_table& operator=(const token_table&) = delete;
    ~token_table() {
        const std::size_t high = high_.load(std::memory_order_relaxed);
        for (std::size_t id = 0; id < high; ++id) {
            delete[] at(static_cast<token_id>(id)).data;
        }
        for (std::size_t i = 0; i < segment_count(max_tokens_); ++i) {
            delete[] segments_[i];
        }
    }

    /// The id of `token`, interning it if new; with `pin`, the id is never released.
    /// Thread-safe; a known token costs a hash and a shared lock, a new one an exclusive lock
    /// and allocates.
    [[nodiscard]] intern_result intern(std::string_view token, bool pin = true) {
        if (const reject_reason r = validate_token(token); r != reject_reason::none) {
            return {0, r};
        }
        {
            const std::shared_lock lock(mutex_);
            if (const auto it = ids_.find(token); it != ids_.end()) {
                if (!pin || at(it->second).pinned) {
                    return {it->second, reject_reason::none};
                }
            }
        }
        const std::unique_lock lock(mutex_);
        if (const auto it = ids_.find(token); it != ids_.end()) {
            at(it->second).pinned = at(it->second).pinned || pin;
            return {it->second, reject_reason::none};
        }
        if (count_.load(std::memory_order_relaxed) >= max_tokens_) {
            return {0, reject_reason::token_limit};
        }
        auto name = std::make_unique<char[]>(token.size());
        std::memcpy(name.get(), token.data(), token.size());
        token_id id = 0;
        const std::size_t high = high_.load(std::memory_order_relaxed);
        if (!free_ids_.empty()) {
            id = free_ids_.back();
        } else {
            id = static_cast<token_id>(high);
            entry*& segment = segments_[high / segment_size];
            if (segment == nullptr) {
                segment = new entry[segment_size];
            }
        }
        const std::string_view stored(name.get(), token.size());
        ids_.emplace(stored, id); // may throw: nothing has changed yet
        if (!free_ids_.empty()) {
            free_ids_.pop_back();
        }
        entry& e = at(id);
        e.data = name.release();
        e.size = static_cast<std::uint32_t>(stored.size());
        e.shard = static_cast<std::uint16_t>(stable_hash(stored) % shards_);
        e.pinned = pin;
        e.has_state.store(false, std::memory_order_relaxed);
        name_bytes_ += allocation_size(stored.size());
        count_.store(count_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        if (id == high) {
            high_.store(high + 1, std::memory_order_release);
        }
        return {id, reject_reason::none};
    }

    /// The id of an interned token. Thread-safe; takes a shared lock.
    [[nodiscard]] std::optional<token_id> find(std::string_view token) const {
        const std::shared_lock lock(mutex_);
        const auto it = ids_.find(token);
        return it == ids_.end() ? std::nullopt : std::optional<token_id>(it->second);
    }

    /// True if `id` is below every id handed out (a released id may pass: see the class
    /// comment). Thread-safe, wait-free.
    [[nodiscard]] bool contains(token_id id) const noexcept {
        return id < high_.load(std::memory_order_acquire);
    }

    /// The token's string. Precondition: the token is interned. Thread-safe, wait-free.
    [[nodiscard]] std::string_view name(token_id id) const noexcept {
        const entry& e = at(id);
        return {e.data, e.size};
    }

    /// The shard that owns the token. Precondition: the token is interned. Thread-safe,
    /// wait-free.
    [[nodiscard]] std::uint32_t shard_of(token_id id) const noexcept { return at(id).shard; }

    /// True while the token's shard holds state for it (set when a shard creates the state,
    /// cleared when it evicts it): a token without state is "new" to the memory limit and the
    /// active-token cap. Precondition: `contains(id)`. Thread-safe, wait-free.
    [[nodiscard]] bool has_state(token_id id) const noexcept {
        return at(id).has_state.load(std::memory_order_relaxed);
    }
    /// Records whether the token's shard holds state for it. Shard threads; wait-free.
    void set_has_state(token_id id, bool value) noexcept {
        at(id).has_state.store(value, std::memory_order_relaxed);
    }

    /// Tokens interned now. Thread-safe, wait-free.
    [[nodiscard]] std::size_t size() const noexcept {
        return count_.load(std::memory_order_relaxed);
    }

    /// Forgets every token that is neither pinned nor has state, and gives back the memory
    /// of its name, its index entry and, when the highest ids go, their segments. Returns how
    /// many. Precondition: no other thread uses any of those ids, now or later (a pipeline
    /// pauses its producers and drains its shards first). Thread-safe; takes the exclusive
    /// lock.
    std::size_t release_unused() {
        const std::unique_lock lock(mutex_);
        std::size_t released = 0;
        std::size_t high = high_.load(std::memory_order_relaxed);
        for (std::size_t i = 0; i < high; ++i) {
            entry& e = at(static_cast<token_id>(i));
            if (e.data == nullptr || e.pinned || e.has_state.load(std::memory_order_relaxed)) {
                continue;
            }
            ids_.erase(std::string_view(e.data, e.size));
            name_bytes_ -= allocation_size(e.size);
            delete[] e.data;
            e.data = nullptr;
            e.size = 0;
            free_ids_.push_back(static_cast<token_id>(i));
            ++released;
        }
        if (released == 0) {
            return 0;
        }
        releases_.fetch_add(1, std::memory_order_release);
        count_.store(count_.load(std::memory_order_relaxed) - released, std::memory_order_relaxed);
        // Free ids at the top lower the high-water mark; their segments go back.
        while (high > 0 && at(static_cast<token_id>(high - 1)).data == nullptr) {
            --high;
        }
        high_.store(high, std::memory_order_release);
        std::erase_if(free_ids_, [high](token_id id) { return id >= high; });
        std::sort(free_ids_.begin(), free_ids_.end(), std::greater<>{}); // lowest at the back
        for (std::size_t i = segment_count(high); i < segment_count(max_tokens_); ++i) {
            delete[] segments_[i];
            segments_[i] = nullptr;
        }
        if (ids_.size() < ids_.bucket_count() / 4) {
            ids_.rehash(0);
        }
        if (free_ids_.size() < free_ids_.capacity() / 4) {
            free_ids_.shrink_to_fit();
        }
        return released;
    }

    /// How many times `release_unused` forgot tokens. An id held across a change of this may
    /// name another token now, or none (`token_cache` checks it). Thread-safe, wait-free.
    [[nodiscard]] std::uint64_t releases() const noexcept {
        return releases_.load(std::memory_order_acquire);
    }

    /// Bytes held for names, entries, the lookup index (approximate) and free ids.
    /// Thread-safe; takes a shared lock.
    [[nodiscard]] std::size_t memory_bytes() const {
        const std::shared_lock lock(mutex_);
        std::size_t segments = 0;
        for (std::size_t i = 0; i < segment_count(max_tokens_); ++i) {
            segments += segments_[i] != nullptr ? 1 : 0;
        }
        return name_bytes_ + segments * segment_size * sizeof(entry) +
               ids_.bucket_count() * sizeof(void*) +
               ids_.size() * (sizeof(std::string_view) + sizeof(token_id) + 2 * sizeof(void*)) +
               free_ids_.capacity() * sizeof(token_id) +
               segment_count(max_tokens_) * sizeof(entry*);
    }

    /// FNV-1a (64 bit) of the token's bytes: the same on every machine and every run, so a token
    /// keeps its shard (and, across processes, its partition) wherever it is computed.
    [[nodiscard]] static constexpr std::uint64_t stable_hash(std::string_view s) noexcept {
        std::uint64_t h = 14'695'981'039'346'656'037ull;
        for (const char c : s) {
            h ^= static_cast<unsigned char>(c);
            h *= 1'099'511'628'211ull;
        }
        return h;
    }

private:
    struct entry {
        const char* data = nullptr; ///< owned; null while the id is free
        std::uint32_t size = 0;
        std::uint16_t shard = 0;
        bool pinned = false; ///< written and read under the exclusive lock
        std::atomic<bool> has_state{false};
    };
    static_assert(sizeof(entry) == 16);
    static constexpr std::size_t segment_size = 1024;

    static constexpr std::size_t segment_count(std::size_t ids) noexcept {
        return (ids + segment_size - 1) / segment_size;
    }
    /// What the allocator takes for a name: its bytes rounded up, plus its header.
    static constexpr std::size_t allocation_size(std::size_t bytes) noexcept {
        return (bytes + 15) / 16 * 16 + 16;
    }

    entry& at(token_id id) const noexcept {
        return segments_[id / segment_size][id % segment_size];
    }

    std::size_t max_tokens_;
    std::size_t shards_;
    std::unique_ptr<entry*[]> segments_;
    std::atomic<std::size_t> high_{0};       ///< ids below this have been handed out
    std::atomic<std::size_t> count_{0};      ///< tokens interned now
    std::atomic<std::uint64_t> releases_{0}; ///< calls of `release_unused` that forgot tokens
    mutable std::shared_mutex mutex_;
    std::unordered_map<std::string_view, token_id, std::hash<std::string_view>, std::equal_to<>,
                       detail::large_allocator<std::pair<const std::string_view, token_id>>>
        ids_;
    /// Below `high_`, sorted with the lowest at the back.
    std::vector<token_id, detail::large_allocator<token_id>> free_ids_;
    std::size_t name_bytes_ = 0;
};

} // namespace tradeagg
