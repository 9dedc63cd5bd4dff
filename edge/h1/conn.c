/*
 * edge/h1/conn.c: the HTTP/1.1 front end. One struct h1_conn per client connection, owned by
 * the worker that accepted it. I/O is done directly on the socket with evbuffers: reads on
 * EV_READ, and writes attempted at once when a response is produced, with EV_WRITE armed only
 * when the socket would block (a hit costs one read and one writev, no epoll_ctl churn).
 *
 * A connection carries one exchange at a time; pipelined requests wait in the input buffer
 * (reading is paused while it holds more than a head's worth) and are parsed when the current
 * response is finished, so responses leave in request order. The request head is parsed by
 * the pure parser in parse.c, copied into the exchange's arena, and handed to the pipeline
 * (exchange.c). Request bodies are de-framed here (Content-Length or chunked) and streamed to
 * the exchange; responses are framed here (Content-Length, chunked, or close-delimited for
 * HTTP/1.0).
 *
 * Timers: one per connection. idle_timeout while waiting for a new request, header_timeout
 * from the first byte of a head until it is complete (slowloris), body_timeout between
 * request body reads; send_timeout bounds how long pending output may make no progress.
 * Errors found by the parser answer with the status the exchange maps them to and close the
 * connection (RFC 9112: after a framing error the stream cannot be trusted).
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
#include "lib/log.h"
#include "lib/util.h"

#define OUT_HIGH (256 * 1024) /* response bytes buffered before back-pressure */
#define OUT_LOW (64 * 1024)
#define REQ_BODY_BUFFER (1024 * 1024)
#define IO_RETRIABLE(e) ((e) == EAGAIN || (e) == EWOULDBLOCK || (e) == EINTR)

enum timer_kind {
    T_NONE = 0,
    T_IDLE = 1,
    T_HEADER = 2,
    T_BODY = 3,
};

struct h1_conn {
    struct worker *w;
    struct sockio io; /* socket, TLS, plaintext in/out */
    struct event *rev;
    struct event *wev;
    bool reading; /* rev is added */
    bool eof; /* the client shut down its sending side */
    bool dead; /* a write failed: close at the next callback */
    struct h1_conn *prev;
    struct h1_conn *next;
    struct http_header *hdrs;
    uint64_t n_requests; /* heads parsed on this connection */
    bool handed_off; /* the socket now belongs to edge/h2 */
    struct exchange x;
    bool x_active;
    bool keep_alive;
    bool closing; /* close once the output is flushed */
    bool closed;
    /* request body de-framing */
    bool reading_body;
    enum h1_body body;
    uint64_t body_left;
    uint64_t body_total;
    struct h1_chunked chunked;
    bool body_paused;
    /* response framing */
    bool resp_chunked;
    bool resp_close_delimited;
    struct event *timer;
    enum timer_kind timer_kind;
    bool in_read; /* re-entrancy guard */
    bool alpn_checked; /* TLS: the protocol was looked at after the handshake */
};

static void conn_read_cb(evutil_socket_t fd, short what, void *arg);
static void conn_write_cb(evutil_socket_t fd, short what, void *arg);
static void conn_flush(struct h1_conn *c);
static void conn_process(struct h1_conn *c);
static void conn_free(struct h1_conn *c);

static const struct transport_ops h1_ops;

static void timer_set(struct h1_conn *c, enum timer_kind kind, int64_t ms)
{
    c->timer_kind = kind;
    edge_timer_arm(c->timer, kind == T_NONE ? 0 : ms);
}

static void read_enable(struct h1_conn *c, bool on)
{
    if (on && !c->reading && !c->eof && !c->closing) {
        event_add(c->rev, NULL);
        c->reading = true;
    } else if (!on && c->reading) {
        event_del(c->rev);
        c->reading = false;
    }
}

/* Process buffered input from a fresh call stack (after a response, on resume). */
static void process_later(struct h1_conn *c)
{
    if (evbuffer_get_length(c->io.in) > 0 || c->eof)
        event_active(c->rev, EV_READ, 0);
}

