/*
 * edge/passthrough.c: TLS passthrough listeners and relays (behaviour in passthrough.h).
 *
 * One struct passthrough per worker owns that worker's passthrough listeners and its
 * connections; everything runs on the worker's loop. A struct pt_conn has two sides, the
 * client and the backend, each with its socket, a read and a write event, and `out`: the
 * bytes waiting to be written to that side. Reading from one side appends to the other side's
 * `out`, so the ClientHello, read into the backend's `out` while the client is parsed, is
 * simply the first thing written to the backend. I/O is direct non-blocking socket I/O with
 * evbuffers, as in edge/h1/conn.c: a write is tried at once, EV_WRITE is armed only while the
 * socket is full.
 *
 * One timer per connection: the handshake timeout while reading the ClientHello, the connect
 * timeout while connecting, then the idle timeout, checked lazily against the time the last
 * byte moved (so moving bytes costs no timer update). Closed connections release their
 * sockets at once and their memory at the end of the loop iteration (STYLE.md rule 20).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "edge/edge_int.h"
#include "edge/passthrough.h"
#include "lib/log.h"
#include "lib/util.h"
#include "tls/clienthello.h"

#define READ_CHUNK 65536
#define IO_RETRIABLE(e) ((e) == EAGAIN || (e) == EWOULDBLOCK || (e) == EINTR)

struct passthrough {
    struct worker *w;
    struct evconnlistener **listeners;
    size_t n_listeners;
    struct pt_conn *conns; /* open connections */
    struct pt_conn *reap; /* closed during this loop iteration */
    struct event *reap_ev;
};

enum pt_state {
    PT_HELLO = 0, /* reading the ClientHello */
    PT_CONNECTING = 1,
    PT_RELAY = 2,
};

struct pt_side {
    evutil_socket_t fd;
    struct event *rev;
    struct event *wev;
    struct evbuffer *out; /* bytes to write to this side */
    bool reading; /* rev is added */
    bool eof; /* this side sent its FIN */
    bool shut; /* we sent ours (everything owed to it is written) */
};

struct pt_conn {
    struct passthrough *pt;
    enum pt_state state;
    struct pt_side cli;
    struct pt_side srv;
    struct event *timer;
    int64_t last_us; /* when a byte last moved */
    bool closed;
    struct pt_conn *prev;
    struct pt_conn *next;
    char peer[64];
    char sni[TLS_CH_SNI_MAX + 1];
    const struct conf_route *route;
};

/* ---- routing ------------------------------------------------------------------------------ */

const struct conf_route *passthrough_route(const struct config *cfg, const char *sni)
{
    size_t n = sni ? strlen(sni) : 0;
    if (n > 0 && sni[n - 1] == '.')
        n--;
    const struct conf_route *best = NULL;
    const struct conf_route *any = NULL;
    size_t best_len = 0;
    for (size_t i = 0; i < cfg->n_passthrough; i++) {
        const struct conf_route *r = &cfg->passthrough[i];
        size_t rl = strlen(r->name);
        if (rl == 1 && r->name[0] == '*') {
            if (any == NULL)
                any = r;
            continue;
        }
        if (n == 0)
            continue;
        if (rl == n && memcmp(r->name, sni, n) == 0)
            return r;
        /* "*.suffix": the suffix with its dot must end the name, with a label before it */
        if (rl > 2 && r->name[0] == '*' && r->name[1] == '.' && n > rl - 1 &&
            memcmp(sni + n - (rl - 1), r->name + 1, rl - 1) == 0 && rl - 1 > best_len) {
            best = r;
            best_len = rl - 1;
        }
    }
    return best ? best : any;
}

/* ---- connections -------------------------------------------------------------------------- */

static void side_read_cb(evutil_socket_t fd, short what, void *arg);
static void side_write_cb(evutil_socket_t fd, short what, void *arg);
static void conn_close(struct pt_conn *c);

static struct pt_side *other(struct pt_conn *c, struct pt_side *s)
{
    return s == &c->cli ? &c->srv : &c->cli;
}

static void read_enable(struct pt_side *s, bool on)
{
    if (on && !s->reading && !s->eof) {
        event_add(s->rev, NULL);
        s->reading = true;
    } else if (!on && s->reading) {
        event_del(s->rev);
        s->reading = false;
    }
}

static void side_fini(struct pt_side *s)
{
    if (s->rev)
        event_free(s->rev);
    if (s->wev)
        event_free(s->wev);
    if (s->out)
        evbuffer_free(s->out);
    if (s->fd >= 0)
        evutil_closesocket(s->fd);
    s->rev = s->wev = NULL;
    s->out = NULL;
    s->fd = -1;
}

