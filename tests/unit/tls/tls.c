/*
 * tests/unit/tls/tls.c: tls/server.c, tls/tickets.c, tls/client.c and tls/conn.c together.
 *
 * Every handshake runs in memory: a client tls_conn and a server tls_conn whose ciphertext
 * buffers are shuttled (rout -> peer's rin) until both are done or one fails. Certificates
 * come from scripts/gen-test-certs.sh, run into a temporary directory at start (set
 * OUTPOST_SRC to the source tree if the test does not run from it).
 */
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/util.h"
#include "tls/tls.h"
#include "tests/unit/tap.h"

static char dir[64];
static int sessions_seen;

/* A path in the certificate directory (or `f` itself if absolute), owned by the caller. */
static char *cpath(const char *f)
{
    if (f == NULL)
        return NULL;
    size_t n = strlen(dir) + strlen(f) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, f);
    return f[0] == '/' ? (free(p), xstrdup(f)) : p;
}

static void write_file(const char *f, const void *data, size_t len)
{
    char *p = cpath(f);
    FILE *fp = fopen(p, "wb");
    ASSERT(fp != NULL && fwrite(data, 1, len, fp) == len && fclose(fp) == 0);
    free(p);
}

/* ---- configs built by hand ------------------------------------------------------------------ */

static struct config *cfg_new(const char *cert, const char *key, const char *ocsp)
{
    struct config *c = xcalloc(1, sizeof(*c));
    c->site_defaults.tls_certificate = cpath(cert);
    c->site_defaults.tls_certificate_key = cpath(key);
    c->site_defaults.tls_ocsp_staple = cpath(ocsp);
    c->tls_session_tickets = true;
    c->tls_ticket_rotation_ms = 3600 * 1000;
    return c;
}

/* A site named by space-separated `names`; NULL cert: the default certificate. */
static void cfg_site(struct config *c, const char *names, const char *cert, const char *key,
                     const char *ocsp)
{
    c->sites = xrealloc(c->sites, (c->n_sites + 1) * sizeof(*c->sites));
    struct conf_site *s = &c->sites[c->n_sites++];
    memset(s, 0, sizeof(*s));
    char *copy = xstrdup(names);
    for (char *save = NULL, *n = strtok_r(copy, " ", &save); n; n = strtok_r(NULL, " ", &save)) {
        s->names = xrealloc(s->names, (s->n_names + 1) * sizeof(*s->names));
        s->names[s->n_names++] = xstrdup(n);
    }
    free(copy);
    s->opts.tls_certificate = cpath(cert);
    s->opts.tls_certificate_key = cpath(key);
    s->opts.tls_ocsp_staple = cpath(ocsp);
}

static void opts_fini(struct conf_site_opts *o)
{
    free(o->tls_certificate);
    free(o->tls_certificate_key);
    free(o->tls_ocsp_staple);
}

static void cfg_free(struct config *c)
{
    for (size_t i = 0; i < c->n_sites; i++) {
        for (size_t j = 0; j < c->sites[i].n_names; j++)
            free(c->sites[i].names[j]);
        free(c->sites[i].names);
        opts_fini(&c->sites[i].opts);
    }
    free(c->sites);
    opts_fini(&c->site_defaults);
    free(c->tls_min_version);
    free(c->tls_ciphers);
    free(c->tls_curves);
    free(c);
}

static struct tls_server *server_new(const struct config *c, struct tls_tickets *t, bool h2)
{
    char err[512] = "";
    struct tls_server *s = NULL;
    int rc = tls_server_new(c, t, h2, &s, err, sizeof(err));
    if (rc != 0)
        printf("# tls_server_new: %s\n", err);
    ASSERT(rc == 0);
    return s;
}

static struct tls_client *client_new(const char *ca, bool verify)
{
    char err[512] = "";
    struct tls_client *c = NULL;
    char *p = cpath(ca);
    int rc = tls_client_new(p, verify, &c, err, sizeof(err));
    free(p);
    if (rc != 0)
        printf("# tls_client_new: %s\n", err);
    ASSERT(rc == 0);
    return c;
}

/* tls_server_new must fail with OP_EINVAL and an error containing `want1` and `want2`. */
static void server_fails(struct config *c, const char *want1, const char *want2, const char *what)
{
    char err[512] = "";
    struct tls_server *s = NULL;
    int rc = tls_server_new(c, NULL, true, &s, err, sizeof(err));
    is_int(rc, OP_EINVAL, "%s: OP_EINVAL", what);
    ok(s == NULL, "%s: no server", what);
    ok(strstr(err, want1) != NULL && (want2 == NULL || strstr(err, want2) != NULL),
       "%s: error \"%s\" names \"%s\"%s%s", what, err, want1, want2 ? " and " : "",
       want2 ? want2 : "");
    if (s != NULL)
        tls_server_unref(&s);
    cfg_free(c);
}

/* ---- in-memory handshakes ---------------------------------------------------------------------
 */

struct pair {
    struct tls_conn c; /* client */
    struct tls_conn s; /* server */
    bool ok; /* both handshakes done */
    char cerr[256]; /* the client's and the server's error, when not ok */
    char serr[256];
};

static void pair_shuttle(struct pair *p)
{
    evbuffer_add_buffer(p->s.rin, p->c.rout);
    evbuffer_add_buffer(p->c.rin, p->s.rout);
}

