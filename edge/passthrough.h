/*
 * edge/passthrough.h: TLS passthrough (nginx stream ssl_preread, HAProxy mode tcp with
 * req.ssl_sni). A passthrough listener reads the client's TLS ClientHello, picks a backend by
 * its server name (SNI) from the `passthrough NAME HOST:PORT` routes, connects to it and then
 * relays the raw bytes both ways, the ClientHello first, without decrypting anything: the TLS
 * session is between the client and the backend.
 *
 * Per connection:
 *   1. read until the ClientHello is complete (tls/clienthello.h; at most TLS_CH_MAX_WIRE
 *      bytes), within tls_handshake_timeout. Not TLS or malformed: close. No route: a fatal
 *      unrecognized_name alert, then close.
 *   2. connect to the route's numeric address, within upstream_connect_timeout.
 *   3. relay: at most PASSTHROUGH_BUF_MAX bytes queued each way; reading from one side stops
 *      while the other side's queue is full (back-pressure). A FIN from one side becomes
 *      shutdown(SHUT_WR) on the other once its queue is written; the connection closes when
 *      both directions are finished, on any error, or after idle_timeout without a byte moved.
 *
 * Accounting is that of edge/h1: e->connections against max_connections (an accept over it is
 * closed and counted as rejected too_many_connections), the connections gauge and total, bytes
 * received from and sent to the client, upstream_errors{connect,timeout}.
 *
 * Threads: every function here runs on the worker `w` that owns the listeners and connections,
 * except passthrough_create()/passthrough_destroy(), which run on the main thread while the
 * worker's loop is not running, and passthrough_route(), which is pure.
 */
#ifndef OUTPOST_EDGE_PASSTHROUGH_H
#define OUTPOST_EDGE_PASSTHROUGH_H

#include <stddef.h>

struct config;
struct conf_route;
struct worker;

#define PASSTHROUGH_BUF_MAX (256 * 1024) /* bytes queued towards one side */

/*
 * The route for a server name: an exact name, then the longest matching "*.suffix" (which
 * matches names below the suffix, not the suffix itself), then "*". `sni` is lower-case
 * (as tls_clienthello_sni() returns it); one trailing dot is ignored; NULL or "" (no SNI)
 * matches only "*". Returns NULL when nothing matches. The pointer lives as long as `cfg`.
 */
const struct conf_route *passthrough_route(const struct config *cfg, const char *sni);

/*
 * Bind every cfg->passthrough_listen address on w's event base (SO_REUSEPORT, like the HTTP
 * listeners) and set w->passthrough. Also checks that every route's address is numeric.
 * Returns 0, or -errno / OP_EINVAL after logging why; then nothing is left bound and
 * w->passthrough is NULL. Does nothing (returns 0) when there is no passthrough listener.
 */
int passthrough_create(struct worker *w);

/* Graceful stop, step 1: stop accepting. */
void passthrough_stop(struct worker *w);

/* Graceful stop, step 2 (repeated): close connections that have not reached a backend yet.
 * Returns how many connections remain (relays, and connects in progress). */
size_t passthrough_close_idle(struct worker *w);

/* Close every connection now (end of the drain time). */
void passthrough_close_all(struct worker *w);

/* Close what is left, free the listeners and clear w->passthrough. NULL-safe. Runs after the
 * worker's loop has returned. */
void passthrough_destroy(struct worker *w);

#endif
