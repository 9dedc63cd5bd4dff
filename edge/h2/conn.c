/*
 * edge/h2/conn.c: the HTTP/2 front end (RFC 9113) on libnghttp2. One struct h2_conn per client
 * connection, owned by the worker whose edge/h1 connection handed it over (ALPN h2 after TLS,
 * or the h2c prior-knowledge preface); everything here runs on that worker's thread.
 *
 * Ownership: the connection owns its struct sockio (socket, TLS state, buffers), the
 * nghttp2 session and one struct h2_stream per request stream; a stream owns its struct
 * exchange (and so the exchange's arena) and two evbuffers, the request body received but not
 * yet taken by the exchange and the response body not yet framed. Closed connections go to
 * w->h2_reap and are freed at the end of the loop iteration (STYLE.md rule 20).
 *
 * Call discipline: nghttp2 is never called from inside its own callbacks. Callbacks only
 * record what happened in flags of the stream or connection (headers complete, body bytes,
 * stream closed, buffer drained) and conn_run() acts on them afterwards, from a fresh call
 * stack: it starts exchanges, delivers request bodies, tells exchanges that their stream can
 * take more (exchange_on_writable) and frees closed streams, then serialises frames with
 * nghttp2_session_mem_send(). Transport operations called by the exchange (send_head,
 * send_body, finish...) submit to nghttp2 directly (they run outside nghttp2's callbacks) and
 * activate the connection's `kick` event, which runs conn_run() later in the loop iteration.
 *
 * Back-pressure, response side: a stream buffers at most STREAM_BUF bytes (body_space());
 * the data provider frames them without copying (NGHTTP2_DATA_FLAG_NO_COPY moves evbuffer
 * chains into the socket buffer), returns NGHTTP2_ERR_DEFERRED when the buffer is empty and
 * is resumed when bytes or the end arrive. Frames are produced only while the socket buffer
 * holds less than OUT_HIGH bytes; EV_WRITE (with send_timeout) is armed only when a write
 * would block, and reading stops while the socket buffer is full. Request side: automatic
 * WINDOW_UPDATE is off and received DATA is acknowledged (nghttp2_session_consume) only as the
 * exchange takes it, so a paused upload stops the client at its flow-control window.
 *
 * Defences (each closes the connection with GOAWAY, the node keeps serving): client
 * RST_STREAM token bucket (rapid reset, CVE-2023-44487), CONTINUATION frames per header block,
 * decoded header bytes (431 past max_header_bytes, GOAWAY past FIELDSEC_BOMB_FACTOR times that),
 * a token bucket of control frames (PING, SETTINGS, PRIORITY, WINDOW_UPDATE, empty DATA;
 * every DATA frame we send earns one token, so window updates of a download never count
 * against it), bounded outbound ACK queue and SETTINGS size, streams blocked by a zero flow
 * control window for send_timeout, and idle_timeout while no request is in progress.
 */
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "edge/edge_int.h"
#include "lib/log.h"
#include "lib/util.h"

#define OUT_HIGH (256 * 1024) /* socket buffer bytes before we stop producing frames */
#define STREAM_BUF (128 * 1024) /* response bytes buffered per stream */
#define CONN_WINDOW (16 * 1024 * 1024) /* connection-level receive window */
#define READ_MAX (64 * 1024)
#define READS_PER_EVENT 4
#define RUN_ROUNDS 16 /* process/send rounds per conn_run before yielding to the loop */
#define MAX_OUTBOUND_ACK 128
#define MAX_SETTINGS_ENTRIES 32
#define LINGER_MS 1000 /* reading and dropping input after our GOAWAY, before close */

/*
 * Debian backports these two options into 1.52.0 (1.52.0-1+deb12u2 and later); upstream 1.52
 * lacks them. Declared weak so the same binary runs with either library. When present, the
 * built-in limits are set looser than ours so that the configured limits govern.
 */
#pragma weak nghttp2_option_set_max_continuations
#pragma weak nghttp2_option_set_stream_reset_rate_limit
void nghttp2_option_set_max_continuations(nghttp2_option *option, size_t val);
void nghttp2_option_set_stream_reset_rate_limit(nghttp2_option *option, uint64_t burst,
                                                uint64_t rate);

struct bucket {
    double tokens;
    int64_t last_us;
};

