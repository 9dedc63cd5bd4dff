/*
 * cache/store.c: the read side of the LMDB object cache: open/close, lookup, chunk reads,
 * statistics and the consistency check. Layout and record format: cache/cache_int.h; the
 * write side (the single writer thread) is cache/writer.c.
 *
 * Threads: lookups and chunk reads run on the caller's thread in short read transactions.
 * Each thread keeps one reset read transaction and cursor per open cache in thread-local
 * storage and renews it per call (mdb_txn_renew is far cheaper than mdb_txn_begin); the txn
 * is reset before returning, so no snapshot is ever held across a socket write. Every such
 * txn is registered in its cache (rlock) and freed by cache_close(), which the caller must
 * not run concurrently with other calls on the same cache.
 *
 * Owns: the environment, the named dbs, the thread-local read txns.
 */
#include <errno.h>
#include <inttypes.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cache/cache_int.h"
#include "lib/log.h"
#include "lib/util.h"

/* A registered per-thread read transaction. */
struct cache_rtxn {
    struct cache_rtxn *next; /* in cache->rtxns, lock rlock */
    MDB_txn *txn;
    MDB_cursor *cur;
};

#define RTXN_SLOTS 4
#define RTXN_MAX 256 /* per cache; beyond it, calls use a throwaway txn */

struct rtxn_slot {
    uint64_t gen;
    struct cache_rtxn *rt;
};
static __thread struct rtxn_slot tls_rtxn[RTXN_SLOTS];
static __thread unsigned tls_rtxn_next;
static _Atomic uint64_t cache_gen_counter;

void cache_keyhash(struct str key, uint8_t out[CACHE_KEYHASH_LEN])
{
    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256((const uint8_t *)key.p, key.len, md);
    memcpy(out, md, CACHE_KEYHASH_LEN);
}

void cache_tag_dbkey(struct str tag, uint8_t out[CACHE_TAG_INLINE_MAX], size_t *len)
{
    if (tag.len > 0 && tag.len <= CACHE_TAG_INLINE_MAX) {
        memcpy(out, tag.p, tag.len);
        *len = tag.len;
        return;
    }
    out[0] = 0xff;
    SHA256((const uint8_t *)tag.p, tag.len, out + 1);
    *len = 1 + SHA256_DIGEST_LENGTH;
}

/* ---- read transactions ------------------------------------------------------------------- */

/* LMDB returns positive errno values too; Outpost errors are negative. */
static int lmdb_err(int rc)
{
    return rc > 0 ? -rc : rc;
}

/* Begin a read txn for this thread: the cached one renewed, or a throwaway one (*rt NULL).
 * *fresh: the txn was just created, its registered cursor is already bound. */
static int rtxn_begin(struct cache *c, struct cache_rtxn **rt, MDB_txn **txn, bool *fresh)
{
    *fresh = false;
    for (unsigned i = 0; i < RTXN_SLOTS; i++) {
        if (tls_rtxn[i].gen == c->gen) {
            *rt = tls_rtxn[i].rt;
            int rc = mdb_txn_renew((*rt)->txn);
            if (rc != 0)
                return lmdb_err(rc);
            *txn = (*rt)->txn;
            return 0;
        }
    }
    *rt = NULL;
    pthread_mutex_lock(&c->rlock);
    bool room = c->n_rtxns < RTXN_MAX;
    if (room)
        c->n_rtxns++;
    pthread_mutex_unlock(&c->rlock);
    int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, txn);
    if (rc != 0 || !room) {
        if (room) {
            pthread_mutex_lock(&c->rlock);
            c->n_rtxns--;
            pthread_mutex_unlock(&c->rlock);
        }
        return lmdb_err(rc);
    }
    struct cache_rtxn *n = xcalloc(1, sizeof(*n));
    n->txn = *txn;
    rc = mdb_cursor_open(*txn, c->db_objects, &n->cur);
    if (rc != 0) {
        mdb_txn_abort(*txn);
        free(n);
        pthread_mutex_lock(&c->rlock);
        c->n_rtxns--;
        pthread_mutex_unlock(&c->rlock);
        return lmdb_err(rc);
    }
    pthread_mutex_lock(&c->rlock);
    n->next = c->rtxns;
    c->rtxns = n;
    pthread_mutex_unlock(&c->rlock);
    /* The replaced slot's txn stays registered with its own cache, freed at its close. */
    struct rtxn_slot *s = &tls_rtxn[tls_rtxn_next++ % RTXN_SLOTS];
    s->gen = c->gen;
    s->rt = n;
    *rt = n;
    *fresh = true;
    return 0;
}

