/*
 * edge/h3/conn.c: one QUIC connection (ngtcp2, TLS through GnuTLS) carrying HTTP/3
 * (nghttp3), and its request streams, each a struct exchange. Owned by the worker whose
 * endpoint accepted the client's Initial; everything runs on that worker's thread.
 *
 * Call discipline (as in edge/h2): library callbacks only record what happened in flags of
 * the stream or the connection (head complete, body bytes, stream closed, bytes
 * acknowledged); conn_run() acts on them afterwards from a fresh call stack: it starts
 * exchanges, hands request bodies over, tells exchanges that their stream can take more, frees
 * closed streams, then writes packets. Transport operations called by an exchange submit to
 * nghttp3 directly and activate the connection's `kick` event.
 *
 * Back-pressure: a response body waits in the stream's evbuffer until QUIC acknowledges it
 * (nghttp3 reads it without copying and may need it again for retransmission); body_space()
 * counts those bytes against STREAM_BUF, so a client that does not read (its flow-control
 * window closed) or does not acknowledge stops the exchange, and the exchange stops the fetch.
 * Request bodies: received DATA is given back to the client's flow-control window only as the
 * exchange takes it.
 *
 * Stable memory: nghttp3 holds pointers into the evbuffer until acknowledged. Bytes are only
 * ever appended with evbuffer_add_buffer() (which links chains, never moves existing data) and
 * removed from the front once acknowledged.
 *
 * Limits: streams by QUIC (initial_max_streams_bidi = h3_max_concurrent_streams, raised one by
 * one as streams close), header sizes by fieldsec (431; a QPACK bomb closes the connection),
 * the QPACK dynamic tables at QPACK_TABLE bytes, the body by max_body_size, idle connections
 * (no request in progress) by idle_timeout, silent clients by QUIC's idle timeout.
 */
#include <errno.h>
#include <nghttp3/nghttp3.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "edge/h3/quic_int.h"
#include "lib/log.h"
#include "lib/util.h"

#if NGHTTP3_VERSION_NUM != 0x000800
#error "edge/h3 is written against nghttp3 0.8.0 (Debian 12)"
#endif

#define STREAM_BUF (256 * 1024) /* response bytes held per stream, sent or not */
#define TX_BATCH 16 /* packets per send (GSO) */
#define RUN_ROUNDS 16
#define QPACK_TABLE 4096
#define MAX_VEC 16

struct h3_stream {
    struct h3_conn *c;
    int64_t id;
    struct h3_stream *prev;
    struct h3_stream *next;
    struct exchange x;
    bool x_active; /* x initialised and not yet finished */
    bool headers_done;
    bool started; /* exchange_start (or a refusal) done; counts in c->n_busy */
    bool end_on_headers;
    bool closed; /* nghttp3 closed the stream: release at the next run */
    struct fieldsec fs;
    struct mux_body req; /* request body; credit given back as the exchange takes it */
    /* response body: [handed to nghttp3, unacknowledged | not yet handed] */
    struct evbuffer *body;
    size_t handed;
    bool body_eof;
    bool deferred; /* read_data returned WOULDBLOCK */
    bool want_space;
    bool want_writable;
};

struct h3_cidrec {
    uint8_t len;
    uint8_t b[NGTCP2_MAX_CIDLEN];
};

struct h3_conn {
    struct h3_worker *hw;
    struct worker *w;
    struct h3_sock *sock;
    struct h3_conn *prev;
    struct h3_conn *next;
    ngtcp2_conn *qc;
    nghttp3_conn *hc;
    gnutls_session_t sess;
    struct h3_conn_tls ct;
    struct h3_tls *tls;
    char peer[64];
    struct h3_cidrec cids[H3_MAX_CIDS + 2];
    size_t n_cids;
    struct event *timer; /* ngtcp2's expiry */
    struct event *idle_timer; /* no request in progress for idle_timeout */
    struct event *kick;
    struct h3_stream *streams;
    size_t n_busy;
    ngtcp2_connection_close_error ccerr;
    bool ccerr_set;
    bool handshaking; /* counted in hw->handshaking */
    bool in_run;
    bool dirty;
    bool closing; /* CONNECTION_CLOSE sent or received: waiting out the closing period */
    bool closed;
    bool notice_sent;
    bool final_goaway;
    bool idle_armed;
    /* a batch the socket could not take */
    uint8_t *pending;
    size_t pending_len;
    size_t pending_seg;
    struct sockaddr_storage pending_to;
    socklen_t pending_tolen;
    bool blocked; /* on hw->blocked */
    struct h3_conn *blocked_next;
};

static const struct transport_ops h3_ops;
static void conn_run(struct h3_conn *c);
static void conn_close_error(struct h3_conn *c);

static ngtcp2_tstamp now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (ngtcp2_tstamp)ts.tv_sec * NGTCP2_SECONDS + (ngtcp2_tstamp)ts.tv_nsec;
}

static const struct config *conn_cfg(const struct h3_conn *c)
{
    return c->w->edge->cfg;
}

static void kick(struct h3_conn *c)
{
    if (c->closed)
        return;
    c->dirty = true;
    if (!c->in_run)
        event_active(c->kick, EV_READ, 0);
}

static void set_app_error(struct h3_conn *c, uint64_t code)
{
    if (c->ccerr_set)
        return;
    ngtcp2_connection_close_error_set_application_error(&c->ccerr, code, NULL, 0);
    c->ccerr_set = true;
}

static void set_liberr(struct h3_conn *c, int liberr)
{
    if (c->ccerr_set)
        return;
    if (liberr == NGTCP2_ERR_CRYPTO)
        ngtcp2_connection_close_error_set_transport_error_tls_alert(
            &c->ccerr, ngtcp2_conn_get_tls_alert(c->qc), NULL, 0);
    else
        ngtcp2_connection_close_error_set_transport_error_liberr(&c->ccerr, liberr, NULL, 0);
    c->ccerr_set = true;
}

/* ---- streams ------------------------------------------------------------------------------ */