struct h2_stream {
    struct h2_conn *c;
    int32_t id;
    struct h2_stream *prev;
    struct h2_stream *next;
    struct exchange x;
    bool x_active; /* x initialised and not yet finished */
    bool headers_done; /* request head complete: start pending */
    bool started; /* exchange_start (or a refusal) done; counts in c->n_busy */
    bool end_on_headers; /* the request has no body */
    bool closed; /* nghttp2 closed the stream: release at the next conn_run */
    bool rst_pending;
    uint32_t rst_code;
    struct fieldsec fs; /* request head */
    /* request body */
    struct mux_body req; /* request body; credit given back (consumed) as the exchange takes it */
    /* response body */
    struct evbuffer *body;
    bool body_eof;
    bool deferred; /* the data provider returned NGHTTP2_ERR_DEFERRED */
    bool want_space; /* body_space() returned 0: notify when it drains */
    bool want_writable; /* notify the exchange at the next conn_run */
    int64_t blocked_since_us; /* data waiting behind a zero window since; 0 = not blocked */
};

struct h2_conn {
    struct worker *w;
    struct sockio io;
    nghttp2_session *s;
    struct event *rev;
    struct event *wev;
    struct event *kick; /* conn_run() from a fresh call stack */
    struct event *idle_timer;
    struct event *stall_timer;
    struct h2_conn *prev;
    struct h2_conn *next;
    struct h2_stream *streams;
    size_t conn_discard; /* DATA bytes of unknown streams to acknowledge */
    size_t n_busy; /* started streams not yet released */
    bool reading;
    bool idle_armed;
    bool stall_armed;
    bool dirty; /* stream flags to act on */
    bool in_run;
    bool eof; /* the client closed its side */
    bool closing; /* GOAWAY sent after an error: close once flushed */
    bool lingering; /* flushed and shut down for writing: dropping input until close */
    bool send_full; /* the last conn_send() stopped at OUT_HIGH with frames left to produce */
    bool closed;
    bool notice_sent; /* graceful stop: shutdown notice, then the final GOAWAY */
    bool final_goaway_sent;
    /* set by callbacks: a connection error to answer with GOAWAY */
    bool fatal;
    uint32_t fatal_code;
    const char *fatal_why;
    /* defences */
    struct bucket resets;
    struct bucket control;
    size_t continuations; /* in the current header block */
    int64_t now_us; /* read once per event */
};

static const struct transport_ops h2_ops;

static void conn_run(struct h2_conn *c);
static void conn_close_now(struct h2_conn *c);

/* ---- small helpers ------------------------------------------------------------------------ */

static const struct config *conn_cfg(const struct h2_conn *c)
{
    return c->w->edge->cfg;
}

static void bucket_init(struct bucket *b, double burst, int64_t now)
{
    b->tokens = burst;
    b->last_us = now;
}

static void bucket_refill(struct bucket *b, double rate, double burst, int64_t now)
{
    if (now > b->last_us) {
        b->tokens += (double)(now - b->last_us) * rate / 1e6;
        b->last_us = now;
    }
    if (b->tokens > burst)
        b->tokens = burst;
}

/* Take one token; false when the bucket is empty. */
static bool bucket_take(struct bucket *b, double rate, double burst, int64_t now)
{
    bucket_refill(b, rate, burst, now);
    if (b->tokens < 1.0)
        return false;
    b->tokens -= 1.0;
    return true;
}

static void bucket_give(struct bucket *b, double burst)
{
    if (b->tokens + 1.0 <= burst)
        b->tokens += 1.0;
}

static void set_fatal(struct h2_conn *c, uint32_t code, const char *why)
{
    if (c->fatal)
        return;
    c->fatal = true;
    c->fatal_code = code;
    c->fatal_why = why;
}

static void kick(struct h2_conn *c)
{
    if (c->closed)
        return;
    c->dirty = true;
    if (!c->in_run)
        event_active(c->kick, EV_READ, 0);
}

/* ---- streams ------------------------------------------------------------------------------ */

static struct h2_stream *stream_new(struct h2_conn *c, int32_t id)
{
    struct h2_stream *st = xcalloc(1, sizeof(*st));
    st->c = c;
    st->id = id;
    mux_body_init(&st->req);
    st->body = evbuffer_new();
    ASSERT(st->body != NULL);
    exchange_init(&st->x, c->w, &h2_ops, st);
    st->x_active = true;
    st->next = c->streams;
    if (c->streams)
        c->streams->prev = st;
    c->streams = st;
    return st;
}

/* End the exchange of a stream the client will not read: reset by the client, or the
 * connection is going away. Logged like nginx's 499 when no response head was sent. */
static void stream_client_gone(struct h2_stream *st)
{
    if (!st->x_active)
        return;
    mux_exchange_gone(&st->x, st->started);
    st->x_active = false;
}

static void stream_free(struct h2_stream *st)
{
    struct h2_conn *c = st->c;
    stream_client_gone(st);
    if (st->started)
        c->n_busy--;
    if (st->prev)
        st->prev->next = st->next;
    else
        c->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    mux_body_fini(&st->req);
    evbuffer_free(st->body);
    free(st);
}

