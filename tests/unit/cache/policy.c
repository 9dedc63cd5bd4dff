/* tests/unit/cache/policy.c: RFC 9111 shared-cache policy (cases after cache-tests.fyi). */
#include "cache/cache_policy.h"
#include "tests/unit/tap.h"

#define T0 1700000000 /* request sent */
#define D(x) date_str(x)

/* Build a header list from "Name: value|Name: value" (strings kept in a static pool). */
static char pool[64][256];
static int pool_n;

static void build(struct http_headers *h, const char *spec)
{
    http_headers_init(h);
    if (!spec)
        return;
    char *s = pool[pool_n++ % 64];
    snprintf(s, 256, "%s", spec);
    for (char *line = s; line && *line;) {
        char *next = strchr(line, '|');
        if (next)
            *next++ = '\0';
        char *colon = strchr(line, ':');
        struct str v = str_trim(str_cstr(colon + 1));
        http_headers_add(h, str_make(line, (size_t)(colon - line)), v);
        line = next;
    }
}

static const char *date_str(int64_t t)
{
    char *s = pool[pool_n++ % 64];
    http_date_format(t, s);
    return s;
}

static const struct cache_site_policy site0 = {0};

static bool storable(const char *method, const char *req, int status, const char *resp,
                     const struct cache_site_policy *site)
{
    struct http_headers rq, rs;
    build(&rq, req);
    build(&rs, resp);
    bool r = cache_policy_storable(str_cstr(method), &rq, status, &rs, site ? site : &site0);
    http_headers_fini(&rq);
    http_headers_fini(&rs);
    return r;
}

static struct cache_meta meta(int status, const char *resp, int64_t req_t, int64_t resp_t,
                              const struct cache_site_policy *site)
{
    struct http_headers rs;
    struct cache_meta m;
    build(&rs, resp);
    cache_policy_meta(status, &rs, req_t, resp_t, site ? site : &site0, &m);
    http_headers_fini(&rs);
    return m;
}

static struct http_cc reqcc(const char *v)
{
    struct http_headers h;
    struct http_cc cc;
    http_headers_init(&h);
    if (v)
        http_headers_add(&h, STR_LIT("Cache-Control"), str_cstr(v));
    http_cc_parse(&h, "Cache-Control", &cc);
    http_headers_fini(&h);
    return cc;
}

