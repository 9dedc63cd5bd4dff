/*
 * cache/cache_int.h: internals shared by cache/store.c, cache/writer.c, cache/record.c and
 * cache/vary.c. No other module includes this file (STYLE.md rule 1).
 *
 * ON-DISK LAYOUT (one LMDB environment in cache_options.dir, schema CACHE_SCHEMA_VERSION).
 * Integers in LMDB keys are big-endian so that LMDB's memcmp order is numeric order; signed
 * times in keys are stored with the sign bit flipped (cache_be64_time) for the same reason.
 *
 *   objects  keyhash(16) id(8)            -> record (format below)
 *   chunks   id(8) idx(4)                  -> body bytes: CACHE_CHUNK_SIZE each but the last
 *   byid     id(8)                         -> keyhash(16)       (cache_update, TOUCH, check)
 *   expiry   useless_after(8) id(8)        -> keyhash(16)       (eviction by TTL)
 *   access   access_seq(8) id(8)          -> keyhash(16)       (approximate LRU)
 *   tags     tag (<= 480 bytes, else 0xff + SHA-256(tag)) -> keyhash(16) id(8)   (DUPSORT)
 *   pending  id(8)                         -> keyhash(16)       (chunks being written)
 *   meta     "schema" -> struct cache_schema_rec (magic, version, length, reserved)
 *            "next_id" / "bytes" / "objects" -> u64, little-endian
 *
 * keyhash = the first 16 bytes of SHA-256(cache key string). Collisions are harmless: every
 * record carries its full key, which lookup compares.
 *
 * Every index entry exists exactly when its record exists: the writer adds and deletes them
 * together in one transaction, and cache_check() verifies it. The access index is keyed by
 * the access_seq stored in the record, so the writer can always find the old entry to delete
 * when a TOUCH moves it.
 *
 * APPROXIMATE LRU. The access clock is logical, not wall time: meta "access_seq" counts
 * committed stores. A new variant gets the next value; a TOUCH moves a variant to the current
 * value (without advancing it). cache_lookup() queues a TOUCH only when the variant has fallen
 * more than max(objects / 4, 1) stores behind, so a variant read at least that often stays in
 * the newest quarter and is never among the evicted oldest, while TOUCH traffic is bounded by
 * the store rate (at most 4 per store in total), not by the read rate: a cache that only
 * serves hits writes nothing. Ties (equal access_seq) go by id. A wall-clock rule ("once per
 * 60 s") cannot order variants stored within the same minute, which is exactly when a small
 * cache evicts.
 *
 * RECORD FORMAT (version 1). All integers little-endian; the host must be little-endian
 * (static_assert below), so the fixed header is copied with memcpy.
 *
 *   off size field
 *     0   4  magic            CACHE_REC_MAGIC ("OPCR")
 *     4   2  version          CACHE_REC_VERSION (1)
 *     6   2  hdr_len          144: size of this fixed header
 *     8   4  total_len        whole record, header included; must equal the LMDB value size
 *    12   4  reserved0        written 0, ignored
 *    16   8  id               the variant id (also in the LMDB key)
 *    24   8  body_len
 *    32   8  access_seq      logical last access (see APPROXIMATE LRU), key of its `access`
 *    40   4  status           100..999
 *    44   4  n_chunks         0: inline body; else ceil(body_len / CACHE_CHUNK_SIZE)
 *    48  56  meta             request_time, response_time, corrected_initial_age,
 *                             freshness_lifetime, stale_while_revalidate, stale_if_error,
 *                             last_modified: 7 x int64
 *   104   4  meta_flags       CACHE_F_*
 *   108   4  key_len          1..CACHE_KEY_MAX
 *   112   4  n_headers        \ count and byte length of the headers section
 *   116   4  headers_len      /
 *   120   4  n_vary           \ vary section
 *   124   4  vary_len         /
 *   128   4  n_tags           \ tags section
 *   132   4  tags_len         /
 *   136   4  inline_len       body_len when n_chunks == 0 (<= CACHE_INLINE_MAX), else 0
 *   140   4  reserved1        written 0, ignored
 *   144      key bytes, then the headers, vary, tags sections, then the inline body.
 *
 * A pair (header or vary) is u32 name_len, u32 value_len, name bytes, value bytes; a tag is
 * u32 len, bytes. A section must hold exactly its count of items in exactly its length.
 * total_len == 144 + key_len + headers_len + vary_len + tags_len + inline_len.
 *
 * Threads: the functions declared here are pure unless stated.
 */