static void rtxn_end(struct cache_rtxn *rt, MDB_txn *txn)
{
    if (rt != NULL)
        mdb_txn_reset(txn);
    else
        mdb_txn_abort(txn);
}

/* A cursor on `objects` for txn: the registered one (renewed) or a new one (*own set). */
static int rtxn_cursor(struct cache *c, struct cache_rtxn *rt, MDB_txn *txn, bool fresh,
                       MDB_cursor **cur)
{
    if (rt == NULL)
        return mdb_cursor_open(txn, c->db_objects, cur);
    *cur = rt->cur;
    return fresh ? 0 : mdb_cursor_renew(txn, rt->cur);
}

/* ---- open / close ------------------------------------------------------------------------ */

static int meta_get_u64(MDB_txn *txn, MDB_dbi dbi, const char *name, uint64_t *out)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND) {
        *out = 0;
        return 0;
    }
    if (rc != 0)
        return rc;
    if (v.mv_size != 8)
        return OP_ECORRUPT;
    memcpy(out, v.mv_data, 8);
    return 0;
}

static uint64_t last_id_of(MDB_txn *txn, MDB_dbi dbi)
{
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t id = 0;
    if (mdb_cursor_open(txn, dbi, &cur) != 0)
        return 0;
    if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size >= 8)
        id = cache_be64_get(k.mv_data);
    mdb_cursor_close(cur);
    return id;
}

