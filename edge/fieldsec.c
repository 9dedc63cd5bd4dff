/*
 * edge/fieldsec.c: building an exchange's request from an HTTP/2 or HTTP/3 field section
 * (RFC 9113 8.3, RFC 9114 4.3). Both front ends decode fields with their library (nghttp2,
 * nghttp3) and feed them here one by one; fieldsec_finish() then checks the request and fills
 * in what the pseudo-header fields did not, so that both protocols accept and refuse exactly
 * the same requests.
 */
#include <stdio.h>
#include <string.h>

#include "edge/edge_int.h"
#include "lib/util.h"

static struct str lower_dup(struct arena *a, const uint8_t *p, size_t len)
{
    struct str d = arena_strdup(a, str_make((const char *)p, len));
    char *q = (char *)d.p;
    for (size_t i = 0; i < d.len; i++)
        if (q[i] >= 'A' && q[i] <= 'Z')
            q[i] |= 0x20;
    return d;
}

static bool name_is(const uint8_t *name, size_t len, const char *lit)
{
    size_t n = strlen(lit);
    return len == n && memcmp(name, lit, n) == 0;
}

static void field_pseudo(struct exchange *x, struct fieldsec *fs, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen)
{
    struct str v = arena_strdup(&x->arena, str_make((const char *)value, valuelen));
    if (fs->regular_seen)
        fs->malformed = true; /* pseudo-header fields come first */
    if (name_is(name, namelen, ":method"))
        x->method = v;
    else if (name_is(name, namelen, ":path"))
        x->path = v;
    else if (name_is(name, namelen, ":authority"))
        x->authority = lower_dup(&x->arena, value, valuelen);
    else if (!name_is(name, namelen, ":scheme"))
        fs->malformed = true; /* :protocol (extended CONNECT) or unknown */
}

static void field_regular(struct exchange *x, struct fieldsec *fs, const uint8_t *name,
                          size_t namelen, const uint8_t *value, size_t valuelen)
{
    struct str v = str_make((const char *)value, valuelen);
    fs->regular_seen = true;
    if (name_is(name, namelen, "cookie")) {
        if (fs->cookie.len == 0)
            fs->cookie = arena_strdup(&x->arena, v);
        else
            fs->cookie = arena_printf(&x->arena, "%.*s; %.*s", (int)fs->cookie.len, fs->cookie.p,
                                      (int)v.len, v.p);
        return;
    }
    struct str n = arena_strdup(&x->arena, str_make((const char *)name, namelen));
    v = arena_strdup(&x->arena, v);
    if (name_is(name, namelen, "host"))
        fs->host_hdr = v;
    http_headers_add(&x->req, n, v);
}

bool fieldsec_add(struct exchange *x, struct fieldsec *fs, const struct config *cfg,
                  const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen)
{
    /* Decoded sizes (name + value + 32 per field, RFC 9113 6.5.2 / RFC 9114 4.2.2): what an
     * HPACK or QPACK bomb inflates. */
    fs->bytes += namelen + valuelen + 32;
    if (fs->bytes > cfg->max_header_bytes * FIELDSEC_BOMB_FACTOR)
        return false;
    if (fs->too_large)
        return true;
    if (fs->bytes > cfg->max_header_bytes) {
        fs->too_large = true;
        return true;
    }
    if (namelen > 0 && name[0] == ':') {
        field_pseudo(x, fs, name, namelen, value, valuelen);
        return true;
    }
    if (++fs->count > cfg->max_headers) {
        fs->too_large = true;
        return true;
    }
    field_regular(x, fs, name, namelen, value, valuelen);
    return true;
}

static bool path_ok(const struct exchange *x)
{
    if (x->path.len == 0)
        return false;
    if (x->path.p[0] == '/')
        return true;
    return str_eq(x->path, STR_LIT("*")) && str_eq(x->method, STR_LIT("OPTIONS"));
}

static enum fieldsec_verdict refuse(struct fieldsec *fs, enum reject why, int status,
                                    const char *msg)
{
    fs->why = why;
    fs->status = status;
    fs->msg = msg;
    return FIELDSEC_REFUSE;
}

enum fieldsec_verdict fieldsec_finish(struct exchange *x, struct fieldsec *fs,
                                      const struct config *cfg, bool tls, bool end_stream)
{
    x->http_minor = 1;
    x->scheme = tls ? STR_LIT("https") : STR_LIT("http");
    if (fs->too_large)
        return refuse(fs, REJECT_HEADERS_TOO_LARGE, 431, "request header fields too large");
    if (fs->malformed || x->method.len == 0 || !path_ok(x))
        return FIELDSEC_MALFORMED;
    if (x->authority.len && fs->host_hdr.len && !str_caseeq(x->authority, fs->host_hdr))
        return FIELDSEC_MALFORMED; /* Host must identify the same entity as :authority */
    if (x->authority.len == 0 && fs->host_hdr.len)
        x->authority = lower_dup(&x->arena, (const uint8_t *)fs->host_hdr.p, fs->host_hdr.len);
    if (fs->cookie.len)
        http_headers_add(&x->req, STR_LIT("cookie"), fs->cookie);
    if (str_eq(x->method, STR_LIT("CONNECT")))
        return refuse(fs, REJECT_METHOD, 400, "CONNECT is not supported");
    if (x->authority.len == 0)
        return refuse(fs, REJECT_HOST, 400, "no :authority nor Host");
    if (x->path.len > cfg->max_uri_length)
        return refuse(fs, REJECT_URI_TOO_LONG, 414, "URI too long");
    const struct http_header *e = http_headers_get(&x->req, "expect");
    x->expect_continue = e && str_caseeq(e->value, STR_LIT("100-continue"));
    if (end_stream) {
        x->req_content_length = 0;
        x->req_body_done = true;
        return FIELDSEC_OK;
    }
    x->req_has_body = true;
    x->req_content_length = -1;
    const struct http_header *cl = http_headers_get(&x->req, "content-length");
    uint64_t n;
    if (cl && str_to_u64(cl->value, &n) == 0)
        x->req_content_length = (int64_t)n; /* the library checks it against the DATA */
    if (x->req_content_length > 0 && (uint64_t)x->req_content_length > cfg->max_body_size)
        return refuse(fs, REJECT_BODY_TOO_LARGE, 413, "request body too large");
    return FIELDSEC_OK;
}

static bool connection_specific(struct str n)
{
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection",
                                        "transfer-encoding", "upgrade"};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        if (str_caseeq_cstr(n, names[i]))
            return true;
    return false;
}

size_t fieldsec_response(struct exchange *x, struct fieldsec_field *out, size_t max)
{
    size_t n = 0;
    char *status = arena_alloc(&x->arena, 4);
    snprintf(status, 4, "%03u", (unsigned)x->status % 1000u);
    out[n++] = (struct fieldsec_field){STR_LIT(":status"), str_make(status, 3)};
    for (size_t i = 0; i < x->resp.n && n + 1 < max; i++) {
        const struct http_header *h = &x->resp.v[i];
        if (connection_specific(h->name) || str_caseeq_cstr(h->name, "content-length"))
            continue;
        out[n++] = (struct fieldsec_field){
            lower_dup(&x->arena, (const uint8_t *)h->name.p, h->name.len), h->value};
    }
    if (x->resp_length >= 0 && x->status >= 200 && x->status != 204 && x->status != 304 &&
        n < max) {
        char *cl = arena_alloc(&x->arena, 24);
        out[n++] = (struct fieldsec_field){STR_LIT("content-length"),
                                           str_make(cl, str_fmt_u64((uint64_t)x->resp_length, cl))};
    }
    return n;
}
