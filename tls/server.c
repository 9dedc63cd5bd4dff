/*
 * tls/server.c: the server contexts of a node (see tls.h).
 *
 * One SSL_CTX per distinct (certificate, key, OCSP staple) triple: the default one from
 * cfg->site_defaults, then one per site that brings its own. Every context carries the same
 * protocol settings (versions, ciphers, curves, ALPN, tickets) because BoringSSL takes some of
 * them from the context the SSL was created with (the default) and others from the context
 * SNI switched to. A table maps every name of every site to its context, including sites that
 * use the default certificate, so that SNI picks what conf_site_find() picks for a Host: an
 * exact name, then the longest "*.suffix", then "*"; no SNI gets the default.
 *
 * Sessions: resumption is by session tickets only. The server-side session-ID cache is off:
 * it would live in one process, be lost at every reload and need its own lock, while tickets
 * (keys in struct tls_tickets) survive reloads and can be shared by a fleet. With
 * tls_session_tickets off there is no resumption at all. Each context has a session-ID context
 * derived from its leaf certificate (SHA-256 of the DER), so a ticket resumes only on a
 * context serving the same certificate, in this generation of tls_server or the next one.
 *
 * Threads: built on the main or control thread; read-only afterwards, shared by all workers;
 * the servername and ALPN callbacks run on the worker doing the handshake and only read.
 */
#include <errno.h>
#include <openssl/digest.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/util.h"
#include "tls/tls_int.h"

/* TLS 1.2 suites when tls_ciphers is unset: forward secrecy and AEAD only (Mozilla
 * "intermediate" for 1.2). TLS 1.3 suites are not configurable in BoringSSL: it always offers
 * AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305, which is what one would choose anyway. */
#define DEFAULT_CIPHERS                                                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
#define DEFAULT_CURVES "X25519:P-256:P-384"
#define OCSP_MAX (64 * 1024)

struct sni_name {
    char *name; /* lower case; "*.suffix" or "*" as in conf_site */
    size_t len;
    SSL_CTX *ctx;
};

struct cert_ctx {
    const char *cert; /* borrowed from the config, only while building */
    const char *key;
    const char *ocsp;
    SSL_CTX *ctx;
};

struct tls_server {
    _Atomic int refs;
    bool alpn_h2;
    SSL_CTX **ctxs; /* [0] is the default certificate */
    size_t n_ctxs;
    struct sni_name *names;
    size_t n_names;
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

/* The rules of conf_site_find(), on the names copied into the server. */
static SSL_CTX *sni_find(const struct tls_server *s, const char *host)
{
    size_t len = strlen(host);
    if (len > 0 && host[len - 1] == '.')
        len--;
    SSL_CTX *wild = NULL;
    SSL_CTX *any = NULL;
    size_t wild_len = 0;
    for (size_t i = 0; i < s->n_names; i++) {
        const struct sni_name *n = &s->names[i];
        if (n->len == 1 && n->name[0] == '*') {
            any = n->ctx;
        } else if (n->name[0] == '*') {
            size_t sl = n->len - 1; /* ".example.com" */
            if (len > sl && sl > wild_len && strncasecmp(host + len - sl, n->name + 1, sl) == 0) {
                wild = n->ctx;
                wild_len = sl;
            }
        } else if (n->len == len && strncasecmp(host, n->name, len) == 0) {
            return n->ctx;
        }
    }
    return wild != NULL ? wild : any;
}

static int servername_cb(SSL *ssl, int *alert, void *arg)
{
    struct tls_server *s = arg;
    const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (host == NULL)
        return SSL_TLSEXT_ERR_OK; /* no SNI: the default certificate */
    SSL_CTX *ctx = sni_find(s, host);
    if (ctx != NULL && ctx != SSL_get_SSL_CTX(ssl) && SSL_set_SSL_CTX(ssl, ctx) == NULL) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* "site a.example: " or "" for the defaults, to prefix errors with. */
static void site_prefix(const struct conf_site *site, char *buf, size_t len)
{
    if (site == NULL)
        buf[0] = '\0';
    else
        snprintf(buf, len, "site %s: ", site->n_names > 0 ? site->names[0] : "(unnamed)");
}

/* BoringSSL's reason for the last error, without the "error:1000...:SSL routines:" noise. */
static const char *ssl_reason(void)
{
    uint32_t e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r != NULL ? r : "unknown error";
}

static int never_prompt(char *buf, int size, int rwflag, void *u)
{
    return 0; /* an encrypted key is an error, never a password prompt on the terminal */
}

static int load_pair(SSL_CTX *ctx, const char *pre, const char *cert, const char *key, char *err,
                     size_t errlen)
{
    FILE *f = fopen(cert, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%stls_certificate %s: cannot open: %s", pre, cert, strerror(errno));
        return OP_EINVAL;
    }
    fclose(f);
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        bool none = false; /* BoringSSL stacks ERR_R_PEM_LIB over PEM's own reason */
        for (uint32_t e; (e = ERR_get_error()) != 0;)
            none |= ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
        snprintf(err, errlen, "%stls_certificate %s: %s", pre, cert,
                 none ? "no PEM certificate found" : ssl_reason());
        return OP_EINVAL;
    }
    BIO *bio = BIO_new_file(key, "r");
    if (bio == NULL) {
        snprintf(err, errlen, "%stls_certificate_key %s: cannot open: %s", pre, key,
                 strerror(errno));
        return OP_EINVAL;
    }
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(bio, NULL, never_prompt, NULL);
    BIO_free(bio);
    int rc = OP_EINVAL;
    if (pkey == NULL)
        snprintf(err, errlen, "%stls_certificate_key %s: no PEM private key found (%s)", pre, key,
                 ssl_reason());
    else if (X509_check_private_key(SSL_CTX_get0_certificate(ctx), pkey) != 1)
        snprintf(err, errlen, "%stls_certificate_key %s: key does not match the certificate %s",
                 pre, key, cert);
    else if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1)
        snprintf(err, errlen, "%stls_certificate_key %s: %s", pre, key, ssl_reason());
    else
        rc = 0;
    EVP_PKEY_free(pkey);
    return rc;
}

