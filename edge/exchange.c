/*
 * edge/exchange.c: the protocol-neutral request pipeline, written once for H1, H2 and H3.
 *
 * exchange_start() takes a parsed request and decides: site (by Host), cache key
 * (authority + path?query), eligibility (GET/HEAD without request no-store; anything else is
 * BYPASS), lookup, and then one of: serve the stored object (HIT, STALE under
 * stale-while-revalidate or max-stale, with a background revalidation for the former), join
 * an in-flight fetch of the same key (COLLAPSED), or start a fetch (MISS; conditional when a
 * stale object with validators exists, REVALIDATED if the origin answers 304). Origin
 * failures fall back to the stored object when stale-if-error allows it.
 *
 * Serving a stored object applies the client's conditionals (304/412) and ranges (206,
 * multipart/byteranges, 416) here, so every protocol gets them. Response policy (Age, Via,
 * X-Cache, Date) is applied in one function, response_headers(). HTTP status codes of the
 * edge's own answers are chosen here and nowhere else.
 *
 * Runs on the exchange's worker. The transport owns the struct exchange's memory; fetch
 * wake-ups arrive as events on this worker's base.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "edge/edge_int.h"
#include "lib/log.h"
#include "lib/util.h"

#define READ_MAX (64 * 1024)
#define REQ_BUFFER (1024 * 1024)

static void start_fetch(struct exchange *x, struct cache_obj *validate, bool may_join);
static void lookup(struct exchange *x, bool may_join);
static void serve_obj(struct exchange *x, struct cache_obj *obj, struct http_headers *headers,
                      const struct cache_meta *meta);
static void pump_fetch(struct exchange *x);
static void pump_obj(struct exchange *x);
static void on_fetch_head(struct exchange *x);

static const char *const xcache_names[XCACHE_COUNT] = {
    "HIT", "MISS", "COLLAPSED", "STALE", "REVALIDATED", "BYPASS", "NONE"};

const char *xcache_name(enum xcache c)
{
    return xcache_names[c];
}

void exchange_init(struct exchange *x, struct worker *w, const struct transport_ops *ops,
                   void *transport)
{
    memset(x, 0, sizeof(*x));
    x->w = w;
    x->ops = ops;
    x->transport = transport;
    arena_init(&x->arena, 0);
    http_headers_init(&x->req);
    http_headers_init(&x->resp);
    x->t_start_us = edge_mono_us();
    x->resp_length = -1;
    x->xcache = XCACHE_NONE;
    x->upstream_first_byte_us = -1;
}

static void detach_fetch(struct exchange *x)
{
    if (x->reader) {
        if (x->reader->f)
            fetch_reader_detach(x->reader);
        if (x->reader->wake) {
            event_free(x->reader->wake);
            x->reader->wake = NULL;
        }
        x->reader = NULL;
    }
    x->fetch = NULL;
}

void exchange_fini(struct exchange *x)
{
    detach_fetch(x);
    if (x->obj)
        cache_obj_unref(&x->obj);
    if (x->obj_headers) {
        http_headers_fini(x->obj_headers);
        free(x->obj_headers);
        x->obj_headers = NULL;
    }
    if (x->tmp)
        evbuffer_free(x->tmp);
    x->tmp = NULL;
    if (x->req_body)
        evbuffer_free(x->req_body);
    x->req_body = NULL;
    http_headers_fini(&x->req);
    http_headers_fini(&x->resp);
    arena_fini(&x->arena);
}

void exchange_on_client_gone(struct exchange *x)
{
    detach_fetch(x);
    x->state = XS_DONE;
}

/* ---- response policy ---------------------------------------------------------------------- */

static void add_hdr(struct exchange *x, const char *name, struct str value)
{
    http_headers_add(&x->resp, str_cstr(name), value);
}

/*
 * Build x->resp from `src` (stored or upstream headers): drop fields we frame ourselves,
 * set Age (age >= 0) or keep the upstream's (age < 0), add Date if missing, append Via, set
 * X-Cache.
 */
/* Strict-Transport-Security on responses sent over TLS, when the site asks for it. */
/* Headers of TLS responses: Strict-Transport-Security, and Alt-Svc advertising HTTP/3 to
 * HTTP/1.1 and HTTP/2 clients (browsers take Alt-Svc from https origins only). */
static void add_tls_headers(struct exchange *x)
{
    if (!str_eq(x->scheme, STR_LIT("https")))
        return;
    const struct conf_site_opts *o = x->site ? &x->site->opts : &x->w->edge->cfg->site_defaults;
    if (x->site != NULL && o->hsts_max_age > 0)
        add_hdr(x, "Strict-Transport-Security",
                arena_printf(&x->arena, "max-age=%lld%s", (long long)o->hsts_max_age,
                             o->hsts_include_subdomains ? "; includeSubDomains" : ""));
    if (o->alt_svc && x->w->edge->alt_svc.len > 0 && !x->ops->quic)
        add_hdr(x, "Alt-Svc", x->w->edge->alt_svc);
}

/* Is `name` in `list` (names separated by commas and/or spaces; case-insensitive)? */
static bool name_listed(const char *list, struct str name)
{
    const char *p = list;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ' ' && *e != '\t')
            e++;
        if (e > p && str_caseeq(str_make(p, (size_t)(e - p)), name))
            return true;
        p = e;
    }
    return false;
}