/* Handshake; then let the client read what followed (TLS 1.3 session tickets). */
static bool pair_handshake(struct pair *p, SSL *client, SSL *server)
{
    memset(p, 0, sizeof(*p));
    tls_conn_init(&p->c, client);
    tls_conn_init(&p->s, server);
    enum tls_status cs = TLS_WANT;
    enum tls_status ss = TLS_WANT;
    for (int i = 0; i < 20 && cs != TLS_ERROR && ss != TLS_ERROR; i++) {
        cs = tls_conn_handshake(&p->c);
        if (cs == TLS_ERROR)
            tls_conn_error(&p->c, p->cerr, sizeof(p->cerr));
        evbuffer_add_buffer(p->s.rin, p->c.rout);
        ss = tls_conn_handshake(&p->s);
        if (ss == TLS_ERROR)
            tls_conn_error(&p->s, p->serr, sizeof(p->serr));
        evbuffer_add_buffer(p->c.rin, p->s.rout);
        if (p->c.handshake_done && p->s.handshake_done)
            break;
    }
    p->ok = p->c.handshake_done && p->s.handshake_done;
    if (p->ok) {
        struct evbuffer *junk = evbuffer_new();
        (void)tls_conn_read(&p->c, junk);
        evbuffer_free(junk);
    }
    return p->ok;
}

static void pair_fini(struct pair *p)
{
    tls_conn_fini(&p->c);
    tls_conn_fini(&p->s);
}

static const char *peer_cn(struct tls_conn *t, char *buf, size_t len)
{
    X509 *x = SSL_get_peer_certificate(t->ssl);
    snprintf(buf, len, "(none)");
    if (x != NULL) {
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, (int)len);
        X509_free(x);
    }
    return buf;
}

/* A bare client context (no verification) that keeps the last session it was given, to
 * replay one ticket at will. */
static SSL_SESSION *last_sess;

static int keep_session(SSL *ssl, SSL_SESSION *sess)
{
    if (last_sess != NULL)
        SSL_SESSION_free(last_sess);
    last_sess = sess;
    sessions_seen++;
    return 1;
}

static SSL_CTX *raw_ctx(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT);
    SSL_CTX_sess_set_new_cb(ctx, keep_session);
    return ctx;
}

static SSL *raw_ssl(SSL_CTX *ctx, const char *sni, uint16_t max_version, SSL_SESSION *resume)
{
    SSL *ssl = SSL_new(ctx);
    if (sni != NULL)
        SSL_set_tlsext_host_name(ssl, sni);
    if (max_version)
        SSL_set_max_proto_version(ssl, max_version);
    if (resume != NULL)
        SSL_set_session(ssl, resume);
    SSL_set_connect_state(ssl);
    return ssl;
}

/* One full handshake of a raw client with `s`: resumed? (-1: the handshake failed). */
static int raw_resume(SSL_CTX *ctx, struct tls_server *s, const char *sni, uint16_t maxv,
                      SSL_SESSION *sess)
{
    struct pair p;
    int rc = -1;
    if (pair_handshake(&p, raw_ssl(ctx, sni, maxv, sess), tls_server_ssl(s)))
        rc = tls_conn_resumed(&p.c) && tls_conn_resumed(&p.s);
    pair_fini(&p);
    return rc;
}

static SSL_SESSION *take_session(void)
{
    SSL_SESSION *s = last_sess;
    last_sess = NULL;
    return s;
}

/* ---- tests ------------------------------------------------------------------------------------
 */

static void test_default_cert(void)
{
    struct config *cfg = cfg_new("default-rsa.pem", "default-rsa.key", NULL);
    struct tls_server *s = server_new(cfg, NULL, true);
    struct tls_client *c = client_new("ca.pem", true);
    struct pair p;
    char buf[256];
    ok(pair_handshake(&p, tls_client_ssl(c, "default.test", "default.test"), tls_server_ssl(s)),
       "default certificate: handshake (%s / %s)", p.cerr, p.serr);
    is_str(peer_cn(&p.c, buf, sizeof(buf)), "default.test", "default certificate: CN");
    is_str(tls_conn_version(&p.c), "TLSv1.3", "default: TLS 1.3");
    is_str(tls_conn_sni(&p.s), "default.test", "server sees the SNI");
    is_str(tls_conn_alpn(&p.s, buf, sizeof(buf)), "http/1.1", "tls_client offers http/1.1");
    pair_fini(&p);
    tls_client_free(&c);
    tls_server_unref(&s);
    cfg_free(cfg);
}

