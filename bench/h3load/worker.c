/*
 * bench/h3load/worker.c: one h3load worker. A worker is one pthread running one libevent loop
 * over its share of the connections; it owns them, their sockets, TLS sessions and requests,
 * and its struct h3load_stats, and shares nothing mutable with other workers.
 *
 * A connection is one connected, non-blocking UDP socket, an ngtcp2 client connection (TLS
 * 1.3 by GnuTLS through libngtcp2_crypto_gnutls, ALPN "h3", the server's certificate is not
 * verified) and, once the handshake has completed, an nghttp3 client session on it. The worker
 * hands out its share of -n one request at a time: a connection keeps -m requests in flight
 * (as many as the server's stream limit allows) and takes the next one as soon as a response
 * has ended, so fast connections do more of the work. A request's latency runs from its
 * submission to the end of its response body, read from the clock once per receive batch.
 *
 * I/O: reads are recvmmsg() batches into one buffer per worker (with UDP GRO where the
 * kernel has it), and every batch is followed by a write pass, so acknowledgements leave
 * without waiting for the socket to drain. The write pass interleaves nghttp3's stream data
 * with ngtcp2's packets (nghttp3_conn_writev_stream, ngtcp2_conn_writev_stream with
 * NGTCP2_WRITE_STREAM_FLAG_MORE, nghttp3_conn_add_write_offset), up to ngtcp2's send quantum
 * per pass, and sends them with one sendmmsg(); datagrams that meet a full socket buffer wait
 * for EV_WRITE. ngtcp2's timers (loss detection, ACK delay, pacing, idle, handshake timeout)
 * run from one libevent timer per connection, re-armed after every pass.
 *
 * Call discipline: ngtcp2 and nghttp3 callbacks only record (counts, flags, the close error);
 * a connection is only ended from the top of a libevent callback (conn_step, the worker's
 * deadline and hard-stop timers), never from inside a library callback (STYLE.md rule 20).
 * Ending a connection counts its unfinished requests as errored (or abandoned when -D ran
 * out), and a connection that had completed responses is replaced by a new one while work is
 * left; one that never completed a response is not (a dead server must not cause a storm of
 * reconnections), and the run ends when no connection is left.
 */
#include "bench/h3load/h3load.h"

#include <errno.h>
#include <event2/event.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lib/util.h"

#if NGTCP2_VERSION_NUM != 0x000c01
#error "h3load is written against the pre-1.0 API of ngtcp2 0.12.1"
#endif
#if NGHTTP3_VERSION_NUM != 0x000800
#error "h3load is written against the pre-1.0 API of nghttp3 0.8.0"
#endif

#ifndef UDP_GRO
#define UDP_GRO 104 /* linux/udp.h */
#endif

#define RX_BATCH 16 /* datagrams (or GRO trains) per recvmmsg() */
#define RX_BUF 65536 /* room for one of them */
#define READ_ROUNDS 8 /* recvmmsg() calls per readable event before the loop moves on */
#define TX_BATCH 32 /* datagrams per write pass */
#define TX_SLOT 1452 /* ngtcp2_settings.max_tx_udp_payload_size (its default) */
#define RCVBUF (8 << 20) /* the client is a download sink: a deep socket buffer */
#define STREAM_WINDOW (1 << 20) /* initial flow-control windows, auto-tuned upwards */
#define CONN_WINDOW (16 << 20)
#define MAX_STREAM_WINDOW (16 << 20)
#define MAX_CONN_WINDOW (256 << 20)
#define IDLE_TIMEOUT (10 * NGTCP2_SECONDS)
#define MAX_ERR_LOGS 5 /* error lines per worker without -v */
#define ERR_SOCKET (-100000) /* a socket call failed: errno in conn->sock_errno */

static const char tls_priority[] =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:"
    "+AES-128-CCM:-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:+GROUP-SECP521R1:"
    "%DISABLE_TLS13_COMPAT_MODE";

/* How conn_end() counts the requests that are still in flight. */
enum inflight {
    INFLIGHT_ERRORED = 0,
    INFLIGHT_ABANDONED = 1,
};

struct conn;

struct req {
    struct req *prev; /* in conn->reqs; next is also the worker's free list link */
    struct req *next;
    int64_t stream_id;
    uint64_t start_ns;
    uint64_t body; /* DATA payload bytes received */
    int64_t content_length; /* -1: none */
    int status;
    int ended; /* the response has ended */
    int counted; /* submitted after the warm-up: it counts in the stats */
};

struct conn {
    struct worker *w;
    unsigned slot; /* index in w->conns */
    unsigned serial; /* for log lines */
    int fd;
    int sock_errno;
    struct event *rev; /* EV_READ | EV_PERSIST */
    struct event *wev; /* EV_WRITE, armed only while datagrams wait in tx */
    struct event *timer; /* ngtcp2_conn_get_expiry() */
    ngtcp2_conn *qc;
    nghttp3_conn *h3; /* NULL until the handshake has completed */
    gnutls_session_t tls;
    ngtcp2_crypto_conn_ref conn_ref;
    struct sockaddr_storage local;
    ngtcp2_path path;
    ngtcp2_connection_close_error err; /* sent in CONNECTION_CLOSE */
    int have_err; /* err was set by a callback: keep it */
    int handshake_done;
    int goaway; /* the server sent GOAWAY: no new requests here */
    uint64_t start_ns;
    struct req *reqs; /* requests whose stream nghttp3 has not closed */
    unsigned ninflight; /* of those, the ones whose response has not ended */
    uint64_t ncompleted;
    size_t ntx; /* datagrams in tx ... */
    size_t ntx_sent; /* ... and how many of them have been sent */
    size_t txlen[TX_BATCH];
    uint8_t tx[TX_BATCH][TX_SLOT];
};

