/*
 * tests/unit/cache/store.c: the LMDB object store end to end through its public API
 * (cache/store.c + cache/writer.c): small and chunked objects, replacement of the same Vary
 * variant, several variants, chunk reads and commit notifications, soft and hard invalidation,
 * update after 304, persistence, eviction (TTL first, then LRU), size limits, back-pressure,
 * MDB_MAP_FULL, cleanup of a put interrupted by a crash, schema mismatch, stats, and
 * cache_check() after each scenario. Also prints (never asserts) lookup latency and writer
 * throughput. Every test uses a fresh mkdtemp directory, removed at the end.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <ftw.h>
#include <pthread.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache/cache_int.h"
#include "lib/log.h"
#include "lib/util.h"
#include "tests/unit/tap.h"

#define NOW 1700000000

static struct str S(const char *s) {
    return str_cstr(s);
}

static int
rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

static char *tmpdir(void)
{
    char *d = xstrdup("/tmp/outpost-store-XXXXXX");
    ASSERT(mkdtemp(d) != NULL);
    return d;
}

static void rmdir_all(char *d)
{
    nftw(d, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(d);
}

static struct cache_options opts(const char *dir)
{
    struct cache_options o = {0};
    o.dir = dir;
    o.max_size = 256u << 20;
    o.max_object_size = 64u << 20;
    o.batch_ms = 1;
    return o;
}

static void check_ok(struct cache *c, const char *what)
{
    char err[256];
    int rc = cache_check(c, err, sizeof(err));
    ok(rc == 0, "cache_check after %s", what);
    if (rc != 0)
        printf("#   %s\n", err);
}

/* Body byte i of (key, gen): verifiable without storing it. */
static uint8_t body_byte(uint32_t seed, uint64_t i)
{
    return (uint8_t)(seed + i * 7 + (i >> 9));
}

static uint32_t seed_of(struct str key, unsigned gen)
{
    uint32_t h = 2166136261u ^ gen;
    for (size_t i = 0; i < key.len; i++)
        h = (h ^ (uint8_t)key.p[i]) * 16777619u;
    return h;
}

struct done_rec {
    int calls;
    int err;
};

static void on_done(void *arg, int err)
{
    struct done_rec *d = arg;
    d->calls++;
    d->err = err;
}

struct put_args {
    const char *key;
    unsigned gen;
    uint64_t len;
    const struct cache_vary *vary;
    size_t n_vary;
    const struct str *tags;
    size_t n_tags;
    int64_t ttl;
    int64_t now;
    bool unknown_length;
};

/* Store an object; returns cache_put_end's result (0 once queued) and its id in *id. */
static int put(struct cache *c, const struct put_args *a, uint64_t *id, struct done_rec *done)
{
    struct http_headers h;
    http_headers_init(&h);
    char genbuf[16];
    snprintf(genbuf, sizeof(genbuf), "%u", a->gen);
    http_headers_add(&h, S("Content-Type"), S("application/octet-stream"));
    http_headers_add(&h, S("X-Gen"), S(genbuf));
    struct cache_meta m = {0};
    int64_t now = a->now ? a->now : NOW;
    m.request_time = now;
    m.response_time = now;
    m.freshness_lifetime = a->ttl ? a->ttl : 3600;
    m.last_modified = -1;
    struct cache_put_info info = {0};
    info.key = S(a->key);
    info.status = 200;
    info.headers = &h;
    info.meta = &m;
    info.vary = a->vary;
    info.n_vary = a->n_vary;
    info.tags = a->tags;
    info.n_tags = a->n_tags;
    info.content_length = a->unknown_length ? -1 : (int64_t)a->len;
    info.now = now;
    struct cache_put *p;
    int rc = cache_put_begin(c, &info, &p);
    http_headers_fini(&h); /* cache_put_begin copied everything */
    if (rc != 0)
        return rc;
    if (id)
        *id = cache_put_id(p);
    uint32_t seed = seed_of(info.key, a->gen);
    uint8_t piece[7001]; /* odd size: appends straddle chunk boundaries */
    for (uint64_t off = 0; off < a->len;) {
        size_t n = (size_t)UTIL_MIN((uint64_t)sizeof(piece), a->len - off);
        for (size_t i = 0; i < n; i++)
            piece[i] = body_byte(seed, off + i);
        rc = cache_put_append(p, piece, n);
        if (rc != 0) {
            cache_put_abort(&p);
            return rc;
        }
        off += n;
    }
    return cache_put_end(&p, done ? on_done : NULL, done);
}

struct sink_state {
    uint32_t seed;
    uint64_t off;
    bool same;
};

static void sink(void *arg, const void *data, size_t len)
{
    struct sink_state *s = arg;
    const uint8_t *d = data;
    for (size_t i = 0; i < len; i++)
        if (d[i] != body_byte(s->seed, s->off + i))
            s->same = false;
    s->off += len;
}

/* Does the whole body of o (inline or chunks) equal the derived bytes of (key, gen)? */
static bool body_ok(struct cache *c, const struct cache_obj *o, unsigned gen)
{
    struct sink_state s = {seed_of(o->key, gen), 0, true};
    if (o->n_chunks == 0) {
        sink(&s, o->body.p, o->body.len);
    } else {
        for (uint32_t i = 0; i < o->n_chunks; i++) {
            uint64_t before = s.off;
            if (cache_chunk_read(c, o->id, i, sink, &s) != 0)
                return false;
            uint64_t want = i + 1 < o->n_chunks ? CACHE_CHUNK_SIZE : o->body_len - before;
            if (s.off - before != want)
                return false;
        }
    }
    return s.same && s.off == o->body_len;
}

static unsigned gen_of(const struct cache_obj *o)
{
    const struct http_header *h = http_headers_get(&o->headers, "x-gen");
    char tmp[16];
    return h ? (unsigned)strtoul(str_to_cstr(h->value, tmp, sizeof(tmp)), NULL, 10) : 0;
}

