/*
 * edge/h3/quic_int.h: internals shared by the files of the HTTP/3 front end (edge/h3/). The
 * rest of the edge sees only edge/h3/h3.h.
 *
 *   struct h3_tls      GnuTLS credentials for QUIC (gtls.c): node-wide, refcounted.
 *   struct h3_worker   one per worker: its UDP sockets (one per h3_listen address), the table
 *                      from connection ID to connection, the connections, counters (ep.c).
 *   struct h3_conn     one QUIC connection with its nghttp3 session and request streams, each
 *                      stream an exchange (conn.c).
 */
#ifndef OUTPOST_EDGE_H3_QUIC_INT_H
#define OUTPOST_EDGE_H3_QUIC_INT_H

#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <sys/socket.h>

#include "edge/edge_int.h"
#include "edge/h3/cid.h"
#include "edge/h3/h3.h"

#if NGTCP2_VERSION_NUM != 0x000c01
#error "edge/h3 is written against ngtcp2 0.12.1 (Debian 12): its API changed before 1.0"
#endif

#define H3_MAX_PKT 1452 /* UDP payload we send: fits a 1500-byte MTU with IPv6 */
#define H3_SECRET_LEN 32
#define H3_MAX_CIDS 8 /* connection IDs of ours a connection keeps (active_connection_id_limit) */

/* ---- TLS (gtls.c) ------------------------------------------------------------------------- */

struct h3_tls;
/* Per connection; the GnuTLS session pointer, which ngtcp2's crypto callbacks read. */
struct h3_conn_tls {
    ngtcp2_crypto_conn_ref ref; /* first: ngtcp2_crypto_gnutls casts the session pointer */
    const struct h3_tls *tls;
};
int h3_tls_new(const struct config *cfg, struct h3_tls **out, char *err, size_t errlen);
struct h3_tls *h3_tls_ref(struct h3_tls *t);
void h3_tls_unref(struct h3_tls **t);
/* A server session for QUIC with ALPN h3 and SNI certificate selection; `ct` must outlive it. */
int h3_tls_session(struct h3_tls *t, struct h3_conn_tls *ct, gnutls_session_t *out);

/* ---- the node's QUIC state (ep.c), shared by the workers, read-only once built ------------- */

struct h3_node {
    uint8_t secret[H3_SECRET_LEN]; /* keys Retry tokens and stateless reset tokens */
    pthread_mutex_t lock; /* guards `tls` (swapped by SIGHUP) */
    struct h3_tls *tls;
};

/* The current credentials, with a reference for the caller. */
struct h3_tls *h3_node_tls(struct h3_node *n);

/* ---- a worker's endpoint (ep.c) ----------------------------------------------------------- */

struct h3_conn;

struct h3_sock {
    struct h3_worker *hw;
    int fd;
    struct sockaddr_storage local;
    socklen_t locallen;
    uint16_t port;
    struct event *rev;
    struct event *wev;
};

struct h3_cid_entry {
    uint8_t cid[NGTCP2_MAX_CIDLEN];
    uint8_t len;
    struct h3_conn *c;
    struct h3_cid_entry *next;
};

/* A datagram handed to the worker that owns it (steering without BPF). */
struct h3_fwd {
    struct h3_fwd *next;
    size_t sock; /* index into the owner's socks */
    struct sockaddr_storage remote;
    socklen_t remotelen;
    size_t len;
    uint8_t data[];
};

struct h3_worker {
    struct worker *w;
    struct h3_node *node;
    struct h3_sock *socks;
    size_t n_socks;
    uint8_t hash_key[16];
    struct h3_cid_entry **tab;
    size_t tab_size;
    size_t tab_count;
    struct h3_conn *conns;
    struct h3_conn *reap;
    struct h3_conn *blocked; /* connections waiting for a socket to take their packets */
    size_t handshaking;
    bool no_gso; /* the kernel refused UDP_SEGMENT once */
    /* datagrams from other workers */
    pthread_mutex_t inbox_lock;
    struct h3_fwd *inbox;
    struct event *inbox_ev;
    /* stateless reset replies: a token bucket */
    double reset_tokens;
    int64_t reset_last_us;
    uint8_t *rxbuf; /* recvmmsg buffers */
};

void h3_cid_register(struct h3_worker *hw, const uint8_t *cid, size_t len, struct h3_conn *c);
void h3_cid_unregister(struct h3_worker *hw, const uint8_t *cid, size_t len);
struct h3_conn *h3_cid_lookup(struct h3_worker *hw, const uint8_t *cid, size_t len);
/* Send `len` bytes of packets of `seg` bytes each (the last may be shorter) to `remote`.
 * Returns 0, or -EAGAIN when the socket is full (nothing was sent), or another -errno. */
int h3_sock_send(struct h3_sock *s, const struct sockaddr *remote, socklen_t remotelen,
                 const uint8_t *data, size_t len, size_t seg);
/* Wait until `s` can send, then call h3_conns_writable(). */
void h3_sock_want_write(struct h3_sock *s);

/* ---- connections (conn.c) ----------------------------------------------------------------- */

struct h3_initial {
    const ngtcp2_pkt_hd *hd;
    const uint8_t *data; /* the datagram */
    size_t len;
    const ngtcp2_cid *odcid; /* after a Retry: the client's first destination ID */
    bool retried;
};
/* A new connection from a client Initial that passed address validation (or needed none);
 * returns NULL when it could not be created (the packet is dropped). */
struct h3_conn *h3_conn_new(struct h3_sock *s, const struct sockaddr *remote, socklen_t remotelen,
                            const struct h3_initial *in);
/* A datagram for this connection. */
void h3_conn_recv(struct h3_conn *c, struct h3_sock *s, const struct sockaddr *remote,
                  socklen_t remotelen, const uint8_t *data, size_t len);
/* A socket can send again: retry every connection on hw->blocked. */
void h3_conns_writable(struct h3_worker *hw);
/* Graceful stop: GOAWAY; returns true while the connection still has requests in progress. */
bool h3_conn_shutdown(struct h3_conn *c);
void h3_conn_close_now(struct h3_conn *c);

#endif
