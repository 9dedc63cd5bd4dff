/*
 * cache/cache.h: the disk-backed object cache, one LMDB environment per node.
 *
 * Threads: every function may be called from any worker thread unless it says otherwise.
 * Reads run in short read transactions on the caller's thread (never held across a socket
 * write). Every change goes through one writer thread that owns the only write transaction
 * and batches many operations per commit, so workers never block on disk.
 *
 * Objects: a cache key (a string the edge builds: method-neutral "authority path?query")
 * names a URL; each URL may have several variants (Vary). A variant is one stored response:
 * an immutable record (status, headers, freshness metadata, Vary'd request values, surrogate
 * keys) and a body, inline in the record when small, else in fixed-size chunks. A record is
 * written only after all its chunks, in the same or a later commit, so a reader never sees a
 * partial object; kill -9 at any point leaves either the old or the new variant.
 *
 * Durability: by default every commit is synced (survives kill -9 and power loss per LMDB);
 * `nosync` trades power-loss durability for speed but still survives kill -9.
 */
#ifndef OUTPOST_CACHE_H
#define OUTPOST_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/cache_policy.h"
#include "http/http.h"
#include "lib/str.h"

/* Bodies up to this size are stored inline in the object record; larger ones in chunks. */
#define CACHE_INLINE_MAX (16 * 1024)
/* Size of every body chunk but the last. */
#define CACHE_CHUNK_SIZE (64 * 1024)
/* Longest cache key accepted; longer keys are not cached (the edge bypasses). */
#define CACHE_KEY_MAX 8192

struct cache;
struct cache_put;

struct cache_options {
    const char *dir; /* created if missing */
    uint64_t max_size; /* disk cap for stored objects, bytes */
    uint64_t map_size; /* LMDB map size; 0 = max_size * 2 + 64 MiB */
    uint64_t max_object_size; /* larger bodies are refused by cache_put_* */
    unsigned high_water_pct; /* eviction starts above this share of max_size (90) */
    unsigned low_water_pct; /* and stops below this share (80) */
    bool nosync; /* MDB_NOSYNC: opt-in, see above */
    unsigned batch_ms; /* writer: longest wait to gather a batch (default 2) */
    uint64_t inbox_max; /* writer inbox bound in bytes of queued body data; past it
                           cache_put_append() refuses with OP_EFULL (0 = 64 MiB) */
};

/* Open (creating if needed) the cache in opt->dir and start its writer thread. Discards the
 * chunks of objects that were being written when the process last died. Zero options get the
 * defaults shown above. Errors: OP_EINVAL (no dir, max_size 0), -errno, LMDB codes,
 * OP_ECORRUPT (schema version mismatch, logged). Disk layout: cache/cache_int.h. */
int cache_open(struct cache **out, const struct cache_options *opt);
/* Drain the writer queue, commit, stop the writer and close. Clears *c. Every cache_put must
 * have been ended or aborted, and no other thread may be inside a cache_* call on this cache.
 * Frees the per-thread read transactions that any thread created for it. */
void cache_close(struct cache **c);

/* One (Vary'd request header name, normalised request value) pair of a variant. */
struct cache_vary {
    struct str name; /* lower-case header name */
    struct str value; /* combined, whitespace-normalised request value; empty if absent */
};

/* A stored variant, copied out of LMDB: independent of any transaction. Refcounted; one
 * allocation holds the struct and every string, array and the inline body. Read-only: in
 * particular never http_headers_add()/_set()/_fini() on `headers` (its array is inside that
 * allocation); copy it into a list of your own to modify it. */
struct cache_obj {
    uint64_t id; /* unique per stored variant, never reused */
    struct str key;
    int status;
    struct http_headers headers; /* stored response headers */
    struct cache_meta meta;
    uint64_t body_len;
    uint32_t n_chunks; /* 0 when the body is inline */
    struct str body; /* the inline body (n_chunks == 0) */
    struct cache_vary *vary;
    size_t n_vary;
    struct str *tags; /* surrogate keys */
    size_t n_tags;
    /* private */
    int _refcnt;
    char *_mem;
};

