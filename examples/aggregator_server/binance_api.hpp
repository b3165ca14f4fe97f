#pragma once
// Binance-compatible market data over REST, so that clients written for Binance's spot API
// (ccxt, charting libraries, bots) read the server's candles unmodified:
//
//   GET /api/v3/ping                      {}
//   GET /api/v3/time                      {"serverTime": ms}
//   GET /api/v3/exchangeInfo              every token known as a symbol (symbol=, symbols=)
//   GET /api/v3/klines                    symbol, interval, startTime, endTime, limit
//   GET /api/v3/ticker/24hr               one symbol, some (symbols=[...]) or all
//   GET /api/v3/ticker/price              the same, the latest price only
//   GET /api/v3/avgPrice                  volume-weighted average price of the last 5 minutes
//
// Symbols. A symbol is the token's name exactly, case and all (tokens are often base58 mints,
// where case matters); its base asset is the token and its quote asset QUOTE_ASSET. The tokens
// listed are those in memory (trades accepted since the server started) and those in Redis's
// token set (keys.hpp's `tokens_key`: added by this server's registrar and by the stream
// consumer, so a restarted server and every instance reading partition streams list them); a
// token named in a request is also known when Redis holds its latest-trade hash.
//
// Klines. History is read from Redis (candle_reader.hpp), the token's current candle of the
// interval from memory, which is never older than Redis's. The seven intervals of the policy
// only; a bucket in which no trade happened has no row (Binance's has one, with zero volume).
// Without startTime the newest `limit` rows up to the token's latest trade are answered (the
// latest trade's time, not the wall clock: a replayed history is answered as it was).
//
// Errors are Binance's: HTTP 400 with {"code": <negative>, "msg": ...} for a bad parameter
// (-1100 illegal characters, -1102 a mandatory parameter missing, -1120 bad interval, -1121
// unknown symbol, -1128 a combination of parameters not valid, -1130 a value not valid), and
// 503 with -1001 when Redis cannot be read.

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <boost/beast/http.hpp>
#include <boost/json.hpp>

#include <tradeagg/interval.hpp>
#include <tradeagg/redis/candle_reader.hpp>
#include <tradeagg/redis/keys.hpp>
#include <tradeagg/trade.hpp>

#include "query_string.hpp"
#include "responses.hpp"
#include "service_state.hpp"

namespace aggregator {

namespace detail {

/// A Binance error: its HTTP status, code and message.
struct api_error {
    http::status status = http::status::bad_request;
    int code = 0;
    std::string msg;
};

inline response api_error_response(const request& req, const api_error& e) {
    boost::json::object body;
    body["code"] = e.code;
    body["msg"] = e.msg;
    return json_response(req, e.status, body);
}

/// A number as Binance writes prices and quantities: a string of plain decimal digits, never
/// an exponent ("0.0000222318", not "2.22318e-05"), the shortest that reads back as `v`.
inline boost::json::string decimal(double v) {
    if (!std::isfinite(v)) {
        return "0";
    }
    char text[400]; // the longest fixed form of a double, 5e-324, has 327 digits
    const auto r = std::to_chars(text, text + sizeof text, v, std::chars_format::fixed);
    return boost::json::string(std::string_view(text, static_cast<std::size_t>(r.ptr - text)));
}

/// Binance's row for a kline: twelve fields, prices and volumes as strings.
inline boost::json::array kline_row(const tradeagg::candle& c) {
    return boost::json::array{c.open_time,
                              decimal(c.open),
                              decimal(c.high),
                              decimal(c.low),
                              decimal(c.close),
                              decimal(c.volume),
                              c.close_time,
                              decimal(c.quote_volume),
                              c.trades,
                              decimal(c.taker_buy_volume),
                              decimal(c.taker_buy_quote_volume),
                              "0"};
}

/// A millisecond time parameter: digits only, as Binance requires.
inline std::optional<std::int64_t> time_param(const query_string& q, const char* name) {
    const auto v = q.get(name);
    if (!v) {
        return std::nullopt;
    }
    std::int64_t out = 0;
    const auto r = std::from_chars(v->data(), v->data() + v->size(), out);
    if (v->empty() || v->size() > 20 || r.ec != std::errc{} || r.ptr != v->data() + v->size() ||
        out < 0) {
        throw api_error{http::status::bad_request, -1100,
                        "Illegal characters found in parameter '" + std::string(name) +
                            "'; legal range is '^[0-9]{1,20}$'."};
    }
    return out;
}

} // namespace detail

/// The Binance-compatible endpoints of a server of one policy. Any thread.
template <class Policy>
class binance_api {
public:
    static constexpr std::string_view prefix = "/api/v3/";
    /// Rows one klines request may ask for, and its default.
    static constexpr std::size_t max_limit = 1'000;
    static constexpr std::size_t default_limit = 500;

