#pragma once
// Appends trades to the partition streams of the scale-out design (tradeagg/redis/stream_entry.hpp:
// `<prefix>:trades:{p<k>}`, k = partition_of(token, N)) with pipelined, blocking XADDs, on one
// Redis or a Redis Cluster: it asks the seed node for CLUSTER SLOTS, sends each XADD to the
// master serving its stream's slot, follows MOVED (reads the slot map again) and ASK (ASKING,
// then the XADD, once), and keeps the order of each partition's trades.

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sys/time.h>

#include <hiredis/hiredis.h>

#include <tradeagg/redis/keys.hpp>
#include <tradeagg/redis/slot_map.hpp>
#include <tradeagg/redis/slots.hpp>
#include <tradeagg/redis/stream_entry.hpp>
#include <tradeagg/trade.hpp>

namespace loadgen {

class stream_writer {
public:
    /// Connects to the seed and learns whether it is a cluster. Throws `std::runtime_error`
    /// naming the address if it cannot connect or read the cluster's slots. Allocates.
    /// `entry_trades` > 1 packs up to that many trades of a partition into one entry
    /// (stream_entry.hpp's packed format); 1 appends each trade as an entry of its own.
    stream_writer(std::string host, int port, std::string prefix, std::size_t partitions,
                  std::size_t entry_trades = 1)
        : prefix_(std::move(prefix)), partitions_(partitions),
          entry_trades_(std::max<std::size_t>(entry_trades, 1)) {
        for (std::size_t k = 0; k < partitions_; ++k) {
            keys_.push_back(tradeagg::redis::stream_key(prefix_, k));
            key_nodes_.push_back(nullptr);
        }
        seed_.host = std::move(host);
        seed_.port = port;
        refresh();
    }

    stream_writer(const stream_writer&) = delete;
    stream_writer& operator=(const stream_writer&) = delete;
    ~stream_writer() = default;

    /// True when the seed is a cluster node.
    [[nodiscard]] bool cluster() const noexcept { return cluster_; }

    /// Appends `trades` in order (one XADD per entry, pipelined per node) and returns how many
    /// trades Redis acknowledged; on a failure `error` names it. Redirections are followed up
    /// to 5 rounds.
    std::size_t append(std::span<const tradeagg::trade_view> trades, std::string& error) {
        const std::vector<entry> entries = pack(trades);
        std::vector<std::size_t> unsent(entries.size());
        for (std::size_t i = 0; i < entries.size(); ++i) {
            unsent[i] = i;
        }
        std::vector<std::optional<tradeagg::redis::cluster_node>> ask_to(entries.size());
        std::size_t acknowledged = 0;
        for (int round = 0; round < 5 && !unsent.empty(); ++round) {
            std::vector<std::size_t> again;
            bool moved = false;
            // Send every pending trade to its node, then read each node's replies in order.
            std::vector<std::pair<node*, std::size_t>> sent; // (node, entry), in send order
            for (const std::size_t i : unsent) {
                const std::size_t k = entries[i].partition;
                node* n = ask_to[i] ? &node_at(*ask_to[i]) : key_nodes_[k];
                if (!n->connect(error)) {
                    return acknowledged;
                }
                if (ask_to[i]) {
                    const char* asking = "ASKING";
                    const std::size_t len = 6;
                    redisAppendCommandArgv(n->ctx.get(), 1, &asking, &len);
                    sent.emplace_back(n, npos);
                }
                if (entries[i].packed.empty()) {
                    append_xadd(*n, keys_[k], trades[entries[i].first]);
                } else {
                    append_packed_xadd(*n, keys_[k], entries[i].packed);
                }
                sent.emplace_back(n, i);
            }
            for (const auto& [n, i] : sent) {
                void* raw = nullptr;
                if (redisGetReply(n->ctx.get(), &raw) != REDIS_OK || raw == nullptr) {
                    error = n->name() + ": " + std::string(n->ctx->errstr);
                    drop_all();
                    return acknowledged;
                }
                const std::unique_ptr<redisReply, void (*)(void*)> r(static_cast<redisReply*>(raw),
                                                                     freeReplyObject);
                if (i == npos) {
                    continue; // ASKING's +OK
                }
                ask_to[i].reset();
                if (r->type != REDIS_REPLY_ERROR) {
                    acknowledged += entries[i].count;
                    continue;
                }
                const std::string_view text(r->str, r->len);
                const auto redirect = tradeagg::redis::parse_redirect(text, n->address.host);
                if (!redirect) {
                    error = n->name() + ": " + std::string(text);
                    continue; // refused (e.g. OOM): not acknowledged, not retried
                }
                if (redirect->how == tradeagg::redis::redirect::kind::moved) {
                    moved = true;
                } else {
                    ask_to[i] = redirect->to;
                }
                again.push_back(i);
            }
            if (moved && !refresh(error)) {
                return acknowledged;
            }
            unsent = std::move(again);
        }
        if (!unsent.empty()) {
            error = std::to_string(unsent.size()) + " XADDs still redirected after 5 rounds";
        }
        return acknowledged;
    }

private:
    static constexpr std::size_t npos = static_cast<std::size_t>(-1);

    /// One XADD: a trade (`packed` empty), or up to `entry_trades_` of a partition's, packed.
    struct entry {
        std::size_t partition = 0;
        std::size_t first = 0; ///< the first trade's index
        std::size_t count = 0;
        std::string packed;
    };