static void side_events(struct pt_conn *c, struct pt_side *s)
{
    struct event_base *base = c->pt->w->base;
    s->rev = event_new(base, s->fd, EV_READ | EV_PERSIST, side_read_cb, c);
    s->wev = event_new(base, s->fd, EV_WRITE | EV_PERSIST, side_write_cb, c);
}

static void conn_close(struct pt_conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    struct passthrough *pt = c->pt;
    struct worker *w = pt->w;
    if (c->prev)
        c->prev->next = c->next;
    else if (pt->conns == c)
        pt->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_free(c->timer);
    c->timer = NULL;
    side_fini(&c->cli);
    side_fini(&c->srv);
    edge_conn_release(w);
    c->next = pt->reap;
    pt->reap = c;
    event_active(pt->reap_ev, EV_READ, 0);
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct passthrough *pt = arg;
    while (pt->reap) {
        struct pt_conn *c = pt->reap;
        pt->reap = c->next;
        free(c);
    }
}

/* Write what `to` can take now. Sends our FIN once the other side's is owed and everything
 * before it is written; closes the connection when both directions are finished or on a
 * write error. Then lets the other side read again if `to` has room. */
static void side_flush(struct pt_conn *c, struct pt_side *to)
{
    struct pt_side *from = other(c, to);
    while (evbuffer_get_length(to->out) > 0) {
        int n = evbuffer_write(to->out, to->fd);
        if (n < 0 && IO_RETRIABLE(errno))
            break;
        if (n <= 0) {
            conn_close(c); /* reset, or a peer that closed without reading */
            return;
        }
        if (to == &c->cli)
            METRIC_ADD(c->pt->w, bytes_sent, (uint64_t)n);
        c->last_us = edge_mono_us();
    }
    if (evbuffer_get_length(to->out) > 0) {
        if (!event_pending(to->wev, EV_WRITE, NULL))
            event_add(to->wev, NULL);
    } else {
        if (event_pending(to->wev, EV_WRITE, NULL))
            event_del(to->wev);
        if (from->eof && !to->shut) {
            shutdown(to->fd, SHUT_WR);
            to->shut = true;
        }
    }
    if (c->cli.shut && c->srv.shut) {
        conn_close(c);
        return;
    }
    read_enable(from, evbuffer_get_length(to->out) < PASSTHROUGH_BUF_MAX);
}

/* Relay: read from `from` into the other side's queue, within its bound. */
static void side_relay_read(struct pt_conn *c, struct pt_side *from)
{
    struct pt_side *to = other(c, from);
    size_t queued = evbuffer_get_length(to->out);
    if (queued < PASSTHROUGH_BUF_MAX) {
        size_t room = PASSTHROUGH_BUF_MAX - queued;
        int n = evbuffer_read(to->out, from->fd, (int)(room < READ_CHUNK ? room : READ_CHUNK));
        if (n == 0) {
            from->eof = true;
            read_enable(from, false);
        } else if (n < 0) {
            if (!IO_RETRIABLE(errno))
                conn_close(c);
            return;
        } else {
            if (from == &c->cli)
                METRIC_ADD(c->pt->w, bytes_received, (uint64_t)n);
            c->last_us = edge_mono_us();
        }
    }
    side_flush(c, to);
}

static void start_relay(struct pt_conn *c)
{
    const struct config *cfg = c->pt->w->edge->cfg;
    c->state = PT_RELAY;
    c->last_us = edge_mono_us();
    edge_timer_arm(c->timer, cfg->idle_timeout_ms);
    read_enable(&c->srv, true);
    side_flush(c, &c->srv); /* the ClientHello and whatever followed it */
    if (!c->closed)
        side_flush(c, &c->cli);
}

static void connect_done(struct pt_conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->srv.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err != 0) {
        METRIC_INC(c->pt->w, upstream_errors[UPERR_CONNECT]);
        log_ratelimited(LOG_WARN, "passthrough %s: %s: connect %s: %s", c->peer,
                        c->sni[0] ? c->sni : "(no SNI)", c->route->to.text, strerror(err));
        conn_close(c);
        return;
    }
    event_del(c->srv.wev);
    start_relay(c);
}

