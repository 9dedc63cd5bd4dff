/*
 * cache/writer.c: the write side of the LMDB object cache. One writer thread per cache owns
 * the only write transaction. Workers never touch LMDB for writing: cache_put_*,
 * cache_update, cache_invalidate and the lookup's TOUCH become operations in the writer's
 * inbox (a mutex + condvar queue), and the writer applies a batch of them (up to batch_ms of
 * waiting, WR_BATCH_OPS operations or WR_BATCH_BYTES of data) in one transaction and one
 * commit. Only after the commit does it publish committed-chunk counters and call notify/done
 * callbacks, so a callback never sees uncommitted state.
 *
 * Crash safety: the first chunk of a put writes a `pending` entry in the same transaction;
 * the record, its indices and the removal of the pending entry are one transaction
 * (PUT_END). cache_open() deletes the chunks of every pending id, so kill -9 at any moment
 * leaves either the old or the new variant and never orphan chunks.
 *
 * Back-pressure: the inbox is bounded in bytes of queued body data (cache_options.inbox_max);
 * cache_put_append() refuses with OP_EFULL past it instead of blocking the worker.
 *
 * Space: after each commit, if the accounted bytes exceed the high-water mark, the writer
 * evicts in separate bounded transactions until below the low-water mark: first variants past
 * their useless-after time (the `expiry` index, oldest first), then the least recently
 * accessed (the `access` index). MDB_MAP_FULL aborts the batch, evicts harder and retries
 * once; a second failure drops the batch (its puts are told via done(err), their chunks
 * deleted) and counts a write error.
 *
 * Threads: the cache_put_* handle is owned by the thread that began it; the writer only
 * touches the fields marked "owned by writer" and the atomics. struct cache_put is refcounted:
 * one reference for the caller, one per queued operation.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pthread_setname_np */
#endif
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache/cache_int.h"
#include "lib/log.h"
#include "lib/util.h"

#define WR_BATCH_OPS 256
#define WR_BATCH_BYTES (16u << 20)
#define WR_EVICT_PER_TXN 512
#define WR_EVICT_TXNS 64

enum wop_kind {
    WOP_CHUNK = 1,
    WOP_PUT_END = 2,
    WOP_PUT_ABORT = 3,
    WOP_UPDATE = 4,
    WOP_INVALIDATE = 5,
    WOP_TOUCH = 6,
    WOP_SYNC = 7,
    WOP_INVALIDATE_TAG = 8,
};

struct wsync {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
};

struct cache_wop {
    struct cache_wop *next;
    enum wop_kind kind;
    int err; /* per-operation result, set by the writer */
    struct cache_put *put; /* CHUNK, PUT_END, PUT_ABORT: holds a reference */
    uint64_t id;
    uint32_t idx;
    uint32_t n; /* UPDATE: header count */
    uint8_t keyhash[CACHE_KEYHASH_LEN];
    int64_t now;
    char *data; /* CHUNK bytes, PUT_END record, UPDATE headers section, INVALIDATE key */
    size_t len;
    size_t qbytes; /* counted against inbox_max */
    struct cache_meta meta;
    bool soft;
    cache_done_fn *done;
    void *arg;
    struct wsync *sync;
};

struct cache_put {
    uint32_t magic; /* CACHE_PUT_MAGIC; cleared when freed */
    struct cache *c;
    _Atomic int refs;
    _Atomic uint32_t committed;
    uint64_t id;
    uint8_t keyhash[CACHE_KEYHASH_LEN];
    /* set before the first append, read by the writer (ordered by the inbox lock) */
    cache_done_fn *notify;
    void *notify_arg;
    /* owned by the caller's thread */
    int dead;
    uint64_t body_len;
    int64_t content_length;
    uint32_t n_queued;
    char *chunk;
    size_t chunk_len;
    int status;
    struct cache_meta meta;
    int64_t now;
    struct buf key;
    struct buf hdrs;
    struct buf vary;
    struct buf tags;
    uint32_t n_hdrs;
    uint32_t n_vary;
    uint32_t n_tags;
    /* owned by the writer */
    int failed;
    bool notify_due;
};

/* ---- the put handle ---------------------------------------------------------------------- */

static void put_unref(struct cache_put *p)
{
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
        return;
    p->magic = 0;
    free(p->chunk);
    buf_fini(&p->key);
    buf_fini(&p->hdrs);
    buf_fini(&p->vary);
    buf_fini(&p->tags);
    free(p);
}

static void enqueue(struct cache *c, struct cache_wop *op)
{
    if (op->put)
        atomic_fetch_add_explicit(&op->put->refs, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->inbox_bytes, op->qbytes, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->st_queue_len, 1, memory_order_relaxed);
    pthread_mutex_lock(&c->qlock);
    ASSERT(!c->stopping);
    bool was_empty = c->q_head == NULL;
    op->next = NULL;
    if (c->q_tail)
        c->q_tail->next = op;
    else
        c->q_head = op;
    c->q_tail = op;
    c->q_n++;
    if (op->kind == WOP_SYNC)
        c->q_syncs++;
    if (was_empty || c->q_syncs || c->q_n >= WR_BATCH_OPS)
        pthread_cond_signal(&c->qcond);
    pthread_mutex_unlock(&c->qlock);
}

static struct cache_wop *wop_new(enum wop_kind kind)
{
    struct cache_wop *op = xcalloc(1, sizeof(*op));
    op->kind = kind;
    return op;
}

static void queue_chunk(struct cache_put *p)
{
    struct cache_wop *op = wop_new(WOP_CHUNK);
    op->put = p;
    op->id = p->id;
    op->idx = p->n_queued++;
    memcpy(op->keyhash, p->keyhash, CACHE_KEYHASH_LEN);
    op->data = p->chunk;
    op->len = p->chunk_len;
    op->qbytes = p->chunk_len;
    p->chunk = NULL;
    p->chunk_len = 0;
    enqueue(p->c, op);
}

