/* tests/unit/http/cc.c: Cache-Control and CDN-Cache-Control parsing (RFC 9111 5.2, 9213). */
#include "http/http.h"
#include "tests/unit/tap.h"

static struct http_cc parse2(const char *name, const char *l1, const char *l2)
{
    struct http_headers h;
    struct http_cc cc;
    http_headers_init(&h);
    http_headers_add(&h, STR_LIT("Content-Type"), STR_LIT("text/plain"));
    if (l1)
        http_headers_add(&h, str_cstr(name), str_cstr(l1));
    if (l2)
        http_headers_add(&h, str_cstr(name), str_cstr(l2));
    http_cc_parse(&h, name, &cc);
    http_headers_fini(&h);
    return cc;
}

static struct http_cc cc1(const char *v)
{
    return parse2("Cache-Control", v, NULL);
}

static struct http_cc cdn(const char *v)
{
    return parse2("CDN-Cache-Control", v, NULL);
}

static const struct {
    const char *in;
    int64_t max_age; /* expected max_age */
} max_age_cases[] = {
    {"max-age=3600", 3600},
    {"MAX-AGE=3600", 3600},
    {"max-age=003600", 3600}, /* cache-tests freshness-max-age-leading-zero */
    {"max-age=\"3600\"", 3600}, /* quoted accepted (RFC 9111 5.2) */
    {"max-age='3600'", 0}, /* single quotes: invalid -> stale */
    {"max-age=abc", 0},
    {"max-age=a3600", 0},
    {"max-age=3600a", 0},
    {"max-age=3600.0", 0},
    {"max-age=-1", 0},
    {"max-age=", 0},
    {"max-age", 0},
    {"max-age= 3600", 0}, /* space after "=": not delta-seconds */
    {"max-age =3600", HTTP_CC_UNSET}, /* space before "=": not the directive */
    {"max-age=2147483648", 2147483648},
    {"max-age=99999999999999999999999", 2147483648}, /* saturates (RFC 9111 1.2.2) */
    {"max-age=1800, max-age=1", 0}, /* conflicting duplicates -> stale */
    {"max-age=1, max-age=1800", 0},
    {"max-age=60, max-age=60", 60}, /* equal duplicates are harmless */
    {"extension=\"max-age=3600\", max-age=1", 1}, /* quoted commas stay inside */
    {"max-age=1, extension=\"max-age=3600\"", 1},
    {"foo, max-age=10, bar=\"a,b\"", 10},
    {",, ,max-age=7,,", 7},
    {"no-cache", HTTP_CC_UNSET},
    {"xmax-age=5", HTTP_CC_UNSET},
};

