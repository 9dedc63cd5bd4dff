/*
 * balance/balance.h: choosing an upstream server, and the health bookkeeping that decides which
 * servers may be chosen. Pure logic for tiered fetch (issue 6): no sockets, no event loop, no
 * clock (every time-dependent call takes `now_ms`, a monotonic clock in milliseconds, >= 0), no
 * locks, no logging, no allocation after creation.
 *
 * Four parts:
 *
 *   struct balance        a set of servers (the origin servers of a shield, or of an edge that
 *                         falls back to the origin) and one algorithm: smooth weighted
 *                         round-robin, weighted least connections, or weighted rendezvous
 *                         hashing of a key. Per-server weight, max connections, health state,
 *                         slow start; retries exclude the servers already tried.
 *   balance_rendezvous()  the same weighted rendezvous hash over a caller's arrays: an edge
 *                         choosing the shield of a cache key among the healthy shields of a
 *                         group. Every node computes the same answer from the same ids.
 *   struct health         one server's health: active checks with rise/fall thresholds, and
 *                         passive ejection when request failures in a sliding window reach a
 *                         threshold, for a cool-down, after which the server is "probing".
 *   struct retry_budget   retries allowed while they stay under a share of the requests in a
 *                         sliding window (plus a small floor), so retries cannot amplify an
 *                         outage.
 *
 * Threads: nothing here locks. balance_hash(), balance_rendezvous*() and health_state_name()
 * are pure and may be called from any thread. Every other function mutates its struct (even
 * balance_pick(), which advances the round-robin position) and must be called by one thread at
 * a time: the struct is owned by one thread, or the caller holds its own lock across each call.
 * The intended use, which needs no lock at all:
 *   - each worker builds its own struct balance and struct retry_budget per upstream group from
 *     the immutable config, and alone calls pick/conn_start/conn_end/set_health on them;
 *   - each worker also keeps a struct health per server, fed with the outcomes of its own
 *     requests (health_record()) and with the results of the active checks, which the control
 *     thread runs and mails to every worker (health_check_result()); the active sequence is
 *     the same everywhere, so every worker agrees on the active state, while passive ejection
 *     reflects the worker's own traffic;
 *   - a worker that sees a health state change calls balance_set_health() on its own
 *     struct balance.
 * Consequences of per-worker state: max_conns caps the connections of one struct balance, so
 * with W workers a server may see W * max_conns (divide the configured value by W, rounding
 * up); passive failure counts are per worker (ratios are not affected).
 *
 * Hashing: balance_hash() is SipHash-2-4 (Aumasson and Bernstein, 2012) under a fixed key
 * compiled in (the 16 ASCII bytes "outpost-balance1"), so that every node, whatever its version
 * or start time, maps a key to the same shield. Rendezvous scores combine the key's hash with
 * the server id's hash through the MurmurHash3 64-bit finalizer (see balance_rendezvous()).
 * Changing either changes the shield of almost every key: a cluster-wide cache reshuffle.
 */
#ifndef OUTPOST_BALANCE_H
#define OUTPOST_BALANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/str.h"

/* ---- health states (shared by struct balance and struct health) -------------------------- */

enum health_state {
    HEALTH_HEALTHY = 0, /* eligible */
    HEALTH_UNHEALTHY = 1, /* never chosen */
    HEALTH_PROBING = 2, /* after a passive cool-down: one trial request at a time */
};

/* "healthy", "unhealthy" or "probing", for /status and logs; "?" for anything else. Static. */
const char *health_state_name(enum health_state st);

/* ---- the server set and its algorithms --------------------------------------------------- */

#define BALANCE_WEIGHT_MAX 1000
/* Slow start ramps the effective weight from this share (per mille) of the weight to all of
 * it; a probing server also weighs this share. */
#define BALANCE_SLOW_START_FLOOR 100

enum balance_algo {
    /*
     * Smooth weighted round-robin, nginx's algorithm: each pick adds every eligible server's
     * effective weight to its `current`, chooses the highest `current` (the first on a tie)
     * and subtracts the eligible total from it. Deterministic; while the eligible set and weights
     * stay the same, each sum(weights) picks from the start choose every server exactly
     * `weight` times, evenly interleaved (5,1,1 -> a a b a c a a).
     */
    BALANCE_ROUND_ROBIN = 0,
    /*
     * Weighted least connections: the lowest active/effective-weight ratio (active is what
     * balance_conn_start/end count); ties are broken by the smooth weighted round-robin among
     * the tied servers, as nginx does, so equal servers take turns instead of the first one
     * taking every tie.
     */
    BALANCE_LEAST_CONN = 1,
    /*
     * Weighted rendezvous (highest random weight) hashing of the key passed to balance_pick(),
     * as balance_rendezvous() computes it over the eligible servers with their effective
     * weights. A key keeps its server while that server is eligible; when a server leaves, only
     * its keys move, each to its next-highest score. A slow-starting server only gains keys as
     * its weight ramps up (a higher weight only raises its own scores). A key whose server is
     * at max_conns, excluded or unhealthy goes to its next choice.
     */
    BALANCE_HASH = 2,
};

