#pragma once
// Field-by-field comparison of a memory_sink against the reference model, collecting
// mismatches as text so one failing run explains itself.

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <tradeagg/tradeagg.hpp>

#include "reference_model.hpp"

namespace tradeagg::testing {

inline bool close_enough(double a, double b, double rel = 1e-9) {
    return std::fabs(a - b) <= rel * std::max(std::fabs(a), std::fabs(b)) + 1e-300;
}

/// Late trades per token, as `runtime_config::on_late_trade` reported them.
using late_counts = std::map<std::string, std::uint64_t, std::less<>>;

struct mismatch_log {
    std::size_t count = 0;
    std::vector<std::string> first;
    void add(const std::string& what) {
        if (first.size() < 10) {
            first.push_back(what);
        }
        ++count;
    }
    [[nodiscard]] std::string text() const {
        std::string out;
        for (const auto& s : first) {
            out += s + "\n";
        }
        return out;
    }
};

template <class Policy>
mismatch_log compare_with_reference(const memory_sink& sink, const reference_model<Policy>& ref,
                                    const late_counts* late_by_token = nullptr) {
    mismatch_log log;
    for (const auto& [name, data] : ref.tokens()) {
        for (const interval width : Policy::intervals) {
            const std::string where = name + " " + std::string(interval_name(width).view());
            const std::vector<candle> want = ref.candles(name, width);
            const std::vector<candle> got = sink.candles(name, width);
            if (want.size() != got.size()) {
                log.add(where + ": " + std::to_string(got.size()) + " candles, want " +
                        std::to_string(want.size()));
                continue;
            }
            for (std::size_t i = 0; i < want.size(); ++i) {
                const candle& w = want[i];
                const candle& g = got[i];
                std::ostringstream at;
                at << where << " @" << w.open_time << ": ";
                const auto exact = [&](const char* f, auto a, auto b) {
                    if (a != b) {
                        std::ostringstream m;
                        m << at.str() << f << " = " << a << ", want " << b;
                        log.add(m.str());
                    }
                };
                const auto approx = [&](const char* f, double a, double b) {
                    if (!close_enough(a, b)) {
                        std::ostringstream m;
                        m.precision(17);
                        m << at.str() << f << " = " << a << ", want " << b;
                        log.add(m.str());
                    }
                };
                exact("open_time", g.open_time, w.open_time);
                exact("close_time", g.close_time, w.close_time);
                exact("open", g.open, w.open);
                exact("high", g.high, w.high);
                exact("low", g.low, w.low);
                exact("close", g.close, w.close);
                exact("trades", g.trades, w.trades);
                exact("first_trade_id", g.first_trade_id, w.first_trade_id);
                exact("last_trade_id", g.last_trade_id, w.last_trade_id);
                exact("closed", g.closed, w.closed);
                approx("volume", g.volume, w.volume);
                approx("quote_volume", g.quote_volume, w.quote_volume);
                approx("taker_buy_volume", g.taker_buy_volume, w.taker_buy_volume);
                approx("taker_buy_quote_volume", g.taker_buy_quote_volume,
                       w.taker_buy_quote_volume);
                approx("vwap", g.vwap(), w.vwap());
            }
        }
        const auto rolling = sink.rolling(name);
        if (!rolling) {
            log.add(name + ": no rolling statistics");
            continue;
        }
        const rolling_stats want = ref.rolling(name);
        const rolling_stats& got = *rolling;
        if (got.window_start != want.window_start || got.window_end != want.window_end ||
            got.open != want.open || got.high != want.high || got.low != want.low ||
            got.last != want.last || got.trades != want.trades ||
            !close_enough(got.volume, want.volume) ||
            !close_enough(got.quote_volume, want.quote_volume) ||
            !close_enough(got.vwap, want.vwap) ||
            !close_enough(got.price_change, want.price_change, 1e-6) ||
            !close_enough(got.price_change_percent, want.price_change_percent, 1e-6)) {
            std::ostringstream m;
            m.precision(17);
            m << name << ": rolling differs: trades " << got.trades << "/" << want.trades
              << " open " << got.open << "/" << want.open << " last " << got.last << "/"
              << want.last << " volume " << got.volume << "/" << want.volume << " window "
              << got.window_start << "/" << want.window_start;
            log.add(m.str());
        }
        const latest_trade lw = ref.latest(name);
        const auto lg = sink.latest(name);
        if (!lg || lg->id != lw.id || lg->ts_ms != lw.ts_ms || lg->price != lw.price ||
            lg->quantity != lw.quantity || lg->taker != lw.taker) {
            log.add(name + ": latest trade differs");
        }
        if (late_by_token != nullptr) {
            const auto it = late_by_token->find(name);
            const std::uint64_t got_late = it == late_by_token->end() ? 0 : it->second;
            if (got_late != data.late) {
                log.add(name + ": late " + std::to_string(got_late) + ", want " +
                        std::to_string(data.late));
            }
        }
    }
    return log;
}

} // namespace tradeagg::testing