static void response_headers(struct exchange *x, const struct http_headers *src, int64_t age,
                             int64_t date_if_missing)
{
    static const struct str h_content_length = STR_LIT("content-length");
    static const struct str h_x_cache = STR_LIT("x-cache");
    static const struct str h_age = STR_LIT("age");
    static const struct str h_via = STR_LIT("via");
    static const struct str h_date = STR_LIT("date");
    const struct config *cfg = x->w->edge->cfg;
    x->resp.n = 0;
    bool have_date = false;
    struct str via = STR_NULL;
    const char *hide = x->site != NULL ? x->site->opts.hide_headers : NULL;
    for (size_t i = 0; i < src->n; i++) {
        struct str n = src->v[i].name;
        if (str_caseeq(n, h_content_length) || str_caseeq(n, h_x_cache) ||
            http_is_hop_by_hop(NULL, n) || (hide != NULL && name_listed(hide, n)))
            continue;
        if (str_caseeq(n, h_age)) {
            if (age >= 0)
                continue;
        } else if (str_caseeq(n, h_via)) {
            via = src->v[i].value;
            continue;
        } else if (str_caseeq(n, h_date)) {
            have_date = true;
        }
        http_headers_add(&x->resp, n, src->v[i].value);
    }
    if (!have_date) {
        char *d = arena_alloc(&x->arena, HTTP_DATE_LEN + 1);
        http_date_format(date_if_missing, d);
        add_hdr(x, "Date", str_make(d, HTTP_DATE_LEN));
    }
    if (age >= 0) {
        char *a = arena_alloc(&x->arena, 24);
        add_hdr(x, "Age", str_make(a, str_fmt_u64((uint64_t)age, a)));
    }
    struct str mine = x->w->edge->via;
    if (via.len)
        add_hdr(x, "Via",
                arena_printf(&x->arena, "%.*s, %.*s", (int)via.len, via.p, (int)mine.len, mine.p));
    else
        add_hdr(x, "Via", mine);
    (void)cfg;
    if (x->xcache != XCACHE_NONE)
        add_hdr(x, "X-Cache", str_cstr(xcache_name(x->xcache)));
    add_tls_headers(x);
}

static void finish(struct exchange *x)
{
    x->state = XS_DONE;
    detach_fetch(x);
    x->ops->finish(x); /* may free or reuse *x: nothing after this */
}

static void abort_exchange(struct exchange *x)
{
    x->state = XS_DONE;
    detach_fetch(x);
    x->ops->abort(x);
}

/* A locally generated response with a short text body; `location` for redirects. */
static void respond_local(struct exchange *x, int status, const char *msg, struct str location)
{
    detach_fetch(x);
    x->status = status;
    x->resp.n = 0;
    char *d = arena_alloc(&x->arena, HTTP_DATE_LEN + 1);
    http_date_format(edge_now(x->w->edge), d);
    add_hdr(x, "Date", str_make(d, HTTP_DATE_LEN));
    add_hdr(x, "Content-Type", STR_LIT("text/plain; charset=utf-8"));
    add_hdr(x, "Cache-Control", STR_LIT("no-store"));
    if (location.len)
        add_hdr(x, "Location", location);
    if (x->xcache != XCACHE_NONE)
        add_hdr(x, "X-Cache", str_cstr(xcache_name(x->xcache)));
    add_tls_headers(x);
    struct str body = arena_printf(&x->arena, "%d %s\n", status, msg);
    x->resp_length = (int64_t)body.len;
    x->no_body = x->is_head;
    x->ops->send_head(x);
    x->head_sent = true;
    if (!x->no_body) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add(b, body.p, body.len);
        x->ops->send_body(x, b);
        evbuffer_free(b);
        x->body_sent = body.len;
    }
    finish(x);
}

void exchange_respond_error(struct exchange *x, int status, const char *msg)
{
    respond_local(x, status, msg, STR_NULL);
}

/* https_redirect: 308 (method and body kept) to the same URL on the first TLS listener's
 * port (omitted when it is 443). */
static void redirect_to_https(struct exchange *x)
{
    const struct config *cfg = x->w->edge->cfg;
    uint16_t port = cfg->n_tls_listen > 0 ? cfg->tls_listen[0].port : 443;
    bool v6 = str_chr(x->host, ':') >= 0;
    char ps[8] = "";
    if (port != 443)
        snprintf(ps, sizeof(ps), ":%u", (unsigned)port);
    struct str loc =
        arena_printf(&x->arena, "https://%s%.*s%s%s%.*s", v6 ? "[" : "", (int)x->host.len,
                     x->host.p, v6 ? "]" : "", ps, (int)x->path.len, x->path.p);
    x->xcache = XCACHE_NONE;
    respond_local(x, 308, "use https", loc);
}

/* ---- starting --------------------------------------------------------------------------- */

static struct str host_of(struct str authority)
{
    if (authority.len && authority.p[0] == '[') {
        long rb = str_chr(authority, ']');
        return rb > 0 ? str_make(authority.p + 1, (size_t)rb - 1) : authority;
    }
    long c = str_chr(authority, ':');
    return c >= 0 ? str_make(authority.p, (size_t)c) : authority;
}

static void reader_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct exchange *x = arg;
    if (x->state == XS_WAIT_COMMIT) {
        if (fetch_reader_wait_commit(x->reader)) {
            detach_fetch(x);
            lookup(x, false);
        }
        return;
    }
    if (x->state == XS_WAIT_FETCH)
        on_fetch_head(x);
    else if (x->state == XS_STREAM_FETCH)
        pump_fetch(x);
}

