#pragma once
// The stream consumer's client for its Lua scripts (lease.hpp): a cluster_client that sends a
// script by its SHA1 (EVALSHA), loading it on first use, and sends it again as EVAL where a
// node answers NOSCRIPT, which loads it there. One thread, as cluster_client.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <hiredis/hiredis.h>

#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/resp.hpp>

namespace tradeagg::redis::detail {

class script_client {
public:
    explicit script_client(cluster_client::options o) : client_(std::move(o)) {}

    /// EVALSHA of `script` (loaded on first use): a node that does not have it answers NOSCRIPT,
    /// and the command is sent again as EVAL, which loads it there.
    cluster_command script(std::string_view body, std::uint16_t slot,
                           std::vector<std::string> keys_and_args, std::size_t keys) {
        cluster_command c;
        c.slot = slot;
        c.args.reserve(3 + keys_and_args.size());
        c.args.emplace_back("EVALSHA");
        c.args.emplace_back(sha_of(body));
        c.args.emplace_back(std::to_string(keys));
        for (std::string& s : keys_and_args) {
            c.args.push_back(std::move(s));
        }
        return c;
    }

    /// `script`, written in RESP as it is built: `args(builder)` adds the keys and arguments
    /// (resp.hpp), the first `keys` of them keys.
    template <class Args>
    cluster_command script_resp(std::string_view body, std::uint16_t slot, std::size_t keys,
                                Args&& args) {
        builder_.add("EVALSHA");
        builder_.add(sha_of(body));
        builder_.add(number_text(static_cast<std::uint64_t>(keys)).view());
        args(builder_);
        cluster_command c;
        c.slot = slot;
        c.args.emplace_back("EVALSHA");
        c.resp = builder_.take();
        return c;
    }

    /// Runs a batch of commands, sending NOSCRIPT ones again as EVAL.
    void run(std::vector<cluster_command>& cmds, std::vector<command_result>& results) {
        client_.run(cmds, results);
        std::vector<std::size_t> again;
        for (std::size_t i = 0; i < cmds.size(); ++i) {
            if (!results[i].ok() && results[i].error.starts_with("NOSCRIPT")) {
                again.push_back(i);
            }
        }
        if (again.empty()) {
            return;
        }
        std::vector<cluster_command> retry;
        for (const std::size_t i : again) {
            cluster_command c = cmds[i];
            if (!c.resp.empty()) {
                c.resp = as_eval(c.resp);
                retry.push_back(std::move(c));
                continue;
            }
            c.args[0] = "EVAL";
            if (const std::string_view body = body_named(c.args[1]); !body.empty()) {
                c.args[1] = std::string(body);
            }
            retry.push_back(std::move(c));
        }
        std::vector<command_result> second;
        client_.run(retry, second);
        for (std::size_t k = 0; k < again.size(); ++k) {
            results[again[k]] = std::move(second[k]);
        }
    }

    /// Runs one command as `run` does (a batch of one).
    command_result run_one(cluster_command c) {
        std::vector<cluster_command> cmds{std::move(c)};
        std::vector<command_result> r;
        run(cmds, r);
        return std::move(r.front());
    }

    /// The client underneath, for what is sent as it is.
    [[nodiscard]] cluster_client& cluster() noexcept { return client_; }

private:
    /// The script sent under `name` (its SHA1, or the name it has until it is loaded); empty
    /// if none was.
    [[nodiscard]] std::string_view body_named(std::string_view name) const {
        for (const auto& [body, sha] : shas_) {
            if (sha == name) {
                return body;
            }
        }
        const auto named = bodies_.find(std::string(name));
        return named != bodies_.end() ? named->second : std::string_view();
    }

    /// An EVALSHA written in RESP, as the EVAL of its script (the same argument count and the
    /// same arguments after the script's name); unchanged if the name is not one sent here.
    [[nodiscard]] std::string as_eval(const std::string& resp) const {
        const std::size_t rest = resp_after_two_arguments(resp);
        if (rest == std::string::npos) {
            return resp;
        }
        const std::size_t name_end = rest - 2;
        const std::size_t name_start = resp.rfind('\n', name_end - 1) + 1;
        const std::string_view body =
            body_named(std::string_view(resp).substr(name_start, name_end - name_start));
        if (body.empty()) {
            return resp;
        }
        std::string eval = resp.substr(0, resp.find("\r\n") + 2); // `*<count>`
        append_resp_argument(eval, "EVAL");
        append_resp_argument(eval, body);
        eval.append(resp, rest);
        return eval;
    }

    /// The script's SHA1, as SCRIPT LOAD answers it; until that succeeds, a name no script has
    /// ("unloaded:" and the script's address), which NOSCRIPT sends as EVAL.
    std::string sha_of(std::string_view body) {
        auto it = shas_.find(body.data());
        if (it != shas_.end()) {
            return it->second;
        }
        command_result r =
            client_.run_one(cluster_command{{"SCRIPT", "LOAD", std::string(body)}, 0});
        if (r.ok() && r.reply->type == REDIS_REPLY_STRING) {
            return shas_.emplace(body.data(), std::string(r.reply->str, r.reply->len))
                .first->second;
        }
        bodies_.emplace(unloaded_name(body), body);
        return unloaded_name(body);
    }

    static std::string unloaded_name(std::string_view body) {
        return "unloaded:" + std::to_string(reinterpret_cast<std::uintptr_t>(
                                 static_cast<const void*>(body.data())));
    }

    cluster_client client_;
    std::unordered_map<const char*, std::string> shas_;        ///< script text's address -> SHA1
    std::unordered_map<std::string, std::string_view> bodies_; ///< unloaded name -> script
    resp_builder builder_; ///< reused: its buffer keeps its capacity
};

} // namespace tradeagg::redis::detail
