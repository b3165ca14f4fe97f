#pragma once
// Boost.Asio and Boost.Beast under the short names the load generator's network code uses.

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/message.hpp>

namespace loadgen {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

} // namespace loadgen