#ifndef OUTPOST_CACHE_INT_H
#define OUTPOST_CACHE_INT_H

#include <assert.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/cache.h"
#include "lib/buf.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "records are memcpy'd little-endian");

#define CACHE_REC_MAGIC 0x5243504fu /* "OPCR" as little-endian bytes */
#define CACHE_REC_VERSION 1
#define CACHE_SCHEMA_MAGIC 0x4d43504fu /* "OPCM" */
#define CACHE_SCHEMA_VERSION 1
#define CACHE_KEYHASH_LEN 16
#define CACHE_OBJKEY_LEN (CACHE_KEYHASH_LEN + 8)
#define CACHE_CHUNKKEY_LEN 12
#define CACHE_TAG_INLINE_MAX 480
/* Magics of the structs that cross threads (STYLE.md rule 16), checked on every entry. */
#define CACHE_MAGIC 0x43414348u /* struct cache */
#define CACHE_PUT_MAGIC 0x43505554u /* struct cache_put */
#define CACHE_CHECK(c) ASSERT((c) != NULL && (c)->magic == CACHE_MAGIC)

struct cache_rec_hdr {
    uint32_t magic;
    uint16_t version;
    uint16_t hdr_len;
    uint32_t total_len;
    uint32_t reserved0;
    uint64_t id;
    uint64_t body_len;
    int64_t access_seq;
    int32_t status;
    uint32_t n_chunks;
    int64_t request_time;
    int64_t response_time;
    int64_t corrected_initial_age;
    int64_t freshness_lifetime;
    int64_t stale_while_revalidate;
    int64_t stale_if_error;
    int64_t last_modified;
    uint32_t meta_flags;
    uint32_t key_len;
    uint32_t n_headers;
    uint32_t headers_len;
    uint32_t n_vary;
    uint32_t vary_len;
    uint32_t n_tags;
    uint32_t tags_len;
    uint32_t inline_len;
    uint32_t reserved1;
};
static_assert(offsetof(struct cache_rec_hdr, version) == 4, "layout");
static_assert(offsetof(struct cache_rec_hdr, total_len) == 8, "layout");
static_assert(offsetof(struct cache_rec_hdr, id) == 16, "layout");
static_assert(offsetof(struct cache_rec_hdr, body_len) == 24, "layout");
static_assert(offsetof(struct cache_rec_hdr, access_seq) == 32, "layout");
static_assert(offsetof(struct cache_rec_hdr, status) == 40, "layout");
static_assert(offsetof(struct cache_rec_hdr, n_chunks) == 44, "layout");
static_assert(offsetof(struct cache_rec_hdr, request_time) == 48, "layout");
static_assert(offsetof(struct cache_rec_hdr, last_modified) == 96, "layout");
static_assert(offsetof(struct cache_rec_hdr, meta_flags) == 104, "layout");
static_assert(offsetof(struct cache_rec_hdr, key_len) == 108, "layout");
static_assert(offsetof(struct cache_rec_hdr, n_headers) == 112, "layout");
static_assert(offsetof(struct cache_rec_hdr, n_vary) == 120, "layout");
static_assert(offsetof(struct cache_rec_hdr, n_tags) == 128, "layout");
static_assert(offsetof(struct cache_rec_hdr, inline_len) == 136, "layout");
static_assert(offsetof(struct cache_rec_hdr, reserved1) == 140, "layout");
static_assert(sizeof(struct cache_rec_hdr) == 144, "layout");
#define CACHE_REC_HDR_LEN 144u