static void test_storable(void)
{
    char b[256];
    struct cache_site_policy ttl = {.default_ttl = 60};
    struct cache_site_policy auth = {.cache_authorized = true};
    struct cache_site_policy nocdn = {.ignore_cdn_cache_control = true};

    ok(storable("GET", NULL, 200, "Cache-Control: max-age=60", NULL), "max-age");
    ok(storable("GET", NULL, 200, "Cache-Control: s-maxage=60", NULL), "s-maxage");
    ok(storable("GET", NULL, 200, "Cache-Control: max-age=0", NULL), "max-age=0 (revalidate)");
    ok(storable("GET", NULL, 200, "Expires: Thu, 01 Jan 2099 00:00:00 GMT", NULL), "Expires");
    ok(storable("GET", NULL, 200, "Expires: 0", NULL), "invalid Expires: stored as stale");
    ok(storable("GET", NULL, 500, "Cache-Control: public", NULL), "public, any final status");
    ok(storable("GET", NULL, 599, "Cache-Control: max-age=5", NULL), "explicit, any final status");
    ok(!storable("GET", NULL, 500, "", &ttl), "500 not heuristically cacheable");
    ok(!storable("GET", NULL, 302, "", &ttl), "302 not heuristically cacheable");
    ok(!storable("HEAD", NULL, 200, "Cache-Control: max-age=60", NULL), "HEAD not stored");
    ok(!storable("POST", NULL, 200, "Cache-Control: max-age=60", NULL), "POST not stored");
    ok(!storable("get", NULL, 200, "Cache-Control: max-age=60", NULL), "method case-sensitive");
    ok(!storable("GET", NULL, 206, "Cache-Control: max-age=60", NULL), "206 never");
    ok(!storable("GET", NULL, 304, "Cache-Control: max-age=60", NULL), "304 never");
    ok(!storable("GET", NULL, 100, "Cache-Control: max-age=60", NULL), "1xx never");
    ok(!storable("GET", NULL, 600, "Cache-Control: max-age=60", NULL), "out of range status");

    /* heuristics: status list + Last-Modified or default_ttl */
    static const int hs[] = {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501};
    snprintf(b, sizeof(b), "Date: %s|Last-Modified: %s", D(T0), D(T0 - 100000));
    for (size_t i = 0; i < sizeof(hs) / sizeof(hs[0]); i++) {
        ok(storable("GET", NULL, hs[i], b, NULL), "heuristic status %d with Last-Modified", hs[i]);
        ok(storable("GET", NULL, hs[i], "", &ttl), "heuristic status %d with default_ttl", hs[i]);
        ok(!storable("GET", NULL, hs[i], "", NULL), "status %d without any freshness", hs[i]);
    }
    ok(!storable("GET", NULL, 403, b, &ttl), "403 not heuristically cacheable");

    /* no-store, private */
    ok(!storable("GET", NULL, 200, "Cache-Control: max-age=60, no-store", NULL), "no-store");
    ok(!storable("GET", "Cache-Control: no-store", 200, "Cache-Control: max-age=60", NULL),
       "request no-store");
    ok(!storable("GET", NULL, 200, "Cache-Control: max-age=60, private", NULL), "private");
    ok(!storable("GET", NULL, 200, "Cache-Control: max-age=60, private=\"x\"", NULL),
       "qualified private");
    ok(storable("GET", NULL, 200, "Cache-Control: max-age=60, no-cache", NULL),
       "no-cache is storable");
    ok(storable("GET", NULL, 200, "Cache-Control: no-store, must-understand, max-age=60", NULL),
       "must-understand with an understood status overrides no-store");
    ok(!storable("GET", NULL, 299, "Cache-Control: no-store, must-understand, max-age=60", NULL),
       "must-understand with an unknown status: not stored");

    /* Vary */
    ok(!storable("GET", NULL, 200, "Cache-Control: max-age=60|Vary: *", NULL), "Vary: *");
    ok(!storable("GET", NULL, 200, "Cache-Control: max-age=60|Vary: Accept, *", NULL),
       "Vary with * member");
    ok(storable("GET", NULL, 200, "Cache-Control: max-age=60|Vary: Accept", NULL), "Vary: Accept");

    /* Authorization (RFC 9111 3.5) */
    const char *a = "Authorization: Basic eDp5";
    ok(!storable("GET", a, 200, "Cache-Control: max-age=60", NULL), "Authorization + max-age");
    ok(storable("GET", a, 200, "Cache-Control: max-age=60, public", NULL), "Authorization+public");
    ok(storable("GET", a, 200, "Cache-Control: s-maxage=60", NULL), "Authorization+s-maxage");
    ok(storable("GET", a, 200, "Cache-Control: max-age=60, must-revalidate", NULL),
       "Authorization + must-revalidate");
    ok(storable("GET", a, 200, "Cache-Control: max-age=60", &auth), "site cache_authorized");

    /* Set-Cookie (our CDN rule) */
    const char *sc = "Set-Cookie: id=1";
    snprintf(b, sizeof(b), "Cache-Control: max-age=60|%s", sc);
    ok(!storable("GET", NULL, 200, b, NULL), "Set-Cookie + max-age: not stored");
    snprintf(b, sizeof(b), "Cache-Control: max-age=60, public|%s", sc);
    ok(storable("GET", NULL, 200, b, NULL), "Set-Cookie + public");
    snprintf(b, sizeof(b), "Cache-Control: s-maxage=60|%s", sc);
    ok(storable("GET", NULL, 200, b, NULL), "Set-Cookie + s-maxage");
    snprintf(b, sizeof(b), "CDN-Cache-Control: max-age=60|%s", sc);
    ok(storable("GET", NULL, 200, b, NULL), "Set-Cookie + CDN-Cache-Control max-age");
    ok(!storable("GET", NULL, 200, b, &nocdn), "... unless CDN-Cache-Control is not honoured");
    snprintf(b, sizeof(b), "Expires: Thu, 01 Jan 2099 00:00:00 GMT|%s", sc);
    ok(!storable("GET", NULL, 200, b, NULL), "Set-Cookie + Expires: not stored");

    /* CDN-Cache-Control replaces Cache-Control (RFC 9213; cache-tests cdn-*) */
    ok(storable("GET", NULL, 200, "Cache-Control: no-store|CDN-Cache-Control: max-age=100", NULL),
       "cdn-fresh-cc-nostore");
    ok(!storable("GET", NULL, 200, "Cache-Control: no-store|CDN-Cache-Control: max-age=100",
                 &nocdn),
       "ignore_cdn_cache_control");
    ok(!storable("GET", NULL, 200, "Cache-Control: max-age=100|CDN-Cache-Control: no-store", NULL),
       "cdn-no-store-cc-fresh");
    ok(!storable("GET", NULL, 200, "Cache-Control: max-age=100|CDN-Cache-Control: private", NULL),
       "cdn-private");
    ok(!storable("GET", NULL, 200, "Cache-Control: no-store|CDN-Cache-Control: max-age=\"100\"",
                 NULL),
       "invalid CDN-Cache-Control falls back to Cache-Control");
    ok(!storable("GET", NULL, 200, "CDN-Cache-Control: foo|Expires: Thu, 01 Jan 2099 00:00:00 GMT",
                 NULL),
       "with CDN-Cache-Control, Expires is ignored");
}