static void bypass_start(struct exchange *x)
{
    x->body_buffering = false;
    struct fetch_reader *r = arena_alloc(&x->arena, sizeof(*r));
    memset(r, 0, sizeof(*r));
    r->x = x;
    r->wake = event_new(x->w->base, -1, 0, reader_wake_cb, x);
    x->reader = r;
    struct fetch_params p = {
        .key = x->key,
        .x = x,
        .private_ = true,
        .invalidate = x->bypass_invalidate,
    };
    x->fetch = fetch_start(x->w, &p, r);
    x->state = XS_WAIT_FETCH;
    if (x->req_body && evbuffer_get_length(x->req_body)) {
        fetch_send_req_body(x->fetch, x->req_body, x->req_body_done);
    } else if (x->req_body_done && x->req_has_body) {
        fetch_send_req_body(x->fetch, NULL, true);
    }
    if (x->state == XS_WAIT_FETCH && fetch_reader_wait(r) != FS_CONNECTING)
        on_fetch_head(x);
}

/*
 * Pass the request to the origin. A request body of up to REQ_BUFFER bytes is received whole
 * (and its framing validated) before the origin sees anything, as nginx's
 * proxy_request_buffering does: a client that breaks off or sends a malformed body costs the
 * origin nothing. Larger bodies start streaming once that much has arrived.
 */
static void bypass(struct exchange *x, bool invalidate)
{
    x->xcache = XCACHE_BYPASS;
    x->bypass_invalidate = invalidate;
    if (x->req_has_body && !x->req_body_done) {
        x->body_buffering = true;
        if (x->req_body == NULL)
            x->req_body = evbuffer_new();
        return;
    }
    bypass_start(x);
}

/*
 * Loop protection: our own Via element ("NODE (outpost)", with any protocol version before it)
 * in the request means it has been here before: an edge and a shield that point at each other,
 * or a shield whose origin is an edge. Answered 508 (RFC 5842) instead of going round.
 */
/*
 * Loop protection from the request's Via (RFC 9110 7.6.3): NULL when the request may go on,
 * else why not. A node never handles a request that already passed through it; an edge never
 * handles one that a shield forwarded (a shield whose origin points back at the edges); and
 * no request goes through more than VIA_MAX_OUTPOST Outpost hops, whatever the names.
 */
#define VIA_MAX_OUTPOST 8
static const char *via_refusal(const struct exchange *x)
{
    struct str me = x->w->edge->via; /* "1.1 NODE (outpost)" or "1.1 NODE (outpost shield)" */
    const char *sp = memchr(me.p, ' ', me.len);
    if (sp == NULL)
        return NULL;
    me = str_make(sp + 1, me.len - (size_t)(sp + 1 - me.p)); /* "NODE (outpost...)" */
    bool edge = x->w->edge->cfg->role == CONF_ROLE_EDGE;
    static const struct str tag = STR_LIT("(outpost");
    static const struct str shield_tag = STR_LIT("(outpost shield)");
    unsigned hops = 0;
    for (size_t i = 0; i < x->req.n; i++) {
        if (!str_caseeq_cstr(x->req.v[i].name, "via"))
            continue;
        struct str v = x->req.v[i].value;
        for (size_t at = 0; at < v.len; at++) {
            bool start = at > 0 && v.p[at - 1] == ' ';
            if (!start)
                continue;
            if (at + me.len <= v.len && memcmp(v.p + at, me.p, me.len) == 0) {
                size_t end = at + me.len;
                if (end == v.len || v.p[end] == ',' || v.p[end] == ' ')
                    return "loop detected: the request has passed through this node";
            }
            if (at + tag.len <= v.len && memcmp(v.p + at, tag.p, tag.len) == 0) {
                if (++hops >= VIA_MAX_OUTPOST)
                    return "loop detected: the request has passed through too many Outpost nodes";
                if (edge && at + shield_tag.len <= v.len &&
                    memcmp(v.p + at, shield_tag.p, shield_tag.len) == 0)
                    return "loop detected: a shield forwarded the request to an edge (check the "
                           "shield's origin)";
            }
        }
    }
    return NULL;
}

void exchange_start(struct exchange *x)
{
    struct edge *e = x->w->edge;
    const struct config *cfg = e->cfg;
    x->is_get = str_eq(x->method, STR_LIT("GET"));
    x->is_head = str_eq(x->method, STR_LIT("HEAD"));
    x->host = host_of(x->authority);
    const char *loop = via_refusal(x);
    if (loop != NULL) {
        METRIC_INC(x->w, rejected[REJECT_LOOP]);
        exchange_respond_error(x, 508, loop);
        return;
    }
    if (cfg->health_path != NULL && (x->is_get || x->is_head) &&
        str_eq(x->path, str_cstr(cfg->health_path))) {
        /* The node's own health, for shields' and load balancers' checks: never cached,
         * never forwarded; 503 once the node is stopping. */
        bool stopping = x->w->stopping;
        exchange_respond_error(x, stopping ? 503 : 200, stopping ? "stopping" : "ok");
        return;
    }
    x->site = conf_site_find(cfg, x->host);
    if (x->site == NULL) {
        exchange_respond_error(x, 421, "no site is configured for this host");
        return;
    }
    if (x->site->opts.https_redirect && !str_eq(x->scheme, STR_LIT("https"))) {
        redirect_to_https(x);
        return;
    }
    http_cc_parse(&x->req, "cache-control", &x->req_cc);
    if (!x->req_cc.present && http_headers_has_token(&x->req, "pragma", "no-cache"))
        x->req_cc.no_cache = true; /* RFC 9111 5.4: Pragma only without Cache-Control */
    if (x->expect_continue && x->req_has_body && x->ops->send_continue)
        x->ops->send_continue(x);
    /* The key: authority without the scheme's default port, then path and query. The scheme
     * is not part of it: http and https share objects (as Varnish and most CDNs do). */
    struct str auth = x->authority;
    if (str_eq(x->scheme, STR_LIT("https"))) {
        if (auth.len > 4 && memcmp(auth.p + auth.len - 4, ":443", 4) == 0)
            auth.len -= 4;
    } else if (auth.len > 3 && memcmp(auth.p + auth.len - 3, ":80", 3) == 0) {
        auth.len -= 3;
    }
    x->key =
        arena_printf(&x->arena, "%.*s%.*s", (int)auth.len, auth.p, (int)x->path.len, x->path.p);
    if (!x->is_get && !x->is_head) {
        bypass(x, true);
        return;
    }
    if (x->req_cc.no_store || x->req_has_body || x->key.len > CACHE_KEY_MAX) {
        bypass(x, false);
        return;
    }
    lookup(x, true);
}