static void conn_close_now(struct h1_conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    if (c->x_active) {
        exchange_on_client_gone(&c->x);
        exchange_fini(&c->x);
        c->x_active = false;
    }
    conn_free(c);
}

/* Close once everything queued has been written. */
static void conn_close_after_flush(struct h1_conn *c)
{
    read_enable(c, false);
    c->closing = true;
    c->keep_alive = false;
    timer_set(c, T_NONE, 0);
    sockio_shutdown(&c->io);
    conn_flush(c);
    if (sockio_pending(&c->io) == 0 || c->dead)
        conn_close_now(c);
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct h1_conn *c = arg;
    struct worker *w = c->w;
    switch (c->timer_kind) {
    case T_IDLE:
        conn_close_now(c);
        break;
    case T_HEADER:
        METRIC_INC(w, rejected[REJECT_HEADER_TIMEOUT]);
        if (!sockio_ready(&c->io)) {
            conn_close_now(c); /* TLS handshake timeout: nothing to answer in */
        } else if (!c->x_active) {
            /* answer 408 with a throwaway exchange so the response is framed once */
            exchange_init(&c->x, w, &h1_ops, c);
            c->x_active = true;
            c->x.http_minor = 1;
            c->keep_alive = false;
            exchange_respond_error(&c->x, 408, "request header timeout");
        } else {
            conn_close_now(c);
        }
        break;
    case T_BODY:
        /* The client stopped sending its body: nothing sensible can follow. */
        if (c->x_active && !c->x.head_sent) {
            c->keep_alive = false;
            c->reading_body = false;
            exchange_respond_error(&c->x, 408, "request body timeout");
        } else {
            conn_close_now(c);
        }
        break;
    default:
        break;
    }
}

void h1_conn_accept(struct worker *w, evutil_socket_t fd, const struct sockaddr *sa, int salen,
                    struct tls_server *tls)
{
    const struct config *cfg = w->edge->cfg;
    if (!edge_conn_admit(w)) {
        static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                   "Connection: close\r\nRetry-After: 1\r\n\r\n";
        if (tls == NULL) { /* a TLS client could not read it */
            ssize_t wr = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)wr;
        }
        evutil_closesocket(fd);
        return;
    }
    struct h1_conn *c = xcalloc(1, sizeof(*c));
    c->w = w;
    c->hdrs = xcalloc(cfg->max_headers, sizeof(*c->hdrs));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sockio_init(&c->io, fd, tls);
    edge_peer_name(sa, c->io.peer, sizeof(c->io.peer));
    (void)salen;
    c->rev = event_new(w->base, fd, EV_READ | EV_PERSIST, conn_read_cb, c);
    c->wev = event_new(w->base, fd, EV_WRITE | EV_PERSIST, conn_write_cb, c);
    c->timer = evtimer_new(w->base, conn_timer_cb, c);
    read_enable(c, true);
    c->keep_alive = true;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    timer_set(c, T_HEADER, tls != NULL ? cfg->tls_handshake_timeout_ms : cfg->header_timeout_ms);
}

/* Release the socket and events now; the memory goes at the end of the loop iteration, so
 * that callers up the stack may still look at c->closed (STYLE.md rule 20). */
static void conn_free(struct h1_conn *c)
{
    struct worker *w = c->w;
    c->closed = true;
    if (c->prev)
        c->prev->next = c->next;
    else if (w->conns == c)
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    event_free(c->timer);
    event_free(c->rev);
    event_free(c->wev);
    free(c->hdrs);
    if (!c->handed_off) {
        sockio_fini(&c->io);
        edge_conn_release(w);
    }
    c->next = w->reap;
    w->reap = c;
    event_active(w->reap_ev, EV_READ, 0);
}

void h1_conn_reap(struct worker *w)
{
    while (w->reap) {
        struct h1_conn *c = w->reap;
        w->reap = c->next;
        free(c);
    }
}

void h1_conn_close_all(struct worker *w)
{
    while (w->conns)
        conn_close_now(w->conns);
}

