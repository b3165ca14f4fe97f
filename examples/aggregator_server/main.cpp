// tradeagg_aggregator_server: the seed's aggregator service on tradeagg. Configured by
// environment variables (see server_config.hpp and the README); serves HTTP on HTTP_ADDR
// (loopback by default) and writes aggregates to Redis at REDIS_ADDR.
//
// Exit status: 0 after a clean SIGTERM/SIGINT shutdown; 1 if Redis could not take the final
// flush within SHUTDOWN_TIMEOUT, or the server could not listen; 2 for a configuration error.

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>

#include <pthread.h>
#include <signal.h>

#include "http_server.hpp"
#include "server_config.hpp"
#include "service.hpp"

namespace {

bool is_loopback(const std::string& address) {
    return address.starts_with("127.") || address == "::1" || address == "localhost";
}

aggregator::http_limits limits_from(const aggregator::http_settings& h) {
    aggregator::http_limits l;
    l.header_bytes = h.max_header_bytes;
    l.body_bytes = h.max_body_bytes;
    l.header_timeout = h.header_timeout;
    l.request_timeout = h.request_timeout;
    l.write_timeout = h.write_timeout;
    l.idle_timeout = h.idle_timeout;
    l.max_requests_per_connection = h.max_requests_per_connection;
    l.max_connections = h.max_connections;
    return l;
}

} // namespace

int main() {
    using aggregator::log_line;
    // SIGTERM and SIGINT are waited for below; every thread started from here inherits the
    // mask, so none of them is interrupted. A peer that closes its socket must not end the
    // process (SIGPIPE).
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    std::unique_ptr<aggregator::service> service;
    aggregator::server_config cfg;
    try {
        cfg = aggregator::server_config_from_env(
            [](const char* name) -> const char* { return std::getenv(name); });
        service = aggregator::make_service(cfg);
    } catch (const tradeagg::config_error& e) {
        std::fprintf(stderr, "tradeagg_aggregator_server: configuration error: %s\n", e.what());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "tradeagg_aggregator_server: cannot start: %s\n", e.what());
        return 2;
    }
    for (const std::string& line : service->describe()) {
        log_line("config: " + line);
    }

    const std::string address = cfg.http.address.find(':') != std::string::npos
                                    ? "[" + cfg.http.address + "]:" + std::to_string(cfg.http.port)
                                    : cfg.http.address + ":" + std::to_string(cfg.http.port);
    std::unique_ptr<aggregator::http_server> http;
    try {
        http = std::make_unique<aggregator::http_server>(
            address, limits_from(cfg.http),
            [&service](const aggregator::request& req) { return service->handle(req); },
            static_cast<unsigned>(cfg.http.threads),
            [](std::string_view line) { log_line(std::string("http: ") + std::string(line)); },
            aggregator::response_observer{
                [](std::string_view target) {
                    return static_cast<std::size_t>(aggregator::route_of(target));
                },
                [&service](std::size_t route, unsigned status, std::chrono::nanoseconds took) {
                    service->observe_response(route, status, took);
                }});
        service->start();
        const std::uint16_t port = http->start();
        log_line("listening on http://" + cfg.http.address + ":" + std::to_string(port) +
                 (is_loopback(cfg.http.address)
                      ? " (loopback only: set HTTP_ADDR=0.0.0.0:" + std::to_string(port) +
                            " to accept other hosts)"
                      : " (all interfaces: protect it; admin endpoints " +
                            std::string(cfg.admin_token.empty() ? "are OPEN, set ADMIN_TOKEN"
                                                                : "need ADMIN_TOKEN") +
                            ")"));
    } catch (const std::exception& e) {
        log_line(std::string("cannot start: ") + e.what());
        if (http) {
            http->stop(std::chrono::milliseconds(0));
        }
        (void)service->stop(cfg.shutdown_timeout);
        return 1;
    }

    int signal = 0;
    sigwait(&stop_signals, &signal);
    const auto began = std::chrono::steady_clock::now();
    log_line(std::string(signal == SIGINT ? "SIGINT" : "SIGTERM") +
             ": stopping (no new connections; draining; flushing to Redis within " +
             std::to_string(cfg.shutdown_timeout.count()) + " ms)");
    // Requests in progress are answered; what they pushed is drained and flushed below.
    http->stop(std::min(cfg.shutdown_timeout / 4, std::chrono::milliseconds(2'000)));
    const auto left = cfg.shutdown_timeout - std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 std::chrono::steady_clock::now() - began);
    const aggregator::shutdown_report report =
        service->stop(std::max(left, std::chrono::milliseconds(0)));
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - began);
    if (!report.redis_complete) {
        log_line("stopped in " + std::to_string(took.count()) + " ms, but " +
                 std::to_string(report.redis_unwritten) + " keys were not written to Redis" +
                 (report.redis_dropped != 0
                      ? " and " + std::to_string(report.redis_dropped) + " updates were dropped"
                      : std::string()));
        return 1;
    }
    log_line("stopped in " + std::to_string(took.count()) + " ms; everything was written");
    return 0;
}
