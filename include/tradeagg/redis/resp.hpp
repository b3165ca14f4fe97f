#pragma once
// A Redis command written in RESP as its arguments come, into one buffer: what a command with
// hundreds of arguments (a token's fenced write, token_write.hpp) is sent as, instead of a
// string per argument and hiredis formatting each again.

#include <charconv>
#include <cstddef>
#include <string>
#include <string_view>

namespace tradeagg::redis::detail {

class resp_builder {
public:
    /// Appends one argument. Allocates as the buffer grows.
    void add(std::string_view arg) {
        append_length('$', arg.size());
        body_.append(arg);
        body_.append("\r\n", 2);
        ++count_;
    }

    /// The command so far in RESP (`*<count>`, then each argument), and starts a new one.
    [[nodiscard]] std::string take() {
        std::string out;
        out.reserve(body_.size() + 24);
        std::swap(out, body_);
        body_.clear();
        std::string head;
        append_length_to(head, '*', count_);
        count_ = 0;
        out.insert(0, head);
        return out;
    }

    /// Arguments added since the last `take`.
    [[nodiscard]] std::size_t count() const noexcept { return count_; }

private:
    void append_length(char kind, std::size_t n) { append_length_to(body_, kind, n); }

    static void append_length_to(std::string& out, char kind, std::size_t n) {
        char text[24];
        text[0] = kind;
        const auto r = std::to_chars(text + 1, text + sizeof text - 2, n);
        char* end = r.ptr;
        *end++ = '\r';
        *end++ = '\n';
        out.append(text, end);
    }

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
