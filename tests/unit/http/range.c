/* tests/unit/http/range.c: Range evaluation (RFC 9110 14.1.1, 14.2). */
#include "http/http.h"
#include "tests/unit/tap.h"

struct rcase {
    const char *in;
    uint64_t size;
    size_t max;
    enum http_range_result want;
    size_t n;
    uint64_t r[4][2];
};

static const struct rcase cases[] = {
    /* RFC 9110 14.1.2 examples, 10000-byte representation */
    {"bytes=0-499", 10000, 8, HTTP_RANGE_OK, 1, {{0, 499}}},
    {"bytes=500-999", 10000, 8, HTTP_RANGE_OK, 1, {{500, 999}}},
    {"bytes=-500", 10000, 8, HTTP_RANGE_OK, 1, {{9500, 9999}}},
    {"bytes=9500-", 10000, 8, HTTP_RANGE_OK, 1, {{9500, 9999}}},
    {"bytes=0-0,-1", 10000, 8, HTTP_RANGE_OK, 2, {{0, 0}, {9999, 9999}}},
    {"bytes= 0-999, 4500-5499, -1000",
     10000,
     8,
     HTTP_RANGE_OK,
     3,
     {{0, 999}, {4500, 5499}, {9000, 9999}}},
    {"bytes=500-600,601-999", 10000, 8, HTTP_RANGE_OK, 1, {{500, 999}}}, /* adjacent */
    {"bytes=500-700,601-999", 10000, 8, HTTP_RANGE_OK, 1, {{500, 999}}}, /* overlap */
    /* case, whitespace, empty elements */
    {"Bytes=0-1", 10, 8, HTTP_RANGE_OK, 1, {{0, 1}}},
    {"BYTES=0-1 ,\t2-3", 10, 8, HTTP_RANGE_OK, 1, {{0, 3}}},
    {"bytes=,0-1,,", 10, 8, HTTP_RANGE_OK, 1, {{0, 1}}},
    /* sorting, coalescing */
    {"bytes=8-9,0-1", 10, 8, HTTP_RANGE_OK, 2, {{0, 1}, {8, 9}}},
    {"bytes=0-9,2-3,4-5", 10, 8, HTTP_RANGE_OK, 1, {{0, 9}}},
    {"bytes=0-1,3-4,6-7", 10, 2, HTTP_RANGE_NONE, 0, {{0}}}, /* more than max */
    {"bytes=0-1,1-2,2-3,3-4", 10, 1, HTTP_RANGE_OK, 1, {{0, 4}}}, /* max after coalescing */
    /* clipping */
    {"bytes=5-100", 10, 8, HTTP_RANGE_OK, 1, {{5, 9}}},
    {"bytes=-100", 10, 8, HTTP_RANGE_OK, 1, {{0, 9}}},
    {"bytes=0-99999999999999999999999", 10, 8, HTTP_RANGE_OK, 1, {{0, 9}}},
    {"bytes=10-20,0-0", 10, 8, HTTP_RANGE_OK, 1, {{0, 0}}}, /* unsatisfiable part dropped */
    /* unsatisfiable -> 416 */
    {"bytes=10-20", 10, 8, HTTP_RANGE_UNSATISFIABLE, 0, {{0}}},
    {"bytes=10-", 10, 8, HTTP_RANGE_UNSATISFIABLE, 0, {{0}}},
    {"bytes=-0", 10, 8, HTTP_RANGE_UNSATISFIABLE, 0, {{0}}},
    {"bytes=99999999999999999999999-", 10, 8, HTTP_RANGE_UNSATISFIABLE, 0, {{0}}},
    {"bytes=0-5", 0, 8, HTTP_RANGE_UNSATISFIABLE, 0, {{0}}}, /* empty representation */
    {"bytes=-5", 0, 8, HTTP_RANGE_NONE, 0, {{0}}}, /* ... whole (empty) 200 */
    /* invalid -> ignored */
    {"", 10, 8, HTTP_RANGE_NONE, 0, {{0}}},
    {"bytes=", 10, 8, HTTP_RANGE_NONE, 0, {{0}}},
    {"bytes=,", 10, 8, HTTP_RANGE_NONE, 0, {{0}}},
    {"bytes 0-1", 10, 8, HTTP_RANGE_NONE, 0, {{0}}},
    {"bytes =0-1", 10, 8, HTTP_RANGE_NONE, 0, {{0}}},
    {"items=0-1", 10, 8, HTTP_RANGE_NONE, 0, {{0}}},
    {"bytes=5-1", 10, 8, HTTP_RANGE_NONE, 0, {{0}}}, /* last < first */
    {"bytes=a-1", 10, 8, HTTP_RANGE_NONE, 0, {{0}}},
    {"bytes=1-a", 10, 8, HTTP_RANGE_NONE, 0, {{0}}},
    {"bytes=-", 10, 8, HTTP_RANGE_NONE, 0, {{0}}},
    {"bytes=1", 10, 8, HTTP_RANGE_NONE, 0, {{0}}},
    {"bytes=0-1;2-3", 10, 8, HTTP_RANGE_NONE, 0, {{0}}},
    {"bytes=0-1 2-3", 10, 8, HTTP_RANGE_NONE, 0, {{0}}},
    {"bytes=--1", 10, 8, HTTP_RANGE_NONE, 0, {{0}}},
    {"bytes=0-1,x", 10, 8, HTTP_RANGE_NONE, 0, {{0}}}, /* one bad spec spoils the set */
    {"bytes=0-1", 10, 0, HTTP_RANGE_NONE, 0, {{0}}}, /* max 0 */
};

int main(void)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct rcase *c = &cases[i];
        struct http_range out[8];
        size_t n = 99;
        enum http_range_result r = http_range_parse(str_cstr(c->in), c->size, out, c->max, &n);
        is_int(r, c->want, "\"%s\" size %llu: result", c->in, (unsigned long long)c->size);
        is_int(n, c->n, "\"%s\": count", c->in);
        bool same = true;
        for (size_t k = 0; k < c->n && k < n; k++)
            same = same && out[k].first == c->r[k][0] && out[k].last == c->r[k][1];
        ok(same, "\"%s\": ranges", c->in);
    }

    /* amplification: many specs */
    char big[8192];
    size_t len = (size_t)snprintf(big, sizeof(big), "bytes=");
    for (int i = 0; i < 300; i++)
        len += (size_t)snprintf(big + len, sizeof(big) - len, "%d-%d,", i * 10, i * 10 + 1);
    struct http_range out[8];
    size_t n;
    is_int(http_range_parse(str_make(big, len), 100000, out, 8, &n), HTTP_RANGE_NONE,
           "300 range-specs: ignored");
    len = (size_t)snprintf(big, sizeof(big), "bytes=");
    for (int i = 0; i < 200; i++)
        len += (size_t)snprintf(big + len, sizeof(big) - len, "0-%d,", i);
    is_int(http_range_parse(str_make(big, len), 100000, out, 1, &n), HTTP_RANGE_OK,
           "200 overlapping specs coalesce into one");
    ok(n == 1 && out[0].first == 0 && out[0].last == 199, "coalesced to 0-199");
    return tap_done();
}
