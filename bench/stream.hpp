#pragma once
// A deterministic synthetic trade stream, shared by the benchmark and the quickstart example so
// that both measure the same workload.
//
// Shape: `tokens` tokens whose popularity follows Zipf's law (token i has rank i + 1, so token
// 0 is the hottest), per-token prices that random-walk, taker sides 50/50, event time advancing
// about 1 ms per 10 trades with a jitter of a few milliseconds either way (far inside every
// shipped policy's allowed lateness, so no trade is ever late), trade ids increasing.
//
// Portability: the same seed gives the same stream with any standard library. Only
// std::mt19937_64 (whose output the standard specifies) is used for randomness; no
// std::*_distribution (whose output is implementation-defined), and the Zipf sampler is an
// explicit CDF searched by binary search.

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <tradeagg/token_table.hpp>
#include <tradeagg/trade.hpp>

namespace synthetic {

/// What to generate. The defaults are the benchmark's stream.
struct stream_config {
    std::size_t trades = 1'048'576;
    std::size_t tokens = 10'000;
    double zipf_s = 1.0; ///< Zipf exponent: P(rank k) is proportional to 1 / k^s
    std::uint64_t seed = 0x7472'6164'6561'6767;          // "tradeagg"
    tradeagg::timestamp_ms start_ms = 1'732'867'200'000; ///< 2024-11-29T08:00:00Z
    std::size_t trades_per_ms = 10;
    std::uint64_t first_id = 1;
};

/// A token that Zipf's law makes hot must not be starved by a sampler with too little
/// resolution: draws are 53-bit uniforms, searched in the cumulative weights.
class zipf_sampler {
public:
    /// Ranks 0..n-1 with P(k) proportional to 1 / (k + 1)^s. Allocates n doubles.
    zipf_sampler(std::size_t n, double s) : cdf_(n) {
        double total = 0.0;
        for (std::size_t k = 0; k < n; ++k) {
            const double rank = static_cast<double>(k + 1);
            // 1 / k is correctly rounded everywhere; std::pow need not be, so s == 1 avoids it.
            total += s == 1.0 ? 1.0 / rank : std::pow(rank, -s);
            cdf_[k] = total;
        }
        for (double& c : cdf_) {
            c /= total;
        }
        if (!cdf_.empty()) {
            cdf_.back() = 1.0; // a draw just below 1 must not fall off the end after rounding
        }
    }

    /// A rank in 0..n-1, rank 0 the most likely.
    std::size_t operator()(std::mt19937_64& rng) const {
        const double u = uniform01(rng);
        const auto it = std::upper_bound(cdf_.begin(), cdf_.end(), u);
        return static_cast<std::size_t>(std::min(it, cdf_.end() - 1) - cdf_.begin());
    }

    /// A uniform double in [0, 1) from the top 53 bits of one draw.
    static double uniform01(std::mt19937_64& rng) {
        return static_cast<double>(rng() >> 11) * 0x1.0p-53;
    }

private:
    std::vector<double> cdf_;
};

/// The generated stream: token names (index = token id once interned) and the trades, in
/// arrival order, whose `token` field is the index into `names()`.
class stream {
public:
    /// Jitter of event time around the stream's clock: at most 2 * max_jitter_ms backwards
    /// between any two trades of a token, far inside every shipped policy's lateness (>= 1 s).
    static constexpr tradeagg::timestamp_ms max_jitter_ms = 16;
    static_assert(2 * max_jitter_ms < 500);

    /// Every this many tokens, one (at index 2, 1002, 2002, ...) gets a Solana-style mint address.
    static constexpr std::size_t mint_every = 1'000;

    /// Generates the whole stream. Allocates; deterministic for a given config.
    explicit stream(const stream_config& cfg) : cfg_(cfg) {
        if (cfg.tokens == 0) {
            throw std::invalid_argument("synthetic::stream: tokens must be at least 1");
        }
        if (cfg.trades_per_ms == 0) {
            throw std::invalid_argument("synthetic::stream: trades_per_ms must be at least 1");
        }
        make_names();
        make_trades();
    }

    /// The configuration the stream was generated from.
    [[nodiscard]] const stream_config& config() const noexcept { return cfg_; }

    /// Token names; `names()[i]` becomes token id i once interned by `intern_into`.
    [[nodiscard]] const std::vector<std::string>& names() const noexcept { return names_; }

    /// The trades in arrival order; `trades()[k].token` indexes `names()`.
    [[nodiscard]] const std::vector<tradeagg::trade>& trades() const noexcept { return trades_; }

