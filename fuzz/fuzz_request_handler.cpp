// libFuzzer target for the aggregator server's request handling: each input is the raw bytes of
// an HTTP/1.1 request, read by Beast's parser with the server's limits and checked as the server
// checks a header (examples/aggregator_server/http_server.hpp); a request that passes is
// answered by the service of the throughput policy (examples/aggregator_server/service.hpp),
// with Redis off, an admin token, a token cap and a small per-request trade limit, so that every
// refusal is within reach. Whatever the request:
// - the handler does not throw and does not answer 500;
// - a JSON answer is a JSON object, and an error answer names the error;
// - trades enter the pipeline only as the answer says: the pipeline's count of accepted trades
//   grows by the answer's "accepted" (202, 429, 503), and not at all otherwise.
// A broken invariant aborts, which libFuzzer reports as a crash with the input that caused it.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include "http_server.hpp"
#include "server_config.hpp"
#include "service.hpp"

namespace {

namespace http = boost::beast::http;

[[noreturn]] void broken(const char* invariant, std::string_view detail = {}) {
    std::fprintf(stderr, "fuzz_request_handler: broken invariant: %s %.*s\n", invariant,
                 static_cast<int>(detail.size()), detail.data());
    std::abort();
}

constexpr std::string_view admin_token = "fuzz-admin";

/// The service every input is sent to, started once.
aggregator::service& the_service() {
    static const std::unique_ptr<aggregator::service> svc = [] {
        const std::map<std::string, std::string, std::less<>> env{
            {"REDIS_ADDR", "off"},
            {"ADMIN_TOKEN", std::string(admin_token)},
            {"MAX_TOKEN_PROCESSORS", "64"},
            {"WORKER_QUEUE_SIZE", "16"},
            {"MAX_WORKERS", "1"},
            {"INGEST_DEADLINE", "20ms"},
            {"MONITOR_SAMPLE_INTERVAL", "1s"},
        };
        aggregator::server_config cfg =
            aggregator::server_config_from_env([&env](const char* name) -> const char* {
                const auto it = env.find(std::string_view(name));
                return it == env.end() ? nullptr : it->second.c_str();
            });
        auto s = aggregator::make_service(std::move(cfg));
        s->start();
        return s;
    }();
    return *svc;
}

/// The pipeline's count of accepted trades, as GET /performance reports it.
std::uint64_t accepted_so_far() {
    aggregator::request req{http::verb::get, "/performance", 11};
    const aggregator::response res = the_service().handle(req);
    const boost::json::value v = boost::json::parse(res.body());
    return v.at("pipeline").at("accepted").to_number<std::uint64_t>();
}

void check_answer(const aggregator::request& req, const aggregator::response& res,
                  std::uint64_t before) {
    const unsigned status = res.result_int();
    if (status < 200 || status > 599) {
        broken("a status outside 2xx..5xx");
    }
    if (status == 500) {
        broken("500 from the handler for", req.target());
    }
    std::optional<std::uint64_t> answered;
    const auto type = res[http::field::content_type];
    if (type.starts_with("application/json")) {
        boost::system::error_code ec;
        const boost::json::value v = boost::json::parse(res.body(), ec);
        if (ec || !v.is_object()) {
            broken("a JSON answer that is not a JSON object:", res.body());
        }
        const auto& o = v.get_object();
        if (status >= 400 && (!o.contains("error") || !o.at("error").is_string())) {
            broken("an error answer without an error message:", res.body());
        }
        if (const auto* a = o.if_contains("accepted"); a != nullptr) {
            if (!a->is_number()) {
                broken("a non-numeric accepted count:", res.body());
            }
            answered = a->to_number<std::uint64_t>();
        }
    }
    if (req.method() != http::verb::post) {
        return; // only POST can push: /performance is not read again for the others
    }
    const std::uint64_t grew = accepted_so_far() - before;
    if (grew != answered.value_or(0)) {
        broken("the pipeline took other than the answer said:", res.body());
    }
    if (status == 400 && grew != 0) {
        broken("trades of a refused request entered the pipeline");
    }
}

} // namespace

// Boost.Lockfree on x86-64 keeps a tag in the upper 16 bits of its node pointers, where
// LeakSanitizer does not recognise them: the free list of the pipeline's multi-producer queue
// looks unreachable while the queue lives (it is freed with the queue). The same kind of
// exception as the `race_top:boost::lockfree::` TSan suppression of the tests.
extern "C" const char* __lsan_default_suppressions() {
    return "leak:boost::lockfree::detail::freelist_stack\n";
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    (void)the_service(); // started before the first input, not counted against it
    // Registered after the service was made, so it runs before the service is destroyed.
    std::atexit([] { (void)the_service().stop(std::chrono::seconds(5)); });
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    aggregator::service& svc = the_service();
    // As the server reads a request: its header and body limits (the body's made small here so
    // that the limit is reachable), the header checks it applies before the handler.
    http::request_parser<http::string_body> parser;
    parser.header_limit(8 * 1024);
    parser.body_limit(64 * 1024);
    parser.eager(true);
    boost::system::error_code ec;
    std::size_t used = 0;
    while (!ec && !parser.is_done() && used < size) {
        const std::size_t n = parser.put(boost::asio::buffer(data + used, size - used), ec);
        if (n == 0 && !ec) {
            break; // wants more than there is
        }
        used += n;
    }
    if (ec || !parser.is_done()) {
        return 0; // the server answers 400 or 413, or waits for more: the HTTP tests cover it
    }
    bool expect_continue = false;
    if (aggregator::detail::check_header(parser.get(), expect_continue)) {
        return 0; // the server answers this itself
    }
    const aggregator::request& req = parser.get();
    const std::uint64_t before = req.method() == http::verb::post ? accepted_so_far() : 0;
    aggregator::response res;
    try {
        res = svc.handle(req);
    } catch (const std::exception& e) {
        broken("the handler threw:", e.what());
    } catch (...) {
        broken("the handler threw something not an exception");
    }
    check_answer(req, res, before);
    return 0;
}