static struct h3_stream *stream_new(struct h3_conn *c, int64_t id)
{
    struct h3_stream *st = xcalloc(1, sizeof(*st));
    st->c = c;
    st->id = id;
    mux_body_init(&st->req);
    st->body = evbuffer_new();
    ASSERT(st->body != NULL);
    exchange_init(&st->x, c->w, &h3_ops, st);
    st->x_active = true;
    st->next = c->streams;
    if (c->streams)
        c->streams->prev = st;
    c->streams = st;
    return st;
}

/* End the exchange of a stream the client will not read (reset, or the connection went). */
static void stream_client_gone(struct h3_stream *st)
{
    if (!st->x_active)
        return;
    mux_exchange_gone(&st->x, st->started);
    st->x_active = false;
}

static void stream_free(struct h3_stream *st)
{
    struct h3_conn *c = st->c;
    stream_client_gone(st);
    if (st->started)
        c->n_busy--;
    if (st->prev)
        st->prev->next = st->next;
    else
        c->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    if (c->hc != NULL && !st->closed)
        nghttp3_conn_set_stream_user_data(c->hc, st->id, NULL);
    mux_body_fini(&st->req);
    evbuffer_free(st->body);
    free(st);
}

/* A stream error: reset both directions (the library closes the stream afterwards). */
static void stream_reset(struct h3_stream *st, uint64_t code)
{
    if (!st->closed && !st->c->closed)
        ngtcp2_conn_shutdown_stream(st->c->qc, st->id, code);
}

/* Give `n` request bytes back to the client's flow-control windows. */
static void stream_consume(struct h3_stream *st, size_t n)
{
    if (n == 0 || st->c->closed)
        return;
    ngtcp2_conn_extend_max_stream_offset(st->c->qc, st->id, n);
    ngtcp2_conn_extend_max_offset(st->c->qc, n);
}

static void stream_start(struct h3_stream *st)
{
    struct h3_conn *c = st->c;
    struct exchange *x = &st->x;
    st->started = true;
    c->n_busy++;
    snprintf(x->client_addr, sizeof(x->client_addr), "%s", c->peer);
    bool no_body = mux_no_body(&st->req, st->end_on_headers);
    switch (fieldsec_finish(x, &st->fs, conn_cfg(c), true, no_body)) {
    case FIELDSEC_MALFORMED:
        METRIC_INC(c->w, rejected[REJECT_SYNTAX]);
        log_ratelimited(LOG_INFO, "h3: %s: stream %lld: malformed request", c->peer,
                        (long long)st->id);
        exchange_fini(x);
        st->x_active = false;
        stream_reset(st, NGHTTP3_H3_MESSAGE_ERROR);
        return;
    case FIELDSEC_REFUSE:
        METRIC_INC(c->w, rejected[st->fs.why]);
        log_ratelimited(LOG_INFO, "h3: %s: stream %lld: refused request (%s): %d", c->peer,
                        (long long)st->id, reject_name(st->fs.why), st->fs.status);
        exchange_respond_error(x, st->fs.status, st->fs.msg);
        return;
    case FIELDSEC_OK:
        break;
    }
    if (no_body)
        st->req.eof_delivered = true;
    exchange_start(x);
}

static void stream_process(struct h3_stream *st)
{
    if (st->headers_done && !st->started && mux_head_ready(&st->x, &st->req, st->end_on_headers))
        stream_start(st);
    if (st->req.discard || (st->started && mux_body_pending(&st->req)))
        stream_consume(st, mux_body_deliver(&st->req, &st->x, st->x_active && st->started));
    if (st->want_writable) {
        st->want_writable = false;
        if (st->x_active && st->x.head_sent && !st->x.finished)
            exchange_on_writable(&st->x);
    }
}

static void conn_process(struct h3_conn *c)
{
    c->dirty = false;
    struct h3_stream *st = c->streams;
    while (st && !c->closed) {
        struct h3_stream *next = st->next;
        if (st->closed)
            stream_free(st);
        else
            stream_process(st);
        st = next;
    }
}

/* ---- nghttp3 callbacks: record, never act ------------------------------------------------ */

static int h_acked_stream_data(nghttp3_conn *hc, int64_t id, uint64_t datalen, void *cu, void *su)
{
    struct h3_stream *st = su;
    if (st == NULL)
        return 0;
    ASSERT(datalen <= st->handed);
    evbuffer_drain(st->body, (size_t)datalen);
    st->handed -= (size_t)datalen;
    if (st->want_space && evbuffer_get_length(st->body) <= STREAM_BUF / 2) {
        st->want_space = false;
        st->want_writable = true;
        st->c->dirty = true;
    }
    return 0;
}

static int h_stream_close(nghttp3_conn *hc, int64_t id, uint64_t code, void *cu, void *su)
{
    struct h3_conn *c = cu;
    struct h3_stream *st = su;
    if (st != NULL) {
        st->closed = true;
        c->dirty = true;
    }
    if (ngtcp2_is_bidi_stream(id))
        ngtcp2_conn_extend_max_streams_bidi(c->qc, 1);
    return 0;
}

static int h_recv_data(nghttp3_conn *hc, int64_t id, const uint8_t *data, size_t len, void *cu,
                       void *su)
{
    struct h3_conn *c = cu;
    struct h3_stream *st = su;
    if (st == NULL) {
        ngtcp2_conn_extend_max_stream_offset(c->qc, id, len);
        ngtcp2_conn_extend_max_offset(c->qc, len);
        return 0;
    }
    mux_body_add(&st->req, conn_cfg(c), data, len);
    c->dirty = true;
    return 0;
}

static int h_deferred_consume(nghttp3_conn *hc, int64_t id, size_t consumed, void *cu, void *su)
{
    struct h3_conn *c = cu;
    ngtcp2_conn_extend_max_stream_offset(c->qc, id, consumed);
    ngtcp2_conn_extend_max_offset(c->qc, consumed);
    return 0;
}

