/*
 * cache/policy.c: the RFC 9111 shared-cache policy (see cache_policy.h). Pure functions over
 * header lists and struct cache_meta; callable from any thread, no clock, no allocation
 * except the output list of cache_policy_merge_304().
 *
 * "Effective directives": when CDN-Cache-Control is honoured and present with a valid,
 * non-empty value, RFC 9213 2.1 says the cache uses it and ignores Cache-Control AND
 * Expires; otherwise Cache-Control and Expires apply. Every storage and freshness decision
 * below goes through that one choice, so e.g. `Cache-Control: no-store` with
 * `CDN-Cache-Control: max-age=60` is stored, and `CDN-Cache-Control: private` is not.
 * Request directives always come from the request's Cache-Control.
 *
 * Choices where the RFC leaves room, and why:
 *  - Only GET responses are stored. A HEAD response has no body to serve a later GET
 *    with; the edge answers HEAD from a stored GET.
 *  - Set-Cookie: RFC 9111 7.3 permits storing it, but one user's session cookie served to
 *    everyone is the classic CDN incident (nginx, Varnish builtin VCL and Cloudflare all
 *    refuse by default). A response with Set-Cookie is stored only when the origin shows
 *    it means shared caching: `public` or `s-maxage` in the effective directives, or an
 *    effective CDN-Cache-Control granting freshness (max-age/s-maxage) or `public`.
 *  - Authorization (RFC 9111 3.5): stored only with public, s-maxage or must-revalidate,
 *    unless the operator vouches for the site (cache_authorized).
 *  - must-understand (RFC 9111 5.2.2.3): for a status we implement, no-store is ignored as
 *    the RFC says; for any other status the response is not stored.
 *  - Age (RFC 9111 5.1): the first member of the first Age line is used; a value that is not
 *    delta-seconds counts as 0, like a missing Age (RFC 9111 leaves invalid Age to the
 *    implementation; cache-tests.fyi shows the common caches reuse such responses).
 *  - A missing or invalid Date is replaced by response_time (RFC 9110 6.6.1: a recipient
 *    with a clock assigns one).
 *  - Expires that is invalid, or not later than Date, gives lifetime 0 (RFC 9111 5.3).
 *  - Heuristic freshness is 10% of Date - Last-Modified (RFC 9111 4.2.2), capped by
 *    heuristic_max, only for heuristically cacheable statuses or `public`. The operator's
 *    default_ttl is used when no heuristic applies; both set CACHE_F_HEURISTIC.
 *  - s-maxage implies proxy-revalidate for a shared cache (RFC 9111 5.2.2.10), so it sets
 *    CACHE_F_MUST_REVALIDATE.
 */
#include "cache/cache_policy.h"
#include "lib/util.h"

/* Heuristically cacheable statuses (RFC 9110 15.1) except 206: we store complete responses. */
static bool heuristic_status(int status)
{
    switch (status) {
    case 200:
    case 203:
    case 204:
    case 300:
    case 301:
    case 308:
    case 404:
    case 405:
    case 410:
    case 414:
    case 501:
        return true;
    default:
        return false;
    }
}

/* Statuses whose caching requirements we implement (for must-understand). */
static bool understood_status(int status)
{
    if (heuristic_status(status))
        return true;
    switch (status) {
    case 302:
    case 303:
    case 307:
    case 400:
    case 403:
    case 500:
    case 502:
    case 503:
    case 504:
        return true;
    default:
        return false;
    }
}

struct eff {
    struct http_cc cc;
    bool cdn; /* cc came from CDN-Cache-Control: ignore Expires */
};

static void effective(const struct http_headers *resp, const struct cache_site_policy *site,
                      struct eff *e)
{
    e->cdn = false;
    if (!site->ignore_cdn_cache_control) {
        http_cc_parse(resp, "CDN-Cache-Control", &e->cc);
        if (e->cc.present) {
            e->cdn = true;
            return;
        }
    }
    http_cc_parse(resp, "Cache-Control", &e->cc);
}

