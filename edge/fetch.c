/*
 * edge/fetch.c: in-flight upstream fetches. Request collapsing, streaming to many readers, and
 * storing into the cache while streaming.
 *
 * A fetch is started by one exchange (the initiator) on its worker, which becomes the owner:
 * the owner thread drives the upstream connection and the cache put. Cacheable-looking
 * requests register the fetch in the node-wide table under the cache key. Later requests for
 * the same key join it as readers (X-Cache: COLLAPSED), on any worker, and stream the body as
 * it arrives. If the response turns out not to be shareable (private, no-store, Set-Cookie
 * ...), the joiners are released at once to send their own requests, and the key is marked
 * "no collapse" for a while (Varnish's hit-for-miss), so uncacheable URLs never serialise.
 *
 * Body memory: the body is kept in CACHE_CHUNK_SIZE chunks. While the response is stored, a
 * chunk is released as soon as the cache writer has committed it; a reader that falls behind
 * reads committed chunks from LMDB instead. While not stored, a chunk is released once every
 * reader has consumed it. Reading from the origin pauses while more than FETCH_MEM_MAX bytes
 * are held, so neither a slow client nor a slow disk makes the node buffer a large object.
 *
 * Threads and ownership: the fields under "owner" belong to the owner worker. The fields
 * under "shared" are protected by `lock`; readers on other workers take it to copy data out.
 * References: the owner holds one until it has nothing left to do, each reader one, the
 * table none (entries are removed under both locks before the last reference can go), the
 * pending cache commit one. The last unref frees the memory, on whichever thread it runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "edge/edge_int.h"
#include "lib/log.h"
#include "lib/util.h"

#define FETCH_MEM_MAX (16u * 1024 * 1024)
#define NOCOLLAPSE_TTL 30
#define REQ_BODY_MAX (1024 * 1024)

struct fetch {
    /* immutable after fetch_start */
    struct edge *e;
    struct worker *owner;
    struct str key; /* in `arena`; empty for a private fetch */
    bool keyed;
    bool private_; /* never shared nor stored */
    const struct conf_site *site;
    struct arena arena;
    struct str method; /* as sent upstream */
    struct str authority;
    struct str scheme; /* of the request: "http" or "https" (static) */
    struct str path;
    struct http_headers req; /* the initiator's request headers (copies in `arena`) */
    char client_addr[64];
    struct cache_obj *validate;
    bool invalidate;
    bool req_has_body;
    int64_t req_content_length;

    /* owner */
    struct upstream *u;
    struct cache_put *put;
    struct event *poll_ev; /* while paused: checks commits / reader progress */
    struct exchange *body_src;
    struct evbuffer *req_body_pending;
    bool req_eof;
    /* route: the site's shield groups in order, then (fallback on, or no shields) its origin
     * pool; `tier` indexes it. `tried` are the servers of the tier already tried. */
    struct str route_key; /* what hashing groups hash: the cache key, else authority+path */
    int tier;
    size_t group; /* e->groups index of the current attempt */
    int server;
    int tried[8];
    size_t n_tried;
    unsigned retries;
    int64_t request_time;
    int64_t t_sent_us;
    bool owner_done;
    bool registered; /* in the table: under e->fetch_lock */
    struct fetch *tab_next; /* under e->fetch_lock */
    uint64_t hash;

    /* shared: lock */
    pthread_mutex_t lock;
    int refcnt;
    enum fetch_state state;
    struct fetch_head head;
    char **chunks;
    uint32_t n_chunks;
    uint32_t cap_chunks;
    uint32_t mem_first;
    size_t mem_bytes;
    uint64_t body_len;
    uint64_t put_id;
    bool storing;
    bool store_lost; /* a put was aborted after chunks were released */
    bool paused;
    struct fetch_reader *readers;
    /* An unsafe method's answer is held back from readers until its invalidations are
     * committed, so that the client's next GET cannot be served the old copy. */
    int inval_pending;
    enum fetch_state held_state;
    bool committed; /* the stored object is visible to cache_lookup() */
    bool update_pending; /* a 304's refresh is queued: stay joinable until it commits */
};

static void fetch_unref(struct fetch *f);
static void owner_release(struct fetch *f);
static void put_done_cb(void *arg, int err);

/* ---- the table ---------------------------------------------------------------------------- */

static uint64_t key_hash(struct str k)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < k.len; i++) {
        h ^= (unsigned char)k.p[i];
        h *= 1099511628211ull;
    }
    return h;
}

struct nocollapse {
    uint64_t hash[1024];
    int64_t until[1024];
};

void fetch_table_init(struct edge *e)
{
    pthread_mutex_init(&e->fetch_lock, NULL);
    e->fetch_tab_size = 4096;
    e->fetch_tab = xcalloc(e->fetch_tab_size, sizeof(*e->fetch_tab));
    e->nocollapse = xcalloc(1, sizeof(*e->nocollapse));
}

void fetch_table_fini(struct edge *e)
{
    free(e->fetch_tab);
    free(e->nocollapse);
    pthread_mutex_destroy(&e->fetch_lock);
}

void fetch_nocollapse_mark(struct edge *e, struct str key, int64_t until)
{
    uint64_t h = key_hash(key);
    size_t i = h % ARRAY_SIZE(e->nocollapse->hash);
    pthread_mutex_lock(&e->fetch_lock);
    e->nocollapse->hash[i] = h;
    e->nocollapse->until[i] = until;
    pthread_mutex_unlock(&e->fetch_lock);
}