static void test_sni(void)
{
    struct config *cfg = cfg_new("default-rsa.pem", "default-rsa.key", NULL);
    cfg_site(cfg, "a.example a2.example", "a.pem", "a.key", NULL);
    cfg_site(cfg, "*.wild.example", "wild.pem", "wild.key", NULL);
    cfg_site(cfg, "chain.example", "chain.pem", "chain.key", NULL);
    cfg_site(cfg, "b.example", NULL, NULL, NULL);
    cfg_site(cfg, "dup.example", "a.pem", "a.key", NULL); /* same triple as a.example */
    cfg_site(cfg, "www.wild.example", NULL, NULL, NULL); /* exact beats the wildcard */
    struct tls_server *s = server_new(cfg, NULL, true);
    struct tls_client *c = client_new("ca.pem", true);
    static const struct {
        const char *sni;
        const char *verify; /* name to verify, NULL: the SNI */
        const char *cn;
    } cases[] = {
        {"a.example", NULL, "a.example"},
        {"A.Example.", "a.example", "a.example"},
        {"a2.example", "a.example", "a.example"},
        {"dup.example", "a.example", "a.example"},
        {"x.wild.example", NULL, "*.wild.example"},
        {"deep.x.wild.example", "x.wild.example", "*.wild.example"},
        {"wild.example", "default.test", "default.test"},
        {"www.wild.example", "default.test", "default.test"},
        {"chain.example", NULL, "chain.example"}, /* verifies only with the intermediate */
        {"b.example", "default.test", "default.test"},
        {"unknown.example", "default.test", "default.test"},
        {NULL, "default.test", "default.test"},
    };
    SSL_CTX *ctx_of[ARRAY_SIZE(cases)];
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct pair p;
        char cn[256];
        const char *sni = cases[i].sni;
        ok(pair_handshake(&p, tls_client_ssl(c, sni, cases[i].verify), tls_server_ssl(s)),
           "SNI %s: handshake, verified (%s / %s)", sni ? sni : "(none)", p.cerr, p.serr);
        is_str(peer_cn(&p.c, cn, sizeof(cn)), cases[i].cn, "SNI %s: certificate",
               sni ? sni : "(none)");
        ctx_of[i] = SSL_get_SSL_CTX(p.s.ssl);
        pair_fini(&p);
    }
    ok(ctx_of[0] == ctx_of[3], "identical certificate triples share one context");
    ok(ctx_of[9] == ctx_of[11] && ctx_of[10] == ctx_of[11],
       "sites without a certificate and unknown names use the default context");
    ok(ctx_of[0] != ctx_of[11] && ctx_of[4] != ctx_of[11], "own certificates: own contexts");

    /* a catch-all site with its own certificate takes unknown names (not absent SNI) */
    cfg_site(cfg, "*", "default-ec.pem", "default-ec.key", NULL);
    struct tls_server *s2 = server_new(cfg, NULL, true);
    struct pair p;
    ok(pair_handshake(&p, tls_client_ssl(c, "unknown.example", "default.test"), tls_server_ssl(s2)),
       "catch-all site: handshake");
    X509 *x = SSL_get_peer_certificate(p.c.ssl);
    EVP_PKEY *k = x ? X509_get_pubkey(x) : NULL;
    ok(k != NULL && EVP_PKEY_id(k) == EVP_PKEY_EC, "unknown SNI gets the catch-all's certificate");
    EVP_PKEY_free(k);
    X509_free(x);
    pair_fini(&p);
    ok(pair_handshake(&p, tls_client_ssl(c, NULL, "default.test"), tls_server_ssl(s2)),
       "catch-all site, no SNI: handshake");
    x = SSL_get_peer_certificate(p.c.ssl);
    k = x ? X509_get_pubkey(x) : NULL;
    ok(k != NULL && EVP_PKEY_id(k) == EVP_PKEY_RSA, "no SNI gets the default certificate");
    EVP_PKEY_free(k);
    X509_free(x);
    pair_fini(&p);
    tls_server_unref(&s2);
    tls_client_free(&c);
    tls_server_unref(&s);
    cfg_free(cfg);
}

static void alpn_case(struct tls_server *s, const char *offer, size_t offer_len, const char *want,
                      const char *what)
{
    SSL_CTX *ctx = raw_ctx();
    SSL *ssl = raw_ssl(ctx, "default.test", 0, NULL);
    SSL_set_alpn_protos(ssl, (const uint8_t *)offer, offer_len);
    struct pair p;
    char buf[32];
    ok(pair_handshake(&p, ssl, tls_server_ssl(s)), "%s: handshake", what);
    is_str(tls_conn_alpn(&p.c, buf, sizeof(buf)), want, "%s: client's ALPN", what);
    is_str(tls_conn_alpn(&p.s, buf, sizeof(buf)), want, "%s: server's ALPN", what);
    pair_fini(&p);
    SSL_CTX_free(ctx);
}

static void test_alpn(void)
{
    struct config *cfg = cfg_new("default-ec.pem", "default-ec.key", NULL);
    cfg_site(cfg, "a.example", "a.pem", "a.key", NULL);
    struct tls_server *h2 = server_new(cfg, NULL, true);
    struct tls_server *h1 = server_new(cfg, NULL, false);
    static const char both[] = "\x02h2\x08http/1.1";
    alpn_case(h2, both, sizeof(both) - 1, "h2", "h2 server, client h2+http/1.1");
    alpn_case(h2, "\x08http/1.1", 9, "http/1.1", "h2 server, client http/1.1");
    alpn_case(h1, both, sizeof(both) - 1, "http/1.1", "http/1.1 server, client h2+http/1.1");
    alpn_case(h1, "\x02h2", 3, "", "http/1.1 server, client h2 only: no ALPN");
    /* ALPN also on a site's context */
    SSL_CTX *ctx = raw_ctx();
    SSL *ssl = raw_ssl(ctx, "a.example", 0, NULL);
    SSL_set_alpn_protos(ssl, (const uint8_t *)both, sizeof(both) - 1);
    struct pair p;
    char buf[32];
    ok(pair_handshake(&p, ssl, tls_server_ssl(h2)), "site context: handshake");
    is_str(tls_conn_alpn(&p.c, buf, sizeof(buf)), "h2", "site context: h2");
    pair_fini(&p);
    SSL_CTX_free(ctx);
    tls_server_unref(&h1);
    tls_server_unref(&h2);
    cfg_free(cfg);
}