static int lookup(struct cache *c, const char *key, const struct http_headers *req,
                  struct cache_obj **o)
{
    struct http_headers empty;
    http_headers_init(&empty);
    return cache_lookup(c, S(key), req ? req : &empty, NOW, o);
}

static uint64_t db_count(struct cache *c, MDB_dbi dbi)
{
    MDB_txn *txn;
    MDB_stat st;
    ASSERT(mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn) == 0);
    ASSERT(mdb_stat(txn, dbi, &st) == 0);
    mdb_txn_abort(txn);
    return st.ms_entries;
}

/* ---- scenarios --------------------------------------------------------------------------- */

static void test_small_and_chunked(void)
{
    char *dir = tmpdir();
    struct cache_options o = opts(dir);
    struct cache *c;
    is_int(cache_open(&c, &o), 0, "open");
    check_ok(c, "open of an empty cache");
    struct str tags[] = {S("t1"), S("product-9")};
    struct put_args a = {
        .key = "example.com/small", .gen = 1, .len = 1000, .tags = tags, .n_tags = 2};
    struct done_rec d = {0};
    uint64_t id;
    is_int(put(c, &a, &id, &d), 0, "small put queued");
    cache_sync(c);
    ok(d.calls == 1 && d.err == 0, "done called once with 0");
    struct cache_obj *obj;
    is_int(lookup(c, "example.com/small", NULL, &obj), 0, "small object found");
    if (obj) {
        is_int(obj->id, id, "same id as cache_put_id");
        is_int(obj->status, 200, "status");
        is_int(obj->n_chunks, 0, "inline");
        ok(body_ok(c, obj, 1), "inline body bytes");
        is_int(obj->n_tags, 2, "tags");
        ok(obj->meta.freshness_lifetime == 3600 && obj->meta.response_time == NOW, "meta");
        is_int(gen_of(obj), 1, "headers stored");
        cache_obj_unref(&obj);
    }
    is_int(lookup(c, "example.com/other", NULL, &obj), OP_ENOTFOUND, "other key misses");
    ok(obj == NULL, "miss leaves NULL");

    /* A chunked object, with commit notifications. */
    struct put_args b = {.key = "example.com/big", .gen = 3, .len = 5 * CACHE_CHUNK_SIZE + 123};
    struct cache_put_info info = {0};
    struct cache_meta m = {.response_time = NOW, .freshness_lifetime = 60};
    info.key = S(b.key);
    info.status = 200;
    info.meta = &m;
    info.content_length = -1;
    info.now = NOW;
    struct cache_put *p;
    is_int(cache_put_begin(c, &info, &p), 0, "chunked put begins");
    struct done_rec notes = {0};
    cache_put_set_notify(p, on_done, &notes);
    uint8_t *chunk = xmalloc(CACHE_CHUNK_SIZE);
    uint32_t seed = seed_of(info.key, 0);
    for (uint64_t i = 0; i < CACHE_CHUNK_SIZE * 2; i++) {
        chunk[i % CACHE_CHUNK_SIZE] = body_byte(seed, i);
        if (i % CACHE_CHUNK_SIZE == CACHE_CHUNK_SIZE - 1)
            ASSERT(cache_put_append(p, chunk, CACHE_CHUNK_SIZE) == 0);
    }
    cache_sync(c);
    is_int(cache_put_committed(p), 2, "two chunks committed before the end");
    ok(notes.calls >= 1 && notes.err == 0, "notify called after the commits");
    struct sink_state ss = {seed, CACHE_CHUNK_SIZE, true};
    is_int(cache_chunk_read(c, cache_put_id(p), 1, sink, &ss), 0,
           "a committed chunk is readable while the put is in progress");
    ok(ss.same && ss.off == 2 * CACHE_CHUNK_SIZE, "its bytes");
    is_int(lookup(c, b.key, NULL, &obj), OP_ENOTFOUND, "no record before cache_put_end");
    check_ok(c, "a put in progress (chunks are pending)");
    int arc = 0;
    for (uint64_t i = CACHE_CHUNK_SIZE * 2; i < CACHE_CHUNK_SIZE * 5 + 123 && arc == 0; i++) {
        uint8_t byte = body_byte(seed, i);
        arc = cache_put_append(p, &byte, 1);
    }
    is_int(arc, 0, "the rest appended one byte at a time");
    struct done_rec d2 = {0};
    is_int(cache_put_end(&p, on_done, &d2), 0, "chunked put ends");
    ok(p == NULL, "put_end clears the handle");
    cache_sync(c);
    ok(d2.calls == 1 && d2.err == 0, "done(0)");
    is_int(lookup(c, b.key, NULL, &obj), 0, "chunked object found");
    if (obj) {
        is_int(obj->n_chunks, 6, "6 chunks");
        is_int(obj->body_len, 5 * CACHE_CHUNK_SIZE + 123, "body_len");
        struct sink_state s2 = {seed, 0, true};
        for (uint32_t i = 0; i < obj->n_chunks; i++)
            cache_chunk_read(c, obj->id, i, sink, &s2);
        ok(s2.same && s2.off == obj->body_len, "all chunk bytes");
        is_int(cache_chunk_read(c, obj->id, 6, sink, &s2), OP_ENOTFOUND, "chunk past the end");
        cache_obj_unref(&obj);
    }
    free(chunk);
    is_int(
        put(c, &(struct put_args){.key = "example.com/exact", .len = CACHE_INLINE_MAX}, NULL, NULL),
        0, "exactly CACHE_INLINE_MAX");
    is_int(put(c,
               &(struct put_args){.key = "example.com/exact1",
                                  .len = CACHE_INLINE_MAX + 1,
                                  .unknown_length = true},
               NULL, NULL),
           0, "CACHE_INLINE_MAX + 1, unknown length");
    is_int(put(c, &(struct put_args){.key = "example.com/empty", .len = 0}, NULL, NULL), 0,
           "empty body");
    cache_sync(c);
    const char *keys[] = {"example.com/exact", "example.com/exact1", "example.com/empty"};
    uint32_t want_chunks[] = {0, 1, 0};
    for (int i = 0; i < 3; i++) {
        ok(lookup(c, keys[i], NULL, &obj) == 0 && obj->n_chunks == want_chunks[i] &&
               body_ok(c, obj, 0),
           "%s: stored and read back", keys[i]);
        cache_obj_unref(&obj);
    }
    cache_sync(c); /* the lookups above may have queued TOUCHes */
    struct cache_stats st;
    cache_stats_get(c, &st);
    is_int(st.objects, 5, "stats: 5 objects");
    ok(st.bytes > 5 * CACHE_CHUNK_SIZE && st.commits > 0 && st.queue_len == 0, "stats: bytes");
    check_ok(c, "small and chunked puts");
    cache_close(&c);
    ok(c == NULL, "close clears the handle");
    rmdir_all(dir);
}