static void test_meta(void)
{
    char b[256];
    struct cache_meta m;
    struct cache_site_policy site = {.default_ttl = 300, .heuristic_max = 86400};

    /* freshness sources and precedence (RFC 9111 4.2.1) */
    m = meta(200, "Cache-Control: max-age=100", T0, T0, NULL);
    is_int(m.freshness_lifetime, 100, "max-age");
    m = meta(200, "Cache-Control: max-age=100, s-maxage=50", T0, T0, NULL);
    is_int(m.freshness_lifetime, 50, "s-maxage beats max-age");
    ok(m.flags & CACHE_F_MUST_REVALIDATE, "s-maxage implies proxy-revalidate");
    snprintf(b, sizeof(b), "Date: %s|Expires: %s|Cache-Control: max-age=7", D(T0), D(T0 + 1000));
    m = meta(200, b, T0, T0, NULL);
    is_int(m.freshness_lifetime, 7, "max-age beats Expires");
    snprintf(b, sizeof(b), "Date: %s|Expires: %s", D(T0 - 10), D(T0 + 1000));
    m = meta(200, b, T0, T0, NULL);
    is_int(m.freshness_lifetime, 1010, "Expires - Date");
    ok(!(m.flags & CACHE_F_HEURISTIC), "explicit is not heuristic");
    snprintf(b, sizeof(b), "Expires: %s", D(T0 + 1000));
    m = meta(200, b, T0, T0 + 2, NULL);
    is_int(m.freshness_lifetime, 998, "Expires without Date: against response_time");
    snprintf(b, sizeof(b), "Date: %s|Expires: %s", D(T0), D(T0 - 1000));
    m = meta(200, b, T0, T0, NULL);
    is_int(m.freshness_lifetime, 0, "Expires in the past");
    snprintf(b, sizeof(b), "Date: %s|Expires: 0", D(T0));
    m = meta(200, b, T0, T0, &site);
    is_int(m.freshness_lifetime, 0, "invalid Expires: expired, no heuristic/default");
    snprintf(b, sizeof(b), "Date: %s|Expires: %s|Expires: %s", D(T0), D(T0 + 10), D(T0 + 99));
    m = meta(200, b, T0, T0, NULL);
    is_int(m.freshness_lifetime, 10, "first Expires");
    snprintf(b, sizeof(b), "Date: %s|Expires: %s|Cache-Control: max-age=abc", D(T0), D(T0 + 99));
    m = meta(200, b, T0, T0, NULL);
    is_int(m.freshness_lifetime, 0, "invalid max-age: stale, Expires not consulted");

    /* CDN-Cache-Control */
    m = meta(200, "Cache-Control: max-age=1|CDN-Cache-Control: max-age=3600", T0, T0, NULL);
    is_int(m.freshness_lifetime, 3600, "cdn-max-age-short-cc-max-age");
    m = meta(200, "Cache-Control: max-age=3600|CDN-Cache-Control: max-age=1", T0, T0, NULL);
    is_int(m.freshness_lifetime, 1, "cdn-max-age-long-cc-max-age");
    snprintf(b, sizeof(b), "Date: %s|Expires: %s|CDN-Cache-Control: max-age=3600", D(T0),
             D(T0 - 10000));
    m = meta(200, b, T0, T0, NULL);
    is_int(m.freshness_lifetime, 3600, "cdn-max-age-expires");
    m = meta(200, "Cache-Control: max-age=3600|CDN-Cache-Control: no-cache", T0, T0, NULL);
    ok(m.flags & CACHE_F_NO_CACHE, "cdn-no-cache");
    m = meta(200, "Cache-Control: max-age=1|CDN-Cache-Control: max-age =100", T0, T0, NULL);
    is_int(m.freshness_lifetime, 1, "invalid CDN-Cache-Control: Cache-Control applies");

    /* heuristics (RFC 9111 4.2.2) */
    snprintf(b, sizeof(b), "Date: %s|Last-Modified: %s", D(T0), D(T0 - 10000));
    m = meta(200, b, T0, T0, &site);
    is_int(m.freshness_lifetime, 1000, "10%% of Date - Last-Modified");
    ok(m.flags & CACHE_F_HEURISTIC, "heuristic flag");
    is_int(m.last_modified, T0 - 10000, "last_modified recorded");
    snprintf(b, sizeof(b), "Date: %s|Last-Modified: %s", D(T0), D(T0 - 100 * 86400));
    m = meta(200, b, T0, T0, &site);
    is_int(m.freshness_lifetime, 86400, "heuristic capped by heuristic_max");
    m = meta(404, "", T0, T0, &site);
    is_int(m.freshness_lifetime, 300, "default_ttl without Last-Modified");
    ok(m.flags & CACHE_F_HEURISTIC, "default_ttl is flagged heuristic");
    is_int(m.last_modified, -1, "no Last-Modified");
    m = meta(500, "", T0, T0, &site);
    is_int(m.freshness_lifetime, 0, "no heuristic for 500");
    m = meta(500, "Cache-Control: public", T0, T0, &site);
    is_int(m.freshness_lifetime, 300, "public 500 gets default_ttl");
    snprintf(b, sizeof(b), "Date: %s|Last-Modified: %s", D(T0), D(T0 + 100));
    m = meta(200, b, T0, T0, &site);
    is_int(m.freshness_lifetime, 300, "Last-Modified after Date: no heuristic, default");
    struct cache_site_policy capped = {.max_ttl = 60};
    m = meta(200, "Cache-Control: max-age=3600", T0, T0, &capped);
    is_int(m.freshness_lifetime, 60, "max_ttl caps");

    /* age (RFC 9111 4.2.3) */
    snprintf(b, sizeof(b), "Date: %s|Cache-Control: max-age=3600", D(T0));
    m = meta(200, b, T0, T0 + 2, NULL);
    is_int(m.corrected_initial_age, 2, "response_delay counted");
    snprintf(b, sizeof(b), "Date: %s|Cache-Control: max-age=3600|Age: 7200", D(T0));
    m = meta(200, b, T0, T0, NULL);
    is_int(m.corrected_initial_age, 7200, "upstream Age");
    snprintf(b, sizeof(b), "Date: %s|Age: 100", D(T0 - 500));
    m = meta(200, b, T0, T0 + 1, NULL);
    is_int(m.corrected_initial_age, 501, "apparent age wins when larger");
    snprintf(b, sizeof(b), "Date: %s|Age: 100", D(T0 + 500));
    m = meta(200, b, T0, T0 + 1, NULL);
    is_int(m.corrected_initial_age, 101, "origin clock ahead: apparent age clamps at 0");
    static const struct {
        const char *age;
        int64_t want;
    } ages[] = {{"Age: abc", 0},
                {"Age: -7200", 0},
                {"Age: 7200.0", 0},
                {"Age: 7200,0", 7200},
                {"Age: 7200|Age: 0", 7200},
                {"Age: 0,7200", 0},
                {"Age: 0|Age: 7200", 0},
                {"Age: 99999999999", 2147483648}};
    for (size_t i = 0; i < sizeof(ages) / sizeof(ages[0]); i++) {
        snprintf(b, sizeof(b), "Date: %s|%s", D(T0), ages[i].age);
        m = meta(200, b, T0, T0, NULL);
        is_int(m.corrected_initial_age, ages[i].want, "%s", ages[i].age);
    }

    /* flags and windows */
    m = meta(200, "Cache-Control: max-age=1, must-revalidate, immutable", T0, T0, NULL);
    ok((m.flags & CACHE_F_MUST_REVALIDATE) && (m.flags & CACHE_F_IMMUTABLE), "flags");
    m = meta(200, "Cache-Control: max-age=1, proxy-revalidate", T0, T0, NULL);
    ok(m.flags & CACHE_F_MUST_REVALIDATE, "proxy-revalidate");
    struct cache_site_policy sw = {.stale_while_revalidate = 30, .stale_if_error = 40};
    m = meta(200, "Cache-Control: max-age=1", T0, T0, &sw);
    ok(m.stale_while_revalidate == 30 && m.stale_if_error == 40, "site default windows");
    m = meta(200, "Cache-Control: max-age=1, stale-while-revalidate=5, stale-if-error=0", T0, T0,
             &sw);
    ok(m.stale_while_revalidate == 5 && m.stale_if_error == 0, "response windows win");
    ok(m.request_time == T0 && m.response_time == T0, "times recorded");
}

