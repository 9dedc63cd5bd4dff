/*
 * tests/unit/cache/vary.c: cache_vary_normalise() and variant matching (cache/vary.c):
 * whitespace and multi-line normalisation, absent headers, truncation, Vary on several fields,
 * choosing among several stored variants, and Vary-set equality used for replacement.
 */
#include <stdlib.h>
#include <string.h>

#include "cache/cache_int.h"
#include "lib/util.h"
#include "tests/unit/tap.h"

static struct str S(const char *s) {
    return str_cstr(s);
}

static const char *
norm(const struct http_headers *h, const char *name)
{
    static char out[256];
    size_t n = cache_vary_normalise(h, name, out, sizeof(out) - 1);
    out[n] = '\0';
    return out;
}

static void test_normalise(void)
{
    struct http_headers h;
    http_headers_init(&h);
    http_headers_add(&h, S("Accept-Encoding"), S("  gzip,\t  br  "));
    http_headers_add(&h, S("Host"), S("x"));
    http_headers_add(&h, S("accept-encoding"), S("zstd"));
    http_headers_add(&h, S("Accept-Language"), S("en   \t  fr"));
    http_headers_add(&h, S("X-Empty"), S(""));
    is_str(norm(&h, "accept-encoding"), "gzip, br, zstd", "lines combined, whitespace collapsed");
    is_str(norm(&h, "ACCEPT-LANGUAGE"), "en fr", "case-insensitive name, run collapsed");
    is_str(norm(&h, "cookie"), "", "absent header is empty");
    is_str(norm(&h, "x-empty"), "", "empty header is empty");
    is_str(norm(NULL, "cookie"), "", "no request headers");
    char small[5];
    size_t n = cache_vary_normalise(&h, "accept-encoding", small, sizeof(small));
    ok(n == 5 && memcmp(small, "gzip,", 5) == 0, "truncated to cap");
    http_headers_fini(&h);
}

/* A record whose vary section holds the given pairs (NULL-terminated name/value list). */
static void rec_with_vary(struct buf *out, struct cache_rec *r, const char *const *pairs)
{
    struct buf vs;
    buf_init(&vs);
    uint32_t n = 0;
    for (; pairs[0]; pairs += 2, n++)
        cache_rec_sec_pair(&vs, S(pairs[0]), S(pairs[1]));
    struct cache_meta m = {0};
    struct cache_rec_hdr h;
    cache_rec_hdr_from_meta(&h, 1, 200, &m, 0, 0);
    cache_rec_build(out, &h, S("k"), STR_NULL, 0, buf_str(&vs), n, STR_NULL, 0, STR_NULL);
    buf_fini(&vs);
    ASSERT(cache_rec_parse(out->p, out->len, r) == 0);
}

static void test_match(void)
{
    static const char *const v_gzip[] = {"accept-encoding", "gzip", NULL};
    static const char *const v_br[] = {"accept-encoding", "br", NULL};
    static const char *const v_none[] = {"accept-encoding", "", NULL};
    static const char *const v_two[] = {"accept-encoding", "gzip", "accept-language", "fr", NULL};
    static const char *const v_two_rev[] = {"accept-language", "fr", "accept-encoding", "gzip",
                                            NULL};
    static const char *const v_empty[] = {NULL};
    struct buf b[6];
    struct cache_rec r[6];
    const char *const *specs[6] = {v_gzip, v_br, v_none, v_two, v_two_rev, v_empty};
    for (int i = 0; i < 6; i++) {
        buf_init(&b[i]);
        rec_with_vary(&b[i], &r[i], specs[i]);
    }
    struct http_headers req;
    http_headers_init(&req);
    http_headers_add(&req, S("Accept-Encoding"), S(" gzip "));
    ok(cache_vary_match(&r[0], &req), "gzip request matches gzip variant");
    ok(!cache_vary_match(&r[1], &req), "gzip request does not match br variant");
    ok(!cache_vary_match(&r[2], &req), "gzip request does not match no-header variant");
    ok(!cache_vary_match(&r[3], &req), "missing accept-language: two-field variant misses");
    ok(cache_vary_match(&r[5], &req), "a variant without Vary matches anything");
    http_headers_add(&req, S("Accept-Language"), S("fr"));
    ok(cache_vary_match(&r[3], &req), "both fields equal: two-field variant matches");
    ok(cache_vary_match(&r[4], &req), "order of the Vary fields does not matter");
    struct http_headers none;
    http_headers_init(&none);
    ok(cache_vary_match(&r[2], &none), "absent header matches the empty stored value");
    ok(!cache_vary_match(&r[0], &none), "absent header does not match gzip");
    struct http_headers longer;
    http_headers_init(&longer);
    http_headers_add(&longer, S("accept-encoding"), S("gzipx"));
    ok(!cache_vary_match(&r[0], &longer), "a longer value does not match a prefix");

    ok(cache_vary_same(&r[3], &r[4]), "same Vary set in another order is the same variant");
    ok(!cache_vary_same(&r[0], &r[1]), "different values: different variants");
    ok(!cache_vary_same(&r[0], &r[3]), "different field sets: different variants");
    ok(cache_vary_same(&r[5], &r[5]), "no Vary equals no Vary");
    for (int i = 0; i < 6; i++)
        buf_fini(&b[i]);
    http_headers_fini(&req);
    http_headers_fini(&none);
    http_headers_fini(&longer);
}

static void test_long_value(void)
{
    /* Values longer than the matcher's stack buffer. */
    size_t n = 5000;
    char *v = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++)
        v[i] = (char)('a' + i % 26);
    v[n] = '\0';
    static const char *pairs[] = {"cookie", NULL, NULL};
    pairs[1] = v;
    struct buf b;
    struct cache_rec r;
    buf_init(&b);
    rec_with_vary(&b, &r, pairs);
    struct http_headers req;
    http_headers_init(&req);
    http_headers_add(&req, S("Cookie"), str_make(v, n));
    ok(cache_vary_match(&r, &req), "5000-byte value matches");
    req.v[0].value.len--;
    ok(!cache_vary_match(&r, &req), "one byte shorter does not");
    http_headers_fini(&req);
    buf_fini(&b);
    free(v);
}

int main(void)
{
    test_normalise();
    test_match();
    test_long_value();
    return tap_done();
}
