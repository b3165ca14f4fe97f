#pragma once
// A redis-server of the test's own: started on 127.0.0.1 on a free port, persistence off, in a
// temporary directory; stopped (or paused, or killed) by its pid.

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

namespace tradeagg::testing {

namespace detail {

/// True if a socket can be bound to 127.0.0.1:`port` right now.
inline bool bindable(int port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        throw std::runtime_error("free_port: socket() failed");
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
}

} // namespace detail

/// A TCP port on 127.0.0.1 that nothing listens on right now. It is drawn from 20,000-32,767,
/// below Linux's ephemeral range (32,768-60,999): a port the kernel hands out for bind(0) is
/// also what it hands out as the local end of the next outgoing connection, and tests running
/// in parallel open thousands of those between choosing a port and the server binding it.
inline int free_port() {
    static thread_local std::mt19937 pick{std::random_device{}() ^
                                          static_cast<unsigned>(::getpid())};
    std::uniform_int_distribution<int> port(20'000, 32'767);
    for (int attempt = 0; attempt < 200; ++attempt) {
        const int p = port(pick);
        if (detail::bindable(p)) {
            return p;
        }
    }
    throw std::runtime_error("free_port: no free port in 20000-32767 after 200 tries");
}

/// Whether a server of a cluster gets a bus port of its own (`--cluster-port`), chosen with
/// its port (by default the bus is the port + 10,000).
enum class cluster_bus { none, own_port };

class redis_server {
public:
    /// Starts redis-server (with `extra` arguments after the test's own, e.g.
    /// {"--cluster-enabled", "yes"}) and waits (up to 10 s) until it answers PING. A server
    /// that exits before it answers (its port was taken in the meantime) is started again on
    /// other ports, up to 5 times.
    explicit redis_server(std::vector<std::string> extra = {}, cluster_bus bus = cluster_bus::none)
        : extra_(std::move(extra)), bus_(bus) {
        char pattern[] = "/tmp/tradeagg-redis-XXXXXX";
        if (::mkdtemp(pattern) == nullptr) {
            throw std::runtime_error("redis_server: mkdtemp failed");
        }
        dir_ = pattern;
        for (int attempt = 1;; ++attempt) {
            port_ = free_port();
            bus_port_ = bus_ == cluster_bus::own_port ? free_port() : 0;
            if (bus_port_ == port_) {
                continue;
            }
            if (launch() || attempt >= 5) {
                break;
            }
        }
        if (pid_ < 0) {
            const std::string why = "redis_server: no answer on port " + std::to_string(port_) +
                                    "; its log ends: " + log_tail();
            std::error_code ec;
            std::filesystem::remove_all(dir_, ec);
            throw std::runtime_error(why);
        }
    }

    redis_server(const redis_server&) = delete;
    redis_server& operator=(const redis_server&) = delete;

    ~redis_server() {
        stop();
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }

    [[nodiscard]] int port() const noexcept { return port_; }

    /// Starts it again on the same port (after `kill` or `stop`): empty, unless its arguments
    /// made it keep an append-only file.
    void start() {
        if (!launch()) {
            throw std::runtime_error("redis_server: no answer on port " + std::to_string(port_) +
                                     "; its log ends: " + log_tail());
        }
    }

    /// SIGTERM and wait. Idempotent.
    void stop() { end(SIGTERM); }
    /// SIGKILL and wait: the server loses everything.
    void kill() { end(SIGKILL); }
    /// SIGSTOP: connections stay open (and new ones are accepted by the kernel) but nothing
    /// answers.
    void pause() { ::kill(pid_, SIGSTOP); }
    /// SIGCONT.
    void resume() { ::kill(pid_, SIGCONT); }

    /// True if the server answers PING within a second.
    [[nodiscard]] bool answers() const {
        const timeval timeout{1, 0};
        redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, timeout);
        bool ok = false;
        if (c != nullptr && c->err == 0) {
            (void)redisSetTimeout(c, timeout);
            auto* reply = static_cast<redisReply*>(redisCommand(c, "PING"));
            ok = reply != nullptr && reply->type == REDIS_REPLY_STATUS;
            if (reply != nullptr) {
                freeReplyObject(reply);
            }
        }
        if (c != nullptr) {
            redisFree(c);
        }
        return ok;
    }

