/*
 * balance/balance.h: choosing an upstream server, and the health bookkeeping that decides which
 * servers may be chosen. Pure logic for tiered fetch (issue 6): no sockets, no event loop, no
 * clock (every time-dependent call takes `now_ms`, a monotonic clock in milliseconds, >= 0), no
 * locks, no logging.
 *
 * So far:
 *
 *   balance_rendezvous()  weighted rendezvous hashing over a caller's arrays: an edge
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
 * are pure and may be called from any thread. Every other function mutates its struct and must
 * be called by one thread at a time: the struct is owned by one thread, or the caller holds
 * its own lock across each call. The intended use, which needs no lock at all: each worker
 * keeps a struct retry_budget per upstream group and a struct health per server, fed with the
 * outcomes of its own requests (health_record()) and with the results of the active checks,
 * which the control thread runs and mails to every worker (health_check_result()); the active
 * sequence is the same everywhere, so every worker agrees on the active state, while passive
 * ejection reflects the worker's own traffic (passive failure counts are per worker; ratios
 * are not affected).
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
