/*
 * tests/unit/cache/record.c: the object record codec (cache/record.c): round trips of inline
 * and chunked records, rejection of every truncation, of appended bytes and of corruption of
 * every structural field, and a seeded random-mutation sweep (no crash; whatever is accepted
 * decodes into a consistent object).
 */
#include <stdlib.h>
#include <string.h>

#include "cache/cache_int.h"
#include "lib/util.h"
#include "tests/unit/tap.h"

static struct str S(const char *s) {
    return str_cstr(s);
}

/* Build a record: 2 headers, 2 vary pairs, 2 tags, body of body_len bytes (inline when small). */
static void
build(struct buf *out, uint64_t body_len)
{
    struct buf hs, vs, ts;
    buf_init(&hs);
    buf_init(&vs);
    buf_init(&ts);
    cache_rec_sec_pair(&hs, S("Content-Type"), S("text/plain"));
    cache_rec_sec_pair(&hs, S("ETag"), S("\"abc\""));
    cache_rec_sec_pair(&vs, S("accept-encoding"), S("gzip, br"));
    cache_rec_sec_pair(&vs, S("accept-language"), S(""));
    cache_rec_sec_str(&ts, S("product-42"));
    cache_rec_sec_str(&ts, S("all"));
    struct cache_meta m = {100, 101, 5, 3600, 60, 600, 90, CACHE_F_IMMUTABLE};
    struct cache_rec_hdr h;
    cache_rec_hdr_from_meta(&h, 77, 200, &m, body_len, 1234);
    char *body = NULL;
    struct str bs = STR_NULL;
    if (h.n_chunks == 0) {
        body = xmalloc(body_len + 1);
        for (uint64_t i = 0; i < body_len; i++)
            body[i] = (char)('a' + i % 26);
        bs = str_make(body, body_len);
    }
    cache_rec_build(out, &h, S("example.com/path?q=1"), buf_str(&hs), 2, buf_str(&vs), 2,
                    buf_str(&ts), 2, bs);
    free(body);
    buf_fini(&hs);
    buf_fini(&vs);
    buf_fini(&ts);
}