int cache_put_begin(struct cache *c, const struct cache_put_info *info, struct cache_put **out)
{
    CACHE_CHECK(c);
    *out = NULL;
    if (info->key.len == 0 || info->key.len > CACHE_KEY_MAX)
        return OP_EINVAL;
    if (info->status < 100 || info->status > 999 || info->meta == NULL)
        return OP_EINVAL;
    if (c->opt.max_object_size && info->content_length > 0 &&
        (uint64_t)info->content_length > c->opt.max_object_size)
        return OP_ETOOBIG;
    struct cache_put *p = xcalloc(1, sizeof(*p));
    p->magic = CACHE_PUT_MAGIC;
    p->c = c;
    atomic_init(&p->refs, 1);
    p->id = atomic_fetch_add(&c->next_id, 1);
    cache_keyhash(info->key, p->keyhash);
    p->content_length = info->content_length;
    p->status = info->status;
    p->meta = *info->meta;
    p->now = info->now;
    buf_append_str(&p->key, info->key);
    p->n_hdrs = cache_rec_sec_headers(&p->hdrs, info->headers);
    for (size_t i = 0; i < info->n_vary; i++)
        cache_rec_sec_pair(&p->vary, info->vary[i].name, info->vary[i].value);
    p->n_vary = (uint32_t)info->n_vary;
    for (size_t i = 0; i < info->n_tags; i++)
        cache_rec_sec_str(&p->tags, info->tags[i]);
    p->n_tags = (uint32_t)info->n_tags;
    /* Keep every record far below LMDB's and our 32-bit limits. */
    if (p->hdrs.len + p->vary.len + p->tags.len > (64u << 20)) {
        put_unref(p);
        return OP_ETOOBIG;
    }
    *out = p;
    return 0;
}

uint64_t cache_put_id(const struct cache_put *p)
{
    ASSERT(p->magic == CACHE_PUT_MAGIC);
    return p->id;
}

uint32_t cache_put_committed(const struct cache_put *p)
{
    ASSERT(p->magic == CACHE_PUT_MAGIC);
    return atomic_load_explicit(&((struct cache_put *)p)->committed, memory_order_acquire);
}

void cache_put_set_notify(struct cache_put *p, cache_done_fn *fn, void *arg)
{
    ASSERT(p->magic == CACHE_PUT_MAGIC);
    p->notify = fn;
    p->notify_arg = arg;
}

int cache_put_append(struct cache_put *p, const void *data, size_t len)
{
    ASSERT(p->magic == CACHE_PUT_MAGIC);
    struct cache *c = p->c;
    const char *d = data;
    if (p->dead)
        return p->dead;
    if (c->opt.max_object_size && p->body_len + len > c->opt.max_object_size) {
        p->dead = OP_ETOOBIG;
        return p->dead;
    }
    p->body_len += len;
    while (len > 0) {
        if (p->chunk == NULL)
            p->chunk = xmalloc(CACHE_CHUNK_SIZE);
        size_t n = UTIL_MIN(len, CACHE_CHUNK_SIZE - p->chunk_len);
        memcpy(p->chunk + p->chunk_len, d, n);
        p->chunk_len += n;
        d += n;
        len -= n;
        if (p->chunk_len == CACHE_CHUNK_SIZE) {
            if (atomic_load_explicit(&c->inbox_bytes, memory_order_relaxed) + CACHE_CHUNK_SIZE >
                c->inbox_max) {
                atomic_fetch_add_explicit(&c->st_refused, 1, memory_order_relaxed);
                log_ratelimited(LOG_WARN, "cache %s: writer inbox full, not storing an object",
                                c->dir);
                p->dead = OP_EFULL;
                return p->dead;
            }
            queue_chunk(p);
        }
    }
    return 0;
}

static void put_kill(struct cache_put *p)
{
    if (p->n_queued > 0) {
        struct cache_wop *op = wop_new(WOP_PUT_ABORT);
        op->put = p;
        op->id = p->id;
        enqueue(p->c, op);
    }
    put_unref(p);
}

void cache_put_abort(struct cache_put **pp)
{
    struct cache_put *p = *pp;
    if (p == NULL)
        return;
    ASSERT(p->magic == CACHE_PUT_MAGIC);
    *pp = NULL;
    put_kill(p);
}

int cache_put_end(struct cache_put **pp, cache_done_fn *done, void *arg)
{
    struct cache_put *p = *pp;
    ASSERT(p != NULL && p->magic == CACHE_PUT_MAGIC);
    *pp = NULL;
    if (p->dead) {
        int err = p->dead;
        put_kill(p);
        return err;
    }
    if (p->content_length >= 0 && p->body_len != (uint64_t)p->content_length) {
        put_kill(p); /* truncated or overlong: never store a wrong body */
        return OP_EINVAL;
    }
    struct str body = STR_NULL;
    if (p->body_len <= CACHE_INLINE_MAX) {
        ASSERT(p->n_queued == 0);
        body = str_make(p->chunk, p->chunk_len);
    } else if (p->chunk_len > 0) {
        queue_chunk(p);
    }
    struct cache_rec_hdr h;
    struct buf rec;
    buf_init(&rec);
    cache_rec_hdr_from_meta(&h, p->id, p->status, &p->meta, p->body_len, 0 /* set at commit */);
    ASSERT(h.n_chunks == p->n_queued);
    cache_rec_build(&rec, &h, buf_str(&p->key), buf_str(&p->hdrs), p->n_hdrs, buf_str(&p->vary),
                    p->n_vary, buf_str(&p->tags), p->n_tags, body);
    struct cache_wop *op = wop_new(WOP_PUT_END);
    op->put = p;
    op->id = p->id;
    memcpy(op->keyhash, p->keyhash, CACHE_KEYHASH_LEN);
    op->now = p->now;
    op->data = rec.p;
    op->len = rec.len;
    op->qbytes = rec.len;
    op->done = done;
    op->arg = arg;
    enqueue(p->c, op);
    put_unref(p);
    return 0;
}

