// The aggregator server's Binance-compatible REST API (/api/v3/...) driven by the real, unmodified
// ccxt client (the `binance` class, version pinned in package.json).
//
//   node tests/binance/ccxt_test.mjs BASE_URL                  (tests/test_binance_clients.sh)
//   node tests/binance/ccxt_test.mjs BASE_URL --markets-only
//
// It posts deterministic trades to POST /trades (three tokens over three hours, plus a burst of a
// few seconds), computes the candles itself, and checks what ccxt makes of the server's answers:
// loadMarkets, fetchOHLCV with and without since/limit/until, the raw kline rows through ccxt's
// implicit API (every field, which fetchOHLCV drops), fetchTicker(s), fetchLastPrices, and the
// errors a bad interval or an unknown symbol raise. The quote asset expected is QUOTE_ASSET as
// the server reads it (default USD). --markets-only posts one trade per token and checks only
// loadMarkets (for a server started with another QUOTE_ASSET).
// One line per check; exit status 1 if any failed.

import { readFileSync } from 'node:fs';

import ccxt from 'ccxt';

const base = process.argv[2];
const marketsOnly = process.argv.includes('--markets-only');
if (!base || !/^http:\/\//.test(base)) {
    console.error('usage: node ccxt_test.mjs http://127.0.0.1:PORT [--markets-only]');
    process.exit(2);
}
const quoteAsset = process.env.QUOTE_ASSET || 'USD';

// ---- checks -------------------------------------------------------------------------------

let passed = 0;
let failed = 0;
function report(name, problem) {
    if (problem) {
        failed += 1;
        console.log(`FAIL  ${name}: ${problem}`);
    } else {
        passed += 1;
        console.log(`ok    ${name}`);
    }
}
// check NAME FN: FN returns nothing when all is well, or a text saying what is wrong; a throw
// is a failure too, with the error's class and message.
async function check(name, fn) {
    let problem;
    try {
        problem = await fn();
    } catch (e) {
        problem = `threw ${e?.constructor?.name ?? typeof e}: ${e?.message ?? e}`;
    }
    report(name, problem);
}

// Sums are compared relatively: the server adds in its own order (and folds fine buckets into
// coarse ones), so the last bits may differ. Zero against zero is equal.
function close(a, b) {
    return Math.abs(a - b) <= 1e-9 * Math.max(Math.abs(a), Math.abs(b));
}

