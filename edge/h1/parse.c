/*
 * edge/h1/parse.c: the strict HTTP/1.1 parsers (RFC 9112): request heads for the front end,
 * response heads for the upstream client, and the incremental chunked-body decoder.
 *
 * Pure functions over the caller's buffer, callable from any thread: nothing is allocated,
 * nothing is written except the caller's result structs, header names and values point into
 * the buffer. The head parsers make one forward pass; every byte class test is a lookup in
 * one 256-entry table, and the fields that decide framing (Host, Content-Length,
 * Transfer-Encoding, Connection, Expect) are recognised by length and first byte as each
 * field line completes, so no second walk over the headers is needed.
 *
 * The head parsers are restartable only from the beginning: on H1_INCOMPLETE the caller reads
 * more and calls again with the whole head so far (heads are small; picohttpparser does the
 * same). Syntax errors are reported as soon as the offending byte has been read, so a
 * malicious client cannot make us buffer a head that is already known to be bad. The chunked
 * decoder instead carries its state in struct h1_chunked, because bodies are large and
 * arrive in pieces.
 *
 * Strictness is the point (see h1.h): the edge must never accept a message that an origin
 * behind it could frame differently.
 */
#include <limits.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "edge/h1/h1.h"

/* Byte classes, one bit each, looked up in cls[] (written out from these definitions). */
enum {
    C_TCHAR = 1, /* RFC 9110 tchar */
    C_TARGET = 2, /* request-target byte: visible ASCII 0x21-0x7E */
    C_VALUE = 4, /* field-value byte: HTAB, SP, VCHAR, obs-text */
    C_HOST = 8, /* reg-name byte we accept: ALPHA DIGIT - . _ ~ */
    C_HEX = 16, /* HEXDIG */
    C_QDTEXT = 32, /* quoted-string text: HTAB, SP, 0x21, 0x23-0x5B, 0x5D-0x7E, obs-text */
};

static const unsigned char cls[256] = {
    0,  0,  0,  0,  0,  0,  0,  0,  0,  36, 0,  0,  0,  0,  0,  0, /* 0x00 */
    0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0, /* 0x10 */
    36, 39, 6,  39, 39, 39, 39, 39, 38, 38, 39, 39, 38, 47, 47, 38, /* 0x20 */
    63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 38, 38, 38, 38, 38, 38, /* 0x30 */
    38, 63, 63, 63, 63, 63, 63, 47, 47, 47, 47, 47, 47, 47, 47, 47, /* 0x40 */
    47, 47, 47, 47, 47, 47, 47, 47, 47, 47, 47, 38, 6,  38, 39, 47, /* 0x50 */
    39, 63, 63, 63, 63, 63, 63, 47, 47, 47, 47, 47, 47, 47, 47, 47, /* 0x60 */
    47, 47, 47, 47, 47, 47, 47, 47, 47, 47, 47, 38, 39, 38, 47, 0, /* 0x70 */
    36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, /* 0x80 */
    36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, /* 0x90 */
    36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, /* 0xa0 */
    36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, /* 0xb0 */
    36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, /* 0xc0 */
    36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, /* 0xd0 */
    36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, /* 0xe0 */
    36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, /* 0xf0 */
};

/* Skip request-target bytes (0x21-0x7E) in [p, end). The target and the field values are
 * most of a head's bytes, so both are scanned 16 bytes at a time where SSE2 exists (all of
 * x86-64); the table loop finishes the tail and is the whole scan elsewhere. */
static inline const unsigned char *skip_target(const unsigned char *p, const unsigned char *end)
{
#ifdef __SSE2__
    const __m128i lo = _mm_set1_epi8(0x20);
    const __m128i hi = _mm_set1_epi8(0x7f);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        /* signed compares: bytes >= 0x80 are negative and fail the first test */
        __m128i good = _mm_and_si128(_mm_cmpgt_epi8(v, lo), _mm_cmplt_epi8(v, hi));
        unsigned bad = ~(unsigned)_mm_movemask_epi8(good) & 0xffffu;
        if (bad)
            return p + __builtin_ctz(bad);
        p += 16;
    }
