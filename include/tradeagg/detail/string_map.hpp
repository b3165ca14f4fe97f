#pragma once
// A map (and a set) keyed by token name that is looked up by std::string_view without building a
// string: a transparent hash and equality, so `find(view)` allocates nothing.

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace tradeagg::detail {

struct string_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
        return std::hash<std::string_view>{}(s);
    }
};

template <class Value>
using string_map = std::unordered_map<std::string, Value, string_hash, std::equal_to<>>;

/// A set of token names, looked up by std::string_view the same way.
using string_set = std::unordered_set<std::string, string_hash, std::equal_to<>>;

/// The value of `name`, default-constructed first if absent; allocates only then.
template <class Value>
Value& find_or_add(string_map<Value>& m, std::string_view name) {
    auto it = m.find(name);
    if (it == m.end()) {
        it = m.emplace(std::string(name), Value{}).first;
    }
    return it->second;
}

} // namespace tradeagg::detail
