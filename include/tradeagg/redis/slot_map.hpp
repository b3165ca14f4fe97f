#pragma once
// Redis Cluster routing: which node serves which hash slot (from CLUSTER SLOTS), and the
// MOVED and ASK redirections a node answers for a slot it does not serve (or no longer does).
// The slot of a key is `key_slot` (slots.hpp). Needs hiredis for its reply type only.

#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <hiredis/hiredis.h>

#include <tradeagg/redis/slots.hpp>

namespace tradeagg::redis {

/// A master of the cluster, as CLUSTER SLOTS names it.
struct cluster_node {
    std::string host;
    int port = 0;
    std::string id; ///< the node's id; empty when the reply did not give one

    /// The same address (a node's id may be unknown where it is named, as in MOVED).
    friend bool operator==(const cluster_node& a, const cluster_node& b) noexcept {
        return a.host == b.host && a.port == b.port;
    }
};

/// The master serving each of the 16,384 slots.
class slot_map {
public:
    static constexpr std::uint16_t no_node = 0xFFFF;

    slot_map() { owner_.fill(no_node); }

    /// The map a CLUSTER SLOTS reply describes, or nothing (with `error` set) if the reply is
    /// not one. A node that does not know its own address answers an empty or "?" host: it is
    /// reachable where the reply came from, `reply_host`. Allocates.
    static std::optional<slot_map>
    from_cluster_slots(const redisReply* r, std::string_view reply_host, std::string& error) {
        const auto fail = [&error](std::string what) {
            error = "CLUSTER SLOTS: " + std::move(what);
            return std::nullopt;
        };
        if (r == nullptr || r->type != REDIS_REPLY_ARRAY) {
            return fail(r != nullptr && r->type == REDIS_REPLY_ERROR ? std::string(r->str, r->len)
                                                                     : std::string("not an array"));
        }
        slot_map m;
        for (std::size_t i = 0; i < r->elements; ++i) {
            const redisReply* range = r->element[i];
            if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 ||
                range->element[0]->type != REDIS_REPLY_INTEGER ||
                range->element[1]->type != REDIS_REPLY_INTEGER) {
                return fail("range " + std::to_string(i) + " is not [start, end, master, ...]");
            }
            const long long first = range->element[0]->integer;
            const long long last = range->element[1]->integer;
            if (first < 0 || last < first || last >= static_cast<long long>(cluster_slot_count)) {
                return fail("range " + std::to_string(i) + " is out of 0..16383");
            }
            const redisReply* master = range->element[2];
            if (master->type != REDIS_REPLY_ARRAY || master->elements < 2 ||
                master->element[0]->type != REDIS_REPLY_STRING ||
                master->element[1]->type != REDIS_REPLY_INTEGER) {
                return fail("range " + std::to_string(i) + ": its master is not [host, port, ...]");
            }
            cluster_node node;
            node.host.assign(master->element[0]->str, master->element[0]->len);
            if (node.host.empty() || node.host == "?") {
                node.host = reply_host;
            }
            node.port = static_cast<int>(master->element[1]->integer);
            if (master->elements >= 3 && master->element[2]->type == REDIS_REPLY_STRING) {
                node.id.assign(master->element[2]->str, master->element[2]->len);
            }
            if (node.port <= 0 || node.port > 65'535) {
                return fail("range " + std::to_string(i) + ": port out of range");
            }
            m.assign(static_cast<std::uint16_t>(first), static_cast<std::uint16_t>(last),
                     std::move(node));
        }
        return m;
    }

    /// Serves slots `first`..`last` (inclusive) from `node`. Allocates for a new node.
    void assign(std::uint16_t first, std::uint16_t last, cluster_node node) {
        const std::uint16_t index = index_of(std::move(node));
        for (std::size_t s = first; s <= last && s < cluster_slot_count; ++s) {
            owner_[s] = index;
        }
    }

    /// The node serving `slot`, or null while no node does.
    [[nodiscard]] const cluster_node* node_for(std::uint16_t slot) const noexcept {
        const std::uint16_t i = slot < cluster_slot_count ? owner_[slot] : no_node;
        return i == no_node ? nullptr : &nodes_[i];
    }

    /// The node's index in `nodes()` serving `slot`, or `no_node`.
    [[nodiscard]] std::uint16_t index_for(std::uint16_t slot) const noexcept {
        return slot < cluster_slot_count ? owner_[slot] : no_node;
    }

    /// Every node named so far, by index; a node keeps its index for the map's life.
    [[nodiscard]] const std::vector<cluster_node>& nodes() const noexcept { return nodes_; }

    /// True when every slot has a node.
    [[nodiscard]] bool complete() const noexcept {
        for (const std::uint16_t o : owner_) {
            if (o == no_node) {
                return false;
            }
        }
        return true;
    }

private:
    std::uint16_t index_of(cluster_node node) {
        for (std::size_t i = 0; i < nodes_.size(); ++i) {
            if (nodes_[i] == node) {
                if (nodes_[i].id.empty()) {
                    nodes_[i].id = std::move(node.id);
                }
                return static_cast<std::uint16_t>(i);
            }
        }
        nodes_.push_back(std::move(node));
        return static_cast<std::uint16_t>(nodes_.size() - 1);
    }

    std::array<std::uint16_t, cluster_slot_count> owner_{};
    std::vector<cluster_node> nodes_;
};

/// A node's answer that a slot is served elsewhere.
struct redirect {
    enum class kind : std::uint8_t {
        moved, ///< for good: update the map and send there
        ask    ///< during a migration: send ASKING and then the command there, once
    };
    kind how = kind::moved;
    std::uint16_t slot = 0;
    cluster_node to;
};

/// Reads "MOVED <slot> <host>:<port>" or "ASK <slot> <host>:<port>" (an error reply's text);
/// nothing for any other error. An empty host (a node that does not know its address) is
/// `reply_host`. Allocates.
[[nodiscard]] inline std::optional<redirect> parse_redirect(std::string_view text,
                                                            std::string_view reply_host) {
    redirect r;
    if (text.starts_with("MOVED ")) {
        r.how = redirect::kind::moved;
        text.remove_prefix(6);
    } else if (text.starts_with("ASK ")) {
        r.how = redirect::kind::ask;
        text.remove_prefix(4);
    } else {
        return std::nullopt;
    }
    const auto space = text.find(' ');
    const auto colon = text.rfind(':');
    if (space == std::string_view::npos || colon == std::string_view::npos || colon < space) {
        return std::nullopt;
    }
    unsigned slot = 0;
    const std::string_view slot_text = text.substr(0, space);
    if (const auto res =
            std::from_chars(slot_text.data(), slot_text.data() + slot_text.size(), slot);
        res.ec != std::errc{} || res.ptr != slot_text.data() + slot_text.size() ||
        slot >= cluster_slot_count) {
        return std::nullopt;
    }
    int port = 0;
    const std::string_view port_text = text.substr(colon + 1);
    if (const auto res =
            std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
        res.ec != std::errc{} || res.ptr != port_text.data() + port_text.size() || port <= 0 ||
        port > 65'535) {
        return std::nullopt;
    }
    r.slot = static_cast<std::uint16_t>(slot);
    r.to.host = std::string(text.substr(space + 1, colon - space - 1));
    if (r.to.host.empty()) {
        r.to.host = reply_host;
    }
    r.to.port = port;
    return r;
}

} // namespace tradeagg::redis