static void backend_connect(struct pt_conn *c)
{
    struct worker *w = c->pt->w;
    const struct config *cfg = w->edge->cfg;
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    int err = 0;
    if (evutil_parse_sockaddr_port(c->route->to.text, (struct sockaddr *)&ss, &sslen) != 0) {
        err = EINVAL; /* checked by passthrough_create(); a reload could change it */
    } else {
        c->srv.fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->srv.fd < 0)
            err = errno;
    }
    if (err == 0) {
        int one = 1;
        setsockopt(c->srv.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(c->srv.fd, (struct sockaddr *)&ss, (socklen_t)sslen) != 0 &&
            errno != EINPROGRESS)
            err = errno;
    }
    if (err != 0) {
        METRIC_INC(w, upstream_errors[UPERR_CONNECT]);
        log_ratelimited(LOG_WARN, "passthrough %s: %s: connect %s: %s", c->peer,
                        c->sni[0] ? c->sni : "(no SNI)", c->route->to.text, strerror(err));
        conn_close(c);
        return;
    }
    side_events(c, &c->srv);
    c->state = PT_CONNECTING;
    /* The client waits: its next bytes stay in the kernel until the relay starts. */
    read_enable(&c->cli, false);
    edge_timer_arm(c->timer, cfg->upstream_connect_timeout_ms);
    event_add(c->srv.wev, NULL);
}

/* A fatal unrecognized_name alert (RFC 8446 6.2), sent once, best effort. */
static void send_alert(struct pt_conn *c)
{
    static const uint8_t alert[7] = {21, 3, 3, 0, 2, 2, 112};
    ssize_t n = send(c->cli.fd, alert, sizeof(alert), MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)n;
}

static void hello_read(struct pt_conn *c)
{
    struct pt_side *s = &c->cli;
    struct evbuffer *in = c->srv.out;
    size_t have = evbuffer_get_length(in);
    int n = evbuffer_read(in, s->fd, (int)(TLS_CH_MAX_WIRE - have));
    if (n < 0 && IO_RETRIABLE(errno))
        return;
    if (n <= 0) {
        conn_close(c); /* gone before its ClientHello was complete */
        return;
    }
    METRIC_ADD(c->pt->w, bytes_received, (uint64_t)n);
    have += (size_t)n;
    const uint8_t *p = evbuffer_pullup(in, -1);
    int r = tls_clienthello_sni(p, have, c->sni, sizeof(c->sni));
    if (r == TLS_CH_INCOMPLETE)
        return;
    if (r == TLS_CH_INVALID) {
        log_ratelimited(LOG_INFO, "passthrough %s: not a TLS ClientHello: closed", c->peer);
        conn_close(c);
        return;
    }
    c->route = passthrough_route(c->pt->w->edge->cfg, r == TLS_CH_SNI ? c->sni : NULL);
    if (c->route == NULL) {
        log_ratelimited(LOG_INFO, "passthrough %s: no route for %s: closed", c->peer,
                        r == TLS_CH_SNI ? c->sni : "(no SNI)");
        send_alert(c);
        conn_close(c);
        return;
    }
    backend_connect(c);
}

static void side_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pt_conn *c = arg;
    if (c->state == PT_HELLO) {
        hello_read(c);
        return;
    }
    side_relay_read(c, fd == c->cli.fd ? &c->cli : &c->srv);
}

static void side_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pt_conn *c = arg;
    if (c->state == PT_CONNECTING) {
        connect_done(c);
        return;
    }
    side_flush(c, fd == c->cli.fd ? &c->cli : &c->srv);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pt_conn *c = arg;
    struct worker *w = c->pt->w;
    const struct config *cfg = w->edge->cfg;
    switch (c->state) {
    case PT_HELLO:
        log_ratelimited(LOG_INFO, "passthrough %s: no complete ClientHello within %lldms", c->peer,
                        (long long)cfg->tls_handshake_timeout_ms);
        conn_close(c);
        return;
    case PT_CONNECTING:
        METRIC_INC(w, upstream_errors[UPERR_TIMEOUT]);
        log_ratelimited(LOG_WARN, "passthrough %s: %s: connect %s: timed out", c->peer,
                        c->sni[0] ? c->sni : "(no SNI)", c->route->to.text);
        conn_close(c);
        return;
    case PT_RELAY: {
        int64_t idle_ms = (edge_mono_us() - c->last_us) / 1000;
        if (idle_ms >= cfg->idle_timeout_ms)
            conn_close(c);
        else
            edge_timer_arm(c->timer, cfg->idle_timeout_ms - idle_ms);
        return;
    }
    }
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct passthrough *pt = arg;
    struct worker *w = pt->w;
    struct edge *e = w->edge;
    if (w->stopping) {
        evutil_closesocket(fd);
        return;
    }
    if (!edge_conn_admit(w)) {
        evutil_closesocket(fd);
        return;
    }
    struct pt_conn *c = xcalloc(1, sizeof(*c));
    c->pt = pt;
    c->state = PT_HELLO;
    edge_peer_name(sa, c->peer, sizeof(c->peer));
    evutil_make_socket_nonblocking(fd);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->cli.fd = fd;
    c->srv.fd = -1;
    c->cli.out = evbuffer_new();
    c->srv.out = evbuffer_new();
    side_events(c, &c->cli);
    c->timer = evtimer_new(w->base, timer_cb, c);
    c->next = pt->conns;
    if (pt->conns)
        pt->conns->prev = c;
    pt->conns = c;
    read_enable(&c->cli, true);
    edge_timer_arm(c->timer, e->cfg->tls_handshake_timeout_ms);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    log_ratelimited(LOG_WARN, "passthrough accept: %s", evutil_socket_error_to_string(err));
}

