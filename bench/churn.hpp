#pragma once
// A token-churn stream for BM_memory_churn: many distinct tokens, each trading a few times in a
// short burst and then never again, as on a launchpad where most new tokens die within seconds.
//
// Shape: `tokens` tokens; token k's burst starts at start_ms + k * span_ms / tokens (so bursts
// advance steadily and the stream spans `span_ms` of event time), and has 2..4 trades at sorted
// random offsets in [0, burst_ms). Bursts of neighbouring tokens overlap; trades are delivered
// in event-time order (ties by token index, then offset) with increasing trade ids. Token names
// are Solana-style mint addresses (44 base58 characters) for every `mint_every`-th token and
// "T" plus six digits ("T000001") for the others.
//
// Memory: only the names are stored (one contiguous buffer plus offsets: about 28 MB for one
// million tokens with half of them mints). The trades are generated on the fly by
// `for_each_trade`, a few nanoseconds each (a splitmix64 per token and a heap of the few bursts
// that overlap), so a run's resident set is not inflated by a pre-built trade vector.
//
// Deterministic for a given config on any platform: only splitmix64 and integer arithmetic
// choose the values; prices are built with +, * and / only.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <queue>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <tradeagg/trade.hpp>

namespace churn {

/// What to generate. The defaults are BM_memory_churn's stream.
struct churn_config {
    std::size_t tokens = 1'000'000;
    tradeagg::timestamp_ms start_ms = 1'730'419'200'000;  ///< 2024-11-01T00:00:00Z
    std::int64_t span_ms = std::int64_t{30} * 86'400'000; ///< 30 days of event time
    std::int64_t burst_ms = 3'000;                        ///< a token's trades fall within this
    unsigned min_trades = 2;
    unsigned max_trades = 4;
    std::size_t mint_every = 2; ///< tokens k with k % mint_every == 0 get a mint address
    std::uint64_t seed = 0x6368'7572'6e00'0001;
};

/// splitmix64: one 64-bit state, a full-period, well-mixed sequence. Specified exactly, so the
/// stream is the same with every standard library.
class splitmix64 {
public:
    explicit splitmix64(std::uint64_t seed) noexcept : state_(seed) {}
    std::uint64_t operator()() noexcept {
        std::uint64_t z = (state_ += 0x9e37'79b9'7f4a'7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58'476d'1ce4'e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d0'49bb'1331'11ebull;
        return z ^ (z >> 31);
    }
    /// A uniform double in [0, 1) from the top 53 bits of one draw.
    double uniform01() noexcept { return static_cast<double>((*this)() >> 11) * 0x1.0p-53; }

private:
    std::uint64_t state_;
};

/// The token names and the recipe for the trades.
class stream {
public:
    /// Builds the names (allocates about 28 MB for the defaults). Throws std::invalid_argument
    /// on an unusable config.
    explicit stream(const churn_config& cfg) : cfg_(cfg) {
        if (cfg.tokens == 0 || cfg.tokens > 1'000'000 || cfg.span_ms <= 0 || cfg.burst_ms <= 0 ||
            cfg.min_trades == 0 || cfg.max_trades < cfg.min_trades || cfg.mint_every == 0) {
            throw std::invalid_argument("churn::stream: bad config (tokens 1..1,000,000, "
                                        "positive spans, 1 <= min_trades <= max_trades)");
        }
        make_names();
        for (std::size_t k = 0; k < cfg.tokens; ++k) {
            trades_ += trade_count(k);
        }
    }

    [[nodiscard]] const churn_config& config() const noexcept { return cfg_; }
    [[nodiscard]] std::size_t tokens() const noexcept { return cfg_.tokens; }
    /// Trades `for_each_trade` delivers.
    [[nodiscard]] std::size_t trades() const noexcept { return trades_; }
    /// Token k's name.
    [[nodiscard]] std::string_view name(std::size_t k) const noexcept {
        return {chars_.data() + offsets_[k], offsets_[k + 1] - offsets_[k]};
    }
    /// Bytes held for the names.
    [[nodiscard]] std::size_t name_bytes() const noexcept {
        return chars_.capacity() + offsets_.capacity() * sizeof(std::uint32_t);
    }
    /// Start of token k's burst.
    [[nodiscard]] tradeagg::timestamp_ms burst_start(std::size_t k) const noexcept {
        return cfg_.start_ms +
               static_cast<std::int64_t>(k) * cfg_.span_ms / static_cast<std::int64_t>(cfg_.tokens);
    }
    /// Event time of the last trade.
    [[nodiscard]] tradeagg::timestamp_ms last_ms() const noexcept {
        return burst_start(cfg_.tokens - 1) + cfg_.burst_ms - 1;
    }