struct balance_conf {
    enum balance_algo algo;
    /* A server that becomes healthy again (from unhealthy or probing) ramps its effective
     * weight linearly from BALANCE_SLOW_START_FLOOR per mille to its full weight over this
     * time; 0 = no slow start. Servers healthy at creation start at full weight. */
    uint32_t slow_start_ms;
};

struct balance_server_conf {
    /* Stable identity, e.g. "origin1.example.com:443": what rendezvous hashing hashes, so a
     * server keeps its keys whatever its position in the list. Non-empty, unique in the set.
     * Copied by balance_create(). */
    struct str id;
    unsigned weight; /* 1..BALANCE_WEIGHT_MAX; 0 means 1 */
    unsigned max_conns; /* active connections at which the server is skipped; 0 = unlimited */
    enum health_state initial; /* HEALTH_HEALTHY (the zero value) or HEALTH_UNHEALTHY */
    void *user; /* the caller's, returned by balance_server_user() */
};

/* A snapshot of one server for /status and metrics. `id` points into the struct balance. */
struct balance_server_info {
    struct str id;
    unsigned weight;
    unsigned effective_permille; /* effective weight / weight, per mille: slow start ramp */
    unsigned max_conns;
    unsigned active;
    enum health_state state;
    uint64_t picks; /* times balance_pick() returned this server */
};

struct balance;

/*
 * Build a set of `n` servers (n may be 0: every pick then returns -1) with `conf`'s algorithm.
 * Copies the ids; `servers` may be freed afterwards. Indexes are positions in `servers`.
 * Errors: OP_EINVAL (empty or duplicate id, weight over BALANCE_WEIGHT_MAX, initial state not
 * HEALTHY or UNHEALTHY, unknown algorithm, n over INT_MAX); *out is then NULL. Any thread; the
 * result belongs to the caller's thread (see Threads above).
 */
int balance_create(struct balance **out, const struct balance_conf *conf,
                   const struct balance_server_conf *servers, size_t n);
/* Free the set and clear *b. NULL-safe. */
void balance_destroy(struct balance **b);

size_t balance_count(const struct balance *b);

/*
 * Choose a server for one attempt: the index of an eligible server, or -1 when there is none.
 * A server is eligible when it is healthy, or probing with no active connection (one trial at
 * a time); when it has fewer than max_conns active connections (if set); and when its index
 * is not among `tried[0..n_tried)` (a retry passes the servers already tried; NULL with 0 for
 * none). `key` is what BALANCE_HASH hashes (the cache key); the other algorithms ignore it and
 * accept STR_NULL. Does not count a connection: call balance_conn_start() on the result before
 * the next pick if it is used. -1 is not an error; the caller answers 502/503 or, for an edge,
 * decides whether to try the origin directly.
 */
int balance_pick(struct balance *b, struct str key, int64_t now_ms, const int *tried,
                 size_t n_tried);

/* A connection (or request in flight, whichever max_conns and least connections should
 * count) to server `idx` begins or ends. Each start has exactly one end, also when the server
 * has become unhealthy meanwhile. */
void balance_conn_start(struct balance *b, int idx);
void balance_conn_end(struct balance *b, int idx);

/*
 * Set server idx's health state (from struct health, membership, or an operator). Becoming
 * HEALTHY from UNHEALTHY or PROBING starts its slow start at now_ms. Returns true if the state
 * changed.
 */
bool balance_set_health(struct balance *b, int idx, enum health_state st, int64_t now_ms);

/* The `user` pointer given for server idx. */
void *balance_server_user(const struct balance *b, int idx);
/* Fill *out with server idx's state at now_ms. */
void balance_server_info(const struct balance *b, int idx, int64_t now_ms,
                         struct balance_server_info *out);

/* ---- hashing and rendezvous (pure, any thread) ------------------------------------------- */

/* SipHash-2-4 of `s` under Outpost's fixed balance key (see Hashing above). Stable across
 * nodes, versions and restarts. */
uint64_t balance_hash(struct str s);

