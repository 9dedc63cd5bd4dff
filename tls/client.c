/*
 * tls/client.c: the client side of a site's upstream TLS (bridging), see tls.h.
 *
 * One SSL_CTX per tls_client: the trust store (a CA file, or the system's), verification on
 * or off, TLS 1.2 minimum, ALPN http/1.1. Each SSL gets its SNI and the name to verify: a DNS
 * name is checked against the certificate's SAN (CN only without DNS SANs, BoringSSL's rule),
 * an IP literal against the IP SANs; an IP literal is never sent as SNI (RFC 6066 3).
 *
 * Session reuse: BoringSSL hands every new session (TLS 1.3: every NewSessionTicket, which
 * arrives after the handshake) to new_session(); the SSL carries its cache key (SNI and name)
 * in ex_data, and the session is kept in a small table, the least recently used entry going
 * first when it is full. tls_client_ssl() offers the cached session; one that BoringSSL marks
 * single-use (TLS 1.3) is taken out of the table so it is offered once, and the resumed
 * connection usually brings a fresh ticket.
 *
 * Threads: built on the main or control thread; tls_client_ssl() and the new-session callback
 * run on workers, so the table is shared under `lock`.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/util.h"
#include "tls/tls_int.h"

#define CACHE_MAX 64 /* distinct upstream names per client: one site has few */
#define SYSTEM_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define SYSTEM_DIR "/etc/ssl/certs"

struct cached {
    char *key; /* NULL: free slot */
    SSL_SESSION *sess;
    uint64_t used;
};

struct tls_client {
    SSL_CTX *ctx;
    bool verify;
    /* shared: lock */
    pthread_mutex_t lock;
    struct cached cache[CACHE_MAX];
    uint64_t clock;
};

static int ctx_index = -1; /* SSL_CTX -> struct tls_client */
static int ssl_index = -1; /* SSL -> cache key (owned) */
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void key_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl, void *argp)
{
    free(ptr);
}

static void ex_init(void)
{
    ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ssl_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, key_free);
    ASSERT(ctx_index >= 0 && ssl_index >= 0);
}

/* Store a new session; returns 1 (we keep the reference) or 0. */
static int new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_client *c = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_index);
    const char *key = SSL_get_ex_data(ssl, ssl_index);
    if (c == NULL || key == NULL)
        return 0;
    pthread_mutex_lock(&c->lock);
    struct cached *slot = NULL;
    for (size_t i = 0; i < CACHE_MAX; i++) {
        struct cached *e = &c->cache[i];
        if (e->key != NULL && strcmp(e->key, key) == 0) {
            slot = e;
            break;
        }
        if (slot == NULL || (slot->key != NULL && (e->key == NULL || e->used < slot->used)))
            slot = e; /* a free slot, else the least recently used */
    }
    if (slot->key == NULL || strcmp(slot->key, key) != 0) {
        free(slot->key);
        slot->key = xstrdup(key);
    }
    if (slot->sess != NULL)
        SSL_SESSION_free(slot->sess);
    slot->sess = sess;
    slot->used = ++c->clock;
    pthread_mutex_unlock(&c->lock);
    return 1;
}

static int load_ca(SSL_CTX *ctx, const char *ca_file, bool verify, char *err, size_t errlen)
{
    if (ca_file != NULL) {
        FILE *f = fopen(ca_file, "r");
        if (f == NULL) {
            snprintf(err, errlen, "upstream_tls_ca %s: cannot open: %s", ca_file, strerror(errno));
            return OP_EINVAL;
        }
        fclose(f);
        if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
            uint32_t e = ERR_peek_last_error();
            const char *r = ERR_reason_error_string(e);
            snprintf(err, errlen, "upstream_tls_ca %s: no PEM certificate loaded (%s)", ca_file,
                     r ? r : "unknown error");
            return OP_EINVAL;
        }
        return 0;
    }
    if (!verify)
        return 0;
    /* The bundle is parsed once here; the hashed directory is the fallback (looked up per
     * handshake) for systems without one. */
    if (access(SYSTEM_BUNDLE, R_OK) == 0 &&
        SSL_CTX_load_verify_locations(ctx, SYSTEM_BUNDLE, NULL) == 1)
        return 0;
    if (access(SYSTEM_DIR, R_OK | X_OK) == 0 &&
        SSL_CTX_load_verify_locations(ctx, NULL, SYSTEM_DIR) == 1)
        return 0;
    snprintf(err, errlen, "upstream_tls_ca: no system CA store (%s or %s); set upstream_tls_ca",
             SYSTEM_BUNDLE, SYSTEM_DIR);
    return OP_EINVAL;
}

