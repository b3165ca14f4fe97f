#pragma once
// Moved: the Redis stack lives in tradeagg/redis/, one concept per header; include
// <tradeagg/redis/keys.hpp>, <tradeagg/redis/slots.hpp>, <tradeagg/redis/stream_entry.hpp> instead.
// This path forwards there for one release and then goes.

#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/stream_entry.hpp>