static struct fetch_reader *reader_new(struct exchange *x)
{
    struct fetch_reader *r = arena_alloc(&x->arena, sizeof(*r));
    memset(r, 0, sizeof(*r));
    r->x = x;
    r->wake = event_new(x->w->base, -1, 0, reader_wake_cb, x);
    x->reader = r;
    return r;
}

/* Join a complete fetch of our key, if there is one, and take its object from the cache
 * once committed. Returns false (nothing changed) if there is none. */
static bool join_complete_fetch(struct exchange *x)
{
    struct fetch_reader *r = x->reader ? x->reader : reader_new(x);
    struct fetch *f = fetch_join(x->w->edge, x->key, r);
    if (f == NULL)
        return false;
    const struct fetch_head *h;
    if (fetch_get_state(f, &h) != FS_DONE) {
        detach_fetch(x);
        return false;
    }
    x->fetch = f;
    x->state = XS_WAIT_COMMIT;
    if (fetch_reader_wait_commit(r)) {
        detach_fetch(x);
        lookup(x, false);
    }
    return true;
}

/*
 * A fetch leaves the table only once its object is visible to cache_lookup() (put_done_cb in
 * fetch.c), but lookup() reads the cache first and the table second: a fetch that commits in
 * between is in neither, and the request would go to the origin again although the object is
 * stored. lookup() notes the table's generation before reading the cache; a miss that then
 * finds no fetch to join while the generation moved looks once more (a fetch that was in
 * flight at the first look has committed by now). Returns false if it already did.
 */
static bool look_again(struct exchange *x)
{
    if (x->looked_again)
        return false;
    x->looked_again = true;
    if (x->obj)
        cache_obj_unref(&x->obj);
    lookup(x, true);
    return true;
}

/* Look the key up and serve, revalidate or fetch. */
static void lookup(struct exchange *x, bool may_join)
{
    struct edge *e = x->w->edge;
    int64_t now = edge_now(e);
    struct cache_obj *obj = NULL;
    x->table_gen = fetch_table_gen(e); /* before the read: see look_again() */
    int err = cache_lookup(e->cache, x->key, &x->req, now, &obj);
    if (err == 0) {
        enum cache_decision d = cache_policy_decide(&obj->meta, &x->req_cc, now);
        switch (d) {
        case CACHE_USE_FRESH: {
            int64_t age = cache_policy_age(&obj->meta, now);
            bool stale = (obj->meta.flags & CACHE_F_STALE) || age >= obj->meta.freshness_lifetime;
            x->xcache = stale ? XCACHE_STALE : XCACHE_HIT;
            serve_obj(x, obj, NULL, NULL);
            return;
        }
        case CACHE_USE_STALE_REVALIDATE:
            if (!fetch_in_flight(e, x->key)) {
                struct fetch_params p = {
                    .key = x->key, .x = x, .validate = obj, .background = true};
                fetch_start(x->w, &p, NULL);
            }
            x->xcache = XCACHE_STALE;
            serve_obj(x, obj, NULL, NULL);
            return;
        case CACHE_REVALIDATE:
            if (x->req_cc.only_if_cached) {
                cache_obj_unref(&obj);
                exchange_respond_error(x, 504, "not cached (only-if-cached)");
                return;
            }
            x->obj = obj;
            start_fetch(x, obj, may_join);
            return;
        case CACHE_MISS:
        default:
            cache_obj_unref(&obj);
            break;
        }
    }
    if (x->req_cc.only_if_cached) {
        /* A complete fetch whose object is being committed counts as stored: wait for it.
         * A fetch still in flight does not (RFC 9111 5.2.1.7). */
        if (may_join &&
            (join_complete_fetch(x) || (fetch_table_gen(e) != x->table_gen && look_again(x))))
            return;
        exchange_respond_error(x, 504, "not cached (only-if-cached)");
        return;
    }
    start_fetch(x, NULL, may_join);
}