static void stream_rst(struct h2_stream *st, uint32_t code)
{
    if (st->closed)
        return;
    nghttp2_submit_rst_stream(st->c->s, NGHTTP2_FLAG_NONE, st->id, code);
}

/* ---- starting an exchange ----------------------------------------------------------------- */

static void stream_refuse(struct h2_stream *st, enum reject why, int status, const char *msg)
{
    struct h2_conn *c = st->c;
    METRIC_INC(c->w, rejected[why]);
    log_ratelimited(LOG_INFO, "h2: %s: stream %d: refused request (%s): %d", c->io.peer, st->id,
                    reject_name(why), status);
    exchange_respond_error(&st->x, status, msg);
}

/* RFC 9113 8.1.1: a malformed request is a stream error of type PROTOCOL_ERROR. */
static void stream_malformed(struct h2_stream *st)
{
    struct h2_conn *c = st->c;
    METRIC_INC(c->w, rejected[REJECT_SYNTAX]);
    log_ratelimited(LOG_INFO, "h2: %s: stream %d: malformed request", c->io.peer, st->id);
    exchange_fini(&st->x);
    st->x_active = false;
    stream_rst(st, NGHTTP2_PROTOCOL_ERROR);
}

/* The request head is complete: check it and start the exchange. */
static void stream_start(struct h2_stream *st)
{
    struct h2_conn *c = st->c;
    struct exchange *x = &st->x;
    st->started = true;
    c->n_busy++;
    snprintf(x->client_addr, sizeof(x->client_addr), "%s", c->io.peer);
    bool no_body = mux_no_body(&st->req, st->end_on_headers);
    switch (fieldsec_finish(x, &st->fs, conn_cfg(c), c->io.is_tls, no_body)) {
    case FIELDSEC_MALFORMED:
        stream_malformed(st);
        return;
    case FIELDSEC_REFUSE:
        stream_refuse(st, st->fs.why, st->fs.status, st->fs.msg);
        return;
    case FIELDSEC_OK:
        break;
    }
    if (no_body)
        st->req.eof_delivered = true;
    exchange_start(x);
}

/* ---- request bodies ----------------------------------------------------------------------- */

static void stream_consume(struct h2_stream *st, size_t n)
{
    if (n > 0)
        nghttp2_session_consume(st->c->s, st->id, n);
}

/* ---- acting on what the callbacks recorded ------------------------------------------------ */

static void stream_process(struct h2_stream *st)
{
    if (st->headers_done && !st->started && mux_head_ready(&st->x, &st->req, st->end_on_headers))
        stream_start(st);
    if (st->rst_pending) {
        st->rst_pending = false;
        stream_rst(st, st->rst_code);
    }
    if (st->req.discard || (st->started && mux_body_pending(&st->req)))
        stream_consume(st, mux_body_deliver(&st->req, &st->x, st->x_active && st->started));
    if (st->want_writable) {
        st->want_writable = false;
        if (st->x_active && st->x.head_sent && !st->x.finished)
            exchange_on_writable(&st->x);
    }
}

static void conn_process(struct h2_conn *c)
{
    c->dirty = false;
    if (c->conn_discard) {
        nghttp2_session_consume_connection(c->s, c->conn_discard);
        c->conn_discard = 0;
    }
    struct h2_stream *st = c->streams;
    while (st && !c->closed) {
        struct h2_stream *next = st->next;
        if (st->closed)
            stream_free(st);
        else
            stream_process(st);
        st = next;
    }
}

/* ---- nghttp2 callbacks: record, never act ------------------------------------------------ */

static struct h2_stream *stream_of(nghttp2_session *s, int32_t id)
{
    return id > 0 ? nghttp2_session_get_stream_user_data(s, id) : NULL;
}