static int h_begin_headers(nghttp3_conn *hc, int64_t id, void *cu, void *su)
{
    struct h3_conn *c = cu;
    if (su != NULL)
        return 0;
    struct h3_stream *st = stream_new(c, id);
    nghttp3_conn_set_stream_user_data(hc, id, st);
    return 0;
}

static int h_recv_header(nghttp3_conn *hc, int64_t id, int32_t token, nghttp3_rcbuf *name,
                         nghttp3_rcbuf *value, uint8_t flags, void *cu, void *su)
{
    struct h3_conn *c = cu;
    struct h3_stream *st = su;
    if (st == NULL)
        return 0;
    nghttp3_vec n = nghttp3_rcbuf_get_buf(name), v = nghttp3_rcbuf_get_buf(value);
    if (fieldsec_add(&st->x, &st->fs, conn_cfg(c), n.base, n.len, v.base, v.len))
        return 0;
    log_ratelimited(LOG_INFO, "h3: %s: decoded header block too large (QPACK bomb)", c->peer);
    set_app_error(c, NGHTTP3_H3_EXCESSIVE_LOAD);
    return NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int h_end_headers(nghttp3_conn *hc, int64_t id, int fin, void *cu, void *su)
{
    struct h3_conn *c = cu;
    struct h3_stream *st = su;
    if (st == NULL)
        return 0;
    st->headers_done = true;
    st->end_on_headers = fin != 0;
    if (fin)
        st->req.eof = true;
    c->dirty = true;
    return 0;
}

/* Trailers count against the limits but are not forwarded. */
static int h_recv_trailer(nghttp3_conn *hc, int64_t id, int32_t token, nghttp3_rcbuf *name,
                          nghttp3_rcbuf *value, uint8_t flags, void *cu, void *su)
{
    struct h3_conn *c = cu;
    struct h3_stream *st = su;
    if (st == NULL)
        return 0;
    st->fs.bytes += nghttp3_rcbuf_get_buf(name).len + nghttp3_rcbuf_get_buf(value).len + 32;
    if (st->fs.bytes <= conn_cfg(c)->max_header_bytes * FIELDSEC_BOMB_FACTOR)
        return 0;
    set_app_error(c, NGHTTP3_H3_EXCESSIVE_LOAD);
    return NGHTTP3_ERR_CALLBACK_FAILURE;
}

static int h_end_stream(nghttp3_conn *hc, int64_t id, void *cu, void *su)
{
    struct h3_conn *c = cu;
    struct h3_stream *st = su;
    if (st != NULL) {
        st->req.eof = true;
        c->dirty = true;
    }
    return 0;
}

static int h_stop_sending(nghttp3_conn *hc, int64_t id, uint64_t code, void *cu, void *su)
{
    struct h3_conn *c = cu;
    ngtcp2_conn_shutdown_stream_read(c->qc, id, code);
    return 0;
}

static int h_reset_stream(nghttp3_conn *hc, int64_t id, uint64_t code, void *cu, void *su)
{
    struct h3_conn *c = cu;
    ngtcp2_conn_shutdown_stream_write(c->qc, id, code);
    return 0;
}

static nghttp3_ssize h_read_data(nghttp3_conn *hc, int64_t id, nghttp3_vec *vec, size_t veccnt,
                                 uint32_t *pflags, void *cu, void *su)
{
    struct h3_stream *st = su;
    if (st == NULL)
        return NGHTTP3_ERR_CALLBACK_FAILURE;
    size_t len = evbuffer_get_length(st->body);
    size_t avail = len - st->handed;
    if (avail == 0) {
        if (st->body_eof) {
            *pflags |= NGHTTP3_DATA_FLAG_EOF;
            return 0;
        }
        st->deferred = true;
        return NGHTTP3_ERR_WOULDBLOCK;
    }
    struct evbuffer_ptr pos;
    evbuffer_ptr_set(st->body, &pos, st->handed, EVBUFFER_PTR_SET);
    struct evbuffer_iovec iov[MAX_VEC];
    int want = evbuffer_peek(st->body, (ev_ssize_t)avail, &pos, iov, MAX_VEC);
    size_t n = UTIL_MIN((size_t)want, UTIL_MIN(veccnt, (size_t)MAX_VEC));
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = UTIL_MIN(iov[i].iov_len, avail - total);
        vec[i].base = iov[i].iov_base;
        vec[i].len = l;
        total += l;
    }
    st->handed += total;
    if (st->body_eof && st->handed == len)
        *pflags |= NGHTTP3_DATA_FLAG_EOF;
    return (nghttp3_ssize)n;
}

static int h3_session_start(struct h3_conn *c)
{
    const struct config *cfg = conn_cfg(c);
    static const nghttp3_callbacks cbs = {
        .acked_stream_data = h_acked_stream_data,
        .stream_close = h_stream_close,
        .recv_data = h_recv_data,
        .deferred_consume = h_deferred_consume,
        .begin_headers = h_begin_headers,
        .recv_header = h_recv_header,
        .end_headers = h_end_headers,
        .recv_trailer = h_recv_trailer,
        .stop_sending = h_stop_sending,
        .end_stream = h_end_stream,
        .reset_stream = h_reset_stream,
    };
    nghttp3_settings set;
    nghttp3_settings_default(&set);
    set.max_field_section_size = cfg->max_header_bytes;
    set.qpack_max_dtable_capacity = QPACK_TABLE;
    set.qpack_encoder_max_dtable_capacity = QPACK_TABLE;
    set.qpack_blocked_streams = 100;
    if (nghttp3_conn_server_new(&c->hc, &cbs, &set, NULL, c) != 0)
        return -1;
    nghttp3_conn_set_max_client_streams_bidi(c->hc, cfg->h3_max_concurrent_streams);
    int64_t ctrl, qenc, qdec;
    if (ngtcp2_conn_open_uni_stream(c->qc, &ctrl, NULL) != 0 ||
        nghttp3_conn_bind_control_stream(c->hc, ctrl) != 0 ||
        ngtcp2_conn_open_uni_stream(c->qc, &qenc, NULL) != 0 ||
        ngtcp2_conn_open_uni_stream(c->qc, &qdec, NULL) != 0 ||
        nghttp3_conn_bind_qpack_streams(c->hc, qenc, qdec) != 0)
        return -1;
    return 0;
}

