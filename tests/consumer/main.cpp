// Builds against an installed, exported or embedded tradeagg exactly as a user would: the
// umbrella header, one policy, one sink, one trade. Exit status 0 means the trade reached the
// sink.
#include <tradeagg/tradeagg.hpp>

int main() {
    tradeagg::pipeline<tradeagg::throughput_policy, tradeagg::memory_sink> p{
        tradeagg::runtime_config{}};
    p.start();
    const auto reason = p.push(tradeagg::trade_view{.token = "SOL",
                                                    .price = 1.0,
                                                    .quantity = 2.0,
                                                    .taker = tradeagg::side::buy,
                                                    .ts_ms = 1000,
                                                    .id = 1});
    p.stop();
    if (reason != tradeagg::reject_reason::none) {
        return 1;
    }
    return p.sink().candle_count() > 0 ? 0 : 2;
}