static void test_variants(void)
{
    char *dir = tmpdir();
    struct cache_options o = opts(dir);
    struct cache *c;
    cache_open(&c, &o);
    const char *key = "example.com/v";
    struct cache_vary gz[] = {{S("accept-encoding"), S("gzip")}};
    struct cache_vary br[] = {{S("accept-encoding"), S("br")}};
    struct cache_vary none[] = {{S("accept-encoding"), S("")}};
    put(c, &(struct put_args){.key = key, .gen = 1, .len = 100, .vary = gz, .n_vary = 1}, NULL,
        NULL);
    put(c, &(struct put_args){.key = key, .gen = 2, .len = 100000, .vary = br, .n_vary = 1}, NULL,
        NULL);
    put(c, &(struct put_args){.key = key, .gen = 3, .len = 50, .vary = none, .n_vary = 1}, NULL,
        NULL);
    cache_sync(c);
    struct http_headers req;
    http_headers_init(&req);
    struct cache_obj *obj;
    ok(lookup(c, key, &req, &obj) == 0 && gen_of(obj) == 3, "no Accept-Encoding: variant 3");
    cache_obj_unref(&obj);
    http_headers_add(&req, S("Accept-Encoding"), S("gzip"));
    ok(lookup(c, key, &req, &obj) == 0 && gen_of(obj) == 1 && body_ok(c, obj, 1),
       "gzip: variant 1");
    cache_obj_unref(&obj);
    req.v[0].value = S("br");
    ok(lookup(c, key, &req, &obj) == 0 && gen_of(obj) == 2 && body_ok(c, obj, 2),
       "br: variant 2 (chunked)");
    uint64_t old_id = obj ? obj->id : 0;
    cache_obj_unref(&obj);
    req.v[0].value = S("zstd");
    is_int(lookup(c, key, &req, &obj), OP_ENOTFOUND, "zstd: no variant");

    /* Replace the br variant: same key, same Vary values. */
    put(c, &(struct put_args){.key = key, .gen = 4, .len = 70000, .vary = br, .n_vary = 1}, NULL,
        NULL);
    cache_sync(c);
    req.v[0].value = S("br");
    ok(lookup(c, key, &req, &obj) == 0 && gen_of(obj) == 4 && body_ok(c, obj, 4),
       "br replaced by variant 4");
    cache_obj_unref(&obj);
    struct sink_state ss = {0, 0, true};
    is_int(cache_chunk_read(c, old_id, 0, sink, &ss), OP_ENOTFOUND,
           "the replaced variant's chunks are gone");
    struct cache_stats st;
    cache_stats_get(c, &st);
    is_int(st.objects, 3, "still 3 variants");
    check_ok(c, "variants and replacement");

    /* Soft invalidation marks every variant stale; hard removes them. */
    struct done_rec d = {0};
    is_int(cache_invalidate(c, S(key), true, on_done, &d), 0, "soft invalidate queued");
    cache_sync(c);
    ok(d.calls == 1 && d.err == 0, "soft invalidate done(0)");
    ok(lookup(c, key, &req, &obj) == 0 && (obj->meta.flags & CACHE_F_STALE) && body_ok(c, obj, 4),
       "soft: still served, marked stale, body intact");
    cache_obj_unref(&obj);
    req.v[0].value = S("gzip");
    ok(lookup(c, key, &req, &obj) == 0 && (obj->meta.flags & CACHE_F_STALE), "soft: all variants");
    cache_obj_unref(&obj);
    check_ok(c, "soft invalidation");
    cache_invalidate(c, S(key), false, on_done, &d);
    cache_sync(c);
    ok(d.calls == 2 && d.err == 0, "hard invalidate done(0)");
    is_int(lookup(c, key, &req, &obj), OP_ENOTFOUND, "hard: gone");
    cache_stats_get(c, &st);
    ok(st.objects == 0 && st.bytes == 0, "hard: accounting back to zero");
    cache_invalidate(c, S(key), false, on_done, &d);
    cache_sync(c);
    ok(d.calls == 3 && d.err == OP_ENOTFOUND, "invalidating nothing: done(OP_ENOTFOUND)");
    is_int(db_count(c, c->db_chunks) + db_count(c, c->db_tags) + db_count(c, c->db_expiry) +
               db_count(c, c->db_access) + db_count(c, c->db_byid),
           0, "no leftovers in any db");
    check_ok(c, "hard invalidation");
    http_headers_fini(&req);
    cache_close(&c);
    rmdir_all(dir);
}