    explicit binance_api(const service_state<Policy>& state) : state_(state) {}

    /// Answers a GET under /api/v3/. Blocks for Redis reads (up to REDIS_READ_TIMEOUT).
    response handle(const request& req) const {
        const std::string_view target(req.target().data(), req.target().size());
        const std::string_view path = target.substr(0, target.find('?')).substr(prefix.size());
        const query_string q(target);
        try {
            if (!q.valid()) {
                throw detail::api_error{http::status::bad_request, -1100,
                                        "Illegal characters found in a parameter."};
            }
            if (path == "ping") {
                return detail::json_response(req, http::status::ok, boost::json::object{});
            }
            if (path == "time") {
                return detail::json_response(req, http::status::ok,
                                             boost::json::object{{"serverTime", now_ms()}});
            }
            if (path == "exchangeInfo") {
                return exchange_info(req, q);
            }
            if (path == "klines") {
                return klines(req, q);
            }
            if (path == "ticker/24hr") {
                return tickers(req, q, true);
            }
            if (path == "ticker/price") {
                return tickers(req, q, false);
            }
            if (path == "avgPrice") {
                return avg_price(req, q);
            }
            return detail::api_error_response(
                req, {http::status::not_found, -1000,
                      "Unknown endpoint /api/v3/" + std::string(path) + "."});
        } catch (const detail::api_error& e) {
            return detail::api_error_response(req, e);
        } catch (const std::runtime_error& e) {
            return detail::api_error_response(
                req, {http::status::service_unavailable, -1001,
                      std::string("Internal error; unable to process your request. Please try "
                                  "again. (") +
                          e.what() + ")"});
        }
    }

private:
    using snapshot = typename token_snapshots<service_state<Policy>::interval_count>::snapshot;

    /// What the server knows of a token: from memory, from Redis, or both.
    struct known_token {
        std::string name;
        std::optional<snapshot> memory;
        tradeagg::redis::token_summary redis;

        [[nodiscard]] std::optional<tradeagg::latest_trade> latest() const {
            std::optional<tradeagg::latest_trade> l;
            if (memory && memory->has_token_update) {
                l = memory->latest;
            }
            if (redis.latest && (!l || redis.latest->ts_ms > l->ts_ms)) {
                l = redis.latest;
            }
            return l;
        }
        [[nodiscard]] std::optional<tradeagg::rolling_stats> rolling() const {
            if (memory && memory->has_token_update) {
                return memory->rolling; // never older than Redis's
            }
            return redis.rolling;
        }
    };

    static std::int64_t now_ms() {
        return std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
            .count();
    }

    /// The token named `symbol`, or Binance's -1121. Reads Redis when the token is not in
    /// memory.
    known_token find(std::string_view symbol) const {
        known_token t;
        if (tradeagg::validate_token(symbol) != tradeagg::reject_reason::none) {
            throw detail::api_error{http::status::bad_request, -1121, "Invalid symbol."};
        }
        t.name = std::string(symbol);
        t.memory = state_.snapshots.find(symbol);
        if (state_.history && !t.memory) {
            t.redis = state_.history->summary(symbol);
        }
        if (!t.memory && !t.redis.latest) {
            throw detail::api_error{http::status::bad_request, -1121, "Invalid symbol."};
        }
        return t;
    }

    std::string_view symbol_param(const query_string& q) const {
        const auto s = q.get("symbol");
        if (!s || s->empty()) {
            throw detail::api_error{http::status::bad_request, -1102,
                                    "Mandatory parameter 'symbol' was not sent, was empty/null, "
                                    "or malformed."};
        }
        return *s;
    }

