#pragma once
// Where the Redis sink sends each token's next transaction: the nodes it knows, whether the
// seeds are one Redis or a cluster, and on a cluster the master serving each slot. A token
// waiting to be written is queued on the node that serves its slot (or the target of an ASK
// redirection), or on the unrouted list while no node is known to serve it.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <tradeagg/redis/sink_nodes.hpp>
#include <tradeagg/redis/slot_map.hpp>
#include <tradeagg/redis/slots.hpp>

namespace tradeagg::redis::detail {

/// Whether the seeds are known to be one Redis or a cluster yet.
enum class topology : std::uint8_t { unknown, plain, cluster };

/// What the routing table holds, for the sink's figures.
struct route_figures {
    std::size_t serving = 0;   ///< nodes serving writes: the plain Redis, or masters with slots
    std::size_t connected = 0; ///< of those, connected and past their handshake
    std::size_t queued = 0;    ///< tokens queued on nodes (ready or parked) or unrouted
};

/// The sink's routing table and its queues of tokens. I/O thread only.
class sink_routes {
public:
    /// Nodes made known are handed `core` for their hiredis callbacks.
    explicit sink_routes(sink_connections* core)
        : core_(core), owners_(cluster_slot_count, nullptr) {}

    [[nodiscard]] enum topology topology() const noexcept { return topology_; }
    [[nodiscard]] const std::vector<std::unique_ptr<node>>& nodes() const noexcept {
        return nodes_;
    }
    [[nodiscard]] route_figures figures() const noexcept {
        route_figures f;
        f.queued = unrouted_.size();
        for (const auto& n : nodes_) {
            if (serving(*n)) {
                ++f.serving;
                f.connected += n->conn.ready && !n->conn.closing ? 1 : 0;
            }
            f.queued += n->ready.size() + n->parked.size();
        }
        return f;
    }

    /// Calls `f(node&)` for every node, including any that `f` makes known (a hiredis
    /// callback run by `f` may follow a redirection to a new node). Never allocates itself.
    template <class F>
    void for_each_node(F&& f) {
        for (std::size_t i = 0; i < nodes_.size(); ++i) {
            f(*nodes_[i]);
        }
    }

    /// The node at an address, made known if it was not. Allocates for a new one.
    node& node_at(std::string_view host, int port) {
        for (const auto& n : nodes_) {
            if (n->port == port && n->host == host) {
                return *n;
            }
        }
        nodes_.push_back(std::make_unique<node>());
        nodes_.back()->core = core_;
        nodes_.back()->host = std::string(host);
        nodes_.back()->port = port;
        return *nodes_.back();
    }

    /// The node serving `slot`, or null while that is not known.
    [[nodiscard]] node* owner(std::uint16_t slot) const noexcept {
        switch (topology_) {
        case topology::plain:
            return plain_node_;
        case topology::cluster:
            return owners_[slot];
        case topology::unknown:
            break;
        }
        return nullptr;
    }

    /// Whether `n` serves writes now: the plain Redis, or a master serving slots.
    [[nodiscard]] bool serving(const node& n) const noexcept {
        return topology_ == topology::plain ? &n == plain_node_ : n.slots > 0;
    }

    /// Queues an idle token where its next transaction goes: the ASK target, the node serving
    /// its slot, or (while that is unknown) the unrouted list.
    void make_ready(token_state& t) {
        node* n = t.ask_to != nullptr ? t.ask_to : owner(t.slot);
        if (n == nullptr) {
            t.at = where::unrouted;
            unrouted_.push_back(&t);
            request_refresh();
            return;
        }
        t.at = where::ready;
        n->ready.push_back(&t);
    }

    /// Whether a node should have a connection: a seed until the topology is known (or while
    /// no node can be asked for the map), the plain Redis, a master serving slots, or a node
    /// with writes queued for it (an ASK target).
    [[nodiscard]] bool wanted(const node& n) const noexcept {
        switch (topology_) {
        case topology::unknown:
            return n.seed;
        case topology::plain:
            return &n == plain_node_;
        case topology::cluster:
            return n.slots > 0 || !n.ready.empty() ||
                   (n.seed && refresh_wanted_ && !any_node_ready());
        }
        return false;
    }