/* ---- other asynchronous operations ------------------------------------------------------- */

int cache_update(struct cache *c, uint64_t id, const struct http_headers *headers,
                 const struct cache_meta *meta, int64_t now)
{
    CACHE_CHECK(c);
    struct buf b;
    buf_init(&b);
    struct cache_wop *op = wop_new(WOP_UPDATE);
    op->id = id;
    op->n = cache_rec_sec_headers(&b, headers);
    op->data = b.p;
    op->len = b.len;
    op->qbytes = b.len;
    op->meta = *meta;
    op->now = now;
    enqueue(c, op);
    return 0;
}

int cache_invalidate(struct cache *c, struct str key, bool soft, cache_done_fn *done, void *arg)
{
    CACHE_CHECK(c);
    if (key.len == 0 || key.len > CACHE_KEY_MAX)
        return OP_EINVAL;
    struct cache_wop *op = wop_new(WOP_INVALIDATE);
    op->data = xmemdup(key.p, key.len);
    op->len = key.len;
    cache_keyhash(key, op->keyhash);
    op->soft = soft;
    op->done = done;
    op->arg = arg;
    enqueue(c, op);
    return 0;
}

int cache_invalidate_tag(struct cache *c, struct str tag, bool soft, cache_done_fn *done, void *arg)
{
    CACHE_CHECK(c);
    struct cache_wop *op = wop_new(WOP_INVALIDATE_TAG);
    op->data = xmemdup(tag.p, tag.len);
    op->len = tag.len;
    op->qbytes = tag.len;
    op->soft = soft;
    op->done = done;
    op->arg = arg;
    enqueue(c, op);
    return 0;
}

void cache_writer_touch(struct cache *c, const uint8_t keyhash[CACHE_KEYHASH_LEN], uint64_t id,
                        int64_t seq)
{
    uint64_t now_seq = atomic_load_explicit(&c->seq_now, memory_order_relaxed);
    uint64_t objects = atomic_load_explicit(&c->st_objects, memory_order_relaxed);
    uint64_t behind = UTIL_MAX(objects / 4, 1);
    if ((uint64_t)seq + behind >= now_seq)
        return; /* still among the newest: nothing to do */
    size_t slot = id % ARRAY_SIZE(c->touch_id);
    if (atomic_load_explicit(&c->touch_id[slot], memory_order_relaxed) == id &&
        atomic_load_explicit(&c->touch_seq[slot], memory_order_relaxed) == now_seq)
        return; /* already queued at this clock */
    /* Lossy by design: under a full inbox the LRU position just stays older. */
    if (atomic_load_explicit(&c->inbox_bytes, memory_order_relaxed) > c->inbox_max)
        return;
    atomic_store_explicit(&c->touch_id[slot], id, memory_order_relaxed);
    atomic_store_explicit(&c->touch_seq[slot], now_seq, memory_order_relaxed);
    struct cache_wop *op = wop_new(WOP_TOUCH);
    op->id = id;
    memcpy(op->keyhash, keyhash, CACHE_KEYHASH_LEN);
    enqueue(c, op);
}

int cache_barrier(struct cache *c, cache_done_fn *done, void *arg)
{
    CACHE_CHECK(c);
    struct cache_wop *op = wop_new(WOP_SYNC);
    op->done = done;
    op->arg = arg;
    enqueue(c, op);
    return 0;
}

void cache_sync(struct cache *c)
{
    CACHE_CHECK(c);
    ASSERT(!pthread_equal(pthread_self(), c->writer)); /* would wait for itself */
    struct wsync s;
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.cond, NULL);
    s.done = false;
    struct cache_wop *op = wop_new(WOP_SYNC);
    op->sync = &s;
    enqueue(c, op);
    pthread_mutex_lock(&s.lock);
    while (!s.done)
        pthread_cond_wait(&s.cond, &s.lock);
    pthread_mutex_unlock(&s.lock);
    pthread_mutex_destroy(&s.lock);
    pthread_cond_destroy(&s.cond);
}

/* ---- transaction helpers (writer thread) ------------------------------------------------- */

/* mdb_del that treats "already absent" as success: indices tolerate stale entries. */
static int del_opt(MDB_txn *txn, MDB_dbi dbi, const void *k, size_t klen, MDB_val *data)
{
    MDB_val kv = {klen, (void *)k};
    int rc = mdb_del(txn, dbi, &kv, data);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int put_kv(MDB_txn *txn, MDB_dbi dbi, const void *k, size_t klen, const void *v, size_t vlen)
{
    MDB_val kv = {klen, (void *)k}, vv = {vlen, (void *)v};
    return mdb_put(txn, dbi, &kv, &vv, 0);
}

int cache_wr_chunks_delete(struct cache *c, MDB_txn *txn, uint64_t id)
{
    MDB_cursor *cur;
    uint8_t kb[CACHE_CHUNKKEY_LEN];
    int rc = mdb_cursor_open(txn, c->db_chunks, &cur);
    if (rc != 0)
        return rc;
    cache_be64_put(kb, id);
    cache_be32_put(kb + 8, 0);
    for (;;) {
        /* Re-seek after every delete rather than rely on cursor position after mdb_cursor_del. */
        MDB_val k = {sizeof(kb), kb}, v;
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc == MDB_NOTFOUND ||
            (rc == 0 && (k.mv_size != CACHE_CHUNKKEY_LEN || cache_be64_get(k.mv_data) != id))) {
            rc = 0;
            break;
        }
        if (rc != 0)
            break;
        if ((rc = mdb_cursor_del(cur, 0)) != 0)
            break;
    }
    mdb_cursor_close(cur);
    if (rc != 0)
        return rc;
    uint8_t ib[8];
    cache_be64_put(ib, id);
    return del_opt(txn, c->db_pending, ib, 8, NULL);
}

