#pragma once
// Deterministic trade streams for tests: Zipf-distributed tokens, arrival shuffled within a
// bound, a fraction delayed far beyond the allowed lateness.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <tradeagg/tradeagg.hpp>

namespace tradeagg::testing {

struct stream_options {
    std::size_t tokens = 200;
    std::size_t trades = 40'000;
    double zipf_exponent = 1.1;
    /// Starts 700 s before a UTC midnight, so every interval up to 1 d has a boundary inside.
    timestamp_ms start_ms = 1'732'924'800'000 - 700'000;
    double ms_per_trade = 0.7;          ///< below 1: many trades share a millisecond
    timestamp_ms max_jitter_ms = 400;   ///< arrival delay of an ordinary trade
    double late_fraction = 0.01;        ///< share of trades delayed by `late_delay_ms`
    timestamp_ms late_delay_ms = 8'000; ///< beyond every shipped policy's lateness
    std::uint64_t seed = 42;
};

struct stream_trade {
    std::size_t token_index = 0;
    trade t; ///< `t.token` is the token index until interned
};

struct trade_stream {
    std::vector<std::string> names;
    std::vector<stream_trade> arrivals; ///< in arrival order
};

/// Draws ranks 0..n-1 with P(k) proportional to 1/(k+1)^s, by inverse CDF (portable: no
/// standard distribution whose output differs between libraries).
class zipf_sampler {
public:
    zipf_sampler(std::size_t n, double s) : cdf_(n) {
        double total = 0;
        for (std::size_t k = 0; k < n; ++k) {
            total += 1.0 / std::pow(static_cast<double>(k + 1), s);
            cdf_[k] = total;
        }
        for (double& c : cdf_) {
            c /= total;
        }
    }
    template <class Rng>
    std::size_t operator()(Rng& rng) const {
        const double u = static_cast<double>(rng() >> 11) * 0x1.0p-53;
        return static_cast<std::size_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) -
                                        cdf_.begin());
    }

private:
    std::vector<double> cdf_;
};

inline double uniform01(std::mt19937_64& rng) {
    return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

inline trade_stream make_stream(const stream_options& o) {
    std::mt19937_64 rng(o.seed);
    trade_stream s;
    for (std::size_t i = 0; i < o.tokens; ++i) {
        s.names.push_back("TKN" + std::to_string(i));
    }
    const zipf_sampler zipf(o.tokens, o.zipf_exponent);
    std::vector<double> price(o.tokens);
    for (double& p : price) {
        p = 1.0 + 1000.0 * uniform01(rng);
    }
    struct keyed {
        double key;
        std::size_t seq;
        stream_trade st;
    };
    std::vector<keyed> all;
    all.reserve(o.trades);
    for (std::size_t i = 0; i < o.trades; ++i) {
        const std::size_t k = zipf(rng);
        price[k] *= 1.0 + (uniform01(rng) - 0.5) * 0.01;
        const timestamp_ms ts =
            o.start_ms + static_cast<timestamp_ms>(static_cast<double>(i) * o.ms_per_trade);
        trade t;
        t.token = static_cast<token_id>(k);
        t.taker = (rng() & 1) != 0 ? side::buy : side::sell;
        t.price = price[k];
        t.quantity = 0.001 + 10.0 * uniform01(rng);
        t.ts_ms = ts;
        // Ids are unique but not monotonic in time, so (time, id) order is really exercised.
        t.id = 1'000'000 + (i * 7919) % (o.trades * 2 + 1);
        const bool delayed = uniform01(rng) < o.late_fraction;
        const double delay = delayed
                                 ? static_cast<double>(o.late_delay_ms) + 1000.0 * uniform01(rng)
                                 : static_cast<double>(o.max_jitter_ms) * uniform01(rng);
        all.push_back(keyed{static_cast<double>(ts) + delay, i, stream_trade{k, t}});
    }
    std::stable_sort(all.begin(), all.end(),
                     [](const keyed& a, const keyed& b) { return a.key < b.key; });
    for (const keyed& k : all) {
        s.arrivals.push_back(k.st);
    }
    return s;
}

/// What a sink given `s` must hold: a throughput_policy pipeline with a memory sink that took
/// every trade of `s` in arrival order and stopped (read it through `->sink()`).
inline std::unique_ptr<pipeline<throughput_policy, memory_sink>>
reference_run(const trade_stream& s) {
    auto p = std::make_unique<pipeline<throughput_policy, memory_sink>>(runtime_config{});
    p->start();
    for (const stream_trade& a : s.arrivals) {
        (void)p->push(trade_view{s.names[a.token_index], a.t.price, a.t.quantity, a.t.taker,
                                 a.t.ts_ms, a.t.id});
    }
    p->stop();
    return p;
}

} // namespace tradeagg::testing
