/*
 * cache/cache_policy.h: RFC 9111 shared-cache policy as pure functions: may a response be
 * stored, for how long is it fresh, how old is it now, and what may be done with a stored
 * response for a given request. Also RFC 5861 (stale-while-revalidate, stale-if-error) and
 * RFC 9213 (CDN-Cache-Control, which takes precedence over Cache-Control for this cache).
 *
 * Pure: no I/O, no clock (every time-dependent function takes `now`, in seconds since the
 * epoch), callable from any thread. Included by cache/cache.h; the store persists
 * struct cache_meta inside each object record.
 */
#ifndef OUTPOST_CACHE_POLICY_H
#define OUTPOST_CACHE_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "http/http.h"

/* Per-site defaults an operator configures (nginx proxy_cache_valid, Varnish default_ttl). */
struct cache_site_policy {
    int64_t default_ttl; /* for cacheable responses with no explicit freshness and no
                            Last-Modified heuristic; 0 = do not store such responses */
    int64_t max_ttl; /* cap on any freshness lifetime; 0 = no cap */
    int64_t heuristic_max; /* cap on heuristic freshness (10% of Date - Last-Modified);
                              RFC 9111 4.2.2 suggests a day-scale cap */
    int64_t stale_while_revalidate; /* default window when the response gives none; 0 = off */
    int64_t stale_if_error; /* default window when the response gives none; 0 = off */
    bool ignore_cdn_cache_control; /* false: honour CDN-Cache-Control (RFC 9213): when it is
                                      present, valid and non-empty, it replaces Cache-Control
                                      and Expires for storage and freshness */
    bool cache_authorized; /* false: a request with Authorization is stored only when the
                              response allows it (s-maxage, must-revalidate, public) */
};

/* Flags in struct cache_meta.flags. */
enum {
    CACHE_F_MUST_REVALIDATE = 1u << 0, /* must-revalidate or proxy-revalidate or s-maxage */
    CACHE_F_NO_CACHE = 1u << 1, /* no-cache: revalidate before every use */
    CACHE_F_STALE = 1u << 2, /* invalidated (soft purge, unsafe method): treat as
                                stale regardless of age */
    CACHE_F_HEURISTIC = 1u << 3, /* freshness is heuristic (RFC 9111 4.2.2) */
    CACHE_F_IMMUTABLE = 1u << 4,
};

/* What a stored response carries about its freshness; persisted in the object record. */
struct cache_meta {
    int64_t request_time; /* when the request that produced it was sent */
    int64_t response_time; /* when the response was received */
    int64_t corrected_initial_age; /* RFC 9111 4.2.3 */
    int64_t freshness_lifetime; /* RFC 9111 4.2.1 (may be 0) */
    int64_t stale_while_revalidate; /* seconds after expiry it may be served while a
                                       revalidation runs; 0 = none */
    int64_t stale_if_error; /* seconds after expiry it may be served on errors */
    int64_t last_modified; /* -1 if absent/invalid */
    uint32_t flags; /* CACHE_F_* */
};

/*
 * May this response to this request be stored by a shared cache (RFC 9111 3)?
 * `method` is the request method; `req` the request headers (Authorization, request
 * Cache-Control no-store); `status` and `resp` the response. Understands every status that
 * is heuristically cacheable (200, 203, 204, 206 [not stored here: we store only complete
 * responses], 300, 301, 308, 404, 405, 410, 414, 501) and responses with explicit
 * freshness for other final statuses. Returns false for Vary: *.
 */
bool cache_policy_storable(struct str method, const struct http_headers *req, int status,
                           const struct http_headers *resp, const struct cache_site_policy *site);

/*
 * Compute the metadata to store for a response received at `response_time` for a request
 * sent at `request_time`: corrected initial age from Age and Date, freshness lifetime
 * (CDN-Cache-Control, then s-maxage, max-age, Expires - Date, heuristic, site default;
 * invalid Expires means already expired), stale windows, flags.
 */