/* Fetch and copy the record objects(keyhash, id); *buf owns the copy (free it). */
static int rec_fetch(struct cache *c, MDB_txn *txn, const uint8_t *keyhash, uint64_t id, char **buf,
                     struct cache_rec *r)
{
    uint8_t ob[CACHE_OBJKEY_LEN];
    memcpy(ob, keyhash, CACHE_KEYHASH_LEN);
    cache_be64_put(ob + CACHE_KEYHASH_LEN, id);
    MDB_val k = {sizeof(ob), ob}, v;
    int rc = mdb_get(txn, c->db_objects, &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? OP_ENOTFOUND : rc;
    *buf = xmemdup(v.mv_data, v.mv_size);
    if (cache_rec_parse(*buf, v.mv_size, r) != 0) {
        atomic_fetch_add_explicit(&c->st_corrupt, 1, memory_order_relaxed);
        return OP_ECORRUPT;
    }
    return 0;
}

static uint64_t rec_bytes(const struct cache_rec *r)
{
    return r->len + (r->h.n_chunks ? r->h.body_len : 0);
}

static int index_time(MDB_txn *txn, MDB_dbi dbi, int64_t t, uint64_t id, const uint8_t *keyhash,
                      bool add)
{
    uint8_t kb[16];
    cache_be64_put(kb, cache_be64_time(t));
    cache_be64_put(kb + 8, id);
    if (add)
        return put_kv(txn, dbi, kb, 16, keyhash, CACHE_KEYHASH_LEN);
    return del_opt(txn, dbi, kb, 16, NULL);
}

/* Add or remove the tag index entries of a record. */
static int index_tags(struct cache *c, MDB_txn *txn, const struct cache_rec *r,
                      const uint8_t *keyhash, bool add)
{
    uint8_t ob[CACHE_OBJKEY_LEN];
    memcpy(ob, keyhash, CACHE_KEYHASH_LEN);
    cache_be64_put(ob + CACHE_KEYHASH_LEN, r->h.id);
    const uint8_t *tp = r->tags;
    for (uint32_t i = 0; i < r->h.n_tags; i++) {
        struct str t;
        uint8_t tk[CACHE_TAG_INLINE_MAX];
        size_t tl;
        cache_rec_str_next(&tp, &t);
        cache_tag_dbkey(t, tk, &tl);
        MDB_val v = {sizeof(ob), ob};
        int rc = add ? put_kv(txn, c->db_tags, tk, tl, ob, sizeof(ob))
                     : del_opt(txn, c->db_tags, tk, tl, &v);
        if (rc != 0 && rc != MDB_KEYEXIST)
            return rc;
    }
    return 0;
}

/* Delete a variant: record, chunks, every index entry, accounting. A record that no longer
 * decodes is removed with whatever can be found of it. */
static int variant_delete(struct cache *c, MDB_txn *txn, const uint8_t *keyhash, uint64_t id)
{
    char *buf = NULL;
    struct cache_rec r;
    int rc = rec_fetch(c, txn, keyhash, id, &buf, &r);
    bool ok = rc == 0;
    if (rc != 0 && rc != OP_ECORRUPT) {
        free(buf);
        return rc == OP_ENOTFOUND ? 0 : rc;
    }
    uint8_t ob[CACHE_OBJKEY_LEN];
    memcpy(ob, keyhash, CACHE_KEYHASH_LEN);
    cache_be64_put(ob + CACHE_KEYHASH_LEN, id);
    if ((rc = del_opt(txn, c->db_objects, ob, sizeof(ob), NULL)) != 0 ||
        (rc = cache_wr_chunks_delete(c, txn, id)) != 0 ||
        (rc = del_opt(txn, c->db_byid, ob + CACHE_KEYHASH_LEN, 8, NULL)) != 0)
        goto out;
    if (ok) {
        if ((rc = index_time(txn, c->db_expiry, cache_rec_useless_after(&r.h), id, keyhash,
                             false)) != 0 ||
            (rc = index_time(txn, c->db_access, r.h.access_seq, id, keyhash, false)) != 0 ||
            (rc = index_tags(c, txn, &r, keyhash, false)) != 0)
            goto out;
        uint64_t b = rec_bytes(&r);
        c->w_bytes = c->w_bytes > b ? c->w_bytes - b : 0;
    }
    if (c->w_objects > 0)
        c->w_objects--;
out:
    free(buf);
    return rc;
}

/* Ids of the variants stored under keyhash whose record satisfies `pred` (full key check
 * included). At most `max` ids; returns the count. */
static int variants_collect(struct cache *c, MDB_txn *txn, const uint8_t *keyhash, struct str key,
                            const struct cache_rec *same_vary, uint64_t **ids, size_t *n)
{
    MDB_cursor *cur;
    uint8_t kb[CACHE_OBJKEY_LEN];
    size_t cap = 0;
    *ids = NULL;
    *n = 0;
    int rc = mdb_cursor_open(txn, c->db_objects, &cur);
    if (rc != 0)
        return rc;
    memcpy(kb, keyhash, CACHE_KEYHASH_LEN);
    memset(kb + CACHE_KEYHASH_LEN, 0, 8);
    MDB_val k = {sizeof(kb), kb}, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != CACHE_OBJKEY_LEN || memcmp(k.mv_data, keyhash, CACHE_KEYHASH_LEN))
            break;
        struct cache_rec r;
        if (cache_rec_parse(v.mv_data, v.mv_size, &r) != 0)
            continue; /* not ours to judge here; cache_check reports it */
        if (!str_eq(r.key, key) || (same_vary && !cache_vary_same(&r, same_vary)))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 4;
            *ids = xrealloc(*ids, cap * sizeof(**ids));
        }
        (*ids)[(*n)++] = r.h.id;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND || rc == 0 ? 0 : rc;
}