    /// The entries of `trades`: each partition's trades in order, packed by `entry_trades_`.
    [[nodiscard]] std::vector<entry> pack(std::span<const tradeagg::trade_view> trades) const {
        std::vector<entry> out;
        std::vector<std::size_t> open(partitions_, npos); // per partition: its entry being filled
        for (std::size_t i = 0; i < trades.size(); ++i) {
            const std::size_t k = tradeagg::redis::partition_of(trades[i].token, partitions_);
            if (entry_trades_ == 1) {
                out.push_back({k, i, 1, {}});
                continue;
            }
            if (open[k] == npos || out[open[k]].count == entry_trades_) {
                open[k] = out.size();
                out.push_back({k, i, 0, {}});
            }
            entry& e = out[open[k]];
            tradeagg::redis::append_packed(e.packed, trades[i]);
            ++e.count;
        }
        return out;
    }

    struct node {
        tradeagg::redis::cluster_node address;
        std::unique_ptr<redisContext, void (*)(redisContext*)> ctx{nullptr, redisFree};

        [[nodiscard]] std::string name() const {
            return address.host + ":" + std::to_string(address.port);
        }

        bool connect(std::string& error) {
            if (ctx) {
                return true;
            }
            const timeval timeout{5, 0};
            ctx.reset(redisConnectWithTimeout(address.host.c_str(), address.port, timeout));
            if (!ctx || ctx->err != 0) {
                error = "cannot connect to Redis at " + name() + ": " +
                        (ctx ? std::string(ctx->errstr) : std::string("out of memory"));
                ctx.reset();
                return false;
            }
            (void)redisSetTimeout(ctx.get(), timeout);
            return true;
        }
    };

    static void append_packed_xadd(node& n, const std::string& key, const std::string& packed) {
        const std::array<std::string_view, 7> args{"XADD",
                                                   key,
                                                   "*",
                                                   tradeagg::redis::packed_format_field,
                                                   tradeagg::redis::packed_format,
                                                   tradeagg::redis::packed_trades_field,
                                                   packed};
        std::array<const char*, 7> argv{};
        std::array<std::size_t, 7> lengths{};
        for (std::size_t i = 0; i < args.size(); ++i) {
            argv[i] = args[i].data();
            lengths[i] = args[i].size();
        }
        redisAppendCommandArgv(n.ctx.get(), static_cast<int>(args.size()), argv.data(),
                               lengths.data());
    }

    static void append_xadd(node& n, const std::string& key, const tradeagg::trade_view& t) {
        // XADD key * and the six fields; their texts are copied into `storage`, reserved so
        // that it never moves while views of it are taken.
        std::string storage;
        storage.reserve(256);
        std::array<std::string_view, 15> args{};
        std::size_t argc = 0;
        args[argc++] = "XADD";
        args[argc++] = key;
        args[argc++] = "*";
        tradeagg::redis::for_each_field(t, [&](std::string_view field, std::string_view text) {
            const std::size_t at = storage.size();
            storage.append(text);
            args[argc++] = field;
            args[argc++] = std::string_view(storage).substr(at, text.size());
        });
        std::array<const char*, 15> argv{};
        std::array<std::size_t, 15> lengths{};
        for (std::size_t i = 0; i < argc; ++i) {
            argv[i] = args[i].data();
            lengths[i] = args[i].size();
        }
        redisAppendCommandArgv(n.ctx.get(), static_cast<int>(argc), argv.data(), lengths.data());
    }

    /// The node at `address`, made on first use; nodes never move.
    node& node_at(const tradeagg::redis::cluster_node& address) {
        for (const auto& n : nodes_) {
            if (n->address == address) {
                return *n;
            }
        }
        nodes_.push_back(std::make_unique<node>());
        nodes_.back()->address = address;
        return *nodes_.back();
    }

    void drop_all() {
        for (const auto& n : nodes_) {
            n->ctx.reset();
        }
    }

    void refresh() {
        std::string error;
        if (!refresh(error)) {
            throw std::runtime_error(error);
        }
    }

    /// Reads the slot map from the seed (or any node known): which node serves each partition.
    bool refresh(std::string& error) {
        node seed;
        seed.address = seed_;
        if (!seed.connect(error)) {
            return false;
        }
        auto* raw = static_cast<redisReply*>(redisCommand(seed.ctx.get(), "CLUSTER SLOTS"));
        if (raw == nullptr) {
            error = "CLUSTER SLOTS on " + seed.name() + ": " + std::string(seed.ctx->errstr);
            return false;
        }
        const std::unique_ptr<redisReply, void (*)(void*)> r(raw, freeReplyObject);
        if (r->type == REDIS_REPLY_ERROR &&
            std::string_view(r->str, r->len).find("cluster support disabled") !=
                std::string_view::npos) {
            cluster_ = false;
            node& only = node_at(seed_);
            for (auto& k : key_nodes_) {
                k = &only;
            }
            return true;
        }
        const auto map = tradeagg::redis::slot_map::from_cluster_slots(r.get(), seed_.host, error);
        if (!map) {
            return false;
        }
        cluster_ = true;
        for (std::size_t k = 0; k < partitions_; ++k) {
            const tradeagg::redis::cluster_node* owner =
                map->node_for(tradeagg::redis::key_slot(keys_[k]));
            if (owner == nullptr) {
                error = "no node serves the slot of " + keys_[k];
                return false;
            }
            key_nodes_[k] = &node_at(*owner);
        }
        return true;
    }

    std::string prefix_;
    std::size_t partitions_;
    std::size_t entry_trades_;
    std::vector<std::string> keys_; ///< stream key by partition
    std::vector<node*> key_nodes_;  ///< the node serving each partition
    tradeagg::redis::cluster_node seed_;
    std::vector<std::unique_ptr<node>> nodes_;
    bool cluster_ = false;
};

} // namespace loadgen