void cache_policy_meta(int status, const struct http_headers *resp, int64_t request_time,
                       int64_t response_time, const struct cache_site_policy *site,
                       struct cache_meta *out);

/* current_age (RFC 9111 4.2.3), in seconds, never negative. A clock that went backwards
 * (now < response_time) counts as no resident time. */
int64_t cache_policy_age(const struct cache_meta *m, int64_t now);

/* Absolute time (seconds since the epoch) after which the stored object is of no use even
 * for revalidation-free serving: the instant it expires, plus the larger stale window unless
 * MUST_REVALIDATE / NO_CACHE forbid stale serving. The eviction order uses it, also for
 * objects with validators. Does not look at CACHE_F_STALE (the invalidation time is not
 * stored). */
int64_t cache_policy_useless_after(const struct cache_meta *m);

enum cache_decision {
    CACHE_USE_FRESH = 0, /* serve it: fresh (or stale but allowed by max-stale) */
    CACHE_USE_STALE_REVALIDATE = 1, /* serve it stale and revalidate in the background
                                       (stale-while-revalidate) */
    CACHE_REVALIDATE = 2, /* send a conditional request; if the origin fails, see
                             cache_policy_stale_on_error() */
    CACHE_MISS = 3, /* do not use (request no-store is handled by the caller) */
};

/*
 * Decide how to use a stored response for a request with request Cache-Control `req_cc`
 * (max-age, min-fresh, max-stale, no-cache; RFC 9111 4 and 5.2.1), at `now`. In order:
 *  - response no-cache, request no-cache, request max-age=0, or age > request max-age:
 *    CACHE_REVALIDATE;
 *  - fresh (and not CACHE_F_STALE): CACHE_USE_FRESH unless min-fresh is not met;
 *  - stale: must-revalidate / no-cache / CACHE_F_STALE (invalidated: RFC 9111 4.4 requires
 *    validation) or request min-fresh: CACHE_REVALIDATE; staleness within the request's
 *    max-stale: CACHE_USE_FRESH; within stale-while-revalidate: CACHE_USE_STALE_REVALIDATE;
 *    else CACHE_REVALIDATE.
 * CACHE_MISS only for metadata that cannot be trusted (negative lifetime or age).
 */
enum cache_decision cache_policy_decide(const struct cache_meta *m, const struct http_cc *req_cc,
                                        int64_t now);

/* May the stored response be served because the origin failed (RFC 5861 4 stale-if-error,
 * never with must-revalidate/no-cache)? True if still fresh, if the staleness is within the
 * request's max-stale, or within the stale-if-error window: the request's when it has one
 * (the client's limit), else the response's or site default. CACHE_F_STALE (invalidated)
 * objects may still be served on error within the window. `req_cc` may be NULL. */
bool cache_policy_stale_on_error(const struct cache_meta *m, const struct http_cc *req_cc,
                                 int64_t now);

/*
 * After a 304 from the origin for a stored response: the headers of the 304 replace the
 * stored ones of the same name (RFC 9111 3.2, 4.3.4), except those a cache must not update
 * (Content-Length, Content-Encoding, Transfer-Encoding, Content-Range, hop-by-hop and
 * Connection-listed fields). Age and Date are taken from the 304 only (dropped if it has
 * none), so cache_policy_meta() over the merged list, with the revalidation's request and
 * response times, gives the refreshed metadata. `out` must be initialised (its previous
 * entries are discarded); strings point into `stored` or `fresh`.
 */
void cache_policy_merge_304(const struct http_headers *stored, const struct http_headers *fresh,
                            struct http_headers *out);

/* Should a response to an unsafe method invalidate the stored responses for the target URI
 * (and same-origin Location / Content-Location)? True for non-error final responses to
 * unsafe methods (RFC 9111 4.4). */
bool cache_policy_invalidates(struct str method, int status);

#endif