size_t h1_conn_close_idle(struct worker *w)
{
    size_t left = 0;
    struct h1_conn *c = w->conns;
    while (c) {
        struct h1_conn *next = c->next;
        if (!c->x_active && evbuffer_get_length(c->io.in) == 0)
            conn_close_now(c);
        else
            left++;
        c = next;
    }
    return left;
}

static enum reject reject_of(enum h1_error err, int *status)
{
    switch (err) {
    case H1_ERR_URI_TOO_LONG:
        *status = 414;
        return REJECT_URI_TOO_LONG;
    case H1_ERR_HEADERS_TOO_LARGE:
        *status = 431;
        return REJECT_HEADERS_TOO_LARGE;
    case H1_ERR_VERSION:
        *status = 505;
        return REJECT_VERSION;
    case H1_ERR_TE_UNSUPPORTED:
        *status = 501;
        return REJECT_TE_UNSUPPORTED;
    case H1_ERR_SMUGGLING:
        *status = 400;
        return REJECT_SMUGGLING;
    case H1_ERR_HOST:
        *status = 400;
        return REJECT_HOST;
    case H1_ERR_METHOD:
        *status = 400;
        return REJECT_METHOD;
#ifdef H1_HAS_ERR_EXPECTATION
    case H1_ERR_EXPECTATION:
        *status = 417;
        return REJECT_EXPECTATION;
#endif
    default:
        *status = 400;
        return REJECT_SYNTAX;
    }
}

static struct str rebase(struct str s, const char *from, const char *to)
{
    if (s.p == NULL)
        return s;
    return str_make(to + (s.p - from), s.len);
}

static struct str lower_dup(struct arena *a, struct str s)
{
    struct str d = arena_strdup(a, s);
    char *p = (char *)d.p;
    for (size_t i = 0; i < d.len; i++)
        if (p[i] >= 'A' && p[i] <= 'Z')
            p[i] |= 0x20;
    return d;
}

/* The connection speaks HTTP/2: move the socket and its state to edge/h2. */
static void conn_hand_off(struct h1_conn *c)
{
    ASSERT(!c->x_active);
    read_enable(c, false);
    if (event_pending(c->wev, EV_WRITE, NULL))
        event_del(c->wev);
    struct sockio io = c->io;
    memset(&c->io, 0, sizeof(c->io));
    c->io.fd = -1;
    c->handed_off = true;
    conn_free(c);
    h2_conn_adopt(c->w, &io);
}

