/*
 * edge/h3/gtls.c: the TLS side of QUIC, with GnuTLS (ngtcp2's crypto backend on Debian; the
 * TCP listeners use BoringSSL, see STACK.md). The same PEM certificates and keys as the TCP
 * listeners: one credentials object per distinct certificate, the node's default first, and
 * the one of the site that conf_site_find() picks for the client's SNI (exact name, longest
 * "*.suffix", "*"), so both stacks present the same certificate for a name. No SNI: the
 * default. Built whole from a config on the main or control thread, immutable afterwards,
 * reference-counted like struct tls_server so that a SIGHUP can swap it under live
 * connections.
 */
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "edge/h3/quic_int.h"
#include "lib/util.h"

/* TLS 1.3 only (RFC 9001 4.2), without the middlebox compatibility mode (RFC 9001 8.4). */
#define H3_PRIORITY                                                                                \
    "%DISABLE_TLS13_COMPAT_MODE:NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:"           \
    "+AES-256-GCM:+CHACHA20-POLY1305"

struct h3_tls {
    _Atomic int refs;
    const struct config *cfg;
    gnutls_priority_t prio;
    gnutls_certificate_credentials_t *creds; /* [0]: the default certificate */
    size_t n_creds;
    size_t *site_cred; /* per site of cfg: index into creds */
};

static void tls_free(struct h3_tls *t)
{
    for (size_t i = 0; i < t->n_creds; i++)
        gnutls_certificate_free_credentials(t->creds[i]);
    if (t->prio)
        gnutls_priority_deinit(t->prio);
    free(t->creds);
    free(t->site_cred);
    free(t);
}

static int cred_load(gnutls_certificate_credentials_t *out, const struct conf_site *site,
                     const struct conf_site_opts *o, char *err, size_t errlen)
{
    char pre[300] = "";
    if (site != NULL)
        snprintf(pre, sizeof(pre), "site %s: ", site->n_names > 0 ? site->names[0] : "(unnamed)");
    gnutls_certificate_credentials_t c;
    if (gnutls_certificate_allocate_credentials(&c) != 0)
        util_oom(0);
    int rv = gnutls_certificate_set_x509_key_file(c, o->tls_certificate, o->tls_certificate_key,
                                                  GNUTLS_X509_FMT_PEM);
    if (rv < 0) {
        snprintf(err, errlen, "%sHTTP/3: tls_certificate %s / tls_certificate_key %s: %s", pre,
                 o->tls_certificate, o->tls_certificate_key, gnutls_strerror(rv));
        gnutls_certificate_free_credentials(c);
        return OP_EINVAL;
    }
    if (o->tls_ocsp_staple != NULL) {
        rv = gnutls_certificate_set_ocsp_status_request_file(c, o->tls_ocsp_staple, 0);
        if (rv < 0) {
            snprintf(err, errlen, "%sHTTP/3: tls_ocsp_staple %s: %s", pre, o->tls_ocsp_staple,
                     gnutls_strerror(rv));
            gnutls_certificate_free_credentials(c);
            return OP_EINVAL;
        }
    }
    *out = c;
    return 0;
}

static bool same_cert(const struct conf_site_opts *a, const struct conf_site_opts *b)
{
    return strcmp(a->tls_certificate, b->tls_certificate) == 0 &&
           strcmp(a->tls_certificate_key, b->tls_certificate_key) == 0 &&
           (a->tls_ocsp_staple == b->tls_ocsp_staple ||
            (a->tls_ocsp_staple && b->tls_ocsp_staple &&
             strcmp(a->tls_ocsp_staple, b->tls_ocsp_staple) == 0));
}

int h3_tls_new(const struct config *cfg, struct h3_tls **out, char *err, size_t errlen)
{
    const struct conf_site_opts *d = &cfg->site_defaults;
    if (d->tls_certificate == NULL || d->tls_certificate_key == NULL) {
        snprintf(err, errlen, "h3_listen needs tls_certificate and tls_certificate_key");
        return OP_EINVAL;
    }
    struct h3_tls *t = xcalloc(1, sizeof(*t));
    atomic_init(&t->refs, 1);
    t->cfg = cfg;
    t->creds = xcalloc(cfg->n_sites + 1, sizeof(*t->creds));
    t->site_cred = xcalloc(cfg->n_sites + 1, sizeof(*t->site_cred));
    const struct conf_site_opts **seen = xcalloc(cfg->n_sites + 1, sizeof(*seen));
    int rc = gnutls_priority_init(&t->prio, H3_PRIORITY, NULL);
    if (rc < 0) {
        snprintf(err, errlen, "HTTP/3: TLS priority: %s", gnutls_strerror(rc));
        rc = OP_EINVAL;
    } else {
        rc = cred_load(&t->creds[0], NULL, d, err, errlen);
    }
    if (rc == 0)
        seen[t->n_creds++] = d;
    for (size_t s = 0; s < cfg->n_sites && rc == 0; s++) {
        const struct conf_site_opts *o = &cfg->sites[s].opts;
        size_t i = 0;
        while (i < t->n_creds && !same_cert(seen[i], o))
            i++;
        if (i == t->n_creds) {
            rc = cred_load(&t->creds[i], &cfg->sites[s], o, err, errlen);
            if (rc == 0)
                seen[t->n_creds++] = o;
        }
        t->site_cred[s] = i;
    }
    free(seen);
    if (rc != 0) {
        tls_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

struct h3_tls *h3_tls_ref(struct h3_tls *t)
{
    atomic_fetch_add(&t->refs, 1);
    return t;
}

void h3_tls_unref(struct h3_tls **tp)
{
    struct h3_tls *t = *tp;
    *tp = NULL;
    if (t != NULL && atomic_fetch_sub(&t->refs, 1) == 1)
        tls_free(t);
}

/* After the ClientHello: switch to the certificate of the site the SNI names. */
static int client_hello_cb(gnutls_session_t s)
{
    struct h3_conn_tls *ct = gnutls_session_get_ptr(s);
    const struct h3_tls *t = ct->tls;
    char name[256];
    size_t len = sizeof(name);
    unsigned type;
    if (gnutls_server_name_get(s, name, &len, &type, 0) != 0 || type != GNUTLS_NAME_DNS)
        return 0; /* the default certificate, set at creation */
    const struct conf_site *site = conf_site_find(t->cfg, str_make(name, strnlen(name, len)));
    if (site == NULL)
        return 0;
    size_t idx = t->site_cred[site - t->cfg->sites];
    return gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, t->creds[idx]);
}

int h3_tls_session(struct h3_tls *t, struct h3_conn_tls *ct, gnutls_session_t *out)
{
    gnutls_session_t s;
    if (gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NO_AUTO_SEND_TICKET | GNUTLS_NO_END_OF_EARLY_DATA) !=
        0)
        return -1;
    static const uint8_t h3[] = "h3";
    gnutls_datum_t alpn = {(unsigned char *)h3, 2};
    if (gnutls_priority_set(s, t->prio) != 0 || ngtcp2_crypto_gnutls_configure_server_session(s) ||
        gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, t->creds[0]) != 0 ||
        gnutls_alpn_set_protocols(s, &alpn, 1, GNUTLS_ALPN_MANDATORY) != 0) {
        gnutls_deinit(s);
        return -1;
    }
    ct->tls = t;
    gnutls_session_set_ptr(s, ct);
    gnutls_handshake_set_post_client_hello_function(s, client_hello_cb);
    *out = s;
    return 0;
}