/* Insert a parsed record with all its indices; `now` is its access time. */
static int record_insert(struct cache *c, MDB_txn *txn, const struct cache_rec *r,
                         const uint8_t *keyhash)
{
    uint8_t ob[CACHE_OBJKEY_LEN];
    memcpy(ob, keyhash, CACHE_KEYHASH_LEN);
    cache_be64_put(ob + CACHE_KEYHASH_LEN, r->h.id);
    int rc;
    if ((rc = put_kv(txn, c->db_objects, ob, sizeof(ob), r->base, r->len)) != 0 ||
        (rc = put_kv(txn, c->db_byid, ob + CACHE_KEYHASH_LEN, 8, keyhash, CACHE_KEYHASH_LEN)) ||
        (rc = index_time(txn, c->db_expiry, cache_rec_useless_after(&r->h), r->h.id, keyhash,
                         true)) != 0 ||
        (rc = index_time(txn, c->db_access, r->h.access_seq, r->h.id, keyhash, true)) != 0 ||
        (rc = index_tags(c, txn, r, keyhash, true)) != 0)
        return rc;
    c->w_bytes += rec_bytes(r);
    c->w_objects++;
    return 0;
}

/* ---- operations (writer thread, inside the batch txn) ------------------------------------ */

static int op_chunk(struct cache *c, MDB_txn *txn, struct cache_wop *op)
{
    if (op->put->failed) {
        op->err = op->put->failed;
        return 0;
    }
    int rc;
    if (op->idx == 0) {
        uint8_t ib[8];
        cache_be64_put(ib, op->id);
        if ((rc = put_kv(txn, c->db_pending, ib, 8, op->keyhash, CACHE_KEYHASH_LEN)) != 0)
            return rc;
    }
    uint8_t kb[CACHE_CHUNKKEY_LEN];
    cache_be64_put(kb, op->id);
    cache_be32_put(kb + 8, op->idx);
    return put_kv(txn, c->db_chunks, kb, sizeof(kb), op->data, op->len);
}

static int op_put_end(struct cache *c, MDB_txn *txn, struct cache_wop *op)
{
    if (op->put->failed) {
        op->err = op->put->failed;
        return cache_wr_chunks_delete(c, txn, op->id);
    }
    /* The access clock is assigned at commit time: patch it into our own record. */
    int64_t seq = (int64_t)++c->w_seq;
    memcpy(op->data + offsetof(struct cache_rec_hdr, access_seq), &seq, sizeof(seq));
    struct cache_rec r;
    ASSERT(cache_rec_parse(op->data, op->len, &r) == 0);
    uint64_t *ids;
    size_t n;
    int rc = variants_collect(c, txn, op->keyhash, r.key, &r, &ids, &n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = variant_delete(c, txn, op->keyhash, ids[i]);
    free(ids);
    if (rc != 0)
        return rc;
    if ((rc = record_insert(c, txn, &r, op->keyhash)) != 0)
        return rc;
    uint8_t ib[8];
    cache_be64_put(ib, op->id);
    return del_opt(txn, c->db_pending, ib, 8, NULL);
}

/* Rewrite the record of (keyhash, id) with a new fixed header and optionally new headers,
 * keeping the expiry index in step. */
static int record_rewrite(struct cache *c, MDB_txn *txn, const uint8_t *keyhash,
                          const struct cache_rec *old, const struct cache_rec_hdr *h,
                          const struct str *hdrs, const uint32_t *n_hdrs)
{
    struct buf nb;
    buf_init(&nb);
    cache_rec_rebuild(&nb, old, h, hdrs, n_hdrs);
    uint8_t ob[CACHE_OBJKEY_LEN];
    memcpy(ob, keyhash, CACHE_KEYHASH_LEN);
    cache_be64_put(ob + CACHE_KEYHASH_LEN, old->h.id);
    int rc = put_kv(txn, c->db_objects, ob, sizeof(ob), nb.p, nb.len);
    int64_t ua_old = cache_rec_useless_after(&old->h), ua_new = cache_rec_useless_after(h);
    if (rc == 0 && ua_old != ua_new &&
        (rc = index_time(txn, c->db_expiry, ua_old, old->h.id, keyhash, false)) == 0)
        rc = index_time(txn, c->db_expiry, ua_new, old->h.id, keyhash, true);
    if (rc == 0 && old->h.access_seq != h->access_seq &&
        (rc = index_time(txn, c->db_access, old->h.access_seq, old->h.id, keyhash, false)) == 0)
        rc = index_time(txn, c->db_access, h->access_seq, old->h.id, keyhash, true);
    if (rc == 0)
        c->w_bytes = c->w_bytes - old->len + nb.len;
    buf_fini(&nb);
    return rc;
}

static int op_update(struct cache *c, MDB_txn *txn, struct cache_wop *op)
{
    uint8_t ib[8];
    cache_be64_put(ib, op->id);
    MDB_val k = {8, ib}, v;
    int rc = mdb_get(txn, c->db_byid, &k, &v);
    if (rc == MDB_NOTFOUND || (rc == 0 && v.mv_size != CACHE_KEYHASH_LEN)) {
        op->err = OP_ENOTFOUND;
        return 0;
    }
    if (rc != 0)
        return rc;
    uint8_t keyhash[CACHE_KEYHASH_LEN];
    memcpy(keyhash, v.mv_data, CACHE_KEYHASH_LEN);
    char *buf = NULL;
    struct cache_rec r;
    rc = rec_fetch(c, txn, keyhash, op->id, &buf, &r);
    if (rc == 0) {
        struct cache_rec_hdr h = r.h;
        struct cache_rec_hdr m;
        cache_rec_hdr_from_meta(&m, r.h.id, r.h.status, &op->meta, r.h.body_len, 0);
        h.request_time = m.request_time;
        h.response_time = m.response_time;
        h.corrected_initial_age = m.corrected_initial_age;
        h.freshness_lifetime = m.freshness_lifetime;
        h.stale_while_revalidate = m.stale_while_revalidate;
        h.stale_if_error = m.stale_if_error;
        h.last_modified = m.last_modified;
        h.meta_flags = m.meta_flags;
        struct str hs = str_make(op->data, op->len);
        rc = record_rewrite(c, txn, keyhash, &r, &h, &hs, &op->n);
    } else if (rc == OP_ENOTFOUND || rc == OP_ECORRUPT) {
        op->err = rc;
        rc = 0;
    }
    free(buf);
    return rc;
}

static int op_invalidate(struct cache *c, MDB_txn *txn, struct cache_wop *op)
{
    uint64_t *ids;
    size_t n;
    int rc = variants_collect(c, txn, op->keyhash, str_make(op->data, op->len), NULL, &ids, &n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!op->soft) {
            rc = variant_delete(c, txn, op->keyhash, ids[i]);
            continue;
        }
        char *buf = NULL;
        struct cache_rec r;
        rc = rec_fetch(c, txn, op->keyhash, ids[i], &buf, &r);
        if (rc == 0 && !(r.h.meta_flags & CACHE_F_STALE)) {
            struct cache_rec_hdr h = r.h;
            h.meta_flags |= CACHE_F_STALE;
            rc = record_rewrite(c, txn, op->keyhash, &r, &h, NULL, NULL);
        }
        free(buf);
    }
    free(ids);
    if (rc == 0 && n == 0)
        op->err = OP_ENOTFOUND;
    return rc;
}

