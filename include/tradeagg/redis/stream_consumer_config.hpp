#pragma once
// What a partition-stream consumer is given (stream_consumer.hpp): the partitions, this
// instance's name and consumer group, the lease length, how much a round reads, how long the
// streams keep entries, and the cluster to reach.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>

#include <tradeagg/redis/cluster_client.hpp>

namespace tradeagg::redis {

struct stream_consumer_config {
    std::string key_prefix = "tradeagg";
    std::size_t partitions = 4; ///< INGEST_STREAMS: streams the producers write
    std::string instance;       ///< INSTANCE_ID: unique among live instances; the consumer name
    std::string group = "tradeagg";
    std::chrono::milliseconds lease_ttl{5'000};
    std::size_t read_count = 4'096; ///< entries read per partition per round
    std::size_t candle_retention_intervals = 1'000;
    /// How often a partition's holder stores a checkpoint of its state (partition_checkpoints.hpp),
    /// so that a new holder replays only what follows it; zero takes none (a new holder replays
    /// the stream from its start, so the stream must keep `retention`).
    std::chrono::milliseconds checkpoint_interval{2'000};
    /// How long a stream keeps an entry after its append (its id's time). With checkpoints, a
    /// floor: entries go once the previous checkpoint includes them and they are older than
    /// this (nothing: at once). Without, nothing is `exact_retention()`. Zero never trims.
    std::optional<std::chrono::milliseconds> retention;
    cluster_client::options redis;
};

} // namespace tradeagg::redis