static void test_invalidate_tag(void)
{
    char *dir = tmpdir();
    struct cache_options o = opts(dir);
    struct cache *c;
    cache_open(&c, &o);
    struct str ta[] = {S("t-a"), S("all")};
    struct str tb[] = {S("t-b"), S("all")};
    struct cache_vary gz[] = {{S("accept-encoding"), S("gzip")}};
    put(c, &(struct put_args){.key = "tag/a", .len = 100, .tags = ta, .n_tags = 2}, NULL, NULL);
    put(c,
        &(struct put_args){
            .key = "tag/a", .len = 90000, .tags = ta, .n_tags = 2, .vary = gz, .n_vary = 1},
        NULL, NULL);
    put(c, &(struct put_args){.key = "tag/b", .len = 100, .tags = tb, .n_tags = 2}, NULL, NULL);
    put(c, &(struct put_args){.key = "tag/c", .len = 100}, NULL, NULL);
    cache_sync(c);
    struct done_rec d = {0};
    is_int(cache_invalidate_tag(c, S("t-a"), true, on_done, &d), 0, "soft purge by tag queued");
    cache_sync(c);
    ok(d.calls == 1 && d.err == 0, "done(0)");
    struct cache_obj *obj;
    struct http_headers req;
    http_headers_init(&req);
    ok(lookup(c, "tag/a", &req, &obj) == 0 && (obj->meta.flags & CACHE_F_STALE), "a: stale");
    cache_obj_unref(&obj);
    http_headers_add(&req, S("Accept-Encoding"), S("gzip"));
    ok(lookup(c, "tag/a", &req, &obj) == 0 && (obj->meta.flags & CACHE_F_STALE) &&
           body_ok(c, obj, 0),
       "a (gzip variant): stale, body intact");
    cache_obj_unref(&obj);
    ok(lookup(c, "tag/b", NULL, &obj) == 0 && !(obj->meta.flags & CACHE_F_STALE), "b: untouched");
    cache_obj_unref(&obj);
    check_ok(c, "soft purge by tag");
    cache_invalidate_tag(c, S("all"), false, on_done, &d);
    cache_sync(c);
    ok(d.calls == 2 && d.err == 0, "hard purge by tag: done(0)");
    ok(lookup(c, "tag/a", &req, &obj) == OP_ENOTFOUND &&
           lookup(c, "tag/a", NULL, &obj) == OP_ENOTFOUND &&
           lookup(c, "tag/b", NULL, &obj) == OP_ENOTFOUND,
       "every variant tagged `all` is gone");
    ok(lookup(c, "tag/c", NULL, &obj) == 0, "the untagged object stays");
    cache_obj_unref(&obj);
    is_int(db_count(c, c->db_tags), 0, "tag index empty");
    cache_invalidate_tag(c, S("all"), false, on_done, &d);
    cache_sync(c);
    ok(d.calls == 3 && d.err == OP_ENOTFOUND, "purging an unknown tag: done(OP_ENOTFOUND)");
    check_ok(c, "hard purge by tag");
    http_headers_fini(&req);
    cache_close(&c);
    rmdir_all(dir);
}

static void test_update_and_persistence(void)
{
    char *dir = tmpdir();
    struct cache_options o = opts(dir);
    struct cache *c;
    cache_open(&c, &o);
    uint64_t id;
    struct str tags[] = {S("tag-a")};
    put(c, &(struct put_args){.key = "k/upd", .gen = 5, .len = 200000, .tags = tags, .n_tags = 1},
        &id, NULL);
    cache_sync(c);
    struct http_headers h;
    http_headers_init(&h);
    http_headers_add(&h, S("X-Gen"), S("5"));
    http_headers_add(&h, S("ETag"), S("\"v2\""));
    struct cache_meta m = {.response_time = NOW + 100, .freshness_lifetime = 7200};
    is_int(cache_update(c, id, &h, &m, NOW + 100), 0, "update queued");
    http_headers_fini(&h);
    is_int(cache_update(c, 999999, &h, &m, NOW), 0, "update of a missing id is queued too");
    cache_sync(c);
    struct cache_obj *obj;
    ok(lookup(c, "k/upd", NULL, &obj) == 0 && obj->id == id && obj->meta.freshness_lifetime == 7200,
       "update: same id, new meta");
    if (obj) {
        const struct http_header *et = http_headers_get(&obj->headers, "etag");
        ok(et && str_eq(et->value, S("\"v2\"")) && obj->headers.n == 2, "update: new headers");
        ok(body_ok(c, obj, 5), "update: body kept");
        cache_obj_unref(&obj);
    }
    check_ok(c, "update");
    struct cache_stats st1;
    cache_stats_get(c, &st1);
    cache_close(&c);

    is_int(cache_open(&c, &o), 0, "reopen");
    struct cache_stats st2;
    cache_stats_get(c, &st2);
    ok(st2.objects == st1.objects && st2.bytes == st1.bytes, "accounting persisted");
    ok(lookup(c, "k/upd", NULL, &obj) == 0 && obj->id == id && body_ok(c, obj, 5) &&
           obj->meta.freshness_lifetime == 7200,
       "object persisted across close/reopen");
    cache_obj_unref(&obj);
    uint64_t id2;
    put(c, &(struct put_args){.key = "k/new", .len = 10}, &id2, NULL);
    ok(id2 > id, "ids are not reused after reopen");
    cache_sync(c);
    check_ok(c, "reopen");
    cache_close(&c);
    rmdir_all(dir);
}