static void start_fetch(struct exchange *x, struct cache_obj *validate, bool may_join)
{
    struct edge *e = x->w->edge;
    int64_t now = edge_now(e);
    struct fetch_reader *r = x->reader;
    if (r == NULL) {
        r = arena_alloc(&x->arena, sizeof(*r));
        memset(r, 0, sizeof(*r));
        r->x = x;
        r->wake = event_new(x->w->base, -1, 0, reader_wake_cb, x);
        x->reader = r;
    }
    bool nocollapse = fetch_nocollapse_check(e, x->key, now);
    struct fetch_params p = {
        .key = x->key,
        .x = x,
        .validate = validate,
    };
    struct fetch *f;
    enum fetch_found how = FETCH_STARTED;
    if (may_join && !nocollapse) {
        f = fetch_join_or_start(x->w, &p, r, x->looked_again ? FETCH_ANY_GEN : x->table_gen, &how);
        if (how == FETCH_TABLE_CHANGED) {
            look_again(x);
            return;
        }
    } else {
        f = fetch_start(x->w, &p, r);
    }
    if (how == FETCH_JOINED) {
        const struct fetch_head *h;
        if (fetch_get_state(f, &h) == FS_DONE) {
            /* Complete, its commit pending: wait a moment and take it from the cache, so
             * that ranges, conditionals and freshness apply as for any hit. */
            x->fetch = f;
            x->state = XS_WAIT_COMMIT;
            if (fetch_reader_wait_commit(r)) {
                detach_fetch(x);
                lookup(x, false);
            }
            return;
        }
        x->xcache = XCACHE_COLLAPSED;
    } else {
        x->xcache = XCACHE_MISS;
    }
    x->fetch = f;
    x->state = XS_WAIT_FETCH;
    if (fetch_reader_wait(r) != FS_CONNECTING)
        on_fetch_head(x);
}

/* ---- streaming a fetch -------------------------------------------------------------------- */

static bool client_has_conditionals(const struct exchange *x)
{
    return http_headers_get(&x->req, "if-none-match") ||
           http_headers_get(&x->req, "if-modified-since") ||
           http_headers_get(&x->req, "if-match") ||
           http_headers_get(&x->req, "if-unmodified-since");
}

static void serve_stale_or_error(struct exchange *x, int status, const char *msg)
{
    int64_t now = edge_now(x->w->edge);
    if (x->obj && cache_policy_stale_on_error(&x->obj->meta, &x->req_cc, now)) {
        struct cache_obj *o = x->obj;
        x->obj = NULL;
        detach_fetch(x);
        x->xcache = XCACHE_STALE;
        serve_obj(x, o, NULL, NULL);
        return;
    }
    exchange_respond_error(x, status, msg);
}

static void on_fetch_head(struct exchange *x)
{
    const struct fetch_head *h;
    enum fetch_state st = fetch_get_state(x->fetch, &h);
    if (st == FS_CONNECTING) {
        if (fetch_reader_wait(x->reader) == FS_CONNECTING)
            return;
        st = fetch_get_state(x->fetch, &h);
    }
    if (st == FS_FAILED && h->status == 0) {
        serve_stale_or_error(x, h->timeout ? 504 : 502,
                             h->timeout ? "upstream timed out" : "upstream unavailable");
        return;
    }
    int64_t now = edge_now(x->w->edge);
    if (!x->reader->initiator) {
        /* We joined someone else's fetch: its answer must be one we could have taken from
         * the cache (shareable, our Vary variant) and, when it was already complete, fresh
         * enough for our request's Cache-Control. Otherwise ask the origin ourselves. */
        bool ok = h->shareable && fetch_vary_matches(x->fetch, &x->req);
        if (!ok) {
            detach_fetch(x);
            start_fetch(x, NULL, false);
            return;
        }
    }
    snprintf(x->upstream_addr, sizeof(x->upstream_addr), "%s", h->upstream_addr);
    x->upstream_first_byte_us = h->first_byte_us;
    if (h->status >= 500 && x->obj && x->xcache != XCACHE_BYPASS &&
        cache_policy_stale_on_error(&x->obj->meta, &x->req_cc, edge_now(x->w->edge))) {
        serve_stale_or_error(x, h->status, "upstream error");
        return;
    }
    if (h->obj) {
        /* 304 to our revalidation: serve the stored body with the refreshed headers. */
        struct http_headers *hh = xcalloc(1, sizeof(*hh));
        http_headers_init(hh);
        for (size_t i = 0; i < h->headers.n; i++)
            http_headers_add(hh, arena_strdup(&x->arena, h->headers.v[i].name),
                             arena_strdup(&x->arena, h->headers.v[i].value));
        struct cache_meta meta = h->meta;
        struct cache_obj *o = h->obj;
        cache_obj_ref(o);
        if (x->xcache != XCACHE_COLLAPSED)
            x->xcache = XCACHE_REVALIDATED;
        detach_fetch(x);
        if (x->obj)
            cache_obj_unref(&x->obj);
        serve_obj(x, o, hh, &meta);
        return;
    }
    if (x->obj)
        cache_obj_unref(&x->obj); /* a new representation replaces the stale one */
    /* Copy the head: it belongs to the fetch. */
    struct http_headers src;
    http_headers_init(&src);
    for (size_t i = 0; i < h->headers.n; i++)
        http_headers_add(&src, arena_strdup(&x->arena, h->headers.v[i].name),
                         arena_strdup(&x->arena, h->headers.v[i].value));
    x->status = h->status;
    bool shared = h->shareable;
    int64_t age = shared ? cache_policy_age(&h->meta, now) : -1;
    /* A response already stale when it arrives (a shield serving its stale copy while the
     * origin is down, with its Age past the lifetime) is stale for our client too. */
    if (shared && x->status < 300 && age > h->meta.freshness_lifetime &&
        (x->xcache == XCACHE_MISS || x->xcache == XCACHE_COLLAPSED))
        x->xcache = XCACHE_STALE;
    response_headers(x, &src, age, now);
    x->resp_length = h->content_length;
    x->no_body = x->is_head;
    if (shared && x->status == 200 && client_has_conditionals(x)) {
        const struct http_header *et = http_headers_get(&src, "etag");
        enum http_cond_result c =
            http_cond_evaluate(&x->req, et ? et->value : STR_NULL, h->meta.last_modified, true);
        if (c == HTTP_COND_NOT_MODIFIED) {
            x->status = 304;
            x->no_body = true;
            x->resp_length = -1;
        } else if (c == HTTP_COND_FAILED) {
            http_headers_fini(&src);
            exchange_respond_error(x, 412, "precondition failed");
            return;
        }
    }
    http_headers_fini(&src);
    if (x->status == 304 || x->status == 204 || (x->status >= 100 && x->status < 200)) {
        x->no_body = true;
        x->resp_length = -1;
    }
    x->ops->send_head(x);
    x->head_sent = true;
    if (x->no_body) {
        finish(x);
        return;
    }
    x->state = XS_STREAM_FETCH;
    pump_fetch(x);
}