/* Schema check, pending cleanup, counters: one write txn before the writer starts. */
static int open_txn(struct cache *c)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
    if (rc != 0)
        return rc;
    struct {
        const char *name;
        unsigned flags;
        MDB_dbi *dbi;
    } dbs[] = {
        {"objects", 0, &c->db_objects}, {"chunks", 0, &c->db_chunks},
        {"byid", 0, &c->db_byid},       {"expiry", 0, &c->db_expiry},
        {"access", 0, &c->db_access},   {"tags", MDB_DUPSORT, &c->db_tags},
        {"pending", 0, &c->db_pending}, {"meta", 0, &c->db_meta},
    };
    for (size_t i = 0; i < ARRAY_SIZE(dbs); i++) {
        rc = mdb_dbi_open(txn, dbs[i].name, dbs[i].flags | MDB_CREATE, dbs[i].dbi);
        if (rc != 0) {
            log_msg(LOG_ERR, "cache %s: opening db %s: %s", c->dir, dbs[i].name, mdb_strerror(rc));
            goto fail;
        }
    }

    MDB_val k = {6, "schema"}, v;
    rc = mdb_get(txn, c->db_meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        struct cache_schema_rec s = {CACHE_SCHEMA_MAGIC, CACHE_SCHEMA_VERSION, sizeof(s), {0}};
        v.mv_size = sizeof(s);
        v.mv_data = &s;
        rc = mdb_put(txn, c->db_meta, &k, &v, 0);
        if (rc != 0)
            goto fail;
    } else if (rc != 0) {
        goto fail;
    } else {
        struct cache_schema_rec s;
        if (v.mv_size < sizeof(s)) {
            log_msg(LOG_ERR, "cache %s: meta schema record is %zu bytes: not an Outpost cache",
                    c->dir, v.mv_size);
            rc = OP_ECORRUPT;
            goto fail;
        }
        memcpy(&s, v.mv_data, sizeof(s));
        if (s.magic != CACHE_SCHEMA_MAGIC || s.version != CACHE_SCHEMA_VERSION) {
            log_msg(LOG_ERR,
                    "cache %s: schema version %u (magic %08x) but this build reads version %u; "
                    "refusing to open (move the directory away to start an empty cache)",
                    c->dir, s.version, s.magic, CACHE_SCHEMA_VERSION);
            rc = OP_ECORRUPT;
            goto fail;
        }
    }

    /* Objects whose chunks were being written when the process died: drop their chunks. */
    MDB_cursor *cur;
    rc = mdb_cursor_open(txn, c->db_pending, &cur);
    if (rc != 0)
        goto fail;
    unsigned n_pending = 0;
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
        if (k.mv_size != 8) {
            rc = OP_ECORRUPT;
            break;
        }
        uint64_t id = cache_be64_get(k.mv_data);
        rc = cache_wr_chunks_delete(c, txn, id); /* deletes the pending entry too */
        if (rc != 0)
            break;
        n_pending++;
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND)
        goto fail;
    if (n_pending)
        log_msg(LOG_INFO, "cache %s: discarded %u partially written objects", c->dir, n_pending);

    uint64_t next_id, bytes, objects, seq;
    if ((rc = meta_get_u64(txn, c->db_meta, "access_seq", &seq)) != 0 ||
        (rc = meta_get_u64(txn, c->db_meta, "next_id", &next_id)) != 0 ||
        (rc = meta_get_u64(txn, c->db_meta, "bytes", &bytes)) != 0 ||
        (rc = meta_get_u64(txn, c->db_meta, "objects", &objects)) != 0)
        goto fail;
    /* Ids are never reused, whatever the persisted counter says. */
    next_id = UTIL_MAX(next_id, last_id_of(txn, c->db_byid) + 1);
    next_id = UTIL_MAX(next_id, last_id_of(txn, c->db_chunks) + 1);
    next_id = UTIL_MAX(next_id, 1);
    atomic_store(&c->next_id, next_id);
    /* The access clock never goes back either: at least the newest access entry. */
    uint64_t last_access = last_id_of(txn, c->db_access); /* 0: empty */
    if (last_access != 0 && cache_time_from_be64(last_access) > 0)
        seq = UTIL_MAX(seq, (uint64_t)cache_time_from_be64(last_access));
    c->w_seq = seq;
    atomic_store(&c->seq_now, seq);
    c->w_bytes = bytes;
    c->w_objects = objects;
    atomic_store(&c->st_bytes, bytes);
    atomic_store(&c->st_objects, objects);
    return mdb_txn_commit(txn);
fail:
    mdb_txn_abort(txn);
    return rc;
}

int cache_open(struct cache **out, const struct cache_options *opt)
{
    *out = NULL;
    if (opt == NULL || opt->dir == NULL || opt->max_size == 0)
        return OP_EINVAL;
    if (mkdir(opt->dir, 0700) != 0 && errno != EEXIST)
        return -errno;
    struct cache *c = xcalloc(1, sizeof(*c));
    c->magic = CACHE_MAGIC;
    c->opt = *opt;
    c->dir = xstrdup(opt->dir);
    c->opt.dir = c->dir;
    if (c->opt.high_water_pct == 0 || c->opt.high_water_pct > 100)
        c->opt.high_water_pct = 90;
    if (c->opt.low_water_pct == 0 || c->opt.low_water_pct >= c->opt.high_water_pct)
        c->opt.low_water_pct = c->opt.high_water_pct > 10 ? c->opt.high_water_pct - 10 : 1;
    if (c->opt.batch_ms == 0)
        c->opt.batch_ms = 2;
    if (c->opt.map_size == 0)
        c->opt.map_size = c->opt.max_size * 2 + (UINT64_C(64) << 20);
    c->inbox_max = c->opt.inbox_max ? c->opt.inbox_max : (UINT64_C(64) << 20);
    c->high_bytes = c->opt.max_size / 100 * c->opt.high_water_pct;
    c->low_bytes = c->opt.max_size / 100 * c->opt.low_water_pct;
    c->gen = atomic_fetch_add(&cache_gen_counter, 1) + 1;
    pthread_mutex_init(&c->rlock, NULL);
    pthread_mutex_init(&c->qlock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->qcond, &ca);
    pthread_condattr_destroy(&ca);

    int rc = mdb_env_create(&c->env);
    if (rc != 0)
        goto fail;
    if ((rc = mdb_env_set_maxdbs(c->env, 16)) != 0 ||
        (rc = mdb_env_set_maxreaders(c->env, 1024)) != 0 ||
        (rc = mdb_env_set_mapsize(c->env, (size_t)c->opt.map_size)) != 0)
        goto fail;
    unsigned flags = MDB_NOTLS | (c->opt.nosync ? MDB_NOSYNC : 0);
    rc = mdb_env_open(c->env, c->dir, flags, 0600);
    if (rc != 0) {
        log_msg(LOG_ERR, "cache %s: mdb_env_open: %s", c->dir, mdb_strerror(rc));
        goto fail;
    }
    int dead = 0;
    mdb_reader_check(c->env, &dead); /* readers of killed processes */
    if ((rc = open_txn(c)) != 0)
        goto fail;
    if ((rc = cache_writer_start(c)) != 0)
        goto fail;
    *out = c;
    return 0;
fail:
    if (c->env)
        mdb_env_close(c->env);
    pthread_mutex_destroy(&c->rlock);
    pthread_mutex_destroy(&c->qlock);
    pthread_cond_destroy(&c->qcond);
    free(c->dir);
    free(c);
    return lmdb_err(rc);
}