static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *arg)
{
    struct h2_conn *c = arg;
    const struct config *cfg = conn_cfg(c);
    double ctl_rate = (double)cfg->h2_max_control_frames_per_second;
    double rst_rate = (double)cfg->h2_max_resets_per_second;
    bool control = false;
    switch (hd->type) {
    case NGHTTP2_HEADERS:
        c->continuations = 0;
        break;
    case NGHTTP2_CONTINUATION:
        if (++c->continuations > cfg->h2_max_continuations) {
            set_fatal(c, NGHTTP2_ENHANCE_YOUR_CALM, "CONTINUATION flood");
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        break;
    case NGHTTP2_RST_STREAM:
        if (!bucket_take(&c->resets, rst_rate, 2 * rst_rate, c->now_us)) {
            set_fatal(c, NGHTTP2_ENHANCE_YOUR_CALM, "RST_STREAM flood (rapid reset)");
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        break;
    case NGHTTP2_PING:
    case NGHTTP2_SETTINGS:
    case NGHTTP2_PRIORITY:
    case NGHTTP2_WINDOW_UPDATE:
        control = true;
        break;
    case NGHTTP2_DATA:
        control = hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM);
        break;
    default:
        break;
    }
    if (control && !bucket_take(&c->control, ctl_rate, 2 * ctl_rate, c->now_us)) {
        set_fatal(c, NGHTTP2_ENHANCE_YOUR_CALM, "control frame flood");
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *arg)
{
    struct h2_conn *c = arg;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct h2_stream *st = stream_new(c, frame->hd.stream_id);
    nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, st);
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *arg)
{
    struct h2_conn *c = arg;
    struct h2_stream *st = stream_of(s, frame->hd.stream_id);
    if (st == NULL)
        return 0;
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        /* trailers count against the limits but are not forwarded */
        st->fs.bytes += namelen + valuelen + 32;
        if (st->fs.bytes <= conn_cfg(c)->max_header_bytes * FIELDSEC_BOMB_FACTOR)
            return 0;
    } else if (fieldsec_add(&st->x, &st->fs, conn_cfg(c), name, namelen, value, valuelen)) {
        return 0;
    }
    set_fatal(c, NGHTTP2_ENHANCE_YOUR_CALM, "decoded header block too large (HPACK bomb)");
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *arg)
{
    struct h2_conn *c = arg;
    struct h2_stream *st = stream_of(s, frame->hd.stream_id);
    if (st == NULL)
        return 0;
    bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        st->headers_done = true;
        st->end_on_headers = end;
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) && end)
        st->req.eof = true;
    c->dirty = true;
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                              size_t len, void *arg)
{
    struct h2_conn *c = arg;
    struct h2_stream *st = stream_of(s, id);
    if (st == NULL) {
        c->conn_discard += len; /* not ours: still keep the connection window moving */
        c->dirty = true;
        return 0;
    }
    mux_body_add(&st->req, conn_cfg(c), data, len);
    c->dirty = true;
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *arg)
{
    struct h2_conn *c = arg;
    struct h2_stream *st = stream_of(s, id);
    if (st == NULL)
        return 0;
    st->closed = true;
    c->dirty = true;
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *arg)
{
    struct h2_conn *c = arg;
    const struct config *cfg = conn_cfg(c);
    if (frame->hd.type == NGHTTP2_DATA)
        bucket_give(&c->control, 2.0 * (double)cfg->h2_max_control_frames_per_second);
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.last_stream_id < INT32_MAX)
        c->final_goaway_sent = true;
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    struct h2_stream *st = stream_of(s, frame->hd.stream_id);
    if (st && !st->req.eof && !st->closed) {
        /* RFC 9113 8.1: the response is complete; stop the upload without error. */
        st->rst_pending = true;
        st->rst_code = NGHTTP2_NO_ERROR;
        c->dirty = true;
    }
    return 0;
}

static ssize_t data_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *source, void *arg)
{
    struct h2_stream *st = source->ptr;
    size_t avail = evbuffer_get_length(st->body);
    if (avail == 0) {
        if (st->body_eof) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            return 0;
        }
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = avail < length ? avail : length;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    if (n == avail && st->body_eof)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* Frame a DATA payload by moving evbuffer chains to the socket buffer (no copy). */
static int data_send(nghttp2_session *s, nghttp2_frame *frame, const uint8_t *framehd,
                     size_t length, nghttp2_data_source *source, void *arg)
{
    struct h2_conn *c = arg;
    struct h2_stream *st = source->ptr;
    struct evbuffer *out = c->io.out;
    static const uint8_t zeros[256];
    evbuffer_add(out, framehd, 9);
    if (frame->data.padlen > 0) {
        uint8_t pl = (uint8_t)(frame->data.padlen - 1);
        evbuffer_add(out, &pl, 1);
    }
    evbuffer_remove_buffer(st->body, out, length);
    if (frame->data.padlen > 1)
        evbuffer_add(out, zeros, frame->data.padlen - 1);
    METRIC_ADD(c->w, bytes_sent, length);
    st->blocked_since_us = 0;
    if (st->want_space && evbuffer_get_length(st->body) <= STREAM_BUF / 2) {
        st->want_space = false;
        st->want_writable = true;
        c->dirty = true;
    }
    return 0;
}

/* ---- socket I/O --------------------------------------------------------------------------- */

static void read_enable(struct h2_conn *c, bool on)
{
    if (on && !c->reading && !c->eof && !c->closing && !c->closed) {
        event_add(c->rev, NULL);
        c->reading = true;
    } else if (!on && c->reading) {
        event_del(c->rev);
        c->reading = false;
    }
}

/* Feed io->in to nghttp2. Returns false when the connection must go (fatal is set). */
static bool conn_feed(struct h2_conn *c)
{
    struct evbuffer *in = c->io.in;
    while (evbuffer_get_length(in) > 0 && !c->fatal) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        ssize_t n = nghttp2_session_mem_recv(c->s, v.iov_base, v.iov_len);
        if (n < 0) {
            if (n == NGHTTP2_ERR_FLOODED)
                set_fatal(c, NGHTTP2_ENHANCE_YOUR_CALM, "outbound ACK queue flooded");
            else
                set_fatal(c, NGHTTP2_PROTOCOL_ERROR, nghttp2_strerror((int)n));
            break;
        }
        METRIC_ADD(c->w, bytes_received, (uint64_t)n);
        evbuffer_drain(in, (size_t)n);
    }
    return !c->fatal;
}