static void test_versions(void)
{
    struct config *cfg = cfg_new("default-rsa.pem", "default-rsa.key", NULL);
    struct tls_server *s = server_new(cfg, NULL, true);
    SSL_CTX *ctx = raw_ctx();
    struct pair p;
    char cn[64];
    ok(pair_handshake(&p, raw_ssl(ctx, NULL, TLS1_2_VERSION, NULL), tls_server_ssl(s)),
       "TLS 1.2 client: handshake");
    is_str(tls_conn_version(&p.s), "TLSv1.2", "TLS 1.2 negotiated");
    is_str(SSL_CIPHER_get_name(SSL_get_current_cipher(p.s.ssl)), "ECDHE-RSA-AES128-GCM-SHA256",
           "TLS 1.2 with an RSA certificate: ECDHE + AEAD");
    pair_fini(&p);
    ok(pair_handshake(&p, raw_ssl(ctx, NULL, 0, NULL), tls_server_ssl(s)), "TLS 1.3 handshake");
    is_str(tls_conn_version(&p.s), "TLSv1.3", "TLS 1.3 negotiated");
    pair_fini(&p);
    tls_server_unref(&s);

    cfg->tls_min_version = xstrdup("1.3");
    s = server_new(cfg, NULL, true);
    ok(!pair_handshake(&p, raw_ssl(ctx, NULL, TLS1_2_VERSION, NULL), tls_server_ssl(s)),
       "min 1.3 refuses a TLS 1.2-only client (server: %s)", p.serr);
    ok(p.s.fatal, "min 1.3: the server connection is fatal");
    pair_fini(&p);
    ok(pair_handshake(&p, raw_ssl(ctx, NULL, 0, NULL), tls_server_ssl(s)),
       "min 1.3: a TLS 1.3 client handshakes");
    pair_fini(&p);
    tls_server_unref(&s);

    /* ECDSA certificate, 1.2: an ECDSA suite; and a restricted cipher list is obeyed */
    cfg_free(cfg);
    cfg = cfg_new("default-ec.pem", "default-ec.key", NULL);
    cfg->tls_ciphers = xstrdup("ECDHE-ECDSA-CHACHA20-POLY1305");
    cfg->tls_curves = xstrdup("P-256");
    s = server_new(cfg, NULL, true);
    ok(pair_handshake(&p, raw_ssl(ctx, NULL, TLS1_2_VERSION, NULL), tls_server_ssl(s)),
       "ECDSA certificate, TLS 1.2: handshake");
    is_str(SSL_CIPHER_get_name(SSL_get_current_cipher(p.s.ssl)), "ECDHE-ECDSA-CHACHA20-POLY1305",
           "tls_ciphers is applied");
    is_str(SSL_get_curve_name(SSL_get_curve_id(p.s.ssl)), "P-256", "tls_curves is applied");
    is_str(peer_cn(&p.c, cn, sizeof(cn)), "default.test", "ECDSA certificate: CN");
    X509 *x = SSL_get_peer_certificate(p.c.ssl);
    EVP_PKEY *k = X509_get_pubkey(x);
    is_int(EVP_PKEY_id(k), EVP_PKEY_EC, "ECDSA certificate: EC key");
    EVP_PKEY_free(k);
    X509_free(x);
    pair_fini(&p);
    tls_server_unref(&s);
    SSL_CTX_free(ctx);
    cfg_free(cfg);
}