void cache_close(struct cache **cp)
{
    struct cache *c = *cp;
    if (c == NULL)
        return;
    CACHE_CHECK(c);
    *cp = NULL;
    cache_writer_stop(c);
    /* Only this thread's slots can be cleared; other threads' slots hold a stale gen that
     * no future cache will have, so they are never dereferenced again. */
    for (unsigned i = 0; i < RTXN_SLOTS; i++)
        if (tls_rtxn[i].gen == c->gen)
            tls_rtxn[i].gen = 0;
    struct cache_rtxn *rt = c->rtxns;
    while (rt != NULL) {
        struct cache_rtxn *next = rt->next;
        mdb_cursor_close(rt->cur);
        mdb_txn_abort(rt->txn);
        free(rt);
        rt = next;
    }
    mdb_env_close(c->env);
    pthread_mutex_destroy(&c->rlock);
    pthread_mutex_destroy(&c->qlock);
    pthread_cond_destroy(&c->qcond);
    free(c->dir);
    c->magic = 0;
    free(c);
}

/* ---- lookup ------------------------------------------------------------------------------ */

int cache_lookup(struct cache *c, struct str key, const struct http_headers *req, int64_t now,
                 struct cache_obj **out)
{
    uint8_t kb[CACHE_OBJKEY_LEN];
    CACHE_CHECK(c);
    (void)now; /* the LRU clock is logical (cache_int.h); freshness is the caller's */
    *out = NULL;
    if (key.len == 0 || key.len > CACHE_KEY_MAX)
        return OP_ENOTFOUND;
    cache_keyhash(key, kb);
    memset(kb + CACHE_KEYHASH_LEN, 0, 8);