    /// The symbols a request names: `symbol=X`, `symbols=["X","Y"]` (a JSON array), or none
    /// (empty: every token in memory).
    std::vector<std::string> symbols_param(const query_string& q) const {
        const auto one = q.get("symbol");
        const auto many = q.get("symbols");
        if (one && many) {
            throw detail::api_error{http::status::bad_request, -1128,
                                    "Combination of optional parameters invalid."};
        }
        if (one) {
            return {std::string(*one)};
        }
        if (!many) {
            return {};
        }
        boost::system::error_code ec;
        const boost::json::value v = boost::json::parse(*many, ec);
        std::vector<std::string> out;
        if (!ec && v.is_array() && !v.get_array().empty()) {
            for (const boost::json::value& e : v.get_array()) {
                if (!e.is_string()) {
                    out.clear();
                    break;
                }
                out.emplace_back(e.get_string().c_str(), e.get_string().size());
            }
        }
        if (out.empty()) {
            throw detail::api_error{http::status::bad_request, -1100,
                                    "Illegal characters found in parameter 'symbols'; legal "
                                    "range is a JSON array of symbols."};
        }
        return out;
    }

    /// Every token known: in memory, and in Redis's token set; sorted, so that an answer does
    /// not change order between calls.
    std::vector<std::string> all_tokens() const {
        std::vector<std::string> names = state_.snapshots.names();
        if (state_.history) {
            std::vector<std::string> listed = state_.history->tokens();
            names.insert(names.end(), std::make_move_iterator(listed.begin()),
                         std::make_move_iterator(listed.end()));
        }
        std::sort(names.begin(), names.end());
        names.erase(std::unique(names.begin(), names.end()), names.end());
        return names;
    }

    /// What is known of every token, those in memory from memory and the others from Redis,
    /// read at once; a listed token Redis has no latest trade for (expired) is left out.
    std::vector<known_token> all_known() const {
        std::vector<known_token> out;
        std::vector<std::string> from_redis;
        for (std::string& name : all_tokens()) {
            known_token t;
            t.memory = state_.snapshots.find(name);
            t.name = std::move(name);
            if (t.memory) {
                out.push_back(std::move(t));
            } else {
                from_redis.push_back(std::move(t.name));
            }
        }
        if (!from_redis.empty()) {
            std::vector<tradeagg::redis::token_summary> s = state_.history->summaries(from_redis);
            for (std::size_t i = 0; i < from_redis.size(); ++i) {
                if (s[i].latest) {
                    out.push_back({std::move(from_redis[i]), std::nullopt, std::move(s[i])});
                }
            }
            std::sort(out.begin(), out.end(),
                      [](const known_token& a, const known_token& b) { return a.name < b.name; });
        }
        return out;
    }

    boost::json::object symbol_json(std::string_view name) const {
        const auto filter =
            [](std::string_view type,
               std::initializer_list<std::pair<std::string_view, std::string_view>> fields) {
                boost::json::object f;
                f["filterType"] = type;
                for (const auto& [k, v] : fields) {
                    f[k] = v;
                }
                return f;
            };
        boost::json::object s;
        s["symbol"] = name;
        s["status"] = "TRADING";
        s["baseAsset"] = name;
        s["baseAssetPrecision"] = 8;
        s["quoteAsset"] = state_.cfg.quote_asset;
        s["quotePrecision"] = 8;
        s["quoteAssetPrecision"] = 8;
        s["orderTypes"] = boost::json::array{"LIMIT", "MARKET"};
        s["icebergAllowed"] = false;
        s["ocoAllowed"] = false;
        s["isSpotTradingAllowed"] = true;
        s["isMarginTradingAllowed"] = false;
        s["permissions"] = boost::json::array{"SPOT"};
        s["permissionSets"] = boost::json::array{boost::json::array{"SPOT"}};
        // The trades' prices and quantities are doubles with no tick: the finest steps a
        // client rounds to.
        s["filters"] = boost::json::array{
            filter("PRICE_FILTER",
                   {{"minPrice", "0"}, {"maxPrice", "0"}, {"tickSize", "0.00000001"}}),
            filter("LOT_SIZE",
                   {{"minQty", "0"}, {"maxQty", "9000000000"}, {"stepSize", "0.00000001"}})};
        return s;
    }