/*
 * Find the variant of `key` that matches request headers `req` (every Vary'd header's
 * normalised value equal; with several matches, the most recent response). On success *out
 * holds a new reference. Also records the access for approximate LRU (asynchronously: a
 * TOUCH is queued only when the variant has fallen more than objects/4 stores behind on the
 * LRU clock, so hits alone never cause writes; see cache/cache_int.h). `now` is not needed
 * for that and is kept for the freshness-aware callers. Returns 0, OP_ENOTFOUND, or an LMDB
 * error (counted; treated as a miss by the caller). A record that fails to decode is skipped
 * and counted. Cost: one short read txn (renewed per-thread, no malloc but the copy-out and,
 * rarely, a queued TOUCH); no locks but the inbox's when a TOUCH is queued.
 */
int cache_lookup(struct cache *c, struct str key, const struct http_headers *req, int64_t now,
                 struct cache_obj **out);
void cache_obj_ref(struct cache_obj *o);
void cache_obj_unref(struct cache_obj **o);

/*
 * Stream chunk `idx` of object `id` to `sink` (called once, with a pointer valid only during
 * the call). Returns 0, OP_ENOTFOUND (evicted or replaced meanwhile) or an LMDB error.
 */
typedef void cache_sink_fn(void *arg, const void *data, size_t len);
int cache_chunk_read(struct cache *c, uint64_t id, uint32_t idx, cache_sink_fn *sink, void *arg);

/* What the edge knows about a response it is about to store. Strings are copied by
 * cache_put_begin(). */
struct cache_put_info {
    struct str key;
    int status;
    const struct http_headers *headers; /* response headers to store (hop-by-hop removed) */
    const struct cache_meta *meta;
    const struct cache_vary *vary; /* from the response's Vary and the request */
    size_t n_vary;
    const struct str *tags; /* surrogate keys */
    size_t n_tags;
    int64_t content_length; /* -1 if unknown */
    int64_t now;
};

/*
 * Start storing a variant. Returns 0 and a handle owned by the caller's thread, or
 * OP_ETOOBIG (content_length over max_object_size), OP_EINVAL (key too long).
 * The new variant replaces, on commit, any stored variant of the same key with the same Vary
 * values.
 */
int cache_put_begin(struct cache *c, const struct cache_put_info *info, struct cache_put **out);
/* Append body bytes; full chunks go to the writer at once. OP_ETOOBIG once the body passes
 * max_object_size; OP_EFULL when the writer inbox is over cache_options.inbox_max (never
 * blocks; counted in refused_appends). After either the put is dead: every later call returns
 * the same error; call cache_put_abort (or cache_put_end, which then aborts). */
int cache_put_append(struct cache_put *p, const void *data, size_t len);
/* All body bytes are in: hand the record to the writer. Clears *p. `done`, if not NULL, is
 * called on the writer thread after the commit (ok = 0 or an error: the batch could not be
 * committed, e.g. MDB_MAP_FULL even after eviction; nothing of the put remains then).
 * Returns 0 when queued; or, with the put aborted and `done` never called: the error that
 * killed it (OP_ETOOBIG, OP_EFULL), or OP_EINVAL when content_length was given and the body
 * length differs (a truncated response is never stored). */
typedef void cache_done_fn(void *arg, int err);
int cache_put_end(struct cache_put **p, cache_done_fn *done, void *arg);
/* Give up (origin failed, too big): already written chunks are deleted. Clears *p. */
void cache_put_abort(struct cache_put **p);
/* The id the variant will have. */
uint64_t cache_put_id(const struct cache_put *p);
/* Chunks [0, n) of this put are committed and readable with cache_chunk_read(). Any thread. */
uint32_t cache_put_committed(const struct cache_put *p);
/* Called on the writer thread after each commit that advanced this put (to wake a reader or
 * release memory), with err 0; or once with an error when a batch holding its chunks failed
 * (the put is then dead and its cache_put_end() will report done(err)). Set before the first
 * append. The callback must not block nor call cache_sync(). */