/* ---- ngtcp2 callbacks --------------------------------------------------------------------- */

static int q_recv_stream_data(ngtcp2_conn *qc, uint32_t flags, int64_t id, uint64_t offset,
                              const uint8_t *data, size_t len, void *ud, void *sd)
{
    struct h3_conn *c = ud;
    if (c->hc == NULL)
        return 0;
    nghttp3_ssize n =
        nghttp3_conn_read_stream(c->hc, id, data, len, flags & NGTCP2_STREAM_DATA_FLAG_FIN);
    if (n < 0) {
        log_ratelimited(LOG_INFO, "h3: %s: %s", c->peer, nghttp3_strerror((int)n));
        set_app_error(c, nghttp3_err_infer_quic_app_error_code((int)n));
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    ngtcp2_conn_extend_max_stream_offset(qc, id, (uint64_t)n);
    ngtcp2_conn_extend_max_offset(qc, (uint64_t)n);
    return 0;
}

static int q_acked_stream_data_offset(ngtcp2_conn *qc, int64_t id, uint64_t offset,
                                      uint64_t datalen, void *ud, void *sd)
{
    struct h3_conn *c = ud;
    if (c->hc != NULL && nghttp3_conn_add_ack_offset(c->hc, id, datalen) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int q_stream_close(ngtcp2_conn *qc, uint32_t flags, int64_t id, uint64_t code, void *ud,
                          void *sd)
{
    struct h3_conn *c = ud;
    if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
        code = NGHTTP3_H3_NO_ERROR;
    if (c->hc == NULL)
        return 0;
    int rv = nghttp3_conn_close_stream(c->hc, id, code);
    if (rv != 0 && rv != NGHTTP3_ERR_STREAM_NOT_FOUND) {
        set_app_error(c, nghttp3_err_infer_quic_app_error_code(rv));
        return NGTCP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int q_stream_reset(ngtcp2_conn *qc, int64_t id, uint64_t final_size, uint64_t code, void *ud,
                          void *sd)
{
    struct h3_conn *c = ud;
    if (c->hc != NULL && nghttp3_conn_shutdown_stream_read(c->hc, id) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int q_stream_stop_sending(ngtcp2_conn *qc, int64_t id, uint64_t code, void *ud, void *sd)
{
    struct h3_conn *c = ud;
    if (c->hc != NULL && nghttp3_conn_shutdown_stream_read(c->hc, id) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int q_extend_max_stream_data(ngtcp2_conn *qc, int64_t id, uint64_t max_data, void *ud,
                                    void *sd)
{
    struct h3_conn *c = ud;
    if (c->hc != NULL && nghttp3_conn_unblock_stream(c->hc, id) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return 0;
}

static int q_extend_max_remote_streams_bidi(ngtcp2_conn *qc, uint64_t max, void *ud)
{
    struct h3_conn *c = ud;
    if (c->hc != NULL)
        nghttp3_conn_set_max_client_streams_bidi(c->hc, max);
    return 0;
}

static void handshake_uncount(struct h3_conn *c)
{
    if (c->handshaking) {
        c->handshaking = false;
        c->hw->handshaking--;
    }
}

static int q_handshake_completed(ngtcp2_conn *qc, void *ud)
{
    handshake_uncount(ud);
    return 0;
}

static void cid_add(struct h3_conn *c, const uint8_t *b, size_t len)
{
    if (c->n_cids >= ARRAY_SIZE(c->cids))
        return;
    c->cids[c->n_cids].len = (uint8_t)len;
    memcpy(c->cids[c->n_cids].b, b, len);
    c->n_cids++;
    h3_cid_register(c->hw, b, len, c);
}

static int q_get_new_connection_id(ngtcp2_conn *qc, ngtcp2_cid *cid, uint8_t *token, size_t cidlen,
                                   void *ud)
{
    struct h3_conn *c = ud;
    uint8_t b[H3_CID_LEN];
    if (cidlen != H3_CID_LEN || c->n_cids >= ARRAY_SIZE(c->cids))
        return NGTCP2_ERR_CALLBACK_FAILURE;
    h3_cid_make(b, c->w->id);
    ngtcp2_cid_init(cid, b, cidlen);
    const uint8_t *secret = c->hw->node->secret;
    if (ngtcp2_crypto_generate_stateless_reset_token(token, secret, H3_SECRET_LEN, cid) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    cid_add(c, b, cidlen);
    return 0;
}

static int q_remove_connection_id(ngtcp2_conn *qc, const ngtcp2_cid *cid, void *ud)
{
    struct h3_conn *c = ud;
    for (size_t i = 0; i < c->n_cids; i++) {
        if (c->cids[i].len == cid->datalen && memcmp(c->cids[i].b, cid->data, cid->datalen) == 0) {
            h3_cid_unregister(c->hw, cid->data, cid->datalen);
            c->cids[i] = c->cids[--c->n_cids];
            break;
        }
    }
    return 0;
}

static void q_rand(uint8_t *dest, size_t len, const ngtcp2_rand_ctx *ctx)
{
    while (len > 0) {
        ssize_t n = getrandom(dest, len, 0);
        ASSERT(n > 0);
        dest += n;
        len -= (size_t)n;
    }
}

static int q_recv_rx_key(ngtcp2_conn *qc, ngtcp2_crypto_level level, void *ud)
{
    struct h3_conn *c = ud;
    if (level != NGTCP2_CRYPTO_LEVEL_APPLICATION || c->hc != NULL)
        return 0;
    return h3_session_start(c) == 0 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

static ngtcp2_conn *get_conn(ngtcp2_crypto_conn_ref *ref)
{
    struct h3_conn *c = ref->user_data;
    return c->qc;
}

/* ---- sending ------------------------------------------------------------------------------ */

static void block(struct h3_conn *c)
{
    if (c->blocked)
        return;
    c->blocked = true;
    c->blocked_next = c->hw->blocked;
    c->hw->blocked = c;
    h3_sock_want_write(c->sock);
}

static void unblock(struct h3_conn *c)
{
    if (!c->blocked)
        return;
    for (struct h3_conn **pp = &c->hw->blocked; *pp; pp = &(*pp)->blocked_next) {
        if (*pp == c) {
            *pp = c->blocked_next;
            break;
        }
    }
    c->blocked = false;
    c->blocked_next = NULL;
}

/* Send a batch; false if the socket was full (the batch is kept and the connection waits). */
static bool send_batch(struct h3_conn *c, const ngtcp2_addr *to, const uint8_t *data, size_t len,
                       size_t seg)
{
    int rc = h3_sock_send(c->sock, (const struct sockaddr *)to->addr, to->addrlen, data, len, seg);
    if (rc != -EAGAIN)
        return true; /* other errors (ICMP unreachable...): like a lost packet */
    c->pending = xrealloc(c->pending, len);
    memcpy(c->pending, data, len);
    c->pending_len = len;
    c->pending_seg = seg;
    memcpy(&c->pending_to, to->addr, to->addrlen);
    c->pending_tolen = to->addrlen;
    block(c);
    return false;
}

static bool same_addr(const ngtcp2_addr *a, const ngtcp2_addr *b)
{
    return a->addrlen == b->addrlen && memcmp(a->addr, b->addr, a->addrlen) == 0;
}

/* Write packets until ngtcp2 has nothing more or the socket is full. Returns false when the
 * connection closed or must wait. */
static bool conn_write(struct h3_conn *c)
{
    if (c->pending_len > 0 || c->closing)
        return false;
    static __thread uint8_t buf[TX_BATCH * H3_MAX_PKT];
    ngtcp2_path_storage ps, batch_ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_path_storage_zero(&batch_ps);
    ngtcp2_pkt_info pi;
    ngtcp2_tstamp ts = now_ns();
    size_t quantum = ngtcp2_conn_get_send_quantum(c->qc) / H3_MAX_PKT;
    size_t max_pkts = UTIL_MAX((size_t)1, UTIL_MIN(quantum, (size_t)TX_BATCH));
    size_t off = 0, seg = 0, npk = 0;
    for (;;) {
        int64_t sid = -1;
        int fin = 0;
        nghttp3_vec vec[MAX_VEC];
        nghttp3_ssize vcnt = 0;
        if (c->hc != NULL && ngtcp2_conn_get_max_data_left(c->qc) > 0) {
            vcnt = nghttp3_conn_writev_stream(c->hc, &sid, &fin, vec, MAX_VEC);
            if (vcnt < 0) {
                set_app_error(c, nghttp3_err_infer_quic_app_error_code((int)vcnt));
                conn_close_error(c);
                return false;
            }
        }
        ngtcp2_ssize ndatalen = -1;
        uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE | (fin ? NGTCP2_WRITE_STREAM_FLAG_FIN : 0);
        ngtcp2_ssize nw =
            ngtcp2_conn_writev_stream(c->qc, &ps.path, &pi, buf + off, H3_MAX_PKT, &ndatalen, flags,
                                      sid, (const ngtcp2_vec *)vec, (size_t)vcnt, ts);
        if (nw < 0) {
            if (nw == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
                nghttp3_conn_block_stream(c->hc, sid);
                continue;
            }
            if (nw == NGTCP2_ERR_STREAM_SHUT_WR) {
                nghttp3_conn_shutdown_stream_write(c->hc, sid);
                continue;
            }
            if (nw == NGTCP2_ERR_WRITE_MORE) {
                if (nghttp3_conn_add_write_offset(c->hc, sid, (size_t)ndatalen) != 0)
                    break;
                continue;
            }
            set_liberr(c, (int)nw);
            conn_close_error(c);
            return false;
        }
        if (ndatalen >= 0 && nghttp3_conn_add_write_offset(c->hc, sid, (size_t)ndatalen) != 0) {
            set_app_error(c, NGHTTP3_H3_INTERNAL_ERROR);
            conn_close_error(c);
            return false;
        }
        if (nw == 0)
            break;
        size_t len = (size_t)nw;
        /* GSO: all packets of a batch go to one address, all but the last of one size */
        if (npk > 0 && (len > seg || !same_addr(&ps.path.remote, &batch_ps.path.remote))) {
            if (!send_batch(c, &batch_ps.path.remote, buf, off, seg))
                return false;
            memmove(buf, buf + off, len);
            off = 0;
            npk = 0;
        }
        if (npk == 0) {
            seg = len;
            ngtcp2_path_copy(&batch_ps.path, &ps.path);
        }
        off += len;
        npk++;
        if (len < seg || npk >= max_pkts) {
            if (!send_batch(c, &batch_ps.path.remote, buf, off, seg))
                return false;
            off = 0;
            npk = 0;
        }
    }
    if (off > 0 && !send_batch(c, &batch_ps.path.remote, buf, off, seg))
        return false;
    ngtcp2_conn_update_pkt_tx_time(c->qc, ts);
    return true;
}

static void conn_on_writable(struct h3_conn *c)
{
    if (c->closed)
        return;
    if (c->pending_len > 0) {
        int rc = h3_sock_send(c->sock, (struct sockaddr *)&c->pending_to, c->pending_tolen,
                              c->pending, c->pending_len, c->pending_seg);
        if (rc == -EAGAIN) {
            block(c);
            return;
        }
        c->pending_len = 0;
    }
    conn_run(c);
}

void h3_conns_writable(struct h3_worker *hw)
{
    struct h3_conn *c = hw->blocked;
    hw->blocked = NULL;
    while (c) {
        struct h3_conn *next = c->blocked_next;
        c->blocked_next = NULL;
        c->blocked = false;
        conn_on_writable(c); /* may block again and re-link itself */
        c = next;
    }
}

/* ---- timers and closing ------------------------------------------------------------------- */

static void timer_update(struct h3_conn *c)
{
    ngtcp2_tstamp exp = ngtcp2_conn_get_expiry(c->qc);
    if (exp == UINT64_MAX) {
        evtimer_del(c->timer);
        return;
    }
    ngtcp2_tstamp now = now_ns();
    uint64_t ns = exp > now ? exp - now : 0;
    struct timeval tv = {(time_t)(ns / NGTCP2_SECONDS),
                         (suseconds_t)((ns % NGTCP2_SECONDS) / 1000)};
    evtimer_add(c->timer, &tv);
}

static void idle_update(struct h3_conn *c)
{
    bool idle = c->n_busy == 0 && !c->closing;
    if (idle && !c->idle_armed)
        edge_timer_arm(c->idle_timer, conn_cfg(c)->idle_timeout_ms);
    else if (!idle && c->idle_armed)
        edge_timer_arm(c->idle_timer, 0);
    c->idle_armed = idle;
}

/* The closing or draining period (RFC 9000 10.2): three PTOs, then free. */
static void enter_closing(struct h3_conn *c)
{
    c->closing = true;
    handshake_uncount(c);
    unblock(c);
    c->pending_len = 0;
    uint64_t ns = 3 * ngtcp2_conn_get_pto(c->qc);
    struct timeval tv = {(time_t)(ns / NGTCP2_SECONDS),
                         (suseconds_t)((ns % NGTCP2_SECONDS) / 1000)};
    evtimer_add(c->timer, &tv);
    edge_timer_arm(c->idle_timer, 0);
    c->idle_armed = false;
    while (c->streams)
        stream_free(c->streams);
}

/* Send CONNECTION_CLOSE with c->ccerr (or NO_ERROR) and wait out the closing period. */
static void conn_close_error(struct h3_conn *c)
{
    if (c->closing || c->closed)
        return;
    if (!c->ccerr_set)
        ngtcp2_connection_close_error_set_application_error(&c->ccerr, NGHTTP3_H3_NO_ERROR, NULL,
                                                            0);
    uint8_t buf[H3_MAX_PKT];
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi;
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(c->qc, &ps.path, &pi, buf, sizeof(buf),
                                                        &c->ccerr, now_ns());
    if (n > 0)
        h3_sock_send(c->sock, (struct sockaddr *)ps.path.remote.addr, ps.path.remote.addrlen, buf,
                     (size_t)n, (size_t)n);
    enter_closing(c);
}

static void conn_on_error(struct h3_conn *c, int rv)
{
    switch (rv) {
    case NGTCP2_ERR_DRAINING: /* the client closed */
        enter_closing(c);
        return;
    case NGTCP2_ERR_DROP_CONN:
    case NGTCP2_ERR_IDLE_CLOSE:
    case NGTCP2_ERR_HANDSHAKE_TIMEOUT:
        h3_conn_close_now(c);
        return;
    default:
        log_ratelimited(LOG_INFO, "h3: %s: %s", c->peer, ngtcp2_strerror(rv));
        set_liberr(c, rv);
        conn_close_error(c);
        return;
    }
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct h3_conn *c = arg;
    if (c->closing) {
        h3_conn_close_now(c);
        return;
    }
    int rv = ngtcp2_conn_handle_expiry(c->qc, now_ns());
    if (rv != 0) {
        conn_on_error(c, rv);
        return;
    }
    conn_run(c);
}

static void idle_cb(evutil_socket_t fd, short what, void *arg)
{
    struct h3_conn *c = arg;
    c->idle_armed = false;
    if (c->n_busy == 0 && !c->closing && !c->closed)
        conn_close_error(c); /* H3_NO_ERROR */
}

static void conn_run(struct h3_conn *c)
{
    if (c->in_run || c->closed || c->closing)
        return;
    c->in_run = true;
    bool more = false;
    for (int round = 0; round < RUN_ROUNDS && !c->closed && !c->closing; round++) {
        conn_process(c);
        if (c->closed || c->closing || !conn_write(c))
            break;
        if (!c->dirty)
            break;
        more = round + 1 == RUN_ROUNDS;
    }
    c->in_run = false;
    if (c->closed || c->closing)
        return;
    if (c->final_goaway && c->n_busy == 0) {
        conn_close_error(c);
        return;
    }
    if (more || c->dirty)
        event_active(c->kick, EV_READ, 0);
    timer_update(c);
    idle_update(c);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    conn_run(arg);
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static const ngtcp2_callbacks q_callbacks = {
    .recv_client_initial = ngtcp2_crypto_recv_client_initial_cb,
    .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
    .handshake_completed = q_handshake_completed,
    .encrypt = ngtcp2_crypto_encrypt_cb,
    .decrypt = ngtcp2_crypto_decrypt_cb,
    .hp_mask = ngtcp2_crypto_hp_mask_cb,
    .recv_stream_data = q_recv_stream_data,
    .acked_stream_data_offset = q_acked_stream_data_offset,
    .stream_close = q_stream_close,
    .rand = q_rand,
    .get_new_connection_id = q_get_new_connection_id,
    .remove_connection_id = q_remove_connection_id,
    .update_key = ngtcp2_crypto_update_key_cb,
    .stream_reset = q_stream_reset,
    .extend_max_remote_streams_bidi = q_extend_max_remote_streams_bidi,
    .extend_max_stream_data = q_extend_max_stream_data,
    .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
    .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
    .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
    .stream_stop_sending = q_stream_stop_sending,
    .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
    .recv_rx_key = q_recv_rx_key,
};

static int conn_setup(struct h3_conn *c, const struct sockaddr *remote, socklen_t remotelen,
                      const struct h3_initial *in)
{
    const struct config *cfg = conn_cfg(c);
    const ngtcp2_pkt_hd *hd = in->hd;
    uint8_t scidb[H3_CID_LEN];
    h3_cid_make(scidb, c->w->id);
    ngtcp2_cid scid;
    ngtcp2_cid_init(&scid, scidb, sizeof(scidb));

    ngtcp2_settings set;
    ngtcp2_settings_default(&set);
    set.initial_ts = now_ns();
    set.cc_algo = NGTCP2_CC_ALGO_CUBIC;
    set.max_tx_udp_payload_size = H3_MAX_PKT;
    set.no_pmtud = 1; /* equal-sized packets for GSO; 1452 fits every usual path */
    set.handshake_timeout = (ngtcp2_duration)cfg->tls_handshake_timeout_ms * NGTCP2_MILLISECONDS;
    set.max_window = cfg->h3_conn_window;
    set.max_stream_window = cfg->h3_stream_window;

    ngtcp2_transport_params p;
    ngtcp2_transport_params_default(&p);
    p.initial_max_stream_data_bidi_remote = cfg->h3_stream_window;
    p.initial_max_stream_data_uni = 256 * 1024;
    p.initial_max_data = cfg->h3_conn_window;
    p.initial_max_streams_bidi = cfg->h3_max_concurrent_streams;
    p.initial_max_streams_uni = 3; /* the client's control and QPACK streams */
    p.max_idle_timeout = (ngtcp2_duration)cfg->idle_timeout_ms * NGTCP2_MILLISECONDS;
    p.max_udp_payload_size = 4096 - 64; /* what our receive slots hold */
    p.active_connection_id_limit = H3_MAX_CIDS;
    p.stateless_reset_token_present = 1;
    if (ngtcp2_crypto_generate_stateless_reset_token(p.stateless_reset_token, c->hw->node->secret,
                                                     H3_SECRET_LEN, &scid) != 0)
        return -1;
    if (in->retried) {
        p.original_dcid = *in->odcid;
        p.retry_scid = hd->dcid;
        p.retry_scid_present = 1;
    } else {
        p.original_dcid = hd->dcid;
    }
    struct h3_sock *s = c->sock;
    ngtcp2_path path = {
        {(ngtcp2_sockaddr *)&s->local, s->locallen}, {(ngtcp2_sockaddr *)remote, remotelen}, NULL};
    if (ngtcp2_conn_server_new(&c->qc, &hd->scid, &scid, &path, hd->version, &q_callbacks, &set, &p,
                               NULL, c) != 0)
        return -1;
    c->ct.ref.get_conn = get_conn;
    c->ct.ref.user_data = c;
    c->tls = h3_node_tls(c->hw->node);
    if (h3_tls_session(c->tls, &c->ct, &c->sess) != 0)
        return -1;
    ngtcp2_conn_set_tls_native_handle(c->qc, c->sess);
    cid_add(c, scidb, sizeof(scidb));
    cid_add(c, hd->dcid.data, hd->dcid.datalen); /* the client's first choice: retransmissions */
    return 0;
}

static void conn_release(struct h3_conn *c)
{
    for (size_t i = 0; i < c->n_cids; i++)
        h3_cid_unregister(c->hw, c->cids[i].b, c->cids[i].len);
    c->n_cids = 0;
    if (c->hc)
        nghttp3_conn_del(c->hc);
    c->hc = NULL;
    if (c->qc)
        ngtcp2_conn_del(c->qc);
    c->qc = NULL;
    if (c->sess)
        gnutls_deinit(c->sess);
    c->sess = NULL;
    h3_tls_unref(&c->tls);
    event_free(c->timer);
    event_free(c->idle_timer);
    event_free(c->kick);
    free(c->pending);
    c->pending = NULL;
}

struct h3_conn *h3_conn_new(struct h3_sock *s, const struct sockaddr *remote, socklen_t remotelen,
                            const struct h3_initial *in)
{
    struct h3_worker *hw = s->hw;
    struct worker *w = hw->w;
    if (!edge_conn_admit(w)) {
        uint8_t out[H3_MAX_PKT];
        ngtcp2_ssize n =
            ngtcp2_crypto_write_connection_close(out, sizeof(out), in->hd->version, &in->hd->scid,
                                                 &in->hd->dcid, NGTCP2_CONNECTION_REFUSED, NULL, 0);
        if (n > 0)
            h3_sock_send(s, remote, remotelen, out, (size_t)n, (size_t)n);
        return NULL;
    }
    struct h3_conn *c = xcalloc(1, sizeof(*c));
    c->hw = hw;
    c->w = w;
    c->sock = s;
    edge_peer_name(remote, c->peer, sizeof(c->peer));
    c->timer = evtimer_new(w->base, timer_cb, c);
    c->idle_timer = evtimer_new(w->base, idle_cb, c);
    c->kick = event_new(w->base, -1, 0, kick_cb, c);
    ngtcp2_connection_close_error_default(&c->ccerr);
    if (conn_setup(c, remote, remotelen, in) != 0) {
        log_ratelimited(LOG_WARN, "h3: %s: cannot create the connection", c->peer);
        conn_release(c);
        edge_conn_release(w);
        free(c);
        return NULL;
    }
    c->handshaking = true;
    hw->handshaking++;
    c->next = hw->conns;
    if (hw->conns)
        hw->conns->prev = c;
    hw->conns = c;
    h3_conn_recv(c, s, remote, remotelen, in->data, in->len);
    return c;
}

void h3_conn_recv(struct h3_conn *c, struct h3_sock *s, const struct sockaddr *remote,
                  socklen_t remotelen, const uint8_t *data, size_t len)
{
    if (c->closed || c->closing)
        return; /* closing period: the client's packets are dropped */
    ngtcp2_path path = {
        {(ngtcp2_sockaddr *)&s->local, s->locallen}, {(ngtcp2_sockaddr *)remote, remotelen}, NULL};
    ngtcp2_pkt_info pi = {0};
    int rv = ngtcp2_conn_read_pkt(c->qc, &path, &pi, data, len, now_ns());
    if (rv != 0) {
        conn_on_error(c, rv);
        return;
    }
    c->sock = s;
    kick(c);
}

void h3_conn_close_now(struct h3_conn *c)
{
    if (c->closed)
        return;
    struct h3_worker *hw = c->hw;
    c->closed = true;
    handshake_uncount(c);
    unblock(c);
    while (c->streams)
        stream_free(c->streams);
    conn_release(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        hw->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    edge_conn_release(c->w);
    c->prev = NULL;
    c->next = hw->reap;
    hw->reap = c;
    event_active(c->w->reap_ev, EV_READ, 0);
}

bool h3_conn_shutdown(struct h3_conn *c)
{
    if (c->closed || c->closing)
        return false;
    if (c->hc == NULL || c->handshaking) {
        conn_close_error(c);
        return false;
    }
    if (!c->notice_sent) {
        nghttp3_conn_submit_shutdown_notice(c->hc);
        c->notice_sent = true;
    } else if (!c->final_goaway) {
        nghttp3_conn_shutdown(c->hc);
        c->final_goaway = true;
    }
    conn_run(c);
    return !c->closed && !c->closing;
}

size_t h3_close_idle(struct worker *w)
{
    struct h3_worker *hw = w->h3;
    if (hw == NULL)
        return 0;
    size_t left = 0;
    struct h3_conn *c = hw->conns;
    while (c) {
        struct h3_conn *next = c->next;
        if (h3_conn_shutdown(c) || c->closing)
            left++;
        c = next;
    }
    return left;
}

void h3_close_all(struct worker *w)
{
    struct h3_worker *hw = w->h3;
    if (hw == NULL)
        return;
    while (hw->conns) {
        struct h3_conn *c = hw->conns;
        conn_close_error(c); /* best effort: tell the client */
        h3_conn_close_now(c);
    }
}

void h3_reap(struct worker *w)
{
    struct h3_worker *hw = w->h3;
    if (hw == NULL)
        return;
    while (hw->reap) {
        struct h3_conn *c = hw->reap;
        hw->reap = c->next;
        free(c);
    }
}

/* ---- transport_ops ------------------------------------------------------------------------ */

static void h3_send_head(struct exchange *x)
{
    struct h3_stream *st = x->transport;
    struct h3_conn *c = st->c;
    if (st->closed || c->closed || c->closing || c->hc == NULL)
        return;
    bool bodyless = x->no_body || x->status == 204 || x->status == 304 || x->status < 200;
    size_t max = x->resp.n + 2;
    struct fieldsec_field *f = arena_alloc(&x->arena, max * sizeof(*f));
    size_t n = fieldsec_response(x, f, max);
    nghttp3_nv *nva = arena_alloc(&x->arena, n * sizeof(*nva));
    for (size_t i = 0; i < n; i++)
        nva[i] = (nghttp3_nv){(uint8_t *)f[i].name.p, (uint8_t *)f[i].value.p, f[i].name.len,
                              f[i].value.len, NGHTTP3_NV_FLAG_NONE};
    nghttp3_data_reader dr = {h_read_data};
    int rv = nghttp3_conn_submit_response(c->hc, st->id, nva, n, bodyless ? NULL : &dr);
    if (rv != 0)
        log_ratelimited(LOG_WARN, "h3: %s: stream %lld: response: %s", c->peer, (long long)st->id,
                        nghttp3_strerror(rv));
    kick(c);
}

static void stream_resume(struct h3_stream *st)
{
    struct h3_conn *c = st->c;
    if (st->deferred && !st->closed && !c->closed && c->hc != NULL) {
        st->deferred = false;
        nghttp3_conn_resume_stream(c->hc, st->id);
    }
    kick(c);
}

static void h3_send_body(struct exchange *x, struct evbuffer *data)
{
    struct h3_stream *st = x->transport;
    if (st->closed || st->c->closed || st->c->closing || x->no_body) {
        evbuffer_drain(data, evbuffer_get_length(data));
        return;
    }
    evbuffer_add_buffer(st->body, data); /* links chains: bytes handed out never move */
    stream_resume(st);
}

static size_t h3_body_space(struct exchange *x)
{
    struct h3_stream *st = x->transport;
    if (st->closed || st->c->closed || st->c->closing)
        return 0;
    size_t len = evbuffer_get_length(st->body);
    if (len >= STREAM_BUF) {
        st->want_space = true;
        return 0;
    }
    return STREAM_BUF - len;
}

static void h3_finish(struct exchange *x)
{
    struct h3_stream *st = x->transport;
    st->body_eof = true;
    mux_exchange_done(x);
    st->x_active = false;
    stream_resume(st);
}

static void h3_abort(struct exchange *x)
{
    struct h3_stream *st = x->transport;
    mux_exchange_done(x);
    st->x_active = false;
    stream_reset(st, NGHTTP3_H3_INTERNAL_ERROR);
    kick(st->c);
}

static void h3_pause_body(struct exchange *x)
{
    struct h3_stream *st = x->transport;
    st->req.paused = true;
}

static void h3_resume_body(struct exchange *x)
{
    struct h3_stream *st = x->transport;
    if (!st->req.paused)
        return;
    st->req.paused = false;
    kick(st->c);
}

static void h3_send_continue(struct exchange *x)
{
    struct h3_stream *st = x->transport;
    struct h3_conn *c = st->c;
    if (st->closed || c->closed || c->closing || c->hc == NULL)
        return;
    nghttp3_nv nv = {(uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP3_NV_FLAG_NONE};
    nghttp3_conn_submit_info(c->hc, st->id, &nv, 1);
    kick(c);
}

static const struct transport_ops h3_ops = {
    .name = "HTTP/3",
    .send_head = h3_send_head,
    .send_body = h3_send_body,
    .body_space = h3_body_space,
    .finish = h3_finish,
    .abort = h3_abort,
    .pause_body = h3_pause_body,
    .resume_body = h3_resume_body,
    .send_continue = h3_send_continue,
    .send_direct = NULL,
    .quic = true,
};