/* Serialise frames into the socket buffer while it is below the high-water mark. */
static bool conn_send(struct h2_conn *c)
{
    c->send_full = false;
    while (!(c->send_full = sockio_pending(&c->io) >= OUT_HIGH)) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->s, &data);
        if (n < 0) {
            log_ratelimited(LOG_INFO, "h2: %s: %s", c->io.peer, nghttp2_strerror((int)n));
            conn_close_now(c);
            return false;
        }
        if (n == 0)
            break;
        evbuffer_add(c->io.out, data, (size_t)n);
    }
    return true;
}

static void conn_flush(struct h2_conn *c)
{
    enum sockio_rc rc = sockio_flush(&c->io);
    if (rc == SOCKIO_ERROR) {
        conn_close_now(c);
        return;
    }
    if (rc == SOCKIO_AGAIN) {
        if (!event_pending(c->wev, EV_WRITE, NULL)) {
            int64_t ms = conn_cfg(c)->send_timeout_ms;
            struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
            event_add(c->wev, &tv);
        }
    } else if (event_pending(c->wev, EV_WRITE, NULL)) {
        event_del(c->wev);
    }
}

/*
 * The GOAWAY is written: send FIN, then read and drop what the client still sends for up to
 * LINGER_MS before closing. Closing with unread input makes the kernel send a TCP reset, which
 * can destroy the GOAWAY in the client's receive buffer before it is read (nginx's lingering
 * close). The streams end now.
 */
static void conn_linger(struct h2_conn *c)
{
    if (c->lingering || c->closed)
        return;
    if (c->eof) {
        conn_close_now(c);
        return;
    }
    c->lingering = true;
    while (c->streams)
        stream_free(c->streams);
    sockio_shutdown(&c->io);
    sockio_flush(&c->io);
    shutdown(c->io.fd, SHUT_WR);
    edge_timer_arm(c->idle_timer, 0);
    edge_timer_arm(c->stall_timer, LINGER_MS);
    if (!c->reading) {
        event_add(c->rev, NULL);
        c->reading = true;
    }
}

static void conn_linger_read(struct h2_conn *c)
{
    for (int i = 0; i < READS_PER_EVENT; i++) {
        enum sockio_rc rc = sockio_read(&c->io, READ_MAX);
        evbuffer_drain(c->io.in, evbuffer_get_length(c->io.in));
        if (rc == SOCKIO_EOF || rc == SOCKIO_ERROR) {
            conn_close_now(c);
            return;
        }
        if (rc != SOCKIO_OK)
            return;
    }
}

/* GOAWAY with `code`, then close once it is written (or the send timeout passes). */
static void conn_goaway(struct h2_conn *c, uint32_t code, const char *why)
{
    if (c->closed)
        return;
    if (code != NGHTTP2_NO_ERROR)
        log_ratelimited(LOG_INFO, "h2: %s: %s: closing with GOAWAY", c->io.peer, why);
    nghttp2_session_terminate_session(c->s, code);
    c->closing = true;
    read_enable(c, false);
    if (!conn_send(c))
        return;
    conn_flush(c);
    if (!c->closed && sockio_pending(&c->io) == 0)
        conn_linger(c);
}

/* Streams whose response waits behind a zero flow-control window (stall defence). */
static int64_t conn_oldest_blocked(struct h2_conn *c)
{
    int64_t oldest = 0;
    int32_t conn_win = nghttp2_session_get_remote_window_size(c->s);
    for (struct h2_stream *st = c->streams; st; st = st->next) {
        bool waiting = !st->closed && evbuffer_get_length(st->body) > 0;
        int32_t win = waiting ? nghttp2_session_get_stream_remote_window_size(c->s, st->id) : 1;
        if (!waiting || (win > 0 && conn_win > 0)) {
            st->blocked_since_us = 0;
            continue;
        }
        if (st->blocked_since_us == 0)
            st->blocked_since_us = c->now_us;
        if (oldest == 0 || st->blocked_since_us < oldest)
            oldest = st->blocked_since_us;
    }
    return oldest;
}

