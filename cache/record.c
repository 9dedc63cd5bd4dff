/*
 * cache/record.c: encoding and decoding of object records (format in cache/cache_int.h).
 *
 * The decoder is a pure function over a caller buffer (STYLE.md rule 8): it validates every
 * length, count and consistency rule before anything trusts the data, because records come
 * from disk and a torn or foreign file must yield OP_ECORRUPT, never a crash. It allocates
 * nothing; cache_rec_to_obj() then copies a validated record into one allocation. Any thread.
 */
#include <stdlib.h>
#include <string.h>

#include "cache/cache_int.h"
#include "lib/util.h"

static uint32_t le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Walk `n` items of a section of `len` bytes; each item is `nstr` length-prefixed strings. */
static int section_check(const uint8_t *p, uint32_t len, uint32_t n, unsigned nstr)
{
    const uint8_t *end = p + len;
    for (uint32_t i = 0; i < n; i++) {
        if ((size_t)(end - p) < 4u * nstr)
            return OP_ECORRUPT;
        uint64_t need = 0;
        for (unsigned k = 0; k < nstr; k++)
            need += le32(p + 4 * k);
        p += 4u * nstr;
        if ((uint64_t)(end - p) < need)
            return OP_ECORRUPT;
        p += need;
    }
    return p == end ? 0 : OP_ECORRUPT;
}

int cache_rec_parse(const void *buf, size_t len, struct cache_rec *r)
{
    const uint8_t *b = buf;
    struct cache_rec_hdr *h = &r->h;
    if (b == NULL || len < CACHE_REC_HDR_LEN || len > UINT32_MAX)
        return OP_ECORRUPT;
    memcpy(h, b, sizeof(*h));
    if (h->magic != CACHE_REC_MAGIC || h->version != CACHE_REC_VERSION ||
        h->hdr_len != CACHE_REC_HDR_LEN || h->total_len != len)
        return OP_ECORRUPT;
    if (h->status < 100 || h->status > 999)
        return OP_ECORRUPT;
    if (h->key_len == 0 || h->key_len > CACHE_KEY_MAX)
        return OP_ECORRUPT;
    uint64_t total = (uint64_t)CACHE_REC_HDR_LEN + h->key_len + h->headers_len + h->vary_len +
                     h->tags_len + h->inline_len;
    if (total != len)
        return OP_ECORRUPT;
    if (h->n_chunks == 0) {
        if (h->body_len > CACHE_INLINE_MAX || h->inline_len != h->body_len)
            return OP_ECORRUPT;
    } else {
        if (h->inline_len != 0 || h->body_len <= CACHE_INLINE_MAX)
            return OP_ECORRUPT;
        if ((h->body_len + CACHE_CHUNK_SIZE - 1) / CACHE_CHUNK_SIZE != h->n_chunks)
            return OP_ECORRUPT;
    }
    const uint8_t *p = b + CACHE_REC_HDR_LEN;
    r->base = b;
    r->len = len;
    r->key = str_make((const char *)p, h->key_len);
    p += h->key_len;
    r->headers = p;
    if (section_check(p, h->headers_len, h->n_headers, 2) != 0)
        return OP_ECORRUPT;
    p += h->headers_len;
    r->vary = p;
    if (section_check(p, h->vary_len, h->n_vary, 2) != 0)
        return OP_ECORRUPT;
    p += h->vary_len;
    r->tags = p;
    if (section_check(p, h->tags_len, h->n_tags, 1) != 0)
        return OP_ECORRUPT;
    p += h->tags_len;
    r->body = str_make((const char *)p, h->inline_len);
    return 0;
}

void cache_rec_pair_next(const uint8_t **p, struct str *name, struct str *value)
{
    uint32_t nl = le32(*p), vl = le32(*p + 4);
    *name = str_make((const char *)*p + 8, nl);
    *value = str_make((const char *)*p + 8 + nl, vl);
    *p += 8 + (size_t)nl + vl;
}

