#pragma once
// The umbrella header: everything of the core library (no Redis, no HTTP).

#include <tradeagg/arena.hpp>
#include <tradeagg/candle.hpp>
#include <tradeagg/config.hpp>
#include <tradeagg/ingress.hpp>
#include <tradeagg/interval.hpp>
#include <tradeagg/latency_histogram.hpp>
#include <tradeagg/monitor.hpp>
#include <tradeagg/pipeline.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/process_stats.hpp>
#include <tradeagg/reclaimer.hpp>
#include <tradeagg/rolling_window.hpp>
#include <tradeagg/runtime_config.hpp>
#include <tradeagg/shard.hpp>
#include <tradeagg/sink.hpp>
#include <tradeagg/sink/callback_sink.hpp>
#include <tradeagg/sink/memory_sink.hpp>
#include <tradeagg/sink/null_sink.hpp>
#include <tradeagg/stats.hpp>
#include <tradeagg/token_book.hpp>
#include <tradeagg/token_table.hpp>
#include <tradeagg/trade.hpp>
#include <tradeagg/wait_strategy.hpp>