static void nocollapse_clear(struct edge *e, struct str key)
{
    uint64_t h = key_hash(key);
    size_t i = h % ARRAY_SIZE(e->nocollapse->hash);
    pthread_mutex_lock(&e->fetch_lock);
    if (e->nocollapse->hash[i] == h)
        e->nocollapse->until[i] = 0;
    pthread_mutex_unlock(&e->fetch_lock);
}

bool fetch_nocollapse_check(struct edge *e, struct str key, int64_t now)
{
    uint64_t h = key_hash(key);
    size_t i = h % ARRAY_SIZE(e->nocollapse->hash);
    pthread_mutex_lock(&e->fetch_lock);
    bool r = e->nocollapse->hash[i] == h && e->nocollapse->until[i] > now;
    pthread_mutex_unlock(&e->fetch_lock);
    return r;
}

/* Under e->fetch_lock. */
static void table_insert_locked(struct fetch *f)
{
    struct edge *e = f->e;
    size_t i = f->hash % e->fetch_tab_size;
    f->tab_next = e->fetch_tab[i];
    e->fetch_tab[i] = f;
    f->registered = true;
    e->fetch_count++;
}

static void table_remove(struct fetch *f)
{
    struct edge *e = f->e;
    pthread_mutex_lock(&e->fetch_lock);
    if (f->registered) {
        struct fetch **pp = &e->fetch_tab[f->hash % e->fetch_tab_size];
        while (*pp && *pp != f)
            pp = &(*pp)->tab_next;
        if (*pp)
            *pp = f->tab_next;
        f->registered = false;
        e->fetch_count--;
        atomic_fetch_add_explicit(&e->fetch_removals, 1, memory_order_release);
    }
    pthread_mutex_unlock(&e->fetch_lock);
}

uint64_t fetch_table_gen(struct edge *e)
{
    return atomic_load_explicit(&e->fetch_removals, memory_order_acquire);
}

/* Under e->fetch_lock: the newest registered fetch of `key`, or NULL. */
static struct fetch *table_find(struct edge *e, struct str key)
{
    uint64_t h = key_hash(key);
    struct fetch *f = e->fetch_tab[h % e->fetch_tab_size];
    for (; f; f = f->tab_next)
        if (f->hash == h && str_eq(f->key, key))
            return f;
    return NULL;
}

/* Under e->fetch_lock: join `f` if the whole body can still be delivered to a new reader. */
static bool join_locked(struct fetch *f, struct fetch_reader *r)
{
    pthread_mutex_lock(&f->lock);
    /* Only while the whole body can still be delivered: from memory (nothing released yet)
     * or from committed chunks of a put that is still alive. */
    bool ok = f->state != FS_FAILED && !f->store_lost &&
              (f->mem_first == 0 || f->storing || f->state == FS_DONE) &&
              (f->state == FS_CONNECTING || f->head.shareable);
    if (ok) {
        f->refcnt++;
        r->f = f;
        r->pos = 0;
        r->initiator = false;
        r->waiting = true;
        r->next = f->readers;
        f->readers = r;
    }
    pthread_mutex_unlock(&f->lock);
    return ok;
}

struct fetch *fetch_join(struct edge *e, struct str key, struct fetch_reader *r)
{
    pthread_mutex_lock(&e->fetch_lock);
    struct fetch *f = table_find(e, key);
    if (f != NULL && !join_locked(f, r))
        f = NULL;
    pthread_mutex_unlock(&e->fetch_lock);
    return f;
}

/* ---- notifications ------------------------------------------------------------------------ */

/* Under f->lock: wake every reader that asked for it. */
static void wake_readers(struct fetch *f)
{
    for (struct fetch_reader *r = f->readers; r; r = r->next) {
        if (r->waiting) {
            r->waiting = false;
            event_active(r->wake, EV_READ, 0);
        }
    }
}

void fetch_reader_detach(struct fetch_reader *r)
{
    struct fetch *f = r->f;
    if (f == NULL)
        return;
    pthread_mutex_lock(&f->lock);
    struct fetch_reader **pp = &f->readers;
    while (*pp && *pp != r)
        pp = &(*pp)->next;
    if (*pp)
        *pp = r->next;
    bool kick =
        (f->paused && !f->storing) || (f->readers == NULL && !f->storing && f->state == FS_HEAD);
    if (f->body_src && r->x == f->body_src)
        f->body_src = NULL;
    pthread_mutex_unlock(&f->lock);
    r->f = NULL;
    if (kick && f->poll_ev)
        event_active(f->poll_ev, EV_TIMEOUT, 0);
    fetch_unref(f);
}

void fetch_reader_progress(struct fetch_reader *r)
{
    struct fetch *f = r->f;
    if (f == NULL)
        return;
    /* Only an unstored fetch waits for readers to release memory. */
    pthread_mutex_lock(&f->lock);
    bool kick = f->paused && !f->storing && f->poll_ev;
    pthread_mutex_unlock(&f->lock);
    if (kick)
        event_active(f->poll_ev, EV_TIMEOUT, 0);
}