static struct cache_meta mk(int64_t life, int64_t age0, uint32_t flags, int64_t swr, int64_t sie)
{
    struct cache_meta m = {.request_time = T0,
                           .response_time = T0,
                           .corrected_initial_age = age0,
                           .freshness_lifetime = life,
                           .stale_while_revalidate = swr,
                           .stale_if_error = sie,
                           .last_modified = -1,
                           .flags = flags};
    return m;
}

static void test_decide(void)
{
    struct cache_meta m = mk(100, 0, 0, 0, 0);
    struct http_cc none = reqcc(NULL);
    is_int(cache_policy_age(&m, T0 + 10), 10, "age grows with resident time");
    is_int(cache_policy_age(&m, T0 - 10), 0, "clock going backwards: no negative age");
    m = mk(100, 7200, 0, 0, 0);
    is_int(cache_policy_age(&m, T0 + 1), 7201, "age includes the initial age");

    m = mk(100, 0, 0, 0, 0);
    is_int(cache_policy_decide(&m, &none, T0 + 99), CACHE_USE_FRESH, "fresh");
    is_int(cache_policy_decide(&m, &none, T0 + 100), CACHE_REVALIDATE, "age == lifetime: stale");
    m = mk(3600, 7200, 0, 0, 0);
    is_int(cache_policy_decide(&m, &none, T0), CACHE_REVALIDATE, "Age beyond max-age");
    m = mk(0, 0, 0, 0, 0);
    is_int(cache_policy_decide(&m, &none, T0), CACHE_REVALIDATE, "max-age=0");

    /* request directives */
    m = mk(3600, 1800, 0, 0, 0);
    struct http_cc c = reqcc("max-age=600");
    is_int(cache_policy_decide(&m, &c, T0), CACHE_REVALIDATE, "ccreq-magreaterage");
    c = reqcc("max-age=1800");
    is_int(cache_policy_decide(&m, &c, T0), CACHE_USE_FRESH, "request max-age == age: ok");
    c = reqcc("max-age=0");
    m = mk(3600, 0, 0, 0, 0);
    is_int(cache_policy_decide(&m, &c, T0), CACHE_REVALIDATE, "ccreq-ma0");
    c = reqcc("no-cache");
    is_int(cache_policy_decide(&m, &c, T0), CACHE_REVALIDATE, "ccreq-no-cache");
    m = mk(1500, 0, 0, 0, 0);
    c = reqcc("min-fresh=2000");
    is_int(cache_policy_decide(&m, &c, T0), CACHE_REVALIDATE, "ccreq-min-fresh");
    m = mk(1500, 1000, 0, 0, 0);
    c = reqcc("min-fresh=1000");
    is_int(cache_policy_decide(&m, &c, T0), CACHE_REVALIDATE, "ccreq-min-fresh-age");
    c = reqcc("min-fresh=500");
    is_int(cache_policy_decide(&m, &c, T0), CACHE_USE_FRESH, "min-fresh met");
    m = mk(1500, 2000, 0, 0, 0);
    c = reqcc("max-stale=1000");
    is_int(cache_policy_decide(&m, &c, T0), CACHE_USE_FRESH, "ccreq-max-stale-age");
    c = reqcc("max-stale=400");
    is_int(cache_policy_decide(&m, &c, T0), CACHE_REVALIDATE, "max-stale too small");
    c = reqcc("max-stale");
    is_int(cache_policy_decide(&m, &c, T0 + 1000000), CACHE_USE_FRESH, "max-stale unbounded");
    m = mk(1500, 2000, CACHE_F_MUST_REVALIDATE, 0, 0);
    is_int(cache_policy_decide(&m, &c, T0), CACHE_REVALIDATE, "must-revalidate beats max-stale");
    m = mk(1500, 2000, CACHE_F_NO_CACHE, 0, 0);
    is_int(cache_policy_decide(&m, &c, T0), CACHE_REVALIDATE, "no-cache beats max-stale");
    m = mk(1500, 0, CACHE_F_NO_CACHE, 0, 0);
    is_int(cache_policy_decide(&m, &none, T0), CACHE_REVALIDATE, "response no-cache, fresh");
    m = mk(1500, 0, CACHE_F_STALE, 100, 0);
    is_int(cache_policy_decide(&m, &none, T0), CACHE_REVALIDATE, "invalidated: revalidate");
    c = reqcc("max-stale");
    is_int(cache_policy_decide(&m, &c, T0), CACHE_REVALIDATE, "invalidated: max-stale no help");

    /* stale-while-revalidate (RFC 5861 3) */
    m = mk(100, 0, 0, 50, 0);
    is_int(cache_policy_decide(&m, &none, T0 + 120), CACHE_USE_STALE_REVALIDATE, "within SWR");
    is_int(cache_policy_decide(&m, &none, T0 + 150), CACHE_USE_STALE_REVALIDATE, "SWR edge");
    is_int(cache_policy_decide(&m, &none, T0 + 151), CACHE_REVALIDATE, "beyond SWR");
    m = mk(100, 0, CACHE_F_MUST_REVALIDATE, 50, 0);
    is_int(cache_policy_decide(&m, &none, T0 + 120), CACHE_REVALIDATE, "SWR vs must-revalidate");
    m = mk(100, 0, 0, 50, 0);
    c = reqcc("min-fresh=1");
    is_int(cache_policy_decide(&m, &c, T0 + 120), CACHE_REVALIDATE, "SWR vs min-fresh");
    m = mk(-1, 0, 0, 0, 0);
    is_int(cache_policy_decide(&m, &none, T0), CACHE_MISS, "corrupt metadata: miss");

    /* useless_after */
    m = mk(100, 10, 0, 50, 200);
    is_int(cache_policy_useless_after(&m), T0 + 90 + 200, "expiry + larger window");
    m = mk(100, 10, CACHE_F_MUST_REVALIDATE, 50, 200);
    is_int(cache_policy_useless_after(&m), T0 + 90, "no window with must-revalidate");

    /* stale-if-error (RFC 5861 4) */
    m = mk(100, 0, 0, 0, 60);
    ok(cache_policy_stale_on_error(&m, &none, T0 + 50), "fresh: serve on error");
    ok(cache_policy_stale_on_error(&m, &none, T0 + 160), "within stale-if-error");
    ok(!cache_policy_stale_on_error(&m, &none, T0 + 161), "beyond stale-if-error");
    ok(cache_policy_stale_on_error(&m, NULL, T0 + 160), "NULL request directives");
    c = reqcc("stale-if-error=10");
    ok(!cache_policy_stale_on_error(&m, &c, T0 + 160), "request stale-if-error limits");
    m = mk(100, 0, 0, 0, 0);
    c = reqcc("stale-if-error=100");
    ok(cache_policy_stale_on_error(&m, &c, T0 + 160), "request stale-if-error grants");
    c = reqcc("max-stale=100");
    ok(cache_policy_stale_on_error(&m, &c, T0 + 160), "request max-stale grants");
    ok(!cache_policy_stale_on_error(&m, &none, T0 + 160), "no window: no");
    m = mk(100, 0, CACHE_F_MUST_REVALIDATE, 0, 60);
    ok(!cache_policy_stale_on_error(&m, &none, T0 + 120), "must-revalidate forbids");
    m = mk(100, 0, CACHE_F_NO_CACHE, 0, 60);
    ok(!cache_policy_stale_on_error(&m, &none, T0 + 50), "no-cache forbids");
    m = mk(100, 0, CACHE_F_STALE, 0, 60);
    ok(cache_policy_stale_on_error(&m, &none, T0 + 50), "invalidated within window");
}

