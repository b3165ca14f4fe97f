#pragma once
// The aggregator server binary as a child process, for tests that run the real thing.

#include <csignal>
#include <cstdlib>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>

namespace tradeagg::testing {

/// The server binary, started with `env` added to this process's environment, its standard
/// error going to `log` when given.
class server_process {
public:
    static const char* binary() { return TRADEAGG_SERVER_BINARY; }

    explicit server_process(const std::vector<std::string>& env, const std::string& log = {}) {
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            for (const std::string& e : env) {
                ::putenv(const_cast<char*>(e.c_str()));
            }
            if (!log.empty()) {
                const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
                if (fd < 0 || ::dup2(fd, STDERR_FILENO) < 0) {
                    std::_Exit(126);
                }
            }
            ::execl(binary(), binary(), nullptr);
            std::_Exit(127);
        }
    }
    ~server_process() {
        if (pid_ > 0) {
            ::kill(pid_, SIGKILL);
            (void)wait();
        }
    }
    void signal(int s) const { ::kill(pid_, s); }
    /// Waits for the exit; its status (or -1 if killed by a signal).
    int wait() {
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }

private:
    pid_t pid_ = -1;
};

} // namespace tradeagg::testing
