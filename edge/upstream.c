/*
 * edge/upstream.c: the HTTP/1.1 client to origin servers, with a keep-alive pool per origin
 * server per worker. Runs on the worker that owns the fetch; shares nothing across threads.
 *
 * A fetch hands over a serialised request head and the server its balancing chose (edge/
 * upgroup.c: a shield or an origin server); the upstream reuses an idle connection to that
 * server or connects, sends the head and any request body, parses the response head with
 * the pure parser of edge/h1/parse.c, de-frames the body (Content-Length, chunked or
 * close-delimited) and calls back. A reused connection that the server had closed (a reset
 * before any response byte, no request body sent yet) is retried once on a fresh connection,
 * transparently: keep-alive races are not errors. Timeouts: connect, first byte, idle between
 * body reads. Response bodies stop being read while the fetch is paused (back-pressure).
 *
 * Each request is counted in the worker's balance of its group while it is in flight (least
 * connections, max_conns) and its outcome goes to the server's passive health: the response
 * head (a 5xx is a failure) or the error before it.
 *
 * Bridging (upstream_tls): the socket bufferevent is wrapped in a libevent filter whose two
 * callbacks run the TLS record layer (edge/tlsbev.h), so everything above sees plaintext exactly
 * as for a plain connection, and keep-alive reuse works the same. The certificate is verified
 * against the site's CA and name (SNI sent); a failed handshake fails the request like a
 * reset, with the reason in the log.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "edge/edge_int.h"
#include "edge/tlsbev.h"
#include "lib/log.h"
#include "lib/util.h"

#define UPSTREAM_MAX_HEADERS 128
#define UPSTREAM_MAX_HEAD (64 * 1024)

enum ustate {
    U_IDLE = 0,
    U_CONNECTING = 1,
    U_WAIT_HEAD = 2,
    U_BODY = 3,
    U_DONE = 4,
};

enum utimer {
    UT_NONE = 0,
    UT_CONNECT = 1,
    UT_FIRST_BYTE = 2,
    UT_IDLE = 3,
    UT_POOL = 4,
    UT_TLS_FAILED = 5, /* fail the request on the next loop turn (from inside the filter) */
};

struct upstream_pool {
    struct up_server *srv;
    struct worker_group *wg;
    bool tls_wanted; /* the group speaks TLS */
    struct tls_client *tls; /* its verification context and session cache */
    const char *tls_name; /* SNI and name to verify */
    struct upstream *idle;
    size_t n_idle;
};

struct upstream {
    struct worker *w;
    struct upstream_pool *pool;
    struct bufferevent *bev;
    const struct upstream_cbs *cbs;
    void *arg;
    enum ustate state;
    bool head_request;
    bool reused;
    bool any_byte;
    bool body_started; /* request body bytes sent: no transparent retry */
    bool counted; /* in flight in the group's balance (balance_conn_start) */
    bool req_eof;
    struct evbuffer *head_copy; /* the request head, for a transparent retry */
    struct h1_response resp;
    struct http_header hdrs[UPSTREAM_MAX_HEADERS];
    char *head_mem;
    enum h1_body body;
    uint64_t left;
    struct h1_chunked chunked;
    bool paused;
    bool keep_alive;
    struct event *timer;
    enum utimer timer_kind;
    struct upstream *next_idle;
    bool in_cb;
    bool dead; /* freed at the end of the callback */
    bool eof_seen; /* the server closed its side */
    struct tls_bev tls; /* bridging: the TLS session under u->bev (tls.active) */
};

static void up_read_cb(struct bufferevent *bev, void *arg);
static void up_write_cb(struct bufferevent *bev, void *arg);
static void up_event_cb(struct bufferevent *bev, short what, void *arg);
static void up_free(struct upstream *u);

struct upstream_pool *upstream_pool_new(struct worker *w, struct up_server *s)
{
    struct upstream_pool *p = xcalloc(1, sizeof(*p));
    struct up_group *g = s->g;
    p->srv = s;
    p->wg = &w->groups[g->idx];
    if (g->tls) {
        char err[400];
        p->tls_wanted = true;
        p->tls_name = g->tls_name ? g->tls_name : s->conf->addr.host;
        if (tls_client_new(g->tls_ca, g->tls_verify, &p->tls, err, sizeof(err)) < 0 && w->id == 0)
            log_msg(LOG_ERR, "upstream %s: %s", s->conf->addr.text, err);
    }
    return p;
}