static int load_ocsp(SSL_CTX *ctx, const char *pre, const char *path, char *err, size_t errlen)
{
    uint8_t *der = NULL;
    size_t len = 0;
    int rc = tls_file_read(path, OCSP_MAX, &der, &len);
    if (rc < 0) {
        snprintf(err, errlen, "%stls_ocsp_staple %s: cannot read: %s", pre, path,
                 rc == OP_ETOOBIG ? "larger than 64k" : strerror(-rc));
        return OP_EINVAL;
    }
    rc = OP_EINVAL;
    if (len == 0)
        snprintf(err, errlen, "%stls_ocsp_staple %s: empty file", pre, path);
    else if (der[0] != 0x30) /* an OCSPResponse is a DER SEQUENCE; catches PEM or text */
        snprintf(err, errlen, "%stls_ocsp_staple %s: not a DER OCSP response", pre, path);
    else if (SSL_CTX_set_ocsp_response(ctx, der, len) != 1)
        snprintf(err, errlen, "%stls_ocsp_staple %s: %s", pre, path, ssl_reason());
    else
        rc = 0;
    free(der);
    return rc;
}

/* The protocol settings every context shares. */
static int ctx_settings(SSL_CTX *ctx, const struct config *cfg, struct tls_tickets *tickets,
                        struct tls_server *s, char *err, size_t errlen)
{
    const char *minv = cfg->tls_min_version;
    uint16_t min = TLS1_2_VERSION;
    if (minv != NULL && strcmp(minv, "1.3") == 0) {
        min = TLS1_3_VERSION;
    } else if (minv != NULL && strcmp(minv, "1.2") != 0) {
        snprintf(err, errlen, "tls_min_version %s: must be 1.2 or 1.3", minv);
        return OP_EINVAL;
    }
    ASSERT(SSL_CTX_set_min_proto_version(ctx, min) == 1);
    ASSERT(SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) == 1);
    const char *ciphers = cfg->tls_ciphers ? cfg->tls_ciphers : DEFAULT_CIPHERS;
    if (SSL_CTX_set_strict_cipher_list(ctx, ciphers) != 1) {
        uint32_t e = ERR_peek_last_error();
        const char *why = ERR_GET_REASON(e) == SSL_R_NO_CIPHER_MATCH ? "no cipher matches"
                          : ERR_GET_REASON(e) == SSL_R_INVALID_COMMAND
                              ? "unknown cipher name or bad syntax"
                              : ssl_reason();
        snprintf(err, errlen, "tls_ciphers %s: %s", ciphers, why);
        return OP_EINVAL;
    }
    const char *curves = cfg->tls_curves ? cfg->tls_curves : DEFAULT_CURVES;
    if (SSL_CTX_set1_curves_list(ctx, curves) != 1) {
        snprintf(err, errlen, "tls_curves %s: unknown curve in the list", curves);
        return OP_EINVAL;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* tickets only: see the top */
    if (!cfg->tls_session_tickets)
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    else if (tickets != NULL)
        tls_tickets_attach(tickets, ctx);
    /* else BoringSSL's own random keys of the default context: valid for this generation */
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, s);
    SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, s);
    return 0;
}