struct worker {
    const struct h3load_config *cfg;
    struct h3load_worker_args *args;
    struct h3load_stats *st;
    struct event_base *base;
    struct event *warmup; /* --warm-up-time */
    struct event *deadline; /* -D */
    struct event *hardstop; /* --timeout */
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t prio;
    struct conn **conns;
    unsigned nconn;
    unsigned nalive; /* slots with a connection */
    unsigned serial;
    uint64_t nreq_left; /* requests not yet submitted; H3LOAD_UNLIMITED with -D alone */
    uint64_t now; /* clock read at the top of each event and each receive batch */
    size_t next_req; /* which URL the next request takes */
    struct req *free_reqs;
    int stopping; /* deadline or hard stop: no new requests, no reconnections */
    int measuring; /* the warm-up is over (or there is none) */
    unsigned nerrlog;
    uint8_t *rxbuf;
    struct mmsghdr rmsg[RX_BATCH];
    struct iovec riov[RX_BATCH];
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } rctl[RX_BATCH];
};

static void conn_start(struct worker *w, unsigned slot);
static void conn_step(struct conn *c, int rv);

uint64_t h3load_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* An error or, with -v, an event of connection c; errors are limited to MAX_ERR_LOGS. */
static void conn_log(struct conn *c, int is_error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void conn_log(struct conn *c, int is_error, const char *fmt, ...)
{
    struct worker *w = c->w;
    char msg[256];
    va_list ap;

    if (!w->cfg->verbose && (!is_error || w->nerrlog >= MAX_ERR_LOGS))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "h3load: worker %u conn %u: %s\n", w->args->id, c->serial, msg);
    if (is_error && !w->cfg->verbose && ++w->nerrlog == MAX_ERR_LOGS)
        fprintf(stderr, "h3load: worker %u: further errors are not shown (-v shows them)\n",
                w->args->id);
}

/* ---- requests ---------------------------------------------------------------------------- */

static struct req *req_get(struct worker *w)
{
    struct req *r = w->free_reqs;

    if (r != NULL)
        w->free_reqs = r->next;
    else
        r = xmalloc(sizeof(*r));
    memset(r, 0, sizeof(*r));
    r->content_length = -1;
    return r;
}

static void req_put(struct conn *c, struct req *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    r->next = c->w->free_reqs;
    c->w->free_reqs = r;
}

