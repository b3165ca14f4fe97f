#pragma once
// Interning: token strings become dense ids once, at the edge; the hot path sees only ids.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <tradeagg/config.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg {

/// Maps token strings to dense ids 0, 1, 2, ... and back, and fixes each token's shard.
/// Names and entries never move once interned, so `name()` views stay valid for the table's
/// lifetime.
class token_table {
public:
    /// Outcome of `intern`: the id, or why the token was refused.
    struct intern_result {
        token_id id = 0;
        reject_reason reason = reject_reason::none;
    };

    /// A table that holds at most `max_tokens` tokens spread over `shards` shards.
    /// Allocates the segment directory.
    token_table(std::size_t max_tokens, std::size_t shards)
        : max_tokens_(max_tokens), shards_(shards == 0 ? 1 : shards),
          segments_(std::make_unique<entry*[]>((max_tokens + segment_size - 1) / segment_size)) {}

    token_table(const token_table&) = delete;
    token_table& operator=(const token_table&) = delete;
    ~token_table() {
        const std::size_t n =
            (size_.load(std::memory_order_relaxed) + segment_size - 1) / segment_size;
        for (std::size_t i = 0; i < n; ++i) {
            delete[] segments_[i];
        }
    }

    /// The id of `token`, interning it if new. Thread-safe; a known token costs a hash and a
    /// shared lock, a new one an exclusive lock and may allocate.
    [[nodiscard]] intern_result intern(std::string_view token) {
        if (const reject_reason r = validate_token(token); r != reject_reason::none) {
            return {0, r};
        }
        {
            const std::shared_lock lock(mutex_);
            if (const auto it = ids_.find(token); it != ids_.end()) {
                return {it->second, reject_reason::none};
            }
        }
        const std::unique_lock lock(mutex_);
        if (const auto it = ids_.find(token); it != ids_.end()) {
            return {it->second, reject_reason::none};
        }
        const std::size_t n = size_.load(std::memory_order_relaxed);
        if (n >= max_tokens_) {
            return {0, reject_reason::token_limit};
        }
        const std::string_view stored = store(token);
        entry*& segment = segments_[n / segment_size];
        if (segment == nullptr) {
            segment = new entry[segment_size];
        }
        entry& e = segment[n % segment_size];
        e.data = stored.data();
        e.size = static_cast<std::uint32_t>(stored.size());
        e.shard = static_cast<std::uint32_t>(stable_hash(stored) % shards_);
        ids_.emplace(stored, static_cast<token_id>(n));
        size_.store(n + 1, std::memory_order_release);
        return {static_cast<token_id>(n), reject_reason::none};
    }

    /// The id of an already interned token. Thread-safe; takes a shared lock.
    [[nodiscard]] std::optional<token_id> find(std::string_view token) const {
        const std::shared_lock lock(mutex_);
        const auto it = ids_.find(token);
        return it == ids_.end() ? std::nullopt : std::optional<token_id>(it->second);
    }

    /// True if `id` was handed out. Thread-safe, wait-free.
    [[nodiscard]] bool contains(token_id id) const noexcept {
        return id < size_.load(std::memory_order_acquire);
    }

    /// The token's string. Precondition: `contains(id)`. Thread-safe, wait-free.
    [[nodiscard]] std::string_view name(token_id id) const noexcept {
        const entry& e = segments_[id / segment_size][id % segment_size];
        return {e.data, e.size};
    }

    /// The shard that owns the token. Precondition: `contains(id)`. Thread-safe, wait-free.
    [[nodiscard]] std::uint32_t shard_of(token_id id) const noexcept {
        return segments_[id / segment_size][id % segment_size].shard;
    }

    /// True while the token's shard holds state for it (set when a shard creates the state,
    /// cleared when it evicts it): a token without state is "new" to the memory limit and the
    /// active-token cap. Precondition: `contains(id)`. Thread-safe, wait-free.
    [[nodiscard]] bool has_state(token_id id) const noexcept {
        return segments_[id / segment_size][id % segment_size].has_state.load(
            std::memory_order_relaxed);
    }
    /// Records whether the token's shard holds state for it. Shard threads; wait-free.
    void set_has_state(token_id id, bool value) noexcept {
        segments_[id / segment_size][id % segment_size].has_state.store(value,
                                                                        std::memory_order_relaxed);
    }

    /// Tokens interned so far. Thread-safe, wait-free.
    [[nodiscard]] std::size_t size() const noexcept {
        return size_.load(std::memory_order_acquire);
    }

    /// Bytes held for names, entries and the lookup index (approximate for the index).
    [[nodiscard]] std::size_t memory_bytes() const {
        const std::shared_lock lock(mutex_);
        const std::size_t n = size_.load(std::memory_order_relaxed);
        return name_chunks_.size() * name_chunk_size +
               ((n + segment_size - 1) / segment_size) * segment_size * sizeof(entry) +
               ids_.bucket_count() * sizeof(void*) +
               ids_.size() * (sizeof(std::string_view) + sizeof(token_id) + 2 * sizeof(void*));
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
        const char* data = nullptr;
        std::uint32_t size = 0;
        std::uint16_t shard = 0;
        std::atomic<bool> has_state{false};
    };
    static_assert(sizeof(entry) == 16);
    static constexpr std::size_t segment_size = 1024;
    static constexpr std::size_t name_chunk_size = std::size_t{64} * 1024;

    std::string_view store(std::string_view token) {
        if (name_chunks_.empty() || name_used_ + token.size() > name_chunk_size) {
            name_chunks_.push_back(std::make_unique<char[]>(name_chunk_size));
            name_used_ = 0;
        }
        char* dst = name_chunks_.back().get() + name_used_;
        std::memcpy(dst, token.data(), token.size());
        name_used_ += token.size();
        return {dst, token.size()};
    }

    std::size_t max_tokens_;
    std::size_t shards_;
    std::unique_ptr<entry*[]> segments_;
    std::atomic<std::size_t> size_{0};
    mutable std::shared_mutex mutex_;
    std::unordered_map<std::string_view, token_id> ids_;
    std::vector<std::unique_ptr<char[]>> name_chunks_;
    std::size_t name_used_ = 0;
};

} // namespace tradeagg
