#pragma once
// Moved: the Redis stack lives in tradeagg/redis/, one concept per header; include
// <tradeagg/redis/asio_connection.hpp> instead. This path forwards there for one release and then
// goes.

#include <tradeagg/redis/asio_connection.hpp>