void cache_rec_str_next(const uint8_t **p, struct str *s)
{
    uint32_t l = le32(*p);
    *s = str_make((const char *)*p + 4, l);
    *p += 4 + (size_t)l;
}

struct cache_obj *cache_rec_to_obj(const struct cache_rec *r)
{
    const struct cache_rec_hdr *h = &r->h;
    size_t off_hdrs = sizeof(struct cache_obj);
    size_t off_vary = off_hdrs + (size_t)h->n_headers * sizeof(struct http_header);
    size_t off_tags = off_vary + (size_t)h->n_vary * sizeof(struct cache_vary);
    size_t off_data = off_tags + (size_t)h->n_tags * sizeof(struct str);
    size_t data_len = r->len - CACHE_REC_HDR_LEN;
    char *mem = xmalloc(off_data + data_len);
    struct cache_obj *o = (struct cache_obj *)mem;
    char *data = mem + off_data;
    memcpy(data, r->base + CACHE_REC_HDR_LEN, data_len);
    /* Rebase every pointer of the view into the copy. */
    const uint8_t *src0 = r->base + CACHE_REC_HDR_LEN;
#define REBASE(ptr) ((const uint8_t *)data + ((const uint8_t *)(ptr)-src0))

    memset(o, 0, sizeof(*o));
    o->id = h->id;
    o->key = str_make((const char *)REBASE(r->key.p), r->key.len);
    o->status = h->status;
    cache_rec_meta_get(h, &o->meta);
    o->body_len = h->body_len;
    o->n_chunks = h->n_chunks;
    o->body = str_make((const char *)REBASE(r->body.p), r->body.len);

    o->headers.v = h->n_headers ? (struct http_header *)(mem + off_hdrs) : NULL;
    o->headers.n = h->n_headers;
    o->headers.cap = h->n_headers;
    const uint8_t *p = REBASE(r->headers);
    for (uint32_t i = 0; i < h->n_headers; i++)
        cache_rec_pair_next(&p, &o->headers.v[i].name, &o->headers.v[i].value);

    o->vary = h->n_vary ? (struct cache_vary *)(mem + off_vary) : NULL;
    o->n_vary = h->n_vary;
    p = REBASE(r->vary);
    for (uint32_t i = 0; i < h->n_vary; i++)
        cache_rec_pair_next(&p, &o->vary[i].name, &o->vary[i].value);

    o->tags = h->n_tags ? (struct str *)(mem + off_tags) : NULL;
    o->n_tags = h->n_tags;
    p = REBASE(r->tags);
    for (uint32_t i = 0; i < h->n_tags; i++)
        cache_rec_str_next(&p, &o->tags[i]);
#undef REBASE
    o->_refcnt = 1;
    o->_mem = mem;
    return o;
}

static void put_le32(struct buf *b, uint32_t v)
{
    buf_append(b, &v, 4);
}

void cache_rec_sec_pair(struct buf *b, struct str name, struct str value)
{
    put_le32(b, (uint32_t)name.len);
    put_le32(b, (uint32_t)value.len);
    buf_append(b, name.p, name.len);
    buf_append(b, value.p, value.len);
}

void cache_rec_sec_str(struct buf *b, struct str s)
{
    put_le32(b, (uint32_t)s.len);
    buf_append(b, s.p, s.len);
}

uint32_t cache_rec_sec_headers(struct buf *b, const struct http_headers *h)
{
    if (h == NULL)
        return 0;
    for (size_t i = 0; i < h->n; i++)
        cache_rec_sec_pair(b, h->v[i].name, h->v[i].value);
    return (uint32_t)h->n;
}