void cache_put_set_notify(struct cache_put *p, cache_done_fn *fn, void *arg);

/*
 * Replace the headers and metadata of a stored variant (after a 304 revalidation), keeping
 * its body, id and place in the LRU order; the expiry index follows the new metadata.
 * Asynchronous and unreported: if the variant is gone meanwhile (replaced, evicted,
 * invalidated) the update is dropped at commit. `headers` are copied before returning.
 */
int cache_update(struct cache *c, uint64_t id, const struct http_headers *headers,
                 const struct cache_meta *meta, int64_t now);

/* Invalidate every variant of `key`: hard removes, soft marks CACHE_F_STALE. Asynchronous;
 * `done` may be NULL; it gets 0 if at least one variant was invalidated, OP_ENOTFOUND if the
 * key had none (idempotent either way), or an LMDB error. Returns OP_EINVAL for an empty or
 * over-long key, else 0. */
int cache_invalidate(struct cache *c, struct str key, bool soft, cache_done_fn *done, void *arg);

/* Invalidate every variant stored with surrogate key `tag` (cache_put_info.tags), whatever its
 * URL: hard removes, soft marks CACHE_F_STALE. Same results as cache_invalidate(). */
int cache_invalidate_tag(struct cache *c, struct str tag, bool soft, cache_done_fn *done,
                         void *arg);

/* Call `done` on the writer thread once every operation queued so far is committed; the batch
 * holding it commits without waiting for batch_ms. Never blocks. Returns 0. */
int cache_barrier(struct cache *c, cache_done_fn *done, void *arg);
/* Block until every operation queued so far is committed (tests, shutdown). Never from a
 * done/notify callback (that is the writer thread: it would wait for itself). */
void cache_sync(struct cache *c);

struct cache_stats {
    uint64_t objects; /* stored variants */
    uint64_t bytes; /* body + record bytes accounted against max_size */
    uint64_t max_size;
    uint64_t evictions; /* variants evicted for space */
    uint64_t expired_evictions; /* of which were past their useless-after time (the store
                                   computes cache_policy_useless_after()'s formula itself) */
    uint64_t commits;
    uint64_t write_errors; /* MDB_MAP_FULL, disk errors ... */
    uint64_t queue_len; /* operations waiting for the writer */
    uint64_t refused_appends; /* cache_put_append() refused with OP_EFULL (inbox full) */
    uint64_t lookup_errors; /* LMDB errors in cache_lookup() */
    uint64_t corrupt_records; /* records that failed to decode (skipped, never served) */
};
void cache_stats_get(struct cache *c, struct cache_stats *out);

/* Walk the whole environment and check its invariants (every record decodes and is filed
 * under its key's hash, its chunks present and of the right size, no chunk without a record
 * or pending entry, every index entry pointing at its record and back, accounting and the id
 * counter match). 0 if consistent, OP_ECORRUPT with a message in err[] (may be NULL)
 * otherwise, or an LMDB error. Safe while running (one read txn: a consistent snapshot), but
 * a full scan: for tests, startup checks and the admin API, not the request path. */
int cache_check(struct cache *c, char *err, size_t errlen);

/* Normalise a request header value for Vary matching: combine all lines of `name` with ", ",
 * collapse runs of whitespace, trim. Result in `out` (caller's buffer; truncated to cap, not
 * NUL-terminated); returns the length written, at most cap. An absent header gives 0.
 * Pure; any thread. */
size_t cache_vary_normalise(const struct http_headers *req, const char *name, char *out,
                            size_t cap);

#endif