static int64_t header_date(const struct http_headers *h, const char *name)
{
    int64_t t;
    const struct http_header *hd = http_headers_get(h, name);
    if (hd == NULL || http_date_parse(hd->value, &t) < 0)
        return -1;
    return t;
}

/* 10% of Date - Last-Modified, capped; -1 if not applicable. */
static int64_t heuristic_lifetime(const struct http_headers *resp, int64_t date,
                                  const struct cache_site_policy *site)
{
    int64_t lm = header_date(resp, "Last-Modified");
    if (lm < 0 || lm >= date)
        return -1;
    int64_t f = (date - lm) / 10;
    if (site->heuristic_max > 0 && f > site->heuristic_max)
        f = site->heuristic_max;
    return f > 0 ? f : -1;
}

bool cache_policy_storable(struct str method, const struct http_headers *req, int status,
                           const struct http_headers *resp, const struct cache_site_policy *site)
{
    if (!str_eq(method, STR_LIT("GET")))
        return false;
    if (status < 200 || status > 599 || status == 206 || status == 304)
        return false;
    struct http_cc rq;
    http_cc_parse(req, "Cache-Control", &rq);
    if (rq.no_store)
        return false;
    struct eff e;
    effective(resp, site, &e);
    if (e.cc.must_understand) {
        if (!understood_status(status))
            return false;
    } else if (e.cc.no_store) {
        return false;
    }
    if (e.cc.private_)
        return false;
    if (http_headers_has_token(resp, "Vary", "*"))
        return false;
    if (http_headers_count(req, "Authorization") && !site->cache_authorized &&
        !(e.cc.public_ || e.cc.s_maxage != HTTP_CC_UNSET || e.cc.must_revalidate))
        return false;
    if (http_headers_count(resp, "Set-Cookie") &&
        !(e.cc.public_ || e.cc.s_maxage != HTTP_CC_UNSET ||
          (e.cdn && e.cc.max_age != HTTP_CC_UNSET)))
        return false;
    /* explicit freshness or explicit cacheability */
    if (e.cc.s_maxage != HTTP_CC_UNSET || e.cc.max_age != HTTP_CC_UNSET || e.cc.public_)
        return true;
    if (!e.cdn && http_headers_count(resp, "Expires"))
        return true;
    if (!heuristic_status(status))
        return false;
    int64_t date = header_date(resp, "Date");
    if (date >= 0 && heuristic_lifetime(resp, date, site) > 0)
        return true;
    /* no Date: a Last-Modified still allows a heuristic against the receipt time */
    if (date < 0 && http_headers_count(resp, "Last-Modified") &&
        header_date(resp, "Last-Modified") >= 0)
        return true;
    return site->default_ttl > 0;
}

static int64_t sat_add(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    return a + b;
}

void cache_policy_meta(int status, const struct http_headers *resp, int64_t request_time,
                       int64_t response_time, const struct cache_site_policy *site,
                       struct cache_meta *out)
{
    struct eff e;
    effective(resp, site, &e);
    memset(out, 0, sizeof(*out));
    out->request_time = request_time;
    out->response_time = response_time;

    /* RFC 9111 4.2.3 */
    int64_t date = header_date(resp, "Date");
    if (date < 0)
        date = response_time;
    int64_t age_value = 0;
    size_t iter = 0, pos = 0;
    struct str a;
    if (http_headers_list_next(resp, "Age", &iter, &pos, &a) && http_delta_parse(a, &age_value))
        age_value = 0;
    int64_t apparent_age = UTIL_MAX(0, response_time - date);
    int64_t response_delay = UTIL_MAX(0, response_time - request_time);
    int64_t corrected_age_value = age_value + response_delay;
    out->corrected_initial_age = UTIL_MAX(apparent_age, corrected_age_value);