bool fetch_vary_matches(struct fetch *f, const struct http_headers *req)
{
    /* Only called once the head is set (immutable from then on). */
    size_t it = 0, pos = 0;
    struct str name;
    while (http_headers_list_next(&f->head.headers, "vary", &it, &pos, &name)) {
        if (str_eq(name, STR_LIT("*")))
            return false;
        char lname[128], a[1024], b[1024];
        str_to_cstr(name, lname, sizeof(lname));
        for (char *p = lname; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p |= 0x20;
        size_t la = cache_vary_normalise(&f->req, lname, a, sizeof(a));
        size_t lb = cache_vary_normalise(req, lname, b, sizeof(b));
        if (la != lb || memcmp(a, b, la) != 0)
            return false;
    }
    return true;
}

bool fetch_in_flight(struct edge *e, struct str key)
{
    pthread_mutex_lock(&e->fetch_lock);
    struct fetch *f = table_find(e, key);
    pthread_mutex_unlock(&e->fetch_lock);
    return f != NULL;
}

enum fetch_state fetch_reader_wait(struct fetch_reader *r)
{
    struct fetch *f = r->f;
    pthread_mutex_lock(&f->lock);
    enum fetch_state s = f->state;
    if (s == FS_CONNECTING)
        r->waiting = true;
    pthread_mutex_unlock(&f->lock);
    return s;
}

enum fetch_state fetch_get_state(struct fetch *f, const struct fetch_head **head)
{
    pthread_mutex_lock(&f->lock);
    enum fetch_state s = f->state;
    pthread_mutex_unlock(&f->lock);
    *head = &f->head;
    return s;
}

/* ---- reading ------------------------------------------------------------------------------ */

void edge_slice_sink(void *arg, const void *data, size_t len)
{
    struct edge_slice *s = arg;
    if (s->skip >= len)
        return;
    size_t n = len - s->skip;
    if (n > s->max)
        n = s->max;
    evbuffer_add(s->out, (const char *)data + s->skip, n);
    s->copied = n;
}

size_t fetch_read(struct fetch_reader *r, struct evbuffer *out, size_t max, bool *eof, bool *failed)
{
    struct fetch *f = r->f;
    *eof = false;
    *failed = false;
    size_t copied = 0;
    pthread_mutex_lock(&f->lock);
    for (;;) {
        if (copied >= max || r->pos >= f->body_len)
            break;
        uint32_t ci = (uint32_t)(r->pos / CACHE_CHUNK_SIZE);
        size_t off = (size_t)(r->pos % CACHE_CHUNK_SIZE);
        if (ci < f->mem_first || f->chunks[ci] == NULL) {
            /* Released: committed to the cache; read it back outside the lock. */
            if (!f->storing && f->state != FS_DONE) {
                *failed = true;
                break;
            }
            uint64_t id = f->put_id;
            bool lost = f->store_lost;
            pthread_mutex_unlock(&f->lock);
            struct edge_slice sa = {out, off, max - copied, 0};
            int err =
                lost ? OP_ENOTFOUND : cache_chunk_read(f->e->cache, id, ci, edge_slice_sink, &sa);
            pthread_mutex_lock(&f->lock);
            if (err != 0 || sa.copied == 0) {
                *failed = true;
                break;
            }
            r->pos += sa.copied;
            copied += sa.copied;
            continue;
        }
        uint64_t chunk_end = (uint64_t)(ci + 1) * CACHE_CHUNK_SIZE;
        uint64_t avail_end = f->body_len < chunk_end ? f->body_len : chunk_end;
        size_t n = (size_t)(avail_end - r->pos);
        if (n > max - copied)
            n = max - copied;
        evbuffer_add(out, f->chunks[ci] + off, n);
        r->pos += n;
        copied += n;
    }
    if (!*failed) {
        if (f->state == FS_DONE && r->pos >= f->body_len)
            *eof = true;
        else if (f->state == FS_FAILED && r->pos >= f->body_len)
            *failed = true;
        else if (copied == 0)
            r->waiting = true;
    }
    pthread_mutex_unlock(&f->lock);
    return copied;
}

/* ---- owner side --------------------------------------------------------------------------- */

/* Owner thread, under f->lock: free chunks nobody needs in memory any more. */
static void release_memory(struct fetch *f)
{
    uint32_t limit = f->n_chunks;
    if (f->state != FS_DONE && limit > 0)
        limit--; /* the chunk being filled */
    uint32_t upto = f->mem_first;
    if (f->storing && f->put) {
        uint32_t committed = cache_put_committed(f->put);
        upto = committed < limit ? committed : limit;
    } else if (!f->storing) {
        uint64_t minpos = f->body_len;
        for (struct fetch_reader *r = f->readers; r; r = r->next)
            if (r->pos < minpos)
                minpos = r->pos;
        uint32_t consumed = (uint32_t)(minpos / CACHE_CHUNK_SIZE);
        upto = consumed < limit ? consumed : limit;
    }
    while (f->mem_first < upto) {
        if (f->chunks[f->mem_first]) {
            free(f->chunks[f->mem_first]);
            f->chunks[f->mem_first] = NULL;
            f->mem_bytes -= CACHE_CHUNK_SIZE;
        }
        f->mem_first++;
    }
}

static void fetch_abort_unwanted(struct fetch *f)
{
    /* Owner thread: nobody reads this body and it is not being stored. */
    pthread_mutex_lock(&f->lock);
    f->state = FS_FAILED;
    wake_readers(f);
    pthread_mutex_unlock(&f->lock);
    table_remove(f);
    owner_release(f);
}

static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
    struct fetch *f = arg;
    pthread_mutex_lock(&f->lock);
    bool unwanted = f->readers == NULL && !f->storing && f->state == FS_HEAD;
    pthread_mutex_unlock(&f->lock);
    if (unwanted) {
        fetch_abort_unwanted(f);
        return;
    }
    pthread_mutex_lock(&f->lock);
    release_memory(f);
    bool resume = f->paused && f->mem_bytes < FETCH_MEM_MAX / 2;
    if (resume)
        f->paused = false;
    bool still = f->paused;
    pthread_mutex_unlock(&f->lock);
    if (resume && f->u)
        upstream_resume(f->u);
    if (still) {
        struct timeval tv = {0, 5000};
        event_add(f->poll_ev, &tv);
    }
}

