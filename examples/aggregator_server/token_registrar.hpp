#pragma once
// Adds the names of the tokens the server takes trades for to Redis's token set
// (tradeagg/redis/token_set.hpp), so that the Binance-compatible API lists them after a restart and
// other instances list them too. The stream consumer adds its tokens itself (write_behind.hpp);
// this is for trades that come over HTTP, whose Redis sink does not.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <tradeagg/redis/cluster_client.hpp>
#include <tradeagg/redis/token_set.hpp>

namespace aggregator {

/// Every `every`, takes the names new since the last pass (`fresh()`) and adds them to the token
/// set (token_set.hpp); names it could not add are tried again in the next pass. Runs a thread of
/// its own between `start` and `stop`.
class token_registrar {
public:
    token_registrar(tradeagg::redis::cluster_client::options redis, std::string key_prefix,
                    std::function<std::vector<std::string>()> fresh,
                    std::chrono::milliseconds every)
        : client_(std::move(redis)), prefix_(std::move(key_prefix)), fresh_(std::move(fresh)),
          every_(every) {}

    token_registrar(const token_registrar&) = delete;
    token_registrar& operator=(const token_registrar&) = delete;
    ~token_registrar() { stop(); }

    /// Starts the thread. Once.
    void start() {
        thread_ = tradeagg::redis::start_client_thread("tradeagg-tokens", [this] { run(); });
    }

    /// Makes a last pass and stops the thread. Idempotent.
    void stop() {
        {
            const std::lock_guard lock(mutex_);
            quit_ = true;
        }
        wake_.notify_all();
        if (thread_.joinable()) {
            thread_.join();
        }
    }

private:
    void run() {
        for (;;) {
            bool last = false;
            {
                std::unique_lock lock(mutex_);
                wake_.wait_for(lock, every_, [&] { return quit_; });
                last = quit_;
            }
            pass();
            if (last) {
                return;
            }
        }
    }

    void pass() {
        std::vector<std::string> names = fresh_();
        pending_.insert(pending_.end(), std::make_move_iterator(names.begin()),
                        std::make_move_iterator(names.end()));
        const std::size_t added = tradeagg::redis::add_to_token_set(client_, prefix_, pending_);
        pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(added));
    }

    tradeagg::redis::cluster_client client_; ///< the thread's own
    std::string prefix_;
    std::function<std::vector<std::string>()> fresh_;
    std::chrono::milliseconds every_;
    std::vector<std::string> pending_; ///< names not added yet (the thread's)
    std::mutex mutex_;
    std::condition_variable wake_;
    bool quit_ = false;
    std::thread thread_;
};

} // namespace aggregator
