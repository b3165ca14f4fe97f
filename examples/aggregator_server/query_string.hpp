#pragma once
// A request target's query string (`?a=1&b=x%20y`), decoded: what the Binance-compatible
// endpoints read their parameters from.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace aggregator {

/// The parameters of a query string, percent-decoded ('+' is a space, as forms send it). A
/// parameter given twice keeps its first value; a malformed escape makes the whole query
/// malformed (`valid()` false), never a guess.
class query_string {
public:
    /// Parses the part of `target` after its first '?' (none: no parameters). Allocates.
    explicit query_string(std::string_view target) {
        const std::size_t q = target.find('?');
        if (q == std::string_view::npos) {
            return;
        }
        std::string_view rest = target.substr(q + 1);
        while (!rest.empty() && valid_) {
            const std::size_t amp = rest.find('&');
            const std::string_view pair = rest.substr(0, amp);
            rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
            if (pair.empty()) {
                continue;
            }
            const std::size_t eq = pair.find('=');
            auto name = decode(pair.substr(0, eq));
            auto value =
                decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
            if (!name || !value) {
                valid_ = false;
                break;
            }
            if (!get(*name)) {
                params_.emplace_back(std::move(*name), std::move(*value));
            }
        }
    }

    /// False if an escape was malformed (`%` not followed by two hex digits).
    [[nodiscard]] bool valid() const noexcept { return valid_; }

    /// A parameter's decoded value; nothing if it was not sent.
    [[nodiscard]] std::optional<std::string_view> get(std::string_view name) const {
        for (const auto& [n, v] : params_) {
            if (n == name) {
                return std::string_view(v);
            }
        }
        return std::nullopt;
    }

private:
    static std::optional<std::string> decode(std::string_view in) {
        std::string out;
        out.reserve(in.size());
        for (std::size_t i = 0; i < in.size(); ++i) {
            if (in[i] == '+') {
                out.push_back(' ');
            } else if (in[i] != '%') {
                out.push_back(in[i]);
            } else {
                const int hi = i + 2 < in.size() ? hex(in[i + 1]) : -1;
                const int lo = i + 2 < in.size() ? hex(in[i + 2]) : -1;
                if (hi < 0 || lo < 0) {
                    return std::nullopt;
                }
                out.push_back(static_cast<char>(hi * 16 + lo));
                i += 2;
            }
        }
        return out;
    }

    static int hex(char c) noexcept {
        if (c >= '0' && c <= '9') {
            return c - '0';
        }
        if (c >= 'a' && c <= 'f') {
            return c - 'a' + 10;
        }
        if (c >= 'A' && c <= 'F') {
            return c - 'A' + 10;
        }
        return -1;
    }

    std::vector<std::pair<std::string, std::string>> params_;
    bool valid_ = true;
};

} // namespace aggregator