/*
 * Weighted rendezvous hashing: the index among ids[0..n) of the server for `key`, or -1 when
 * no server is eligible (n == 0, or none healthy, or all weights 0).
 *
 * For each eligible server i, h = fmix64(balance_hash(key) ^ balance_hash(ids[i])) is mapped to
 * u in (0, 1) (its high 52 bits, plus one half, over 2^52), and the score is
 * weights[i] / -ln(u) (the logarithmic method of Schindelhauer and Schomaker, 2005; also
 * Resch's "weighted rendezvous hashing"): a server wins a share of the keys proportional to its
 * weight, and removing or adding one server moves only the keys that server loses or gains.
 * The highest score wins; an exact tie goes to the higher id hash, so the answer does not
 * depend on the order of the arrays.
 *
 * `weights` may be NULL (all 1); a weight of 0 makes a server ineligible. `healthy` may be NULL
 * (all eligible); healthy[i] false makes server i ineligible. Ids need not be unique, but
 * duplicates tie. The arrays are only read during the call.
 */
int balance_rendezvous(const struct str *ids, const unsigned *weights, const bool *healthy,
                       size_t n, struct str key);
/* The same with the hashes precomputed: id_hashes[i] = balance_hash(ids[i]), and
 * key_hash = balance_hash(key). Lets an edge hash its shield ids once per config. */
int balance_rendezvous_hashed(const uint64_t *id_hashes, const unsigned *weights,
                              const bool *healthy, size_t n, uint64_t key_hash);
/*
 * The failover order: writes to order[0..) the indexes of up to `max` eligible servers, best
 * first (order[0] is what balance_rendezvous_hashed() returns), and returns how many. An edge
 * whose first shield fails tries order[1], and so on; every node agrees on the order.
 */
size_t balance_rendezvous_rank(const uint64_t *id_hashes, const unsigned *weights,
                               const bool *healthy, size_t n, uint64_t key_hash, int *order,
                               size_t max);

/* ---- sliding window counters (embedded in struct health and struct retry_budget) --------- */

#define HEALTH_BUCKETS 10

/* Two counters over the last HEALTH_BUCKETS buckets of window_ms / HEALTH_BUCKETS each: the
 * window slides by one bucket at a time, so it covers between (HEALTH_BUCKETS - 1) and
 * HEALTH_BUCKETS buckets of the past. Private: use the functions of its owner. */
struct health_window {
    int64_t _bucket_ms;
    int64_t _epoch[HEALTH_BUCKETS]; /* the bucket number each slot counts; INT64_MIN: none */
    uint32_t _total[HEALTH_BUCKETS];
    uint32_t _bad[HEALTH_BUCKETS];
};

/* ---- health of one server ---------------------------------------------------------------- */

enum health_outcome {
    HEALTH_OK = 0, /* a response that is not a 5xx */
    HEALTH_CONNECT_ERROR = 1, /* connection refused, reset, TLS handshake failure */
    HEALTH_TIMEOUT = 2, /* connect, first byte or idle timeout */
    HEALTH_HTTP_5XX = 3, /* a 5xx response (the caller decides which 5xx count) */
};

struct health_conf {
    /* Active checks: consecutive successes to become healthy, consecutive failures to become
     * unhealthy. Both >= 1. */
    unsigned rise;
    unsigned fall;
    /* State before any event: HEALTH_HEALTHY, or HEALTH_UNHEALTHY (then `rise` successful
     * active checks make it healthy; without active checks it stays unhealthy). */
    enum health_state initial;
    /* Passive: request outcomes are counted over a window of window_ms (>= HEALTH_BUCKETS; in
     * HEALTH_BUCKETS buckets). The server is ejected (unhealthy) when the failures in the
     * window reach eject_failures (0 = this rule off), or when at least min_requests outcomes
     * are in the window and failures make at least eject_ratio_pct percent of them (0 = this
     * rule off). Both rules off: passive ejection is off (outcomes are still counted). */
    uint32_t window_ms;
    unsigned eject_failures;
    unsigned eject_ratio_pct; /* 0..100 */
    unsigned min_requests;
    /* An ejected server stays unhealthy for cooldown_ms (>= 1), then is probing: the next
     * active check result or request outcome decides, healthy or ejected again. Each failed
     * probe doubles the next cool-down, up to cooldown_max_ms (0: no growth; else >=
     * cooldown_ms); becoming healthy resets it. Keep cooldown_ms above the longest upstream
     * timeout: an outcome cannot tell a trial request from one sent before the ejection. */
    uint32_t cooldown_ms;
    uint32_t cooldown_max_ms;
};