    struct cache_rtxn *rt;
    MDB_txn *txn;
    MDB_cursor *cur;
    bool fresh;
    int rc = rtxn_begin(c, &rt, &txn, &fresh);
    if (rc != 0) {
        atomic_fetch_add_explicit(&c->st_lookup_errors, 1, memory_order_relaxed);
        return rc;
    }
    rc = rtxn_cursor(c, rt, txn, fresh, &cur);
    if (rc != 0) {
        rtxn_end(rt, txn);
        atomic_fetch_add_explicit(&c->st_lookup_errors, 1, memory_order_relaxed);
        return lmdb_err(rc);
    }
    MDB_val k = {CACHE_OBJKEY_LEN, kb}, v;
    struct cache_rec best;
    bool found = false;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        if (k.mv_size != CACHE_OBJKEY_LEN || memcmp(k.mv_data, kb, CACHE_KEYHASH_LEN) != 0)
            break;
        struct cache_rec r;
        if (cache_rec_parse(v.mv_data, v.mv_size, &r) != 0) {
            atomic_fetch_add_explicit(&c->st_corrupt, 1, memory_order_relaxed);
            log_ratelimited(LOG_ERR, "cache %s: corrupt record skipped in lookup", c->dir);
        } else if (str_eq(r.key, key) && cache_vary_match(&r, req)) {
            /* ids ascend with the key order: the last match is the most recent response */
            best = r;
            found = true;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (rc != 0 && rc != MDB_NOTFOUND) {
        if (rt == NULL)
            mdb_cursor_close(cur);
        rtxn_end(rt, txn);
        atomic_fetch_add_explicit(&c->st_lookup_errors, 1, memory_order_relaxed);
        return lmdb_err(rc);
    }
    struct cache_obj *o = found ? cache_rec_to_obj(&best) : NULL;
    int64_t access = found ? best.h.access_seq : 0;
    uint8_t keyhash[CACHE_KEYHASH_LEN];
    memcpy(keyhash, kb, sizeof(keyhash));
    if (rt == NULL)
        mdb_cursor_close(cur);
    rtxn_end(rt, txn);
    if (o == NULL)
        return OP_ENOTFOUND;
    cache_writer_touch(c, keyhash, o->id, access);
    *out = o;
    return 0;
}

void cache_obj_ref(struct cache_obj *o)
{
    __atomic_add_fetch(&o->_refcnt, 1, __ATOMIC_RELAXED);
}

void cache_obj_unref(struct cache_obj **op)
{
    struct cache_obj *o = *op;
    if (o == NULL)
        return;
    *op = NULL;
    if (__atomic_sub_fetch(&o->_refcnt, 1, __ATOMIC_ACQ_REL) == 0)
        free(o->_mem);
}

int cache_chunk_read(struct cache *c, uint64_t id, uint32_t idx, cache_sink_fn *sink, void *arg)
{
    uint8_t kb[CACHE_CHUNKKEY_LEN];
    CACHE_CHECK(c);
    cache_be64_put(kb, id);
    cache_be32_put(kb + 8, idx);
    struct cache_rtxn *rt;
    MDB_txn *txn;
    bool fresh;
    int rc = rtxn_begin(c, &rt, &txn, &fresh);
    if (rc != 0)
        return rc;
    MDB_val k = {sizeof(kb), kb}, v;
    rc = mdb_get(txn, c->db_chunks, &k, &v);
    if (rc == 0)
        sink(arg, v.mv_data, v.mv_size);
    rtxn_end(rt, txn);
    return rc == MDB_NOTFOUND ? OP_ENOTFOUND : lmdb_err(rc);
}

void cache_stats_get(struct cache *c, struct cache_stats *out)
{
    CACHE_CHECK(c);
    memset(out, 0, sizeof(*out));
    out->objects = atomic_load_explicit(&c->st_objects, memory_order_relaxed);
    out->bytes = atomic_load_explicit(&c->st_bytes, memory_order_relaxed);
    out->max_size = c->opt.max_size;
    out->evictions = atomic_load_explicit(&c->st_evictions, memory_order_relaxed);
    out->expired_evictions = atomic_load_explicit(&c->st_expired_evictions, memory_order_relaxed);
    out->commits = atomic_load_explicit(&c->st_commits, memory_order_relaxed);
    out->write_errors = atomic_load_explicit(&c->st_write_errors, memory_order_relaxed);
    out->queue_len = atomic_load_explicit(&c->st_queue_len, memory_order_relaxed);
    out->refused_appends = atomic_load_explicit(&c->st_refused, memory_order_relaxed);
    out->lookup_errors = atomic_load_explicit(&c->st_lookup_errors, memory_order_relaxed);
    out->corrupt_records = atomic_load_explicit(&c->st_corrupt, memory_order_relaxed);
}

/* ---- consistency check ------------------------------------------------------------------- */

struct check {
    char *err;
    size_t errlen;
    bool bad;
};

static int check_fail(struct check *ck, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int check_fail(struct check *ck, const char *fmt, ...)
{
    if (!ck->bad && ck->err && ck->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ck->err, ck->errlen, fmt, ap);
        va_end(ap);
    }
    ck->bad = true;
    return OP_ECORRUPT;
}

/* Does the index entry (db, k) exist with value `want` (want_len bytes)? */
static bool has_entry(MDB_txn *txn, MDB_dbi dbi, const void *k, size_t klen, const void *want,
                      size_t want_len)
{
    MDB_val kv = {klen, (void *)k}, v;
    if (mdb_get(txn, dbi, &kv, &v) != 0)
        return false;
    return v.mv_size == want_len && memcmp(v.mv_data, want, want_len) == 0;
}

static uint64_t db_entries(MDB_txn *txn, MDB_dbi dbi)
{
    MDB_stat st;
    if (mdb_stat(txn, dbi, &st) != 0)
        return UINT64_MAX;
    return st.ms_entries;
}

/* Look up the record of `id` through byid; fills r (pointers valid in txn). */
static int record_of(struct cache *c, MDB_txn *txn, uint64_t id, struct cache_rec *r,
                     uint8_t keyhash[CACHE_KEYHASH_LEN])
{
    uint8_t ib[8];
    cache_be64_put(ib, id);
    MDB_val k = {8, ib}, v;
    int rc = mdb_get(txn, c->db_byid, &k, &v);
    if (rc != 0)
        return rc;
    if (v.mv_size != CACHE_KEYHASH_LEN)
        return OP_ECORRUPT;
    uint8_t ob[CACHE_OBJKEY_LEN];
    memcpy(ob, v.mv_data, CACHE_KEYHASH_LEN);
    memcpy(ob + CACHE_KEYHASH_LEN, ib, 8);
    if (keyhash)
        memcpy(keyhash, ob, CACHE_KEYHASH_LEN);
    MDB_val ok = {CACHE_OBJKEY_LEN, ob};
    rc = mdb_get(txn, c->db_objects, &ok, &v);
    if (rc != 0)
        return rc;
    return cache_rec_parse(v.mv_data, v.mv_size, r);
}

static int check_objects(struct cache *c, MDB_txn *txn, struct check *ck, uint64_t *bytes,
                         uint64_t *objects, uint64_t *chunks, uint64_t *tags)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, c->db_objects, &cur);
    if (rc != 0)
        return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        struct cache_rec r;
        uint8_t hb[CACHE_KEYHASH_LEN];
        if (k.mv_size != CACHE_OBJKEY_LEN) {
            rc = check_fail(ck, "objects: key of %zu bytes", k.mv_size);
            break;
        }
        const uint8_t *kp = k.mv_data;
        uint64_t id = cache_be64_get(kp + CACHE_KEYHASH_LEN);
        if (cache_rec_parse(v.mv_data, v.mv_size, &r) != 0) {
            rc = check_fail(ck, "objects: record of id %" PRIu64 " does not decode", id);
            break;
        }
        cache_keyhash(r.key, hb);
        if (r.h.id != id || memcmp(hb, kp, CACHE_KEYHASH_LEN) != 0) {
            rc = check_fail(ck, "objects: id %" PRIu64 ": key or id differs from the record", id);
            break;
        }
        uint8_t ib[16];
        cache_be64_put(ib, id);
        if (!has_entry(txn, c->db_byid, ib, 8, kp, CACHE_KEYHASH_LEN)) {
            rc = check_fail(ck, "byid: no entry for id %" PRIu64, id);
            break;
        }
        if (has_entry(txn, c->db_pending, ib, 8, kp, CACHE_KEYHASH_LEN)) {
            rc = check_fail(ck, "pending: committed id %" PRIu64 " still pending", id);
            break;
        }
        cache_be64_put(ib, cache_be64_time(cache_rec_useless_after(&r.h)));
        cache_be64_put(ib + 8, id);
        if (!has_entry(txn, c->db_expiry, ib, 16, kp, CACHE_KEYHASH_LEN)) {
            rc = check_fail(ck, "expiry: no entry for id %" PRIu64, id);
            break;
        }
        cache_be64_put(ib, cache_be64_time(r.h.access_seq));
        if (!has_entry(txn, c->db_access, ib, 16, kp, CACHE_KEYHASH_LEN)) {
            rc = check_fail(ck, "access: no entry for id %" PRIu64, id);
            break;
        }
        for (uint32_t i = 0; i < r.h.n_chunks; i++) {
            uint8_t cb[CACHE_CHUNKKEY_LEN];
            cache_be64_put(cb, id);
            cache_be32_put(cb + 8, i);
            MDB_val ck2 = {sizeof(cb), cb}, cv;
            uint64_t want = i + 1 < r.h.n_chunks ? CACHE_CHUNK_SIZE
                                                 : r.h.body_len - (uint64_t)i * CACHE_CHUNK_SIZE;
            if (mdb_get(txn, c->db_chunks, &ck2, &cv) != 0 || cv.mv_size != want) {
                rc = check_fail(ck,
                                "chunks: id %" PRIu64 " chunk %u missing or not %" PRIu64 " bytes",
                                id, i, want);
                break;
            }
        }
        if (ck->bad)
            break;
        const uint8_t *tp = r.tags;
        for (uint32_t i = 0; i < r.h.n_tags; i++) {
            struct str t;
            uint8_t tk[CACHE_TAG_INLINE_MAX];
            size_t tl;
            cache_rec_str_next(&tp, &t);
            cache_tag_dbkey(t, tk, &tl);
            MDB_val tkv = {tl, tk}, tv = {CACHE_OBJKEY_LEN, (void *)kp};
            MDB_cursor *tc;
            if (mdb_cursor_open(txn, c->db_tags, &tc) != 0 ||
                mdb_cursor_get(tc, &tkv, &tv, MDB_GET_BOTH) != 0) {
                rc = check_fail(ck, "tags: id %" PRIu64 " tag %u not indexed", id, i);
                mdb_cursor_close(tc);
                break;
            }
            mdb_cursor_close(tc);
            (*tags)++;
        }
        if (ck->bad)
            break;
        *bytes += r.len + (r.h.n_chunks ? r.h.body_len : 0);
        *objects += 1;
        *chunks += r.h.n_chunks;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Every entry of an index keyed by time(8)+id(8) -> keyhash points at its record. */
