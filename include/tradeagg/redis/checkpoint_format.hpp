#pragma once
// A partition checkpoint as stored in Redis (partition_checkpoints.hpp): the whole state of a
// partition's shard and each token's last applied entry, as of one stream entry, so that a new
// holder can load it and replay only the entries after that one.
//
// Format 1, every number little-endian (detail/byte_codec.hpp):
//   magic        text "tradeagg-checkpoint"
//   version      u32 1
//   partition    u64
//   epoch        u64: the lease epoch of the holder that took it
//   includes     u64 ms, u64 seq: the last stream entry whose effect it holds
//   applied      u64 n, then n times: token (text), u64 ms, u64 seq
//   shard state  shard::save_state (a layout fingerprint of the policy first)
//   checksum     u64 FNV-1a of every byte before it
// A checkpoint that does not read back whole (truncated, a flipped byte, another policy's
// layout, another partition's) is refused and never applied.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tradeagg/detail/byte_codec.hpp>
#include <tradeagg/policy.hpp>
#include <tradeagg/redis/partition_engine.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/runtime_config.hpp>

namespace tradeagg::redis::detail {

inline constexpr std::string_view checkpoint_magic = "tradeagg-checkpoint";
inline constexpr std::uint32_t checkpoint_version = 1;

/// What a checkpoint says of itself.
struct checkpoint_header {
    std::size_t partition = 0;
    std::uint64_t epoch = 0;
    stream_id includes; ///< the last entry whose effect the state holds
};

/// Encodes `engine`'s state, which includes every entry up to `h.includes`. The engine must be
/// idle (nothing queued: `shard::apply_here` ran after the last push). Allocates.
template <policy Policy>
[[nodiscard]] std::string encode_checkpoint(const partition_engine<Policy>& engine,
                                            const checkpoint_header& h) {
    std::string out;
    tradeagg::detail::byte_writer w(out);
    w.text(checkpoint_magic);
    w.u32(checkpoint_version);
    w.u64(h.partition);
    w.u64(h.epoch);
    w.u64(h.includes.ms);
    w.u64(h.includes.seq);
    // In token order: one state always encodes to the same bytes.
    std::vector<const std::pair<const std::string, stream_id>*> applied;
    applied.reserve(engine.applied.size());
    for (const auto& a : engine.applied) {
        applied.push_back(&a);
    }
    std::sort(applied.begin(), applied.end(), [](auto* a, auto* b) { return a->first < b->first; });
    w.u64(applied.size());
    for (const auto* a : applied) {
        w.text(a->first);
        w.u64(a->second.ms);
        w.u64(a->second.seq);
    }
    engine.worker.save_state(w);
    w.u64(tradeagg::detail::fnv1a64(out));
    return out;
}

/// A checkpoint without its checksum, once the checksum matches. Throws `snapshot_error` if
/// it does not.
[[nodiscard]] inline std::string_view checked_body(std::string_view blob) {
    if (blob.size() < sizeof(std::uint64_t)) {
        throw snapshot_error("checkpoint of " + std::to_string(blob.size()) + " bytes");
    }
    const std::string_view body = blob.substr(0, blob.size() - sizeof(std::uint64_t));
    tradeagg::detail::byte_reader sum(blob.substr(body.size()));
    if (sum.u64() != tradeagg::detail::fnv1a64(body)) {
        throw snapshot_error("checkpoint checksum mismatch (" + std::to_string(blob.size()) +
                             " bytes)");
    }
    return body;
}

/// Reads a checkpoint's header from the start of its body. Throws `snapshot_error` if it does
/// not read back.
[[nodiscard]] inline checkpoint_header read_checkpoint_header(tradeagg::detail::byte_reader& r) {
    if (r.text() != checkpoint_magic) {
        r.fail("not a tradeagg checkpoint");
    }
    if (const std::uint32_t v = r.u32(); v != checkpoint_version) {
        r.fail("checkpoint format " + std::to_string(v) + ", this build reads " +
               std::to_string(checkpoint_version));
    }
    checkpoint_header h;
    h.partition = r.u64();
    h.epoch = r.u64();
    h.includes.ms = r.u64();
    h.includes.seq = r.u64();
    return h;
}

/// Loads a checkpoint of partition `partition` into a fresh engine built from `pipeline`.
/// Throws `snapshot_error` if it does not read back whole; nothing is returned then.
template <policy Policy>
[[nodiscard]] std::pair<checkpoint_header, std::unique_ptr<partition_engine<Policy>>>
decode_checkpoint(std::string_view blob, std::size_t partition,
                  const resolved_config<Policy>& pipeline) {
    tradeagg::detail::byte_reader r(checked_body(blob));
    const checkpoint_header h = read_checkpoint_header(r);
    if (h.partition != partition) {
        throw snapshot_error("checkpoint of partition " + std::to_string(h.partition) +
                             " stored for partition " + std::to_string(partition));
    }
    auto engine = std::make_unique<partition_engine<Policy>>(pipeline);
    const std::uint64_t applied = r.u64();
    // Each token costs at least its length and two ids: a count beyond what is left is corrupt.
    if (applied > r.left() / (4 + 16)) {
        r.fail("applied count " + std::to_string(applied) + " beyond the checkpoint's size");
    }
    engine->applied.reserve(static_cast<std::size_t>(applied));
    for (std::uint64_t i = 0; i < applied; ++i) {
        const std::string_view token = r.text();
        stream_id id;
        id.ms = r.u64();
        id.seq = r.u64();
        if (id > h.includes) {
            r.fail("token " + std::string(token) + " applied past the checkpoint's entry");
        }
        if (!engine->applied.emplace(std::string(token), id).second) {
            r.fail("token " + std::string(token) + " listed twice");
        }
    }
    engine->worker.load_state(r);
    if (r.left() != 0) {
        r.fail(std::to_string(r.left()) + " bytes after the shard state");
    }
    return {h, std::move(engine)};
}

} // namespace tradeagg::redis::detail