/* Parse a head from the input; returns true if an exchange started. */
static bool conn_try_head(struct h1_conn *c)
{
    const struct config *cfg = c->w->edge->cfg;
    struct evbuffer *in = c->io.in;
    size_t avail = evbuffer_get_length(in);
    if (avail == 0)
        return false;
    if (c->n_requests == 0 && !c->io.is_tls && cfg->h2c) {
        /* HTTP/2 with prior knowledge (RFC 9113 3.3): the client preface. */
        static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        size_t cmp = avail < sizeof(preface) - 1 ? avail : sizeof(preface) - 1;
        const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)cmp);
        if (memcmp(p, preface, cmp) == 0) {
            if (cmp == sizeof(preface) - 1)
                conn_hand_off(c);
            return false;
        }
    }
    if (c->timer_kind != T_HEADER)
        timer_set(c, T_HEADER, cfg->header_timeout_ms);
    size_t want = avail < cfg->max_header_bytes + 1 ? avail : cfg->max_header_bytes + 1;
    const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)want);
    struct h1_limits lim = {cfg->max_header_bytes, cfg->max_headers, cfg->max_uri_length};
    struct h1_request req;
    memset(&req, 0, sizeof(req));
    req.headers = c->hdrs;
    int r = h1_parse_request(buf, want, &req, &lim);
    if (r == H1_INCOMPLETE)
        return false;

    exchange_init(&c->x, c->w, &h1_ops, c);
    c->x_active = true;
    struct exchange *x = &c->x;
    c->n_requests++;
    snprintf(x->client_addr, sizeof(x->client_addr), "%s", c->io.peer);
    if (r == H1_INVALID) {
        int status;
        enum reject why = reject_of(req.err, &status);
        METRIC_INC(c->w, rejected[why]);
        log_ratelimited(LOG_INFO, "h1: %s: refused request (%s): %d", c->io.peer, reject_name(why),
                        status);
        x->http_minor = 1;
        c->keep_alive = false;
        evbuffer_drain(in, evbuffer_get_length(in));
        exchange_respond_error(x, status, reject_name(why));
        return true;
    }
    /* Copy the head into the exchange arena: the input buffer is drained below. */
    char *copy = arena_alloc(&x->arena, (size_t)r);
    memcpy(copy, buf, (size_t)r);
    x->method = rebase(req.method, buf, copy);
    x->path = rebase(req.path, buf, copy);
    x->http_minor = req.minor_version;
    x->authority = lower_dup(&x->arena, req.authority);
    for (size_t i = 0; i < req.n_headers; i++)
        http_headers_add(&x->req, rebase(req.headers[i].name, buf, copy),
                         rebase(req.headers[i].value, buf, copy));
    evbuffer_drain(in, (size_t)r);
    METRIC_ADD(c->w, bytes_received, (uint64_t)r);
    x->scheme = c->io.is_tls ? STR_LIT("https") : STR_LIT("http");
    x->expect_continue = req.expect_continue;
    c->keep_alive = req.keep_alive;
    c->body = req.body;
    c->body_total = 0;
    memset(&c->chunked, 0, sizeof(c->chunked));
    if (req.body == H1_BODY_LENGTH && req.content_length > 0) {
        x->req_has_body = true;
        x->req_content_length = (int64_t)req.content_length;
        c->body_left = req.content_length;
        c->reading_body = true;
    } else if (req.body == H1_BODY_CHUNKED) {
        x->req_has_body = true;
        x->req_content_length = -1;
        c->reading_body = true;
    } else {
        x->req_content_length = 0;
        x->req_body_done = true;
        c->reading_body = false;
    }
    if (x->req_has_body && x->req_content_length > 0 &&
        (uint64_t)x->req_content_length > cfg->max_body_size) {
        METRIC_INC(c->w, rejected[REJECT_BODY_TOO_LARGE]);
        c->keep_alive = false;
        c->reading_body = false;
        exchange_respond_error(x, 413, "request body too large");
        return true;
    }
    timer_set(c, c->reading_body ? T_BODY : T_NONE, cfg->body_timeout_ms);
    exchange_start(x);
    return true;
}

/* Feed request body bytes from the input to the exchange. */
static void conn_read_body(struct h1_conn *c)
{
    const struct config *cfg = c->w->edge->cfg;
    struct evbuffer *in = c->io.in;
    struct evbuffer *out = evbuffer_new();
    bool eof = false;
    bool bad = false;
    while (!c->body_paused && evbuffer_get_length(in) > 0 && !eof) {
        if (c->body == H1_BODY_LENGTH) {
            size_t n = evbuffer_get_length(in);
            if (n > c->body_left)
                n = (size_t)c->body_left;
            evbuffer_remove_buffer(in, out, n);
            c->body_left -= n;
            c->body_total += n;
            eof = c->body_left == 0;
        } else {
            size_t n = evbuffer_get_length(in);
            if (n > 65536)
                n = 65536;
            const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
            size_t off = 0, dlen = 0;
            bool done = false;
            int r = h1_chunked_decode(&c->chunked, p, n, &off, &dlen, &done);
            if (r < 0) {
                bad = true;
                break;
            }
            if (dlen)
                evbuffer_add(out, p + off, dlen);
            c->body_total += dlen;
            evbuffer_drain(in, (size_t)r);
            eof = done;
            if (r == 0 && !done)
                break;
        }
        if (c->body_total > cfg->max_body_size)
            break;
        if (evbuffer_get_length(out) >= REQ_BODY_BUFFER)
            break;
    }
    struct exchange *x = &c->x;
    if (bad) {
        evbuffer_free(out);
        METRIC_INC(c->w, rejected[REJECT_SYNTAX]);
        c->reading_body = false;
        c->keep_alive = false;
        if (!x->head_sent) {
            exchange_on_client_gone(x);
            exchange_respond_error(x, 400, "bad chunked body");
        } else {
            conn_close_now(c);
        }
        return;
    }
    if (c->body_total > cfg->max_body_size) {
        evbuffer_free(out);
        METRIC_INC(c->w, rejected[REJECT_BODY_TOO_LARGE]);
        c->reading_body = false;
        c->keep_alive = false;
        if (!x->head_sent) {
            exchange_on_client_gone(x);
            exchange_respond_error(x, 413, "request body too large");
        } else {
            conn_close_now(c);
        }
        return;
    }
    if (eof) {
        c->reading_body = false;
        timer_set(c, T_NONE, 0);
    } else if (evbuffer_get_length(out) > 0) {
        timer_set(c, T_BODY, cfg->body_timeout_ms);
    }
    METRIC_ADD(c->w, bytes_received, evbuffer_get_length(out));
    if (evbuffer_get_length(out) > 0 || eof)
        exchange_on_req_body(x, out, eof);
    evbuffer_free(out);
}