    response exchange_info(const request& req, const query_string& q) const {
        std::vector<std::string> names = symbols_param(q);
        if (names.empty()) {
            names = all_tokens();
        } else {
            for (const std::string& n : names) {
                (void)find(n); // -1121 for any unknown
            }
        }
        boost::json::array symbols;
        for (const std::string& n : names) {
            symbols.push_back(symbol_json(n));
        }
        boost::json::object body;
        body["timezone"] = "UTC";
        body["serverTime"] = now_ms();
        body["rateLimits"] =
            boost::json::array{boost::json::object{{"rateLimitType", "REQUEST_WEIGHT"},
                                                   {"interval", "MINUTE"},
                                                   {"intervalNum", 1},
                                                   {"limit", 6000}}};
        body["exchangeFilters"] = boost::json::array{};
        body["symbols"] = std::move(symbols);
        return detail::json_response(req, http::status::ok, body);
    }

    /// The index of the policy's interval named `text`, or Binance's -1120.
    static std::size_t interval_param(const query_string& q) {
        const auto text = q.get("interval");
        if (!text || text->empty()) {
            throw detail::api_error{http::status::bad_request, -1102,
                                    "Mandatory parameter 'interval' was not sent, was "
                                    "empty/null, or malformed."};
        }
        for (std::size_t i = 0; i < Policy::intervals.size(); ++i) {
            if (tradeagg::interval_name(Policy::intervals[i]).view() == *text) {
                return i;
            }
        }
        throw detail::api_error{http::status::bad_request, -1120, "Invalid interval."};
    }

    static std::size_t limit_param(const query_string& q) {
        const auto text = q.get("limit");
        if (!text) {
            return default_limit;
        }
        std::size_t n = 0;
        const auto r = std::from_chars(text->data(), text->data() + text->size(), n);
        if (text->empty() || r.ec != std::errc{} || r.ptr != text->data() + text->size() || n < 1 ||
            n > max_limit) {
            throw detail::api_error{http::status::bad_request, -1130,
                                    "Data sent for parameter 'limit' is not valid."};
        }
        return n;
    }

    response klines(const request& req, const query_string& q) const {
        const std::string_view symbol = symbol_param(q);
        const std::size_t index = interval_param(q);
        const std::size_t limit = limit_param(q);
        const auto start = detail::time_param(q, "startTime");
        const auto end = detail::time_param(q, "endTime");
        if (start && end && *start > *end) {
            throw detail::api_error{http::status::bad_request, -1128,
                                    "Combination of optional parameters invalid."};
        }
        const known_token t = find(symbol);
        const auto rows = candles(t, index, start, end, limit);
        boost::json::array body;
        for (const tradeagg::candle& c : rows) {
            body.push_back(detail::kline_row(c));
        }
        return detail::json_response(req, http::status::ok, body);
    }

    /// The candles of interval `index` a klines request asks for, oldest first: Redis's,
    /// with the one in memory over Redis's version of it.
    std::vector<tradeagg::candle> candles(const known_token& t, std::size_t index,
                                          std::optional<std::int64_t> start,
                                          std::optional<std::int64_t> end,
                                          std::size_t limit) const {
        const tradeagg::interval width = Policy::intervals[index];
        const std::int64_t w = width.count();
        const auto latest = t.latest();
        std::optional<tradeagg::candle> current;
        if (t.memory && t.memory->candles[index]) {
            current = *t.memory->candles[index];
        }
        std::int64_t newest_ms = latest ? latest->ts_ms : 0;
        if (current) {
            newest_ms = std::max(newest_ms, current->open_time);
        }
        if (!latest && !current) {
            return {};
        }
        const std::int64_t last_time = end ? std::min(*end, newest_ms) : newest_ms;
        if (start && *start > last_time) {
            return {};
        }
        tradeagg::redis::candle_range r;
        r.width = width;
        r.limit = limit;
        r.last_open = tradeagg::bucket_open(last_time, w);
        if (start) {
            // Rows open at or after startTime, as Binance's do.
            r.first_open = tradeagg::bucket_open(*start, w);
            if (r.first_open < *start) {
                r.first_open += w;
            }
        } else {
            r.newest = true; // from the newest back, as far as there are candles
            r.first_open = 0;
        }
        std::vector<tradeagg::candle> rows;
        if (state_.history) {
            rows = state_.history->range(t.name, r);
        }
        if (current && current->open_time >= r.first_open && current->open_time <= r.last_open) {
            const auto at = std::lower_bound(
                rows.begin(), rows.end(), current->open_time,
                [](const tradeagg::candle& c, std::int64_t open) { return c.open_time < open; });
            if (at != rows.end() && at->open_time == current->open_time) {
                *at = *current;
            } else {
                rows.insert(at, *current);
            }
            if (rows.size() > limit) {
                if (r.newest) {
                    rows.erase(rows.begin());
                } else {
                    rows.pop_back();
                }
            }
        }
        return rows;
    }