void cache_rec_build(struct buf *out, const struct cache_rec_hdr *hin, struct str key,
                     struct str headers, uint32_t n_headers, struct str vary, uint32_t n_vary,
                     struct str tags, uint32_t n_tags, struct str body)
{
    struct cache_rec_hdr h = *hin;
    h.magic = CACHE_REC_MAGIC;
    h.version = CACHE_REC_VERSION;
    h.hdr_len = CACHE_REC_HDR_LEN;
    h.reserved0 = 0;
    h.reserved1 = 0;
    h.key_len = (uint32_t)key.len;
    h.n_headers = n_headers;
    h.headers_len = (uint32_t)headers.len;
    h.n_vary = n_vary;
    h.vary_len = (uint32_t)vary.len;
    h.n_tags = n_tags;
    h.tags_len = (uint32_t)tags.len;
    h.inline_len = (uint32_t)body.len;
    h.total_len =
        (uint32_t)(CACHE_REC_HDR_LEN + key.len + headers.len + vary.len + tags.len + body.len);
    buf_append(out, &h, sizeof(h));
    buf_append(out, key.p, key.len);
    buf_append(out, headers.p, headers.len);
    buf_append(out, vary.p, vary.len);
    buf_append(out, tags.p, tags.len);
    buf_append(out, body.p, body.len);
}

void cache_rec_rebuild(struct buf *out, const struct cache_rec *r, const struct cache_rec_hdr *h,
                       const struct str *headers, const uint32_t *n_headers)
{
    struct str hs = str_make((const char *)r->headers, r->h.headers_len);
    uint32_t nh = r->h.n_headers;
    if (headers != NULL) {
        hs = *headers;
        nh = *n_headers;
    }
    cache_rec_build(out, h ? h : &r->h, r->key, hs, nh,
                    str_make((const char *)r->vary, r->h.vary_len), r->h.n_vary,
                    str_make((const char *)r->tags, r->h.tags_len), r->h.n_tags, r->body);
}

void cache_rec_hdr_from_meta(struct cache_rec_hdr *h, uint64_t id, int status,
                             const struct cache_meta *m, uint64_t body_len, int64_t access_seq)
{
    memset(h, 0, sizeof(*h));
    h->id = id;
    h->status = status;
    h->body_len = body_len;
    h->n_chunks = body_len > CACHE_INLINE_MAX
                      ? (uint32_t)((body_len + CACHE_CHUNK_SIZE - 1) / CACHE_CHUNK_SIZE)
                      : 0;
    h->access_seq = access_seq;
    h->request_time = m->request_time;
    h->response_time = m->response_time;
    h->corrected_initial_age = m->corrected_initial_age;
    h->freshness_lifetime = m->freshness_lifetime;
    h->stale_while_revalidate = m->stale_while_revalidate;
    h->stale_if_error = m->stale_if_error;
    h->last_modified = m->last_modified;
    h->meta_flags = m->flags;
}

void cache_rec_meta_get(const struct cache_rec_hdr *h, struct cache_meta *m)
{
    memset(m, 0, sizeof(*m));
    m->request_time = h->request_time;
    m->response_time = h->response_time;
    m->corrected_initial_age = h->corrected_initial_age;
    m->freshness_lifetime = h->freshness_lifetime;
    m->stale_while_revalidate = h->stale_while_revalidate;
    m->stale_if_error = h->stale_if_error;
    m->last_modified = h->last_modified;
    m->flags = h->meta_flags;
}

/* Saturating add: the fields come from disk and the origin, so overflow must not be UB. */
static int64_t sat_add(int64_t a, int64_t b)
{
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

int64_t cache_rec_useless_after(const struct cache_rec_hdr *h)
{
    /* expiry = response_time + (freshness_lifetime - corrected_initial_age) (RFC 9111 4.2) */
    int64_t ttl =
        sat_add(h->freshness_lifetime,
                h->corrected_initial_age == INT64_MIN ? INT64_MAX : -h->corrected_initial_age);
    int64_t stale = UTIL_MAX(h->stale_while_revalidate, h->stale_if_error);
    if (stale < 0)
        stale = 0;
    return sat_add(sat_add(h->response_time, ttl), stale);
}