static void test_eviction(void)
{
    char *dir = tmpdir();
    struct cache_options o = opts(dir);
    o.max_size = 4u << 20; /* 4 MiB: high water 3.6 MiB, low 3.2 MiB */
    struct cache *c;
    cache_open(&c, &o);
    char key[64];
    /* 5 short-lived objects (useless after NOW+10) and 25 long-lived ones, 100 KiB each. */
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof(key), "evict/%d", i);
        put(c, &(struct put_args){.key = key, .len = 100 * 1024, .ttl = i < 5 ? 10 : 100000}, NULL,
            NULL);
    }
    cache_sync(c);
    struct cache_stats st;
    cache_stats_get(c, &st);
    is_int(st.evictions, 0, "3 MiB stored: no eviction yet");
    /* Keep 5..19 recently used (TOUCH at a later time), then push more at a time the
     * short-lived ones are past their useless-after. */
    struct http_headers empty;
    http_headers_init(&empty);
    for (int i = 5; i < 20; i++) {
        struct cache_obj *obj;
        snprintf(key, sizeof(key), "evict/%d", i);
        if (cache_lookup(c, S(key), &empty, NOW + 1000, &obj) == 0)
            cache_obj_unref(&obj);
    }
    cache_sync(c);
    for (int i = 30; i < 45; i++) {
        snprintf(key, sizeof(key), "evict/%d", i);
        put(c, &(struct put_args){.key = key, .len = 100 * 1024, .ttl = 100000, .now = NOW + 2000},
            NULL, NULL);
        cache_sync(c);
    }
    cache_stats_get(c, &st);
    ok(st.evictions > 5 && st.expired_evictions == 5,
       "expired variants evicted first (%" PRIu64 " evictions, %" PRIu64 " expired)", st.evictions,
       st.expired_evictions);
    ok(st.bytes <= o.max_size / 100 * 90, "below the high-water mark (%" PRIu64 " bytes)",
       st.bytes);
    int expired_left = 0, touched_left = 0, untouched_gone = 0, new_left = 0;
    for (int i = 0; i < 45; i++) {
        struct cache_obj *obj;
        snprintf(key, sizeof(key), "evict/%d", i);
        int rc = cache_lookup(c, S(key), &empty, NOW, &obj);
        if (rc == 0) {
            ok(body_ok(c, obj, 0), "%s intact", key);
            cache_obj_unref(&obj);
        }
        expired_left += i < 5 && rc == 0;
        touched_left += i >= 5 && i < 20 && rc == 0;
        untouched_gone += i >= 20 && i < 30 && rc != 0;
        new_left += i >= 30 && rc == 0;
    }
    is_int(expired_left, 0, "no expired variant left");
    is_int(touched_left, 15, "recently accessed variants kept");
    is_int(new_left, 15, "newest variants kept");
    is_int(untouched_gone, st.evictions - 5,
           "beyond the expired ones, the least recently accessed went");
    check_ok(c, "eviction");
    http_headers_fini(&empty);
    cache_close(&c);
    rmdir_all(dir);
}

/* A variant read after every store survives a small cache that turns over many times, even
 * though it is the oldest stored and everything happens within one second of `now`. */
static void test_lru_hot(void)
{
    char *dir = tmpdir();
    struct cache_options o = opts(dir);
    o.max_size = 2u << 20;
    struct cache *c;
    cache_open(&c, &o);
    struct http_headers empty;
    http_headers_init(&empty);
    put(c, &(struct put_args){.key = "hot", .len = 100000}, NULL, NULL);
    put(c, &(struct put_args){.key = "cold", .len = 100000}, NULL, NULL);
    cache_sync(c);
    int evicted_at = -1;
    char key[32];
    for (int i = 0; i < 100 && evicted_at < 0; i++) {
        snprintf(key, sizeof(key), "lru/%d", i);
        put(c, &(struct put_args){.key = key, .len = 100000}, NULL, NULL);
        cache_sync(c);
        struct cache_obj *obj;
        if (cache_lookup(c, S("hot"), &empty, NOW, &obj) != 0)
            evicted_at = i;
        cache_obj_unref(&obj);
        cache_sync(c);
    }
    is_int(evicted_at, -1, "the hot variant survives 100 stores into a 2 MiB cache");
    struct cache_obj *obj;
    is_int(cache_lookup(c, S("cold"), &empty, NOW, &obj), OP_ENOTFOUND, "the cold one went");
    struct cache_stats st;
    cache_stats_get(c, &st);
    ok(st.evictions >= 80, "the cache turned over (%" PRIu64 " evictions)", st.evictions);
    /* TOUCH traffic is bounded by stores: a hit-only workload writes nothing. */
    uint64_t commits = st.commits;
    for (int i = 0; i < 1000; i++) {
        if (cache_lookup(c, S("hot"), &empty, NOW + i, &obj) == 0)
            cache_obj_unref(&obj);
    }
    cache_sync(c);
    cache_stats_get(c, &st);
    ok(st.commits <= commits + 2, "1000 hits without stores: no TOUCH commits (%" PRIu64 ")",
       st.commits - commits);
    check_ok(c, "LRU");
    http_headers_fini(&empty);
    cache_close(&c);
    rmdir_all(dir);
}

static void test_limits(void)
{
    char *dir = tmpdir();
    struct cache_options o = opts(dir);
    o.max_object_size = 300000;
    struct cache *c;
    cache_open(&c, &o);
    is_int(put(c, &(struct put_args){.key = "lim/1", .len = 300001}, NULL, NULL), OP_ETOOBIG,
           "declared length over max_object_size refused at begin");
    is_int(put(c, &(struct put_args){.key = "lim/2", .len = 400000, .unknown_length = true}, NULL,
               NULL),
           OP_ETOOBIG, "unknown length: refused once the body passes the limit");
    is_int(put(c, &(struct put_args){.key = "lim/3", .len = 300000}, NULL, NULL), 0,
           "exactly the limit is stored");
    char longkey[CACHE_KEY_MAX + 2];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    is_int(put(c, &(struct put_args){.key = longkey, .len = 1}, NULL, NULL), OP_EINVAL,
           "key over CACHE_KEY_MAX refused");
    /* A body shorter than its declared length is never stored. */
    struct cache_put_info info = {.key = S("lim/4"), .status = 200, .content_length = 100};
    struct cache_meta m = {0};
    info.meta = &m;
    struct cache_put *p;
    cache_put_begin(c, &info, &p);
    cache_put_append(p, "abc", 3);
    is_int(cache_put_end(&p, NULL, NULL), OP_EINVAL, "truncated body refused at the end");
    cache_sync(c);
    struct cache_obj *obj;
    ok(lookup(c, "lim/2", NULL, &obj) == OP_ENOTFOUND &&
           lookup(c, "lim/4", NULL, &obj) == OP_ENOTFOUND,
       "refused puts left nothing");
    ok(lookup(c, "lim/3", NULL, &obj) == 0 && body_ok(c, obj, 0), "the limit-sized one reads");
    cache_obj_unref(&obj);
    is_int(db_count(c, c->db_pending), 0, "no pending entries");
    check_ok(c, "size limits");
    cache_close(&c);

    /* Back-pressure: a slow writer (long batch wait) and a 192 KiB inbox. */
    o.inbox_max = 192 * 1024;
    o.batch_ms = 2000;
    o.max_object_size = 0;
    cache_open(&c, &o);
    info.key = S("lim/full");
    info.content_length = -1;
    cache_put_begin(c, &info, &p);
    uint8_t *chunk = xcalloc(1, CACHE_CHUNK_SIZE);
    int rc = 0, n = 0;
    while (rc == 0 && n < 64) {
        rc = cache_put_append(p, chunk, CACHE_CHUNK_SIZE);
        n++;
    }
    is_int(rc, OP_EFULL, "append refused with OP_EFULL when the inbox is full");
    ok(n <= 4, "after at most the bound (%d appends)", n);
    is_int(cache_put_append(p, chunk, 1), OP_EFULL, "the put stays dead");
    struct done_rec d = {0};
    is_int(cache_put_end(&p, on_done, &d), OP_EFULL, "put_end reports it and aborts");
    cache_sync(c);
    is_int(d.calls, 0, "no done callback for a refused put");
    struct cache_stats st;
    cache_stats_get(c, &st);
    ok(st.refused_appends >= 1, "refusal counted");
    ok(db_count(c, c->db_chunks) == 5 && db_count(c, c->db_pending) == 0,
       "its committed chunks were deleted (only lim/3's 5 remain)");
    check_ok(c, "back-pressure");
    free(chunk);
    cache_close(&c);
    rmdir_all(dir);
}