static void stop_storing(struct fetch *f)
{
    /* Under f->lock. Readers behind mem_first can no longer be served. */
    if (f->put) {
        cache_put_abort(&f->put);
        METRIC_INC(f->owner, store_skipped);
    }
    if (f->mem_first > 0)
        f->store_lost = true;
    f->storing = false;
}

static void inval_done_cb(void *arg, int err)
{
    /* Writer thread. */
    struct fetch *f = arg;
    pthread_mutex_lock(&f->lock);
    if (--f->inval_pending == 0 && f->state == FS_CONNECTING) {
        f->state = f->held_state;
        wake_readers(f);
    }
    pthread_mutex_unlock(&f->lock);
    fetch_unref(f);
}

static void invalidate_key(struct fetch *f, struct str key)
{
    pthread_mutex_lock(&f->lock);
    f->inval_pending++;
    f->refcnt++;
    pthread_mutex_unlock(&f->lock);
    if (cache_invalidate(f->e->cache, key, false, inval_done_cb, f) != 0)
        inval_done_cb(f, -1);
}

/* Set the state readers see, unless the head is held for invalidations. Under f->lock. */
static void set_state(struct fetch *f, enum fetch_state st)
{
    if (f->inval_pending > 0 && st != FS_FAILED) {
        f->held_state = st;
        return;
    }
    f->state = st;
}

