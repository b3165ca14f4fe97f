#pragma once
// The host:port of --url, --redis and --sink.

#include <string>
#include <string_view>

#include "diagnostics.hpp"
#include "options.hpp"

namespace loadgen {

/// A server to connect to, or the address the sink listens on.
struct address {
    std::string host;
    std::string port;
    std::string host_header; ///< what the Host header says
};

/// host:port, [v6]:port or http://host:port[/...]; an empty host (":8080", a Go-style listen
/// address) means 127.0.0.1.
inline address parse_address(std::string_view s, const std::string& where) {
    const std::string original(s);
    if (const auto scheme = s.find("://"); scheme != std::string_view::npos) {
        if (s.substr(0, scheme) != "http") {
            throw usage_error(where + ": only http:// is supported, got '" + original + "'");
        }
        s.remove_prefix(scheme + 3);
    }
    s = s.substr(0, s.find('/'));
    if (s.empty()) {
        throw usage_error(where + ": expected host:port, got '" + original + "'");
    }
    address a;
    std::string_view port;
    if (s.starts_with('[')) {
        const auto close = s.find(']');
        if (close == std::string_view::npos) {
            throw usage_error(where + ": unterminated '[' in '" + original + "'");
        }
        a.host = s.substr(1, close - 1);
        const std::string_view rest = s.substr(close + 1);
        if (!rest.empty() && !rest.starts_with(':')) {
            throw usage_error(where + ": expected ':' after ']' in '" + original + "'");
        }
        port = rest.empty() ? "" : rest.substr(1);
    } else if (const auto colon = s.rfind(':'); colon != std::string_view::npos) {
        a.host = s.substr(0, colon);
        port = s.substr(colon + 1);
    } else {
        a.host = s;
    }
    if (port.empty()) {
        port = "80";
    }
    const auto p = parse_uint(port);
    if (!p || *p == 0 || *p > 65535) {
        throw usage_error(where + ": bad port in '" + original + "'");
    }
    if (a.host.empty()) {
        a.host = "127.0.0.1";
    }
    a.port = std::string(port);
    a.host_header =
        (a.host.find(':') != std::string::npos ? "[" + a.host + "]" : a.host) + ":" + a.port;
    return a;
}

} // namespace loadgen
