#pragma once
// One trade connection to the partition streams in Redis (--streams), through stream_writer.hpp.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <tradeagg/trade.hpp>

#include "../../bench/stream.hpp"
#include "connection_stats.hpp"
#include "diagnostics.hpp"
#include "options.hpp"
#include "pacing.hpp"
#include "run_plan.hpp"
#include "stream_writer.hpp"
#include "trade_feed.hpp"

namespace loadgen {

/// One streams connection: appends batches of the slice [first, first + count) of `s` with
/// XADD until the stop, stamped as the HTTP connections stamp theirs.
inline void run_stream_connection(const run_plan& plan, std::size_t index,
                                  const synthetic::stream& s, std::size_t first, std::size_t count,
                                  const std::vector<std::uint32_t>& delays, connection_stats& stats,
                                  stop_signal& stop) {
    using namespace std::chrono_literals;
    const options& o = plan.opts;
    const std::string who = "stream connection " + std::to_string(index);
    std::unique_ptr<stream_writer> writer;
    std::vector<tradeagg::trade_view> batch;
    batch.reserve(o.batch);
    const double connection_rate = o.rate / static_cast<double>(o.connections);
    steady::time_point next_send = steady::now();
    std::size_t from = 0;
    std::uint64_t pass = 0;
    while (!stop.requested()) {
        if (!writer) {
            try {
                writer =
                    std::make_unique<stream_writer>(plan.redis.host, std::stoi(plan.redis.port),
                                                    o.prefix, o.streams, o.entry_trades);
            } catch (const std::exception& e) {
                connection_stats::add(stats.io_errors, 1);
                report_once(io_error_reported, who + ": " + e.what() + " (retrying)");
                stop.sleep_until(steady::now() + 100ms);
                continue;
            }
        }
        const std::size_t n = std::min(o.batch, count - from);
        if (pace(next_send, n, connection_rate, stop)) {
            break;
        }
        const std::uint64_t generation = plan.first_generation + pass * o.connections + index;
        const std::int64_t now_ms = wall_clock_ms();
        batch.clear();
        for (std::size_t k = from; k < from + n; ++k) {
            const tradeagg::trade& t = s.trades()[first + k];
            batch.push_back(tradeagg::trade_view{s.names()[t.token], t.price, t.quantity, t.taker,
                                                 now_ms - delays[first + k],
                                                 trade_id(generation, k)});
        }
        from += n;
        if (from == count) {
            from = 0;
            ++pass;
        }
        std::string error;
        const steady::time_point sent = steady::now();
        const std::size_t acknowledged = writer->append(batch, error);
        stats.latency.record(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - sent).count()));
        connection_stats::add(stats.requests, 1);
        connection_stats::add(stats.trades_sent, n);
        connection_stats::add(stats.trades_accepted, acknowledged);
        connection_stats::add(stats.status[acknowledged == n ? 200 : 500], 1);
        if (!error.empty()) {
            report_once(io_error_reported, who + ": " + error);
            if (acknowledged < n) {
                connection_stats::add(stats.io_errors, 1);
                writer.reset(); // connect again, and read the slot map again
            }
        }
    }
    stats.finished.store(true, std::memory_order_release);
}

} // namespace loadgen