static void conn_process(struct h1_conn *c)
{
    if (c->in_read || c->closed)
        return;
    c->in_read = true;
    for (;;) {
        if (c->closing || c->closed)
            break;
        if (!c->x_active) {
            if (!conn_try_head(c))
                break;
            if (c->closed)
                return;
            continue;
        }
        if (c->reading_body && !c->body_paused && evbuffer_get_length(c->io.in) > 0) {
            conn_read_body(c);
            if (c->closed)
                return;
            continue;
        }
        break;
    }
    /* Bound what pipelined clients can make us buffer while a response is in flight. */
    if (!c->closed && !c->closing) {
        size_t inlen = evbuffer_get_length(c->io.in);
        const struct config *cfg = c->w->edge->cfg;
        if (c->x_active && !c->reading_body && inlen > cfg->max_header_bytes)
            read_enable(c, false);
        else if (c->body_paused)
            read_enable(c, false);
        else
            read_enable(c, true);
    }
    c->in_read = false;
}

static void conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct h1_conn *c = arg;
    if (c->dead) {
        conn_close_now(c);
        return;
    }
    if (!c->eof && c->reading) {
        enum sockio_rc rc = sockio_read(&c->io, 65536);
        if (rc == SOCKIO_EOF) {
            c->eof = true;
            read_enable(c, false);
        } else if (rc == SOCKIO_ERROR) {
            if (c->io.is_tls && !sockio_ready(&c->io)) {
                char why[160];
                log_ratelimited(LOG_INFO, "tls: %s: handshake failed: %s", c->io.peer,
                                tls_conn_error(&c->io.tls, why, sizeof(why)));
                conn_flush(c); /* the alert, if any */
            }
            conn_close_now(c);
            return;
        }
    }
    if (!sockio_ready(&c->io)) {
        /* Still in the TLS handshake: send what it produced and wait. */
        if (c->eof) {
            conn_close_now(c);
            return;
        }
        conn_flush(c);
        return;
    }
    if (c->io.is_tls && !c->alpn_checked) {
        c->alpn_checked = true;
        char alpn[16];
        timer_set(c, T_HEADER, c->w->edge->cfg->header_timeout_ms);
        if (strcmp(tls_conn_alpn(&c->io.tls, alpn, sizeof(alpn)), "h2") == 0) {
            conn_hand_off(c);
            return;
        }
    }
    conn_process(c);
    if (c->closed)
        return;
    if (c->eof && !c->closing) {
        /* A client that shut down writing still reads the answer to a complete request;
         * anything else is over. */
        if (c->x_active && !c->reading_body && !c->x.finished) {
            c->keep_alive = false;
        } else if (!c->x_active && sockio_pending(&c->io) == 0) {
            conn_close_now(c);
            return;
        } else if (c->x_active && c->reading_body) {
            conn_close_now(c);
            return;
        }
    }
    conn_flush(c);
}