    /// Runs one command on a fresh blocking connection; the reply as text ("" for nil).
    [[nodiscard]] std::string command(const std::vector<std::string>& args) const {
        redisContext* c = redisConnect("127.0.0.1", port_);
        if (c == nullptr || c->err != 0) {
            if (c != nullptr) {
                redisFree(c);
            }
            throw std::runtime_error("redis_server: cannot connect");
        }
        std::vector<const char*> argv;
        std::vector<std::size_t> lengths;
        for (const std::string& a : args) {
            argv.push_back(a.data());
            lengths.push_back(a.size());
        }
        auto* reply = static_cast<redisReply*>(
            redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lengths.data()));
        std::string out;
        if (reply != nullptr) {
            if (reply->type == REDIS_REPLY_INTEGER) {
                out = std::to_string(reply->integer);
            } else if (reply->str != nullptr) {
                out.assign(reply->str, reply->len);
            }
            freeReplyObject(reply);
        }
        redisFree(c);
        return out;
    }

private:
    /// Forks redis-server on `port_` and waits (up to 10 s) until it answers. False, with no
    /// process left, if it exits first or never answers.
    bool launch() {
        const std::string port = std::to_string(port_);
        const std::string bus_port = std::to_string(bus_port_);
        const std::string log = dir_ + "/redis.log";
        pid_ = ::fork();
        if (pid_ < 0) {
            throw std::runtime_error("redis_server: fork failed");
        }
        if (pid_ == 0) {
            // Does not hold the test's output open: ctest waits for every holder of its pipe,
            // so a server left behind by a crashed test would turn the crash into a timeout.
            // (PR_SET_PDEATHSIG would fire when the forking *thread* ends, and tests start
            // servers from short-lived threads.)
            const int null = ::open("/dev/null", O_RDWR);
            if (null >= 0) {
                ::dup2(null, STDIN_FILENO);
                ::dup2(null, STDOUT_FILENO);
                ::dup2(null, STDERR_FILENO);
            }
            std::vector<const char*> argv{"redis-server", "--port",    port.c_str(), "--bind",
                                          "127.0.0.1",    "--save",    "",           "--appendonly",
                                          "no",           "--dir",     dir_.c_str(), "--daemonize",
                                          "no",           "--logfile", log.c_str()};
            if (bus_port_ != 0) {
                argv.insert(argv.end(), {"--cluster-port", bus_port.c_str()});
            }
            for (const std::string& a : extra_) {
                argv.push_back(a.c_str());
            }
            argv.push_back(nullptr);
            ::execvp("redis-server", const_cast<char* const*>(argv.data()));
            std::_Exit(127);
        }
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (!answers()) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                pid_ = -1; // exited: e.g. its port or bus port was taken
                return false;
            }
            if (std::chrono::steady_clock::now() > deadline) {
                stop();
                return false;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        return true;
    }

    /// The last lines of the server's log, for an error message.
    [[nodiscard]] std::string log_tail() const {
        std::ifstream in(dir_ + "/redis.log");
        std::vector<std::string> lines;
        for (std::string line; std::getline(in, line);) {
            lines.push_back(std::move(line));
        }
        std::string out;
        for (std::size_t i = lines.size() > 5 ? lines.size() - 5 : 0; i < lines.size(); ++i) {
            out += (out.empty() ? "" : " | ") + lines[i];
        }
        return out.empty() ? "(empty)" : out;
    }

    void end(int signal) {
        if (pid_ > 0) {
            ::kill(pid_, signal); // SIGKILL ends even a paused server, without it answering
            if (signal != SIGKILL) {
                ::kill(pid_, SIGCONT); // a paused server acts on SIGTERM once it runs
            }
            int status = 0;
            ::waitpid(pid_, &status, 0);
            pid_ = -1;
        }
    }

    int port_ = 0;
    int bus_port_ = 0; ///< with cluster_bus::own_port, else 0
    std::vector<std::string> extra_;
    cluster_bus bus_;
    pid_t pid_ = -1;
    std::string dir_;
};

} // namespace tradeagg::testing