void upstream_pool_free(struct upstream_pool **pp)
{
    struct upstream_pool *p = *pp;
    if (p == NULL)
        return;
    while (p->idle) {
        struct upstream *u = p->idle;
        p->idle = u->next_idle;
        up_free(u);
    }
    tls_client_free(&p->tls);
    free(p);
    *pp = NULL;
}

/* The request leaves the group's in-flight count (once). */
static void uncount(struct upstream *u)
{
    if (!u->counted)
        return;
    u->counted = false;
    balance_conn_end(u->pool->wg->bal, (int)u->pool->srv->idx);
    atomic_fetch_sub_explicit(&u->pool->srv->active, 1, memory_order_relaxed);
}

static void timer_arm(struct upstream *u, enum utimer kind, int64_t ms)
{
    u->timer_kind = kind;
    edge_timer_arm(u->timer, kind == UT_NONE ? 0 : ms);
}

static void up_free(struct upstream *u)
{
    if (u->in_cb) {
        u->dead = true;
        return;
    }
    if (u->timer)
        event_free(u->timer);
    if (u->bev)
        bufferevent_free(u->bev); /* and the socket under a TLS filter */
    tls_bev_fini(&u->tls);
    if (u->head_copy)
        evbuffer_free(u->head_copy);
    free(u->head_mem);
    free(u);
}

static void pool_remove_idle(struct upstream *u)
{
    struct upstream **pp = &u->pool->idle;
    while (*pp && *pp != u)
        pp = &(*pp)->next_idle;
    if (*pp) {
        *pp = u->next_idle;
        u->pool->n_idle--;
    }
}

/* Fail the current request; may retry transparently on a fresh connection. */
static void up_fail(struct upstream *u, enum upstream_err err);

/* From inside the TLS filter (tlsbev.h): fail the request on the next loop turn, since failing
 * here would free the bufferevent inside its own callback. */
static void up_tls_error(void *arg, bool handshake_done)
{
    struct upstream *u = arg;
    char why[200];
    log_ratelimited(LOG_WARN, "upstream %s: TLS %s: %s", u->pool->srv->conf->addr.text,
                    handshake_done ? "error" : "handshake failed",
                    tls_bev_error(&u->tls, why, sizeof(why)));
    timer_arm(u, UT_TLS_FAILED, 1);
}

static bool up_connect(struct upstream *u)
{
    const struct config *cfg = u->w->edge->cfg;
    const struct up_server *srv = u->pool->srv;
    if (!srv->resolved)
        return false;
    if (u->pool->tls_wanted && u->pool->tls == NULL)
        return false; /* the CA could not be loaded: logged at start */
    struct bufferevent *sock = bufferevent_socket_new(u->w->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (sock == NULL)
        return false;
    u->bev = sock;
    if (u->pool->tls != NULL) {
        /* (a transparent retry starts a new session) */
        u->bev = tls_bev_open(&u->tls, sock, tls_client_ssl(u->pool->tls, u->pool->tls_name, NULL),
                              up_tls_error, u);
        if (u->bev == NULL) {
            bufferevent_free(sock);
            return false;
        }
    }
    bufferevent_setcb(u->bev, up_read_cb, up_write_cb, up_event_cb, u);
    bufferevent_setwatermark(u->bev, EV_WRITE, 64 * 1024, 0);
    if (bufferevent_socket_connect(sock, (struct sockaddr *)&srv->ss, (int)srv->sslen) < 0)
        return false;
    evutil_socket_t fd = bufferevent_getfd(sock);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    u->state = U_CONNECTING;
    timer_arm(u, UT_CONNECT, cfg->upstream_connect_timeout_ms);
    bufferevent_enable(u->bev, EV_READ | EV_WRITE);
    return true;
}

static void up_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *u = arg;
    if (u->timer_kind == UT_POOL || u->state == U_IDLE) {
        pool_remove_idle(u);
        up_free(u);
        return;
    }
    up_fail(u, u->timer_kind == UT_CONNECT || u->timer_kind == UT_TLS_FAILED ? UPERR_CONNECT
                                                                             : UPERR_TIMEOUT);
}