/* Write what we can now; arm EV_WRITE (with the send timeout) only if the socket is full. */
static void conn_flush(struct h1_conn *c)
{
    if (c->dead || c->closed)
        return;
    if (sockio_flush(&c->io) == SOCKIO_ERROR) {
        /* Peer gone. Closing here would pull the connection from under our caller. */
        c->dead = true;
        event_active(c->rev, EV_READ, 0);
        return;
    }
    if (sockio_pending(&c->io) > 0) {
        if (!event_pending(c->wev, EV_WRITE, NULL)) {
            int64_t ms = c->w->edge->cfg->send_timeout_ms;
            struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
            event_add(c->wev, &tv);
        }
    } else if (event_pending(c->wev, EV_WRITE, NULL)) {
        event_del(c->wev);
    }
}

static void conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct h1_conn *c = arg;
    if (what & EV_TIMEOUT) {
        conn_close_now(c); /* the client has not read anything for send_timeout */
        return;
    }
    size_t before = sockio_pending(&c->io);
    conn_flush(c);
    if (c->dead) {
        conn_close_now(c);
        return;
    }
    size_t after = sockio_pending(&c->io);
    if (c->closing) {
        if (after == 0)
            conn_close_now(c);
        return;
    }
    if (after < before && after < OUT_LOW && c->x_active && c->x.head_sent && !c->x.finished)
        exchange_on_writable(&c->x);
}

/* ---- transport_ops ------------------------------------------------------------------------ */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 410:
        return "Gone";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 421:
        return "Misdirected Request";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    case 508:
        return "Loop Detected";
    default:
        return "Unknown";
    }
}

struct head_buf {
    struct evbuffer *out;
    size_t len;
    char buf[4096];
};

static void hb_flush(struct head_buf *hb)
{
    if (hb->len)
        evbuffer_add(hb->out, hb->buf, hb->len);
    hb->len = 0;
}

static void hb_add(struct head_buf *hb, const char *p, size_t n)
{
    if (hb->len + n > sizeof(hb->buf)) {
        hb_flush(hb);
        if (n > sizeof(hb->buf)) {
            evbuffer_add(hb->out, p, n);
            return;
        }
    }
    memcpy(hb->buf + hb->len, p, n);
    hb->len += n;
}