/* The value of meta "schema". */
struct cache_schema_rec {
    uint32_t magic;
    uint16_t version;
    uint16_t length; /* sizeof(struct cache_schema_rec) */
    uint32_t reserved[2];
};
static_assert(offsetof(struct cache_schema_rec, version) == 4, "layout");
static_assert(offsetof(struct cache_schema_rec, length) == 6, "layout");
static_assert(sizeof(struct cache_schema_rec) == 16, "layout");

/* A validated view of an encoded record. Pointers point into the parsed buffer (for LMDB
 * data: valid only inside the read transaction). */
struct cache_rec {
    struct cache_rec_hdr h; /* copied out: LMDB values are not 8-byte aligned */
    const uint8_t *base;
    size_t len;
    struct str key;
    const uint8_t *headers; /* section starts; iterate with cache_rec_pair_next() */
    const uint8_t *vary;
    const uint8_t *tags;
    struct str body; /* the inline body */
};

/* ---- record.c ---------------------------------------------------------------------------- */

/* Validate everything (magic, version, lengths, counts, body/chunk consistency) and fill *r.
 * Pure, no allocation. 0 or OP_ECORRUPT. */
int cache_rec_parse(const void *buf, size_t len, struct cache_rec *r);
/* Copy a validated record into one allocation (obj->_mem); refcount 1. */
struct cache_obj *cache_rec_to_obj(const struct cache_rec *r);
/* Iterate a validated section: *p advances past one pair / one string. */
void cache_rec_pair_next(const uint8_t **p, struct str *name, struct str *value);
void cache_rec_str_next(const uint8_t **p, struct str *s);
/* Append one pair / one string to a section being built. */
void cache_rec_sec_pair(struct buf *b, struct str name, struct str value);
void cache_rec_sec_str(struct buf *b, struct str s);
/* Append a whole headers list as a section; returns the count. */
uint32_t cache_rec_sec_headers(struct buf *b, const struct http_headers *h);
/*
 * Build a record into `out` (appended): the fixed fields come from *h (its magic, version,
 * lengths and counts are overwritten), then the given sections. Sections must have been
 * built with cache_rec_sec_*; their counts are passed alongside. Section lengths must fit
 * in 32 bits (the caller enforces the limits).
 */
void cache_rec_build(struct buf *out, const struct cache_rec_hdr *h, struct str key,
                     struct str headers, uint32_t n_headers, struct str vary, uint32_t n_vary,
                     struct str tags, uint32_t n_tags, struct str body);
/* Rebuild an existing validated record with some fields replaced (NULL = keep). */
void cache_rec_rebuild(struct buf *out, const struct cache_rec *r, const struct cache_rec_hdr *h,
                       const struct str *headers, const uint32_t *n_headers);
/* The fixed header of a record from a put/obj (fields other than the lengths). */
void cache_rec_hdr_from_meta(struct cache_rec_hdr *h, uint64_t id, int status,
                             const struct cache_meta *m, uint64_t body_len, int64_t access_seq);
void cache_rec_meta_get(const struct cache_rec_hdr *h, struct cache_meta *m);
/* Expiry time used by the eviction order: expiry + the larger stale window. Equivalent to
 * cache_policy_useless_after(), computed here so the store does not depend on policy.c. */
int64_t cache_rec_useless_after(const struct cache_rec_hdr *h);

/* ---- vary.c ------------------------------------------------------------------------------ */

/* True if every vary pair stored in the validated record matches request `req`. */
bool cache_vary_match(const struct cache_rec *r, const struct http_headers *req);
/* True if two validated records have the same Vary pairs (same names and values, in order). */
bool cache_vary_same(const struct cache_rec *a, const struct cache_rec *b);

