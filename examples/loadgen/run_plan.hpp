#pragma once
// What every connection of a run shares.

#include <cstdint>

#include <boost/asio/ip/tcp.hpp>

#include "address.hpp"
#include "asio_beast.hpp"
#include "options.hpp"

namespace loadgen {

/// What every connection shares, read-only once the run starts.
struct run_plan {
    options opts;
    address addr;
    tcp::resolver::results_type endpoints;
    std::uint64_t first_generation = 0;
    address redis; ///< with streams
};

} // namespace loadgen