static int op_invalidate_tag(struct cache *c, MDB_txn *txn, struct cache_wop *op)
{
    uint8_t tk[CACHE_TAG_INLINE_MAX];
    size_t tl;
    cache_tag_dbkey(str_make(op->data, op->len), tk, &tl);
    /* Collect first: invalidating deletes or rewrites what the cursor walks. */
    uint8_t(*objs)[CACHE_OBJKEY_LEN] = NULL;
    size_t n = 0, cap = 0;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, c->db_tags, &cur);
    if (rc != 0)
        return rc;
    MDB_val k = {tl, tk}, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP)) {
        if (v.mv_size != CACHE_OBJKEY_LEN)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            objs = xrealloc(objs, cap * sizeof(*objs));
        }
        memcpy(objs[n++], v.mv_data, CACHE_OBJKEY_LEN);
    }
    mdb_cursor_close(cur);
    rc = rc == MDB_NOTFOUND ? 0 : rc;
    size_t done = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        uint64_t id = cache_be64_get(objs[i] + CACHE_KEYHASH_LEN);
        char *buf = NULL;
        struct cache_rec r;
        rc = rec_fetch(c, txn, objs[i], id, &buf, &r);
        if (rc == OP_ENOTFOUND || rc == OP_ECORRUPT) {
            free(buf);
            rc = 0; /* stale index entry: cache_check reports it */
            continue;
        }
        if (rc == 0 && !op->soft) {
            rc = variant_delete(c, txn, objs[i], id);
        } else if (rc == 0 && !(r.h.meta_flags & CACHE_F_STALE)) {
            struct cache_rec_hdr h = r.h;
            h.meta_flags |= CACHE_F_STALE;
            rc = record_rewrite(c, txn, objs[i], &r, &h, NULL, NULL);
        }
        done += rc == 0;
        free(buf);
    }
    free(objs);
    if (rc == 0 && done == 0)
        op->err = OP_ENOTFOUND;
    return rc;
}

static int op_touch(struct cache *c, MDB_txn *txn, struct cache_wop *op)
{
    char *buf = NULL;
    struct cache_rec r;
    int rc = rec_fetch(c, txn, op->keyhash, op->id, &buf, &r);
    if (rc == 0 && (uint64_t)r.h.access_seq < c->w_seq) {
        struct cache_rec_hdr h = r.h;
        h.access_seq = (int64_t)c->w_seq;
        rc = record_rewrite(c, txn, op->keyhash, &r, &h, NULL, NULL);
    } else if (rc == OP_ENOTFOUND || rc == OP_ECORRUPT) {
        rc = 0; /* replaced or evicted meanwhile */
    }
    free(buf);
    return rc;
}

static int op_put_abort(struct cache *c, MDB_txn *txn, struct cache_wop *op)
{
    return cache_wr_chunks_delete(c, txn, op->id);
}

static int meta_put_u64(struct cache *c, MDB_txn *txn, const char *name, uint64_t v)
{
    return put_kv(txn, c->db_meta, name, strlen(name), &v, 8);
}

static int meta_persist(struct cache *c, MDB_txn *txn)
{
    int rc;
    if ((rc = meta_put_u64(c, txn, "next_id", atomic_load(&c->next_id))) != 0 ||
        (rc = meta_put_u64(c, txn, "access_seq", c->w_seq)) != 0 ||
        (rc = meta_put_u64(c, txn, "bytes", c->w_bytes)) != 0 ||
        (rc = meta_put_u64(c, txn, "objects", c->w_objects)) != 0)
        return rc;
    return 0;
}

/* ---- eviction ---------------------------------------------------------------------------- */

/* Evict one variant: the oldest expired one, else the least recently accessed. Returns 0,
 * MDB_NOTFOUND when nothing is left, or an LMDB error. */