    /* RFC 9111 4.2.1: the first source present wins */
    int64_t life = -1;
    if (e.cc.s_maxage != HTTP_CC_UNSET) {
        life = e.cc.s_maxage;
    } else if (e.cc.max_age != HTTP_CC_UNSET) {
        life = e.cc.max_age;
    } else if (!e.cdn && http_headers_count(resp, "Expires")) {
        int64_t exp = header_date(resp, "Expires");
        life = exp < 0 ? 0 : UTIL_MAX(0, exp - date);
    } else if (heuristic_status(status) || e.cc.public_) {
        life = heuristic_lifetime(resp, date, site);
        if (life < 0 && site->default_ttl > 0)
            life = site->default_ttl;
        if (life >= 0)
            out->flags |= CACHE_F_HEURISTIC;
    }
    if (life < 0)
        life = 0;
    if (site->max_ttl > 0 && life > site->max_ttl)
        life = site->max_ttl;
    out->freshness_lifetime = life;

    if (e.cc.must_revalidate || e.cc.proxy_revalidate || e.cc.s_maxage != HTTP_CC_UNSET)
        out->flags |= CACHE_F_MUST_REVALIDATE;
    if (e.cc.no_cache)
        out->flags |= CACHE_F_NO_CACHE;
    if (e.cc.immutable)
        out->flags |= CACHE_F_IMMUTABLE;
    out->stale_while_revalidate = e.cc.stale_while_revalidate != HTTP_CC_UNSET
                                      ? e.cc.stale_while_revalidate
                                      : UTIL_MAX(0, site->stale_while_revalidate);
    out->stale_if_error = e.cc.stale_if_error != HTTP_CC_UNSET ? e.cc.stale_if_error
                                                               : UTIL_MAX(0, site->stale_if_error);
    out->last_modified = header_date(resp, "Last-Modified");
}

int64_t cache_policy_age(const struct cache_meta *m, int64_t now)
{
    int64_t resident = UTIL_MAX(0, now - m->response_time);
    return sat_add(UTIL_MAX(0, m->corrected_initial_age), resident);
}

static bool stale_forbidden(const struct cache_meta *m)
{
    return (m->flags & (CACHE_F_MUST_REVALIDATE | CACHE_F_NO_CACHE)) != 0;
}

int64_t cache_policy_useless_after(const struct cache_meta *m)
{
    /* the instant current_age reaches freshness_lifetime */
    int64_t expiry = sat_add(m->response_time - m->corrected_initial_age, m->freshness_lifetime);
    if (stale_forbidden(m))
        return expiry;
    return sat_add(expiry, UTIL_MAX(m->stale_while_revalidate, m->stale_if_error));
}

enum cache_decision cache_policy_decide(const struct cache_meta *m, const struct http_cc *req_cc,
                                        int64_t now)
{
    if (m->freshness_lifetime < 0 || m->corrected_initial_age < 0)
        return CACHE_MISS; /* corrupt metadata: never serve it */
    int64_t age = cache_policy_age(m, now);
    bool fresh = !(m->flags & CACHE_F_STALE) && m->freshness_lifetime > age;

    if (m->flags & CACHE_F_NO_CACHE)
        return CACHE_REVALIDATE;
    if (req_cc->no_cache)
        return CACHE_REVALIDATE;
    /*
     * Request max-age (RFC 9111 5.2.1.1): an age above N is unacceptable. max-age=0 always
     * revalidates, as browsers mean it on reload, even when the age rounds to 0 seconds.
     */
    if (req_cc->max_age != HTTP_CC_UNSET && (age > req_cc->max_age || req_cc->max_age == 0))
        return CACHE_REVALIDATE;
    if (fresh) {
        if (req_cc->min_fresh != HTTP_CC_UNSET && m->freshness_lifetime - age < req_cc->min_fresh)
            return CACHE_REVALIDATE;
        return CACHE_USE_FRESH;
    }
    /* stale from here on */
    if (stale_forbidden(m) || (m->flags & CACHE_F_STALE))
        return CACHE_REVALIDATE; /* 4.4: an invalidated response needs validation */
    if (req_cc->min_fresh != HTTP_CC_UNSET)
        return CACHE_REVALIDATE;
    int64_t staleness = age - m->freshness_lifetime;
    if (req_cc->max_stale != HTTP_CC_UNSET && staleness <= req_cc->max_stale)
        return CACHE_USE_FRESH;
    if (m->stale_while_revalidate > 0 && staleness <= m->stale_while_revalidate)
        return CACHE_USE_STALE_REVALIDATE;
    return CACHE_REVALIDATE;
}