int main(void)
{
    for (size_t i = 0; i < sizeof(max_age_cases) / sizeof(max_age_cases[0]); i++) {
        struct http_cc c = cc1(max_age_cases[i].in);
        is_int(c.max_age, max_age_cases[i].max_age, "max-age of \"%s\"", max_age_cases[i].in);
        ok(c.present, "present for \"%s\"", max_age_cases[i].in);
    }

    struct http_cc c = parse2("Cache-Control", "max-age=1800", "max-age=1");
    is_int(c.max_age, 0, "conflicting duplicates on separate lines -> 0");
    c = parse2("Cache-Control", "public", "s-maxage=30");
    ok(c.public_ && c.s_maxage == 30, "directives combined across lines");
    c = parse2("cache-control", "no-store", NULL);
    ok(c.no_store, "field name matched case-insensitively");

    c = cc1(NULL);
    ok(!c.present && c.max_age == HTTP_CC_UNSET && c.s_maxage == HTTP_CC_UNSET &&
           c.min_fresh == HTTP_CC_UNSET && c.max_stale == HTTP_CC_UNSET &&
           c.stale_while_revalidate == HTTP_CC_UNSET && c.stale_if_error == HTTP_CC_UNSET &&
           !c.no_cache && !c.no_store && !c.private_ && !c.public_,
       "absent field: nothing set");

    c = cc1("no-cache, no-store, private, public, must-revalidate, proxy-revalidate, "
            "only-if-cached, no-transform, immutable, must-understand");
    ok(c.no_cache && c.no_store && c.private_ && c.public_ && c.must_revalidate &&
           c.proxy_revalidate && c.only_if_cached && c.no_transform && c.immutable &&
           c.must_understand,
       "every boolean directive");
    c = cc1("No-Cache=\"Set-Cookie, X-Foo\", PRIVATE=\"Authorization\"");
    ok(c.no_cache && c.private_, "qualified no-cache/private count as set");
    c = cc1("s-maxage=10, min-fresh=20, max-stale=30, stale-while-revalidate=40, "
            "stale-if-error=50");
    ok(c.s_maxage == 10 && c.min_fresh == 20 && c.max_stale == 30 &&
           c.stale_while_revalidate == 40 && c.stale_if_error == 50,
       "every delta directive");
    c = cc1("max-stale");
    is_int(c.max_stale, INT64_MAX, "max-stale without a value accepts any staleness");
    c = cc1("max-stale=abc");
    is_int(c.max_stale, 0, "invalid max-stale -> 0");
    c = cc1("stale-while-revalidate=x");
    is_int(c.stale_while_revalidate, 0, "invalid stale-while-revalidate -> no window");

    /* delta-seconds */
    int64_t d;
    ok(http_delta_parse(STR_LIT("0"), &d) == 0 && d == 0, "delta 0");
    ok(http_delta_parse(STR_LIT("2147483647"), &d) == 0 && d == 2147483647, "delta 2^31-1");
    ok(http_delta_parse(STR_LIT("2147483649"), &d) == 0 && d == 2147483648, "delta saturates");
    ok(http_delta_parse(STR_LIT(""), &d) < 0, "empty delta invalid");
    ok(http_delta_parse(STR_LIT("+5"), &d) < 0, "signed delta invalid");
    ok(http_delta_parse(STR_LIT("5 "), &d) < 0, "trailing space invalid");

    /* CDN-Cache-Control: Structured Field dictionary (RFC 9213, cache-tests cdn-*) */
    c = cdn("max-age=3600");
    ok(c.present && c.max_age == 3600, "cdn max-age");
    c = cdn("MaX-aGe=3600");
    ok(c.present && c.max_age == 3600, "cdn key case tolerated");
    c = cdn("max-age=99999999999");
    is_int(c.max_age, 2147483648, "cdn large max-age saturates");
    c = cdn("foobar, max-age=3600");
    ok(c.present && c.max_age == 3600, "cdn extension directive");
    c = cdn("max-age=10000, &&&&&");
    ok(!c.present && c.max_age == HTTP_CC_UNSET, "cdn invalid SF (unknown type) ignored whole");
    c = cdn("max-age=\"10000\"");
    ok(!c.present, "cdn wrong type (string) ignored whole");
    c = cdn("max-age=1.5");
    ok(!c.present, "cdn decimal max-age ignored whole");
    c = cdn("max-age=-5");
    ok(!c.present, "cdn negative max-age ignored whole");
    c = cdn("max-age");
    ok(!c.present, "cdn boolean max-age ignored whole");
    c = cdn("max-age =100");
    ok(!c.present, "cdn space before = invalid");
    c = cdn("max-age= 100");
    ok(!c.present, "cdn space after = invalid");
    c = cdn("max-age=100,");
    ok(!c.present, "cdn trailing comma invalid");
    c = cdn("");
    ok(!c.present, "cdn empty value ignored");
    c = cdn("no-store");
    ok(c.present && c.no_store, "cdn no-store");
    c = cdn("private, no-cache;foo=?1, x=(\"a\" b);q=1, y=:aGVsbG8=:, z=\"s\\\"t\"");
    ok(c.present && c.private_ && c.no_cache, "cdn params, inner list, bytes, string");
    c = cdn("max-age=10, max-age=20");
    is_int(c.max_age, 20, "cdn duplicate key: last wins (RFC 8941)");
    c = parse2("CDN-Cache-Control", "max-age=10", "bad=\"");
    ok(!c.present, "cdn invalid second line invalidates the field");
    c = parse2("CDN-Cache-Control", "max-age=10", "s-maxage=5");
    ok(c.present && c.max_age == 10 && c.s_maxage == 5, "cdn lines combined");
    return tap_done();
}