#endif
    while (p < end && (cls[*p] & C_TARGET))
        p++;
    return p;
}

/* Skip field-value bytes (HTAB, SP, VCHAR, obs-text) in [p, end). */
static inline const unsigned char *skip_value(const unsigned char *p, const unsigned char *end)
{
#ifdef __SSE2__
    const __m128i sp = _mm_set1_epi8(0x20);
    const __m128i del = _mm_set1_epi8(0x7f);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        unsigned ge_sp = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_max_epu8(v, sp), v));
        unsigned is_del = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, del));
        unsigned bad = (~ge_sp & 0xffffu) | is_del;
        if (bad == 0) {
            p += 16;
            continue;
        }
        p += __builtin_ctz(bad);
        if (*p != '\t')
            return p;
        p++; /* HTAB is the one CTL allowed in a value */
    }
#endif
    while (p < end && (cls[*p] & C_VALUE))
        p++;
    return p;
}

/* What the framing-relevant fields said, gathered during the one pass over the head. */
struct head_state {
    size_t cl_count;
    uint64_t cl_value;
    bool cl_bad; /* an invalid value, or values that differ */
    size_t host_count;
    struct str host;
    bool host_bad;
    bool te_seen;
    bool te_bad; /* empty element, bad syntax, chunked with parameters or twice */
    bool te_other; /* some coding other than chunked */
    bool te_last_chunked; /* the last coding seen so far is chunked */
    bool te_chunked; /* chunked seen */
    bool conn_close;
    bool conn_keep_alive;
    bool expect_continue;
    bool expect_bad;
};

static inline bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* Case-insensitive comparison with a lowercase literal. OR-ing 0x20 can only turn a letter
 * into its lowercase form or a CTL into a visible byte; callers only pass token or field
 * bytes, which contain no CTL, so this is exact. */
static inline bool lit_caseeq(const unsigned char *p, size_t n, const char *lit, size_t litn)
{
    if (n != litn)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((p[i] | 0x20) != (unsigned char)lit[i])
            return false;
    return true;
}

#define LIT_CASEEQ(p, n, lit) lit_caseeq((p), (n), lit, sizeof(lit) - 1)

/* Next element of a comma-separated list (RFC 9110 5.6.1) in p[*pos..n), OWS-trimmed; it may
 * be empty. Returns false when the list is exhausted. */
static bool list_next(const unsigned char *p, size_t n, size_t *pos, const unsigned char **elem,
                      size_t *elen)
{
    size_t i = *pos;
    if (i > n)
        return false;
    while (i < n && is_ows(p[i]))
        i++;
    size_t s = i;
    while (i < n && p[i] != ',')
        i++;
    size_t e = i;
    while (e > s && is_ows(p[e - 1]))
        e--;
    *elem = p + s;
    *elen = e - s;
    *pos = i + 1; /* past the comma, or n + 1 at the end */
    return true;
}