static int check_time_index(struct cache *c, MDB_txn *txn, MDB_dbi dbi, const char *name,
                            bool expiry, struct check *ck)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0)
        return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 16 || v.mv_size != CACHE_KEYHASH_LEN) {
            rc = check_fail(ck, "%s: malformed entry", name);
            break;
        }
        uint64_t id = cache_be64_get((const uint8_t *)k.mv_data + 8);
        int64_t t = cache_time_from_be64(cache_be64_get(k.mv_data));
        struct cache_rec r;
        uint8_t hb[CACHE_KEYHASH_LEN];
        if (record_of(c, txn, id, &r, hb) != 0 || memcmp(hb, v.mv_data, CACHE_KEYHASH_LEN)) {
            rc = check_fail(ck, "%s: entry for id %" PRIu64 " has no record", name, id);
            break;
        }
        int64_t want = expiry ? cache_rec_useless_after(&r.h) : r.h.access_seq;
        if (t != want) {
            rc = check_fail(ck, "%s: stale entry for id %" PRIu64, name, id);
            break;
        }
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int check_chunks(struct cache *c, MDB_txn *txn, struct check *ck, uint64_t *recorded)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, c->db_chunks, &cur);
    if (rc != 0)
        return rc;
    uint64_t last_id = 0;
    bool last_pending = false;
    struct cache_rec r;
    bool have_rec = false;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != CACHE_CHUNKKEY_LEN) {
            rc = check_fail(ck, "chunks: malformed key");
            break;
        }
        uint64_t id = cache_be64_get(k.mv_data);
        uint32_t idx = cache_be32_get((const uint8_t *)k.mv_data + 8);
        if (id != last_id || (!have_rec && !last_pending)) {
            last_id = id;
            have_rec = record_of(c, txn, id, &r, NULL) == 0;
            uint8_t ib[8];
            cache_be64_put(ib, id);
            MDB_val pk = {8, ib}, pv;
            last_pending = mdb_get(txn, c->db_pending, &pk, &pv) == 0;
        }
        if (have_rec) {
            if (idx >= r.h.n_chunks) {
                rc = check_fail(ck, "chunks: id %" PRIu64 " has extra chunk %u", id, idx);
                break;
            }
            (*recorded)++;
        } else if (!last_pending) {
            rc = check_fail(ck, "chunks: orphan chunk %u of id %" PRIu64, idx, id);
            break;
        }
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