static void test_tickets(void)
{
    const int64_t period = 3600 * 1000;
    char err[512] = "";
    struct tls_tickets *t = NULL;
    is_int(tls_tickets_new(period, NULL, &t, err, sizeof(err)), 0, "tls_tickets_new");
    tls_tickets_tick(t, 0); /* starts the clock */
    SSL_SESSION_free(take_session());
    struct config *cfg = cfg_new("default-rsa.pem", "default-rsa.key", NULL);
    cfg_site(cfg, "a.example", "a.pem", "a.key", NULL);
    struct tls_server *gen1 = server_new(cfg, t, true);
    SSL_CTX *ctx = raw_ctx();

    for (int v = 0; v < 2; v++) {
        uint16_t maxv = v == 0 ? TLS1_3_VERSION : TLS1_2_VERSION;
        const char *vn = v == 0 ? "1.3" : "1.2";
        is_int(raw_resume(ctx, gen1, "default.test", maxv, NULL), 0, "%s: first: full", vn);
        SSL_SESSION *sess = take_session();
        ok(sess != NULL, "%s: the client got a ticket", vn);
        is_int(raw_resume(ctx, gen1, "default.test", maxv, sess), 1, "%s: resumed", vn);
        struct tls_server *gen2 = server_new(cfg, t, true);
        is_int(raw_resume(ctx, gen2, "default.test", maxv, sess), 1,
               "%s: resumed on the next tls_server generation", vn);
        is_int(raw_resume(ctx, gen2, "a.example", maxv, sess), 0,
               "%s: not resumed on another certificate's context", vn);
        tls_server_unref(&gen2);
        SSL_SESSION_free(sess);
        SSL_SESSION_free(take_session());
    }

    /* a ticket on a site's context resumes there */
    is_int(raw_resume(ctx, gen1, "a.example", 0, NULL), 0, "site: first: full");
    SSL_SESSION *sess = take_session();
    is_int(raw_resume(ctx, gen1, "a.example", 0, sess), 1, "site: resumed");
    SSL_SESSION_free(sess);

    /* rotation, with TLS 1.2 where renewal is visible: a ticket from the previous key is
     * renewed (the client gets a new one), one from the current key is not */
    is_int(raw_resume(ctx, gen1, "default.test", TLS1_2_VERSION, NULL), 0, "rotation: full");
    SSL_SESSION *k0 = take_session();
    tls_tickets_tick(t, period - 1);
    is_int(raw_resume(ctx, gen1, "default.test", TLS1_2_VERSION, k0), 1, "no rotation yet");
    tls_tickets_tick(t, period);
    sessions_seen = 0;
    is_int(raw_resume(ctx, gen1, "default.test", TLS1_2_VERSION, k0), 1,
           "resumed after one rotation");
    is_int(sessions_seen, 1, "ticket from the previous key renewed");
    SSL_SESSION *k1 = take_session();
    sessions_seen = 0;
    is_int(raw_resume(ctx, gen1, "default.test", TLS1_2_VERSION, k1), 1, "renewed ticket resumes");
    is_int(sessions_seen, 0, "ticket from the current key not renewed");
    is_int(raw_resume(ctx, gen1, "default.test", 0, k0 /* 1.2 session offered to 1.3 */), 0,
           "a 1.2 session is not resumed as 1.3");
    tls_tickets_tick(t, 2 * period);
    is_int(raw_resume(ctx, gen1, "default.test", TLS1_2_VERSION, k0), 0,
           "not resumed after two rotations (full handshake instead)");
    is_int(raw_resume(ctx, gen1, "default.test", TLS1_2_VERSION, k1), 1,
           "the key of the previous period still decrypts");
    tls_tickets_tick(t, 5 * period); /* the timer was late: both keys are stale */
    is_int(raw_resume(ctx, gen1, "default.test", TLS1_2_VERSION, k1), 0,
           "a late timer drops both keys");
    SSL_SESSION_free(k0);
    SSL_SESSION_free(k1);
    SSL_SESSION_free(take_session());
    tls_server_unref(&gen1);

    /* tickets off */
    cfg->tls_session_tickets = false;
    struct tls_server *off = server_new(cfg, t, true);
    sessions_seen = 0;
    is_int(raw_resume(ctx, off, "default.test", 0, NULL), 0, "tickets off: full handshake");
    is_int(sessions_seen, 0, "tickets off: TLS 1.3 client gets no ticket");
    is_int(raw_resume(ctx, off, "default.test", TLS1_2_VERSION, NULL), 0, "tickets off: 1.2");
    sess = take_session();
    is_int(raw_resume(ctx, off, "default.test", TLS1_2_VERSION, sess), 0,
           "tickets off: no session-ID resumption either");
    SSL_SESSION_free(sess);
    SSL_SESSION_free(take_session());
    tls_server_unref(&off);
    cfg->tls_session_tickets = true;

    /* tickets NULL: BoringSSL's own keys, per generation */
    struct tls_server *own = server_new(cfg, NULL, true);
    is_int(raw_resume(ctx, own, "default.test", 0, NULL), 0, "own keys: full");
    sess = take_session();
    is_int(raw_resume(ctx, own, "default.test", 0, sess), 1, "own keys: resumed");
    SSL_SESSION_free(sess);
    SSL_SESSION_free(take_session());
    tls_server_unref(&own);
    tls_tickets_free(&t);
    ok(t == NULL, "tls_tickets_free clears the pointer");

    /* a key file shared by two nodes; never rotated */
    uint8_t key[80];
    ASSERT(RAND_bytes(key, sizeof(key)) == 1);
    write_file("ticket.key", key, sizeof(key));
    char *kf = cpath("ticket.key");
    struct tls_tickets *t1 = NULL;
    struct tls_tickets *t2 = NULL;
    is_int(tls_tickets_new(1000, kf, &t1, err, sizeof(err)), 0, "key file: node 1 (%s)", err);
    is_int(tls_tickets_new(1000, kf, &t2, err, sizeof(err)), 0, "key file: node 2");
    tls_tickets_tick(t1, 0);
    struct tls_server *n1 = server_new(cfg, t1, true);
    struct tls_server *n2 = server_new(cfg, t2, true);
    is_int(raw_resume(ctx, n1, "default.test", 0, NULL), 0, "key file: full on node 1");
    sess = take_session();
    tls_tickets_tick(t1, 10000);
    tls_tickets_tick(t1, 20000);
    is_int(raw_resume(ctx, n2, "default.test", 0, sess), 1, "key file: resumed on node 2");
    is_int(raw_resume(ctx, n1, "default.test", 0, sess), 1, "key file: never rotated");
    SSL_SESSION_free(sess);
    SSL_SESSION_free(take_session());
    tls_server_unref(&n1);
    tls_server_unref(&n2);
    tls_tickets_free(&t1);
    tls_tickets_free(&t2);
    free(kf);
    write_file("short.key", key, 79);
    kf = cpath("short.key");
    is_int(tls_tickets_new(1000, kf, &t1, err, sizeof(err)), OP_EINVAL, "key file of 79 bytes");
    ok(strstr(err, kf) != NULL && strstr(err, "80 bytes") != NULL, "error names it: %s", err);
    free(kf);
    kf = cpath("missing.key");
    is_int(tls_tickets_new(1000, kf, &t1, err, sizeof(err)), OP_EINVAL, "missing key file");
    ok(strstr(err, kf) != NULL, "error names it: %s", err);
    free(kf);

    SSL_CTX_free(ctx);
    cfg_free(cfg);
}

