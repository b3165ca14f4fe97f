#pragma once

#include <functional>
#include <utility>

#include <tradeagg/sink.hpp>

namespace tradeagg {

/// Calls a user function with each flush batch, on the shard's worker thread (concurrently
/// from different shards: the function must be thread-safe if there are several).
class callback_sink {
public:
    using function = std::function<void(const flush_batch&)>;

    callback_sink() = default;
    explicit callback_sink(function f) : f_(std::move(f)) {}

    /// Calls the function, if any. Blocks and allocates as the function does.
    void consume(const flush_batch& batch) {
        if (f_) {
            f_(batch);
        }
    }

private:
    function f_;
};
static_assert(sink<callback_sink>);

} // namespace tradeagg