struct upstream *upstream_request(struct worker *w, size_t group, int server, struct evbuffer *head,
                                  bool head_request, const struct upstream_cbs *cbs, void *arg)
{
    struct worker_group *wg = &w->groups[group];
    struct upstream_pool *pool = wg->pools[server];
    balance_conn_start(wg->bal, server);
    atomic_fetch_add_explicit(&pool->srv->active, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool->srv->picks, 1, memory_order_relaxed);
    struct upstream *u = pool->idle;
    if (u) {
        pool->idle = u->next_idle;
        pool->n_idle--;
        u->reused = true;
        timer_arm(u, UT_NONE, 0);
    } else {
        u = xcalloc(1, sizeof(*u));
        u->w = w;
        u->pool = pool;
        u->timer = evtimer_new(w->base, up_timer_cb, u);
    }
    u->counted = true; /* from here on, each way out ends with uncount() */
    if (u->bev == NULL && !up_connect(u)) { /* a new connection that cannot even start */
        uncount(u);
        up_free(u);
        up_server_record(pool->srv, HEALTH_CONNECT_ERROR);
        METRIC_INC(w, upstream_errors[UPERR_CONNECT]);
        return NULL;
    }
    u->cbs = cbs;
    u->arg = arg;
    u->head_request = head_request;
    u->any_byte = false;
    u->body_started = false;
    u->req_eof = false;
    u->paused = false;
    u->next_idle = NULL;
    if (u->head_copy == NULL)
        u->head_copy = evbuffer_new();
    evbuffer_drain(u->head_copy, evbuffer_get_length(u->head_copy));
    size_t hlen = evbuffer_get_length(head);
    evbuffer_add(u->head_copy, evbuffer_pullup(head, -1), hlen);
    evbuffer_add_buffer(bufferevent_get_output(u->bev), head);
    if (u->state != U_CONNECTING) {
        u->state = U_WAIT_HEAD;
        timer_arm(u, UT_FIRST_BYTE, w->edge->cfg->upstream_first_byte_timeout_ms);
    }
    bufferevent_enable(u->bev, EV_READ | EV_WRITE);
    METRIC_INC(w, upstream_requests);
    return u;
}

const char *upstream_addr(struct upstream *u)
{
    return u->pool->srv->conf->addr.text;
}

void upstream_send_body(struct upstream *u, struct evbuffer *data, bool eof)
{
    if (data && evbuffer_get_length(data)) {
        u->body_started = true;
        evbuffer_add_buffer(bufferevent_get_output(u->bev), data);
    }
    if (eof)
        u->req_eof = true;
}

size_t upstream_req_pending(struct upstream *u)
{
    return evbuffer_get_length(bufferevent_get_output(u->bev));
}

void upstream_pause(struct upstream *u)
{
    u->paused = true;
    bufferevent_disable(u->bev, EV_READ);
    if (u->timer_kind == UT_IDLE)
        timer_arm(u, UT_NONE, 0);
}

static void up_process(struct upstream *u);

void upstream_resume(struct upstream *u)
{
    if (!u->paused)
        return;
    u->paused = false;
    bufferevent_enable(u->bev, EV_READ);
    if (u->state == U_BODY)
        timer_arm(u, UT_IDLE, u->w->edge->cfg->upstream_idle_timeout_ms);
    if (u->eof_seen || evbuffer_get_length(bufferevent_get_input(u->bev)) > 0)
        bufferevent_trigger(u->bev, EV_READ, BEV_TRIG_DEFER_CALLBACKS | BEV_TRIG_IGNORE_WATERMARKS);
}

void upstream_abandon(struct upstream *u)
{
    u->cbs = NULL;
    uncount(u);
    up_free(u);
}

static void up_release(struct upstream *u)
{
    /* Back to the pool if the exchange on this connection is complete and clean. */
    const struct config *cfg = u->w->edge->cfg;
    u->cbs = NULL;
    u->arg = NULL;
    uncount(u);
    if (u->keep_alive && u->req_eof && evbuffer_get_length(bufferevent_get_input(u->bev)) == 0 &&
        evbuffer_get_length(bufferevent_get_output(u->bev)) == 0 &&
        u->pool->n_idle < cfg->upstream_keepalive && !u->w->stopping) {
        u->state = U_IDLE;
        u->next_idle = u->pool->idle;
        u->pool->idle = u;
        u->pool->n_idle++;
        free(u->head_mem);
        u->head_mem = NULL;
        bufferevent_enable(u->bev, EV_READ);
        timer_arm(u, UT_POOL, cfg->upstream_idle_timeout_ms);
        return;
    }
    up_free(u);
}

