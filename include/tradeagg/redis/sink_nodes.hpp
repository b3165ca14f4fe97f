#pragma once
// What the Redis sink keeps on its I/O thread: per Redis node it knows, the connection and the
// tokens queued for it (`node`); per key with a version not yet acknowledged, that version
// (`entry`); per token with such keys, the transaction that writes them (`token_state`). A
// token is the unit of writing: all of its pending keys go in one MULTI/EXEC.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include <hiredis/async.h>

#include <tradeagg/redis/sink_updates.hpp>
#include <tradeagg/redis/slot_map.hpp>

namespace tradeagg::redis::detail {

class sink_connections;
struct node;
struct token_state;

using sink_clock = std::chrono::steady_clock;

/// One connection to a node and what is outstanding on it.
struct connection {
    redisAsyncContext* ac = nullptr;
    bool ready = false;       ///< handshake done: writes may go out
    bool closing = false;     ///< being freed or disconnected by the sink
    bool retiring = false;    ///< older than max_conn_age: no new writes, closes when drained
    bool lost_writes = false; ///< writes failed without a reply when it went
    bool cluster = false;     ///< the node said `redis_mode:cluster`
    int handshake_left = 0;
    long long client_id = -1;
    std::string run_id;
    sink_clock::time_point opened{};
    sink_clock::time_point last_send{};
    std::deque<sink_clock::time_point> sent; ///< per outstanding command, oldest first
    std::uint64_t writes_seen = 0;
    sink_clock::time_point writes_seen_at{};
};

/// A Redis the sink knows: a seed, a master of the slot map, or the target of a redirect.
/// Nodes live as long as the sink (a cluster has few), so pointers to them stay valid.
struct node {
    sink_connections* core = nullptr; ///< for the hiredis callbacks, which find the node in `data`
    std::string host;
    int port = 0;
    bool seed = false;
    std::size_t slots = 0; ///< slots the current map gives it
    connection conn;
    std::deque<token_state*> ready;   ///< tokens to write here, oldest first
    std::vector<token_state*> parked; ///< tokens whose retries ran out here
    int reconnect_attempts = 0;
    sink_clock::time_point reconnect_at{};
    bool ever_connected = false;
    /// The client id of a connection that went with writes unanswered, to kill before
    /// writing on the next one, and the run_id of the server it was on.
    long long fence_id = -1;
    std::string fence_run_id;
    std::string known_run_id; ///< of the last connection that completed its handshake

    [[nodiscard]] std::string name() const { return host + ":" + std::to_string(port); }
};

enum class where : std::uint8_t { idle, unrouted, ready, in_flight, retry, parked };

/// A key with a version not yet acknowledged.
struct entry {
    const update_key* key = nullptr;
    token_state* token = nullptr;
    update_value value;
    std::uint64_t version = 0;              ///< bumped by each update
    std::uint64_t sent_version = 0;         ///< the version last sent
    std::int64_t pending_since_ns = 0;      ///< consume time of the oldest unwritten version
    std::int64_t next_pending_since_ns = 0; ///< of the first version after the one in flight
    /// When the candle key's expiry was last sent on the current Redis; the epoch when it
    /// is due with the next write (first write, after a failure, after a restart).
    sink_clock::time_point expiry_sent{};
};

/// A token with keys not yet acknowledged: the unit written in one transaction.
struct token_state {
    const update_key* id = nullptr; ///< the token (as a token-kind key)
    std::uint16_t slot = 0;
    where at = where::idle;
    std::vector<entry*> keys;   ///< its pending keys; [0, sent_count) are in the transaction
    std::size_t sent_count = 0; ///< keys in the transaction in flight (or last sent)
    int attempts = 0;           ///< failed transactions of the current versions
    int redirects = 0;          ///< redirections followed in a row
    int replies_due = 0;
    bool failed = false;
    node* ask_to = nullptr;             ///< the next transaction goes here, after ASKING
    std::optional<redirect> redirected; ///< the first redirection of the one in flight
};

/// Bytes one pending key costs: its map node and its place in its token's list.
inline constexpr std::size_t entry_bytes = sizeof(entry) + sizeof(update_key) + 4 * sizeof(void*);
inline constexpr std::size_t token_bytes =
    sizeof(token_state) + sizeof(update_key) + 4 * sizeof(void*);

} // namespace tradeagg::redis::detail