static int check_tags(struct cache *c, MDB_txn *txn, struct check *ck, uint64_t *n)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, c->db_tags, &cur);
    if (rc != 0)
        return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (v.mv_size != CACHE_OBJKEY_LEN) {
            rc = check_fail(ck, "tags: malformed value");
            break;
        }
        MDB_val ok = v, ov;
        if (mdb_get(txn, c->db_objects, &ok, &ov) != 0) {
            rc = check_fail(ck, "tags: entry points to a missing record");
            break;
        }
        (*n)++;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int cache_check(struct cache *c, char *err, size_t errlen)
{
    struct check ck = {err, errlen, false};
    MDB_txn *txn;
    CACHE_CHECK(c);
    if (err && errlen)
        err[0] = '\0';
    int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) {
        if (err && errlen)
            snprintf(err, errlen, "mdb_txn_begin: %s", mdb_strerror(rc));
        return lmdb_err(rc);
    }
    uint64_t bytes = 0, objects = 0, chunks = 0, tags = 0, recorded_chunks = 0, ntags = 0;
    uint64_t m_bytes, m_objects, m_next_id;
    rc = check_objects(c, txn, &ck, &bytes, &objects, &chunks, &tags);
    if (rc == 0)
        rc = check_chunks(c, txn, &ck, &recorded_chunks);
    if (rc == 0)
        rc = check_time_index(c, txn, c->db_expiry, "expiry", true, &ck);
    if (rc == 0)
        rc = check_time_index(c, txn, c->db_access, "access", false, &ck);
    if (rc == 0)
        rc = check_tags(c, txn, &ck, &ntags);
    if (rc == 0 && (rc = meta_get_u64(txn, c->db_meta, "bytes", &m_bytes)) == 0 &&
        (rc = meta_get_u64(txn, c->db_meta, "objects", &m_objects)) == 0) {
        if (recorded_chunks != chunks)
            rc = check_fail(&ck, "chunks: %" PRIu64 " stored for records, %" PRIu64 " expected",
                            recorded_chunks, chunks);
        else if (db_entries(txn, c->db_byid) != objects ||
                 db_entries(txn, c->db_expiry) != objects ||
                 db_entries(txn, c->db_access) != objects)
            rc = check_fail(
                &ck, "indices: byid/expiry/access counts differ from %" PRIu64 " objects", objects);
        else if (ntags != tags)
            rc = check_fail(&ck, "tags: %" PRIu64 " entries, %" PRIu64 " expected", ntags, tags);
        else if ((rc = meta_get_u64(txn, c->db_meta, "next_id", &m_next_id)) != 0)
            ;
        else if (UTIL_MAX(last_id_of(txn, c->db_byid), last_id_of(txn, c->db_chunks)) >=
                 UTIL_MAX(m_next_id, 1)) /* ids start at 1; 0 = empty */
            rc = check_fail(&ck, "meta: next_id %" PRIu64 " is not above every stored id",
                            m_next_id);
        else if (m_bytes != bytes || m_objects != objects)
            rc = check_fail(&ck,
                            "accounting: meta says %" PRIu64 " bytes %" PRIu64
                            " objects, counted %" PRIu64 " bytes %" PRIu64 " objects",
                            m_bytes, m_objects, bytes, objects);
    }
    mdb_txn_abort(txn);
    rc = lmdb_err(rc);
    if (rc != 0 && !ck.bad && err && errlen)
        snprintf(err, errlen, "%s", op_strerror(rc));
    return rc;
}