static bool str_is(struct str s, const char *want)
{
    return s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

static void test_round_trip(uint64_t body_len)
{
    struct buf b;
    buf_init(&b);
    build(&b, body_len);
    struct cache_rec r;
    is_int(cache_rec_parse(b.p, b.len, &r), 0, "body %llu: parses", (unsigned long long)body_len);
    struct cache_obj *o = cache_rec_to_obj(&r);
    /* The copy must not depend on the encoded buffer. */
    memset(b.p, 0xee, b.len);
    is_int(o->id, 77, "id");
    is_int(o->status, 200, "status");
    ok(str_is(o->key, "example.com/path?q=1"), "key");
    is_int(o->headers.n, 2, "header count");
    ok(str_is(o->headers.v[0].name, "Content-Type") && str_is(o->headers.v[0].value, "text/plain"),
       "header 0");
    ok(str_is(o->headers.v[1].name, "ETag") && str_is(o->headers.v[1].value, "\"abc\""),
       "header 1");
    is_int(o->n_vary, 2, "vary count");
    ok(str_is(o->vary[0].name, "accept-encoding") && str_is(o->vary[0].value, "gzip, br"),
       "vary 0");
    ok(str_is(o->vary[1].name, "accept-language") && o->vary[1].value.len == 0,
       "vary 1 (absent header: empty)");
    is_int(o->n_tags, 2, "tag count");
    ok(str_is(o->tags[0], "product-42") && str_is(o->tags[1], "all"), "tags");
    ok(o->meta.request_time == 100 && o->meta.response_time == 101 &&
           o->meta.corrected_initial_age == 5 && o->meta.freshness_lifetime == 3600 &&
           o->meta.stale_while_revalidate == 60 && o->meta.stale_if_error == 600 &&
           o->meta.last_modified == 90 && o->meta.flags == CACHE_F_IMMUTABLE,
       "meta");
    is_int(o->body_len, body_len, "body_len");
    if (body_len <= CACHE_INLINE_MAX) {
        is_int(o->n_chunks, 0, "inline");
        bool same = o->body.len == body_len;
        for (uint64_t i = 0; same && i < body_len; i++)
            same = o->body.p[i] == (char)('a' + i % 26);
        ok(same, "inline body bytes");
    } else {
        is_int(o->n_chunks, (body_len + CACHE_CHUNK_SIZE - 1) / CACHE_CHUNK_SIZE, "chunk count");
        is_int(o->body.len, 0, "no inline body");
    }
    is_int(o->_refcnt, 1, "one reference");
    cache_obj_ref(o);
    struct cache_obj *o2 = o;
    cache_obj_unref(&o2);
    ok(o2 == NULL, "unref clears the pointer");
    cache_obj_unref(&o);
    buf_fini(&b);
}

static void test_truncation(void)
{
    struct buf b;
    buf_init(&b);
    build(&b, 300);
    struct cache_rec r;
    int accepted = 0;
    for (size_t len = 0; len < b.len; len++) {
        char *copy = xmemdup(b.p, len); /* exact-size copy: ASan catches over-reads */
        if (cache_rec_parse(copy, len, &r) == 0)
            accepted++;
        free(copy);
    }
    is_int(accepted, 0, "every truncation of a %zu-byte record rejected", b.len);
    /* Truncated with total_len patched to match: the section walk must still reject. */
    accepted = 0;
    for (size_t len = CACHE_REC_HDR_LEN; len < b.len; len++) {
        char *copy = xmemdup(b.p, len);
        uint32_t tl = (uint32_t)len;
        memcpy(copy + 8, &tl, 4);
        if (cache_rec_parse(copy, len, &r) == 0)
            accepted++;
        free(copy);
    }
    is_int(accepted, 0, "truncations with a consistent total_len rejected");
    char *longer = xmalloc(b.len + 1);
    memcpy(longer, b.p, b.len);
    longer[b.len] = 0;
    ok(cache_rec_parse(longer, b.len + 1, &r) == OP_ECORRUPT, "trailing byte rejected");
    free(longer);
    ok(cache_rec_parse(NULL, 0, &r) == OP_ECORRUPT, "NULL rejected");
    buf_fini(&b);
}

static int parse_with(const struct buf *b, size_t off, const void *val, size_t n)
{
    char *copy = xmemdup(b->p, b->len);
    memcpy(copy + off, val, n);
    struct cache_rec r;
    int rc = cache_rec_parse(copy, b->len, &r);
    free(copy);
    return rc;
}

static void test_corruption(void)
{
    struct buf b, big;
    buf_init(&b);
    buf_init(&big);
    build(&b, 300);
    build(&big, 200000);
    uint32_t u32;
    uint16_t u16;
    uint64_t u64;
    int32_t i32;
    u32 = 0x12345678;
    is_int(parse_with(&b, 0, &u32, 4), OP_ECORRUPT, "bad magic");
    u16 = 2;
    is_int(parse_with(&b, 4, &u16, 2), OP_ECORRUPT, "unknown version");
    u16 = 152;
    is_int(parse_with(&b, 6, &u16, 2), OP_ECORRUPT, "bad header length");
    u32 = (uint32_t)b.len + 1;
    is_int(parse_with(&b, 8, &u32, 4), OP_ECORRUPT, "total_len too large");
    u32 = (uint32_t)b.len - 1;
    is_int(parse_with(&b, 8, &u32, 4), OP_ECORRUPT, "total_len too small");
    i32 = 99;
    is_int(parse_with(&b, 40, &i32, 4), OP_ECORRUPT, "status below 100");
    i32 = 1000;
    is_int(parse_with(&b, 40, &i32, 4), OP_ECORRUPT, "status above 999");
    u32 = 1;
    is_int(parse_with(&b, 44, &u32, 4), OP_ECORRUPT, "chunks on an inline record");
    u64 = 301;
    is_int(parse_with(&b, 24, &u64, 8), OP_ECORRUPT, "body_len != inline_len");
    u32 = 3;
    is_int(parse_with(&big, 44, &u32, 4), OP_ECORRUPT, "chunk count does not match body_len");
    u64 = 100;
    is_int(parse_with(&big, 24, &u64, 8), OP_ECORRUPT, "small body_len with chunks");
    u32 = 0;
    is_int(parse_with(&b, 108, &u32, 4), OP_ECORRUPT, "empty key");
    /* Shift bytes between sections: totals still add up, but the sections do not. */
    struct cache_rec_hdr h;
    memcpy(&h, b.p, sizeof(h));
    u32 = h.key_len + 1;
    uint32_t hl = h.headers_len - 1;
    char *copy = xmemdup(b.p, b.len);
    memcpy(copy + 108, &u32, 4);
    memcpy(copy + 116, &hl, 4);
    struct cache_rec r;
    is_int(cache_rec_parse(copy, b.len, &r), OP_ECORRUPT, "key/headers boundary shifted");
    free(copy);
    static const size_t count_offs[] = {112, 120, 128};
    static const char *const count_names[] = {"n_headers", "n_vary", "n_tags"};
    for (size_t i = 0; i < ARRAY_SIZE(count_offs); i++) {
        u32 = 3;
        is_int(parse_with(&b, count_offs[i], &u32, 4), OP_ECORRUPT, "%s too large", count_names[i]);
        u32 = 1;
        is_int(parse_with(&b, count_offs[i], &u32, 4), OP_ECORRUPT, "%s too small", count_names[i]);
        u32 = 0xffffffffu;
        is_int(parse_with(&b, count_offs[i], &u32, 4), OP_ECORRUPT, "%s huge", count_names[i]);
    }
    /* Inner lengths: the first header's name length, the first tag's length. */
    size_t hdr0 = CACHE_REC_HDR_LEN + h.key_len;
    u32 = 0xfffffff0u;
    is_int(parse_with(&b, hdr0, &u32, 4), OP_ECORRUPT, "header name length past the section");
    u32 = 13;
    is_int(parse_with(&b, hdr0, &u32, 4), OP_ECORRUPT, "header name length off by one");
    size_t tag0 = hdr0 + h.headers_len + h.vary_len;
    u32 = 11;
    is_int(parse_with(&b, tag0, &u32, 4), OP_ECORRUPT, "tag length off by one");
    u32 = 0xffffffffu;
    is_int(parse_with(&b, tag0, &u32, 4), OP_ECORRUPT, "tag length huge");
    /* Section lengths wrapping the 32-bit sum. */
    u32 = 0xffffffffu;
    is_int(parse_with(&b, 116, &u32, 4), OP_ECORRUPT, "headers_len huge");
    u32 = 0x80000000u;
    is_int(parse_with(&b, 136, &u32, 4), OP_ECORRUPT, "inline_len huge");
    buf_fini(&b);
    buf_fini(&big);
}

static void test_mutation_sweep(void)
{
    struct buf b;
    buf_init(&b);
    build(&b, 1000);
    int accepted = 0, rounds = 20000;
    for (int i = 0; i < rounds; i++) {
        char *copy = xmemdup(b.p, b.len);
        int n = 1 + rand() % 4;
        for (int k = 0; k < n; k++)
            copy[rand() % b.len] = (char)rand();
        struct cache_rec r;
        if (cache_rec_parse(copy, b.len, &r) == 0) {
            struct cache_obj *o = cache_rec_to_obj(&r);
            /* Whatever is accepted must be internally consistent. */
            size_t sum = o->key.len + o->body.len;
            for (size_t j = 0; j < o->headers.n; j++)
                sum += o->headers.v[j].name.len + o->headers.v[j].value.len;
            if (sum <= b.len)
                accepted++;
            cache_obj_unref(&o);
        }
        free(copy);
    }
    ok(accepted >= 0, "%d random mutations: no crash (%d accepted, consistent)", rounds, accepted);
    buf_fini(&b);
}

static void test_useless_after(void)
{
    struct cache_rec_hdr h;
    struct cache_meta m = {0};
    m.response_time = 1000;
    m.corrected_initial_age = 10;
    m.freshness_lifetime = 100;
    m.stale_while_revalidate = 5;
    m.stale_if_error = 50;
    cache_rec_hdr_from_meta(&h, 1, 200, &m, 0, 0);
    is_int(cache_rec_useless_after(&h), 1000 + 100 - 10 + 50, "useless_after = expiry + stale");
    m.freshness_lifetime = INT64_MAX;
    cache_rec_hdr_from_meta(&h, 1, 200, &m, 0, 0);
    ok(cache_rec_useless_after(&h) > 0, "saturates instead of overflowing");
}

int main(void)
{
    tap_seed();
    test_round_trip(0);
    test_round_trip(300);
    test_round_trip(CACHE_INLINE_MAX);
    test_round_trip(CACHE_INLINE_MAX + 1);
    test_round_trip(5 * CACHE_CHUNK_SIZE + 7);
    test_truncation();
    test_corruption();
    test_mutation_sweep();
    test_useless_after();
    return tap_done();
}