static void pump_fetch(struct exchange *x)
{
    if (x->tmp == NULL)
        x->tmp = evbuffer_new();
    for (;;) {
        size_t space = x->ops->body_space(x);
        if (space == 0)
            return; /* exchange_on_writable() resumes */
        bool eof = false, failed = false;
        size_t n =
            fetch_read(x->reader, x->tmp, space < READ_MAX ? space : READ_MAX, &eof, &failed);
        if (n) {
            x->body_sent += n;
            x->ops->send_body(x, x->tmp);
            fetch_reader_progress(x->reader);
        }
        if (failed) {
            abort_exchange(x);
            return;
        }
        if (eof) {
            finish(x);
            return;
        }
        if (n == 0)
            return; /* the fetch wakes us */
    }
}

void exchange_on_writable(struct exchange *x)
{
    if (x->state == XS_STREAM_FETCH)
        pump_fetch(x);
    else if (x->state == XS_STREAM_OBJ)
        pump_obj(x);
}

void exchange_on_req_body(struct exchange *x, struct evbuffer *data, bool eof)
{
    if (eof)
        x->req_body_done = true;
    if (x->body_buffering) {
        evbuffer_add_buffer(x->req_body, data);
        if (eof || evbuffer_get_length(x->req_body) >= REQ_BUFFER)
            bypass_start(x);
        return;
    }
    if (x->fetch && x->xcache == XCACHE_BYPASS) {
        fetch_send_req_body(x->fetch, data, eof);
        if (!eof && fetch_req_body_full(x->fetch))
            x->ops->pause_body(x);
        return;
    }
    /* A body nobody will forward (answered from the cache, or an error): discard. */
    evbuffer_drain(data, evbuffer_get_length(data));
}

void exchange_on_req_drain(struct exchange *x)
{
    if (!x->req_body_done)
        x->ops->resume_body(x);
}

/* ---- serving a stored object -------------------------------------------------------------- */

static const char *const not_modified_fields[] = {"cache-control", "content-location", "date",
                                                  "etag",          "expires",          "vary"};

static void serve_not_modified(struct exchange *x, const struct http_headers *src, int64_t age,
                               int64_t now)
{
    struct http_headers keep;
    http_headers_init(&keep);
    bool has_etag = http_headers_get(src, "etag") != NULL;
    for (size_t i = 0; i < src->n; i++) {
        struct str n = src->v[i].name;
        bool ok = false;
        for (size_t k = 0; k < ARRAY_SIZE(not_modified_fields); k++)
            if (str_caseeq_cstr(n, not_modified_fields[k]))
                ok = true;
        if (!has_etag && str_caseeq_cstr(n, "last-modified"))
            ok = true; /* RFC 9110 15.4.5: useful when there is no ETag */
        if (ok)
            http_headers_add(&keep, n, src->v[i].value);
    }
    x->status = 304;
    response_headers(x, &keep, age, now);
    http_headers_fini(&keep);
    x->no_body = true;
    x->resp_length = -1;
    x->ops->send_head(x);
    x->head_sent = true;
    finish(x);
}

