#pragma once
// Build-wide configuration: the language guard and constants every other header relies on.

#if defined(_MSVC_LANG)
#define TRADEAGG_CPLUSPLUS _MSVC_LANG
#else
#define TRADEAGG_CPLUSPLUS __cplusplus
#endif

// Meson cannot pass a language standard through a dependency, so a consumer built with an
// older default standard gets this message instead of pages of concept errors.
#if TRADEAGG_CPLUSPLUS < 202002L
#error "tradeagg requires C++20 (compile with -std=c++20 or later)"
#endif

#include <cstddef>

#define TRADEAGG_VERSION_MAJOR 0
#define TRADEAGG_VERSION_MINOR 1
#define TRADEAGG_VERSION_PATCH 0

// std::hardware_destructive_interference_size is deliberately not used: GCC 12 warns about it
// (-Winterference-size) in every translation unit that names it, which breaks -Werror builds.
#ifndef TRADEAGG_CACHE_LINE_SIZE
#define TRADEAGG_CACHE_LINE_SIZE 64
#endif

namespace tradeagg {

/// Alignment used to keep data written by different threads on different cache lines.
inline constexpr std::size_t cache_line_size = TRADEAGG_CACHE_LINE_SIZE;

static_assert((cache_line_size & (cache_line_size - 1)) == 0,
              "TRADEAGG_CACHE_LINE_SIZE must be a power of two");

} // namespace tradeagg
