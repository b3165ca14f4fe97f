// The Binance-compatible endpoints (examples/aggregator_server/binance_api.hpp) of a server
// running in this process, over a real redis-server: klines equal to the reference model's
// candles for every interval and every kind of range, tickers, symbols, Binance's errors, a
// restart (history from Redis alone), Redis gone, and Redis off. The same API through the real
// ccxt client is tests/test_binance_clients.sh.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include <boost/json.hpp>

#include <tradeagg/tradeagg.hpp>

#include "binance_api.hpp"
#include "compare.hpp"
#include "query_string.hpp"
#include "redis_server.hpp"
#include "reference_model.hpp"
#include "server_requests.hpp"

using namespace aggregator;
using namespace aggregator::testing;
using tradeagg::testing::close_enough;

namespace {

constexpr const char* mint = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
constexpr tradeagg::timestamp_ms start_ms = 1'732'867'200'000; // a whole day

struct posted {
    std::string token;
    tradeagg::trade t;
};

/// Three tokens over three hours, one trade every 7 s each, plus a burst of 40 trades within
/// four seconds for the 1 s candles; both sides, prices that move.
std::vector<posted> trades() {
    std::vector<posted> out;
    const char* tokens[] = {"SOL", mint, "bonk"};
    std::uint64_t id = 1;
    for (std::int64_t ms = 0; ms < 3 * 3'600'000; ms += 7'000) {
        for (int k = 0; k < 3; ++k) {
            tradeagg::trade t;
            t.price = 100.0 * (k + 1) + static_cast<double>((ms / 7'000 * 37 + k * 11) % 101) / 8;
            t.quantity = 0.25 + static_cast<double>((ms / 7'000 + k) % 13) / 4;
            t.taker = (ms / 7'000 + k) % 3 == 0 ? tradeagg::side::sell : tradeagg::side::buy;
            t.ts_ms = start_ms + ms + k * 1'000;
            t.id = id++;
            out.push_back({tokens[k], t});
        }
    }
    for (int i = 0; i < 40; ++i) {
        tradeagg::trade t;
        t.price = 150.0 + i % 7;
        t.quantity = 1.0 + i % 3;
        t.taker = i % 2 == 0 ? tradeagg::side::buy : tradeagg::side::sell;
        t.ts_ms = start_ms + 3 * 3'600'000 + 100 * i;
        t.id = id++;
        out.push_back({"SOL", t});
    }
    return out;
}

std::string body_of(const std::vector<posted>& ts, std::size_t from, std::size_t to) {
    boost::json::array a;
    for (std::size_t i = from; i < to; ++i) {
        const tradeagg::trade& t = ts[i].t;
        a.push_back(boost::json::object{{"token", ts[i].token},
                                        {"price", t.price},
                                        {"quantity", t.quantity},
                                        {"side", tradeagg::to_string(t.taker)},
                                        {"ts", t.ts_ms},
                                        {"id", t.id}});
    }
    return boost::json::serialize(a);
}

response get(service& svc, const std::string& target) {
    return svc.handle(make_request(http::verb::get, target));
}

/// Waits until the Redis sink has written everything (GET /health: nothing pending).
void wait_written(service& svc) {
    for (int i = 0; i < 500; ++i) {
        const boost::json::object h = json_of(get(svc, "/health"));
        if (h.at("redis").at("pending").to_number<std::int64_t>() == 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50)); // a flush in between
            if (json_of(get(svc, "/health")).at("redis").at("pending").to_number<std::int64_t>() ==
                0) {
                return;
            }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    FAIL("the Redis sink did not write everything within 10 s");
}

double number(const boost::json::value& v) {
    return std::strtod(std::string(v.as_string()).c_str(), nullptr);
}

/// Compares kline rows with the reference's candles; every field, sums to 1e-9.
void check_rows(const boost::json::array& rows, const std::vector<tradeagg::candle>& want) {
    REQUIRE(rows.size() == want.size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
        CAPTURE(i);
        const boost::json::array& r = rows[i].as_array();
        const tradeagg::candle& c = want[i];
        REQUIRE(r.size() == 12);
        CHECK(r[0].to_number<std::int64_t>() == c.open_time);
        CHECK(number(r[1]) == c.open);
        CHECK(number(r[2]) == c.high);
        CHECK(number(r[3]) == c.low);
        CHECK(number(r[4]) == c.close);
        CHECK(close_enough(number(r[5]), c.volume));
        CHECK(r[6].to_number<std::int64_t>() == c.close_time);
        CHECK(close_enough(number(r[7]), c.quote_volume));
        CHECK(r[8].to_number<std::uint64_t>() == c.trades);
        CHECK(close_enough(number(r[9]), c.taker_buy_volume));
        CHECK(close_enough(number(r[10]), c.taker_buy_quote_volume));
        CHECK(r[11].as_string() == "0");
    }
}

/// Every kind of range of every interval of every token against the reference.
void check_klines(service& svc,
                  const tradeagg::testing::reference_model<tradeagg::throughput_policy>& ref) {
    for (const auto& [token, data] : ref.tokens()) {
        for (const tradeagg::interval width : tradeagg::throughput_policy::intervals) {
            const std::string name(tradeagg::interval_name(width).view());
            CAPTURE(token);
            CAPTURE(name);
            const std::vector<tradeagg::candle> all = ref.candles(token, width);
            const std::string base = "/api/v3/klines?symbol=" + token + "&interval=" + name;
            // The newest 500 (the default), and the newest 3.
            const auto newest = [&](std::size_t n) {
                return std::vector<tradeagg::candle>(
                    all.end() - static_cast<std::ptrdiff_t>(std::min(n, all.size())), all.end());
            };
            check_rows(json_value_of(get(svc, base)).as_array(), newest(500));
            check_rows(json_value_of(get(svc, base + "&limit=3")).as_array(), newest(3));
            // From an open time, and from just after one (that candle is not included).
            const std::size_t mid = all.size() / 2;
            const std::int64_t from = all[mid].open_time;
            check_rows(
                json_value_of(get(svc, base + "&startTime=" + std::to_string(from) + "&limit=5"))
                    .as_array(),
                std::vector<tradeagg::candle>(
                    all.begin() + static_cast<std::ptrdiff_t>(mid),
                    all.begin() + static_cast<std::ptrdiff_t>(std::min(mid + 5, all.size()))));
            std::vector<tradeagg::candle> after;
            for (const tradeagg::candle& c : all) {
                if (c.open_time >= from + 1 && after.size() < 4) {
                    after.push_back(c);
                }
            }
            check_rows(json_value_of(
                           get(svc, base + "&startTime=" + std::to_string(from + 1) + "&limit=4"))
                           .as_array(),
                       after);
            // Up to an end time: the newest that open at or before it.
            std::vector<tradeagg::candle> before;
            for (const tradeagg::candle& c : all) {
                if (c.open_time <= from) {
                    before.push_back(c);
                }
            }
            if (before.size() > 2) {
                before.erase(before.begin(), before.end() - 2);
            }
            check_rows(
                json_value_of(get(svc, base + "&endTime=" + std::to_string(from) + "&limit=2"))
                    .as_array(),
                before);
        }
    }
}

} // namespace

TEST_CASE("query string: decoded parameters, first value kept, malformed escapes refused") {
    const query_string q(
        "/api/v3/klines?symbol=SOL&interval=1m&x=a%20b+c&symbol=OTHER&empty=&flag");
    CHECK(q.valid());
    CHECK(q.get("symbol") == "SOL");
    CHECK(q.get("x") == "a b c");
    CHECK(q.get("empty") == "");
    CHECK(q.get("flag") == "");
    CHECK_FALSE(q.get("missing"));
    CHECK(query_string("/p?symbols=%5B%22A%22%2C%22b%22%5D").get("symbols") == R"(["A","b"])");
    CHECK_FALSE(query_string("/p").get("symbol"));
    for (const char* bad : {"/p?a=%", "/p?a=%4", "/p?a=%zz", "/p?%g1=2"}) {
        CAPTURE(bad);
        CHECK_FALSE(query_string(bad).valid());
    }
}

TEST_CASE("Binance API: klines, tickers and symbols from Redis and memory, exact") {
    tradeagg::testing::redis_server redis;
    const env_map env{{"REDIS_ADDR", "127.0.0.1:" + std::to_string(redis.port())},
                      {"FLUSH_INTERVAL", "5ms"},
                      {"QUOTE_ASSET", "USDT"}};
    const std::vector<posted> ts = trades();
    tradeagg::testing::reference_model<tradeagg::throughput_policy> ref;
    for (const posted& p : ts) {
        ref.push(p.token, p.t);
    }

    auto svc = make_service(config_from(env));
    svc->start();
    for (std::size_t from = 0; from < ts.size(); from += 1'000) {
        const response r = svc->handle(
            make_request(http::verb::post, "/trades",
                         body_of(ts, from, std::min(ts.size(), from + 1'000)), "application/json"));
        REQUIRE(r.result() == http::status::accepted);
    }
    wait_written(*svc);

    SUBCASE("klines of every interval and range equal the reference") {
        check_klines(*svc, ref);
    }

    SUBCASE("ping, time, exchangeInfo") {
        CHECK(get(*svc, "/api/v3/ping").body() == "{}\n");
        const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
        const std::int64_t server =
            json_of(get(*svc, "/api/v3/time")).at("serverTime").to_number<std::int64_t>();
        CHECK(std::llabs(server - now) < 60'000);
        const boost::json::object info = json_of(get(*svc, "/api/v3/exchangeInfo"));
        CHECK(info.at("timezone") == "UTC");
        const boost::json::array& symbols = info.at("symbols").as_array();
        REQUIRE(symbols.size() == 3);
        std::vector<std::string> names;
        for (const boost::json::value& s : symbols) {
            names.emplace_back(s.at("symbol").as_string());
            CHECK(s.at("baseAsset") == s.at("symbol"));
            CHECK(s.at("quoteAsset") == "USDT");
            CHECK(s.at("status") == "TRADING");
            CHECK(s.at("filters").as_array().size() == 2);
        }
        CHECK(names == std::vector<std::string>{mint, "SOL", "bonk"}); // sorted, case kept
        const boost::json::object one = json_of(get(*svc, "/api/v3/exchangeInfo?symbol=bonk"));
        REQUIRE(one.at("symbols").as_array().size() == 1);
        CHECK(one.at("symbols").as_array()[0].at("symbol") == "bonk");
    }

    SUBCASE("tickers and the average price") {
        const auto last = [&](const std::string& token) {
            const tradeagg::trade* l = nullptr;
            for (const posted& p : ts) {
                if (p.token == token) {
                    l = &p.t;
                }
            }
            return *l;
        };
        const tradeagg::rolling_stats r = ref.rolling(mint);
        const boost::json::object t =
            json_of(get(*svc, std::string("/api/v3/ticker/24hr?symbol=") + mint));
        CHECK(t.at("symbol") == mint);
        CHECK(number(t.at("lastPrice")) == last(mint).price);
        CHECK(number(t.at("lastQty")) == last(mint).quantity);
        CHECK(t.at("lastId").to_number<std::uint64_t>() == last(mint).id);
        CHECK(number(t.at("openPrice")) == r.open);
        CHECK(number(t.at("highPrice")) == r.high);
        CHECK(number(t.at("lowPrice")) == r.low);
        CHECK(close_enough(number(t.at("volume")), r.volume));
        CHECK(close_enough(number(t.at("quoteVolume")), r.quote_volume));
        CHECK(t.at("count").to_number<std::uint64_t>() == r.trades);
        const boost::json::array all = json_value_of(get(*svc, "/api/v3/ticker/24hr")).as_array();
        CHECK(all.size() == 3);
        const boost::json::array prices =
            json_value_of(get(*svc, "/api/v3/ticker/price?symbols=%5B%22SOL%22%2C%22bonk%22%5D"))
                .as_array();
        REQUIRE(prices.size() == 2);
        CHECK(number(prices[0].at("price")) == last("SOL").price);
        CHECK(number(prices[1].at("price")) == last("bonk").price);
        // The average price: the 1m candles of the last five minutes up to the latest trade.
        double volume = 0.0;
        double quote = 0.0;
        const std::int64_t first = tradeagg::bucket_open(last("SOL").ts_ms, 60'000) - 4 * 60'000;
        for (const tradeagg::candle& c : ref.candles("SOL", std::chrono::minutes(1))) {
            if (c.open_time >= first) {
                volume += c.volume;
                quote += c.quote_volume;
            }
        }
        const boost::json::object avg = json_of(get(*svc, "/api/v3/avgPrice?symbol=SOL"));
        CHECK(avg.at("mins").to_number<int>() == 5);
        CHECK(close_enough(number(avg.at("price")), quote / volume));
    }

    SUBCASE("Binance's errors") {
        struct bad {
            std::string target;
            int status;
            int code;
        };
        const std::vector<bad> cases{
            {"/api/v3/klines?interval=1m", 400, -1102},
            {"/api/v3/klines?symbol=SOL", 400, -1102},
            {"/api/v3/klines?symbol=SOL&interval=3m", 400, -1120},
            {"/api/v3/klines?symbol=SOL&interval=1M", 400, -1120},
            {"/api/v3/klines?symbol=sol&interval=1m", 400, -1121}, // case matters
            {"/api/v3/klines?symbol=NOPE&interval=1m", 400, -1121},
            {"/api/v3/klines?symbol=a%7Bb&interval=1m", 400, -1121},
            {"/api/v3/klines?symbol=SOL&interval=1m&limit=0", 400, -1130},
            {"/api/v3/klines?symbol=SOL&interval=1m&limit=1001", 400, -1130},
            {"/api/v3/klines?symbol=SOL&interval=1m&limit=ten", 400, -1130},
            {"/api/v3/klines?symbol=SOL&interval=1m&startTime=-5", 400, -1100},
            {"/api/v3/klines?symbol=SOL&interval=1m&endTime=1e9", 400, -1100},
            {"/api/v3/klines?symbol=SOL&interval=1m&startTime=10&endTime=9", 400, -1128},
            {"/api/v3/klines?symbol=SOL&interval=1m&x=%zz", 400, -1100},
            {"/api/v3/ticker/24hr?symbol=NOPE", 400, -1121},
            {"/api/v3/ticker/price?symbols=%5B%22SOL%22%2C%22NOPE%22%5D", 400, -1121},
            {"/api/v3/ticker/price?symbols=SOL", 400, -1100},
            {"/api/v3/ticker/price?symbols=%5B%5D", 400, -1100},
            {"/api/v3/ticker/price?symbol=SOL&symbols=%5B%22SOL%22%5D", 400, -1128},
            {"/api/v3/exchangeInfo?symbol=NOPE", 400, -1121},
            {"/api/v3/avgPrice", 400, -1102},
            {"/api/v3/depth?symbol=SOL", 404, -1000},
        };
        for (const bad& b : cases) {
            CAPTURE(b.target);
            const response r = get(*svc, b.target);
            CHECK(static_cast<int>(r.result_int()) == b.status);
            const boost::json::object e = json_of(r);
            CHECK(e.at("code").to_number<int>() == b.code);
            CHECK_FALSE(e.at("msg").as_string().empty());
        }
        CHECK(svc->handle(make_request(http::verb::post, "/api/v3/klines")).result() ==
              http::status::method_not_allowed);
        // A range before the token's first trade, or after its last: empty, not an error.
        CHECK(get(*svc, "/api/v3/klines?symbol=SOL&interval=1h&endTime=1000").body() == "[]\n");
        CHECK(get(*svc, "/api/v3/klines?symbol=SOL&interval=1h&startTime=4102444800000").body() ==
              "[]\n");
    }

    SUBCASE("after a restart every candle comes from Redis, unchanged") {
        (void)svc->stop(std::chrono::seconds(5));
        svc.reset();
        auto again = make_service(config_from(env));
        again->start();
        check_klines(*again, ref);
        // Listed from Redis's token set, which the first server's registrar filled; tickers of
        // every token read from Redis too.
        CHECK(json_of(get(*again, "/api/v3/exchangeInfo?symbol=SOL"))
                  .at("symbols")
                  .as_array()
                  .size() == 1);
        const boost::json::array listed =
            json_of(get(*again, "/api/v3/exchangeInfo")).at("symbols").as_array();
        REQUIRE(listed.size() == 3);
        CHECK(listed[0].at("symbol") == mint);
        CHECK(listed[2].at("symbol") == "bonk");
        const boost::json::array tickers =
            json_value_of(get(*again, "/api/v3/ticker/24hr")).as_array();
        REQUIRE(tickers.size() == 3);
        CHECK(tickers[1].at("symbol") == "SOL");
        CHECK(tickers[1].at("count").to_number<std::uint64_t>() == ref.rolling("SOL").trades);
        CHECK(number(json_of(get(*again, "/api/v3/ticker/price?symbol=bonk")).at("price")) ==
              ts[ts.size() - 41].t.price);
        (void)again->stop(std::chrono::seconds(5));
    }

    SUBCASE("Redis gone: 503 with Binance's -1001, and the server goes on") {
        redis.stop();
        const response r = get(*svc, "/api/v3/klines?symbol=SOL&interval=1m");
        CHECK(r.result() == http::status::service_unavailable);
        CHECK(json_of(r).at("code").to_number<int>() == -1001);
        CHECK(get(*svc, "/api/v3/ping").result() == http::status::ok);
    }
    if (svc) {
        (void)svc->stop(std::chrono::seconds(1));
    }
}

TEST_CASE("Binance API with Redis off: the current candle of each interval, from memory") {
    auto svc = make_service(config_from({{"REDIS_ADDR", "off"}, {"FLUSH_INTERVAL", "5ms"}}));
    svc->start();
    const std::vector<posted> ts = trades();
    REQUIRE(svc->handle(make_request(http::verb::post, "/trades", body_of(ts, 0, 900),
                                     "application/json"))
                .result() == http::status::accepted);
    tradeagg::testing::reference_model<tradeagg::throughput_policy> ref;
    for (std::size_t i = 0; i < 900; ++i) {
        ref.push(ts[i].token, ts[i].t);
    }
    for (int i = 0; i < 500; ++i) {
        const response r = get(*svc, "/api/v3/ticker/price?symbol=SOL");
        if (r.result() == http::status::ok && number(json_of(r).at("price")) == ts[897].t.price) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const std::vector<tradeagg::candle> hours = ref.candles("SOL", std::chrono::hours(1));
    check_rows(json_value_of(get(*svc, "/api/v3/klines?symbol=SOL&interval=1h")).as_array(),
               {hours.back()});
    (void)svc->stop(std::chrono::seconds(1));
}

TEST_CASE("Binance API numbers: plain decimals that read back, never an exponent") {
    CHECK(detail::decimal(2.22318e-05) == "0.0000222318");
    CHECK(detail::decimal(100.0) == "100");
    CHECK(detail::decimal(0.1) == "0.1");
    CHECK(detail::decimal(1e21) == "1000000000000000000000");
    CHECK(detail::decimal(0.0) == "0");
    for (const double v : {1.0 / 3.0, 2.5e-9, 123456.789, 5e-324, 1.7976931348623157e308}) {
        const boost::json::string text = detail::decimal(v);
        CAPTURE(text.c_str());
        CHECK(std::string_view(text).find_first_of("eE") == std::string_view::npos);
        CHECK(std::strtod(text.c_str(), nullptr) == v);
    }
}