/* 1*DIGIT, at most INT64_MAX. */
static bool parse_content_length(const unsigned char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned d = (unsigned)p[i] - '0';
        if (d > 9 || v > ((uint64_t)INT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* uri-host [":" port] as we accept it: a reg-name of ALPHA DIGIT - . _ ~ (which covers IPv4),
 * or "[" HEXDIG / ":" / "." "]" with at least two colons; port is 1..5 digits <= 65535.
 * Percent-encoding and sub-delims are legal in a URI reg-name but never in a DNS name, and the
 * host becomes part of the cache key, so they are refused. */
static bool host_valid(const unsigned char *p, size_t n, bool require_port)
{
    const unsigned char *q = p, *end = p + n;
    if (n == 0)
        return false;
    if (*q == '[') {
        int colons = 0;
        q++;
        while (q < end && ((cls[*q] & C_HEX) || *q == ':' || *q == '.'))
            colons += *q++ == ':';
        if (q == end || *q != ']' || colons < 2)
            return false;
        q++;
    } else {
        while (q < end && (cls[*q] & C_HOST))
            q++;
        if (q == p)
            return false;
    }
    if (q == end)
        return !require_port;
    if (*q++ != ':' || q == end || end - q > 5)
        return false;
    unsigned port = 0;
    for (; q < end; q++) {
        if (*q < '0' || *q > '9')
            return false;
        port = port * 10 + (unsigned)(*q - '0');
    }
    return port <= 65535;
}

static void note_transfer_encoding(struct head_state *hs, const unsigned char *v, size_t vlen)
{
    const unsigned char *e;
    size_t elen;
    size_t pos = 0;
    hs->te_seen = true;
    while (list_next(v, vlen, &pos, &e, &elen)) {
        size_t t = 0;
        while (t < elen && (cls[e[t]] & C_TCHAR))
            t++;
        if (t == 0) {
            hs->te_bad = true; /* empty element or not a token */
            return;
        }
        if (LIT_CASEEQ(e, t, "chunked")) {
            /* chunked takes no parameters and must be applied once (RFC 9112 7.1) */
            if (t != elen || hs->te_chunked)
                hs->te_bad = true;
            hs->te_chunked = true;
            hs->te_last_chunked = true;
            continue;
        }
        /* another coding: token [OWS ";" parameters], which we never decode anyway */
        while (t < elen && is_ows(e[t]))
            t++;
        if (t != elen && e[t] != ';')
            hs->te_bad = true;
        hs->te_other = true;
        hs->te_last_chunked = false;
    }
}

static void note_connection(struct head_state *hs, const unsigned char *v, size_t vlen)
{
    const unsigned char *e;
    size_t elen;
    size_t pos = 0;
    while (list_next(v, vlen, &pos, &e, &elen)) {
        if (LIT_CASEEQ(e, elen, "close"))
            hs->conn_close = true;
        else if (LIT_CASEEQ(e, elen, "keep-alive"))
            hs->conn_keep_alive = true;
    }
}

/* Record a field that matters for framing or connection handling. Dispatching on the name
 * length first makes the common case (any other field) a single switch. */
static void note_field(struct head_state *hs, const unsigned char *name, size_t nlen,
                       const unsigned char *v, size_t vlen)
{
    uint64_t cl = 0;
    switch (nlen) {
    case 4:
        if (LIT_CASEEQ(name, nlen, "host")) {
            hs->host_count++;
            hs->host = str_make((const char *)v, vlen);
            if (vlen != 0 && !host_valid(v, vlen, false))
                hs->host_bad = true;
        }
        break;
    case 6:
        if (LIT_CASEEQ(name, nlen, "expect")) {
            if (LIT_CASEEQ(v, vlen, "100-continue"))
                hs->expect_continue = true;
            else
                hs->expect_bad = true;
        }
        break;
    case 10:
        if (LIT_CASEEQ(name, nlen, "connection"))
            note_connection(hs, v, vlen);
        break;
    case 14:
        if (LIT_CASEEQ(name, nlen, "content-length")) {
            if (!parse_content_length(v, vlen, &cl) || (hs->cl_count && cl != hs->cl_value))
                hs->cl_bad = true;
            hs->cl_value = cl;
            hs->cl_count++;
        }
        break;
    case 17:
        if (LIT_CASEEQ(name, nlen, "transfer-encoding"))
            note_transfer_encoding(hs, v, vlen);
        break;
    }
}

/*
 * Parse field lines and the final empty line from *pp up to end (the head limit). Returns 0
 * with *pp just past the final CRLF, H1_INCOMPLETE, or H1_INVALID with *err set.
 */
static int parse_fields(const unsigned char **pp, const unsigned char *end,
                        struct http_header *headers, size_t max_headers, size_t *n_headers,
                        struct head_state *hs, enum h1_error *err)
{
    const unsigned char *p = *pp;
    size_t n = 0;
    for (;;) {
        if (p == end)
            goto incomplete;
        if (*p == '\r') {
            if (p + 1 == end)
                goto incomplete;
            if (p[1] != '\n')
                goto syntax;
            *pp = p + 2;
            *n_headers = n;
            return 0;
        }
        if (n == max_headers) {
            *n_headers = n;
            *err = H1_ERR_HEADERS_TOO_LARGE;
            return H1_INVALID;
        }
        /* A line starting with SP/HTAB (obs-fold), a bare LF, a space before the colon or
         * any other non-token byte all end the name on something other than ':'. */
        const unsigned char *name = p;
        while (p < end && (cls[*p] & C_TCHAR))
            p++;
        if (p == end)
            goto incomplete;
        if (*p != ':' || p == name)
            goto syntax;
        size_t nlen = (size_t)(p - name);
        p++;
        while (p < end && is_ows(*p))
            p++;
        const unsigned char *v = p;
        p = skip_value(p, end);
        if (p == end)
            goto incomplete;
        if (*p != '\r')
            goto syntax; /* NUL, CTL, DEL or a bare LF */
        if (p + 1 == end)
            goto incomplete;
        if (p[1] != '\n')
            goto syntax; /* bare CR */
        const unsigned char *ve = p;
        while (ve > v && is_ows(ve[-1]))
            ve--;
        headers[n].name = str_make((const char *)name, nlen);
        headers[n].value = str_make((const char *)v, (size_t)(ve - v));
        n++;
        note_field(hs, name, nlen, v, (size_t)(ve - v));
        p += 2;
    }
incomplete:
    *n_headers = n;
    return H1_INCOMPLETE;
syntax:
    *n_headers = n;
    *err = H1_ERR_SYNTAX;
    return H1_INVALID;
}

/* "HTTP/" DIGIT "." DIGIT at p. Returns 8 when well-formed, 0 when the available bytes are a
 * proper prefix of such a version, -1 otherwise. */
static int scan_version(const unsigned char *p, const unsigned char *end, int *major, int *minor)
{
    static const char pat[] = "HTTP/0.0";
    size_t avail = (size_t)(end - p);
    for (size_t i = 0; i < 8; i++) {
        if (i == avail)
            return 0;
        if (i == 5 || i == 7) {
            if (p[i] < '0' || p[i] > '9')
                return -1;
        } else if (p[i] != (unsigned char)pat[i]) {
            return -1;
        }
    }
    *major = p[5] - '0';
    *minor = p[7] - '0';
    return 8;
}

static size_t head_limit(const struct h1_limits *limits)
{
    return limits->max_head_bytes > INT_MAX ? INT_MAX : limits->max_head_bytes;
}

/* Classify the request-target (RFC 9112 3.2) and fill target_form, path and, for the
 * absolute and authority forms, authority. */
static bool parse_target(struct h1_request *req, const unsigned char *t, size_t tlen)
{
    const unsigned char *m = (const unsigned char *)req->method.p;
    size_t mlen = req->method.len;
    bool connect = mlen == 7 && memcmp(m, "CONNECT", 7) == 0;

    if (connect) {
        /* CONNECT takes the authority-form and nothing else */
        if (!host_valid(t, tlen, true))
            return false;
        req->target_form = H1_TARGET_AUTHORITY;
        req->authority = str_make((const char *)t, tlen);
        return true;
    }
    if (t[0] == '/') {
        req->target_form = H1_TARGET_ORIGIN;
        req->path = req->target;
        return true;
    }
    if (tlen == 1 && t[0] == '*') {
        if (!(mlen == 7 && memcmp(m, "OPTIONS", 7) == 0))
            return false;
        req->target_form = H1_TARGET_ASTERISK;
        req->path = req->target;
        return true;
    }
    size_t s;
    if (tlen > 7 && LIT_CASEEQ(t, 7, "http://"))
        s = 7;
    else if (tlen > 8 && LIT_CASEEQ(t, 8, "https://"))
        s = 8;
    else
        return false;
    size_t a = s;
    while (a < tlen && t[a] != '/' && t[a] != '?' && t[a] != '#') {
        if (t[a] == '@')
            return false; /* userinfo: a classic phishing and confusion vector */
        a++;
    }
    if (!host_valid(t + s, a - s, false))
        return false;
    if (a < tlen && t[a] != '/')
        return false;
    req->target_form = H1_TARGET_ABSOLUTE;
    req->authority = str_make((const char *)t + s, a - s);
    req->path = a < tlen ? str_make((const char *)t + a, tlen - a) : STR_LIT("/");
    return true;
}

int h1_parse_request(const char *buf, size_t len, struct h1_request *req,
                     const struct h1_limits *limits)
{
    const unsigned char *start = (const unsigned char *)buf;
    const unsigned char *p = start;
    size_t max = head_limit(limits);
    const unsigned char *end = start + (len < max ? len : max);
    struct head_state hs;
    int major = 0;
    int minor = 0;
    int rc;

    req->method = STR_NULL;
    req->target = STR_NULL;
    req->target_form = H1_TARGET_ORIGIN;
    req->authority = STR_NULL;
    req->path = STR_NULL;
    req->minor_version = 0;
    req->n_headers = 0;
    req->body = H1_BODY_NONE;
    req->content_length = 0;
    req->keep_alive = false;
    req->expect_continue = false;
    req->err = H1_ERR_NONE;
    memset(&hs, 0, sizeof(hs));

    /* RFC 9112 2.2: a few empty lines before the request-line are ignored */
    for (int skipped = 0;; skipped++) {
        if (p == end)
            goto incomplete;
        if (*p != '\r')
            break;
        if (skipped == H1_MAX_LEADING_CRLF)
            goto syntax;
        if (p + 1 == end)
            goto incomplete;
        if (p[1] != '\n')
            goto syntax;
        p += 2;
    }

    /* method SP */
    const unsigned char *m = p;
    while (p < end && (cls[*p] & C_TCHAR))
        p++;
    if (p == end)
        goto incomplete;
    if (*p != ' ' || p == m) {
        /* a line without a target is malformed; anything else is a method that is not a
         * token */
        req->err = (*p == '\n' || (*p == '\r' && p != m)) ? H1_ERR_SYNTAX : H1_ERR_METHOD;
        return H1_INVALID;
    }
    req->method = str_make((const char *)m, (size_t)(p - m));
    p++;

    /* request-target SP: scan no further than one byte past the URI limit */
    const unsigned char *t = p;
    size_t tscan = (size_t)(end - p);
    if (tscan > limits->max_uri)
        tscan = limits->max_uri + 1;
    p = skip_target(p, p + tscan);
    if ((size_t)(p - t) > limits->max_uri) {
        req->err = H1_ERR_URI_TOO_LONG;
        return H1_INVALID;
    }
    if (p == end)
        goto incomplete;
    if (*p != ' ' || p == t)
        goto syntax;
    req->target = str_make((const char *)t, (size_t)(p - t));
    p++;

    /* HTTP-version CRLF */
    rc = scan_version(p, end, &major, &minor);
    if (rc < 0)
        goto syntax;
    if (rc == 0)
        goto incomplete;
    if (end - p < 10) {
        /* the version is there but not its CRLF: refuse early what can no longer be valid */
        if ((end - p > 8 && p[8] != '\r'))
            goto syntax;
        goto incomplete;
    }
    if (p[8] != '\r' || p[9] != '\n')
        goto syntax;
    if (major != 1 || minor > 1) {
        req->err = H1_ERR_VERSION;
        return H1_INVALID;
    }
    req->minor_version = minor;
    p += 10;

    rc = parse_fields(&p, end, req->headers, limits->max_headers, &req->n_headers, &hs, &req->err);
    if (rc == H1_INCOMPLETE)
        goto incomplete;
    if (rc != 0)
        return rc;

    /* The head is complete: framing first (RFC 9112 6.1, 6.3). */
    if (hs.te_seen) {
        if (hs.cl_count || minor == 0 || hs.te_bad || !hs.te_last_chunked)
            goto smuggling;
        if (hs.te_other) {
            req->err = H1_ERR_TE_UNSUPPORTED;
            return H1_INVALID;
        }
        req->body = H1_BODY_CHUNKED;
    } else if (hs.cl_count) {
        /* a repeated Content-Length is refused even when equal: some origins take the
         * first, some the last, some refuse */
        if (hs.cl_count > 1 || hs.cl_bad)
            goto smuggling;
        req->body = H1_BODY_LENGTH;
        req->content_length = hs.cl_value;
    }

    /* Host (RFC 9112 3.2) */
    if (hs.host_count > 1 || hs.host_bad || (minor == 1 && hs.host_count == 0))
        goto host;
    if (!parse_target(req, t, req->target.len))
        goto syntax;
    if (req->target_form != H1_TARGET_ABSOLUTE && req->target_form != H1_TARGET_AUTHORITY) {
        if (hs.host_count && hs.host.len == 0)
            goto host;
        req->authority = hs.host;
    }

    if (hs.expect_bad) {
        req->err = H1_ERR_EXPECTATION;
        return H1_INVALID;
    }
    req->expect_continue = minor == 1 && hs.expect_continue;
    req->keep_alive = minor == 1 ? !hs.conn_close : (hs.conn_keep_alive && !hs.conn_close);
    return (int)(p - start);

incomplete:
    if (len > max) {
        req->err = H1_ERR_HEADERS_TOO_LARGE;
        return H1_INVALID;
    }
    return H1_INCOMPLETE;
syntax:
    req->err = H1_ERR_SYNTAX;
    return H1_INVALID;
smuggling:
    req->err = H1_ERR_SMUGGLING;
    return H1_INVALID;
host:
    req->err = H1_ERR_HOST;
    return H1_INVALID;
}

int h1_parse_response(const char *buf, size_t len, struct h1_response *resp,
                      const struct h1_limits *limits, bool head_request)
{
    const unsigned char *start = (const unsigned char *)buf;
    const unsigned char *p = start;
    size_t max = head_limit(limits);
    const unsigned char *end = start + (len < max ? len : max);
    struct head_state hs;
    int major = 0;
    int minor = 0;
    int rc;

    resp->minor_version = 0;
    resp->status = 0;
    resp->reason = STR_NULL;
    resp->n_headers = 0;
    resp->body = H1_BODY_NONE;
    resp->content_length = 0;
    resp->keep_alive = false;
    resp->err = H1_ERR_NONE;
    memset(&hs, 0, sizeof(hs));

    /* HTTP-version SP 3DIGIT */
    rc = scan_version(p, end, &major, &minor);
    if (rc < 0)
        goto syntax;
    if (rc == 0)
        goto incomplete;
    p += 8;
    for (int i = 0; i < 4; i++) {
        if (p + i == end)
            goto incomplete;
        unsigned char c = p[i];
        if (i == 0 ? c != ' ' : (c < '0' || c > '9' || (i == 1 && c == '0')))
            goto syntax;
    }
    if (major != 1 || minor > 1) {
        resp->err = H1_ERR_VERSION;
        return H1_INVALID;
    }
    resp->minor_version = minor;
    resp->status = (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
    p += 4;

    /* [SP reason-phrase] CRLF */
    if (p == end)
        goto incomplete;
    if (*p == ' ') {
        const unsigned char *r = ++p;
        p = skip_value(p, end);
        resp->reason = str_make((const char *)r, (size_t)(p - r));
    }
    if (p == end)
        goto incomplete;
    if (*p != '\r')
        goto syntax;
    if (p + 1 == end)
        goto incomplete;
    if (p[1] != '\n')
        goto syntax;
    p += 2;

    rc = parse_fields(&p, end, resp->headers, limits->max_headers, &resp->n_headers, &hs,
                      &resp->err);
    if (rc == H1_INCOMPLETE)
        goto incomplete;
    if (rc != 0)
        return rc;

    if ((hs.te_seen && (hs.cl_count || hs.te_bad)) || hs.cl_bad)
        goto smuggling;
    int st = resp->status;
    if (head_request || st < 200 || st == 204 || st == 304) {
        resp->body = H1_BODY_NONE;
    } else if (hs.te_seen) {
        if (hs.te_last_chunked && hs.te_other) {
            resp->err = H1_ERR_TE_UNSUPPORTED;
            return H1_INVALID;
        }
        resp->body = hs.te_last_chunked ? H1_BODY_CHUNKED : H1_BODY_CLOSE;
    } else if (hs.cl_count) {
        resp->body = H1_BODY_LENGTH;
        resp->content_length = hs.cl_value;
    } else {
        resp->body = H1_BODY_CLOSE;
    }
    resp->keep_alive = resp->body != H1_BODY_CLOSE &&
                       (minor == 1 ? !hs.conn_close : (hs.conn_keep_alive && !hs.conn_close));
    return (int)(p - start);

incomplete:
    if (len > max) {
        resp->err = H1_ERR_HEADERS_TOO_LARGE;
        return H1_INVALID;
    }
    return H1_INCOMPLETE;
syntax:
    resp->err = H1_ERR_SYNTAX;
    return H1_INVALID;
smuggling:
    resp->err = H1_ERR_SMUGGLING;
    return H1_INVALID;
}

/* ---- chunked decoder ------------------------------------------------------------------- */

/* Decoder states. The size-line states come first and the trailer states last, so that the
 * line and trailer byte limits are range checks. */
enum {
    CK_SIZE_START = 0, /* first hex digit of a chunk-size */
    CK_SIZE = 1, /* more hex digits */
    CK_SIZE_BWS = 2, /* BWS after the size or a value: only ";" may follow */
    CK_EXT_NAME0 = 3, /* after ";": BWS, then the extension name */
    CK_EXT_NAME = 4, /* in the extension name */
    CK_EXT_NAME_BWS = 5, /* BWS after the name: "=" or ";" */
    CK_EXT_VAL0 = 6, /* after "=": BWS, then a token or a quoted-string */
    CK_EXT_TOKEN = 7, /* in a token value */
    CK_EXT_QUOTED = 8, /* in a quoted-string */
    CK_EXT_QPAIR = 9, /* after a backslash in a quoted-string */
    CK_EXT_AFTER = 10, /* after a closing quote: BWS, ";" or CR */
    CK_SIZE_LF = 11, /* CR of the size line seen */
    CK_DATA = 12, /* chunk data */
    CK_DATA_CR = 13, /* CRLF after the data */
    CK_DATA_LF = 14,
    CK_TR_LINE = 15, /* start of a trailer line or the final CRLF */
    CK_TR_NAME = 16,
    CK_TR_VALUE = 17,
    CK_TR_LF = 18,
    CK_END_LF = 19,
    CK_DONE = 20,
    CK_ERROR = 21,
};

int h1_chunked_decode(struct h1_chunked *st, const char *buf, size_t len, size_t *data_off,
                      size_t *data_len, bool *done)
{
    const unsigned char *b = (const unsigned char *)buf;
    size_t n = len > INT_MAX ? INT_MAX : len;
    size_t i = 0;
    size_t max_trailer =
        st->max_trailer_bytes ? st->max_trailer_bytes : H1_CHUNK_DEFAULT_MAX_TRAILER;
    bool have_span = false;
    unsigned d;

    *data_off = 0;
    *data_len = 0;
    *done = st->state == CK_DONE;
    if (st->state < CK_SIZE_START || st->state >= CK_ERROR)
        goto invalid;

    while (i < n && st->state != CK_DONE) {
        int s = st->state;
        if (s == CK_DATA) {
            if (have_span)
                break; /* one span per call */
            size_t take = n - i;
            if (take > st->remaining)
                take = (size_t)st->remaining;
            *data_off = i;
            *data_len = take;
            have_span = true;
            i += take;
            st->remaining -= take;
            if (st->remaining == 0)
                st->state = CK_DATA_CR;
            continue;
        }
        unsigned char c = b[i++];
        if (s < CK_DATA) {
            if (++st->line_bytes > H1_CHUNK_MAX_LINE)
                goto invalid;
        } else if (s >= CK_TR_LINE) {
            if (++st->trailer_bytes > max_trailer)
                goto invalid;
        }
        switch (s) {
        case CK_SIZE_START:
        case CK_SIZE:
            if (cls[c] & C_HEX) {
                d = c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
                if (st->line_bytes > H1_CHUNK_MAX_DIGITS ||
                    st->remaining > (H1_CHUNK_MAX_SIZE >> 4))
                    goto invalid;
                st->remaining = st->remaining << 4 | d;
                if (st->remaining > H1_CHUNK_MAX_SIZE)
                    goto invalid;
                st->state = CK_SIZE;
            } else if (s == CK_SIZE_START) {
                goto invalid;
            } else if (c == '\r') {
                st->state = CK_SIZE_LF;
            } else if (c == ';') {
                st->state = CK_EXT_NAME0;
            } else if (is_ows(c)) {
                st->state = CK_SIZE_BWS;
            } else {
                goto invalid;
            }
            break;
        case CK_SIZE_BWS:
            if (c == ';')
                st->state = CK_EXT_NAME0;
            else if (!is_ows(c))
                goto invalid;
            break;
        case CK_EXT_NAME0:
            if (cls[c] & C_TCHAR)
                st->state = CK_EXT_NAME;
            else if (!is_ows(c))
                goto invalid;
            break;
        case CK_EXT_NAME:
        case CK_EXT_NAME_BWS:
            if ((cls[c] & C_TCHAR) && s == CK_EXT_NAME)
                break;
            if (is_ows(c))
                st->state = CK_EXT_NAME_BWS;
            else if (c == '=')
                st->state = CK_EXT_VAL0;
            else if (c == ';')
                st->state = CK_EXT_NAME0;
            else if (c == '\r' && s == CK_EXT_NAME)
                st->state = CK_SIZE_LF;
            else
                goto invalid;
            break;
        case CK_EXT_VAL0:
            if (c == '"')
                st->state = CK_EXT_QUOTED;
            else if (cls[c] & C_TCHAR)
                st->state = CK_EXT_TOKEN;
            else if (!is_ows(c))
                goto invalid;
            break;
        case CK_EXT_TOKEN:
        case CK_EXT_AFTER:
            if ((cls[c] & C_TCHAR) && s == CK_EXT_TOKEN)
                break;
            if (is_ows(c))
                st->state = CK_SIZE_BWS;
            else if (c == ';')
                st->state = CK_EXT_NAME0;
            else if (c == '\r')
                st->state = CK_SIZE_LF;
            else
                goto invalid;
            break;
        case CK_EXT_QUOTED:
            if (c == '"')
                st->state = CK_EXT_AFTER;
            else if (c == '\\')
                st->state = CK_EXT_QPAIR;
            else if (!(cls[c] & C_QDTEXT))
                goto invalid;
            break;
        case CK_EXT_QPAIR:
            if (!(cls[c] & C_VALUE))
                goto invalid;
            st->state = CK_EXT_QUOTED;
            break;
        case CK_SIZE_LF:
            if (c != '\n')
                goto invalid;
            st->line_bytes = 0;
            if (st->remaining == 0) {
                st->trailer_bytes = 0;
                st->state = CK_TR_LINE;
            } else {
                st->state = CK_DATA;
            }
            break;
        case CK_DATA_CR:
            if (c != '\r')
                goto invalid;
            st->state = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            if (c != '\n')
                goto invalid;
            st->state = CK_SIZE_START;
            break;
        case CK_TR_LINE:
            if (c == '\r')
                st->state = CK_END_LF;
            else if (cls[c] & C_TCHAR)
                st->state = CK_TR_NAME;
            else
                goto invalid; /* obs-fold, bare LF, junk */
            break;
        case CK_TR_NAME:
            if (c == ':')
                st->state = CK_TR_VALUE;
            else if (!(cls[c] & C_TCHAR))
                goto invalid;
            break;
        case CK_TR_VALUE:
            if (c == '\r')
                st->state = CK_TR_LF;
            else if (!(cls[c] & C_VALUE))
                goto invalid;
            break;
        case CK_TR_LF:
            if (c != '\n')
                goto invalid;
            st->state = CK_TR_LINE;
            break;
        case CK_END_LF:
            if (c != '\n')
                goto invalid;
            st->state = CK_DONE;
            *done = true;
            break;
        default:
            goto invalid;
        }
    }
    return (int)i;

invalid:
    st->state = CK_ERROR;
    *data_off = 0;
    *data_len = 0;
    return H1_INVALID;
}