static void stats_latency(struct h3load_stats *st, uint64_t ns)
{
    uint64_t us = ns / 1000;

    if (st->nlatency == st->latency_cap) {
        st->latency_cap = st->latency_cap ? st->latency_cap * 2 : 4096;
        st->latency_us = xrealloc(st->latency_us, st->latency_cap * sizeof(*st->latency_us));
    }
    st->latency_us[st->nlatency++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

/*
 * The response of r has ended: classify it and free its place among the -m. malformed: nghttp3
 * refused it (NGHTTP3_ERR_MALFORMED_HTTP_MESSAGING): once the header fields have passed, that
 * is a body longer or shorter than its Content-Length.
 */
static void req_finish(struct conn *c, struct req *r, int malformed)
{
    struct h3load_stats *st = c->w->st;
    int cls = r->status / 100;
    int has_body = r->status != 204 && r->status != 304;

    r->ended = 1;
    c->ninflight--;
    c->ncompleted++;
    if (!r->counted)
        return;
    stats_latency(st, c->w->now - r->start_ns);
    st->status[cls >= 1 && cls <= 5 ? cls : 0]++;
    if (malformed) {
        st->length_mismatch += r->content_length >= 0;
        st->failed++;
    } else if (has_body && r->content_length >= 0 && (uint64_t)r->content_length != r->body) {
        st->length_mismatch++;
        st->failed++;
    } else if (cls == 2 || cls == 3) {
        st->succeeded++;
    } else {
        st->failed++;
    }
}

/* Keep -m requests in flight on c, within the server's stream limit and the work left. */
static int conn_submit(struct conn *c)
{
    struct worker *w = c->w;
    const struct h3load_config *cfg = w->cfg;

    if (c->h3 == NULL || c->goaway || w->stopping)
        return 0;
    while (c->ninflight < cfg->max_streams && w->nreq_left > 0 &&
           ngtcp2_conn_get_streams_bidi_left(c->qc) > 0) {
        const struct h3load_request *tmpl = &cfg->reqs[w->next_req];
        struct req *r = req_get(w);
        int64_t sid;
        int rv;

        rv = ngtcp2_conn_open_bidi_stream(c->qc, &sid, r);
        if (rv != 0) {
            r->next = w->free_reqs;
            w->free_reqs = r;
            return rv == NGTCP2_ERR_STREAM_ID_BLOCKED ? 0 : rv;
        }
        rv = nghttp3_conn_submit_request(c->h3, sid, tmpl->nva, tmpl->nvlen, NULL, r);
        if (rv != 0) {
            r->next = w->free_reqs;
            w->free_reqs = r;
            conn_log(c, 1, "nghttp3_conn_submit_request: %s", nghttp3_strerror(rv));
            ngtcp2_connection_close_error_set_application_error(
                &c->err, nghttp3_err_infer_quic_app_error_code(rv), NULL, 0);
            c->have_err = 1;
            return NGTCP2_ERR_CALLBACK_FAILURE;
        }
        r->stream_id = sid;
        r->start_ns = w->now;
        r->next = c->reqs;
        if (c->reqs != NULL)
            c->reqs->prev = r;
        c->reqs = r;
        r->counted = w->measuring;
        c->ninflight++;
        if (r->counted)
            w->st->started++;
        if (w->nreq_left != H3LOAD_UNLIMITED)
            w->nreq_left--;
        w->next_req = (w->next_req + 1) % cfg->nreqs;
    }
    return 0;
}

/* ---- nghttp3 callbacks ------------------------------------------------------------------- */

static int h3_recv_header(nghttp3_conn *h3, int64_t stream_id, int32_t token, nghttp3_rcbuf *name,
                          nghttp3_rcbuf *value, uint8_t flags, void *conn_user_data,
                          void *stream_user_data)
{
    struct req *r = stream_user_data;
    nghttp3_vec v = nghttp3_rcbuf_get_buf(value);
    int64_t n = 0;
    size_t i;

    if (r == NULL)
        return 0;
    if (token != NGHTTP3_QPACK_TOKEN__STATUS && token != NGHTTP3_QPACK_TOKEN_CONTENT_LENGTH)
        return 0;
    if (v.len == 0 || v.len > 18)
        n = -1;
    for (i = 0; i < v.len && n >= 0; i++)
        n = v.base[i] >= '0' && v.base[i] <= '9' ? n * 10 + (v.base[i] - '0') : -1;
    if (token == NGHTTP3_QPACK_TOKEN__STATUS)
        r->status = n >= 100 && n <= 999 ? (int)n : 0;
    else
        r->content_length = n;
    return 0;
}

static int h3_recv_data(nghttp3_conn *h3, int64_t stream_id, const uint8_t *data, size_t datalen,
                        void *conn_user_data, void *stream_user_data)
{
    struct conn *c = conn_user_data;
    struct req *r = stream_user_data;

    if (r != NULL)
        r->body += datalen;
    c->w->st->body_bytes += datalen;
    /* The body is counted, not kept: its flow-control credit goes back at once. */
    if (ngtcp2_conn_extend_max_stream_offset(c->qc, stream_id, datalen) != 0)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    ngtcp2_conn_extend_max_offset(c->qc, datalen);
    return 0;
}

static int h3_deferred_consume(nghttp3_conn *h3, int64_t stream_id, size_t consumed,
                               void *conn_user_data, void *stream_user_data)
{
    struct conn *c = conn_user_data;

    if (ngtcp2_conn_extend_max_stream_offset(c->qc, stream_id, consumed) != 0)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    ngtcp2_conn_extend_max_offset(c->qc, consumed);
    return 0;
}

static int h3_end_stream(nghttp3_conn *h3, int64_t stream_id, void *conn_user_data,
                         void *stream_user_data)
{
    struct req *r = stream_user_data;

    if (r != NULL && !r->ended)
        req_finish(conn_user_data, r, 0);
    return 0;
}

static int h3_stream_close(nghttp3_conn *h3, int64_t stream_id, uint64_t app_error_code,
                           void *conn_user_data, void *stream_user_data)
{
    struct conn *c = conn_user_data;
    struct req *r = stream_user_data;

    if (r == NULL)
        return 0;
    if (!r->ended) {
        c->ninflight--;
        if (r->counted)
            c->w->st->errored++;
        conn_log(c, 1, "stream %lld closed before its response ended (error 0x%llx)",
                 (long long)stream_id, (unsigned long long)app_error_code);
    }
    req_put(c, r);
    return 0;
}

static int h3_stop_sending(nghttp3_conn *h3, int64_t stream_id, uint64_t app_error_code,
                           void *conn_user_data, void *stream_user_data)
{
    struct conn *c = conn_user_data;

    if (ngtcp2_conn_shutdown_stream_read(c->qc, stream_id, app_error_code) != 0)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    return 0;
}

static int h3_reset_stream(nghttp3_conn *h3, int64_t stream_id, uint64_t app_error_code,
                           void *conn_user_data, void *stream_user_data)
{
    struct conn *c = conn_user_data;

    if (ngtcp2_conn_shutdown_stream_write(c->qc, stream_id, app_error_code) != 0)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    return 0;
}

static int h3_shutdown(nghttp3_conn *h3, int64_t id, void *conn_user_data)
{
    struct conn *c = conn_user_data;

    c->goaway = 1;
    conn_log(c, 0, "GOAWAY from the server");
    return 0;
}

static int conn_start_h3(struct conn *c)
{
    static const nghttp3_callbacks callbacks = {
        .stream_close = h3_stream_close,
        .recv_data = h3_recv_data,
        .deferred_consume = h3_deferred_consume,
        .recv_header = h3_recv_header,
        .stop_sending = h3_stop_sending,
        .end_stream = h3_end_stream,
        .reset_stream = h3_reset_stream,
        .shutdown = h3_shutdown,
    };
    nghttp3_settings settings;
    int64_t ctrl, qenc, qdec;
    int rv;

    nghttp3_settings_default(&settings);
    settings.qpack_max_dtable_capacity = 4096;
    settings.qpack_blocked_streams = 100;
    rv = nghttp3_conn_client_new(&c->h3, &callbacks, &settings, NULL, c);
    if (rv != 0) {
        conn_log(c, 1, "nghttp3_conn_client_new: %s", nghttp3_strerror(rv));
        return -1;
    }
    if (ngtcp2_conn_open_uni_stream(c->qc, &ctrl, NULL) != 0 ||
        ngtcp2_conn_open_uni_stream(c->qc, &qenc, NULL) != 0 ||
        ngtcp2_conn_open_uni_stream(c->qc, &qdec, NULL) != 0) {
        conn_log(c, 1, "the server allows fewer than 3 unidirectional streams");
        return -1;
    }
    rv = nghttp3_conn_bind_control_stream(c->h3, ctrl);
    if (rv == 0)
        rv = nghttp3_conn_bind_qpack_streams(c->h3, qenc, qdec);
    if (rv != 0) {
        conn_log(c, 1, "nghttp3 stream binding: %s", nghttp3_strerror(rv));
        return -1;
    }
    return 0;
}

/* ---- ngtcp2 callbacks -------------------------------------------------------------------- */

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    struct conn *c = ref->user_data;

    return c->qc;
}

static void rand_cb(uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *rand_ctx)
{
    if (gnutls_rnd(GNUTLS_RND_RANDOM, dest, destlen) != 0)
        memset(dest, 0, destlen); /* only used to pick packet-number skips and the like */
}

static int get_new_connection_id(ngtcp2_conn *qc, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                                 void *user_data)
{
    uint8_t data[NGTCP2_MAX_CIDLEN];

    if (cidlen > sizeof(data) || gnutls_rnd(GNUTLS_RND_RANDOM, data, cidlen) != 0 ||
        gnutls_rnd(GNUTLS_RND_RANDOM, token, NGTCP2_STATELESS_RESET_TOKENLEN) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    ngtcp2_cid_init(cid, data, cidlen);
    return 0;
}

static int handshake_completed(ngtcp2_conn *qc, void *user_data)
{
    struct conn *c = user_data;
    gnutls_datum_t alpn;

    if (gnutls_alpn_get_selected_protocol(c->tls, &alpn) != 0 || alpn.size != 2 ||
        memcmp(alpn.data, "h3", 2) != 0) {
        conn_log(c, 1, "the server did not select ALPN h3");
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    if (conn_start_h3(c) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    c->handshake_done = 1;
    c->w->st->conn_ok++;
    conn_log(c, 0, "handshake done in %.3f ms", (double)(c->w->now - c->start_ns) / 1e6);
    return 0;
}

static int recv_stream_data(ngtcp2_conn *qc, uint32_t flags, int64_t stream_id, uint64_t offset,
                            const uint8_t *data, size_t datalen, void *user_data,
                            void *stream_user_data)
{
    struct conn *c = user_data;
    struct req *r = stream_user_data;
    nghttp3_ssize n;

    if (c->h3 == NULL)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    n = nghttp3_conn_read_stream(c->h3, stream_id, data, datalen,
                                 (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0);
    if (n < 0) {
        /*
         * nghttp3 0.8 makes a malformed response a connection error: the response counts as
         * failed, the others in flight on c as errored, and c is replaced (conn_end).
         */
        if (n == NGHTTP3_ERR_MALFORMED_HTTP_MESSAGING && r != NULL && !r->ended)
            req_finish(c, r, 1);
        conn_log(c, 1, "nghttp3_conn_read_stream: %s", nghttp3_strerror((int)n));
        ngtcp2_connection_close_error_set_application_error(
            &c->err, nghttp3_err_infer_quic_app_error_code((int)n), NULL, 0);
        c->have_err = 1;
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    /* n counts the HTTP/3 framing and QPACK bytes; h3_recv_data credits the DATA payload. */
    if (ngtcp2_conn_extend_max_stream_offset(qc, stream_id, (uint64_t)n) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    ngtcp2_conn_extend_max_offset(qc, (uint64_t)n);
    return 0;
}

static int acked_stream_data_offset(ngtcp2_conn *qc, int64_t stream_id, uint64_t offset,
                                    uint64_t datalen, void *user_data, void *stream_user_data)
{
    struct conn *c = user_data;

    if (c->h3 != NULL && nghttp3_conn_add_ack_offset(c->h3, stream_id, datalen) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int stream_close(ngtcp2_conn *qc, uint32_t flags, int64_t stream_id, uint64_t app_error_code,
                        void *user_data, void *stream_user_data)
{
    struct conn *c = user_data;
    int rv;

    if (c->h3 == NULL)
        return 0;
    if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
        app_error_code = NGHTTP3_H3_NO_ERROR;
    rv = nghttp3_conn_close_stream(c->h3, stream_id, app_error_code);
    if (rv != 0 && rv != NGHTTP3_ERR_STREAM_NOT_FOUND) {
        ngtcp2_connection_close_error_set_application_error(
            &c->err, nghttp3_err_infer_quic_app_error_code(rv), NULL, 0);
        c->have_err = 1;
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

/* RESET_STREAM and STOP_SENDING from the server: nghttp3 drops what it has of the stream. */
static int stream_reset(ngtcp2_conn *qc, int64_t stream_id, uint64_t final_size,
                        uint64_t app_error_code, void *user_data, void *stream_user_data)
{
    struct conn *c = user_data;

    if (c->h3 != NULL && nghttp3_conn_shutdown_stream_read(c->h3, stream_id) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int stream_stop_sending(ngtcp2_conn *qc, int64_t stream_id, uint64_t app_error_code,
                               void *user_data, void *stream_user_data)
{
    return stream_reset(qc, stream_id, 0, app_error_code, user_data, stream_user_data);
}

static int extend_max_stream_data(ngtcp2_conn *qc, int64_t stream_id, uint64_t max_data,
                                  void *user_data, void *stream_user_data)
{
    struct conn *c = user_data;

    if (c->h3 != NULL && nghttp3_conn_unblock_stream(c->h3, stream_id) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

/*
 * extend_max_local_streams_bidi is left out on purpose: conn_submit() runs after every
 * receive batch and every timer, and asks ngtcp2_conn_get_streams_bidi_left() itself.
 */
static const ngtcp2_callbacks quic_callbacks = {
    .client_initial = ngtcp2_crypto_client_initial_cb,
    .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
    .handshake_completed = handshake_completed,
    .encrypt = ngtcp2_crypto_encrypt_cb,
    .decrypt = ngtcp2_crypto_decrypt_cb,
    .hp_mask = ngtcp2_crypto_hp_mask_cb,
    .recv_stream_data = recv_stream_data,
    .acked_stream_data_offset = acked_stream_data_offset,
    .stream_close = stream_close,
    .recv_retry = ngtcp2_crypto_recv_retry_cb,
    .rand = rand_cb,
    .get_new_connection_id = get_new_connection_id,
    .update_key = ngtcp2_crypto_update_key_cb,
    .stream_reset = stream_reset,
    .extend_max_stream_data = extend_max_stream_data,
    .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
    .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
    .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
    .stream_stop_sending = stream_stop_sending,
    .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
};

/* ---- datagrams --------------------------------------------------------------------------- */

/* Sends what waits in c->tx; on a full socket buffer, the rest waits for EV_WRITE. */
static int conn_flush(struct conn *c)
{
    struct h3load_stats *st = c->w->st;

    while (c->ntx_sent < c->ntx) {
        struct mmsghdr msg[TX_BATCH];
        struct iovec iov[TX_BATCH];
        size_t k = c->ntx - c->ntx_sent;
        size_t i;
        int n;

        memset(msg, 0, k * sizeof(msg[0]));
        for (i = 0; i < k; i++) {
            iov[i].iov_base = c->tx[c->ntx_sent + i];
            iov[i].iov_len = c->txlen[c->ntx_sent + i];
            msg[i].msg_hdr.msg_iov = &iov[i];
            msg[i].msg_hdr.msg_iovlen = 1;
        }
        n = sendmmsg(c->fd, msg, (unsigned)k, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                event_add(c->wev, NULL);
                return 0;
            }
            if (errno == ENOBUFS || errno == EMSGSIZE) {
                /* As if lost on the way: QUIC recovers. */
                c->ntx_sent = c->ntx;
                break;
            }
            c->sock_errno = errno;
            return ERR_SOCKET;
        }
        for (i = 0; i < (size_t)n; i++)
            st->tx_bytes += c->txlen[c->ntx_sent + i];
        st->tx_datagrams += (uint64_t)n;
        c->ntx_sent += (size_t)n;
    }
    c->ntx = c->ntx_sent = 0;
    return 0;
}

/* One write pass: request data from nghttp3 into ngtcp2 packets, then out in one batch. */
static int conn_write(struct conn *c)
{
    struct worker *w = c->w;
    size_t maxpkt;
    size_t limit;
    int rv;

    if (c->ntx > 0) {
        rv = conn_flush(c);
        if (rv != 0 || c->ntx > 0)
            return rv;
    }
    maxpkt = ngtcp2_conn_get_path_max_tx_udp_payload_size(c->qc);
    ASSERT(maxpkt <= TX_SLOT);
    limit = ngtcp2_conn_get_send_quantum(c->qc) / maxpkt;
    limit = UTIL_MAX(UTIL_MIN(limit, (size_t)TX_BATCH), 1);
    for (;;) {
        nghttp3_vec hv[16];
        ngtcp2_vec v[16];
        nghttp3_ssize nv = 0;
        ngtcp2_ssize ndatalen;
        ngtcp2_ssize n;
        int64_t sid = -1;
        int fin = 0;
        uint32_t flags;
        nghttp3_ssize i;

        if (c->h3 != NULL && ngtcp2_conn_get_max_data_left(c->qc) > 0) {
            nv = nghttp3_conn_writev_stream(c->h3, &sid, &fin, hv, ARRAY_SIZE(hv));
            if (nv < 0) {
                conn_log(c, 1, "nghttp3_conn_writev_stream: %s", nghttp3_strerror((int)nv));
                ngtcp2_connection_close_error_set_application_error(
                    &c->err, nghttp3_err_infer_quic_app_error_code((int)nv), NULL, 0);
                c->have_err = 1;
                return NGTCP2_ERR_CALLBACK_FAILURE;
            }
        }
        for (i = 0; i < nv; i++) {
            v[i].base = hv[i].base;
            v[i].len = hv[i].len;
        }
        flags = NGTCP2_WRITE_STREAM_FLAG_MORE | (fin ? NGTCP2_WRITE_STREAM_FLAG_FIN : 0);
        n = ngtcp2_conn_writev_stream(c->qc, NULL, NULL, c->tx[c->ntx], TX_SLOT, &ndatalen, flags,
                                      sid, v, (size_t)nv, w->now);
        if (n < 0) {
            switch (n) {
            case NGTCP2_ERR_STREAM_DATA_BLOCKED:
                nghttp3_conn_block_stream(c->h3, sid);
                continue;
            case NGTCP2_ERR_STREAM_SHUT_WR:
                nghttp3_conn_shutdown_stream_write(c->h3, sid);
                continue;
            case NGTCP2_ERR_WRITE_MORE:
                rv = nghttp3_conn_add_write_offset(c->h3, sid, (size_t)ndatalen);
                if (rv != 0)
                    return NGTCP2_ERR_CALLBACK_FAILURE;
                continue;
            default:
                return (int)n;
            }
        }
        if (sid >= 0 && ndatalen >= 0) {
            rv = nghttp3_conn_add_write_offset(c->h3, sid, (size_t)ndatalen);
            if (rv != 0)
                return NGTCP2_ERR_CALLBACK_FAILURE;
        }
        if (n == 0)
            break;
        c->txlen[c->ntx++] = (size_t)n;
        if (c->ntx == limit)
            break;
    }
    /*
     * No pacing before the handshake has completed: ngtcp2 0.12 paces from the initial RTT
     * (333 ms) until it has a sample, so the 1200-byte Initial would hold the client's Finished
     * and the first requests back by ~20 ms. The bytes still count at the next update.
     */
    if (c->handshake_done)
        ngtcp2_conn_update_pkt_tx_time(c->qc, w->now);
    return conn_flush(c);
}

/* The segment size of a GRO train, or 0 for a single datagram. */
static size_t gro_segment(struct msghdr *mh)
{
    struct cmsghdr *cm;
    int seg;

    for (cm = CMSG_FIRSTHDR(mh); cm != NULL; cm = CMSG_NXTHDR(mh, cm)) {
        if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO) {
            memcpy(&seg, CMSG_DATA(cm), sizeof(seg));
            return seg > 0 ? (size_t)seg : 0;
        }
    }
    return 0;
}

/* Reads and processes what the socket has, in batches, with a write pass after each. */
static int conn_read(struct conn *c)
{
    struct worker *w = c->w;
    struct h3load_stats *st = w->st;
    int round;

    for (round = 0; round < READ_ROUNDS; round++) {
        int n;
        int i;
        int rv;

        for (i = 0; i < RX_BATCH; i++) {
            w->rmsg[i].msg_hdr.msg_controllen = sizeof(w->rctl[i]);
            w->rmsg[i].msg_hdr.msg_flags = 0;
        }
        n = recvmmsg(c->fd, w->rmsg, RX_BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return 0;
            c->sock_errno = errno;
            return ERR_SOCKET;
        }
        w->now = h3load_now_ns();
        for (i = 0; i < n; i++) {
            const uint8_t *p = w->rxbuf + (size_t)i * RX_BUF;
            size_t len = w->rmsg[i].msg_len;
            size_t seg = gro_segment(&w->rmsg[i].msg_hdr);
            size_t off;

            if (w->rmsg[i].msg_hdr.msg_flags & MSG_TRUNC)
                continue;
            if (seg == 0)
                seg = len;
            st->rx_bytes += len;
            for (off = 0; off < len; off += seg) {
                size_t plen = UTIL_MIN(seg, len - off);

                st->rx_datagrams++;
                rv = ngtcp2_conn_read_pkt(c->qc, &c->path, NULL, p + off, plen, w->now);
                if (rv != 0)
                    return rv;
            }
        }
        rv = conn_submit(c);
        if (rv == 0)
            rv = conn_write(c);
        if (rv != 0 || n < RX_BATCH)
            return rv;
    }
    return 0;
}

/* ---- connection life --------------------------------------------------------------------- */

static void conn_send_close(struct conn *c)
{
    uint8_t buf[TX_SLOT];
    ngtcp2_ssize n;

    if (ngtcp2_conn_is_in_closing_period(c->qc) || ngtcp2_conn_is_in_draining_period(c->qc))
        return;
    n = ngtcp2_conn_write_connection_close(c->qc, NULL, NULL, buf, sizeof(buf), &c->err, c->w->now);
    if (n > 0 && send(c->fd, buf, (size_t)n, MSG_DONTWAIT) == n) {
        c->w->st->tx_bytes += (uint64_t)n;
        c->w->st->tx_datagrams++;
    }
}

/*
 * Frees c and counts its unfinished requests; replaces it with a new connection if it had
 * completed responses and work is left, and ends the loop when no connection is left.
 */
static void conn_end(struct conn *c, enum inflight how)
{
    struct worker *w = c->w;
    unsigned slot = c->slot;
    int again = !w->stopping && w->nreq_left > 0 && c->ncompleted > 0;

    while (c->reqs != NULL) {
        struct req *r = c->reqs;

        if (!r->ended && r->counted) {
            if (how == INFLIGHT_ABANDONED)
                w->st->abandoned++;
            else
                w->st->errored++;
        }
        req_put(c, r);
    }
    if (c->h3 != NULL)
        nghttp3_conn_del(c->h3);
    if (c->qc != NULL)
        ngtcp2_conn_del(c->qc);
    if (c->tls != NULL)
        gnutls_deinit(c->tls);
    if (c->rev != NULL)
        event_free(c->rev);
    if (c->wev != NULL)
        event_free(c->wev);
    if (c->timer != NULL)
        event_free(c->timer);
    if (c->fd >= 0)
        close(c->fd);
    free(c);
    w->conns[slot] = NULL;
    w->nalive--;
    if (again)
        conn_start(w, slot);
    if (w->nalive == 0)
        event_base_loopbreak(w->base);
}

/* Ends c after error rv (an ngtcp2 error code or ERR_SOCKET). */
static void conn_abort(struct conn *c, int rv)
{
    if (rv == ERR_SOCKET) {
        conn_log(c, 1, "socket: %s", strerror(c->sock_errno));
    } else if (rv == NGTCP2_ERR_IDLE_CLOSE) {
        conn_log(c, 1, "idle timeout");
    } else if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
        conn_log(c, 1, "handshake timeout");
    } else if (rv == NGTCP2_ERR_DRAINING) {
        ngtcp2_connection_close_error cerr;
        int clean;

        ngtcp2_conn_get_connection_close_error(c->qc, &cerr);
        clean = cerr.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION
                    ? cerr.error_code == NGHTTP3_H3_NO_ERROR
                    : cerr.error_code == 0;
        conn_log(c, !c->handshake_done || !clean, "closed by the server (%s error 0x%llx)",
                 cerr.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_APPLICATION ? "application"
                                                                                  : "transport",
                 (unsigned long long)cerr.error_code);
    } else {
        conn_log(c, 1, "%s", ngtcp2_strerror(rv));
        if (!c->have_err) {
            if (rv == NGTCP2_ERR_CRYPTO)
                ngtcp2_connection_close_error_set_transport_error_tls_alert(
                    &c->err, ngtcp2_conn_get_tls_alert(c->qc), NULL, 0);
            else
                ngtcp2_connection_close_error_set_transport_error_liberr(&c->err, rv, NULL, 0);
        }
        conn_send_close(c);
    }
    if (!c->handshake_done)
        c->w->st->conn_failed++;
    conn_end(c, INFLIGHT_ERRORED);
}

/* Ends c with H3_NO_ERROR: work done, GOAWAY, deadline or hard stop. */
static void conn_close(struct conn *c, enum inflight how)
{
    ngtcp2_connection_close_error_set_application_error(&c->err, NGHTTP3_H3_NO_ERROR, NULL, 0);
    conn_send_close(c);
    conn_end(c, how);
}

static void conn_arm_timer(struct conn *c)
{
    ngtcp2_tstamp expiry = ngtcp2_conn_get_expiry(c->qc);
    uint64_t d;
    struct timeval tv;

    if (expiry == UINT64_MAX) {
        evtimer_del(c->timer);
        return;
    }
    d = expiry > c->w->now ? expiry - c->w->now : 0;
    tv.tv_sec = (time_t)(d / 1000000000u);
    tv.tv_usec = (suseconds_t)((d % 1000000000u + 999) / 1000);
    evtimer_add(c->timer, &tv);
}

/* After I/O or a timer: submit, write, re-arm the timer, or end c (c may be gone after). */
static void conn_step(struct conn *c, int rv)
{
    struct worker *w = c->w;

    if (rv == 0)
        rv = conn_submit(c);
    if (rv == 0)
        rv = conn_write(c);
    if (rv != 0) {
        conn_abort(c, rv);
        return;
    }
    if (c->ninflight == 0 && (w->nreq_left == 0 || (c->goaway && c->handshake_done))) {
        conn_log(c, 0, "done: %llu responses", (unsigned long long)c->ncompleted);
        conn_close(c, INFLIGHT_ERRORED);
        return;
    }
    conn_arm_timer(c);
}

static void conn_on_io(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    int rv = 0;

    c->w->now = h3load_now_ns();
    if (what & EV_WRITE)
        rv = conn_flush(c);
    if (rv == 0 && (what & EV_READ))
        rv = conn_read(c);
    conn_step(c, rv);
}

static void conn_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    c->w->now = h3load_now_ns();
    conn_step(c, ngtcp2_conn_handle_expiry(c->qc, c->w->now));
}

static int conn_socket(struct conn *c)
{
    const struct h3load_config *cfg = c->w->cfg;
    socklen_t len = sizeof(c->local);
    int one = 1;
    int rcvbuf = RCVBUF;

    c->fd = socket(cfg->addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
    if (c->fd < 0)
        return -1;
    /* A bigger buffer if we may (root), else what net.core.rmem_max allows. */
    if (setsockopt(c->fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0)
        (void)setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    (void)setsockopt(c->fd, SOL_UDP, UDP_GRO, &one, sizeof(one));
    if (connect(c->fd, (const struct sockaddr *)&cfg->addr, cfg->addrlen) != 0 ||
        getsockname(c->fd, (struct sockaddr *)&c->local, &len) != 0)
        return -1;
    ngtcp2_addr_init(&c->path.local, (const ngtcp2_sockaddr *)&c->local, len);
    ngtcp2_addr_init(&c->path.remote, (const ngtcp2_sockaddr *)&cfg->addr, cfg->addrlen);
    return 0;
}

static int conn_tls(struct conn *c)
{
    struct worker *w = c->w;
    const char *sni = w->cfg->sni;
    gnutls_datum_t alpn = {.data = (unsigned char *)"h3", .size = 2};

    if (gnutls_init(&c->tls,
                    GNUTLS_CLIENT | GNUTLS_ENABLE_EARLY_DATA | GNUTLS_NO_END_OF_EARLY_DATA) != 0) {
        c->tls = NULL;
        return -1;
    }
    if (gnutls_priority_set(c->tls, w->prio) != 0 ||
        ngtcp2_crypto_gnutls_configure_client_session(c->tls) != 0)
        return -1;
    c->conn_ref.get_conn = get_conn;
    c->conn_ref.user_data = c;
    gnutls_session_set_ptr(c->tls, &c->conn_ref);
    /* Credentials with no trust anchors and no verification: test certificates pass. */
    if (gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, w->cred) != 0 ||
        gnutls_alpn_set_protocols(c->tls, &alpn, 1, GNUTLS_ALPN_MANDATORY) != 0)
        return -1;
    if (sni != NULL && gnutls_server_name_set(c->tls, GNUTLS_NAME_DNS, sni, strlen(sni)) != 0)
        return -1;
    ngtcp2_conn_set_tls_native_handle(c->qc, c->tls);
    return 0;
}

/* -vv: ngtcp2's own log, one line per packet and frame. */
static void quic_log(void *user_data, const char *fmt, ...)
{
    struct conn *c = user_data;
    va_list ap;

    fprintf(stderr, "h3load: worker %u conn %u: ", c->w->args->id, c->serial);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int conn_quic(struct conn *c)
{
    ngtcp2_settings settings;
    ngtcp2_transport_params params;
    uint8_t id[2][NGTCP2_MAX_CIDLEN];
    ngtcp2_cid dcid, scid;
    int rv;

    if (gnutls_rnd(GNUTLS_RND_RANDOM, id, sizeof(id)) != 0)
        return -1;
    ngtcp2_cid_init(&dcid, id[0], 18);
    ngtcp2_cid_init(&scid, id[1], 17);
    ngtcp2_settings_default(&settings);
    settings.initial_ts = c->w->now;
    if (c->w->cfg->verbose >= 2)
        settings.log_printf = quic_log;
    settings.max_tx_udp_payload_size = TX_SLOT;
    settings.max_window = MAX_CONN_WINDOW;
    settings.max_stream_window = MAX_STREAM_WINDOW;
    ngtcp2_transport_params_default(&params);
    params.initial_max_stream_data_bidi_local = STREAM_WINDOW;
    params.initial_max_stream_data_uni = STREAM_WINDOW;
    params.initial_max_data = CONN_WINDOW;
    params.initial_max_streams_bidi = 0; /* the server opens no request streams */
    params.initial_max_streams_uni = 16; /* its control and QPACK streams, and spares */
    params.max_idle_timeout = IDLE_TIMEOUT;
    rv = ngtcp2_conn_client_new(&c->qc, &dcid, &scid, &c->path, NGTCP2_PROTO_VER_V1,
                                &quic_callbacks, &settings, &params, NULL, c);
    if (rv != 0) {
        c->qc = NULL;
        conn_log(c, 1, "ngtcp2_conn_client_new: %s", ngtcp2_strerror(rv));
        return -1;
    }
    return 0;
}

/* Opens a new connection in w->conns[slot] and sends its first flight. */
static void conn_start(struct worker *w, unsigned slot)
{
    struct conn *c = xcalloc(1, sizeof(*c));

    c->w = w;
    c->slot = slot;
    c->serial = w->serial++;
    c->fd = -1;
    c->start_ns = w->now;
    ngtcp2_connection_close_error_default(&c->err);
    w->conns[slot] = c;
    w->nalive++;
    w->st->conn_attempts++;
    if (conn_socket(c) != 0) {
        conn_log(c, 1, "socket: %s", strerror(errno));
        goto fail;
    }
    if (conn_quic(c) != 0 || conn_tls(c) != 0) {
        conn_log(c, 1, "cannot set up the QUIC or TLS state");
        goto fail;
    }
    c->rev = event_new(w->base, c->fd, EV_READ | EV_PERSIST, conn_on_io, c);
    c->wev = event_new(w->base, c->fd, EV_WRITE, conn_on_io, c);
    c->timer = evtimer_new(w->base, conn_on_timer, c);
    if (c->rev == NULL || c->wev == NULL || c->timer == NULL || event_add(c->rev, NULL) != 0) {
        conn_log(c, 1, "libevent: cannot add events");
        goto fail;
    }
    conn_step(c, 0);
    return;
fail:
    w->st->conn_failed++;
    conn_end(c, INFLIGHT_ERRORED);
}

/* ---- the worker -------------------------------------------------------------------------- */

static void worker_stop(struct worker *w, enum inflight how)
{
    unsigned i;

    w->stopping = 1;
    for (i = 0; i < w->nconn; i++) {
        if (w->conns[i] != NULL)
            conn_close(w->conns[i], how);
    }
    event_base_loopbreak(w->base);
}

/* The warm-up is over: what happened so far does not count, the connections stay. */
static void worker_on_warmup(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    struct h3load_stats *st = w->st;
    uint64_t conn_attempts = st->conn_attempts;
    uint64_t conn_ok = st->conn_ok;
    uint64_t conn_failed = st->conn_failed;
    uint32_t *latency_us = st->latency_us;
    size_t latency_cap = st->latency_cap;

    memset(st, 0, sizeof(*st));
    st->conn_attempts = conn_attempts;
    st->conn_ok = conn_ok;
    st->conn_failed = conn_failed;
    st->latency_us = latency_us;
    st->latency_cap = latency_cap;
    st->start_ns = h3load_now_ns();
    w->measuring = 1;
}

static void worker_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    w->now = h3load_now_ns();
    worker_stop(w, INFLIGHT_ABANDONED);
}

static void worker_on_hardstop(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;

    w->now = h3load_now_ns();
    fprintf(stderr,
            "h3load: worker %u: hard timeout (--timeout) reached; requests in flight "
            "count as errored\n",
            w->args->id);
    worker_stop(w, INFLIGHT_ERRORED);
}

static int worker_timer(struct worker *w, struct event **ev, event_callback_fn cb, uint64_t ns)
{
    struct timeval tv = {
        .tv_sec = (time_t)(ns / 1000000000u),
        .tv_usec = (suseconds_t)(ns % 1000000000u / 1000),
    };

    *ev = evtimer_new(w->base, cb, w);
    return *ev != NULL && evtimer_add(*ev, &tv) == 0 ? 0 : -1;
}

static int worker_init(struct worker *w)
{
    const struct h3load_config *cfg = w->cfg;
    struct event_config *ecfg = event_config_new();
    int i;

    if (ecfg == NULL)
        return -1;
    /* Pacing and ACK-delay timers are sub-millisecond: epoll's 1 ms timeout is too coarse. */
    event_config_set_flag(ecfg, EVENT_BASE_FLAG_NOLOCK | EVENT_BASE_FLAG_PRECISE_TIMER);
    w->base = event_base_new_with_config(ecfg);
    event_config_free(ecfg);
    if (w->base == NULL)
        return -1;
    if (gnutls_certificate_allocate_credentials(&w->cred) != 0 ||
        gnutls_priority_init(&w->prio, tls_priority, NULL) != 0)
        return -1;
    w->rxbuf = xmalloc((size_t)RX_BATCH * RX_BUF);
    for (i = 0; i < RX_BATCH; i++) {
        w->riov[i].iov_base = w->rxbuf + (size_t)i * RX_BUF;
        w->riov[i].iov_len = RX_BUF;
        w->rmsg[i].msg_hdr.msg_iov = &w->riov[i];
        w->rmsg[i].msg_hdr.msg_iovlen = 1;
        w->rmsg[i].msg_hdr.msg_control = w->rctl[i].buf;
    }
    w->conns = xcalloc(w->nconn, sizeof(*w->conns));
    w->measuring = cfg->warmup_ns == 0;
    if (cfg->warmup_ns > 0 && worker_timer(w, &w->warmup, worker_on_warmup, cfg->warmup_ns) != 0)
        return -1;
    if (cfg->duration_ns > 0 &&
        worker_timer(w, &w->deadline, worker_on_deadline, cfg->warmup_ns + cfg->duration_ns) != 0)
        return -1;
    return worker_timer(w, &w->hardstop, worker_on_hardstop, cfg->timeout_ns);
}

static void worker_fini(struct worker *w)
{
    unsigned i;

    w->stopping = 1;
    for (i = 0; w->conns != NULL && i < w->nconn; i++) {
        if (w->conns[i] != NULL)
            conn_end(w->conns[i], INFLIGHT_ERRORED);
    }
    while (w->free_reqs != NULL) {
        struct req *r = w->free_reqs;

        w->free_reqs = r->next;
        free(r);
    }
    free(w->conns);
    free(w->rxbuf);
    if (w->warmup != NULL)
        event_free(w->warmup);
    if (w->deadline != NULL)
        event_free(w->deadline);
    if (w->hardstop != NULL)
        event_free(w->hardstop);
    if (w->prio != NULL)
        gnutls_priority_deinit(w->prio);
    if (w->cred != NULL)
        gnutls_certificate_free_credentials(w->cred);
    if (w->base != NULL)
        event_base_free(w->base);
}

void *h3load_worker_run(void *arg)
{
    struct h3load_worker_args *a = arg;
    struct worker w;
    unsigned i;

    memset(&w, 0, sizeof(w));
    w.cfg = a->cfg;
    w.args = a;
    w.st = &a->stats;
    w.nconn = a->nconn;
    w.nreq_left = a->nreq;
    w.now = h3load_now_ns();
    a->stats.start_ns = w.now;
    if (worker_init(&w) != 0) {
        fprintf(stderr, "h3load: worker %u: cannot set up libevent or GnuTLS\n", a->id);
        a->rc = -1;
        worker_fini(&w);
        return NULL;
    }
    for (i = 0; i < w.nconn && !w.stopping; i++)
        conn_start(&w, i);
    if (w.nalive > 0)
        event_base_dispatch(w.base);
    a->stats.end_ns = h3load_now_ns();
    worker_fini(&w);
    return NULL;
}