/* ---- the worker's side -------------------------------------------------------------------- */

int passthrough_create(struct worker *w)
{
    const struct config *cfg = w->edge->cfg;
    w->passthrough = NULL;
    if (cfg->n_passthrough_listen == 0)
        return 0;
    for (size_t i = 0; i < cfg->n_passthrough; i++) {
        struct sockaddr_storage ss;
        int sslen = sizeof(ss);
        const struct conf_route *r = &cfg->passthrough[i];
        if (evutil_parse_sockaddr_port(r->to.text, (struct sockaddr *)&ss, &sslen) != 0) {
            log_msg(LOG_ERR, "passthrough %s %s: not a numeric address", r->name, r->to.text);
            return OP_EINVAL;
        }
    }
    struct passthrough *pt = xcalloc(1, sizeof(*pt));
    pt->w = w;
    pt->reap_ev = event_new(w->base, -1, 0, reap_cb, pt);
    pt->listeners = xcalloc(cfg->n_passthrough_listen, sizeof(*pt->listeners));
    w->passthrough = pt;
    for (size_t i = 0; i < cfg->n_passthrough_listen; i++) {
        const struct conf_addr *a = &cfg->passthrough_listen[i];
        struct sockaddr_storage ss;
        int sslen = sizeof(ss);
        if (evutil_parse_sockaddr_port(a->text, (struct sockaddr *)&ss, &sslen) != 0) {
            log_msg(LOG_ERR, "passthrough_listen %s: not a numeric address", a->text);
            passthrough_destroy(w);
            return OP_EINVAL;
        }
        struct evconnlistener *l =
            evconnlistener_new_bind(w->base, accept_cb, pt,
                                    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                        LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC,
                                    1024, (struct sockaddr *)&ss, sslen);
        if (l == NULL) {
            int err = errno ? errno : EADDRINUSE;
            log_msg(LOG_ERR, "passthrough_listen %s: %s", a->text, strerror(err));
            passthrough_destroy(w);
            return -err;
        }
        evconnlistener_set_error_cb(l, accept_error_cb);
        pt->listeners[pt->n_listeners++] = l;
    }
    return 0;
}

void passthrough_stop(struct worker *w)
{
    struct passthrough *pt = w->passthrough;
    if (pt == NULL)
        return;
    for (size_t i = 0; i < pt->n_listeners; i++)
        evconnlistener_disable(pt->listeners[i]);
}

size_t passthrough_close_idle(struct worker *w)
{
    struct passthrough *pt = w->passthrough;
    if (pt == NULL)
        return 0;
    size_t left = 0;
    struct pt_conn *c = pt->conns;
    while (c) {
        struct pt_conn *next = c->next;
        if (c->state == PT_HELLO)
            conn_close(c);
        else
            left++;
        c = next;
    }
    return left;
}

void passthrough_close_all(struct worker *w)
{
    struct passthrough *pt = w->passthrough;
    if (pt == NULL)
        return;
    while (pt->conns)
        conn_close(pt->conns);
}

void passthrough_destroy(struct worker *w)
{
    struct passthrough *pt = w->passthrough;
    if (pt == NULL)
        return;
    passthrough_close_all(w);
    reap_cb(-1, 0, pt);
    for (size_t i = 0; i < pt->n_listeners; i++)
        evconnlistener_free(pt->listeners[i]);
    free(pt->listeners);
    event_free(pt->reap_ev);
    free(pt);
    w->passthrough = NULL;
}
