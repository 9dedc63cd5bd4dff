/*
 * tls/tls.h: TLS with BoringSSL for the TCP listeners (HTTP/1.1 and HTTP/2) and for the
 * upstream (bridging). Three parts:
 *
 *   struct tls_server   the server side of a node: one SSL_CTX per certificate (the default
 *                       one and one per site that sets tls_certificate), chosen by SNI; ALPN
 *                       h2 / http/1.1; OCSP staple from a file; ticket keys from a shared
 *                       struct tls_tickets. Built whole from a config; immutable once built;
 *                       refcounted, so a reload (SIGHUP) builds a new one and swaps it while
 *                       connections that started on the old one keep it until they close.
 *   struct tls_tickets  session ticket keys, rotating on a schedule (or loaded from a file),
 *                       shared by every worker and every generation of tls_server of a node.
 *   struct tls_client   the client side for one site's upstream: CA to verify against, the
 *                       name to verify and send as SNI, session reuse.
 *   struct tls_conn     one TLS connection whose records move through two evbuffers (`rin`:
 *                       ciphertext read from the socket, `rout`: ciphertext to write to it).
 *                       Writing plaintext never blocks (records are appended to `rout`); the
 *                       caller moves ciphertext between the socket and the buffers, which lets
 *                       one writev carry many records.
 *
 * Threads: tls_server_new()/tls_client_new() run on the main or control thread. A built
 * server or client is read-only and may be used from every worker at once. A tls_conn
 * belongs to one worker. tls_tickets rotation is thread-safe (its own lock).
 *
 * Errors: constructors return 0 or OP_EINVAL with a one-line message in `err` naming the
 * file and the problem ("tls_certificate /etc/x.pem: no certificate found").
 */
#ifndef OUTPOST_TLS_H
#define OUTPOST_TLS_H

#include <event2/buffer.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

/* ---- session tickets ---------------------------------------------------------------------- */

struct tls_tickets;
/* Keys rotate every `rotate_ms` (a key encrypts for one period and still decrypts for the
 * next one; <= 0: never). `key_file` (may be NULL): 80 bytes of key material shared by several
 * nodes, in the layout of nginx's 80-byte ssl_session_ticket_key (16 name, 32 HMAC-SHA256
 * key, 32 AES-256-CBC key), so nginx and Outpost nodes can share one file; then nothing
 * rotates until the file changes (reload). Errors: OP_EINVAL ("tls_ticket_key_file PATH:
 * must hold exactly 80 bytes", unreadable file). The object must outlive every tls_server
 * built with it; one object serves all generations, so tickets survive a reload. */
int tls_tickets_new(int64_t rotate_ms, const char *key_file, struct tls_tickets **out, char *err,
                    size_t errlen);
/* Rotate if the current key is older than its period; call from a timer (any thread, while
 * workers handshake). The first call starts the period of the first key. If the timer was
 * late by a whole period, the previous key is dropped as well. */
void tls_tickets_tick(struct tls_tickets *t, int64_t now_ms);
/* After the last tls_server that uses it is gone; clears *t. NULL is fine. */
void tls_tickets_free(struct tls_tickets **t);

/* ---- server ------------------------------------------------------------------------------- */

struct tls_server;
/*
 * Build the server contexts from `cfg`: the global tls_certificate/tls_certificate_key (the
 * default, required when cfg has tls listeners) and every site's own pair (selected when SNI
 * matches one of the site's names, with the same rules as conf_site_find(); no SNI, or a name
 * no site serves, gets the default). Identical (certificate, key, OCSP staple) triples share
 * one context. Loads chains, checks that each key matches its certificate, loads OCSP staples
 * (DER), applies tls_min_version (max is always 1.3), tls_ciphers (TLS 1.2 only) and
 * tls_curves, with modern defaults when unset. `alpn_h2`: offer h2 (else http/1.1 only).
 * `tickets`: ticket keys (NULL: BoringSSL's own, valid for this server only); ignored when
 * cfg->tls_session_tickets is false (no tickets, no resumption). Returns 0 or OP_EINVAL with
 * e.g. "site a.example: tls_certificate_key /k.pem: key does not match the certificate
 * /c.pem". `cfg` is not referenced after the call.
 */