/* A timer thread rotates (every tick is a new period) while this thread handshakes and
 * resumes: every handshake must complete, resumed or not (run under TSan to see the lock). */
static atomic_bool ticking;

static void *ticker(void *arg)
{
    struct tls_tickets *t = arg;
    for (int64_t now = 0; atomic_load(&ticking); now += 1000)
        tls_tickets_tick(t, now);
    return NULL;
}

static void test_tickets_threads(void)
{
    char err[256];
    struct tls_tickets *t = NULL;
    ASSERT(tls_tickets_new(1000, NULL, &t, err, sizeof(err)) == 0);
    struct config *cfg = cfg_new("default-ec.pem", "default-ec.key", NULL);
    struct tls_server *s = server_new(cfg, t, true);
    SSL_CTX *ctx = raw_ctx();
    SSL_SESSION_free(take_session());
    atomic_store(&ticking, true);
    pthread_t th;
    ASSERT(pthread_create(&th, NULL, ticker, t) == 0);
    int done = 0;
    for (int i = 0; i < 40; i++) {
        SSL_SESSION *sess = take_session();
        done += raw_resume(ctx, s, "default.test", i % 2 ? TLS1_2_VERSION : 0, sess) >= 0;
        SSL_SESSION_free(sess);
    }
    atomic_store(&ticking, false);
    pthread_join(th, NULL);
    is_int(done, 40, "handshakes during rotations from another thread all complete");
    SSL_SESSION_free(take_session());
    SSL_CTX_free(ctx);
    tls_server_unref(&s);
    tls_tickets_free(&t);
    cfg_free(cfg);
}

static void test_client_cache(void)
{
    struct config *cfg = cfg_new("default-ec.pem", "default-ec.key", NULL);
    struct tls_server *s = server_new(cfg, NULL, true);
    struct tls_client *c = client_new("ca.pem", true);
    struct pair p;
    ok(pair_handshake(&p, tls_client_ssl(c, "default.test", NULL), tls_server_ssl(s)),
       "tls_client: first handshake");
    ok(!tls_conn_resumed(&p.c), "tls_client: first not resumed");
    pair_fini(&p);
    for (int i = 0; i < 3; i++) {
        ok(pair_handshake(&p, tls_client_ssl(c, "default.test", NULL), tls_server_ssl(s)),
           "tls_client: handshake %d", i + 2);
        ok(tls_conn_resumed(&p.c), "tls_client: resumed its cached session (%d)", i + 2);
        pair_fini(&p);
    }
    ok(pair_handshake(&p, tls_client_ssl(c, "localhost", NULL), tls_server_ssl(s)),
       "tls_client: another name");
    ok(!tls_conn_resumed(&p.c), "tls_client: sessions are per name");
    pair_fini(&p);
    tls_client_free(&c);
    ok(c == NULL, "tls_client_free clears the pointer");
    tls_server_unref(&s);
    cfg_free(cfg);
}

static void test_ocsp(void)
{
    struct config *cfg = cfg_new("default-rsa.pem", "default-rsa.key", "ocsp.der");
    cfg_site(cfg, "a.example", "a.pem", "a.key", NULL);
    struct tls_server *s = server_new(cfg, NULL, true);
    char *path = cpath("ocsp.der");
    FILE *f = fopen(path, "rb");
    uint8_t want[8192];
    size_t want_len = f ? fread(want, 1, sizeof(want), f) : 0;
    if (f)
        fclose(f);
    free(path);
    SSL_CTX *ctx = raw_ctx();
    SSL *ssl = raw_ssl(ctx, "default.test", 0, NULL);
    SSL_enable_ocsp_stapling(ssl);
    struct pair p;
    ok(pair_handshake(&p, ssl, tls_server_ssl(s)), "OCSP: handshake");
    const uint8_t *got = NULL;
    size_t got_len = 0;
    SSL_get0_ocsp_response(p.c.ssl, &got, &got_len);
    ok(want_len > 0 && got_len == want_len && memcmp(got, want, want_len) == 0,
       "OCSP: the stapled response is the file (%zu bytes)", got_len);
    pair_fini(&p);
    ok(pair_handshake(&p, raw_ssl(ctx, "default.test", 0, NULL), tls_server_ssl(s)),
       "OCSP: a client that did not ask");
    SSL_get0_ocsp_response(p.c.ssl, &got, &got_len);
    is_int(got_len, 0, "OCSP: nothing stapled unasked");
    pair_fini(&p);
    ssl = raw_ssl(ctx, "a.example", 0, NULL);
    SSL_enable_ocsp_stapling(ssl);
    ok(pair_handshake(&p, ssl, tls_server_ssl(s)), "OCSP: site with its own certificate");
    SSL_get0_ocsp_response(p.c.ssl, &got, &got_len);
    is_int(got_len, 0, "OCSP: the default's staple is not sent with another certificate");
    pair_fini(&p);
    SSL_CTX_free(ctx);
    tls_server_unref(&s);
    cfg_free(cfg);
}

