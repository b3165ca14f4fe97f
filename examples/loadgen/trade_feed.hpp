#pragma once
// The trades a run sends: one synthetic stream (bench/stream.hpp: Zipf-popular tokens,
// random-walk prices), generated once at start and cut into one slice per connection, each
// trade's out-of-order delay, and the time and id it is stamped with as it is sent.
//
// Ids. A trade's id is 18 digits: "1", a 10-digit generation, then its 7-digit position in the
// pool. The generation is (run start in seconds mod 10^4) * 10^5 + pass * connections +
// connection, so every request of a connection carries larger ids than the one before, ids of
// different connections never meet, and two runs started at different seconds do not reuse ids
// unless one of them cycles its pool 10^5 times (hours at a million trades per second).

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "../../bench/stream.hpp"
#include "options.hpp"

namespace loadgen {

/// About this many trades per connection are pre-rendered (some 15 MB of bodies).
inline constexpr std::size_t pool_target_trades = 131'072;

/// The trades of each connection's slice of the stream, its pool.
inline std::size_t trades_per_connection(const options& o) {
    // Whole batches, at least two per connection so that consecutive requests differ.
    const std::size_t batches =
        std::clamp<std::size_t>(pool_target_trades / o.batch, 2, pool_target_trades);
    return batches * o.batch;
}

/// The market of a run: `pool_trades` trades for each connection, over --tokens tokens of
/// --zipf popularity, from --seed.
inline synthetic::stream_config market_config(const options& o, std::size_t pool_trades) {
    synthetic::stream_config cfg;
    cfg.trades = pool_trades * o.connections;
    cfg.tokens = o.tokens;
    cfg.zipf_s = o.zipf;
    cfg.seed = o.seed;
    return cfg;
}

/// The out-of-order delay in ms of each of `trades` trades: 1..--max-delay-ms for a fraction
/// --out-of-order of them, 0 for the others.
inline std::vector<std::uint32_t> out_of_order_delays(const options& o, std::size_t trades) {
    std::vector<std::uint32_t> delays(trades, 0);
    if (o.out_of_order > 0 && o.max_delay_ms > 0) {
        std::mt19937_64 rng(o.seed ^ 0x6c61'7465'0000'0000); // "late"
        for (std::uint32_t& d : delays) {
            if (synthetic::zipf_sampler::uniform01(rng) < o.out_of_order) {
                d = static_cast<std::uint32_t>(1 + rng() % o.max_delay_ms);
            }
        }
    }
    return delays;
}

/// The id of trade `position` of a pool in `generation` (see "Ids" above).
inline std::uint64_t trade_id(std::uint64_t generation, std::size_t position) noexcept {
    return 100'000'000'000'000'000ull + (generation % 10'000'000'000ull) * 10'000'000ull + position;
}

/// The wall clock in ms since the epoch, which a trade's `ts` is stamped from.
inline std::int64_t wall_clock_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

} // namespace loadgen
