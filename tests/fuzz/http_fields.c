/*
 * tests/fuzz/http_fields.c: libFuzzer target over the HTTP field parsers of http/ and the
 * policy functions fed by them. The input is split at '\n' into header values: the first
 * lines go to http_date_parse, http_range_parse and the entity-tag functions directly, and
 * every line also becomes a Cache-Control, CDN-Cache-Control, If-* and Age field of one
 * header list for http_cc_parse, http_cond_evaluate and cache_policy_meta/decide. Checks
 * invariants, not just crashes: ranges are sorted, disjoint, within the size and at most
 * `max`; a formatted date parses back to itself.
 */
#include <stdlib.h>
#include <string.h>

#include "cache/cache_policy.h"
#include "http/http.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = {"Cache-Control",     "CDN-Cache-Control",
                                        "If-None-Match",     "If-Match",
                                        "If-Modified-Since", "Age",
                                        "Expires",           "Date",
                                        "Last-Modified",     "Vary",
                                        "Set-Cookie",        "If-Unmodified-Since",
                                        "Content-Length",    "Connection"};
    struct str in = str_make((const char *)data, size);
    struct http_headers h;
    http_headers_init(&h);
    size_t start = 0, line = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i < size && data[i] != '\n')
            continue;
        struct str v = str_make(in.p + start, i - start);
        http_headers_add(&h, str_cstr(names[line % (sizeof(names) / sizeof(names[0]))]), v);
        line++;
        start = i + 1;
    }

    int64_t t = 0;
    if (http_date_parse(in, &t) == 0 && t >= 0 && t <= INT64_C(253402300799)) {
        char buf[HTTP_DATE_LEN + 1];
        int64_t back;
        CHECK(http_date_format(t, buf) == HTTP_DATE_LEN);
        CHECK(http_date_parse(str_cstr(buf), &back) == 0 && back == t);
    }
    (void)http_date_parse_at(in, t, &t);

    struct http_range r[8];
    size_t n;
    uint64_t rsize = size ? data[0] * 37u : 0;
    enum http_range_result rr = http_range_parse(in, rsize, r, 8, &n);
    if (rr == HTTP_RANGE_OK) {
        CHECK(n >= 1 && n <= 8);
        for (size_t k = 0; k < n; k++) {
            CHECK(r[k].first <= r[k].last && r[k].last < rsize);
            if (k)
                CHECK(r[k].first > r[k - 1].last + 1);
        }
    } else {
        CHECK(n == 0);
    }

    struct http_cc cc, cdn;
    http_cc_parse(&h, "Cache-Control", &cc);
    http_cc_parse(&h, "CDN-Cache-Control", &cdn);
    CHECK(cc.max_age == HTTP_CC_UNSET || (cc.max_age >= 0 && cc.max_age <= HTTP_DELTA_MAX));
    CHECK(cdn.max_age == HTTP_CC_UNSET || (cdn.max_age >= 0 && cdn.max_age <= HTTP_DELTA_MAX));
    CHECK(cc.max_stale == HTTP_CC_UNSET || cc.max_stale >= 0);

    struct str a = h.n > 0 ? h.v[0].value : STR_NULL;
    struct str b = h.n > 1 ? h.v[1].value : STR_NULL;
    bool strong = http_etag_match(a, b, false);
    bool weak = http_etag_match(a, b, true);
    CHECK(!strong || weak);
    CHECK(http_etag_match(a, b, true) == http_etag_match(b, a, true));
    (void)http_cond_evaluate(&h, b, (int64_t)size * 1000, size & 1);
    (void)http_if_range_ok(a, b, (int64_t)size);

    struct cache_site_policy site = {.default_ttl = 60, .heuristic_max = 3600};
    struct cache_meta m;
    int status = 200 + (int)(size % 400);
    (void)cache_policy_storable(STR_LIT("GET"), &h, status, &h, &site);
    cache_policy_meta(status, &h, 1700000000, 1700000001, &site, &m);
    CHECK(m.freshness_lifetime >= 0 && m.corrected_initial_age >= 0);
    CHECK(cache_policy_age(&m, 1700000100) >= m.corrected_initial_age);
    enum cache_decision d = cache_policy_decide(&m, &cc, 1700000100);
    CHECK(d != CACHE_MISS);
    (void)cache_policy_stale_on_error(&m, &cc, 1700000100);
    (void)cache_policy_useless_after(&m);

    struct http_headers out;
    http_headers_init(&out);
    cache_policy_merge_304(&h, &h, &out);
    if (!http_is_hop_by_hop(&h, STR_LIT("Content-Length")))
        CHECK(http_headers_count(&out, "Content-Length") ==
              http_headers_count(&h, "Content-Length"));
    http_headers_fini(&out);
    http_headers_fini(&h);
    return 0;
}