static void serve_obj(struct exchange *x, struct cache_obj *obj, struct http_headers *headers,
                      const struct cache_meta *meta)
{
    int64_t now = edge_now(x->w->edge);
    if (x->obj && x->obj != obj)
        cache_obj_unref(&x->obj);
    x->obj = obj;
    x->obj_headers = headers;
    const struct http_headers *src = headers ? headers : &obj->headers;
    const struct cache_meta *m = meta ? meta : &obj->meta;
    int64_t age = cache_policy_age(m, now);
    const struct http_header *et = http_headers_get(src, "etag");
    /* RFC 9111 4.3.2: without Last-Modified, the stored Date stands in for If-Modified-Since;
     * RFC 9110 13.1.5: for If-Range a date is a strong validator only if it is at least one
     * second older than the response's Date. */
    const struct http_header *ims = http_headers_get(&x->req, "if-modified-since");
    const struct http_header *rh = http_headers_get(&x->req, "range");
    const struct http_header *ir = http_headers_get(&x->req, "if-range");
    /* The stored Date is parsed only for the requests that need it, not on every hit. */
    int64_t date = -1;
    if ((ims && m->last_modified < 0) || (ir && m->last_modified >= 0)) {
        const struct http_header *dh = http_headers_get(src, "date");
        if (dh == NULL || http_date_parse(dh->value, &date) != 0)
            date = -1;
    }
    int64_t ims_validator = m->last_modified >= 0 ? m->last_modified : date;
    int64_t range_validator = (m->last_modified >= 0 && date >= 0 && date - m->last_modified >= 1)
                                  ? m->last_modified
                                  : -1;
    struct http_headers cond_req = x->req;
    int64_t ims_t;
    bool drop_ims = ims && http_date_parse(ims->value, &ims_t) == 0 && ims_t > now;
    struct http_headers filtered;
    http_headers_init(&filtered);
    if (drop_ims) {
        /* a date in the future is not a valid If-Modified-Since (RFC 9110 13.1.3) */
        for (size_t i = 0; i < x->req.n; i++)
            if (!str_caseeq_cstr(x->req.v[i].name, "if-modified-since"))
                http_headers_add(&filtered, x->req.v[i].name, x->req.v[i].value);
        cond_req = filtered;
    }
    enum http_cond_result c = http_cond_evaluate(&cond_req, et ? et->value : STR_NULL,
                                                 ims_validator, x->is_get || x->is_head);
    http_headers_fini(&filtered);
    if (c == HTTP_COND_NOT_MODIFIED && obj->status == 200) {
        serve_not_modified(x, src, age, now);
        return;
    }
    if (c == HTTP_COND_FAILED) {
        exchange_respond_error(x, 412, "precondition failed");
        return;
    }
    x->status = obj->status;
    uint64_t len = obj->body_len;
    x->n_ranges = 0;
    x->multipart = false;
    if (rh && x->is_get && obj->status == 200 &&
        (ir == NULL || http_if_range_ok(ir->value, et ? et->value : STR_NULL, range_validator))) {
        size_t n = 0;
        enum http_range_result rr =
            http_range_parse(rh->value, len, x->ranges, ARRAY_SIZE(x->ranges), &n);
        if (rr == HTTP_RANGE_UNSATISFIABLE) {
            x->status = 416;
            response_headers(x, src, age, now);
            http_headers_remove(&x->resp, "content-type");
            http_headers_remove(&x->resp, "content-range");
            add_hdr(x, "Content-Range",
                    arena_printf(&x->arena, "bytes */%llu", (unsigned long long)len));
            x->resp_length = 0;
            x->no_body = true;
            x->ops->send_head(x);
            x->head_sent = true;
            finish(x);
            return;
        }
        if (rr == HTTP_RANGE_OK && n > 0)
            x->n_ranges = n;
    }
    response_headers(x, src, age, now);
    if (x->n_ranges == 1) {
        x->status = 206;
        add_hdr(x, "Content-Range",
                arena_printf(&x->arena, "bytes %llu-%llu/%llu",
                             (unsigned long long)x->ranges[0].first,
                             (unsigned long long)x->ranges[0].last, (unsigned long long)len));
        x->resp_length = (int64_t)(x->ranges[0].last - x->ranges[0].first + 1);
    } else if (x->n_ranges > 1) {
        x->status = 206;
        x->multipart = true;
        const struct http_header *ct = http_headers_get(src, "content-type");
        x->boundary = arena_printf(&x->arena, "outpost%016llx%08x", (unsigned long long)obj->id,
                                   (unsigned)x->body_sent ^ 0x5bd1e995u);
        int64_t total = 0;
        for (size_t i = 0; i < x->n_ranges; i++) {
            struct str ph = arena_printf(
                &x->arena, "\r\n--%.*s\r\n%s%.*s%sContent-Range: bytes %llu-%llu/%llu\r\n\r\n",
                (int)x->boundary.len, x->boundary.p, ct ? "Content-Type: " : "",
                ct ? (int)ct->value.len : 0, ct ? ct->value.p : "", ct ? "\r\n" : "",
                (unsigned long long)x->ranges[i].first, (unsigned long long)x->ranges[i].last,
                (unsigned long long)len);
            total += (int64_t)ph.len + (int64_t)(x->ranges[i].last - x->ranges[i].first + 1);
        }
        total += (int64_t)x->boundary.len + 8; /* "\r\n--" B "--\r\n" */
        http_headers_remove(&x->resp, "content-type");
        add_hdr(x, "Content-Type",
                arena_printf(&x->arena, "multipart/byteranges; boundary=%.*s", (int)x->boundary.len,
                             x->boundary.p));
        x->resp_length = total;
    } else {
        if (len > 0) {
            x->ranges[0].first = 0;
            x->ranges[0].last = len - 1;
            x->n_ranges = 1;
        }
        x->resp_length = (int64_t)len;
        if (x->status == 304 || x->status == 204)
            x->resp_length = -1;
    }
    x->no_body = x->is_head || x->status == 204 || x->status == 304;
    x->ops->send_head(x);
    x->head_sent = true;
    if (x->no_body || x->n_ranges == 0) {
        finish(x);
        return;
    }
    x->range_idx = 0;
    x->range_pos = x->ranges[0].first;
    x->part_state = 0;
    x->state = XS_STREAM_OBJ;
    pump_obj(x);
}

struct direct_sink {
    struct exchange *x;
    size_t skip;
    size_t max;
    size_t taken;
};

static void direct_sink_fn(void *arg, const void *data, size_t len)
{
    struct direct_sink *d = arg;
    if (d->skip >= len)
        return;
    size_t n = len - d->skip;
    if (n > d->max)
        n = d->max;
    /* Inside the read transaction: the transport never blocks here (non-blocking send, else
     * a bounded copy), so no reader waits on a slow client (STYLE.md rule 21). */
    d->taken = d->x->ops->send_direct(d->x, (const char *)data + d->skip, n);
}

