/*
 * edge/tlsbev.h: the client side of TLS over a libevent socket bufferevent, for the edge's
 * connections to upstream servers (edge/upstream.c) and its health checks (edge/hcheck.c).
 *
 * tls_bev_open() wraps the socket in a filter bufferevent whose two callbacks run the record
 * layer of tls/tls.h: what the owner reads and writes on the filter is plaintext, handshake
 * records go straight back to the socket, and plaintext written before the handshake is done
 * waits in the filter until it is. Internal to edge/.
 *
 * libevent ignores a filter's error result, so a TLS error is reported through `on_error`,
 * called from inside the filter callback: it must not free the bufferevents (defer that to a
 * timer or the next loop turn). Threads: the owner's loop only.
 */
#ifndef OUTPOST_EDGE_TLSBEV_H
#define OUTPOST_EDGE_TLSBEV_H

#include <event2/bufferevent.h>
#include <stdbool.h>

#include "tls/tls.h"

struct tls_bev {
    struct tls_conn tls;
    struct bufferevent *under; /* the socket; freed with the filter */
    struct bufferevent *bev; /* the filter: plaintext */
    void (*on_error)(void *arg, bool handshake_done);
    void *arg;
    bool active; /* tls initialised: tls_bev_fini() has work */
    bool closed; /* the owner is done: the filter drops input and writes nothing */
    bool eof; /* the server sent close_notify */
};

/*
 * Start a TLS session with `ssl` (from tls_client_ssl(); owned from now on) over socket
 * bufferevent `sock` (not yet connected). Returns the filter bufferevent, which owns `sock`
 * (BEV_OPT_CLOSE_ON_FREE), or NULL (nothing is freed: the caller frees `sock`). A previous
 * session of `t` is finished first (a reconnect).
 */
struct bufferevent *tls_bev_open(struct tls_bev *t, struct bufferevent *sock, SSL *ssl,
                                 void (*on_error)(void *arg, bool handshake_done), void *arg);
/* The socket connected: send the ClientHello. */
void tls_bev_connected(struct tls_bev *t);
/* Why the last TLS error happened, in `buf`; returns buf. */
const char *tls_bev_error(struct tls_bev *t, char *buf, size_t len);
/* Finish the session (after the filter bufferevent was freed). Safe on an unopened one. */
void tls_bev_fini(struct tls_bev *t);

#endif