static const char *get(const struct http_headers *h, const char *n)
{
    static char buf[256];
    const struct http_header *x = http_headers_get(h, n);
    return x ? str_to_cstr(x->value, buf, sizeof(buf)) : "(none)";
}

static void test_merge(void)
{
    struct http_headers st, fr, out;
    build(&st, "Content-Type: text/plain|Content-Length: 10|Content-Encoding: gzip|ETag: \"1\"|"
               "Cache-Control: max-age=1|Age: 50|Date: Sun, 06 Nov 1994 08:49:37 GMT|"
               "X-Keep: k|Test-Header: A");
    build(&fr, "Content-Type: text/plain;charset=utf-8|Content-Length: 0|Content-Encoding: br|"
               "Cache-Control: max-age=3600|Connection: X-Hop|X-Hop: h|Keep-Alive: 5|"
               "Test-Header: B|Set-Cookie: a=c|Content-Range: bytes 0-1/2");
    http_headers_init(&out);
    cache_policy_merge_304(&st, &fr, &out);
    is_str(get(&out, "Content-Type"), "text/plain;charset=utf-8", "Content-Type updated");
    is_str(get(&out, "Content-Length"), "10", "Content-Length kept (RFC 9111 3.2)");
    is_str(get(&out, "Content-Encoding"), "gzip", "Content-Encoding kept");
    is_str(get(&out, "Cache-Control"), "max-age=3600", "Cache-Control updated");
    is_str(get(&out, "Test-Header"), "B", "other field updated");
    is_int(http_headers_count(&out, "Test-Header"), 1, "replaced, not duplicated");
    is_str(get(&out, "X-Keep"), "k", "field absent from the 304 kept");
    is_str(get(&out, "ETag"), "\"1\"", "ETag kept when the 304 has none");
    is_str(get(&out, "Set-Cookie"), "a=c", "Set-Cookie follows the 304");
    is_str(get(&out, "X-Hop"), "(none)", "Connection-listed field not merged");
    is_str(get(&out, "Keep-Alive"), "(none)", "hop-by-hop not merged");
    is_str(get(&out, "Connection"), "(none)", "Connection not merged");
    is_str(get(&out, "Content-Range"), "(none)", "Content-Range not merged");
    is_str(get(&out, "Age"), "(none)", "stored Age dropped");
    is_str(get(&out, "Date"), "(none)", "stored Date dropped when the 304 has none");
    http_headers_fini(&fr);
    build(&fr, "Date: Mon, 07 Nov 1994 08:49:37 GMT|Age: 3");
    cache_policy_merge_304(&st, &fr, &out);
    is_str(get(&out, "Date"), "Mon, 07 Nov 1994 08:49:37 GMT", "Date from the 304");
    is_str(get(&out, "Age"), "3", "Age from the 304");
    is_str(get(&out, "Test-Header"), "A", "reused out list: stored value back");
    http_headers_fini(&st);
    http_headers_fini(&fr);
    http_headers_fini(&out);
}

static void test_invalidates(void)
{
    static const struct {
        const char *m;
        int status;
        bool want;
    } t[] = {{"POST", 200, true},  {"PUT", 201, true},   {"DELETE", 204, true},
             {"PATCH", 303, true}, {"POST", 404, false}, {"POST", 500, false},
             {"GET", 200, false},  {"HEAD", 200, false}, {"OPTIONS", 200, false},
             {"POST", 100, false}, {"FOO", 200, true},   {"TRACE", 200, false}};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        is_int(cache_policy_invalidates(str_cstr(t[i].m), t[i].status), t[i].want,
               "invalidates %s %d", t[i].m, t[i].status);
}

int main(void)
{
    test_storable();
    test_meta();
    test_decide();
    test_merge();
    test_invalidates();
    return tap_done();
}
