#pragma once
// A producer's memory of the token ids it interned lately, so that a trade given by name finds
// its id without the token table's lock and hash index.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>

#include <tradeagg/token_table.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg {

/// Direct-mapped: each token string has one place, keyed by a cheap mix of its length and some
/// of its bytes. An entry is trusted only if the table has released nothing since the cache was
/// last cleared (`token_table::releases`: a released id may come back for another token) and the
/// table's name for the id equals the string. Use from inside a push (a producer's busy mark),
/// where no release can run. One thread at a time (a producer's); allocates on first use.
class token_cache {
public:
    static constexpr std::size_t entries = 2'048;

    /// The id `token` had when it was remembered, if still valid in `table`. Never allocates.
    [[nodiscard]] std::optional<token_id> find(std::string_view token,
                                               const token_table& table) noexcept {
        if (slots_ == nullptr || !current(table)) {
            return std::nullopt;
        }
        const std::uint64_t key = key_of(token);
        const slot& s = slots_[key % entries];
        if (s.key != key || !table.contains(s.id) || table.name(s.id) != token) {
            return std::nullopt;
        }
        return s.id;
    }

    /// Remembers that `token` is `id` in `table`. Allocates the entries on first use; without
    /// memory for them, remembers nothing.
    void remember(std::string_view token, token_id id, const token_table& table) noexcept {
        if (slots_ == nullptr) {
            slots_.reset(new (std::nothrow) slot[entries]);
            if (slots_ == nullptr) {
                return;
            }
            releases_ = table.releases();
        } else {
            (void)current(table);
        }
        const std::uint64_t key = key_of(token);
        slots_[key % entries] = slot{key, id};
    }

    /// Bytes held. One thread.
    [[nodiscard]] std::size_t memory_bytes() const noexcept {
        return slots_ == nullptr ? 0 : entries * sizeof(slot);
    }

private:
    struct slot {
        std::uint64_t key = 0; ///< 0: empty (`key_of` never returns 0)
        token_id id = 0;
    };

    /// Length, the first, middle and last 8 bytes, mixed. Base58 mints differ in their first
    /// bytes, names like "TOKEN123" in their last: either way a few loads and multiplies,
    /// where a full hash would read every byte.
    static std::uint64_t key_of(std::string_view s) noexcept {
        const auto load8 = [&](std::size_t at) {
            std::uint64_t v = 0;
            std::memcpy(&v, s.data() + at, std::min<std::size_t>(8, s.size() - at));
            return v;
        };
        std::uint64_t h = 0x9E37'79B9'7F4A'7C15ull ^ s.size();
        if (!s.empty()) {
            const std::size_t tail = s.size() > 8 ? s.size() - 8 : 0;
            for (const std::uint64_t part : {load8(0), load8(tail / 2), load8(tail)}) {
                h = (h ^ part) * 0xBF58'476D'1CE4'E5B9ull;
                h ^= h >> 31;
            }
        }
        return h == 0 ? 1 : h;
    }

    /// True if `table` released nothing since the entries were filled; otherwise forgets them
    /// all and returns false.
    bool current(const token_table& table) noexcept {
        const std::uint64_t releases = table.releases();
        if (releases == releases_) {
            return true;
        }
        std::fill_n(slots_.get(), entries, slot{});
        releases_ = releases;
        return false;
    }

    std::unique_ptr<slot[]> slots_;
    std::uint64_t releases_ = 0;
};

} // namespace tradeagg