static void h1_send_head(struct exchange *x)
{
    struct h1_conn *c = x->transport;
    struct evbuffer *out = c->io.out;
    if (c->closing || c->closed)
        return;
    /* The exchange decides about bodies; we decide about framing. */
    c->resp_chunked = false;
    c->resp_close_delimited = false;
    bool bodyless = x->no_body || x->status == 204 || x->status == 304 || x->status < 200;
    if (!bodyless && x->resp_length < 0) {
        if (x->http_minor >= 1)
            c->resp_chunked = true;
        else
            c->resp_close_delimited = true;
    }
    if (c->resp_close_delimited || c->reading_body)
        c->keep_alive = false; /* an unread request body cannot be skipped safely */
    if (c->w->stopping)
        c->keep_alive = false;
    /* The whole head is assembled in one buffer and added to the output once. */
    struct head_buf hb = {.out = out, .len = 0};
    const char *reason = reason_phrase(x->status);
    char line[16];
    memcpy(line, x->http_minor >= 1 ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
    line[9] = (char)('0' + (x->status / 100) % 10);
    line[10] = (char)('0' + (x->status / 10) % 10);
    line[11] = (char)('0' + x->status % 10);
    line[12] = ' ';
    hb_add(&hb, line, 13);
    hb_add(&hb, reason, strlen(reason));
    hb_add(&hb, "\r\n", 2);
    for (size_t i = 0; i < x->resp.n; i++) {
        const struct http_header *h = &x->resp.v[i];
        hb_add(&hb, h->name.p, h->name.len);
        hb_add(&hb, ": ", 2);
        hb_add(&hb, h->value.p, h->value.len);
        hb_add(&hb, "\r\n", 2);
    }
    if (x->resp_length >= 0 && x->status != 304 && x->status != 204 && x->status >= 200) {
        char cl[48] = "Content-Length: ";
        size_t n = 16 + str_fmt_u64((uint64_t)x->resp_length, cl + 16);
        cl[n++] = '\r';
        cl[n++] = '\n';
        hb_add(&hb, cl, n);
    }
    if (c->resp_chunked)
        hb_add(&hb, "Transfer-Encoding: chunked\r\n", 28);
    if (!c->keep_alive)
        hb_add(&hb, "Connection: close\r\n\r\n", 21);
    else if (x->http_minor == 0)
        hb_add(&hb, "Connection: keep-alive\r\n\r\n", 26);
    else
        hb_add(&hb, "\r\n", 2);
    hb_flush(&hb);
}

static void h1_send_body(struct exchange *x, struct evbuffer *data)
{
    struct h1_conn *c = x->transport;
    size_t len = evbuffer_get_length(data);
    if (len == 0 || c->closed) {
        evbuffer_drain(data, len);
        return;
    }
    struct evbuffer *out = c->io.out;
    if (c->resp_chunked) {
        evbuffer_add_printf(out, "%zx\r\n", len);
        evbuffer_add_buffer(out, data);
        evbuffer_add(out, "\r\n", 2);
    } else {
        evbuffer_add_buffer(out, data);
    }
    METRIC_ADD(c->w, bytes_sent, len);
    conn_flush(c);
}

static size_t h1_body_space(struct exchange *x);

/* Zero-copy path for stored bodies: straight from the LMDB page to the socket when nothing
 * is queued before it. Framing must be identity (stored objects have a known length). */
static size_t h1_send_direct(struct exchange *x, const void *data, size_t len)
{
    struct h1_conn *c = x->transport;
    if (c->closed || c->dead || c->resp_chunked)
        return 0;
    bool dead = false;
    size_t done = sockio_send_direct(&c->io, data, len, OUT_HIGH, &dead);
    if (dead) {
        c->dead = true;
        event_active(c->rev, EV_READ, 0);
        return done;
    }
    conn_flush(c); /* arms EV_WRITE if anything is left */
    METRIC_ADD(c->w, bytes_sent, done);
    return done;
}

static size_t h1_body_space(struct exchange *x)
{
    struct h1_conn *c = x->transport;
    size_t len = sockio_pending(&c->io);
    return len >= OUT_HIGH ? 0 : OUT_HIGH - len;
}

/* After the response: log, reset, and go on with the next pipelined request. */
static void h1_finish(struct exchange *x)
{
    struct h1_conn *c = x->transport;
    struct evbuffer *out = c->io.out;
    if (c->resp_chunked)
        evbuffer_add(out, "0\r\n\r\n", 5);
    x->finished = true;
    exchange_log(x);
    exchange_fini(x);
    c->x_active = false;
    const struct config *cfg = c->w->edge->cfg;
    if (!c->keep_alive || c->reading_body) {
        conn_close_after_flush(c);
        return;
    }
    timer_set(c, T_IDLE, cfg->idle_timeout_ms);
    conn_flush(c);
    /* Never parse the next request from inside the previous exchange's call stack. */
    read_enable(c, true);
    process_later(c);
}

static void h1_abort(struct exchange *x)
{
    struct h1_conn *c = x->transport;
    x->finished = true;
    exchange_log(x);
    exchange_fini(x);
    c->x_active = false;
    /* The response is truncated: the only honest signal left is closing the connection. */
    conn_close_after_flush(c);
}

static void h1_pause_body(struct exchange *x)
{
    struct h1_conn *c = x->transport;
    c->body_paused = true;
    read_enable(c, false);
}

static void h1_resume_body(struct exchange *x)
{
    struct h1_conn *c = x->transport;
    if (!c->body_paused)
        return;
    c->body_paused = false;
    read_enable(c, true);
    process_later(c);
}

static void h1_send_continue(struct exchange *x)
{
    struct h1_conn *c = x->transport;
    if (x->http_minor >= 1) {
        evbuffer_add(c->io.out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        conn_flush(c);
    }
}

static const struct transport_ops h1_ops = {
    .name = "HTTP/1.1",
    .send_head = h1_send_head,
    .send_body = h1_send_body,
    .body_space = h1_body_space,
    .finish = h1_finish,
    .abort = h1_abort,
    .pause_body = h1_pause_body,
    .resume_body = h1_resume_body,
    .send_continue = h1_send_continue,
    .send_direct = h1_send_direct,
};
