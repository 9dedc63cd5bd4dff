/*
 * edge/tlsbev.c: TLS over a socket bufferevent through a libevent filter (tlsbev.h).
 */
#include "edge/tlsbev.h"

#include <event2/buffer.h>
#include <event2/event.h>

/* Socket -> plaintext: decrypt; handshake records go straight back out. */
static enum bufferevent_filter_result in_filter(struct evbuffer *src, struct evbuffer *dst,
                                                ev_ssize_t lim, enum bufferevent_flush_mode m,
                                                void *arg)
{
    struct tls_bev *t = arg;
    if (t->closed) {
        evbuffer_drain(src, evbuffer_get_length(src));
        return BEV_OK;
    }
    bool was_done = t->tls.handshake_done;
    evbuffer_add_buffer(t->tls.rin, src);
    enum tls_status st = tls_conn_read(&t->tls, dst);
    if (evbuffer_get_length(t->tls.rout) > 0)
        bufferevent_write_buffer(t->under, t->tls.rout);
    if (st == TLS_ERROR) {
        t->on_error(t->arg, was_done); /* libevent ignores BEV_ERROR from a filter */
        return BEV_ERROR;
    }
    if (st == TLS_EOF)
        t->eof = true; /* the owner's read callback that follows sees it */
    if (!was_done && t->tls.handshake_done)
        bufferevent_flush(t->bev, EV_WRITE, BEV_NORMAL); /* plaintext waiting for it */
    return BEV_OK;
}

/* Plaintext -> socket: encrypt once the handshake is done. */
static enum bufferevent_filter_result out_filter(struct evbuffer *src, struct evbuffer *dst,
                                                 ev_ssize_t lim, enum bufferevent_flush_mode m,
                                                 void *arg)
{
    struct tls_bev *t = arg;
    if (t->closed || !t->tls.handshake_done)
        return BEV_NEED_MORE;
    if (tls_conn_write_buf(&t->tls, src) != TLS_OK)
        return BEV_ERROR;
    evbuffer_add_buffer(dst, t->tls.rout);
    return BEV_OK;
}

struct bufferevent *tls_bev_open(struct tls_bev *t, struct bufferevent *sock, SSL *ssl,
                                 void (*on_error)(void *arg, bool handshake_done), void *arg)
{
    tls_bev_fini(t);
    tls_conn_init(&t->tls, ssl);
    t->active = true;
    t->under = sock;
    t->on_error = on_error;
    t->arg = arg;
    t->closed = false;
    t->eof = false;
    t->bev = bufferevent_filter_new(sock, in_filter, out_filter, BEV_OPT_CLOSE_ON_FREE, NULL, t);
    return t->bev;
}

void tls_bev_connected(struct tls_bev *t)
{
    (void)tls_conn_handshake(&t->tls);
    bufferevent_write_buffer(t->under, t->tls.rout);
}

const char *tls_bev_error(struct tls_bev *t, char *buf, size_t len)
{
    return tls_conn_error(&t->tls, buf, len);
}

void tls_bev_fini(struct tls_bev *t)
{
    if (t->active)
        tls_conn_fini(&t->tls);
    t->active = false;
}