int tls_client_new(const char *ca_file, bool verify, struct tls_client **out, char *err,
                   size_t errlen)
{
    pthread_once(&ex_once, ex_init);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    ASSERT(ctx != NULL);
    ASSERT(SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1);
    ASSERT(SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) == 1);
    int rc = load_ca(ctx, ca_file, verify, err, errlen);
    ERR_clear_error();
    if (rc != 0) {
        SSL_CTX_free(ctx);
        return rc;
    }
    SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    static const uint8_t h11[] = "\x08http/1.1";
    ASSERT(SSL_CTX_set_alpn_protos(ctx, h11, sizeof(h11) - 1) == 0); /* 0 is success here */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
    SSL_CTX_sess_set_new_cb(ctx, new_session);
    struct tls_client *c = xcalloc(1, sizeof(*c));
    c->ctx = ctx;
    c->verify = verify;
    pthread_mutex_init(&c->lock, NULL);
    ASSERT(SSL_CTX_set_ex_data(ctx, ctx_index, c) == 1);
    *out = c;
    return 0;
}

void tls_client_free(struct tls_client **cp)
{
    struct tls_client *c = *cp;
    *cp = NULL;
    if (c == NULL)
        return;
    SSL_CTX_free(c->ctx); /* after the last SSL made from it (they hold a reference) */
    for (size_t i = 0; i < CACHE_MAX; i++) {
        free(c->cache[i].key);
        if (c->cache[i].sess != NULL)
            SSL_SESSION_free(c->cache[i].sess);
    }
    pthread_mutex_destroy(&c->lock);
    free(c);
}

/* An IP literal ("192.0.2.1", "2001:db8::1", "[2001:db8::1]") into `ip` (no brackets). */
static bool ip_literal(const char *name, char *ip, size_t iplen)
{
    size_t len = strlen(name);
    if (len >= 2 && name[0] == '[' && name[len - 1] == ']') {
        name++;
        len -= 2;
    }
    if (len == 0 || len >= iplen)
        return false;
    memcpy(ip, name, len);
    ip[len] = '\0';
    uint8_t bin[16];
    return inet_pton(AF_INET, ip, bin) == 1 || inet_pton(AF_INET6, ip, bin) == 1;
}

SSL *tls_client_ssl(struct tls_client *c, const char *sni, const char *name)
{
    SSL *ssl = SSL_new(c->ctx);
    ASSERT(ssl != NULL);
    if (name == NULL)
        name = sni;
    char ip[64];
    if (sni != NULL && !ip_literal(sni, ip, sizeof(ip)))
        ASSERT(SSL_set_tlsext_host_name(ssl, sni) == 1);
    if (c->verify && name != NULL) {
        X509_VERIFY_PARAM *p = SSL_get0_param(ssl);
        if (ip_literal(name, ip, sizeof(ip)))
            ASSERT(X509_VERIFY_PARAM_set1_ip_asc(p, ip) == 1);
        else
            ASSERT(X509_VERIFY_PARAM_set1_host(p, name, strlen(name)) == 1);
    }
    /* The cache key: sessions resume only for the same SNI and verified name. */
    size_t klen = (sni ? strlen(sni) : 0) + (name ? strlen(name) : 0) + 2;
    char *key = xmalloc(klen);
    snprintf(key, klen, "%s\n%s", sni ? sni : "", name ? name : "");
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < CACHE_MAX; i++) {
        struct cached *e = &c->cache[i];
        if (e->key == NULL || strcmp(e->key, key) != 0)
            continue;
        ASSERT(SSL_set_session(ssl, e->sess) == 1); /* takes its own reference */
        e->used = ++c->clock;
        if (SSL_SESSION_should_be_single_use(e->sess)) {
            SSL_SESSION_free(e->sess);
            free(e->key);
            e->key = NULL;
            e->sess = NULL;
        }
        break;
    }
    pthread_mutex_unlock(&c->lock);
    ASSERT(SSL_set_ex_data(ssl, ssl_index, key) == 1); /* freed with the SSL */
    SSL_set_connect_state(ssl);
    return ssl;
}