static int ctx_build(const struct config *cfg, struct tls_tickets *tickets, struct tls_server *s,
                     const struct conf_site *site, const struct cert_ctx *cc, SSL_CTX **out,
                     char *err, size_t errlen)
{
    char pre[300];
    site_prefix(site, pre, sizeof(pre));
    if (cc->key == NULL) {
        snprintf(err, errlen, "%stls_certificate %s: tls_certificate_key is not set", pre,
                 cc->cert);
        return OP_EINVAL;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    ASSERT(ctx != NULL);
    int rc = ctx_settings(ctx, cfg, tickets, s, err, errlen);
    if (rc == 0)
        rc = load_pair(ctx, pre, cc->cert, cc->key, err, errlen);
    if (rc == 0 && cc->ocsp != NULL)
        rc = load_ocsp(ctx, pre, cc->ocsp, err, errlen);
    if (rc == 0) {
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        ASSERT(X509_digest(SSL_CTX_get0_certificate(ctx), EVP_sha256(), md, &mdlen) == 1);
        ASSERT(SSL_CTX_set_session_id_context(ctx, md, UTIL_MIN(mdlen, SSL_MAX_SID_CTX_LENGTH)));
    }
    ERR_clear_error();
    if (rc != 0) {
        SSL_CTX_free(ctx);
        return rc;
    }
    *out = ctx;
    return 0;
}

static bool streq(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* The context for a triple: an existing one, or a new one appended to s->ctxs. */
static int ctx_for(const struct config *cfg, struct tls_tickets *tickets, struct tls_server *s,
                   struct cert_ctx *seen, size_t *n_seen, const struct conf_site *site,
                   struct cert_ctx cc, SSL_CTX **out, char *err, size_t errlen)
{
    for (size_t i = 0; i < *n_seen; i++) {
        if (streq(seen[i].cert, cc.cert) && streq(seen[i].key, cc.key) &&
            streq(seen[i].ocsp, cc.ocsp)) {
            *out = seen[i].ctx;
            return 0;
        }
    }
    int rc = ctx_build(cfg, tickets, s, site, &cc, &cc.ctx, err, errlen);
    if (rc != 0)
        return rc;
    seen[(*n_seen)++] = cc;
    s->ctxs[s->n_ctxs++] = cc.ctx;
    *out = cc.ctx;
    return 0;
}

int tls_server_new(const struct config *cfg, struct tls_tickets *tickets, bool alpn_h2,
                   struct tls_server **out, char *err, size_t errlen)
{
    const struct conf_site_opts *d = &cfg->site_defaults;
    if (d->tls_certificate == NULL || d->tls_certificate_key == NULL) {
        snprintf(err, errlen,
                 "tls_certificate and tls_certificate_key are required with "
                 "tls_listen (or --cert and --key)");
        return OP_EINVAL;
    }
    struct tls_server *s = xcalloc(1, sizeof(*s));
    atomic_init(&s->refs, 1);
    s->alpn_h2 = alpn_h2;
    s->ctxs = xcalloc(cfg->n_sites + 1, sizeof(*s->ctxs));
    struct cert_ctx *seen = xcalloc(cfg->n_sites + 1, sizeof(*seen));
    size_t n_seen = 0;
    size_t n_names = 0;
    for (size_t i = 0; i < cfg->n_sites; i++)
        n_names += cfg->sites[i].n_names;
    s->names = xcalloc(n_names + 1, sizeof(*s->names));

    SSL_CTX *def = NULL;
    struct cert_ctx dcc = {d->tls_certificate, d->tls_certificate_key, d->tls_ocsp_staple, NULL};
    int rc = ctx_for(cfg, tickets, s, seen, &n_seen, NULL, dcc, &def, err, errlen);
    for (size_t i = 0; rc == 0 && i < cfg->n_sites; i++) {
        const struct conf_site *site = &cfg->sites[i];
        const struct conf_site_opts *o = &site->opts;
        struct cert_ctx cc = dcc;
        if (o->tls_certificate != NULL && !streq(o->tls_certificate, d->tls_certificate)) {
            /* A site's own certificate. A staple inherited from the defaults belongs to the
             * default certificate (a response names one certificate): not stapled here. */
            cc.cert = o->tls_certificate;
            cc.key = o->tls_certificate_key;
            cc.ocsp = streq(o->tls_ocsp_staple, d->tls_ocsp_staple) ? NULL : o->tls_ocsp_staple;
        } else {
            if (o->tls_certificate_key != NULL)
                cc.key = o->tls_certificate_key;
            if (o->tls_ocsp_staple != NULL)
                cc.ocsp = o->tls_ocsp_staple;
        }
        SSL_CTX *ctx = NULL;
        rc = ctx_for(cfg, tickets, s, seen, &n_seen, site, cc, &ctx, err, errlen);
        for (size_t j = 0; rc == 0 && j < site->n_names; j++) {
            struct sni_name *n = &s->names[s->n_names++];
            n->name = xstrdup(site->names[j]);
            n->len = strlen(n->name);
            n->ctx = ctx;
        }
    }
    free(seen);
    if (rc != 0) {
        tls_server_unref(&s);
        return rc;
    }
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
    for (size_t i = 0; i < s->n_ctxs; i++)
        SSL_CTX_free(s->ctxs[i]);
    for (size_t i = 0; i < s->n_names; i++)
        free(s->names[i].name);
    free(s->ctxs);
    free(s->names);
    free(s);
}

SSL *tls_server_ssl(struct tls_server *s)
{
    SSL *ssl = SSL_new(s->ctxs[0]);
    ASSERT(ssl != NULL);
    SSL_set_accept_state(ssl);
    return ssl;
}