static void on_up_head(void *arg, const struct h1_response *resp, const char *buf)
{
    struct fetch *f = arg;
    struct edge *e = f->e;
    int64_t now = edge_now(e);
    int64_t first_byte = edge_mono_us();
    metrics_upstream_latency(f->owner, first_byte - f->t_sent_us);
    struct http_headers fresh;
    http_headers_init(&fresh);
    int64_t cl = -1;
    for (size_t i = 0; i < resp->n_headers; i++) {
        struct str n = resp->headers[i].name;
        if (str_caseeq_cstr(n, "content-length")) {
            uint64_t v;
            if (str_to_u64(resp->headers[i].value, &v) == 0)
                cl = (int64_t)v;
            continue;
        }
        if (str_caseeq_cstr(n, "transfer-encoding"))
            continue;
        http_headers_add(&fresh, n, resp->headers[i].value);
    }
    /* Drop hop-by-hop fields (and those Connection names) before anything stores them. */
    struct http_headers conn_view = {(struct http_header *)resp->headers, resp->n_headers,
                                     resp->n_headers};
    struct http_headers kept;
    http_headers_init(&kept);
    for (size_t i = 0; i < fresh.n; i++) {
        if (http_is_hop_by_hop(&conn_view, fresh.v[i].name))
            continue;
        http_headers_add(&kept, arena_strdup(&f->arena, fresh.v[i].name),
                         arena_strdup(&f->arena, fresh.v[i].value));
    }
    http_headers_fini(&fresh);

    pthread_mutex_lock(&f->lock);
    struct fetch_head *h = &f->head;
    snprintf(h->upstream_addr, sizeof(h->upstream_addr), "%s", upstream_addr(f->u));
    h->first_byte_us = first_byte - f->t_sent_us;
    if (resp->body == H1_BODY_LENGTH)
        h->content_length = (int64_t)resp->content_length;
    else if (resp->body == H1_BODY_NONE)
        h->content_length = str_eq(f->method, STR_LIT("HEAD")) ? cl : 0;
    else
        h->content_length = -1;

    if (f->validate && resp->status == 304) {
        /* Revalidated: refresh the stored headers and serve the stored body. */
        struct http_headers merged;
        http_headers_init(&merged);
        cache_policy_merge_304(&f->validate->headers, &kept, &merged);
        h->status = f->validate->status;
        h->headers = merged;
        cache_policy_meta(h->status, &merged, f->request_time, now, &f->site->policy, &h->meta);
        h->obj = f->validate;
        cache_obj_ref(h->obj);
        h->content_length = (int64_t)f->validate->body_len;
        h->shareable = true;
        h->storing = false;
        cache_update(e->cache, f->validate->id, &merged, &h->meta, now);
        /* Until the refresh is committed a lookup would still find the stale record: keep
         * the fetch joinable, and let joiners wait for the commit (put_done_cb). */
        f->update_pending = true;
        f->refcnt++;
        cache_barrier(e->cache, put_done_cb, f);
        http_headers_fini(&kept);
        f->state = FS_HEAD;
        wake_readers(f);
        pthread_mutex_unlock(&f->lock);
        return;
    }
    h->status = resp->status;
    h->headers = kept;
    cache_policy_meta(resp->status, &kept, f->request_time, now, &f->site->policy, &h->meta);
    bool storable =
        !f->private_ && f->keyed && str_eq(f->method, STR_LIT("GET")) &&
        cache_policy_storable(f->method, &f->req, resp->status, &kept, &f->site->policy);
    h->shareable = storable;
    if (storable) {
        struct cache_vary vary[16];
        size_t n_vary = 0;
        size_t it = 0, pos = 0;
        struct str name;
        while (http_headers_list_next(&kept, "vary", &it, &pos, &name) &&
               n_vary < ARRAY_SIZE(vary)) {
            char lname[128], val[1024];
            str_to_cstr(name, lname, sizeof(lname));
            for (char *p = lname; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                    *p |= 0x20;
            size_t vl = cache_vary_normalise(&f->req, lname, val, sizeof(val));
            vary[n_vary].name = arena_strdup(&f->arena, str_cstr(lname));
            vary[n_vary].value = arena_strdup(&f->arena, str_make(val, vl));
            n_vary++;
        }
        struct cache_put_info info = {
            .key = f->key,
            .status = resp->status,
            .headers = &kept,
            .meta = &h->meta,
            .vary = vary,
            .n_vary = n_vary,
            .tags = NULL,
            .n_tags = 0,
            .content_length = h->content_length,
            .now = now,
        };
        int err = cache_put_begin(e->cache, &info, &f->put);
        if (err == 0) {
            f->storing = true;
            f->put_id = cache_put_id(f->put);
        } else {
            f->put = NULL;
            METRIC_INC(f->owner, store_skipped);
        }
    }
    /* The no-collapse table is under e->fetch_lock, which is taken before f->lock: update
     * it after unlocking (lock order: fetch_lock, then a fetch's lock). */
    int nocollapse_op = storable ? 1 : (f->keyed && !f->private_) ? 2 : 0;
    h->storing = f->storing;
    bool will_invalidate =
        f->invalidate && cache_policy_invalidates(f->method, resp->status) && f->keyed;
    if (will_invalidate)
        f->inval_pending++; /* held until the invalidations below are queued */
    set_state(f, FS_HEAD);
    wake_readers(f);
    bool unwanted = f->readers == NULL && !f->storing;
    pthread_mutex_unlock(&f->lock);
    if (nocollapse_op == 1)
        nocollapse_clear(e, f->key);
    else if (nocollapse_op == 2)
        fetch_nocollapse_mark(e, f->key, now + NOCOLLAPSE_TTL);
    if (!h->shareable || !f->storing)
        table_remove(f);
    if (unwanted && f->poll_ev)
        event_active(f->poll_ev, EV_TIMEOUT, 0);
    if (will_invalidate) {
        invalidate_key(f, f->key);
        /* Location and Content-Location of the same origin (RFC 9111 4.4). */
        static const char *const locs[] = {"location", "content-location"};
        for (size_t i = 0; i < ARRAY_SIZE(locs); i++) {
            const struct http_header *lh = http_headers_get(&kept, locs[i]);
            if (lh == NULL)
                continue;
            struct str v = lh->value;
            struct str target = STR_NULL;
            if (v.len && v.p[0] == '/' && !(v.len > 1 && v.p[1] == '/')) {
                target = v;
            } else {
                char pre[300];
                int pl = snprintf(pre, sizeof(pre), "%.*s://%.*s/", (int)f->scheme.len, f->scheme.p,
                                  (int)f->authority.len, f->authority.p);
                if (pl > 0 && (size_t)pl < sizeof(pre) &&
                    str_has_prefix(v, str_make(pre, (size_t)pl - 1)))
                    target = str_make(v.p + pl - 1, v.len - (size_t)pl + 1);
            }
            if (target.len) {
                struct str k = arena_printf(&f->arena, "%.*s%.*s", (int)f->authority.len,
                                            f->authority.p, (int)target.len, target.p);
                invalidate_key(f, k);
            }
        }
        pthread_mutex_lock(&f->lock);
        f->refcnt++;
        pthread_mutex_unlock(&f->lock);
        inval_done_cb(f, 0); /* the hold taken above */
    }
}

static void on_up_body(void *arg, const char *data, size_t len)
{
    struct fetch *f = arg;
    bool pause = false;
    pthread_mutex_lock(&f->lock);
    size_t done = 0;
    while (done < len) {
        uint32_t ci = (uint32_t)(f->body_len / CACHE_CHUNK_SIZE);
        size_t off = (size_t)(f->body_len % CACHE_CHUNK_SIZE);
        if (ci >= f->cap_chunks) {
            f->cap_chunks = f->cap_chunks ? f->cap_chunks * 2 : 16;
            f->chunks = xrealloc(f->chunks, f->cap_chunks * sizeof(*f->chunks));
        }
        if (ci >= f->n_chunks) {
            f->chunks[ci] = xmalloc(CACHE_CHUNK_SIZE);
            f->n_chunks = ci + 1;
            f->mem_bytes += CACHE_CHUNK_SIZE;
        }
        size_t n = CACHE_CHUNK_SIZE - off;
        if (n > len - done)
            n = len - done;
        memcpy(f->chunks[ci] + off, data + done, n);
        f->body_len += n;
        done += n;
    }
    if (f->storing) {
        int err = cache_put_append(f->put, data, len);
        if (err != 0) {
            stop_storing(f);
            pthread_mutex_unlock(&f->lock);
            table_remove(f);
            pthread_mutex_lock(&f->lock);
        }
    }
    release_memory(f);
    wake_readers(f);
    if (f->mem_bytes > FETCH_MEM_MAX && !f->paused) {
        f->paused = true;
        pause = true;
    }
    pthread_mutex_unlock(&f->lock);
    if (pause) {
        upstream_pause(f->u);
        struct timeval tv = {0, 5000};
        event_add(f->poll_ev, &tv);
    }
}

static void put_done_cb(void *arg, int err)
{
    /* Writer thread: the object is committed (or failed); new requests find it in the cache
     * from now on, so the fetch leaves the table. */
    struct fetch *f = arg;
    table_remove(f);
    pthread_mutex_lock(&f->lock);
    f->committed = true;
    wake_readers(f);
    pthread_mutex_unlock(&f->lock);
    fetch_unref(f);
}

bool fetch_reader_wait_commit(struct fetch_reader *r)
{
    struct fetch *f = r->f;
    pthread_mutex_lock(&f->lock);
    bool done = f->committed || f->state == FS_FAILED;
    if (!done)
        r->waiting = true;
    pthread_mutex_unlock(&f->lock);
    return done;
}

static void on_up_done(void *arg)
{
    struct fetch *f = arg;
    pthread_mutex_lock(&f->lock);
    f->u = NULL;
    set_state(f, FS_DONE);
    bool commit = false;
    if (f->storing && f->put) {
        f->refcnt++; /* for put_done_cb */
        commit = true;
    }
    struct cache_put *put = f->put;
    f->put = NULL;
    wake_readers(f);
    pthread_mutex_unlock(&f->lock);
    if (commit) {
        if (cache_put_end(&put, put_done_cb, f) != 0)
            put_done_cb(f, -1);
    } else if (!f->update_pending) {
        table_remove(f);
    }
    owner_release(f);
}

static bool send_attempt(struct fetch *f);

static void on_up_error(void *arg, enum upstream_err err, bool any_byte)
{
    struct fetch *f = arg;
    f->u = NULL;
    const struct config *cfg = f->e->cfg;
    bool idempotent = !f->req_has_body &&
                      (str_eq(f->method, STR_LIT("GET")) || str_eq(f->method, STR_LIT("HEAD")));
    pthread_mutex_lock(&f->lock);
    bool retry =
        f->state == FS_CONNECTING && !any_byte && idempotent && f->retries < cfg->upstream_retries;
    pthread_mutex_unlock(&f->lock);
    if (retry) {
        struct up_group *g = &f->e->groups[f->group];
        if (retry_budget_take(&f->owner->groups[f->group].budget, edge_mono_ms())) {
            f->retries++;
            atomic_fetch_add_explicit(&g->retries, 1, memory_order_relaxed);
            if (send_attempt(f))
                return;
        } else {
            atomic_fetch_add_explicit(&g->retries_refused, 1, memory_order_relaxed);
            log_ratelimited(LOG_WARN, "upstream %s: retry budget spent, not retrying",
                            g->conf->name);
        }
    }
    log_ratelimited(LOG_WARN, "upstream: %.*s%.*s failed (%s)", (int)f->authority.len,
                    f->authority.p, (int)f->path.len, f->path.p,
                    err == UPERR_TIMEOUT   ? "timeout"
                    : err == UPERR_CONNECT ? "connect"
                                           : "error");
    pthread_mutex_lock(&f->lock);
    f->head.timeout = err == UPERR_TIMEOUT;
    f->state = FS_FAILED;
    if (f->put)
        stop_storing(f);
    wake_readers(f);
    pthread_mutex_unlock(&f->lock);
    table_remove(f);
    owner_release(f);
}

static void on_up_req_drain(void *arg)
{
    struct fetch *f = arg;
    if (f->req_body_pending && evbuffer_get_length(f->req_body_pending) && f->u) {
        upstream_send_body(f->u, f->req_body_pending, false);
    }
    if (f->body_src && f->u && upstream_req_pending(f->u) < REQ_BODY_MAX)
        exchange_on_req_drain(f->body_src);
}

static const struct upstream_cbs fetch_cbs = {
    .on_head = on_up_head,
    .on_body = on_up_body,
    .on_done = on_up_done,
    .on_error = on_up_error,
    .on_req_drain = on_up_req_drain,
};

static void add_header_line(struct evbuffer *b, struct str n, struct str v)
{
    evbuffer_add(b, n.p, n.len);
    evbuffer_add(b, ": ", 2);
    evbuffer_add(b, v.p, v.len);
    evbuffer_add(b, "\r\n", 2);
}

static bool is_conditional(struct str n)
{
    return str_caseeq_cstr(n, "if-none-match") || str_caseeq_cstr(n, "if-modified-since") ||
           str_caseeq_cstr(n, "if-match") || str_caseeq_cstr(n, "if-unmodified-since") ||
           str_caseeq_cstr(n, "if-range") || str_caseeq_cstr(n, "range");
}

static bool send_request(struct fetch *f)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "%.*s %.*s HTTP/1.1\r\nHost: %.*s\r\n", (int)f->method.len, f->method.p,
                        (int)f->path.len, f->path.p, (int)f->authority.len, f->authority.p);
    const struct http_header *xff = NULL, *fwd = NULL, *via = NULL;
    for (size_t i = 0; i < f->req.n; i++) {
        struct str n = f->req.v[i].name;
        if (str_caseeq_cstr(n, "host") || str_caseeq_cstr(n, "content-length") ||
            str_caseeq_cstr(n, "expect") || http_is_hop_by_hop(&f->req, n))
            continue;
        if (!f->private_ && is_conditional(n))
            continue; /* the cache fetches whole, unconditional representations */
        if (str_caseeq_cstr(n, "x-forwarded-for")) {
            xff = &f->req.v[i];
            continue;
        }
        if (str_caseeq_cstr(n, "forwarded")) {
            fwd = &f->req.v[i];
            continue;
        }
        if (str_caseeq_cstr(n, "via")) {
            via = &f->req.v[i];
            continue;
        }
        add_header_line(b, n, f->req.v[i].value);
    }
    char ip[64];
    snprintf(ip, sizeof(ip), "%s", f->client_addr);
    char *colon = strrchr(ip, ':');
    if (colon && ip[0] != '[')
        *colon = '\0';
    else if (ip[0] == '[') {
        char *rb = strchr(ip, ']');
        if (rb)
            rb[1] = '\0';
    }
    if (xff)
        evbuffer_add_printf(b, "X-Forwarded-For: %.*s, %s\r\n", (int)xff->value.len, xff->value.p,
                            ip[0] == '[' ? ip : ip);
    else
        evbuffer_add_printf(b, "X-Forwarded-For: %s\r\n", ip);
    if (fwd)
        evbuffer_add_printf(b, "Forwarded: %.*s, for=\"%s\";host=\"%.*s\";proto=http\r\n",
                            (int)fwd->value.len, fwd->value.p, ip, (int)f->authority.len,
                            f->authority.p);
    else
        evbuffer_add_printf(b, "Forwarded: for=\"%s\";host=\"%.*s\";proto=http\r\n", ip,
                            (int)f->authority.len, f->authority.p);
    struct str me = f->e->via;
    if (via)
        evbuffer_add_printf(b, "Via: %.*s, %.*s\r\n", (int)via->value.len, via->value.p,
                            (int)me.len, me.p);
    else
        evbuffer_add_printf(b, "Via: %.*s\r\n", (int)me.len, me.p);
    if (f->validate) {
        const struct http_header *et = http_headers_get(&f->validate->headers, "etag");
        const struct http_header *lm = http_headers_get(&f->validate->headers, "last-modified");
        if (et)
            add_header_line(b, STR_LIT("If-None-Match"), et->value);
        if (lm)
            add_header_line(b, STR_LIT("If-Modified-Since"), lm->value);
    }
    if (f->req_has_body) {
        if (f->req_content_length >= 0)
            evbuffer_add_printf(b, "Content-Length: %lld\r\n", (long long)f->req_content_length);
        else
            evbuffer_add(b, "Transfer-Encoding: chunked\r\n", 28);
    }
    evbuffer_add(b, "\r\n", 2);
    f->t_sent_us = edge_mono_us();
    f->request_time = edge_now(f->e);
    f->u = upstream_request(f->owner, f->group, f->server, b, str_eq(f->method, STR_LIT("HEAD")),
                            &fetch_cbs, f);
    evbuffer_free(b);
    if (f->u == NULL)
        return false;
    if (!f->req_has_body)
        upstream_send_body(f->u, NULL, true);
    else if (f->req_body_pending && evbuffer_get_length(f->req_body_pending))
        upstream_send_body(f->u, f->req_body_pending, f->req_eof);
    else if (f->req_eof)
        upstream_send_body(f->u, NULL, true);
    return true;
}

