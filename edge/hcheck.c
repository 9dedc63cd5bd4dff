/*
 * edge/hcheck.c: active health checks of upstream servers.
 *
 * Every resolved server of every upstream group whose block sets health_check gets a timer.
 * Each health_interval the timer starts one probe, unless the server's previous probe is still
 * running: then that tick is skipped, so a server never has two checks at once. A probe
 * connects without blocking to the address upgroups_init() resolved, sends one
 * `GET <health_check>` with Connection: close, reads until the response head parses (pure
 * h1_parse_response(); only the status is used) and closes. A status within health_status
 * passes. A connect error, a reset, an invalid head, a TLS failure, or no complete head within
 * health_timeout fails with status -1. Each probe reports exactly one result, through
 * up_server_check_result(). That function owns the health state machine and logs the state
 * changes; this file logs only setup problems (a CA that cannot be loaded, a certificate that
 * does not verify).
 *
 * TLS (g->tls): the socket bufferevent is wrapped in the TLS filter of edge/tlsbev.h, as
 * edge/upstream.c does. There is one struct tls_client per group.
 *
 * The first checks are spread over the interval (server k of n at k/n of it), plus a small
 * random jitter so a node's checks never fire all at once; the first server is checked right
 * after start.
 *
 * Threads: everything here runs on the control thread's event base; nothing here is shared.
 * The struct up_server it feeds is updated by up_server_check_result() under that server's own
 * rules.
 *
 * Ownership: struct hcheck owns the groups' TLS clients, the servers' timers and the running
 * probes. A finished probe is not freed inside its own callbacks: it is marked ended and its
 * timer is activated, and the timer callback frees it once the bufferevent callback has
 * returned (STYLE.md rule 20). hcheck_stop() frees all of it, running probes included,
 * without reporting.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "edge/edge_int.h"
#include "lib/log.h"
#include "lib/util.h"
#include "edge/tlsbev.h"
#include "tls/tls.h"

#define HC_MAX_HEAD 16384 /* a longer response head fails the check */
#define HC_MAX_HEADERS 100
#define HC_JITTER_MAX_MS 100 /* most random delay added to a first check */

struct hc_group {
    struct up_group *g; /* NULL: the group has no active checks */
    struct tls_client *tls; /* g->tls only; NULL when tls_client_new() failed */
};

struct hc_probe;

struct hc_server {
    struct hcheck *h;
    struct hc_group *hg;
    struct up_server *s;
    struct event *tick; /* the next check is due */
    struct hc_probe *probe; /* the running check; NULL between checks */
    char *req; /* the request, built once */
    size_t req_len;
    bool tls_logged; /* a TLS failure was logged; cleared by a check that passes */
};

/* One check of one server: a connection from connect to the response head. */
struct hc_probe {
    struct hc_server *hs;
    struct bufferevent *bev; /* read and written: the socket, or the TLS filter over it */
    struct bufferevent *sock; /* the socket (== bev without TLS) */
    struct event *timer; /* health_timeout; once ended, the deferred free */
    struct tls_bev tls; /* TLS groups: the session under bev (tls.active) */
    bool eof; /* the server closed (TCP FIN; TLS close_notify is tls.eof) */
    bool ended; /* the result is reported: free at the next timer callback */
    int64_t t_start_us;
};

struct hcheck {
    struct event_base *base;
    struct hc_group *groups; /* one per e->groups entry, same index */
    size_t n_groups;
    struct hc_server *servers; /* every checked server of every group */
    size_t n_servers;
    uint64_t rng; /* xorshift64* state, for the jitter */
};

static uint64_t rng_next(struct hcheck *h)
{
    h->rng ^= h->rng >> 12;
    h->rng ^= h->rng << 25;
    h->rng ^= h->rng >> 27;
    return h->rng * UINT64_C(0x2545F4914F6CDD1D);
}

static const struct conf_upstream_opts *server_opts(const struct hc_server *hs)
{
    return &hs->hg->g->conf->opts;
}

static void probe_free(struct hc_probe *p)
{
    if (p->timer)
        event_free(p->timer);
    if (p->bev)
        bufferevent_free(p->bev); /* and the socket under a TLS filter */
    tls_bev_fini(&p->tls);
    free(p);
}

/* Report the result (status -1: no usable response) and schedule the free. Idempotent. */
static void probe_end(struct hc_probe *p, int status)
{
    if (p->ended)
        return;
    p->ended = true;
    p->tls.closed = true; /* the filter drops what still arrives */
    if (p->bev) {
        bufferevent_setcb(p->bev, NULL, NULL, NULL, NULL);
        bufferevent_disable(p->bev, EV_READ | EV_WRITE);
    }
    struct hc_server *hs = p->hs;
    const struct conf_upstream_opts *o = server_opts(hs);
    bool ok = status >= 0 && (unsigned)status >= o->health_status_lo &&
              (unsigned)status <= o->health_status_hi;
    if (ok)
        hs->tls_logged = false;
    up_server_check_result(hs->s, ok, status, edge_mono_us() - p->t_start_us);
    event_active(p->timer, EV_TIMEOUT, 1);
}