/* rise 2, fall 3, initially healthy, window 10 s, eject at 5 failures or at 50% of >= 10
 * requests, cool-down 10 s doubling up to 5 min. */
extern const struct health_conf health_conf_default;

/* Public for embedding (one per server in the caller's array); fields are private. */
struct health {
    struct health_conf _conf;
    enum health_state _state;
    bool _ejected; /* unhealthy by passive ejection: ends by time, not by `rise` */
    unsigned _ok_run; /* consecutive successful active checks */
    unsigned _fail_run; /* consecutive failed active checks */
    unsigned _backoff; /* failed probes since last healthy: cool-down doublings */
    int64_t _until; /* when ejected: end of the cool-down */
    uint64_t _ejections; /* passive ejections, ever */
    struct health_window _win;
};

/*
 * Initialise *h from a copy of *conf. Errors: OP_EINVAL (rise or fall 0, initial PROBING or
 * unknown, window_ms under HEALTH_BUCKETS, eject_ratio_pct over 100, cooldown_ms 0,
 * cooldown_max_ms nonzero and under cooldown_ms). health_fini() has nothing to free; it exists
 * for the pair.
 */
int health_init(struct health *h, const struct health_conf *conf);
void health_fini(struct health *h);

/*
 * The result of one active check at now_ms. Healthy: `fall` consecutive failures make it
 * unhealthy. Unhealthy from active checks: `rise` consecutive successes make it healthy.
 * Ejected (passive) and still cooling down: successes do not end the cool-down (a health
 * endpoint may answer while real requests fail), but `fall` consecutive failures turn the
 * ejection into an active-check failure, which then needs `rise` successes. Probing: this
 * result decides. Returns true if the state after the call differs from the state before it;
 * a cool-down that ends and a probe that fails in the same call leave it unhealthy: false.
 */
bool health_check_result(struct health *h, bool ok, int64_t now_ms);

/*
 * The outcome of one request to the server, at now_ms. Healthy: counted in the window, and
 * the passive rules may eject the server (the window is then cleared). Probing: this outcome
 * decides (an ok makes it healthy, a failure ejects it again with a doubled cool-down).
 * Unhealthy: ignored (requests that were in flight when it was ejected). Returns true if the
 * state changed.
 */
bool health_record(struct health *h, enum health_outcome o, int64_t now_ms);

/* Apply the passage of time (the end of a cool-down) without an event. Returns true if the
 * state changed. The other functions do this first themselves. */
bool health_tick(struct health *h, int64_t now_ms);

/* The current state (as of the last call; call health_tick() first for "now"). */
enum health_state health_state_get(const struct health *h);
/* When health_tick() will next change the state by itself (the end of a cool-down), or
 * INT64_MAX when nothing is pending: lets the owner arm one timer. */
int64_t health_next_change_ms(const struct health *h);
/* Outcomes and failures in the window at now_ms, and passive ejections ever, for /status.
 * Any out-parameter may be NULL. */
void health_counts(const struct health *h, int64_t now_ms, unsigned *total, unsigned *failed,
                   uint64_t *ejections);

/* ---- retry budget ------------------------------------------------------------------------ */

struct retry_budget_conf {
    /* A retry is allowed while the retries in the window, itself included, stay within
     * ratio_pct percent of the first attempts in the window plus min_per_sec retries per
     * second of window (so a quiet server may still retry). window_ms >= HEALTH_BUCKETS. */
    unsigned ratio_pct;
    unsigned min_per_sec;
    uint32_t window_ms;
};

/* 20%, 3 retries per second, 10 s window (Finagle and Linkerd use 20% over 10 s). */
extern const struct retry_budget_conf retry_budget_conf_default;

/* Public for embedding; fields are private. One per upstream group (per worker). */
struct retry_budget {
    struct retry_budget_conf _conf;
    struct health_window _win; /* total: first attempts; bad: retries */
};

/* Errors: OP_EINVAL (window_ms under HEALTH_BUCKETS). retry_budget_fini() frees nothing. */
int retry_budget_init(struct retry_budget *rb, const struct retry_budget_conf *conf);
void retry_budget_fini(struct retry_budget *rb);
/* A request's first attempt (not a retry) at now_ms: deposits into the budget. */
void retry_budget_request(struct retry_budget *rb, int64_t now_ms);
/* May one retry go now? true: the retry is counted and may be sent; false: give up (and
 * count that as a metric). */
bool retry_budget_take(struct retry_budget *rb, int64_t now_ms);
/* First attempts and retries in the window at now_ms; either may be NULL. */
void retry_budget_counts(const struct retry_budget *rb, int64_t now_ms, unsigned *requests,
                         unsigned *retries);

#endif
