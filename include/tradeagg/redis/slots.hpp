#pragma once
// Redis Cluster hash slots: CRC16/XMODEM and the key-to-slot rule of the cluster
// specification, and the slot every key of a token lives on. Needs neither hiredis nor Asio.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include <tradeagg/config.hpp>

namespace tradeagg::redis {

/// The number of hash slots of a Redis Cluster.
inline constexpr std::size_t cluster_slot_count = 16'384;

/// CRC16-CCITT in its XMODEM form (polynomial 0x1021, initial value 0, no reflection), the
/// checksum Redis Cluster hashes keys with. crc16("123456789") == 0x31C3.
[[nodiscard]] constexpr std::uint16_t crc16_xmodem(std::string_view bytes) noexcept {
    std::uint32_t crc = 0;
    for (const char c : bytes) {
        crc ^= static_cast<std::uint32_t>(static_cast<unsigned char>(c)) << 8;
        for (int bit = 0; bit < 8; ++bit) {
            crc = (crc & 0x8000u) != 0 ? (crc << 1) ^ 0x1021u : crc << 1;
        }
    }
    return static_cast<std::uint16_t>(crc & 0xFFFFu);
}

/// The hash slot of `key`, as the cluster specification defines it: if the key holds a '{'
/// followed, later, by a '}' with at least one byte between them, only the bytes between the
/// first '{' and the first '}' after it are hashed (the hash tag); otherwise the whole key.
[[nodiscard]] constexpr std::uint16_t key_slot(std::string_view key) noexcept {
    const auto open = key.find('{');
    if (open != std::string_view::npos) {
        const auto close = key.find('}', open + 1);
        if (close != std::string_view::npos && close > open + 1) {
            key = key.substr(open + 1, close - open - 1);
        }
    }
    return static_cast<std::uint16_t>(crc16_xmodem(key) % cluster_slot_count);
}

/// The slot of every key of `token`: the token is each key's hash tag (prefixes and tokens hold
/// no braces), so a token's candles, rolling window and latest trade share one slot and can be
/// written in one MULTI.
[[nodiscard]] constexpr std::uint16_t token_slot(std::string_view token) noexcept {
    return static_cast<std::uint16_t>(crc16_xmodem(token) % cluster_slot_count);
}

} // namespace tradeagg::redis
