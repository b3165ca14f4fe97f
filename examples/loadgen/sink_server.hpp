#pragma once
// --sink: a trivial server that answers POST /trades with 202 and the number of trades, so that
// the generator can be measured alone (loadgen.cpp says how).

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <utility>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include "address.hpp"
#include "asio_beast.hpp"
#include "diagnostics.hpp"
#include "options.hpp"

namespace loadgen {

/// One sink connection: answers until the peer closes.
inline void serve_sink_connection(tcp::socket socket) {
    beast::flat_buffer buffer;
    boost::system::error_code ec;
    socket.set_option(tcp::no_delay(true), ec);
    for (;;) {
        http::request_parser<http::string_body> parser;
        parser.body_limit(std::uint64_t{1} << 30);
        http::read(socket, buffer, parser, ec);
        if (ec) {
            break;
        }
        const auto& req = parser.get();
        http::response<http::string_body> res{http::status::ok, req.version()};
        res.set(http::field::content_type, "application/json");
        if (req.method() == http::verb::post && req.target() == "/trades") {
            // Token names hold no braces, so each '{' opens one trade.
            const auto n = std::count(req.body().begin(), req.body().end(), '{');
            res.result(http::status::accepted);
            res.body() = "{\"accepted\":" + std::to_string(n) + "}";
        } else if (req.method() == http::verb::get && req.target() == "/health") {
            res.body() = R"({"status":"ok"})";
        } else {
            res.result(http::status::not_found);
            res.body() = R"({"error":"not found"})";
        }
        res.keep_alive(req.keep_alive());
        res.prepare_payload();
        http::write(socket, res, ec);
        if (ec || !res.keep_alive()) {
            break;
        }
    }
    socket.shutdown(tcp::socket::shutdown_both, ec);
}

[[noreturn]] inline void run_sink(const options& o) {
    const address a = parse_address(o.sink, "--sink");
    asio::io_context ioc;
    tcp::acceptor acceptor(ioc);
    try {
        tcp::resolver resolver(ioc);
        const tcp::endpoint ep = *resolver.resolve(a.host, a.port).begin();
        acceptor.open(ep.protocol());
        acceptor.set_option(asio::socket_base::reuse_address(true));
        acceptor.bind(ep);
        acceptor.listen();
    } catch (const boost::system::system_error& e) {
        throw run_error("sink cannot listen on " + a.host_header + ": " + e.code().message());
    }
    std::fprintf(stderr, "%.*s: sink listening on %s:%u\n", static_cast<int>(program.size()),
                 program.data(), acceptor.local_endpoint().address().to_string().c_str(),
                 static_cast<unsigned>(acceptor.local_endpoint().port()));
    std::fflush(stderr);
    for (;;) {
        tcp::socket socket(ioc);
        boost::system::error_code ec;
        acceptor.accept(socket, ec);
        if (!ec) {
            std::thread(serve_sink_connection, std::move(socket)).detach();
        }
    }
}

} // namespace loadgen