static void up_fail(struct upstream *u, enum upstream_err err)
{
    const struct upstream_cbs *cbs = u->cbs;
    void *arg = u->arg;
    /* Keep-alive race: the server closed the idle connection as we reused it. */
    if (u->reused && !u->any_byte && !u->body_started && err == UPERR_RESET && cbs &&
        u->head_copy && evbuffer_get_length(u->head_copy) > 0) {
        bufferevent_free(u->bev);
        u->bev = NULL;
        u->reused = false;
        if (up_connect(u)) {
            size_t hlen = evbuffer_get_length(u->head_copy);
            evbuffer_add(bufferevent_get_output(u->bev), evbuffer_pullup(u->head_copy, -1), hlen);
            return;
        }
    }
    METRIC_INC(u->w, upstream_errors[err]);
    bool any = u->any_byte;
    if (cbs != NULL && (u->state == U_CONNECTING || u->state == U_WAIT_HEAD))
        up_server_record(u->pool->srv,
                         err == UPERR_TIMEOUT ? HEALTH_TIMEOUT : HEALTH_CONNECT_ERROR);
    u->cbs = NULL;
    uncount(u);
    up_free(u);
    if (cbs)
        cbs->on_error(arg, err, any);
}

static void up_process(struct upstream *u)
{
    const struct config *cfg = u->w->edge->cfg;
    struct evbuffer *in = bufferevent_get_input(u->bev);
    if (u->state == U_IDLE) {
        /* Bytes or EOF on an idle connection: it cannot be reused. */
        pool_remove_idle(u);
        up_free(u);
        return;
    }
    while (u->state == U_WAIT_HEAD) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0) {
            if (u->eof_seen)
                up_fail(u, UPERR_RESET);
            return;
        }
        u->any_byte = true;
        size_t want = avail < UPSTREAM_MAX_HEAD ? avail : UPSTREAM_MAX_HEAD;
        const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)want);
        struct h1_limits lim = {UPSTREAM_MAX_HEAD, UPSTREAM_MAX_HEADERS, UPSTREAM_MAX_HEAD};
        memset(&u->resp, 0, sizeof(u->resp));
        u->resp.headers = u->hdrs;
        int r = h1_parse_response(buf, want, &u->resp, &lim, u->head_request);
        if (r == H1_INCOMPLETE) {
            if (u->eof_seen)
                up_fail(u, UPERR_PROTOCOL);
            return;
        }
        if (r == H1_INVALID) {
            log_ratelimited(LOG_WARN, "upstream %s: invalid response head",
                            u->pool->srv->conf->addr.text);
            up_fail(u, UPERR_PROTOCOL);
            return;
        }
        free(u->head_mem);
        u->head_mem = xmemdup(buf, (size_t)r);
        for (size_t i = 0; i < u->resp.n_headers; i++) {
            u->hdrs[i].name.p = u->head_mem + (u->hdrs[i].name.p - buf);
            u->hdrs[i].value.p = u->head_mem + (u->hdrs[i].value.p - buf);
        }
        u->resp.reason.p = u->head_mem + (u->resp.reason.p - buf);
        evbuffer_drain(in, (size_t)r);
        if (u->resp.status >= 100 && u->resp.status < 200) {
            /* Interim responses are consumed here (101 is never requested). */
            continue;
        }
        u->body = u->resp.body;
        u->left = u->resp.content_length;
        u->keep_alive = u->resp.keep_alive;
        memset(&u->chunked, 0, sizeof(u->chunked));
        u->state = U_BODY;
        timer_arm(u, UT_IDLE, cfg->upstream_idle_timeout_ms);
        /* A shield's 5xx speaks for its origin, not for the shield: only origin servers'
         * 5xx count against them (else an origin outage would eject every shield). */
        bool bad = u->resp.status >= 500 && !u->pool->srv->g->shield;
        up_server_record(u->pool->srv, bad ? HEALTH_HTTP_5XX : HEALTH_OK);
        u->in_cb = true;
        u->cbs->on_head(u->arg, &u->resp, u->head_mem);
        u->in_cb = false;
        if (u->dead || u->cbs == NULL) {
            u->dead = false;
            up_free(u);
            return;
        }
        if (u->body == H1_BODY_NONE || (u->body == H1_BODY_LENGTH && u->left == 0)) {
            u->state = U_DONE;
        }
    }
    while (u->state == U_BODY && !u->paused) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            break;
        if (u->body == H1_BODY_LENGTH || u->body == H1_BODY_CLOSE) {
            size_t n = avail;
            if (u->body == H1_BODY_LENGTH && n > u->left)
                n = (size_t)u->left;
            if (n > 256 * 1024)
                n = 256 * 1024;
            const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
            u->in_cb = true;
            u->cbs->on_body(u->arg, p, n);
            u->in_cb = false;
            evbuffer_drain(in, n);
            if (u->dead || u->cbs == NULL) {
                u->dead = false;
                up_free(u);
                return;
            }
            if (u->body == H1_BODY_LENGTH) {
                u->left -= n;
                if (u->left == 0)
                    u->state = U_DONE;
            }
        } else {
            size_t n = avail < 65536 ? avail : 65536;
            const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
            size_t off = 0, dlen = 0;
            bool done = false;
            int r = h1_chunked_decode(&u->chunked, p, n, &off, &dlen, &done);
            if (r < 0) {
                up_fail(u, UPERR_PROTOCOL);
                return;
            }
            if (dlen) {
                u->in_cb = true;
                u->cbs->on_body(u->arg, p + off, dlen);
                u->in_cb = false;
                if (u->dead || u->cbs == NULL) {
                    u->dead = false;
                    up_free(u);
                    return;
                }
            }
            evbuffer_drain(in, (size_t)r);
            if (done)
                u->state = U_DONE;
            else if (r == 0)
                break;
        }
    }
    if (u->eof_seen && !u->paused && evbuffer_get_length(in) == 0) {
        if (u->state == U_BODY && u->body == H1_BODY_CLOSE) {
            u->state = U_DONE;
            u->keep_alive = false;
        } else if (u->state != U_DONE) {
            up_fail(u, UPERR_RESET);
            return;
        }
    }
    if (u->state == U_BODY && !u->paused)
        timer_arm(u, UT_IDLE, cfg->upstream_idle_timeout_ms);
    if (u->state == U_DONE) {
        timer_arm(u, UT_NONE, 0);
        const struct upstream_cbs *cbs = u->cbs;
        void *arg = u->arg;
        if (evbuffer_get_length(in) > 0)
            u->keep_alive = false; /* bytes after the response: don't trust the connection */
        u->in_cb = true;
        cbs->on_done(arg);
        u->in_cb = false;
        if (u->dead) {
            u->dead = false;
            up_free(u);
            return;
        }
        up_release(u);
    }
}

