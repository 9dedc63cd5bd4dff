/*
 * http/http.h: protocol-version-neutral HTTP semantics (RFC 9110), shared by the front ends,
 * the upstream client and the cache: header lists, field value syntax, HTTP dates,
 * Cache-Control and CDN-Cache-Control directives, byte ranges and conditional requests.
 *
 * Everything here is pure: no I/O, no global state, callable from any thread. Strings point
 * into memory owned by the caller; nothing here copies or frees them unless it says so.
 */
#ifndef OUTPOST_HTTP_H
#define OUTPOST_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/str.h"

/* ---- header lists ------------------------------------------------------------------------ */

struct http_header {
    struct str name; /* as received; compare case-insensitively */
    struct str value; /* OWS already trimmed */
};

/* A growable list of headers. The list owns its array (xrealloc), not the strings. */
struct http_headers {
    struct http_header *v;
    size_t n;
    size_t cap;
};

void http_headers_init(struct http_headers *h);
void http_headers_fini(struct http_headers *h);
void http_headers_add(struct http_headers *h, struct str name, struct str value);
/* First header named `name` (case-insensitive), or NULL. */
const struct http_header *http_headers_get(const struct http_headers *h, const char *name);
/* Number of headers named `name`. */
size_t http_headers_count(const struct http_headers *h, const char *name);
/* Remove every header named `name`; returns how many were removed. */
size_t http_headers_remove(struct http_headers *h, const char *name);
/* Replace all headers named `name` by one with `value` (appended if none). */
void http_headers_set(struct http_headers *h, struct str name, struct str value);

/*
 * Iterate over the comma-separated list elements of every header named `name`
 * (RFC 9110 5.6.1), skipping empty elements and trimming OWS. `*iter` starts at 0 (a header
 * index) and `*pos` at 0; returns false at the end. Quoted strings containing commas are kept
 * whole.
 */
bool http_headers_list_next(const struct http_headers *h, const char *name, size_t *iter,
                            size_t *pos, struct str *elem);
/* True if the comma-separated list of `name` contains `token` (case-insensitive). */
bool http_headers_has_token(const struct http_headers *h, const char *name, const char *token);

/* RFC 9110 token character / field-value character checks. */
bool http_is_tchar(unsigned char c);
bool http_is_token(struct str s);

/* Hop-by-hop header names (RFC 9110 7.6.1) plus those listed in Connection: true if `name`
 * must not be forwarded. */
bool http_is_hop_by_hop(const struct http_headers *h, struct str name);

/* ---- dates (RFC 9110 5.6.7) -------------------------------------------------------------- */

/* Parse IMF-fixdate, RFC 850 and asctime forms into seconds since the epoch; -1 if invalid. */
int http_date_parse(struct str s, int64_t *out);
/* Format as IMF-fixdate into out[HTTP_DATE_LEN + 1]; returns HTTP_DATE_LEN. */
#define HTTP_DATE_LEN 29
size_t http_date_format(int64_t t, char *out);

/* ---- Cache-Control (RFC 9111 5.2, RFC 5861, RFC 9213) ------------------------------------ */

#define HTTP_CC_UNSET (-1)

struct http_cc {
    /* Delta-seconds directives: HTTP_CC_UNSET when absent. An invalid or duplicated
     * conflicting value is recorded as 0 (treat as stale), per RFC 9111 4.2.1. */
    int64_t max_age;
    int64_t s_maxage;
    int64_t min_fresh;
    int64_t max_stale; /* HTTP_CC_UNSET absent; INT64_MAX if present without a value */
    int64_t stale_while_revalidate;
    int64_t stale_if_error;
    bool no_cache; /* unqualified or qualified: both mean "revalidate" here */
    bool no_store;
    bool private_; /* unqualified or qualified: a shared cache does not store */
    bool public_;
    bool must_revalidate;
    bool proxy_revalidate;
    bool only_if_cached;
    bool no_transform;
    bool immutable;
    bool must_understand;
    bool present; /* at least one header line of that name was present */
};

/* Parse every header line named `name` ("Cache-Control" or "CDN-Cache-Control"). Unknown
 * directives are ignored. Never fails. */
void http_cc_parse(const struct http_headers *h, const char *name, struct http_cc *out);

/* ---- ranges (RFC 9110 14) ---------------------------------------------------------------- */

struct http_range {
    uint64_t first; /* inclusive */
    uint64_t last; /* inclusive */
};

enum http_range_result {
    HTTP_RANGE_NONE = 0, /* absent or not a valid bytes range: ignore, send 200 */
    HTTP_RANGE_OK = 1, /* *n satisfiable ranges in out[] (coalesced, in order) */
    HTTP_RANGE_UNSATISFIABLE = 2, /* valid syntax, nothing satisfiable: 416 */
};

/* Evaluate a Range header value against a representation of `size` bytes. At most `max`
 * ranges are returned; more than `max` (after coalescing) yields HTTP_RANGE_NONE (serve
 * whole: a defence against range amplification). */
enum http_range_result http_range_parse(struct str value, uint64_t size, struct http_range *out,
                                        size_t max, size_t *n);

/* ---- entity tags and conditional requests (RFC 9110 13) ---------------------------------- */

/* Strong or weak comparison of two entity-tags (with quotes, optional W/ prefix). */
bool http_etag_match(struct str a, struct str b, bool weak);

enum http_cond_result {
    HTTP_COND_PROCEED = 0, /* send the selected representation */
    HTTP_COND_NOT_MODIFIED = 1, /* send 304 */
    HTTP_COND_FAILED = 2, /* send 412 */
};

/*
 * Evaluate the request preconditions (If-Match, If-Unmodified-Since, If-None-Match,
 * If-Modified-Since; RFC 9110 13.2.2 order) against a stored response's validators
 * (`etag` may be empty, `last_modified` -1 if unknown). `is_get_or_head` selects 304 vs 412
 * for a failing If-None-Match.
 */
enum http_cond_result http_cond_evaluate(const struct http_headers *req, struct str etag,
                                         int64_t last_modified, bool is_get_or_head);

/* If-Range (RFC 9110 13.1.5): true if the range request may be honoured for a response
 * with these validators (strong ETag match, or date equal to Last-Modified). */
bool http_if_range_ok(struct str if_range, struct str etag, int64_t last_modified);

/* ---- additions (http/date.c, http/cc.c, http/cond.c) -------------------------------------- */

/*
 * http_date_parse() with an explicit clock for the RFC 850 two-digit year: RFC 9110 5.6.7
 * says a year that appears to be more than 50 years in the future is the most recent past
 * year with the same last two digits, which depends on "now". http_date_parse() is pure and
 * uses HTTP_DATE_RFC850_PIVOT (2025-01-01T00:00:00Z) as "now"; callers that hold a clock
 * reading may pass it here instead. Only the RFC 850 form depends on `now`.
 */
#define HTTP_DATE_RFC850_PIVOT INT64_C(1735689600)
int http_date_parse_at(struct str s, int64_t now, int64_t *out);

/* Parse delta-seconds (RFC 9111 1.2.2): 1*DIGIT, saturating at HTTP_DELTA_MAX (2^31).
 * Returns 0, or -1 if `s` is empty or has a non-digit. */
#define HTTP_DELTA_MAX INT64_C(2147483648)
int http_delta_parse(struct str s, int64_t *out);

#endif
