#pragma once
// Fixed-width little-endian encoding of integers, doubles and strings, for state that leaves the
// process and must read back bit for bit (shard snapshots, partition checkpoints). The reader
// checks every length against what is left: truncated or corrupt input is a `snapshot_error`,
// never a read past the end.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

namespace tradeagg {

/// Encoded state that cannot be read back: truncated, corrupt, or from another layout.
struct snapshot_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

namespace detail {

/// Appends encoded values to a string. Allocates as the string grows.
class byte_writer {
public:
    explicit byte_writer(std::string& out) noexcept : out_(out) {}

    void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
    void u32(std::uint32_t v) { put(v); }
    void u64(std::uint64_t v) { put(v); }
    void i64(std::int64_t v) { put(static_cast<std::uint64_t>(v)); }
    void f64(double v) { put(std::bit_cast<std::uint64_t>(v)); }
    void boolean(bool v) { u8(v ? 1 : 0); }
    /// A length (u32) and the bytes.
    void text(std::string_view s) {
        if (s.size() > UINT32_MAX) {
            throw std::length_error("byte_writer: a string over 4 GiB");
        }
        u32(static_cast<std::uint32_t>(s.size()));
        out_.append(s);
    }

    /// Bytes written so far (of the whole string).
    [[nodiscard]] std::size_t size() const noexcept { return out_.size(); }
    /// Overwrites the u32 at `at` (written before as a placeholder).
    void patch_u32(std::size_t at, std::uint32_t v) noexcept {
        for (int i = 0; i < 4; ++i) {
            out_[at + static_cast<std::size_t>(i)] = static_cast<char>((v >> (8 * i)) & 0xff);
        }
    }

private:
    template <class U>
    void put(U v) {
        char b[sizeof(U)];
        for (std::size_t i = 0; i < sizeof(U); ++i) {
            b[i] = static_cast<char>((v >> (8 * i)) & 0xff);
        }
        out_.append(b, sizeof(U));
    }

    std::string& out_;
};

/// Reads what a `byte_writer` wrote. Every read throws `snapshot_error` if the input ends
/// first. Never allocates (but for the error).
class byte_reader {
public:
    explicit byte_reader(std::string_view in) noexcept : in_(in) {}

    std::uint8_t u8() { return static_cast<std::uint8_t>(take(1)[0]); }
    std::uint32_t u32() { return get<std::uint32_t>(); }
    std::uint64_t u64() { return get<std::uint64_t>(); }
    std::int64_t i64() { return static_cast<std::int64_t>(get<std::uint64_t>()); }
    double f64() { return std::bit_cast<double>(get<std::uint64_t>()); }
    bool boolean() {
        const std::uint8_t v = u8();
        if (v > 1) {
            fail("a flag that is neither 0 nor 1");
        }
        return v == 1;
    }
    /// A string as `byte_writer::text` wrote it; a view into the input.
    std::string_view text() {
        const std::uint32_t n = u32();
        return take(n);
    }
    /// The next `n` bytes, as a view into the input.
    std::string_view take(std::size_t n) {
        if (n > in_.size() - pos_) {
            fail("truncated: " + std::to_string(n) + " bytes wanted, " +
                 std::to_string(in_.size() - pos_) + " left");
        }
        const std::string_view s = in_.substr(pos_, n);
        pos_ += n;
        return s;
    }

    [[nodiscard]] std::size_t position() const noexcept { return pos_; }
    [[nodiscard]] std::size_t left() const noexcept { return in_.size() - pos_; }

    /// Throws `snapshot_error` naming the byte offset reached.
    [[noreturn]] void fail(const std::string& why) const {
        throw snapshot_error("at byte " + std::to_string(pos_) + ": " + why);
    }

private:
    template <class U>
    U get() {
        const std::string_view b = take(sizeof(U));
        U v = 0;
        for (std::size_t i = 0; i < sizeof(U); ++i) {
            v |= static_cast<U>(static_cast<unsigned char>(b[i])) << (8 * i);
        }
        return v;
    }

    std::string_view in_;
    std::size_t pos_ = 0;
};

/// FNV-1a, 64 bits: a checksum that finds a flipped or lost byte in a stored blob.
[[nodiscard]] constexpr std::uint64_t fnv1a64(std::string_view s) noexcept {
    std::uint64_t h = 0xcbf29ce484222325ULL;
    for (const char c : s) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x100000001b3ULL;
    }
    return h;
}

} // namespace detail
} // namespace tradeagg
