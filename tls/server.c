/*
 * tls/server.c: the server contexts of a node (see tls.h).
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"
#include "tls/tls.h"

struct tls_server {
    _Atomic int refs;
    SSL_CTX *ctx; /* the default certificate */
    bool alpn_h2;
};

static int alpn_select(SSL *ssl, const uint8_t **out, uint8_t *outlen, const uint8_t *in,
                       unsigned inlen, void *arg)
{
    struct tls_server *s = arg;
    static const uint8_t h2[] = "\x02h2";
    static const uint8_t h11[] = "\x08http/1.1";
    uint8_t *sel = NULL;
    if (s->alpn_h2 && SSL_select_next_proto(&sel, outlen, h2, sizeof(h2) - 1, in, inlen) ==
                          OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    if (SSL_select_next_proto(&sel, outlen, h11, sizeof(h11) - 1, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK; /* no common protocol: go on without ALPN (HTTP/1.1) */
}

static int fail_ssl(char *err, size_t errlen, const char *what, const char *file)
{
    char e[256];
    ERR_error_string_n(ERR_get_error(), e, sizeof(e));
    snprintf(err, errlen, "%s %s: %s", what, file ? file : "(unset)", e);
    ERR_clear_error();
    return OP_EINVAL;
}

int tls_server_new(const struct config *cfg, struct tls_tickets *tickets, bool alpn_h2,
                   struct tls_server **out, char *err, size_t errlen)
{
    const struct conf_site_opts *d = &cfg->site_defaults;
    (void)tickets;
    if (d->tls_certificate == NULL || d->tls_certificate_key == NULL) {
        snprintf(err, errlen,
                 "tls_certificate and tls_certificate_key are required with "
                 "tls_listen (or --cert and --key)");
        return OP_EINVAL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        return fail_ssl(err, errlen, "tls", NULL);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, d->tls_certificate) != 1) {
        SSL_CTX_free(ctx);
        return fail_ssl(err, errlen, "tls_certificate", d->tls_certificate);
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, d->tls_certificate_key, SSL_FILETYPE_PEM) != 1) {
        SSL_CTX_free(ctx);
        return fail_ssl(err, errlen, "tls_certificate_key", d->tls_certificate_key);
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        SSL_CTX_free(ctx);
        return fail_ssl(err, errlen, "tls_certificate_key", d->tls_certificate_key);
    }
    struct tls_server *s = xcalloc(1, sizeof(*s));
    atomic_init(&s->refs, 1);
    s->ctx = ctx;
    s->alpn_h2 = alpn_h2;
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, s);
    *out = s;
    return 0;
}

struct tls_server *tls_server_ref(struct tls_server *s)
{
    atomic_fetch_add(&s->refs, 1);
    return s;
}

void tls_server_unref(struct tls_server **sp)
{
    struct tls_server *s = *sp;
    *sp = NULL;
    if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    SSL_CTX_free(s->ctx);
    free(s);
}

SSL *tls_server_ssl(struct tls_server *s)
{
    SSL *ssl = SSL_new(s->ctx);
    ASSERT(ssl != NULL);
    SSL_set_accept_state(ssl);
    return ssl;
}