bool cache_policy_stale_on_error(const struct cache_meta *m, const struct http_cc *req_cc,
                                 int64_t now)
{
    if (stale_forbidden(m))
        return false;
    int64_t age = cache_policy_age(m, now);
    int64_t staleness = UTIL_MAX(0, age - m->freshness_lifetime);
    /* RFC 5861 4: the request's stale-if-error, when given, is the client's limit */
    int64_t window = req_cc && req_cc->stale_if_error != HTTP_CC_UNSET ? req_cc->stale_if_error
                                                                       : m->stale_if_error;
    if (req_cc && req_cc->max_stale != HTTP_CC_UNSET && staleness <= req_cc->max_stale)
        return true;
    if (staleness == 0 && !(m->flags & CACHE_F_STALE))
        return true; /* still fresh: nothing stale is being served */
    return window > 0 && staleness <= window;
}

/*
 * Fields of the stored response a 304 must not replace. RFC 9111 3.2: "a cache MUST add each
 * header field in the provided response to the stored response, replacing field values that
 * are already present, with the following exceptions: header fields excepted from storage in
 * Section 3.1 [hop-by-hop and Connection-listed], ... header fields that are automatically
 * processed and removed by the recipient [Content-Range], and the Content-Length header
 * field." Content-Encoding is kept too: 3.2 lets a cache omit fields "necessary to assure
 * integrity of the stored response", and our stored bytes are encoded exactly as the stored
 * Content-Encoding says; a 304 cannot re-encode them. Content-Type and everything else are
 * updated (cache-tests.fyi update304 expects Content-Type, Set-Cookie, Cache-Control,
 * Expires... to follow the 304).
 */
static bool keep_stored(struct str name)
{
    return str_caseeq_cstr(name, "Content-Length") || str_caseeq_cstr(name, "Content-Encoding") ||
           str_caseeq_cstr(name, "Content-Range") || str_caseeq_cstr(name, "Transfer-Encoding");
}

/*
 * Age and Date describe a message, not the representation: keeping the old ones after a 304
 * that lacks them would make cache_policy_meta() on the merged list count the old age again.
 * A 304 from an origin with a clock carries Date (RFC 9110 6.6.1); without one the edge adds
 * its own on the way out.
 */
static bool per_message(struct str name)
{
    return str_caseeq_cstr(name, "Age") || str_caseeq_cstr(name, "Date");
}

void cache_policy_merge_304(const struct http_headers *stored, const struct http_headers *fresh,
                            struct http_headers *out)
{
    /* which of the 304's fields replace stored ones */
    out->n = 0;
    for (size_t i = 0; i < stored->n; i++) {
        struct str name = stored->v[i].name;
        bool replaced = false;
        if (per_message(name)) {
            replaced = true; /* taken from the 304 or dropped: never the old message's */
        } else if (!keep_stored(name) && !http_is_hop_by_hop(stored, name)) {
            for (size_t j = 0; j < fresh->n && !replaced; j++)
                replaced = str_caseeq(fresh->v[j].name, name) &&
                           !http_is_hop_by_hop(fresh, fresh->v[j].name);
        }
        if (!replaced && !http_is_hop_by_hop(stored, name))
            http_headers_add(out, name, stored->v[i].value);
    }
    for (size_t j = 0; j < fresh->n; j++) {
        struct str name = fresh->v[j].name;
        if (keep_stored(name) || http_is_hop_by_hop(fresh, name))
            continue;
        http_headers_add(out, name, fresh->v[j].value);
    }
}

bool cache_policy_invalidates(struct str method, int status)
{
    static const char *const safe[] = {"GET", "HEAD", "OPTIONS", "TRACE"};
    for (size_t i = 0; i < ARRAY_SIZE(safe); i++)
        if (str_eq(method, str_cstr(safe[i])))
            return false;
    return status >= 200 && status <= 399;
}