    /// Interns every name, in index order, into an empty `tradeagg::token_table` or
    /// `tradeagg::pipeline` (anything with `intern(std::string_view)`), and returns the trades,
    /// whose token ids are then valid for it. Throws std::runtime_error if a name is refused or
    /// does not get the id equal to its index (the table was not empty).
    template <class Interner>
    requires requires(Interner& in, std::string_view s) {
        { in.intern(s) } -> std::same_as<tradeagg::token_table::intern_result>;
    }
    const std::vector<tradeagg::trade>& intern_into(Interner& into) const {
        for (std::size_t i = 0; i < names_.size(); ++i) {
            const tradeagg::token_table::intern_result r = into.intern(names_[i]);
            if (r.reason != tradeagg::reject_reason::none) {
                throw std::runtime_error("synthetic::stream: interning " + names_[i] +
                                         " failed: " + std::string(tradeagg::to_string(r.reason)));
            }
            if (r.id != i) {
                throw std::runtime_error("synthetic::stream: " + names_[i] + " got id " +
                                         std::to_string(r.id) + ", expected " + std::to_string(i) +
                                         " (intern into an empty table)");
            }
        }
        return trades_;
    }

private:
    void make_names() {
        // A separate generator, so that names do not depend on how many trades are drawn.
        std::mt19937_64 rng(cfg_.seed ^ 0x6e61'6d65'7300'0000); // "names"
        static constexpr std::string_view base58 =
            "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
        std::size_t width = 5; // "TKN00042"; wider when there are more tokens
        for (std::size_t n = cfg_.tokens - 1; n >= 100'000; n /= 10) {
            ++width;
        }
        names_.reserve(cfg_.tokens);
        for (std::size_t i = 0; i < cfg_.tokens; ++i) {
            if (i % mint_every == 2) {
                std::string mint(44, '1');
                for (char& c : mint) {
                    c = base58[static_cast<std::size_t>(rng() % base58.size())];
                }
                names_.push_back(std::move(mint));
            } else {
                const std::string digits = std::to_string(i);
                names_.push_back("TKN" + std::string(width - std::min(width, digits.size()), '0') +
                                 digits);
            }
        }
    }

    void make_trades() {
        std::mt19937_64 rng(cfg_.seed);
        const zipf_sampler zipf(cfg_.tokens, cfg_.zipf_s);
        const auto uniform = [&rng] { return zipf_sampler::uniform01(rng); };

        // Starting prices spread over 1e-6 .. 1e4, as memecoins and majors do: a random decade
        // times a mantissa in [1, 10). Only +, * and / (correctly rounded everywhere) touch the
        // doubles, never std::pow or std::exp, whose last bit may differ between libraries.
        static constexpr std::array<double, 10> decades{1e-6, 1e-5, 1e-4, 1e-3, 1e-2,
                                                        1e-1, 1e0,  1e1,  1e2,  1e3};
        const auto log_spread = [&](std::size_t first, std::size_t count) {
            const double decade = decades[first + static_cast<std::size_t>(rng() % count)];
            return decade * (1.0 + 9.0 * uniform());
        };
        std::vector<double> price(cfg_.tokens);
        for (double& p : price) {
            p = log_spread(0, decades.size());
        }

        trades_.resize(cfg_.trades);
        const auto per_ms = static_cast<tradeagg::timestamp_ms>(cfg_.trades_per_ms);
        for (std::size_t k = 0; k < cfg_.trades; ++k) {
            const std::size_t token = zipf(rng);
            // A multiplicative step of at most 0.02 %: the price stays positive and finite.
            price[token] *= 1.0 + 0.0004 * (uniform() - 0.5);
            // Notional of 10 .. 10,000 quote units; quantity follows from the price.
            const double quantity = log_spread(7, 3) / price[token];
            // One draw: bit 0 picks the side, the rest the jitter.
            const std::uint64_t bits = rng();
            const auto jitter_span = static_cast<std::uint64_t>(2 * max_jitter_ms + 1);
            const auto jitter =
                static_cast<tradeagg::timestamp_ms>((bits >> 1) % jitter_span) - max_jitter_ms;
            const tradeagg::timestamp_ms clock =
                cfg_.start_ms + static_cast<tradeagg::timestamp_ms>(k) / per_ms;

            tradeagg::trade& t = trades_[k];
            t.token = static_cast<tradeagg::token_id>(token);
            t.taker = (bits & 1) != 0 ? tradeagg::side::buy : tradeagg::side::sell;
            t.price = price[token];
            t.quantity = quantity;
            t.ts_ms = std::max(cfg_.start_ms, clock + jitter);
            t.id = cfg_.first_id + k;
        }
    }

    stream_config cfg_;
    std::vector<std::string> names_;
    std::vector<tradeagg::trade> trades_;
};

} // namespace synthetic