    [[nodiscard]] bool any_node_ready() const noexcept {
        for (const auto& n : nodes_) {
            if (n->conn.ready && !n->conn.closing) {
                return true;
            }
        }
        return false;
    }

    /// Asks for the slot map to be read (again) from a cluster node: on a cluster, or while
    /// the topology is unknown (a cluster node whose first CLUSTER SLOTS failed is asked again).
    /// A plain Redis has no map.
    void request_refresh() noexcept {
        if (topology_ != topology::plain) {
            refresh_wanted_ = true;
        }
    }
    [[nodiscard]] bool refresh_wanted() const noexcept { return refresh_wanted_; }

    /// `n` said it is not a cluster node: if nothing was known yet, it is the one Redis that
    /// takes every write. Later answers do not change the topology.
    void plain_server(node& n) {
        if (topology_ == topology::unknown) {
            topology_ = topology::plain;
            plain_node_ = &n;
            refresh_wanted_ = false;
            reroute();
        }
    }

    /// Takes `m` as the slot map: every slot's owner, and every queued token moved to the node
    /// that now serves it. An incomplete map (slots without a master) is used for the slots it
    /// has, and read again later.
    void install(const slot_map& m) {
        topology_ = topology::cluster;
        std::vector<node*> by_index;
        by_index.reserve(m.nodes().size());
        for (const cluster_node& c : m.nodes()) {
            by_index.push_back(&node_at(c.host, c.port));
        }
        for (const auto& n : nodes_) {
            n->slots = 0;
        }
        bool complete = true;
        for (std::size_t s = 0; s < cluster_slot_count; ++s) {
            const std::uint16_t i = m.index_for(static_cast<std::uint16_t>(s));
            node* n = i == slot_map::no_node ? nullptr : by_index[i];
            owners_[s] = n;
            if (n != nullptr) {
                ++n->slots;
            } else {
                complete = false;
            }
        }
        refresh_wanted_ = !complete;
        reroute();
    }

    /// A MOVED reply: `slot` is served by `there` now. The rest of the map is read again.
    void moved(std::uint16_t slot, node& there) {
        if (node*& o = owners_[slot]; o != &there) {
            if (o != nullptr) {
                --o->slots;
            }
            o = &there;
            ++there.slots;
        }
        request_refresh();
    }

    /// A node cannot be reached: tokens sent to it only by an ASK go back to their slot's
    /// owner (which will redirect them again if the migration still runs), and the map is read
    /// again in case a failover moved its slots.
    void node_unreachable(node& n) {
        request_refresh();
        std::vector<token_state*> moving;
        std::deque<token_state*> stay;
        for (token_state* t : n.ready) {
            if (t->ask_to == &n) {
                t->ask_to = nullptr;
                moving.push_back(t);
            } else {
                stay.push_back(t);
            }
        }
        n.ready.swap(stay);
        for (token_state* t : moving) {
            t->at = where::idle;
            make_ready(*t);
        }
    }

private:
    /// Moves every queued token to the node that serves its slot now (an ASK target keeps its
    /// token: the redirection is for that one transaction).
    void reroute() {
        std::vector<token_state*> moving;
        for (const auto& n : nodes_) {
            std::deque<token_state*> stay;
            for (token_state* t : n->ready) {
                if (t->ask_to == n.get() || owner(t->slot) == n.get()) {
                    stay.push_back(t);
                } else {
                    moving.push_back(t);
                }
            }
            n->ready.swap(stay);
        }
        moving.insert(moving.end(), unrouted_.begin(), unrouted_.end());
        unrouted_.clear();
        for (token_state* t : moving) {
            t->at = where::idle;
            make_ready(*t);
        }
    }

    sink_connections* core_;
    std::vector<std::unique_ptr<node>> nodes_;
    enum topology topology_ = topology::unknown;
    node* plain_node_ = nullptr;
    std::vector<node*> owners_; ///< per slot, on a cluster
    bool refresh_wanted_ = false;
    std::deque<token_state*> unrouted_;
};

} // namespace tradeagg::redis::detail
