#pragma once
// What the server's in-process tests share: a configuration from a map of variables, requests
// built as the HTTP server hands them over, and a response's JSON body.

#include <map>
#include <string>
#include <utility>

#include <boost/json.hpp>

#include "server_config.hpp"
#include "service.hpp"

namespace aggregator::testing {

using env_map = std::map<std::string, std::string>;

/// The configuration the server reads from an environment holding exactly `env`.
inline server_config config_from(const env_map& env) {
    return server_config_from_env([&env](const char* name) -> const char* {
        const auto it = env.find(name);
        return it == env.end() ? nullptr : it->second.c_str();
    });
}

inline request make_request(http::verb verb, std::string target, std::string body = {},
                            std::string content_type = {}) {
    request req{verb, target, 11};
    if (!content_type.empty()) {
        req.set(http::field::content_type, content_type);
    }
    req.body() = std::move(body);
    req.prepare_payload();
    return req;
}

inline boost::json::value json_value_of(const response& res) {
    return boost::json::parse(res.body());
}

inline boost::json::object json_of(const response& res) {
    return json_value_of(res).as_object();
}

} // namespace aggregator::testing