static void test_errors(void)
{
    static const char garbage[] = "this is not PEM\n";
    write_file("garbage.pem", garbage, sizeof(garbage) - 1);
    write_file("empty.der", "", 0);
    write_file("text.der", garbage, sizeof(garbage) - 1);
    char *p;

    server_fails(cfg_new("default-rsa.pem", "a.key", NULL), "tls_certificate_key",
                 "a.key: key does not match the certificate", "key mismatch");
    struct config *c = cfg_new("default-rsa.pem", "default-rsa.key", NULL);
    cfg_site(c, "a.example", "a.pem", "wild.key", NULL);
    server_fails(c, "site a.example: tls_certificate_key ", "wild.key: key does not match",
                 "site key mismatch");
    p = cpath("nope.pem");
    server_fails(cfg_new("nope.pem", "default-rsa.key", NULL), p, "cannot open",
                 "missing certificate");
    free(p);
    p = cpath("nope.key");
    server_fails(cfg_new("default-rsa.pem", "nope.key", NULL), p, "cannot open", "missing key");
    free(p);
    p = cpath("garbage.pem");
    server_fails(cfg_new("garbage.pem", "default-rsa.key", NULL), p, "no PEM certificate",
                 "garbage certificate");
    server_fails(cfg_new("default-rsa.pem", "garbage.pem", NULL), p, "no PEM private key",
                 "garbage key");
    free(p);
    c = cfg_new("default-rsa.pem", "default-rsa.key", NULL);
    cfg_site(c, "x.example", "garbage.pem", "a.key", NULL);
    server_fails(c, "site x.example: tls_certificate ", "garbage.pem", "site garbage cert");
    c = cfg_new("default-rsa.pem", "default-rsa.key", NULL);
    cfg_site(c, "x.example", "a.pem", NULL, NULL);
    server_fails(c, "site x.example: tls_certificate ", "tls_certificate_key is not set",
                 "site certificate without key");
    p = cpath("nope.der");
    server_fails(cfg_new("default-rsa.pem", "default-rsa.key", "nope.der"), p, "tls_ocsp_staple",
                 "missing OCSP file");
    free(p);
    p = cpath("empty.der");
    server_fails(cfg_new("default-rsa.pem", "default-rsa.key", "empty.der"), p, "empty",
                 "empty OCSP file");
    free(p);
    p = cpath("text.der");
    server_fails(cfg_new("default-rsa.pem", "default-rsa.key", "text.der"), p, "not a DER",
                 "text OCSP file");
    free(p);
    c = cfg_new("default-rsa.pem", "default-rsa.key", NULL);
    cfg_site(c, "a.example", "a.pem", "a.key", "empty.der");
    server_fails(c, "site a.example: tls_ocsp_staple", "empty.der", "site OCSP file");
    c = cfg_new("default-rsa.pem", "default-rsa.key", NULL);
    c->tls_ciphers = xstrdup("ECDHE-RSA-AES128-GCM-SHA256:NO-SUCH-CIPHER");
    server_fails(c, "tls_ciphers ECDHE-RSA-AES128-GCM-SHA256:NO-SUCH-CIPHER", NULL,
                 "bad cipher list");
    c = cfg_new("default-rsa.pem", "default-rsa.key", NULL);
    c->tls_curves = xstrdup("X25519:P-999");
    server_fails(c, "tls_curves X25519:P-999", NULL, "bad curve list");
    c = cfg_new("default-rsa.pem", "default-rsa.key", NULL);
    c->tls_min_version = xstrdup("1.1");
    server_fails(c, "tls_min_version 1.1", NULL, "bad minimum version");
    server_fails(cfg_new(NULL, NULL, NULL), "tls_certificate", NULL, "no certificate");

    char err[512] = "";
    struct tls_client *cl = NULL;
    p = cpath("nope-ca.pem");
    is_int(tls_client_new(p, true, &cl, err, sizeof(err)), OP_EINVAL, "client: missing CA file");
    ok(cl == NULL && strstr(err, p) != NULL, "client: error names it: %s", err);
    free(p);
    p = cpath("garbage.pem");
    is_int(tls_client_new(p, true, &cl, err, sizeof(err)), OP_EINVAL, "client: garbage CA file");
    ok(cl == NULL && strstr(err, p) != NULL, "client: error names it: %s", err);
    free(p);
}

static void verify_case(const char *ca, bool verify, const char *cert, const char *key,
                        const char *sni, const char *name, bool want, const char *want_err,
                        const char *what)
{
    struct config *cfg = cfg_new(cert, key, NULL);
    struct tls_server *s = server_new(cfg, NULL, true);
    struct tls_client *c = client_new(ca, verify);
    struct pair p;
    bool done = pair_handshake(&p, tls_client_ssl(c, sni, name), tls_server_ssl(s));
    ok(done == want, "verify: %s: %s", what, want ? "passes" : "fails");
    if (!want) {
        ok(p.c.fatal, "verify: %s: the client connection is fatal", what);
        ok(strstr(p.cerr, want_err) != NULL, "verify: %s: reason \"%s\"", what, p.cerr);
    }
    pair_fini(&p);
    tls_client_free(&c);
    tls_server_unref(&s);
    cfg_free(cfg);
}