static void conn_timers(struct h2_conn *c)
{
    const struct config *cfg = conn_cfg(c);
    bool idle = c->n_busy == 0;
    if (idle && !c->idle_armed)
        edge_timer_arm(c->idle_timer, cfg->idle_timeout_ms);
    else if (!idle && c->idle_armed)
        edge_timer_arm(c->idle_timer, 0);
    c->idle_armed = idle;
    int64_t oldest = conn_oldest_blocked(c);
    if (oldest) {
        int64_t left_ms = (oldest + cfg->send_timeout_ms * 1000 - c->now_us) / 1000;
        edge_timer_arm(c->stall_timer, left_ms > 0 ? left_ms : 1);
        c->stall_armed = true;
    } else if (c->stall_armed) {
        edge_timer_arm(c->stall_timer, 0);
        c->stall_armed = false;
    }
}

/* After producing output: write, decide about reading, timers, and whether we are done. */
static void conn_after_io(struct h2_conn *c)
{
    conn_flush(c);
    if (c->closed)
        return;
    size_t pending = sockio_pending(&c->io);
    if (c->closing) {
        if (pending == 0)
            conn_linger(c);
        return;
    }
    bool done = !nghttp2_session_want_read(c->s) && !nghttp2_session_want_write(c->s);
    if (c->eof && c->n_busy == 0)
        done = true;
    if (done && pending == 0) {
        conn_close_now(c);
        return;
    }
    read_enable(c, pending < OUT_HIGH);
    /* conn_send() stopped at the high-water mark and the socket took it all: nothing else
     * will call it again (EV_WRITE is not armed), so produce more in a fresh turn. */
    if (c->send_full && pending < OUT_HIGH)
        event_active(c->kick, EV_READ, 0);
    conn_timers(c);
}

static void conn_run(struct h2_conn *c)
{
    if (c->in_run || c->closed)
        return;
    c->in_run = true;
    for (int round = 0; round < RUN_ROUNDS && !c->closed; round++) {
        if (!c->closing)
            conn_process(c);
        if (c->closed || !conn_send(c))
            break;
        if (!c->dirty)
            break;
    }
    c->in_run = false;
    if (c->closed)
        return;
    if (c->dirty)
        event_active(c->kick, EV_READ, 0); /* more to do: after other connections' turn */
    conn_after_io(c);
}

static void conn_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *c = arg;
    if (c->lingering) {
        conn_linger_read(c);
        return;
    }
    c->now_us = edge_mono_us();
    for (int i = 0; i < READS_PER_EVENT; i++) {
        enum sockio_rc rc = sockio_read(&c->io, READ_MAX);
        if (rc == SOCKIO_ERROR) {
            conn_close_now(c);
            return;
        }
        if (rc == SOCKIO_EOF) {
            c->eof = true;
            read_enable(c, false);
        }
        if (!conn_feed(c)) {
            conn_goaway(c, c->fatal_code, c->fatal_why);
            return;
        }
        if (rc != SOCKIO_OK)
            break;
    }
    conn_run(c);
}

static void conn_write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *c = arg;
    if (what & EV_TIMEOUT) {
        log_ratelimited(LOG_INFO, "h2: %s: send timeout", c->io.peer);
        conn_close_now(c); /* the client has not read anything for send_timeout */
        return;
    }
    if (c->lingering)
        return;
    c->now_us = edge_mono_us();
    if (c->closing) {
        conn_after_io(c);
        return;
    }
    conn_run(c);
}

static void conn_kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *c = arg;
    if (c->lingering)
        return;
    c->now_us = edge_mono_us();
    if (c->closing)
        conn_after_io(c);
    else
        conn_run(c);
}

static void conn_idle_cb(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *c = arg;
    c->idle_armed = false;
    if (c->lingering)
        conn_close_now(c);
    else if (c->n_busy == 0)
        conn_goaway(c, NGHTTP2_NO_ERROR, "idle");
}

static void conn_stall_cb(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *c = arg;
    c->stall_armed = false;
    if (c->lingering) {
        conn_close_now(c); /* the linger time is over */
        return;
    }
    c->now_us = edge_mono_us();
    int64_t oldest = conn_oldest_blocked(c);
    if (oldest && c->now_us - oldest >= conn_cfg(c)->send_timeout_ms * 1000) {
        conn_goaway(c, NGHTTP2_ENHANCE_YOUR_CALM, "flow-control window closed for send_timeout");
        return;
    }
    conn_timers(c);
}

/* ---- connection lifecycle ----------------------------------------------------------------- */