static void test_map_full(void)
{
    char *dir = tmpdir();
    struct cache_options o = opts(dir);
    o.max_size = 64u << 20; /* never reached: the map fills first */
    o.map_size = 2u << 20; /* 2 MiB map */
    o.max_object_size = 0;
    struct cache *c;
    is_int(cache_open(&c, &o), 0, "open with a 2 MiB map");
    char key[32];
    struct done_rec d[24] = {{0}};
    for (int i = 0; i < 24; i++) {
        snprintf(key, sizeof(key), "full/%d", i);
        put(c, &(struct put_args){.key = key, .gen = (unsigned)i, .len = 150000}, NULL, &d[i]);
        cache_sync(c);
    }
    struct cache_stats st;
    cache_stats_get(c, &st);
    ok(st.evictions > 0, "MDB_MAP_FULL made room by evicting (%" PRIu64 ")", st.evictions);
    is_int(st.write_errors, 0, "no batch dropped: eviction and one retry always made room");
    struct cache_obj *obj;
    int found = 0, intact = 0;
    for (int i = 0; i < 24; i++) {
        snprintf(key, sizeof(key), "full/%d", i);
        if (lookup(c, key, NULL, &obj) == 0) {
            found++;
            intact += body_ok(c, obj, (unsigned)i);
            cache_obj_unref(&obj);
        }
    }
    ok(found > 0 && found == intact, "%d objects survive, all intact", found);
    ok(d[23].calls == 1 && d[23].err == 0, "the latest put succeeded after eviction");
    /* An object larger than the whole map can never be stored. */
    struct done_rec big = {0};
    put(c, &(struct put_args){.key = "full/huge", .len = 3u << 20}, NULL, &big);
    cache_sync(c);
    cache_stats_get(c, &st);
    ok(big.calls == 1 && big.err != 0, "an object over the map size: done(%s)",
       op_strerror(big.err));
    ok(st.write_errors > 0, "write errors counted (%" PRIu64 ")", st.write_errors);
    is_int(lookup(c, "full/huge", NULL, &obj), OP_ENOTFOUND, "no partial huge object");
    is_int(db_count(c, c->db_pending), 0, "no pending entries left");
    check_ok(c, "MDB_MAP_FULL");
    cache_close(&c);
    rmdir_all(dir);
}

static void test_crash_pending(void)
{
    char *dir = tmpdir();
    struct cache_options o = opts(dir);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        struct cache *c;
        if (cache_open(&c, &o) != 0)
            _exit(2);
        put(c, &(struct put_args){.key = "crash/done", .len = 100000}, NULL, NULL);
        struct cache_put_info info = {
            .key = S("crash/partial"), .status = 200, .content_length = -1};
        struct cache_meta m = {0};
        info.meta = &m;
        struct cache_put *p;
        cache_put_begin(c, &info, &p);
        uint8_t *chunk = xcalloc(1, CACHE_CHUNK_SIZE);
        for (int i = 0; i < 3; i++)
            cache_put_append(p, chunk, CACHE_CHUNK_SIZE);
        cache_sync(c);
        if (db_count(c, c->db_pending) != 1 || db_count(c, c->db_chunks) != 3 + 2)
            _exit(3);
        raise(SIGKILL); /* die mid-put */
        _exit(4);
    }
    int status;
    waitpid(pid, &status, 0);
    ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child died mid-put with 3 chunks");
    struct cache *c;
    is_int(cache_open(&c, &o), 0, "reopen after the crash");
    is_int(db_count(c, c->db_pending), 0, "pending entry removed");
    is_int(db_count(c, c->db_chunks), 2, "only the committed object's chunks remain");
    struct cache_obj *obj;
    ok(lookup(c, "crash/done", NULL, &obj) == 0 && body_ok(c, obj, 0), "committed object intact");
    cache_obj_unref(&obj);
    is_int(lookup(c, "crash/partial", NULL, &obj), OP_ENOTFOUND, "partial object absent");
    check_ok(c, "crash cleanup");
    cache_close(&c);
    rmdir_all(dir);
}

