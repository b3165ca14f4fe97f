#pragma once

#include <tradeagg/sink.hpp>

namespace tradeagg {

/// Discards every update: for benchmarks, and pipelines read only through `stats()`.
struct null_sink {
    /// Thread-safe. Never allocates, never blocks.
    void consume(const flush_batch&) noexcept {}
};
static_assert(sink<null_sink>);

} // namespace tradeagg