static int evict_one(struct cache *c, MDB_txn *txn, bool *expired)
{
    MDB_cursor *cur;
    MDB_val k, v;
    uint8_t keyhash[CACHE_KEYHASH_LEN];
    uint8_t ikey[16];
    MDB_dbi idb = c->db_expiry;
    *expired = false;
    int rc = mdb_cursor_open(txn, c->db_expiry, &cur);
    if (rc != 0)
        return rc;
    rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    if (rc == 0 && (k.mv_size != 16 || v.mv_size != CACHE_KEYHASH_LEN)) {
        rc = mdb_cursor_del(cur, 0); /* malformed entry: drop it and go on */
        mdb_cursor_close(cur);
        return rc == 0 ? OP_EAGAIN : rc;
    }
    if (rc == 0 && cache_time_from_be64(cache_be64_get(k.mv_data)) <= c->w_now) {
        memcpy(ikey, k.mv_data, 16);
        memcpy(keyhash, v.mv_data, CACHE_KEYHASH_LEN);
        *expired = true;
    }
    mdb_cursor_close(cur);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    if (!*expired) {
        idb = c->db_access;
        if ((rc = mdb_cursor_open(txn, c->db_access, &cur)) != 0)
            return rc;
        rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        if (rc == 0 && (k.mv_size != 16 || v.mv_size != CACHE_KEYHASH_LEN)) {
            rc = mdb_cursor_del(cur, 0);
            mdb_cursor_close(cur);
            return rc == 0 ? OP_EAGAIN : rc;
        }
        if (rc == 0) {
            memcpy(ikey, k.mv_data, 16);
            memcpy(keyhash, v.mv_data, CACHE_KEYHASH_LEN);
        }
        mdb_cursor_close(cur);
        if (rc != 0)
            return rc; /* MDB_NOTFOUND: nothing left to evict */
    }
    uint64_t before = c->w_objects;
    rc = variant_delete(c, txn, keyhash, cache_be64_get(ikey + 8));
    if (rc == 0 && c->w_objects == before) {
        /* A stale index entry (no record): remove it so the loop makes progress. */
        rc = del_opt(txn, idb, ikey, 16, NULL);
        return rc == 0 ? OP_EAGAIN : rc; /* not an eviction */
    }
    return rc;
}

/* Evict until accounted bytes <= target and at least `min_n` variants went. */
static void evict(struct cache *c, uint64_t target, unsigned min_n)
{
    unsigned done = 0;
    for (int t = 0; t < WR_EVICT_TXNS; t++) {
        if (c->w_bytes <= target && done >= min_n)
            return;
        MDB_txn *txn;
        uint64_t bytes0 = c->w_bytes, objects0 = c->w_objects;
        int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
        if (rc != 0)
            goto err;
        unsigned n = 0, n_exp = 0;
        bool nothing_left = false;
        for (int i = 0; i < WR_EVICT_PER_TXN && (c->w_bytes > target || done + n < min_n); i++) {
            bool expired = false;
            rc = evict_one(c, txn, &expired);
            if (rc == OP_EAGAIN)
                continue;
            if (rc == MDB_NOTFOUND) {
                nothing_left = true;
                rc = 0;
                break;
            }
            if (rc != 0)
                break;
            n++;
            n_exp += expired;
        }
        if (rc == 0)
            rc = meta_persist(c, txn);
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
        if (rc != 0) {
            c->w_bytes = bytes0;
            c->w_objects = objects0;
            goto err;
        }
        done += n;
        atomic_fetch_add(&c->st_evictions, n);
        atomic_fetch_add(&c->st_expired_evictions, n_exp);
        atomic_fetch_add(&c->st_commits, 1);
        atomic_store(&c->st_bytes, c->w_bytes);
        atomic_store(&c->st_objects, c->w_objects);
        if (nothing_left)
            return;
    }
    return;
err:
    atomic_fetch_add(&c->st_write_errors, 1);
    log_ratelimited(LOG_ERR, "cache %s: eviction failed", c->dir);
}

/* ---- the batch --------------------------------------------------------------------------- */

static int batch_apply(struct cache *c, struct cache_wop *ops)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
    for (struct cache_wop *op = ops; op != NULL && rc == 0; op = op->next) {
        op->err = 0;
        switch (op->kind) {
        case WOP_CHUNK:
            rc = op_chunk(c, txn, op);
            break;
        case WOP_PUT_END:
            rc = op_put_end(c, txn, op);
            break;
        case WOP_PUT_ABORT:
            rc = op_put_abort(c, txn, op);
            break;
        case WOP_UPDATE:
            rc = op_update(c, txn, op);
            break;
        case WOP_INVALIDATE:
            rc = op_invalidate(c, txn, op);
            break;
        case WOP_TOUCH:
            rc = op_touch(c, txn, op);
            break;
        case WOP_INVALIDATE_TAG:
            rc = op_invalidate_tag(c, txn, op);
            break;
        case WOP_SYNC:
            break;
        }
    }
    if (rc == 0)
        rc = meta_persist(c, txn);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    return mdb_txn_commit(txn);
}

/* The batch could not be committed: its puts are dead; delete what earlier batches wrote. */
static void batch_fail(struct cache *c, struct cache_wop *ops, int err)
{
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
    for (struct cache_wop *op = ops; op != NULL; op = op->next) {
        op->err = err;
        if (op->put) {
            op->put->failed = err;
            op->put->notify_due = op->kind == WOP_CHUNK;
        }
        if (rc == 0 && (op->kind == WOP_PUT_END || op->kind == WOP_PUT_ABORT))
            rc = cache_wr_chunks_delete(c, txn, op->id);
    }
    if (rc == 0)
        rc = mdb_txn_commit(txn);
    else if (txn)
        mdb_txn_abort(txn);
    if (rc != 0) /* the pending entries remain; cache_open() cleans them */
        log_ratelimited(LOG_ERR, "cache %s: cleanup after a failed batch: %s", c->dir,
                        op_strerror(rc > 0 ? -rc : rc));
}