/* The oracle must be able to fail: damage the store behind the writer's back. */
static void test_check_detects(void)
{
    char *dir = tmpdir();
    struct cache_options o = opts(dir);
    struct cache *c;
    cache_open(&c, &o);
    uint64_t id;
    put(c, &(struct put_args){.key = "bad/key", .len = 500}, &id, NULL);
    put(c, &(struct put_args){.key = "bad/big", .len = 100000}, NULL, NULL);
    cache_sync(c);
    check_ok(c, "two puts");
    uint8_t ob[CACHE_OBJKEY_LEN];
    cache_keyhash(S("bad/key"), ob);
    cache_be64_put(ob + CACHE_KEYHASH_LEN, id);
    MDB_txn *txn;
    MDB_val k = {sizeof(ob), ob}, v;
    ASSERT(mdb_txn_begin(c->env, NULL, 0, &txn) == 0);
    ASSERT(mdb_get(txn, c->db_objects, &k, &v) == 0);
    char *saved = xmemdup(v.mv_data, v.mv_size);
    size_t saved_len = v.mv_size;
    char *bad = xmemdup(saved, saved_len);
    bad[0] ^= 0x55; /* magic */
    MDB_val bv = {saved_len, bad};
    ASSERT(mdb_put(txn, c->db_objects, &k, &bv, 0) == 0);
    ASSERT(mdb_txn_commit(txn) == 0);
    struct cache_obj *obj;
    is_int(lookup(c, "bad/key", NULL, &obj), OP_ENOTFOUND, "a corrupt record is never served");
    struct cache_stats st;
    cache_stats_get(c, &st);
    ok(st.corrupt_records >= 1, "and counted");
    char err[256];
    is_int(cache_check(c, err, sizeof(err)), OP_ECORRUPT, "cache_check reports it");
    ok(strstr(err, "does not decode") != NULL, "with a message: %s", err);

    /* Restore it, then add a chunk that belongs to nobody. */
    ASSERT(mdb_txn_begin(c->env, NULL, 0, &txn) == 0);
    MDB_val sv = {saved_len, saved};
    ASSERT(mdb_put(txn, c->db_objects, &k, &sv, 0) == 0);
    uint8_t ck[CACHE_CHUNKKEY_LEN];
    cache_be64_put(ck, id + 1000);
    cache_be32_put(ck + 8, 0);
    MDB_val ckv = {sizeof(ck), ck}, cvv = {3, "abc"};
    ASSERT(mdb_put(txn, c->db_chunks, &ckv, &cvv, 0) == 0);
    ASSERT(mdb_txn_commit(txn) == 0);
    is_int(cache_check(c, err, sizeof(err)), OP_ECORRUPT, "an orphan chunk is reported");
    ok(strstr(err, "orphan") != NULL, "as an orphan: %s", err);

    /* Remove the orphan; break the accounting instead. */
    ASSERT(mdb_txn_begin(c->env, NULL, 0, &txn) == 0);
    ASSERT(mdb_del(txn, c->db_chunks, &ckv, NULL) == 0);
    uint64_t wrong = 1;
    MDB_val mk = {5, "bytes"}, mv = {8, &wrong};
    ASSERT(mdb_put(txn, c->db_meta, &mk, &mv, 0) == 0);
    ASSERT(mdb_txn_commit(txn) == 0);
    is_int(cache_check(c, err, sizeof(err)), OP_ECORRUPT, "wrong accounting is reported");
    ok(strstr(err, "accounting") != NULL, "as accounting: %s", err);

    /* A missing chunk of a committed object. */
    cache_sync(c); /* the writer rewrites the true counters at its next commit */
    put(c, &(struct put_args){.key = "bad/other", .len = 10}, NULL, NULL);
    cache_sync(c);
    check_ok(c, "the writer's next commit restored the counters");
    ok(lookup(c, "bad/big", NULL, &obj) == 0, "bad/big found");
    uint64_t big_id = obj ? obj->id : 0;
    cache_obj_unref(&obj);
    ASSERT(mdb_txn_begin(c->env, NULL, 0, &txn) == 0);
    cache_be64_put(ck, big_id);
    cache_be32_put(ck + 8, 1);
    ASSERT(mdb_del(txn, c->db_chunks, &ckv, NULL) == 0);
    ASSERT(mdb_txn_commit(txn) == 0);
    is_int(cache_check(c, err, sizeof(err)), OP_ECORRUPT, "a missing chunk is reported");
    ok(strstr(err, "chunk 1 missing") != NULL, "as missing: %s", err);
    free(saved);
    free(bad);
    cache_close(&c);
    rmdir_all(dir);
}