static nghttp2_session *session_create(struct h2_conn *c)
{
    const struct config *cfg = conn_cfg(c);
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    nghttp2_session *s = NULL;
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
        util_oom(0);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_send_data_callback(cbs, data_send);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_outbound_ack(opt, MAX_OUTBOUND_ACK);
    nghttp2_option_set_max_settings(opt, MAX_SETTINGS_ENTRIES);
    nghttp2_option_set_no_closed_streams(opt, 1);
    if (nghttp2_option_set_max_continuations)
        nghttp2_option_set_max_continuations(opt, cfg->h2_max_continuations + 1);
    if (nghttp2_option_set_stream_reset_rate_limit)
        nghttp2_option_set_stream_reset_rate_limit(opt, 4 * cfg->h2_max_resets_per_second,
                                                   2 * cfg->h2_max_resets_per_second);
    if (nghttp2_session_server_new2(&s, cbs, c, opt) != 0)
        util_oom(0);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    uint64_t win = cfg->h2_stream_window;
    if (win > NGHTTP2_MAX_WINDOW_SIZE)
        win = NGHTTP2_MAX_WINDOW_SIZE;
    uint64_t streams = cfg->h2_max_concurrent_streams;
    uint64_t hdrs = cfg->max_header_bytes;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, (uint32_t)streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, (uint32_t)win},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, hdrs > UINT32_MAX ? UINT32_MAX : (uint32_t)hdrs},
    };
    if (nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE(iv)) != 0 ||
        nghttp2_session_set_local_window_size(s, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW) != 0)
        util_oom(0);
    return s;
}

void h2_conn_adopt(struct worker *w, struct sockio *io)
{
    const struct config *cfg = w->edge->cfg;
    struct h2_conn *c = xcalloc(1, sizeof(*c));
    c->w = w;
    c->io = *io;
    sockio_moved(&c->io);
    memset(io, 0, sizeof(*io));
    io->fd = -1;
    c->now_us = edge_mono_us();
    double rst = (double)cfg->h2_max_resets_per_second;
    double ctl = (double)cfg->h2_max_control_frames_per_second;
    bucket_init(&c->resets, 2 * rst, c->now_us);
    bucket_init(&c->control, 2 * ctl, c->now_us);
    c->s = session_create(c);
    c->rev = event_new(w->base, c->io.fd, EV_READ | EV_PERSIST, conn_read_cb, c);
    c->wev = event_new(w->base, c->io.fd, EV_WRITE | EV_PERSIST, conn_write_cb, c);
    c->kick = event_new(w->base, -1, 0, conn_kick_cb, c);
    c->idle_timer = evtimer_new(w->base, conn_idle_cb, c);
    c->stall_timer = evtimer_new(w->base, conn_stall_cb, c);
    c->next = w->h2_conns;
    if (w->h2_conns)
        w->h2_conns->prev = c;
    w->h2_conns = c;
    read_enable(c, true);
    /* The bytes edge/h1 already read (the preface, maybe requests) come first. */
    if (!conn_feed(c)) {
        conn_goaway(c, c->fatal_code, c->fatal_why);
        return;
    }
    conn_run(c);
}

/* Release everything but the struct itself, which the reap event frees. */
static void conn_close_now(struct h2_conn *c)
{
    if (c->closed)
        return;
    struct worker *w = c->w;
    c->closed = true;
    while (c->streams)
        stream_free(c->streams);
    nghttp2_session_del(c->s);
    c->s = NULL;
    event_free(c->rev);
    event_free(c->wev);
    event_free(c->kick);
    event_free(c->idle_timer);
    event_free(c->stall_timer);
    sockio_fini(&c->io);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->h2_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    edge_conn_release(w);
    c->prev = NULL;
    c->next = w->h2_reap;
    w->h2_reap = c;
    event_active(w->reap_ev, EV_READ, 0);
}

void h2_conn_reap(struct worker *w)
{
    while (w->h2_reap) {
        struct h2_conn *c = w->h2_reap;
        w->h2_reap = c->next;
        free(c);
    }
}

void h2_conn_close_all(struct worker *w)
{
    while (w->h2_conns) {
        struct h2_conn *c = w->h2_conns;
        if (!c->closing) {
            /* best effort: tell the client why, without waiting for the socket */
            nghttp2_session_terminate_session(c->s, NGHTTP2_NO_ERROR);
            if (conn_send(c))
                sockio_flush(&c->io);
        }
        conn_close_now(c);
    }
}

/* Graceful stop, called repeatedly while the worker drains: the first call sends the shutdown
 * notice (GOAWAY with the largest stream id), a later one the final GOAWAY naming the last
 * stream we will serve. */
