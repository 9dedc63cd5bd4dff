/*
 * edge/h3/h3.h: the HTTP/3 front end, as the rest of the edge sees it. QUIC with ngtcp2 and
 * GnuTLS, HTTP/3 with nghttp3; each request stream is a struct exchange, like an HTTP/1.1
 * request or an HTTP/2 stream. See edge/h3/quic_int.h for the parts.
 *
 * Threads: h3_node_* run on the main or control thread; h3_worker_create() on the main thread
 * for workers 0..n-1 in order (socket i of each SO_REUSEPORT group must be worker i's, for the
 * steering program h3_steering_attach() installs afterwards); everything else on the worker.
 */
#ifndef OUTPOST_EDGE_H3_H
#define OUTPOST_EDGE_H3_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct edge;
struct worker;
struct h3_node;
struct h3_worker;

/* The node-wide part: the secret keying Retry and stateless-reset tokens, and the TLS
 * credentials. Errors name the file and the problem in `err`. */
int h3_node_new(const struct config *cfg, struct h3_node **out, char *err, size_t errlen);
void h3_node_free(struct h3_node **n);
/* SIGHUP: new certificates for new connections, if they all load. */
int h3_node_reload(struct h3_node *n, const struct config *cfg, char *err, size_t errlen);

int h3_worker_create(struct worker *w, struct h3_node *node);
void h3_steering_attach(struct edge *e);
void h3_worker_destroy(struct worker *w);
/* Graceful stop: GOAWAY everywhere; close connections with nothing in progress. Returns how
 * many remain. */
size_t h3_close_idle(struct worker *w);
void h3_close_all(struct worker *w);
/* Free connections closed during this loop iteration. */
void h3_reap(struct worker *w);

#endif
