#pragma once
// The updates a Redis sink carries from `consume` to its I/O thread: which key an update
// writes (`update_key`), its value, a flush's batch of them (`inbox_node`), and the arguments
// of one command built in place (`command_args`).

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string_view>
#include <variant>
#include <vector>

#include <tradeagg/candle.hpp>
#include <tradeagg/config.hpp>
#include <tradeagg/rolling_window.hpp>
#include <tradeagg/sink.hpp>
#include <tradeagg/trade.hpp>

namespace tradeagg::redis::detail {

enum class key_kind : std::uint8_t { candle, token };

/// Which Redis key an update writes (a token update writes two: rolling and latest).
struct update_key {
    std::array<char, max_token_length> token{};
    std::uint8_t token_size = 0;
    key_kind kind = key_kind::candle;
    std::int64_t width_ms = 0;
    timestamp_ms open_time = 0;

    [[nodiscard]] std::string_view token_view() const noexcept {
        return {token.data(), token_size};
    }
    friend bool operator==(const update_key& a, const update_key& b) noexcept {
        return a.kind == b.kind && a.width_ms == b.width_ms && a.open_time == b.open_time &&
               a.token_view() == b.token_view();
    }
};

struct update_key_hash {
    std::size_t operator()(const update_key& k) const noexcept {
        std::uint64_t h = std::hash<std::string_view>{}(k.token_view());
        h ^= (static_cast<std::uint64_t>(k.open_time) + 0x9E3779B97F4A7C15ull) *
             0xBF58476D1CE4E5B9ull;
        h ^= static_cast<std::uint64_t>(k.width_ms) * 0x94D049BB133111EBull +
             static_cast<std::uint64_t>(k.kind);
        return static_cast<std::size_t>(h ^ (h >> 31));
    }
};

struct token_value {
    rolling_stats rolling;
    latest_trade latest;
};
using update_value = std::variant<candle, token_value>;

struct update {
    update_key key;
    update_value value;
};

/// One flush's updates on their way to the I/O thread.
struct inbox_node {
    inbox_node* next = nullptr;
    std::int64_t consumed_ns = 0;
    std::vector<update> updates;
};

[[nodiscard]] inline std::int64_t steady_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

/// The arguments of one command, built in place for `redisAsyncCommandArgv` (which copies
/// them). Keys and fields are bounded: the prefix by the sink's constructor, tokens by
/// `max_token_length`.
class command_args {
public:
    void clear() noexcept {
        used_ = 0;
        argc_ = 0;
    }
    void add(std::string_view s) noexcept {
        std::memcpy(text_.data() + used_, s.data(), s.size());
        argv_[argc_] = text_.data() + used_;
        len_[argc_] = s.size();
        used_ += s.size();
        ++argc_;
    }
    /// Appends to the last argument (for keys built from parts).
    void extend(std::string_view s) noexcept {
        std::memcpy(text_.data() + used_, s.data(), s.size());
        len_[argc_ - 1] += s.size();
        used_ += s.size();
    }
    [[nodiscard]] int argc() const noexcept { return static_cast<int>(argc_); }
    [[nodiscard]] const char** argv() noexcept { return argv_.data(); }
    [[nodiscard]] const std::size_t* lengths() const noexcept { return len_.data(); }

private:
    std::array<char, 2'048> text_{};
    std::array<const char*, 40> argv_{};
    std::array<std::size_t, 40> len_{};
    std::size_t used_ = 0;
    std::size_t argc_ = 0;
};

/// Sets `k`'s token to `name`; false if it is empty or longer than a token can be.
inline bool fill_key(update_key& k, std::string_view name) noexcept {
    if (name.empty() || name.size() > k.token.size()) {
        return false;
    }
    std::memcpy(k.token.data(), name.data(), name.size());
    k.token_size = static_cast<std::uint8_t>(name.size());
    return true;
}

/// The token a key belongs to, as a key of its own (the token kind's).
inline update_key token_of(const update_key& k) noexcept {
    update_key t;
    t.token = k.token;
    t.token_size = k.token_size;
    t.kind = key_kind::token;
    return t;
}

} // namespace tradeagg::redis::detail