/* The probe's timer: health_timeout expired, or (once ended) the deferred free. */
static void probe_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct hc_probe *p = arg;
    if (!p->ended) {
        probe_end(p, -1); /* comes back here to free */
        return;
    }
    p->hs->probe = NULL;
    probe_free(p);
}

/* Parse what has arrived; end the probe on a final response head, an error, or EOF. */
static void probe_process(struct hc_probe *p)
{
    struct evbuffer *in = bufferevent_get_input(p->bev);
    while (!p->ended) {
        /* One byte past the limit lets the parser refuse an oversized head. */
        size_t want = UTIL_MIN(evbuffer_get_length(in), (size_t)HC_MAX_HEAD + 1);
        if (want == 0) {
            if (p->eof || p->tls.eof)
                probe_end(p, -1);
            return;
        }
        const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)want);
        struct http_header hdrs[HC_MAX_HEADERS];
        struct h1_response resp;
        memset(&resp, 0, sizeof(resp));
        resp.headers = hdrs;
        struct h1_limits lim = {HC_MAX_HEAD, HC_MAX_HEADERS, HC_MAX_HEAD};
        int r = h1_parse_response(buf, want, &resp, &lim, false);
        if (r == H1_INCOMPLETE) {
            if (p->eof || p->tls.eof)
                probe_end(p, -1);
            return;
        }
        if (r < 0) {
            probe_end(p, -1);
            return;
        }
        if (resp.status >= 100 && resp.status < 200 && resp.status != 101) {
            evbuffer_drain(in, (size_t)r); /* interim response: the final one follows */
            continue;
        }
        probe_end(p, resp.status);
    }
}

static void probe_read_cb(struct bufferevent *bev, void *arg)
{
    probe_process(arg);
}

static void probe_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct hc_probe *p = arg;
    if (what & BEV_EVENT_CONNECTED) {
        if (p->tls.active) /* the request waits in the filter until the handshake */
            tls_bev_connected(&p->tls);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        p->eof = true;
        probe_process(p); /* a head that arrived with the FIN still counts */
        return;
    }
    probe_end(p, -1);
}

/* From inside the TLS filter (tlsbev.h): log a failed handshake once per server, and end the
 * probe (ending frees nothing: the free is deferred to the probe's timer). */
static void probe_tls_error(void *arg, bool handshake_done)
{
    struct hc_probe *p = arg;
    struct hc_server *hs = p->hs;
    if (!handshake_done && !hs->tls_logged) {
        hs->tls_logged = true;
        char why[200];
        log_msg(LOG_WARN, "upstream %s: health check of %s: TLS handshake failed: %s",
                hs->hg->g->conf->name, hs->s->conf->addr.text,
                tls_bev_error(&p->tls, why, sizeof(why)));
    }
    probe_end(p, -1);
}