// The shortest decimal text of a double, without an exponent: JavaScript's shortest round-trip
// digits, written out in full where JavaScript would use an exponent (below 1e-6).
function decimalText(x) {
    const s = String(x);
    const m = /^(-?)(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(s);
    if (!m) {
        return s;
    }
    const [, sign, lead, rest = '', exp] = m;
    const digits = lead + rest;
    const e = Number(exp);
    if (e < 0) {
        return `${sign}0.${'0'.repeat(-e - 1)}${digits}`;
    }
    return sign + digits + '0'.repeat(Math.max(0, e - rest.length));
}
// What Binance sends: plain decimal text, here without trailing zeros.
const DECIMAL = /^(0|[1-9]\d*)(\.\d*[1-9])?$/;

const show = (v) => JSON.stringify(v);

// ---- the trades ---------------------------------------------------------------------------

// mulberry32: a small seeded generator, so that every run posts the same trades.
function generator(seed) {
    let s = seed >>> 0;
    return () => {
        s = (s + 0x6d2b79f5) >>> 0;
        let t = Math.imul(s ^ (s >>> 15), 1 | s);
        t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}
const roundTo = (x, decimals) => Number(x.toFixed(decimals));

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
// 2024-11-29 22:30 UTC: the three hours cross midnight, so that 4h and 1d have two candles each.
const T0 = Date.UTC(2024, 10, 29, 22, 30, 0);
const SPAN = 3 * HOUR;
const DAY_START = Math.floor(T0 / DAY) * DAY; // at or before every candle's open
const BURST = T0 + 100 * MINUTE + 250; // a few seconds of dense trades, for 1s candles

// A short symbol and two Solana mints (44 characters, mixed case), one priced like a memecoin so
// that prices below 1e-4 go through the server's number formatting. SOL has more than 1000
// distinct seconds with trades, so its 1s klines need the limit of 1000 and a second page.
const TOKENS = [
    {
        token: 'SOL',
        seed: 11,
        count: 1300,
        price: 231.47,
        priceDecimals: 2,
        maxQty: 40,
        qtyDecimals: 3,
    },
    {
        token: 'EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v',
        seed: 22,
        count: 400,
        price: 1.0002,
        priceDecimals: 4,
        maxQty: 25000,
        qtyDecimals: 2,
    },
    {
        token: 'DezXAZ8z7PnrnRJjz3wXBoRgixCa6xjnB7YaB1pPB263',
        seed: 33,
        count: 300,
        price: 0.00002345,
        priceDecimals: 10,
        maxQty: 50000000,
        qtyDecimals: 0,
    },
];

// One token's trades in the order they are posted. Event times run forward with random gaps
// (some zero: equal times, ordered by id), and here and there two trades of the same second are
// posted later one first, so that open and close must come from (ts, id) and not from arrival.
// Ids increase in posting order, as the API asks.
function makeTrades(spec) {
    const rand = generator(spec.seed);
    const times = [];
    const meanGap = SPAN / spec.count;
    for (let ts = T0 + spec.seed * 17; ts < T0 + SPAN;) {
        times.push(ts);
        ts += rand() < 0.05 ? 0 : Math.floor(rand() * 2 * meanGap);
    }
    for (let i = 0, ts = BURST + spec.seed; i < 30; i++) {
        times.push(ts);
        ts += Math.floor(rand() * 250);
    }
    times.sort((a, b) => a - b);
    for (let i = 0; i + 1 < times.length; i++) {
        const sameSecond = Math.floor(times[i] / SECOND) === Math.floor(times[i + 1] / SECOND);
        if (sameSecond && times[i] < times[i + 1] && rand() < 0.15) {
            [times[i], times[i + 1]] = [times[i + 1], times[i]];
            i += 1;
        }
    }
    let price = spec.price;
    return times.map((ts, i) => {
        price *= Math.exp((rand() - 0.5) * 0.01);
        const quantity = Math.max(
            roundTo(rand() * spec.maxQty, spec.qtyDecimals),
            10 ** -spec.qtyDecimals,
        );
        return {
            token: spec.token,
            price: roundTo(price, spec.priceDecimals),
            quantity,
            side: rand() < 0.55 ? 'buy' : 'sell',
            ts,
            id: 1000 + i,
        };
    });
}

// ---- the candles expected -----------------------------------------------------------------

const INTERVALS = {
    '1s': SECOND,
    '1m': MINUTE,
    '5m': 5 * MINUTE,
    '15m': 15 * MINUTE,
    '1h': HOUR,
    '4h': 4 * HOUR,
    '1d': DAY,
};

const byEventTime = (a, b) => a.ts - b.ts || a.id - b.id;

function candles(trades, width) {
    const buckets = new Map();
    for (const t of [...trades].sort(byEventTime)) {
        const openTime = Math.floor(t.ts / width) * width;
        let c = buckets.get(openTime);
        if (!c) {
            c = {
                openTime,
                closeTime: openTime + width - 1,
                open: t.price,
                high: t.price,
                low: t.price,
                close: t.price,
                volume: 0,
                quoteVolume: 0,
                trades: 0,
                takerBuyBase: 0,
                takerBuyQuote: 0,
            };
            buckets.set(openTime, c);
        }
        c.high = Math.max(c.high, t.price);
        c.low = Math.min(c.low, t.price);
        c.close = t.price;
        c.volume += t.quantity;
        c.quoteVolume += t.price * t.quantity;
        c.trades += 1;
        if (t.side === 'buy') {
            c.takerBuyBase += t.quantity;
            c.takerBuyQuote += t.price * t.quantity;
        }
    }
    return [...buckets.values()].sort((a, b) => a.openTime - b.openTime);
}

// The rows /api/v3/klines answers: openTime in [startTime, endTime]; from startTime the oldest
// `limit`, without it the newest `limit`. Buckets without trades have no row.
function select(rows, { startTime, endTime, limit = 500 }) {
    const within = rows.filter(
        (c) =>
            (startTime === undefined || c.openTime >= startTime) &&
            (endTime === undefined || c.openTime <= endTime),
    );
    return startTime !== undefined ? within.slice(0, limit) : within.slice(-limit);
}

// fetchOHLCV's rows, [openTime, open, high, low, close, volume], against the candles expected.
function compareOhlcv(got, want) {
    if (!Array.isArray(got)) {
        return `not an array: ${show(got)}`;
    }
    if (got.length !== want.length) {
        const span = (rows, t) =>
            rows.length ? `${t(rows[0])}..${t(rows[rows.length - 1])}` : 'none';
        return (
            `${got.length} candles (${span(got, (r) => r[0])}), expected ${want.length} ` +
            `(${span(want, (c) => c.openTime)})`
        );
    }
    for (let i = 0; i < want.length; i++) {
        const [t, o, h, l, c, v] = got[i];
        const w = want[i];
        if (
            t !== w.openTime ||
            o !== w.open ||
            h !== w.high ||
            l !== w.low ||
            c !== w.close ||
            !close(v, w.volume)
        ) {
            const expected = [w.openTime, w.open, w.high, w.low, w.close, w.volume];
            return `candle ${i}: ${show(got[i])}, expected ${show(expected)}`;
        }
    }
    return undefined;
}

// A raw kline row, all twelve fields, against the candle expected.
function compareRow(row, w) {
    if (!Array.isArray(row) || row.length !== 12) {
        return `not a row of 12 fields: ${show(row)}`;
    }
    const [
        openTime,
        open,
        high,
        low,
        close_,
        volume,
        closeTime,
        quoteVolume,
        trades,
        buyBase,
        buyQuote,
        ignore,
    ] = row;
    const problems = [];
    if (openTime !== w.openTime) problems.push(`openTime ${show(openTime)} != ${w.openTime}`);
    if (closeTime !== w.closeTime) problems.push(`closeTime ${show(closeTime)} != ${w.closeTime}`);
    if (trades !== w.trades) problems.push(`trades ${show(trades)} != ${w.trades}`);
    // Prices are exact: the shortest text of the very double posted.
    for (const [name, got, want] of [
        ['open', open, w.open],
        ['high', high, w.high],
        ['low', low, w.low],
        ['close', close_, w.close],
    ]) {
        if (got !== decimalText(want)) {
            problems.push(`${name} ${show(got)} != "${decimalText(want)}"`);
        }
    }
    for (const [name, got, want] of [
        ['volume', volume, w.volume],
        ['quoteVolume', quoteVolume, w.quoteVolume],
        ['takerBuyBaseVolume', buyBase, w.takerBuyBase],
        ['takerBuyQuoteVolume', buyQuote, w.takerBuyQuote],
    ]) {
        if (typeof got !== 'string' || !DECIMAL.test(got)) {
            problems.push(`${name} ${show(got)} is not decimal text`);
        } else if (!close(Number(got), want)) {
            problems.push(`${name} ${got} != ${want}`);
        }
    }
    if (ignore !== '0') problems.push(`last field ${show(ignore)} != "0"`);
    return problems.length ? `row ${show(row)}: ${problems.join('; ')}` : undefined;
}

// An exception of class `cls` whose text carries the Binance code, so that it came from the
// server's error body and not from ccxt's fallback for a bare HTTP status.
async function expectError(fn, cls, code) {
    try {
        const r = await fn();
        return `no error; answered ${show(r).slice(0, 200)}`;
    } catch (e) {
        if (!(e instanceof cls)) {
            return `threw ${e?.constructor?.name}: ${e?.message}, expected ccxt.${cls.name}`;
        }
        if (!String(e.message).includes(`"code":${code}`)) {
            return `${cls.name} without "code":${code}: ${e.message}`;
        }
        return undefined;
    }
}

// ---- the server, without ccxt -------------------------------------------------------------

async function getJson(path) {
    const r = await fetch(base + path);
    const text = await r.text();
    if (!r.ok) {
        throw new Error(`GET ${path}: HTTP ${r.status} ${text.slice(0, 200)}`);
    }
    return JSON.parse(text);
}

// Posts each token's trades in one request, in their posting order. Which trades are late
// depends on each token's arrival order, and the server keeps the order of one connection's
// requests only: sequential requests on other connections can be applied in any order, and a
// trade arriving after later ones of its token (by more than the allowed lateness) is dropped as
// late. One request per token keeps the order without relying on the client's connection pool.
async function postTrades(lists) {
    let posted = 0;
    for (const trades of lists) {
        const r = await fetch(`${base}/trades`, {
            method: 'POST',
            headers: { 'Content-Type': 'application/json' },
            body: JSON.stringify(trades),
        });
        const text = await r.text();
        let accepted;
        try {
            accepted = JSON.parse(text).accepted;
        } catch {
            accepted = undefined;
        }
        if (r.status !== 202 || accepted !== trades.length) {
            throw new Error(
                `POST /trades (${trades.length} trades): HTTP ${r.status} ${text.slice(0, 300)}`,
            );
        }
        posted += trades.length;
    }
    return posted;
}

// Every kline row of a token and interval, from DAY_START on, in pages of 1000.
async function allRows(getPage, token, interval) {
    const rows = [];
    for (let startTime = DAY_START; ;) {
        const page = await getPage({ symbol: token, interval, startTime, limit: 1000 });
        if (!Array.isArray(page)) {
            throw new Error(
                `klines ${token} ${interval}: not an array: ${show(page).slice(0, 200)}`,
            );
        }
        rows.push(...page);
        if (page.length < 1000) return rows;
        startTime = page[page.length - 1][0] + 1;
    }
}
const plainPage = (query) => getJson(`/api/v3/klines?${new URLSearchParams(query)}`);

// Trades are applied after POST /trades answers, and history is read from Redis, written a
// little after each flush: waits until the pipeline has applied every trade posted, Redis has
// taken every update and each token's candles of every interval hold all its trades, or the
// answers have not changed for 2 s, or 15 s have passed. What it then sees, the checks judge.
// Until a token's first trade is applied the server does not know its symbol, so an error
// answer here only means "not yet".
async function settle(perToken, posted) {
    const started = Date.now();
    let last = '';
    let sameSince = Date.now();
    let state = '';
    for (;;) {
        const health = await getJson('/health');
        const pending = health?.redis?.pending;
        // /performance counts what the pipeline applied and what it dropped as late.
        const { applied, late } = (await getJson('/performance')).pipeline ?? {};
        const counts = [];
        let complete = true;
        let text = '';
        for (const { spec, trades } of perToken) {
            for (const interval of Object.keys(INTERVALS)) {
                let n;
                try {
                    const rows = await allRows(plainPage, spec.token, interval);
                    n = rows.reduce((sum, r) => sum + Number(r[8]), 0);
                    text += JSON.stringify(rows);
                } catch (e) {
                    n = e.message;
                    text += e.message;
                }
                if (n !== trades.length) {
                    complete = false;
                    counts.push(`${spec.token.slice(0, 8)} ${interval}: ${n}/${trades.length}`);
                }
            }
        }
        const now = Date.now();
        if (text !== last) {
            last = text;
            sameSince = now;
        }
        state =
            `applied ${show(applied)} of ${posted}, late ${show(late)}; ` +
            `redis.pending ${show(pending)}; ` +
            `trades missing from candles: ${counts.join(', ') || 'none'}`;
        const quiet = applied + late >= posted && pending === 0;
        if (quiet && late === 0 && complete) {
            return { ok: true, detail: `${now - started} ms` };
        }
        if ((quiet && now - sameSince >= 2000) || now - started >= 15000) {
            return { ok: false, detail: `after ${now - started} ms: ${state}` };
        }
        await new Promise((resolve) => setTimeout(resolve, 250));
    }
}

// ---- ccxt ---------------------------------------------------------------------------------

// The real binance class, spot only: fetchMarkets asks only GET /api/v3/exchangeInfo (no fapi or
// dapi exchangeInfo), and fetchCurrencies (sapi, and only with keys) and the margin pairs (sapi)
// are off. Every other API base points at the server under /unexpected/, so that nothing leaves
// the machine and a stray call shows in the log of requests checked below.
function makeExchange() {
    const exchange = new ccxt.binance({
        options: {
            fetchMarkets: { types: ['spot'] },
            fetchCurrencies: false,
            fetchMargins: false,
            adjustForTimeDifference: false,
        },
    });
    for (const key of Object.keys(exchange.urls.api)) {
        exchange.urls.api[key] = `${base}/unexpected/${key}`;
    }
    exchange.urls.api.public = `${base}/api/v3`;
    // The URLs ccxt requests, to check that they are what they should be.
    exchange.requested = [];
    const fetchOne = exchange.fetch.bind(exchange);
    exchange.fetch = (url, ...rest) => {
        exchange.requested.push(url);
        return fetchOne(url, ...rest);
    };
    return exchange;
}

const unified = (token) => `${token.toUpperCase()}/${quoteAsset}`;

async function checkMarkets(exchange, tokens) {
    await check('loadMarkets asks only GET /api/v3/exchangeInfo', async () => {
        await exchange.loadMarkets();
        const want = [`${base}/api/v3/exchangeInfo`];
        if (show(exchange.requested) !== show(want)) {
            return `requested ${show(exchange.requested)}`;
        }
    });
    await check(`loadMarkets: one market per token, ${tokens.length}`, async () => {
        const ids = Object.keys(exchange.markets_by_id ?? {}).sort();
        if (show(ids) !== show([...tokens].sort())) {
            return `market ids ${show(ids)}`;
        }
    });
    for (const token of tokens) {
        await check(
            `loadMarkets: ${unified(token)} is spot, active, id ${token}, quote ${quoteAsset}`,
            async () => {
                const m = exchange.markets[unified(token)];
                if (!m) {
                    return `no market ${unified(token)}; symbols ${show(exchange.symbols)}`;
                }
                const want = {
                    id: token,
                    symbol: unified(token),
                    base: token.toUpperCase(),
                    baseId: token,
                    quote: quoteAsset,
                    quoteId: quoteAsset,
                    type: 'spot',
                    spot: true,
                    active: true,
                };
                const got = Object.fromEntries(Object.keys(want).map((k) => [k, m[k]]));
                if (show(got) !== show(want)) {
                    return `${show(got)}, expected ${show(want)}`;
                }
                const info = m.info;
                const filters = (info.filters ?? []).map((f) => f.filterType);
                if (
                    info.status !== 'TRADING' ||
                    info.baseAsset !== token ||
                    info.quoteAsset !== quoteAsset ||
                    info.isSpotTradingAllowed !== true ||
                    !show(info.permissions).includes('SPOT') ||
                    !filters.includes('PRICE_FILTER') ||
                    !filters.includes('LOT_SIZE')
                ) {
                    return `exchangeInfo symbol ${show(info)}`;
                }
            },
        );
    }
}

// --markets-only: one trade per token, so that the server knows them, then the markets.
async function runMarketsOnly() {
    const tokens = TOKENS.map((spec) => spec.token);
    await postTrades(
        tokens.map((token, i) => [
            { token, price: 1.5, quantity: 2, side: 'buy', ts: T0, id: i + 1 },
        ]),
    );
    // The server learns of a token as its trade is applied: wait until it lists all of them.
    for (let i = 0; i < 100; i++) {
        const info = await getJson('/api/v3/exchangeInfo');
        if ((info.symbols ?? []).length >= tokens.length) break;
        await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const exchange = makeExchange();
    await checkMarkets(exchange, tokens);
    await exchange.close();
}

async function runAll() {
    const perToken = TOKENS.map((spec) => ({ spec, trades: makeTrades(spec) }));
    const posted = await postTrades(perToken.map((p) => p.trades));
    console.log(`posted ${posted} trades of ${TOKENS.length} tokens to ${base}/trades`);
    const settled = await settle(perToken, posted);
    report(
        'every trade applied, none late; Redis caught up; every trade in a candle of each interval',
        settled.ok ? undefined : settled.detail,
    );

    const exchange = makeExchange();
    await check('fetchTime: serverTime within a minute of this clock', async () => {
        const t = await exchange.fetchTime();
        if (!Number.isInteger(t) || Math.abs(t - Date.now()) > MINUTE) {
            return `serverTime ${show(t)}, now ${Date.now()}`;
        }
    });
    await check('GET /api/v3/ping answers {}', async () => {
        const r = await exchange.publicGetPing();
        if (show(r) !== '{}') return `answered ${show(r)}`;
    });
    await check('exchangeInfo: timezone UTC, serverTime, rateLimits, exchangeFilters', async () => {
        const info = await exchange.publicGetExchangeInfo();
        if (
            info.timezone !== 'UTC' ||
            !Number.isInteger(info.serverTime) ||
            !Array.isArray(info.rateLimits) ||
            !Array.isArray(info.exchangeFilters)
        ) {
            return `answered ${show({ ...info, symbols: undefined })}`;
        }
    });
    exchange.requested = [];
    await checkMarkets(
        exchange,
        TOKENS.map((spec) => spec.token),
    );

    const since = T0 + 47 * MINUTE + 321; // not on any candle's edge
    const until = T0 + 2 * HOUR + 13 * MINUTE + 777;
    for (const { spec, trades } of perToken) {
        const symbol = unified(spec.token);
        for (const [interval, width] of Object.entries(INTERVALS)) {
            const rows = candles(trades, width);
            const name = `${symbol} ${interval}`;
            // ccxt asks for limit 500 unless told, 1000 at most, and 1000 with since and until.
            const variants = [
                ['fetchOHLCV', [], { limit: 500 }],
                ['fetchOHLCV limit 3', [undefined, 3], { limit: 3 }],
                ['fetchOHLCV since', [since], { startTime: since }],
                ['fetchOHLCV since, limit 4', [since, 4], { startTime: since, limit: 4 }],
                [
                    'fetchOHLCV since, until',
                    [since, undefined, { until }],
                    { startTime: since, endTime: until, limit: 1000 },
                ],
                ['fetchOHLCV until', [undefined, undefined, { until }], { endTime: until }],
                [
                    'fetchOHLCV from the day start, limit 5000 (ccxt sends 1000)',
                    [DAY_START, 5000],
                    { startTime: DAY_START, limit: 1000 },
                ],
            ];
            for (const [label, args, query] of variants) {
                await check(`${name}: ${label}`, async () => {
                    const got = await exchange.fetchOHLCV(symbol, interval, ...args);
                    return compareOhlcv(got, select(rows, query));
                });
            }
            await check(`${name}: raw klines, every field of all ${rows.length} rows`, async () => {
                const raw = await allRows((q) => exchange.publicGetKlines(q), spec.token, interval);
                if (raw.length !== rows.length) {
                    return `${raw.length} rows, expected ${rows.length}`;
                }
                for (let i = 0; i < rows.length; i++) {
                    const problem = compareRow(raw[i], rows[i]);
                    if (problem) return problem;
                }
            });
        }

        const sorted = [...trades].sort(byEventTime);
        const first = sorted[0];
        const last = sorted[sorted.length - 1];
        const volume = trades.reduce((s, t) => s + t.quantity, 0);
        const quoteVolume = trades.reduce((s, t) => s + t.price * t.quantity, 0);
        const high = Math.max(...trades.map((t) => t.price));
        const low = Math.min(...trades.map((t) => t.price));
        await check(`${symbol}: fetchTicker last and baseVolume`, async () => {
            const t = await exchange.fetchTicker(symbol);
            if (t.symbol !== symbol || t.last !== last.price || !close(t.baseVolume, volume)) {
                return (
                    `symbol ${t.symbol} last ${t.last} baseVolume ${t.baseVolume}, ` +
                    `expected ${symbol} ${last.price} ${volume}`
                );
            }
        });
        // Every trade is within 24 hours of the latest, so the 24hr window holds them all.
        await check(
            `${symbol}: fetchTicker open, high, low, quoteVolume, count, lastQty over all trades`,
            async () => {
                const t = await exchange.fetchTicker(symbol);
                const got = {
                    open: t.open,
                    high: t.high,
                    low: t.low,
                    count: Number(t.info.count),
                    lastQty: Number(t.info.lastQty),
                };
                const want = {
                    open: first.price,
                    high,
                    low,
                    count: trades.length,
                    lastQty: last.quantity,
                };
                if (show(got) !== show(want) || !close(t.quoteVolume, quoteVolume)) {
                    const gotAll = { ...got, quoteVolume: t.quoteVolume };
                    return `${show(gotAll)}, expected ${show({ ...want, quoteVolume })}`;
                }
            },
        );
        await check(`${symbol}: GET /api/v3/ticker/price and avgPrice`, async () => {
            const p = await exchange.publicGetTickerPrice({ symbol: spec.token });
            if (p.symbol !== spec.token || p.price !== decimalText(last.price)) {
                return `ticker/price ${show(p)}, expected price "${decimalText(last.price)}"`;
            }
            const a = await exchange.publicGetAvgPrice({ symbol: spec.token });
            const price = Number(a.price);
            if (
                a.mins !== 5 ||
                !(price >= low && price <= high) ||
                !Number.isInteger(a.closeTime)
            ) {
                return `avgPrice ${show(a)}: expected mins 5, price in [${low}, ${high}]`;
            }
        });
    }

    const lastPrices = Object.fromEntries(
        perToken.map(({ spec, trades }) => [
            unified(spec.token),
            [...trades].sort(byEventTime).pop().price,
        ]),
    );
    await check('fetchTickers: every market, each its last price', async () => {
        const tickers = await exchange.fetchTickers();
        const got = Object.fromEntries(Object.values(tickers).map((t) => [t.symbol, t.last]));
        if (show(Object.entries(got).sort()) !== show(Object.entries(lastPrices).sort())) {
            return `${show(got)}, expected ${show(lastPrices)}`;
        }
    });
    await check('fetchLastPrices: every market, each its last price', async () => {
        const prices = await exchange.fetchLastPrices();
        const got = Object.fromEntries(Object.values(prices).map((p) => [p.symbol, p.price]));
        if (show(Object.entries(got).sort()) !== show(Object.entries(lastPrices).sort())) {
            return `${show(got)}, expected ${show(lastPrices)}`;
        }
    });

    // Errors: Binance's codes, which ccxt maps to its own classes.
    const sol = unified('SOL');
    const mint = TOKENS[1].token;
    await check(
        `fetchOHLCV ${sol} 3m (an interval the server lacks): ccxt.BadRequest from code -1120`,
        () => expectError(() => exchange.fetchOHLCV(sol, '3m'), ccxt.BadRequest, -1120),
    );
    await check(`fetchOHLCV ${sol} 7m (no interval at all): ccxt.BadRequest from code -1120`, () =>
        expectError(() => exchange.fetchOHLCV(sol, '7m'), ccxt.BadRequest, -1120),
    );
    for (const symbol of ['NOPE', 'sol', mint.toUpperCase(), mint.toLowerCase()]) {
        await check(
            `klines for symbol ${symbol} (unknown, case-sensitive): ccxt.BadSymbol from code -1121`,
            () =>
                expectError(
                    () => exchange.publicGetKlines({ symbol, interval: '1m' }),
                    ccxt.BadSymbol,
                    -1121,
                ),
        );
    }
    await check('ticker/24hr for symbol NOPE: ccxt.BadSymbol from code -1121', () =>
        expectError(() => exchange.publicGetTicker24hr({ symbol: 'NOPE' }), ccxt.BadSymbol, -1121),
    );

    await check('every request ccxt made went to /api/v3/', async () => {
        const stray = exchange.requested.filter((url) => !url.startsWith(`${base}/api/v3/`));
        if (stray.length) return `also requested ${show([...new Set(stray)])}`;
    });
    await exchange.close();
}

try {
    await (marketsOnly ? runMarketsOnly() : runAll());
} catch (e) {
    report('the test ran to its end', `${e?.constructor?.name}: ${e?.message}`);
}
// ccxt.version lags the package's own version, so the package is asked.
const ccxtPackage = JSON.parse(
    readFileSync(new URL('./node_modules/ccxt/package.json', import.meta.url)),
);
console.log(`ccxt ${ccxtPackage.version}: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