size_t h2_conn_close_idle(struct worker *w)
{
    size_t left = 0;
    struct h2_conn *c = w->h2_conns;
    while (c) {
        struct h2_conn *next = c->next;
        if (!c->closing) {
            if (!c->notice_sent) {
                nghttp2_submit_shutdown_notice(c->s);
                c->notice_sent = true;
            } else if (!c->final_goaway_sent) {
                int32_t last = nghttp2_session_get_last_proc_stream_id(c->s);
                nghttp2_submit_goaway(c->s, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR, NULL, 0);
            }
            c->now_us = edge_mono_us();
            conn_run(c);
            if (!c->closed && c->n_busy == 0 && c->final_goaway_sent)
                conn_close_now(c);
        }
        if (!c->closed && !c->lingering)
            left++;
        c = next;
    }
    return left;
}

/* ---- transport_ops ------------------------------------------------------------------------ */

static nghttp2_nv nv_make(struct str name, struct str value)
{
    nghttp2_nv nv = {(uint8_t *)name.p, (uint8_t *)value.p, name.len, value.len,
                     NGHTTP2_NV_FLAG_NONE};
    return nv;
}

static void h2_send_head(struct exchange *x)
{
    struct h2_stream *st = x->transport;
    struct h2_conn *c = st->c;
    if (st->closed || c->closing || c->closed)
        return;
    bool bodyless = x->no_body || x->status == 204 || x->status == 304 || x->status < 200;
    size_t max = x->resp.n + 2;
    struct fieldsec_field *f = arena_alloc(&x->arena, max * sizeof(*f));
    size_t n = fieldsec_response(x, f, max);
    nghttp2_nv *nva = arena_alloc(&x->arena, n * sizeof(*nva));
    for (size_t i = 0; i < n; i++)
        nva[i] = nv_make(f[i].name, f[i].value);
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = data_read};
    int rv = nghttp2_submit_response(c->s, st->id, nva, n, bodyless ? NULL : &prd);
    if (rv != 0)
        log_ratelimited(LOG_WARN, "h2: %s: stream %d: response: %s", c->io.peer, st->id,
                        nghttp2_strerror(rv));
    kick(c);
}

static void stream_resume(struct h2_stream *st)
{
    if (st->deferred && !st->closed && !st->c->closed) {
        st->deferred = false;
        nghttp2_session_resume_data(st->c->s, st->id);
    }
    kick(st->c);
}

static void h2_send_body(struct exchange *x, struct evbuffer *data)
{
    struct h2_stream *st = x->transport;
    if (st->closed || st->c->closed || x->no_body) {
        evbuffer_drain(data, evbuffer_get_length(data));
        return;
    }
    evbuffer_add_buffer(st->body, data);
    stream_resume(st);
}

static size_t h2_body_space(struct exchange *x)
{
    struct h2_stream *st = x->transport;
    if (st->closed || st->c->closed)
        return 0; /* released at the next conn_run */
    size_t len = evbuffer_get_length(st->body);
    if (len >= STREAM_BUF) {
        st->want_space = true;
        return 0;
    }
    return STREAM_BUF - len;
}

/* The exchange is complete: the stream lives on until nghttp2 has sent the buffered body. */
static void h2_finish(struct exchange *x)
{
    struct h2_stream *st = x->transport;
    st->body_eof = true;
    mux_exchange_done(x);
    st->x_active = false;
    stream_resume(st);
}

static void h2_abort(struct exchange *x)
{
    struct h2_stream *st = x->transport;
    mux_exchange_done(x);
    st->x_active = false;
    if (!st->c->closed)
        stream_rst(st, NGHTTP2_INTERNAL_ERROR);
    kick(st->c);
}

static void h2_pause_body(struct exchange *x)
{
    struct h2_stream *st = x->transport;
    st->req.paused = true;
}

static void h2_resume_body(struct exchange *x)
{
    struct h2_stream *st = x->transport;
    if (!st->req.paused)
        return;
    st->req.paused = false;
    kick(st->c);
}

static void h2_send_continue(struct exchange *x)
{
    struct h2_stream *st = x->transport;
    if (st->closed || st->c->closed || st->c->closing)
        return;
    nghttp2_nv nv = nv_make(STR_LIT(":status"), STR_LIT("100"));
    nghttp2_submit_headers(st->c->s, NGHTTP2_FLAG_NONE, st->id, NULL, &nv, 1, NULL);
    kick(st->c);
}

static const struct transport_ops h2_ops = {
    .name = "HTTP/2",
    .send_head = h2_send_head,
    .send_body = h2_send_body,
    .body_space = h2_body_space,
    .finish = h2_finish,
    .abort = h2_abort,
    .pause_body = h2_pause_body,
    .resume_body = h2_resume_body,
    .send_continue = h2_send_continue,
    .send_direct = NULL,
};