    /// Calls `f(const tradeagg::trade_view&)` for every trade, in event-time order. The view's
    /// token points into this stream's names. Allocates only the small heap of pending trades.
    template <class F>
    void for_each_trade(F&& f) const {
        std::priority_queue<pending, std::vector<pending>, later> heap;
        std::uint64_t id = 1;
        const auto emit_before = [&](tradeagg::timestamp_ms limit) {
            while (!heap.empty() && heap.top().ts_ms < limit) {
                const pending& p = heap.top();
                f(tradeagg::trade_view{.token = name(p.token),
                                       .price = p.price,
                                       .quantity = p.quantity,
                                       .taker = p.taker,
                                       .ts_ms = p.ts_ms,
                                       .id = id++});
                heap.pop();
            }
        };
        for (std::size_t k = 0; k < cfg_.tokens; ++k) {
            const tradeagg::timestamp_ms start = burst_start(k);
            emit_before(start); // every later trade is at or after `start`
            splitmix64 rng = token_rng(k);
            const unsigned n = draw_count(rng);
            std::array<std::int64_t, 16> offsets{};
            for (unsigned i = 0; i < n; ++i) {
                offsets[i] =
                    static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(cfg_.burst_ms));
            }
            std::sort(offsets.begin(), offsets.begin() + n);
            // Starting price: a random decade in 1e-6 .. 1e3 times a mantissa in [1, 10).
            static constexpr std::array<double, 10> decades{1e-6, 1e-5, 1e-4, 1e-3, 1e-2,
                                                            1e-1, 1e0,  1e1,  1e2,  1e3};
            double price = decades[rng() % decades.size()] * (1.0 + 9.0 * rng.uniform01());
            for (unsigned i = 0; i < n; ++i) {
                price *= 1.0 + 0.01 * (rng.uniform01() - 0.5); // steps of at most 0.5 %
                const double notional = 10.0 * (1.0 + 999.0 * rng.uniform01()); // 10 .. 10,000
                heap.push(pending{start + offsets[i], static_cast<std::uint32_t>(k), i, price,
                                  notional / price,
                                  (rng() & 1) != 0 ? tradeagg::side::buy : tradeagg::side::sell});
            }
        }
        emit_before(std::numeric_limits<tradeagg::timestamp_ms>::max());
    }

private:
    struct pending {
        tradeagg::timestamp_ms ts_ms;
        std::uint32_t token;
        unsigned seq; ///< within the token's burst
        double price;
        double quantity;
        tradeagg::side taker;
    };
    /// Min-heap order: earliest first, then by token, then by position in the burst.
    struct later {
        bool operator()(const pending& a, const pending& b) const noexcept {
            if (a.ts_ms != b.ts_ms) {
                return a.ts_ms > b.ts_ms;
            }
            if (a.token != b.token) {
                return a.token > b.token;
            }
            return a.seq > b.seq;
        }
    };

    [[nodiscard]] splitmix64 token_rng(std::size_t k) const noexcept {
        return splitmix64(cfg_.seed ^ (static_cast<std::uint64_t>(k) * 0xd1b5'4a32'd192'ed03ull));
    }
    unsigned draw_count(splitmix64& rng) const noexcept {
        const unsigned span = std::min(cfg_.max_trades, 16U) - cfg_.min_trades + 1;
        return cfg_.min_trades + static_cast<unsigned>(rng() % span);
    }
    [[nodiscard]] unsigned trade_count(std::size_t k) const noexcept {
        splitmix64 rng = token_rng(k);
        return draw_count(rng);
    }

    void make_names() {
        static constexpr std::string_view base58 =
            "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
        splitmix64 rng(cfg_.seed ^ 0x6e61'6d65'7300'0000ull); // "names"
        const std::size_t mints = (cfg_.tokens + cfg_.mint_every - 1) / cfg_.mint_every;
        chars_.reserve(mints * 44 + (cfg_.tokens - mints) * 7);
        offsets_.reserve(cfg_.tokens + 1);
        offsets_.push_back(0);
        for (std::size_t k = 0; k < cfg_.tokens; ++k) {
            if (k % cfg_.mint_every == 0) {
                for (int i = 0; i < 44; ++i) {
                    chars_.push_back(base58[rng() % base58.size()]);
                }
            } else {
                const std::string digits = std::to_string(k);
                chars_.push_back('T');
                chars_.append(6 - std::min<std::size_t>(6, digits.size()), '0');
                chars_.append(digits);
            }
            offsets_.push_back(static_cast<std::uint32_t>(chars_.size()));
        }
    }

    churn_config cfg_;
    std::string chars_;
    std::vector<std::uint32_t> offsets_;
    std::size_t trades_ = 0;
};

} // namespace churn
