#pragma once
// A Redis Cluster of masters on free loopback ports, for tests: redis-server processes started
// with --cluster-enabled, joined with `redis-cli --cluster create`, stopped with the fixture.

#include <chrono>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "redis_server.hpp"

namespace tradeagg::testing {

class redis_cluster {
public:
    /// Starts `masters` nodes (at least 3, as redis-cli requires), assigns the 16,384 slots
    /// evenly and waits (up to 30 s) until every node reports cluster_state:ok.
    /// With `durable`, each node keeps an append-only file (fsync every write), so a node
    /// stopped and started again comes back with its data, and the other masters keep serving
    /// their slots while one is down.
    explicit redis_cluster(std::size_t masters = 3, bool durable = false) {
        std::string create = "redis-cli --cluster create";
        for (std::size_t i = 0; i < masters; ++i) {
            std::vector<std::string> args{"--cluster-enabled", "yes", "--cluster-node-timeout",
                                          "2000"};
            if (durable) {
                args.insert(args.end(), {"--appendonly", "yes", "--appendfsync", "always",
                                         "--cluster-require-full-coverage", "no"});
            }
            nodes_.push_back(
                std::make_unique<redis_server>(std::move(args), cluster_bus::own_port));
            create += " 127.0.0.1:" + std::to_string(nodes_.back()->port());
        }
        create += " --cluster-replicas 0 --cluster-yes >/dev/null 2>&1";
        if (std::system(create.c_str()) != 0) {
            throw std::runtime_error("redis_cluster: `" + create + "` failed");
        }
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (!ready()) {
            if (std::chrono::steady_clock::now() > deadline) {
                throw std::runtime_error("redis_cluster: cluster_state:ok never came");
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    }

    [[nodiscard]] std::size_t size() const noexcept { return nodes_.size(); }
    [[nodiscard]] redis_server& node(std::size_t i) { return *nodes_.at(i); }
    /// Every node as a REDIS_ADDR seed list: "127.0.0.1:<port>,127.0.0.1:<port>,...".
    [[nodiscard]] std::string seed_list() const {
        std::string seeds;
        for (const auto& n : nodes_) {
            seeds +=
                (seeds.empty() ? "" : ",") + std::string("127.0.0.1:") + std::to_string(n->port());
        }
        return seeds;
    }

    /// True when every node says cluster_state:ok.
    [[nodiscard]] bool ready() const {
        for (const auto& n : nodes_) {
            if (n->command({"CLUSTER", "INFO"}).find("cluster_state:ok") == std::string::npos) {
                return false;
            }
        }
        return true;
    }

private:
    std::vector<std::unique_ptr<redis_server>> nodes_;
};

} // namespace tradeagg::testing
