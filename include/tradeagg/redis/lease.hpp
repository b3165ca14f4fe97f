#pragma once
// Partition leases of the scale-out design: which server instance reads a partition stream, and
// the epoch its writes carry so that a write from an instance that lost the lease can be
// refused. Three Lua scripts, atomic on the node serving the partition's slot (the lease and
// epoch keys share the hash tag {p<k>}), for any client to run with EVAL or EVALSHA:
//
//   acquire  KEYS lease, epoch   ARGV instance, ttl_ms   -> the epoch now held (> 0), or 0 if
//            another instance holds the lease. The lease is taken with a new epoch (INCR: epochs
//            only grow), whether it was free, lapsed, or already the instance's: an instance
//            acquires only to start over (after a read whose reply was lost, say), and a new
//            epoch fences whatever it sent in its former life and Redis has not run yet.
//   renew    KEYS lease          ARGV instance, epoch, ttl_ms -> 1, or 0 if the lease is no
//            longer this instance's at that epoch (it lapsed and another took it).
//   release  KEYS lease          ARGV instance, epoch    -> 1 if released, 0 if not held.
//   token_write (below): one token's keys written at once, refused from a smaller epoch.
//
// The lease's value is "<instance> <epoch>"; it expires after ttl_ms unless renewed. An
// instance must stop writing for a partition once a renewal fails or its lease may have lapsed.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <tradeagg/redis/stream_entry.hpp>

namespace tradeagg::redis {

/// `<prefix>:epoch:{p<partition>}`: the partition's last epoch (an integer). Allocates.
[[nodiscard]] inline std::string epoch_key(std::string_view prefix, std::size_t partition) {
    return partition_key(prefix, "epoch", partition);
}

namespace lease_scripts {

inline constexpr std::string_view acquire = R"lua(
local held = redis.call('GET', KEYS[1])
if held and string.match(held, '^(.*) %d+$') ~= ARGV[1] then
  return 0
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. epoch, 'PX', ARGV[2])
return epoch
)lua";

inline constexpr std::string_view renew = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] .. ' ' .. ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
)lua";

inline constexpr std::string_view release = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] .. ' ' .. ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
)lua";

/// Writes one token's flush, fenced: all of a token's keys are in one slot, so one script
/// writes them atomically (as MULTI/EXEC would) and can refuse a write from a former lease
/// holder, or a replay of state older than what is stored.
///
///   KEYS  latest, rolling, candle...
///   ARGV  epoch, stream_id ("" when not from a stream),
///         n, n field-value pairs for latest; n, pairs for rolling;
///         then per candle key: ttl_ms (0: none), n, pairs
///   ->    1 written; 0 refused: the token holds a larger epoch; -1 refused: the token holds
///         this epoch's stream id or a later one (already applied)
///
/// The latest hash also gets `epoch` and, from a stream, `stream_id`: what a new holder reads
/// to skip entries already applied to the token.
inline constexpr std::string_view token_write = R"lua(
local stored_epoch = redis.call('HGET', KEYS[1], 'epoch')
local epoch = tonumber(ARGV[1])
if stored_epoch and tonumber(stored_epoch) > epoch then
  return 0
end
if ARGV[2] ~= '' and stored_epoch and tonumber(stored_epoch) == epoch then
  local stored_id = redis.call('HGET', KEYS[1], 'stream_id')
  if stored_id then
    local sm, ss = string.match(stored_id, '^(%d+)-(%d+)$')
    local am, as = string.match(ARGV[2], '^(%d+)-(%d+)$')
    sm, ss, am, as = tonumber(sm), tonumber(ss), tonumber(am), tonumber(as)
    if sm > am or (sm == am and ss >= as) then
      return -1
    end
  end
end
local last = 3 + 2 * tonumber(ARGV[3])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'stream_id', ARGV[2], unpack(ARGV, 4, last))
else
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], unpack(ARGV, 4, last))
end
local i = last + 1
-- The next n field-value pairs of ARGV (n first) into `key`: how many fields were new.
local function hset(key)
  local n = tonumber(ARGV[i])
  local first = i + 1
  i = first + 2 * n
  if n == 0 then
    return 0
  end
  return redis.call('HSET', key, unpack(ARGV, first, i - 1))
end
hset(KEYS[2])
for k = 3, #KEYS do
  local ttl = tonumber(ARGV[i])
  i = i + 1
  -- A candle's expiry is set when it is created (every field new), as the sink does.
  if hset(KEYS[k]) > 0 and ttl > 0 then
    redis.call('PEXPIRE', KEYS[k], ttl)
  end
end
return 1
)lua";

} // namespace lease_scripts

} // namespace tradeagg::redis
