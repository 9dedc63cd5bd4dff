/*
 * edge/sockio.h: the byte stream of one client connection, plaintext or TLS, for the
 * HTTP/1.1 and HTTP/2 front ends. `in` holds plaintext received, `out` plaintext to send;
 * with TLS, records pass through the tls_conn's rin/rout (tls/tls.h) and sockio_flush()
 * encrypts `out` before writing, so a front end never sees ciphertext.
 *
 * A connection starts in edge/h1 (every listener accepts there); after the TLS handshake
 * picks ALPN h2, or when a plaintext connection opens with the HTTP/2 preface (h2c with prior
 * knowledge), edge/h1 moves the whole struct sockio (socket, TLS state, bytes already read)
 * to edge/h2 with h2_conn_adopt(). One worker owns it.
 */
#ifndef OUTPOST_EDGE_SOCKIO_H
#define OUTPOST_EDGE_SOCKIO_H

#include <event2/buffer.h>
#include <event2/util.h>
#include <stdbool.h>
#include <stddef.h>

#include "tls/tls.h"

struct tls_server;

struct sockio {
    evutil_socket_t fd;
    struct evbuffer *in; /* plaintext received, not yet consumed */
    struct evbuffer *out; /* plaintext to send */
    bool is_tls;
    struct tls_conn tls; /* when is_tls */
    struct tls_server *tls_srv; /* reference held while the connection lives */
    char peer[64]; /* "addr:port" or "[v6]:port" */
};

enum sockio_rc {
    SOCKIO_OK = 0, /* progress: `in` may have grown (or the handshake advanced) */
    SOCKIO_AGAIN = 1, /* nothing to do until the socket is readable / writable again */
    SOCKIO_EOF = 2, /* the peer closed (TCP FIN, or TLS close_notify) */
    SOCKIO_ERROR = 3, /* fatal: close the connection */
};

/* Set up for an accepted socket (made non-blocking here); `tls` NULL for plaintext (a
 * reference is taken otherwise). */
void sockio_init(struct sockio *io, evutil_socket_t fd, struct tls_server *tls);
/* `io` was copied from another struct sockio (the hand-off to edge/h2): fix the pointers the
 * TLS state keeps to its own address. Call on the new copy before using it. */
void sockio_moved(struct sockio *io);
/* Close the socket and free everything. */
void sockio_fini(struct sockio *io);
/* Read once from the socket (at most `max` bytes) and decrypt. */
enum sockio_rc sockio_read(struct sockio *io, size_t max);
/* Write what the socket takes of `out` (encrypting it first). SOCKIO_OK when nothing is left,
 * SOCKIO_AGAIN when bytes remain (arm EV_WRITE), SOCKIO_ERROR when the peer is gone. */
enum sockio_rc sockio_flush(struct sockio *io);
/* Bytes accepted but not yet written to the socket (plaintext and ciphertext). */
size_t sockio_pending(const struct sockio *io);
/* Send bytes from memory valid only during the call, straight to the socket (or the TLS
 * record layer) when nothing is queued before them; the rest, up to `max_copy` bytes, is
 * copied to `out`. Returns the number of bytes taken; sets *dead when the peer is gone. */
size_t sockio_send_direct(struct sockio *io, const void *data, size_t len, size_t max_copy,
                          bool *dead);
/* The TLS handshake is complete (always true for plaintext). */
bool sockio_ready(const struct sockio *io);
/* Queue a TLS close_notify (no-op for plaintext). */
void sockio_shutdown(struct sockio *io);

#endif