    response tickers(const request& req, const query_string& q, bool full) const {
        const std::vector<std::string> asked = symbols_param(q);
        std::vector<known_token> tokens;
        if (asked.empty()) {
            tokens = all_known();
        } else {
            for (const std::string& n : asked) {
                tokens.push_back(find(n));
            }
        }
        boost::json::array all;
        for (const known_token& t : tokens) {
            all.push_back(full ? ticker_24hr(t) : ticker_price(t));
        }
        if (q.get("symbol")) {
            return detail::json_response(req, http::status::ok, all.front());
        }
        return detail::json_response(req, http::status::ok, all);
    }

    static boost::json::object ticker_price(const known_token& t) {
        boost::json::object o;
        o["symbol"] = t.name;
        const auto l = t.latest();
        o["price"] = detail::decimal(l ? l->price : 0.0);
        return o;
    }

    static boost::json::object ticker_24hr(const known_token& t) {
        const tradeagg::rolling_stats r = t.rolling().value_or(tradeagg::rolling_stats{});
        const auto l = t.latest();
        boost::json::object o;
        o["symbol"] = t.name;
        o["priceChange"] = detail::decimal(r.price_change);
        o["priceChangePercent"] = detail::decimal(r.price_change_percent);
        o["weightedAvgPrice"] = detail::decimal(r.vwap);
        o["lastPrice"] = detail::decimal(l ? l->price : r.last);
        o["lastQty"] = detail::decimal(l ? l->quantity : 0.0);
        o["openPrice"] = detail::decimal(r.open);
        o["highPrice"] = detail::decimal(r.high);
        o["lowPrice"] = detail::decimal(r.low);
        o["volume"] = detail::decimal(r.volume);
        o["quoteVolume"] = detail::decimal(r.quote_volume);
        o["openTime"] = r.window_start;
        o["closeTime"] = r.window_end;
        o["lastId"] = l ? static_cast<std::int64_t>(l->id) : -1;
        o["count"] = r.trades;
        return o;
    }

    /// Binance's current average price: here the volume-weighted price of the trades in the
    /// five one-minute candles up to the latest trade.
    response avg_price(const request& req, const query_string& q) const {
        const known_token t = find(symbol_param(q));
        std::optional<std::size_t> minute;
        for (std::size_t i = 0; i < Policy::intervals.size(); ++i) {
            if (Policy::intervals[i] == std::chrono::minutes(1)) {
                minute = i;
            }
        }
        if (!minute) {
            throw detail::api_error{http::status::bad_request, -1120,
                                    "Invalid interval: the server keeps no 1m candles."};
        }
        const auto latest = t.latest();
        double volume = 0.0;
        double quote = 0.0;
        if (latest) {
            const std::int64_t first = tradeagg::bucket_open(latest->ts_ms, 60'000) - 4 * 60'000;
            const auto rows = candles(t, *minute, first, std::nullopt, 5);
            for (const tradeagg::candle& c : rows) {
                volume += c.volume;
                quote += c.quote_volume;
            }
        }
        boost::json::object o;
        o["mins"] = 5;
        o["price"] = detail::decimal(volume > 0.0 ? quote / volume : 0.0);
        o["closeTime"] = latest ? latest->ts_ms : 0;
        return detail::json_response(req, http::status::ok, o);
    }

    const service_state<Policy>& state_;
};

} // namespace aggregator