/* The groups a request of this fetch may go to, in order: the site's shield groups, then its
 * origin pool (unless shields exist and shield_fallback_origin is off). */
static int route_len(const struct fetch *f)
{
    const struct conf_site *s = f->site;
    return (int)s->n_shields + (s->n_shields == 0 || s->opts.shield_fallback_origin ? 1 : 0);
}

static size_t route_group(const struct fetch *f, int tier)
{
    const struct conf_site *s = f->site;
    return (size_t)tier < s->n_shields ? s->shields[tier] : s->upstream;
}

/* Send the next attempt: the next untried server of the current group, else of the next
 * groups. Servers whose connection fails at once are recorded (passive health) and skipped.
 * false when no server is left. */
static bool send_attempt(struct fetch *f)
{
    int n = route_len(f);
    while (f->tier < n) {
        size_t gi = route_group(f, f->tier);
        int idx =
            worker_group_pick(f->owner, gi, f->route_key, f->tried, f->n_tried, f->tier == n - 1);
        if (idx < 0 || f->n_tried == ARRAY_SIZE(f->tried)) {
            f->tier++;
            f->n_tried = 0;
            continue;
        }
        f->tried[f->n_tried++] = idx;
        f->group = gi;
        f->server = idx;
        if (send_request(f))
            return true;
    }
    return false;
}

