#pragma once
// The trades of one `POST /trades` body, as the trade parser (trade_parser.hpp) leaves them:
// `trade_view`s whose tokens point into storage the batch owns, and why a body was refused.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <tradeagg/trade.hpp>

namespace aggregator {

/// How a request body holds its trades.
enum class body_format {
    json_array, ///< `[{...}, {...}]`; `[]` is zero trades
    ndjson,     ///< one object per line; blank lines, CRLF and a missing final newline allowed
};

/// Why a body was refused: the trade it concerns, and a reason to hand back to the client.
struct parse_error {
    /// 0-based index of the offending trade; for a syntax error, of the trade being parsed (the
    /// number of complete trades before the error).
    std::size_t index = 0;
    /// Short lower-case text, e.g. "price_not_finite", "missing field 'ts'",
    /// "invalid JSON at byte 17: syntax error". Printable ASCII only.
    std::string reason;
};

namespace detail {
class trade_handler;
class trade_scanner;
} // namespace detail

/// The trades of one request. Their tokens point into storage the batch owns, so they stay valid
/// until the batch is cleared, parsed into again, or destroyed (moving the batch keeps them
/// valid; copying is deleted because the copies' views would point into the original).
/// Reuse one batch per connection: `clear()` and `parse_trades` keep the capacity, so a steady
/// stream of requests stops allocating. Not thread-safe.
class trade_batch {
public:
    trade_batch() = default;
    trade_batch(const trade_batch&) = delete;
    trade_batch& operator=(const trade_batch&) = delete;
    trade_batch(trade_batch&&) noexcept = default;
    trade_batch& operator=(trade_batch&&) noexcept = default;
    ~trade_batch() = default;

    /// The parsed trades, in body order. Never allocates.
    [[nodiscard]] const std::vector<tradeagg::trade_view>& trades() const noexcept {
        return trades_;
    }
    /// Number of trades. Never allocates.
    [[nodiscard]] std::size_t size() const noexcept { return trades_.size(); }
    /// True when the batch holds no trade. Never allocates.
    [[nodiscard]] bool empty() const noexcept { return trades_.empty(); }
    /// The i-th trade; `i < size()`. Never allocates.
    [[nodiscard]] const tradeagg::trade_view& operator[](std::size_t i) const noexcept {
        return trades_[i];
    }
    /// Iteration over the trades. Never allocates.
    [[nodiscard]] auto begin() const noexcept { return trades_.begin(); }
    /// Iteration over the trades. Never allocates.
    [[nodiscard]] auto end() const noexcept { return trades_.end(); }

    /// Drops every trade and token, keeping the capacity. Never allocates.
    void clear() noexcept {
        trades_.clear();
        token_offsets_.clear();
        tokens_.clear();
    }

    /// Pre-sizes the batch for `trades` trades whose tokens total `token_bytes`. Allocates.
    void reserve(std::size_t trades, std::size_t token_bytes) {
        trades_.reserve(trades);
        token_offsets_.reserve(trades);
        tokens_.reserve(token_bytes);
    }

private:
    friend class detail::trade_handler;
    friend class detail::trade_scanner;

    // Tokens are appended to one buffer while parsing, which may move it, so the views are
    // built only once the whole body parsed. Token i spans [offset i, offset i+1) (the last
    // one ends at the buffer's end): every trade appends exactly its one token.
    // A vector rather than a std::string: moving a vector keeps its buffer (no small-string
    // buffer that moves with the object), so the views survive a move of the batch.
    void point_tokens() noexcept {
        const char* base = tokens_.data();
        const std::size_t n = trades_.size();
        for (std::size_t i = 0; i < n; ++i) {
            const std::size_t begin = token_offsets_[i];
            const std::size_t end = i + 1 < n ? token_offsets_[i + 1] : tokens_.size();
            trades_[i].token = std::string_view(base + begin, end - begin);
        }
    }

    /// Drops the last `n` trades and their tokens. Never allocates.
    void drop_last(std::size_t n) noexcept {
        const std::size_t keep = trades_.size() - n;
        if (keep < trades_.size()) {
            tokens_.resize(token_offsets_[keep]);
        }
        trades_.resize(keep);
        token_offsets_.resize(keep);
    }

    std::vector<tradeagg::trade_view> trades_;
    std::vector<std::size_t> token_offsets_;
    std::vector<char> tokens_;
};

} // namespace aggregator