static void batch_run(struct cache *c, struct cache_wop *ops)
{
    uint64_t bytes0 = c->w_bytes, objects0 = c->w_objects, seq0 = c->w_seq;
    for (struct cache_wop *op = ops; op != NULL; op = op->next)
        if (op->now > c->w_now && op->kind != WOP_CHUNK)
            c->w_now = op->now;
    int rc = batch_apply(c, ops);
    if (rc != 0) {
        c->w_bytes = bytes0;
        c->w_objects = objects0;
        c->w_seq = seq0;
        log_ratelimited(LOG_WARN, "cache %s: batch failed (%s), evicting and retrying", c->dir,
                        mdb_strerror(rc));
        /* Make room: the batch's size twice over plus an eighth of what is stored, and at
         * least below the low-water mark. */
        uint64_t batch_bytes = 0;
        for (struct cache_wop *op = ops; op != NULL; op = op->next)
            batch_bytes += op->len;
        uint64_t free_bytes = UTIL_MIN(c->w_bytes, 2 * batch_bytes + c->w_bytes / 8);
        evict(c, UTIL_MIN(c->low_bytes, c->w_bytes - free_bytes), 1);
        /* LMDB reuses the pages freed by transaction T only from T + 2 on (T - 1's snapshot
         * must stay intact until T's meta page is durable): commit one small transaction so
         * that the retry can use what the eviction freed. */
        MDB_txn *nudge;
        if (mdb_txn_begin(c->env, NULL, 0, &nudge) == 0) {
            if (meta_persist(c, nudge) == 0)
                mdb_txn_commit(nudge);
            else
                mdb_txn_abort(nudge);
        }
        bytes0 = c->w_bytes;
        objects0 = c->w_objects;
        rc = batch_apply(c, ops);
        if (rc != 0) {
            c->w_bytes = bytes0;
            c->w_objects = objects0;
            c->w_seq = seq0;
            atomic_fetch_add(&c->st_write_errors, 1);
            log_ratelimited(LOG_ERR, "cache %s: dropping a batch of writes: %s", c->dir,
                            mdb_strerror(rc));
            batch_fail(c, ops, rc > 0 ? -rc : rc);
        }
    }
    if (rc == 0) {
        atomic_fetch_add(&c->st_commits, 1);
        atomic_store(&c->st_bytes, c->w_bytes);
        atomic_store(&c->st_objects, c->w_objects);
        atomic_store(&c->seq_now, c->w_seq);
        for (struct cache_wop *op = ops; op != NULL; op = op->next) {
            if (op->kind == WOP_CHUNK && op->err == 0) {
                atomic_store_explicit(&op->put->committed, op->idx + 1, memory_order_release);
                op->put->notify_due = true;
            }
        }
    }
    /* Callbacks outside any transaction. */
    for (struct cache_wop *op = ops; op != NULL;) {
        struct cache_wop *next = op->next;
        /* Before any callback, so that a cache_sync() caller sees the queue drained. */
        atomic_fetch_sub(&c->inbox_bytes, op->qbytes);
        atomic_fetch_sub(&c->st_queue_len, 1);
        if (op->put && op->put->notify_due) {
            op->put->notify_due = false;
            if (op->put->notify)
                op->put->notify(op->put->notify_arg, op->put->failed);
        }
        if (op->done)
            op->done(op->arg, op->err);
        if (op->sync) {
            pthread_mutex_lock(&op->sync->lock);
            op->sync->done = true;
            pthread_cond_signal(&op->sync->cond);
            pthread_mutex_unlock(&op->sync->lock);
        }
        if (op->put)
            put_unref(op->put);
        free(op->data);
        free(op);
        op = next;
    }
    if (c->w_bytes > c->high_bytes)
        evict(c, c->low_bytes, 0);
}

static void *writer_main(void *arg)
{
    struct cache *c = arg;
    pthread_mutex_lock(&c->qlock);
    for (;;) {
        while (c->q_head == NULL && !c->stopping)
            pthread_cond_wait(&c->qcond, &c->qlock);
        if (c->q_head == NULL)
            break;
        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_nsec += (long)c->opt.batch_ms * 1000000L;
        dl.tv_sec += dl.tv_nsec / 1000000000L;
        dl.tv_nsec %= 1000000000L;
        while (!c->q_syncs && !c->stopping && c->q_n < WR_BATCH_OPS &&
               atomic_load(&c->inbox_bytes) < WR_BATCH_BYTES) {
            if (pthread_cond_timedwait(&c->qcond, &c->qlock, &dl) == ETIMEDOUT)
                break;
        }
        /* Detach at most one batch. */
        struct cache_wop *head = c->q_head, *last = head;
        unsigned n = 1;
        size_t bytes = head->qbytes;
        unsigned syncs = head->kind == WOP_SYNC;
        while (last->next && n < WR_BATCH_OPS && bytes + last->next->qbytes <= WR_BATCH_BYTES) {
            last = last->next;
            bytes += last->qbytes;
            syncs += last->kind == WOP_SYNC;
            n++;
        }
        c->q_head = last->next;
        if (c->q_head == NULL)
            c->q_tail = NULL;
        last->next = NULL;
        c->q_n -= n;
        c->q_syncs -= syncs;
        pthread_mutex_unlock(&c->qlock);
        batch_run(c, head);
        pthread_mutex_lock(&c->qlock);
    }
    pthread_mutex_unlock(&c->qlock);
    return NULL;
}

int cache_writer_start(struct cache *c)
{
    int rc = pthread_create(&c->writer, NULL, writer_main, c);
    if (rc != 0)
        return -rc;
    pthread_setname_np(c->writer, "cache-writer");
    return 0;
}

void cache_writer_stop(struct cache *c)
{
    pthread_mutex_lock(&c->qlock);
    c->stopping = true;
    pthread_cond_signal(&c->qcond);
    pthread_mutex_unlock(&c->qlock);
    pthread_join(c->writer, NULL);
}