/* ---- keys and helpers (store.c) ---------------------------------------------------------- */

void cache_keyhash(struct str key, uint8_t out[CACHE_KEYHASH_LEN]);
/* The `tags` db key of a tag: the tag itself, or 0xff + SHA-256 for long tags. *len set. */
void cache_tag_dbkey(struct str tag, uint8_t out[CACHE_TAG_INLINE_MAX], size_t *len);

static inline void cache_be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}
static inline uint64_t cache_be64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}
static inline void cache_be32_put(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline uint32_t cache_be32_get(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
/* Signed time -> order-preserving unsigned. */
static inline uint64_t cache_be64_time(int64_t t)
{
    return (uint64_t)t ^ (UINT64_C(1) << 63);
}
static inline int64_t cache_time_from_be64(uint64_t v)
{
    return (int64_t)(v ^ (UINT64_C(1) << 63));
}

/* ---- the store (struct cache) ------------------------------------------------------------ */

struct cache_wop; /* writer.c */
struct cache_rtxn;

struct cache {
    uint32_t magic; /* CACHE_MAGIC; cleared by cache_close() */
    /* immutable after cache_open() */
    struct cache_options opt;
    char *dir;
    MDB_env *env;
    MDB_dbi db_objects;
    MDB_dbi db_chunks;
    MDB_dbi db_byid;
    MDB_dbi db_expiry;
    MDB_dbi db_access;
    MDB_dbi db_tags;
    MDB_dbi db_pending;
    MDB_dbi db_meta;
    uint64_t gen; /* distinguishes this open from earlier ones in thread-local caches */
    uint64_t inbox_max;
    uint64_t high_bytes;
    uint64_t low_bytes;

    /* shared: atomics */
    _Atomic uint64_t next_id;
    _Atomic uint64_t st_objects;
    _Atomic uint64_t st_bytes;
    _Atomic uint64_t st_evictions;
    _Atomic uint64_t st_expired_evictions;
    _Atomic uint64_t st_commits;
    _Atomic uint64_t st_write_errors;
    _Atomic uint64_t st_queue_len;
    _Atomic uint64_t st_refused;
    _Atomic uint64_t st_lookup_errors;
    _Atomic uint64_t st_corrupt;
    _Atomic uint64_t inbox_bytes;
    _Atomic uint64_t seq_now; /* the access clock as of the last commit */
    /* approximate: which ids had a TOUCH queued recently, at which seq (lossy; races only
     * cost or save one TOUCH) */
    _Atomic uint64_t touch_id[1024];
    _Atomic uint64_t touch_seq[1024];

    /* shared: lock rlock. Every per-thread read txn created for this cache, freed at close. */
    pthread_mutex_t rlock;
    struct cache_rtxn *rtxns;
    unsigned n_rtxns;

    /* shared: lock qlock. The writer inbox. */
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    struct cache_wop *q_head;
    struct cache_wop *q_tail;
    unsigned q_n;
    unsigned q_syncs; /* SYNCs queued: do not wait for batch_ms */
    bool stopping;

    /* owned by the writer thread */
    pthread_t writer;
    int64_t w_now; /* the latest `now` seen in operations */
    uint64_t w_seq; /* the access clock: committed stores */
    uint64_t w_bytes;
    uint64_t w_objects;
};

/* writer.c */
int cache_writer_start(struct cache *c);
void cache_writer_stop(struct cache *c);
/* Lookup path: queue a TOUCH for object (keyhash, id) whose access_seq is `seq` if it has
 * fallen behind (see APPROXIMATE LRU); lossy dedupe first. */
void cache_writer_touch(struct cache *c, const uint8_t keyhash[CACHE_KEYHASH_LEN], uint64_t id,
                        int64_t seq);
/* Delete every chunk of `id` and its pending entry. 0 or an LMDB error. */
int cache_wr_chunks_delete(struct cache *c, MDB_txn *txn, uint64_t id);

#endif