static void test_schema(void)
{
    char *dir = tmpdir();
    struct cache_options o = opts(dir);
    struct cache *c;
    cache_open(&c, &o);
    cache_close(&c);
    /* Rewrite the schema version behind the cache's back. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 16);
    ASSERT(mdb_env_open(env, dir, 0, 0600) == 0);
    mdb_txn_begin(env, NULL, 0, &txn);
    mdb_dbi_open(txn, "meta", 0, &dbi);
    struct cache_schema_rec s = {CACHE_SCHEMA_MAGIC, CACHE_SCHEMA_VERSION + 1, sizeof(s), {0}};
    MDB_val k = {6, "schema"}, v = {sizeof(s), &s};
    mdb_put(txn, dbi, &k, &v, 0);
    mdb_txn_commit(txn);
    mdb_env_close(env);
    log_set_level(-1);
    is_int(cache_open(&c, &o), OP_ECORRUPT, "another schema version is refused");
    log_set_level(LOG_INFO);
    ok(c == NULL, "no handle");
    rmdir_all(dir);
}

/* ---- measurements (printed, never asserted) ---------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void measure(void)
{
    char *dir = tmpdir();
    struct cache_options o = opts(dir);
    o.max_size = 1u << 30;
    struct cache *c;
    cache_open(&c, &o);
    char key[64];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "example.com/assets/file-%d.css", i);
        put(c, &(struct put_args){.key = key, .len = 1024}, NULL, NULL);
    }
    cache_sync(c);
    struct http_headers req;
    http_headers_init(&req);
    http_headers_add(&req, S("Accept-Encoding"), S("gzip"));
    http_headers_add(&req, S("User-Agent"), S("curl/8"));
    int n = 0, hits = 0;
    double t0 = now_s(), t1 = t0;
    while (n < 500000 && t1 - t0 < 1.0) {
        for (int j = 0; j < 1000; j++, n++) {
            struct cache_obj *obj;
            snprintf(key, sizeof(key), "example.com/assets/file-%d.css", (n * 7) % 1000);
            if (cache_lookup(c, S(key), &req, NOW, &obj) == 0) {
                hits++;
                cache_obj_unref(&obj);
            }
        }
        t1 = now_s();
    }
    ok(hits == n, "lookups all hit");
    printf("# cache_lookup hit, 1 KiB object: %.0f ns/op (%d lookups)\n", (t1 - t0) * 1e9 / n, n);
    cache_close(&c);

    for (int nosync = 0; nosync < 2; nosync++) {
        char *d2 = tmpdir();
        o = opts(d2);
        o.max_size = 1u << 30;
        o.nosync = nosync;
        cache_open(&c, &o);
        uint64_t total = 0;
        t0 = now_s();
        for (int i = 0; i < 64 && now_s() - t0 < 5.0; i++) {
            snprintf(key, sizeof(key), "tput/%d", i);
            put(c, &(struct put_args){.key = key, .len = 1u << 20}, NULL, NULL);
            total += 1u << 20;
        }
        cache_sync(c);
        t1 = now_s();
        struct cache_stats st;
        cache_stats_get(c, &st);
        printf("# writer throughput, 64 KiB chunks, nosync=%d: %.0f MiB/s (%" PRIu64
               " MiB, %" PRIu64 " commits)\n",
               nosync, total / (1024.0 * 1024.0) / (t1 - t0), total >> 20, st.commits);
        check_ok(c, "throughput run");
        cache_close(&c);
        rmdir_all(d2);
    }
    http_headers_fini(&req);
    rmdir_all(dir);
}

/* ---- concurrency: readers on worker threads while two producers write -------------------- */

struct conc {
    struct cache *c;
    _Atomic bool stop;
    _Atomic int lookups;
    _Atomic int hits;
    _Atomic int bad;
    unsigned seed;
};

static void *conc_reader(void *arg)
{
    struct conc *k = arg;
    struct http_headers req;
    http_headers_init(&req);
    http_headers_add(&req, S("Accept-Encoding"), S("gzip"));
    unsigned seed = k->seed;
    while (!atomic_load(&k->stop)) {
        char key[32];
        snprintf(key, sizeof(key), "conc/%d", rand_r(&seed) % 40);
        struct cache_obj *obj;
        atomic_fetch_add(&k->lookups, 1);
        if (cache_lookup(k->c, S(key), &req, NOW, &obj) != 0)
            continue;
        atomic_fetch_add(&k->hits, 1);
        struct sink_state s = {seed_of(obj->key, gen_of(obj)), 0, true};
        if (obj->n_chunks == 0) {
            sink(&s, obj->body.p, obj->body.len);
        } else {
            for (uint32_t i = 0; i < obj->n_chunks; i++) {
                if (cache_chunk_read(k->c, obj->id, i, sink, &s) != 0) {
                    s.off = obj->body_len; /* replaced meanwhile: allowed */
                    break;
                }
            }
        }
        if (!s.same || s.off != obj->body_len)
            atomic_fetch_add(&k->bad, 1);
        cache_obj_unref(&obj);
    }
    http_headers_fini(&req);
    return NULL;
}

static void *conc_writer(void *arg)
{
    struct conc *k = arg;
    struct cache_vary gz[] = {{S("accept-encoding"), S("gzip")}};
    unsigned seed = k->seed;
    for (unsigned i = 0; i < 400 && !atomic_load(&k->stop); i++) {
        char key[32];
        int n = rand_r(&seed) % 40;
        snprintf(key, sizeof(key), "conc/%d", n);
        if (n % 10 == 0) {
            cache_invalidate(k->c, S(key), rand_r(&seed) % 2, NULL, NULL);
            continue;
        }
        static const uint64_t lens[] = {10, 5000, 70000, 200000};
        put(k->c,
            &(struct put_args){
                .key = key, .gen = k->seed * 1000 + i, .len = lens[i % 4], .vary = gz, .n_vary = 1},
            NULL, NULL);
    }
    return NULL;
}

static void test_concurrent(void)
{
    char *dir = tmpdir();
    struct cache_options o = opts(dir);
    struct cache *c;
    cache_open(&c, &o);
    struct conc r1 = {.c = c, .seed = 11}, r2 = {.c = c, .seed = 12};
    struct conc w1 = {.c = c, .seed = 21}, w2 = {.c = c, .seed = 22};
    pthread_t t[4];
    pthread_create(&t[0], NULL, conc_reader, &r1);
    pthread_create(&t[1], NULL, conc_reader, &r2);
    pthread_create(&t[2], NULL, conc_writer, &w1);
    pthread_create(&t[3], NULL, conc_writer, &w2);
    double t0 = now_s();
    pthread_join(t[2], NULL);
    pthread_join(t[3], NULL);
    cache_sync(c);
    while (now_s() - t0 < 0.2)
        usleep(10000);
    atomic_store(&r1.stop, true);
    atomic_store(&r2.stop, true);
    pthread_join(t[0], NULL);
    pthread_join(t[1], NULL);
    ok(r1.hits + r2.hits > 0, "readers hit (%d of %d lookups)", r1.hits + r2.hits,
       r1.lookups + r2.lookups);
    is_int(r1.bad + r2.bad, 0, "every hit read back consistent while writers ran");
    check_ok(c, "concurrent readers and writers");
    cache_close(&c);
    rmdir_all(dir);
}

int main(void)
{
    test_small_and_chunked();
    test_variants();
    test_invalidate_tag();
    test_update_and_persistence();
    test_eviction();
    test_lru_hot();
    test_limits();
    test_map_full();
    test_crash_pending();
    test_schema();
    test_check_detects();
    test_concurrent();
    measure();
    return tap_done();
}