/* Build the bufferevents of a probe: the socket, and the TLS filter over it for a TLS group. */
static int probe_open(struct hc_probe *p)
{
    struct hc_server *hs = p->hs;
    struct bufferevent *sock = bufferevent_socket_new(hs->h->base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (sock == NULL)
        return -ENOMEM;
    p->bev = sock;
    p->sock = sock;
    if (hs->hg->tls == NULL)
        return 0;
    const struct up_group *g = hs->hg->g;
    const char *name = g->tls_name ? g->tls_name : hs->s->conf->addr.host;
    p->bev =
        tls_bev_open(&p->tls, sock, tls_client_ssl(hs->hg->tls, name, NULL), probe_tls_error, p);
    if (p->bev == NULL) {
        bufferevent_free(sock);
        return -ENOMEM;
    }
    return 0;
}

static void probe_start(struct hc_server *hs)
{
    const struct conf_upstream_opts *o = server_opts(hs);
    if (hs->hg->g->tls && hs->hg->tls == NULL) {
        up_server_check_result(hs->s, false, -1, 0); /* no TLS context: logged at start */
        return;
    }
    struct hc_probe *p = xcalloc(1, sizeof(*p));
    p->hs = hs;
    p->t_start_us = edge_mono_us();
    p->timer = evtimer_new(hs->h->base, probe_timer_cb, p);
    if (p->timer == NULL) {
        up_server_check_result(hs->s, false, -1, 0);
        probe_free(p);
        return;
    }
    hs->probe = p;
    /* libevent measures timeouts from the time cached when the loop woke up; a callback that
     * ran long before this one (a reload, a TLS context load) would shorten the timeout. */
    event_base_update_cache_time(hs->h->base);
    if (probe_open(p) < 0) {
        probe_end(p, -1);
        return;
    }
    bufferevent_setcb(p->bev, probe_read_cb, NULL, probe_event_cb, p);
    edge_timer_arm(p->timer, o->health_timeout_ms);
    if (bufferevent_socket_connect(p->sock, (struct sockaddr *)&hs->s->ss, (int)hs->s->sslen) < 0) {
        probe_end(p, -1);
        return;
    }
    evbuffer_add(bufferevent_get_output(p->bev), hs->req, hs->req_len);
    bufferevent_enable(p->bev, EV_READ | EV_WRITE);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct hc_server *hs = arg;
    edge_timer_arm(hs->tick, server_opts(hs)->health_interval_ms);
    if (hs->probe == NULL)
        probe_start(hs);
}

static void build_request(struct hc_server *hs)
{
    const struct conf_upstream_opts *o = server_opts(hs);
    const char *host = o->health_host ? o->health_host : hs->s->conf->addr.text;
    static const char fmt[] = "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: outpost-health-check\r\n"
                              "Connection: close\r\nAccept: */*\r\n\r\n";
    int n = snprintf(NULL, 0, fmt, o->health_check, host);
    ASSERT(n > 0);
    hs->req = xmalloc((size_t)n + 1);
    snprintf(hs->req, (size_t)n + 1, fmt, o->health_check, host);
    hs->req_len = (size_t)n;
}

static bool group_checked(const struct up_group *g)
{
    return g->conf->opts.health_check != NULL;
}

/* Set up one group: its TLS client, and a first tick for each resolved server. */
static int group_start(struct hcheck *h, struct hc_group *hg, struct up_group *g)
{
    hg->g = g;
    if (g->tls) {
        char err[400];
        if (tls_client_new(g->tls_ca, g->tls_verify, &hg->tls, err, sizeof(err)) < 0)
            log_msg(LOG_ERR, "upstream %s: health checks: %s; every check fails", g->conf->name,
                    err);
    }
    size_t n_resolved = 0;
    for (size_t i = 0; i < g->n; i++)
        n_resolved += g->servers[i].resolved;
    int64_t interval = g->conf->opts.health_interval_ms;
    int64_t jitter = UTIL_MAX(1, UTIL_MIN(interval / 10, HC_JITTER_MAX_MS));
    size_t k = 0;
    for (size_t i = 0; i < g->n; i++) {
        if (!g->servers[i].resolved)
            continue;
        struct hc_server *hs = &h->servers[h->n_servers++];
        hs->h = h;
        hs->hg = hg;
        hs->s = &g->servers[i];
        build_request(hs);
        hs->tick = evtimer_new(h->base, tick_cb, hs);
        if (hs->tick == NULL)
            return -ENOMEM;
        int64_t first = interval * (int64_t)k / (int64_t)n_resolved;
        k++;
        edge_timer_arm(hs->tick, 1 + first + (int64_t)(rng_next(h) % (uint64_t)jitter));
    }
    return 0;
}

int hcheck_start(struct edge *e, struct event_base *base, struct hcheck **out)
{
    struct hcheck *h = xcalloc(1, sizeof(*h));
    h->base = base;
    h->rng = ((uint64_t)edge_mono_us() ^ ((uint64_t)getpid() << 32)) | 1;
    h->n_groups = e->n_groups;
    h->groups = xcalloc(e->n_groups ? e->n_groups : 1, sizeof(*h->groups));
    size_t n = 0;
    for (size_t i = 0; i < e->n_groups; i++) {
        if (group_checked(&e->groups[i]))
            n += e->groups[i].n;
    }
    h->servers = xcalloc(n ? n : 1, sizeof(*h->servers));
    for (size_t i = 0; i < e->n_groups; i++) {
        if (!group_checked(&e->groups[i]))
            continue;
        int rc = group_start(h, &h->groups[i], &e->groups[i]);
        if (rc < 0) {
            log_msg(LOG_ERR, "health checks: cannot start: %s", op_strerror(rc));
            hcheck_stop(&h);
            return rc;
        }
    }
    *out = h;
    return 0;
}

void hcheck_stop(struct hcheck **hp)
{
    struct hcheck *h = *hp;
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->n_servers; i++) {
        struct hc_server *hs = &h->servers[i];
        if (hs->tick)
            event_free(hs->tick);
        if (hs->probe)
            probe_free(hs->probe); /* without reporting: the node is going away */
        free(hs->req);
    }
    for (size_t i = 0; i < h->n_groups; i++)
        tls_client_free(&h->groups[i].tls);
    free(h->servers);
    free(h->groups);
    free(h);
    *hp = NULL;
}
