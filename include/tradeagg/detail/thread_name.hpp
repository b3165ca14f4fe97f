#pragma once

#include <cstddef>
#include <string_view>

#include <pthread.h>

namespace tradeagg::detail {

/// Names the calling thread as `top -H`, `ps -L`, perf and debuggers show it. Linux keeps 15
/// characters; a longer name is cut. Best effort: a failure changes nothing else.
inline void name_this_thread(std::string_view name) noexcept {
    char buf[16];
    const std::size_t n = name.size() < sizeof buf - 1 ? name.size() : sizeof buf - 1;
    for (std::size_t i = 0; i < n; ++i) {
        buf[i] = name[i];
    }
    buf[n] = '\0';
    (void)pthread_setname_np(pthread_self(), buf);
}

} // namespace tradeagg::detail
