/*
 * tls/conn.c: a TLS connection whose records move through evbuffers instead of a socket.
 *
 * A custom BIO reads ciphertext from `rin` and appends ciphertext to `rout`. Writes to the
 * BIO always succeed, so SSL_write never returns WANT_WRITE: plaintext given to
 * tls_conn_write() is encrypted at once (the caller bounds how much it gives, by looking at
 * rout's length), and may come from memory that is valid only during the call (an LMDB page).
 * The caller moves ciphertext between the socket and the buffers with evbuffer_read() and
 * evbuffer_write(), so one writev carries every record produced in a loop iteration.
 */
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "lib/util.h"
#include "tls/tls.h"

#define RECORD_MAX 16384 /* plaintext bytes per SSL_write: one full TLS record */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static int bio_write(BIO *b, const char *data, int len)
{
    struct tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    if (evbuffer_add(t->rout, data, (size_t)len) < 0)
        return -1;
    return len;
}

static int bio_read(BIO *b, char *out, int len)
{
    struct tls_conn *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    int n = evbuffer_remove(t->rin, out, (size_t)len);
    if (n <= 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    return n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PENDING: {
        struct tls_conn *t = BIO_get_data(b);
        return (long)evbuffer_get_length(t->rin);
    }
    case BIO_CTRL_WPENDING:
        return 0;
    default:
        return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void bio_method_init(void)
{
    bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "outpost-evbuffer");
    ASSERT(bio_method != NULL);
    BIO_meth_set_write(bio_method, bio_write);
    BIO_meth_set_read(bio_method, bio_read);
    BIO_meth_set_ctrl(bio_method, bio_ctrl);
    BIO_meth_set_create(bio_method, bio_create);
}

void tls_conn_init(struct tls_conn *t, SSL *ssl)
{
    pthread_once(&bio_once, bio_method_init);
    memset(t, 0, sizeof(*t));
    t->ssl = ssl;
    t->rin = evbuffer_new();
    t->rout = evbuffer_new();
    BIO *bio = BIO_new(bio_method);
    ASSERT(bio != NULL && t->rin != NULL && t->rout != NULL);
    BIO_set_data(bio, t);
    SSL_set_bio(ssl, bio, bio); /* one reference, owned by the SSL */
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}

void tls_conn_fini(struct tls_conn *t)
{
    if (t->ssl != NULL)
        SSL_free(t->ssl);
    if (t->rin != NULL)
        evbuffer_free(t->rin);
    if (t->rout != NULL)
        evbuffer_free(t->rout);
    memset(t, 0, sizeof(*t));
}

void tls_conn_moved(struct tls_conn *t)
{
    if (t->ssl == NULL)
        return;
    BIO_set_data(SSL_get_rbio(t->ssl), t); /* one BIO for both directions */
}

/* Map an SSL_* return value; TLS_OK is never returned here. */
static enum tls_status ssl_status(struct tls_conn *t, int rc)
{
    switch (SSL_get_error(t->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return TLS_WANT;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_EOF;
    default:
        t->fatal = true;
        return TLS_ERROR;
    }
}

enum tls_status tls_conn_handshake(struct tls_conn *t)
{
    if (t->handshake_done)
        return TLS_OK;
    if (t->fatal)
        return TLS_ERROR;
    ERR_clear_error();
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        t->handshake_done = true;
        /* A TLS 1.3 server's NewSessionTickets wait for its first write (BoringSSL protects
         * servers whose socket buffer a non-reading client could fill; rout never fills).
         * A zero-byte write flushes them now, so the client can resume even if this
         * connection ends before we answer. */
        if (SSL_is_server(t->ssl)) {
            (void)SSL_write(t->ssl, "", 0);
            ERR_clear_error();
        }
        return TLS_OK;
    }
    return ssl_status(t, rc);
}

enum tls_status tls_conn_read(struct tls_conn *t, struct evbuffer *plain)
{
    if (!t->handshake_done) {
        enum tls_status st = tls_conn_handshake(t);
        if (st != TLS_OK)
            return st;
    }
    if (t->fatal)
        return TLS_ERROR;
    bool any = false;
    for (;;) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(plain, RECORD_MAX, &v, 1) < 1)
            return TLS_ERROR;
        ERR_clear_error();
        int n = SSL_read(t->ssl, v.iov_base, (int)(v.iov_len < INT32_MAX ? v.iov_len : INT32_MAX));
        if (n > 0) {
            v.iov_len = (size_t)n;
            evbuffer_commit_space(plain, &v, 1);
            any = true;
            continue;
        }
        evbuffer_commit_space(plain, &v, 0);
        enum tls_status st = ssl_status(t, n);
        if (st == TLS_WANT)
            return any ? TLS_OK : TLS_WANT;
        return st;
    }
}

enum tls_status tls_conn_write(struct tls_conn *t, const void *data, size_t len)
{
    if (t->fatal || !t->handshake_done)
        return TLS_ERROR;
    const char *p = data;
    while (len > 0) {
        int chunk = (int)(len < RECORD_MAX ? len : RECORD_MAX);
        ERR_clear_error();
        int n = SSL_write(t->ssl, p, chunk);
        if (n <= 0) {
            /* The BIO never blocks: any failure here is fatal. */
            t->fatal = true;
            return TLS_ERROR;
        }
        p += n;
        len -= (size_t)n;
    }
    return TLS_OK;
}

enum tls_status tls_conn_write_buf(struct tls_conn *t, struct evbuffer *plain)
{
    for (;;) {
        struct evbuffer_iovec v[8];
        int n = evbuffer_peek(plain, -1, NULL, v, 8);
        if (n <= 0)
            return TLS_OK;
        size_t done = 0;
        for (int i = 0; i < n && i < 8; i++) {
            if (tls_conn_write(t, v[i].iov_base, v[i].iov_len) != TLS_OK)
                return TLS_ERROR;
            done += v[i].iov_len;
        }
        evbuffer_drain(plain, done);
    }
}

void tls_conn_shutdown(struct tls_conn *t)
{
    if (t->ssl != NULL && t->handshake_done && !t->fatal) {
        ERR_clear_error();
        (void)SSL_shutdown(t->ssl);
    }
}

const char *tls_conn_alpn(const struct tls_conn *t, char *buf, size_t len)
{
    const uint8_t *p = NULL;
    unsigned n = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    if (len == 0)
        return "";
    if (n >= len)
        n = (unsigned)len - 1;
    if (p != NULL && n > 0)
        memcpy(buf, p, n);
    buf[p != NULL ? n : 0] = '\0';
    return buf;
}

const char *tls_conn_sni(const struct tls_conn *t)
{
    return SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
}

bool tls_conn_resumed(const struct tls_conn *t)
{
    return SSL_session_reused(t->ssl) == 1;
}

const char *tls_conn_version(const struct tls_conn *t)
{
    return SSL_get_version(t->ssl);
}

const char *tls_conn_error(const struct tls_conn *t, char *buf, size_t len)
{
    /* A rejected peer certificate: say why ("certificate verify failed: Hostname mismatch")
     * rather than BoringSSL's bare CERTIFICATE_VERIFY_FAILED. */
    long vr = SSL_get_verify_result(t->ssl);
    if (vr != X509_V_OK && (SSL_get_verify_mode(t->ssl) & SSL_VERIFY_PEER)) {
        snprintf(buf, len, "certificate verify failed: %s", X509_verify_cert_error_string(vr));
        return buf;
    }
    uint32_t e = ERR_peek_last_error();
    if (e == 0) {
        snprintf(buf, len, "connection error");
        return buf;
    }
    ERR_error_string_n(e, buf, len);
    return buf;
}