static void start_failed_cb(evutil_socket_t fd, short what, void *arg)
{
    on_up_error(arg, UPERR_CONNECT, false);
}

/* A new fetch with its reader, neither registered nor sent. */
static struct fetch *fetch_new(struct worker *w, const struct fetch_params *p,
                               struct fetch_reader *r)
{
    struct exchange *x = p->x;
    struct fetch *f = xcalloc(1, sizeof(*f));
    f->e = w->edge;
    f->owner = w;
    arena_init(&f->arena, 0);
    pthread_mutex_init(&f->lock, NULL);
    f->refcnt = 1; /* owner */
    f->keyed = p->key.len > 0;
    f->private_ = p->private_ || !f->keyed;
    f->key = f->keyed ? arena_strdup(&f->arena, p->key) : STR_NULL;
    f->hash = key_hash(f->key);
    f->site = x->site;
    f->invalidate = p->invalidate;
    /* A shared fetch always GETs the whole representation, even for a HEAD or Range
     * request, so that it can be stored and shared. */
    f->method = f->private_ ? arena_strdup(&f->arena, x->method) : STR_LIT("GET");
    f->authority = arena_strdup(&f->arena, x->authority);
    f->scheme = arena_strdup(&f->arena, x->scheme);
    f->path = arena_strdup(&f->arena, x->path);
    f->route_key = f->keyed ? f->key
                            : arena_printf(&f->arena, "%.*s%.*s", (int)f->authority.len,
                                           f->authority.p, (int)f->path.len, f->path.p);
    snprintf(f->client_addr, sizeof(f->client_addr), "%s", x->client_addr);
    http_headers_init(&f->req);
    for (size_t i = 0; i < x->req.n; i++)
        http_headers_add(&f->req, arena_strdup(&f->arena, x->req.v[i].name),
                         arena_strdup(&f->arena, x->req.v[i].value));
    f->req_has_body = f->private_ && x->req_has_body;
    f->req_content_length = x->req_content_length;
    if (f->req_has_body) {
        f->body_src = x;
        f->req_body_pending = evbuffer_new();
    }
    if (p->validate) {
        f->validate = p->validate;
        cache_obj_ref(f->validate);
    }
    f->head.content_length = -1;
    f->state = FS_CONNECTING;
    f->poll_ev = event_new(w->base, -1, 0, poll_cb, f);
    if (r) {
        f->refcnt++;
        r->f = f;
        r->pos = 0;
        r->initiator = true;
        r->waiting = true;
        r->next = NULL;
        f->readers = r;
    }
    return f;
}