static void test_verify(void)
{
    verify_case("ca.pem", true, "default-rsa.pem", "default-rsa.key", "default.test", NULL, true,
                NULL, "good CA and name");
    verify_case("ca.pem", true, "default-rsa.pem", "default-rsa.key", "localhost", "localhost",
                true, NULL, "second SAN");
    verify_case("ca.pem", true, "default-rsa.pem", "default-rsa.key", "default.test", "other.test",
                false, "Hostname mismatch", "wrong name");
    verify_case("other-ca.pem", true, "default-rsa.pem", "default-rsa.key", "default.test", NULL,
                false, "certificate verify failed", "unknown CA");
    verify_case("other-ca.pem", false, "default-rsa.pem", "default-rsa.key", "default.test", NULL,
                true, NULL, "unknown CA, verify off");
    verify_case("ca.pem", false, "default-rsa.pem", "default-rsa.key", "default.test", "other.test",
                true, NULL, "wrong name, verify off");
    verify_case("ca.pem", true, "ip.pem", "ip.key", NULL, "127.0.0.1", true, NULL, "IP SAN");
    verify_case("ca.pem", true, "ip.pem", "ip.key", "127.0.0.1", NULL, true, NULL,
                "IP literal as SNI (not sent) and name");
    verify_case("ca.pem", true, "ip.pem", "ip.key", NULL, "127.0.0.2", false, "IP address",
                "wrong IP");
    verify_case("ca.pem", true, "chain.pem", "chain.key", "chain.example", NULL, true, NULL,
                "chain through the intermediate");
    verify_case("int.pem", true, "a.pem", "a.key", "a.example", NULL, false,
                "certificate verify failed", "issuer not trusted");

    /* the system store: loads, and does not trust the test CA */
    if (access("/etc/ssl/certs", R_OK) == 0) {
        verify_case(NULL, true, "default-rsa.pem", "default-rsa.key", "default.test", NULL, false,
                    "certificate verify failed", "system store");
    }
    /* an IP literal is not sent as SNI */
    struct config *cfg = cfg_new("ip.pem", "ip.key", NULL);
    struct tls_server *s = server_new(cfg, NULL, true);
    struct tls_client *c = client_new("ca.pem", true);
    struct pair p;
    ok(pair_handshake(&p, tls_client_ssl(c, "127.0.0.1", NULL), tls_server_ssl(s)),
       "IP literal: handshake");
    ok(tls_conn_sni(&p.s) == NULL, "IP literal: no SNI sent");
    pair_fini(&p);
    tls_client_free(&c);
    tls_server_unref(&s);
    cfg_free(cfg);
}

static void test_data(void)
{
    struct config *cfg = cfg_new("default-ec.pem", "default-ec.key", NULL);
    struct tls_server *s = server_new(cfg, NULL, true);
    struct tls_client *c = client_new("ca.pem", true);
    struct pair p;
    ok(pair_handshake(&p, tls_client_ssl(c, "default.test", NULL), tls_server_ssl(s)),
       "data: handshake");
    size_t n = 1 << 20;
    uint8_t *data = xmalloc(n);
    ASSERT(RAND_bytes(data, n) == 1);
    struct tls_conn *ends[2] = {&p.c, &p.s};
    for (int dir_ = 0; dir_ < 2; dir_++) {
        struct tls_conn *from = ends[dir_];
        struct tls_conn *to = ends[1 - dir_];
        const char *what = dir_ == 0 ? "client to server" : "server to client";
        is_int(tls_conn_write(from, data, n), TLS_OK, "data %s: write 1 MiB", what);
        ok(evbuffer_get_length(from->rout) > n, "data %s: ciphertext queued", what);
        struct evbuffer *plain = evbuffer_new();
        enum tls_status st = TLS_OK;
        /* feed the ciphertext in 1000-byte slices: records split anywhere */
        while (evbuffer_get_length(from->rout) > 0 && st != TLS_ERROR) {
            evbuffer_remove_buffer(from->rout, to->rin, 1000);
            st = tls_conn_read(to, plain);
        }
        ok(st == TLS_OK || st == TLS_WANT, "data %s: read status %d", what, (int)st);
        ok(evbuffer_get_length(plain) == n && memcmp(evbuffer_pullup(plain, -1), data, n) == 0,
           "data %s: 1 MiB arrives intact (%zu bytes)", what, evbuffer_get_length(plain));
        evbuffer_free(plain);
    }
    tls_conn_shutdown(&p.c);
    evbuffer_add_buffer(p.s.rin, p.c.rout);
    struct evbuffer *plain = evbuffer_new();
    is_int(tls_conn_read(&p.s, plain), TLS_EOF, "close_notify: TLS_EOF");
    evbuffer_free(plain);
    free(data);
    pair_fini(&p);
    tls_client_free(&c);
    tls_server_unref(&s);
    cfg_free(cfg);
}

int main(void)
{
    const char *src = getenv("OUTPOST_SRC") ? getenv("OUTPOST_SRC") : ".";
    snprintf(dir, sizeof(dir), "/tmp/outpost-tls-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "'%s/scripts/gen-test-certs.sh' '%s' >/dev/null", src, dir);
    int rc = system(cmd);
    ok(rc == 0,
       "scripts/gen-test-certs.sh %s (exit %d; run from the source tree or set "
       "OUTPOST_SRC)",
       dir, rc);
    if (rc != 0)
        return tap_done();

    test_default_cert();
    test_sni();
    test_alpn();
    test_versions();
    test_tickets();
    test_tickets_threads();
    test_client_cache();
    test_ocsp();
    test_errors();
    test_verify();
    test_data();

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    ASSERT(system(cmd) == 0);
    return tap_done();
}