static void up_read_cb(struct bufferevent *bev, void *arg)
{
    up_process(arg);
}

static void up_write_cb(struct bufferevent *bev, void *arg)
{
    struct upstream *u = arg;
    if (u->cbs && u->cbs->on_req_drain && u->state != U_IDLE) {
        u->in_cb = true;
        u->cbs->on_req_drain(u->arg);
        u->in_cb = false;
        if (u->dead) {
            u->dead = false;
            up_free(u);
        }
    }
}

static void up_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct upstream *u = arg;
    if (what & BEV_EVENT_CONNECTED) {
        if (u->tls.active) /* the request waits in the filter until the handshake */
            tls_bev_connected(&u->tls);
        if (u->state == U_CONNECTING) {
            u->state = U_WAIT_HEAD;
            timer_arm(u, UT_FIRST_BYTE, u->w->edge->cfg->upstream_first_byte_timeout_ms);
        }
        return;
    }
    if (u->state == U_IDLE) {
        pool_remove_idle(u);
        up_free(u);
        return;
    }
    if (u->state == U_CONNECTING) {
        up_fail(u, UPERR_CONNECT);
        return;
    }
    if ((what & BEV_EVENT_EOF) && (u->state == U_BODY || u->state == U_WAIT_HEAD)) {
        u->eof_seen = true;
        bufferevent_disable(bev, EV_READ);
        if (u->paused)
            return; /* upstream_resume() processes the rest */
        up_process(u);
        return;
    }
    up_fail(u, (what & BEV_EVENT_TIMEOUT) ? UPERR_TIMEOUT : UPERR_RESET);
}