/* Every shared fetch is registered, also under hit-for-miss: requests of a no-collapse key do
 * not join it (exchange.c), but once its head turns out storable and clears the mark, the
 * next requests must find it, or they would fetch again before its object is committed. */
static bool registrable(const struct fetch *f)
{
    return f->keyed && !f->private_;
}

static void fetch_launch(struct fetch *f)
{
    if (route_len(f) > 0)
        retry_budget_request(&f->owner->groups[route_group(f, 0)].budget, edge_mono_ms());
    if (!send_attempt(f)) {
        /* No server to send to: fail asynchronously so callers see one code path. */
        event_base_once(f->owner->base, -1, EV_TIMEOUT, start_failed_cb, f, NULL);
    }
}

struct fetch *fetch_start(struct worker *w, const struct fetch_params *p, struct fetch_reader *r)
{
    struct fetch *f = fetch_new(w, p, r);
    if (registrable(f)) {
        pthread_mutex_lock(&f->e->fetch_lock);
        table_insert_locked(f);
        pthread_mutex_unlock(&f->e->fetch_lock);
    }
    fetch_launch(f);
    return f;
}

struct fetch *fetch_join_or_start(struct worker *w, const struct fetch_params *p,
                                  struct fetch_reader *r, uint64_t gen, enum fetch_found *how)
{
    struct edge *e = w->edge;
    pthread_mutex_lock(&e->fetch_lock);
    struct fetch *f = table_find(e, p->key);
    if (f != NULL && join_locked(f, r)) {
        pthread_mutex_unlock(&e->fetch_lock);
        *how = FETCH_JOINED;
        return f;
    }
    if (gen != FETCH_ANY_GEN && gen != fetch_table_gen(e)) {
        pthread_mutex_unlock(&e->fetch_lock);
        *how = FETCH_TABLE_CHANGED;
        return NULL;
    }
    /* Built under the lock (a miss, a few allocations) so that no other miss of the key can
     * slip in between the search and the registration. */
    f = fetch_new(w, p, r);
    if (registrable(f))
        table_insert_locked(f);
    pthread_mutex_unlock(&e->fetch_lock);
    *how = FETCH_STARTED;
    fetch_launch(f);
    return f;
}

void fetch_send_req_body(struct fetch *f, struct evbuffer *data, bool eof)
{
    if (eof)
        f->req_eof = true;
    struct evbuffer *framed = evbuffer_new();
    if (data && evbuffer_get_length(data)) {
        if (f->req_content_length < 0)
            evbuffer_add_printf(framed, "%zx\r\n", evbuffer_get_length(data));
        evbuffer_add_buffer(framed, data);
        if (f->req_content_length < 0)
            evbuffer_add(framed, "\r\n", 2);
    }
    if (eof && f->req_content_length < 0)
        evbuffer_add(framed, "0\r\n\r\n", 5);
    if (f->u) {
        upstream_send_body(f->u, framed, eof);
    } else if (f->req_body_pending) {
        evbuffer_add_buffer(f->req_body_pending, framed);
    }
    evbuffer_free(framed);
}

bool fetch_req_body_full(struct fetch *f)
{
    if (f->u)
        return upstream_req_pending(f->u) >= REQ_BODY_MAX;
    return f->req_body_pending && evbuffer_get_length(f->req_body_pending) >= REQ_BODY_MAX;
}

/* The owner has nothing left to do: free its thread-bound resources, drop its reference. */
static void owner_release(struct fetch *f)
{
    if (f->owner_done)
        return;
    f->owner_done = true;
    if (f->u) {
        upstream_abandon(f->u);
        f->u = NULL;
    }
    pthread_mutex_lock(&f->lock);
    event_free(f->poll_ev);
    f->poll_ev = NULL;
    f->paused = false;
    pthread_mutex_unlock(&f->lock);
    if (f->req_body_pending) {
        evbuffer_free(f->req_body_pending);
        f->req_body_pending = NULL;
    }
    fetch_unref(f);
}

static void fetch_unref(struct fetch *f)
{
    pthread_mutex_lock(&f->lock);
    int n = --f->refcnt;
    pthread_mutex_unlock(&f->lock);
    if (n > 0)
        return;
    ASSERT(!f->registered);
    for (uint32_t i = 0; i < f->n_chunks; i++)
        free(f->chunks[i]);
    free(f->chunks);
    if (f->head.obj)
        cache_obj_unref(&f->head.obj);
    if (f->validate)
        cache_obj_unref(&f->validate);
    http_headers_fini(&f->head.headers);
    http_headers_fini(&f->req);
    arena_fini(&f->arena);
    pthread_mutex_destroy(&f->lock);
    free(f);
}
