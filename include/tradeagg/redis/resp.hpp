#pragma once
// A Redis command written in RESP as its arguments come, into one buffer: what a command with
// hundreds of arguments (a token's fenced write, token_write.hpp) is sent as, instead of a
// string per argument and hiredis formatting each again.

#include <charconv>
#include <cstddef>
#include <string>
#include <string_view>

namespace tradeagg::redis::detail {

/// Appends `arg` to `out` as one RESP bulk string (`$<length>`, the bytes).
inline void append_resp_argument(std::string& out, std::string_view arg) {
    char text[24];
    text[0] = '$';
    const auto r = std::to_chars(text + 1, text + sizeof text - 2, arg.size());
    char* end = r.ptr;
    *end++ = '\r';
    *end++ = '\n';
    out.append(text, end);
    out.append(arg);
    out.append("\r\n", 2);
}

class resp_builder {
public:
    /// Appends one argument. Allocates as the buffer grows.
    void add(std::string_view arg) {
        append_resp_argument(body_, arg);
        ++count_;
    }

    /// The command so far in RESP (`*<count>`, then each argument), and starts a new one; the
    /// buffer keeps its capacity for the next.
    [[nodiscard]] std::string take() {
        std::string out;
        out.reserve(body_.size() + 24);
        out.push_back('*');
        out.append(std::to_string(count_));
        out.append("\r\n", 2);
        out.append(body_);
        body_.clear();
        count_ = 0;
        return out;
    }

    /// Arguments added since the last `take`.
    [[nodiscard]] std::size_t count() const noexcept { return count_; }

private:
    std::string body_;
    std::size_t count_ = 0;
};

/// Where the arguments after the first two begin in a command in RESP (as `resp_builder`
/// writes it): the part an EVALSHA shares with the EVAL of the same script. npos if the text
/// is not such a command.
[[nodiscard]] inline std::size_t resp_after_two_arguments(std::string_view resp) noexcept {
    std::size_t at = resp.find("\r\n");
    for (int arg = 0; arg < 2 && at != std::string_view::npos; ++arg) {
        at += 2;
        if (at >= resp.size() || resp[at] != '$') {
            return std::string_view::npos;
        }
        const std::size_t line_end = resp.find("\r\n", at);
        if (line_end == std::string_view::npos) {
            return std::string_view::npos;
        }
        std::size_t n = 0;
        const auto r = std::from_chars(resp.data() + at + 1, resp.data() + line_end, n);
        if (r.ptr != resp.data() + line_end || line_end + 2 + n + 2 > resp.size()) {
            return std::string_view::npos;
        }
        at = line_end + 2 + n;
    }
    return at == std::string_view::npos ? at : at + 2;
}

} // namespace tradeagg::redis::detail