static void pump_obj(struct exchange *x)
{
    struct cache_obj *o = x->obj;
    if (x->tmp == NULL)
        x->tmp = evbuffer_new();
    const struct http_header *ct = NULL;
    for (;;) {
        size_t space = x->ops->body_space(x);
        if (space == 0)
            return;
        if (x->range_idx >= x->n_ranges) {
            if (x->multipart)
                evbuffer_add_printf(x->tmp, "\r\n--%.*s--\r\n", (int)x->boundary.len,
                                    x->boundary.p);
            if (evbuffer_get_length(x->tmp))
                x->ops->send_body(x, x->tmp);
            finish(x);
            return;
        }
        struct http_range *r = &x->ranges[x->range_idx];
        if (x->multipart && x->part_state == 0) {
            if (ct == NULL)
                ct =
                    http_headers_get(x->obj_headers ? x->obj_headers : &o->headers, "content-type");
            evbuffer_add_printf(x->tmp, "\r\n--%.*s\r\n", (int)x->boundary.len, x->boundary.p);
            if (ct)
                evbuffer_add_printf(x->tmp, "Content-Type: %.*s\r\n", (int)ct->value.len,
                                    ct->value.p);
            evbuffer_add_printf(x->tmp, "Content-Range: bytes %llu-%llu/%llu\r\n\r\n",
                                (unsigned long long)r->first, (unsigned long long)r->last,
                                (unsigned long long)o->body_len);
            x->part_state = 1;
        }
        uint64_t want = r->last - x->range_pos + 1;
        if (want > space)
            want = space;
        if (want > READ_MAX)
            want = READ_MAX;
        if (o->n_chunks == 0) {
            evbuffer_add(x->tmp, o->body.p + x->range_pos, (size_t)want);
        } else {
            uint32_t ci = (uint32_t)(x->range_pos / CACHE_CHUNK_SIZE);
            size_t off = (size_t)(x->range_pos % CACHE_CHUNK_SIZE);
            if (x->ops->send_direct && !x->multipart && evbuffer_get_length(x->tmp) == 0) {
                struct direct_sink ds = {x, off, (size_t)want, 0};
                int err = cache_chunk_read(x->w->edge->cache, o->id, ci, direct_sink_fn, &ds);
                if (err != 0) {
                    log_ratelimited(LOG_WARN, "cache: object %llu chunk %u unreadable (%s)",
                                    (unsigned long long)o->id, ci, op_strerror(err));
                    abort_exchange(x);
                    return;
                }
                if (ds.taken == 0 && x->ops->body_space(x) == 0)
                    return; /* the connection is full: exchange_on_writable() resumes */
                if (ds.taken == 0)
                    goto copy; /* the transport cannot send this directly */
                x->range_pos += ds.taken;
                x->body_sent += ds.taken;
                if (x->range_pos > r->last) {
                    x->range_idx++;
                    x->part_state = 0;
                    if (x->range_idx < x->n_ranges)
                        x->range_pos = x->ranges[x->range_idx].first;
                }
                continue;
            }
        copy:;
            struct edge_slice ss = {x->tmp, off, (size_t)want, 0};
            int err = cache_chunk_read(x->w->edge->cache, o->id, ci, edge_slice_sink, &ss);
            if (err != 0 || ss.copied == 0) {
                log_ratelimited(LOG_WARN, "cache: object %llu chunk %u unreadable (%s)",
                                (unsigned long long)o->id, ci, op_strerror(err));
                abort_exchange(x);
                return;
            }
            want = ss.copied;
        }
        x->range_pos += want;
        x->body_sent += want;
        if (x->range_pos > r->last) {
            x->range_idx++;
            x->part_state = 0;
            if (x->range_idx < x->n_ranges)
                x->range_pos = x->ranges[x->range_idx].first;
            continue; /* the closing boundary or the next part goes in the same write */
        }
        x->ops->send_body(x, x->tmp);
    }
}

/* ---- access log --------------------------------------------------------------------------- */

void exchange_log(struct exchange *x)
{
    struct edge *e = x->w->edge;
    metrics_count_request(x->w, x->xcache, x->status);
    if (e->access_log == NULL)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    double total_ms = (double)(edge_mono_us() - x->t_start_us) / 1000.0;
    char fb[32];
    if (x->upstream_first_byte_us >= 0)
        snprintf(fb, sizeof(fb), "%.3f", (double)x->upstream_first_byte_us / 1000.0);
    else
        snprintf(fb, sizeof(fb), "-");
    /* The protocol as nginx writes $server_protocol: HTTP/1.0, HTTP/1.1, HTTP/2.0 */
    const char *proto = x->http_minor == 0 ? "HTTP/1.0" : "HTTP/1.1";
    if (strcmp(x->ops->name, "HTTP/2") == 0)
        proto = "HTTP/2.0";
    else if (strcmp(x->ops->name, "HTTP/3") == 0)
        proto = "HTTP/3.0";
    char line[2048];
    int n = snprintf(
        line, sizeof(line), "%s.%03ldZ %s \"%.*s %.*s %s\" %d %llu %s %s %.3f %s \"%.*s\"\n", when,
        ts.tv_nsec / 1000000, x->client_addr[0] ? x->client_addr : "-",
        x->method.len ? (int)x->method.len : 1, x->method.len ? x->method.p : "-",
        x->path.len ? (int)(x->path.len > 1024 ? 1024 : x->path.len) : 1,
        x->path.len ? x->path.p : "-", proto, x->status, (unsigned long long)x->body_sent,
        x->xcache == XCACHE_NONE ? "-" : xcache_name(x->xcache),
        x->upstream_addr[0] ? x->upstream_addr : "-", total_ms, fb,
        x->host.len ? (int)x->host.len : 1, x->host.len ? x->host.p : "-");
    if (n <= 0)
        return;
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    pthread_mutex_lock(&e->log_lock);
    fwrite(line, 1, (size_t)n, e->access_log);
    pthread_mutex_unlock(&e->log_lock);
}