int tls_server_new(const struct config *cfg, struct tls_tickets *tickets, bool alpn_h2,
                   struct tls_server **out, char *err, size_t errlen);
struct tls_server *tls_server_ref(struct tls_server *s);
void tls_server_unref(struct tls_server **s);
/* A new server-side SSL for an accepted connection. The caller holds a reference on `s` (see
 * tls_server_ref) while the SSL lives: the SNI and ALPN callbacks use it. */
SSL *tls_server_ssl(struct tls_server *s);

/* ---- upstream client ---------------------------------------------------------------------- */

struct tls_client;
/*
 * Client context for a site's upstream: verify against `ca_file` (NULL: the system store,
 * /etc/ssl/certs/ca-certificates.crt or else the hashed /etc/ssl/certs), unless `verify` is
 * false. Returns 0 or OP_EINVAL ("upstream_tls_ca PATH: cannot open: ..."). Free with
 * tls_client_free() after the last SSL made from it is freed.
 */
int tls_client_new(const char *ca_file, bool verify, struct tls_client **out, char *err,
                   size_t errlen);
void tls_client_free(struct tls_client **c);
/* A new client-side SSL that sends `sni` and (when verifying) checks the certificate is for
 * `name`; offers ALPN http/1.1 and resumes a session cached for the same (sni, name). `name`
 * NULL: `sni`. An IP literal name is checked against the IP SANs, and never sent as SNI.
 * A failed verification makes tls_conn_handshake() return TLS_ERROR, and tls_conn_error()
 * say why ("certificate verify failed: Hostname mismatch"). Any worker thread. */
SSL *tls_client_ssl(struct tls_client *c, const char *sni, const char *name);

/* ---- a connection over evbuffers ------------------------------------------------------------ */

enum tls_status {
    TLS_OK = 0, /* progress (or done) */
    TLS_WANT = 1, /* needs more ciphertext in rin */
    TLS_EOF = 2, /* close_notify received */
    TLS_ERROR = 3, /* fatal: close the connection (reason in tls_conn_error()) */
};

struct tls_conn {
    SSL *ssl;
    struct evbuffer *rin; /* ciphertext from the peer, filled by the caller */
    struct evbuffer *rout; /* ciphertext to the peer, drained by the caller */
    bool handshake_done;
    bool fatal; /* a fatal alert or error happened: nothing more may be read or written */
};

/* Take ownership of `ssl` (from tls_server_ssl() or tls_client_ssl()); creates rin/rout. */
void tls_conn_init(struct tls_conn *t, SSL *ssl);
void tls_conn_fini(struct tls_conn *t);
/* The struct tls_conn was copied to a new address (a connection handed from edge/h1 to
 * edge/h2): point the record layer at the new copy. The old copy must not be used. */
void tls_conn_moved(struct tls_conn *t);
/* Advance the handshake with what rin holds. TLS_OK once done (handshake_done set); a
 * server's TLS 1.3 session tickets are then already in rout. */
enum tls_status tls_conn_handshake(struct tls_conn *t);
/* Decrypt what rin holds into `plain` (appends). TLS_OK if anything or nothing was decrypted
 * but no error happened and more may come (TLS_WANT when rin holds no complete record),
 * TLS_EOF at close_notify. Runs the handshake first if not done. */
enum tls_status tls_conn_read(struct tls_conn *t, struct evbuffer *plain);
/* Encrypt `len` bytes into rout; never blocks. Returns TLS_OK or TLS_ERROR. */
enum tls_status tls_conn_write(struct tls_conn *t, const void *data, size_t len);
/* Encrypt and drain all of `plain` into rout. */
enum tls_status tls_conn_write_buf(struct tls_conn *t, struct evbuffer *plain);
/* Queue close_notify into rout. */
void tls_conn_shutdown(struct tls_conn *t);
/* The negotiated ALPN protocol ("h2", "http/1.1") or "" (none). */
const char *tls_conn_alpn(const struct tls_conn *t, char *buf, size_t len);
/* The SNI the client sent, or NULL. */
const char *tls_conn_sni(const struct tls_conn *t);
bool tls_conn_resumed(const struct tls_conn *t);
/* "TLSv1.3", and a text for the last error (for logs). */
const char *tls_conn_version(const struct tls_conn *t);
const char *tls_conn_error(const struct tls_conn *t, char *buf, size_t len);

#endif
