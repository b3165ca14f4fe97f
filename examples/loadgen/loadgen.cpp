// tradeagg_loadgen: synthetic trades over keep-alive HTTP/1.1 to the aggregator server's
// POST /trades, reporting accepted trades per second and response latency.
//
//   tradeagg_loadgen [--url 127.0.0.1:8080] [--connections 2] [--batch 1000] [--duration 10]
//                    [--rate 0] [--tokens 10000] [--zipf 1.0] [--format ndjson|json]
//                    [--out-of-order 0.01] [--max-delay-ms 2000] [--seed N] [--progress] [--json]
//   tradeagg_loadgen --sink 127.0.0.1:9090      (a trivial server that accepts every trade)
//   tradeagg_loadgen --streams 4 [--redis 127.0.0.1:6379] [--prefix tradeagg]
//                    (XADD to the partition streams of the scale-out design instead of HTTP,
//                    on one Redis or a Redis Cluster: stream_writer.hpp)
//
// Every option is also read from LOADGEN_<NAME> (dashes as underscores, e.g.
// LOADGEN_MAX_DELAY_MS); the command line wins. Without --url or LOADGEN_URL, HTTP_ADDR (the
// server's own listen address) is used, then 127.0.0.1:8080. `--help` lists everything.
//
// How the trades are made cheap to send is told in request_pool.hpp, how their ids stay unique in
// trade_feed.hpp.
//
// Answers. 2xx adds the body's `accepted` count (the whole batch when the body has none); 503
// sleeps for Retry-After seconds (0.1 s when absent) and is counted; other 4xx and 5xx are
// counted, and the first 4xx body is printed. A connection the server closes, or an I/O error,
// is counted and the connection is opened again. The exit status is 0 when at least one trade
// was accepted, 1 otherwise or when the server cannot be reached, 2 for a bad option.
//
// Measuring the generator itself: run `tradeagg_loadgen --sink 127.0.0.1:9090` in one shell and
// point a load at it; the summary's "generator cpu" line gives trades per CPU-second.

#include <cstdio>
#include <exception>
#include <optional>

#include "diagnostics.hpp"
#include "options.hpp"
#include "run.hpp"
#include "sink_server.hpp"

int main(int argc, char** argv) {
    using loadgen::program;
    try {
        const std::optional<loadgen::options> o = loadgen::parse_options(argc, argv);
        if (!o) {
            return 0;
        }
        if (!o->sink.empty()) {
            loadgen::run_sink(*o);
        }
        return loadgen::run(*o);
    } catch (const loadgen::usage_error& e) {
        std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(program.size()), program.data(),
                     e.what());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(program.size()), program.data(),
                     e.what());
        return 1;
    }
}
