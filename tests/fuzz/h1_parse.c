/*
 * tests/fuzz/h1_parse.c: libFuzzer target for edge/h1/parse.c.
 *
 * Feeds each input to h1_parse_request (tiny and default limits), h1_parse_response (with and
 * without head_request) and h1_chunked_decode (whole, and split at a point derived from the
 * data, and byte by byte for short inputs), and traps on any broken invariant: consumed bytes
 * beyond the input, header names or values or data spans outside the buffer, a success that
 * left an error code, an invalid result without one, a split decode that disagrees with the
 * whole one, and a head parse that does not answer the same for the head alone.
 * The input is copied into an exactly sized heap buffer so ASan sees any over-read.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "edge/h1/h1.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

static int inside(const char *buf, size_t len, struct str s)
{
    if (s.len == 0)
        return 1;
    return s.p >= buf && s.p <= buf + len && s.len <= (size_t)(buf + len - s.p);
}

static void check_headers(const char *buf, size_t len, const struct http_header *h, size_t n,
                          size_t cap)
{
    CHECK(n <= cap);
    for (size_t i = 0; i < n; i++) {
        CHECK(h[i].name.len > 0);
        CHECK(inside(buf, len, h[i].name));
        CHECK(inside(buf, len, h[i].value));
    }
}

static void fuzz_request(const char *buf, size_t len, const struct h1_limits *lim)
{
    struct http_header hdrs[128];
    struct h1_request req;
    req.headers = hdrs;
    int rc = h1_parse_request(buf, len, &req, lim);
    CHECK(rc == H1_INCOMPLETE || rc == H1_INVALID || (rc > 0 && (size_t)rc <= len));
    CHECK((rc == H1_INVALID) == (req.err != H1_ERR_NONE));
    if (rc == H1_INCOMPLETE)
        CHECK(len <= lim->max_head_bytes);
    if (rc <= 0)
        return;
    CHECK((size_t)rc <= lim->max_head_bytes);
    check_headers(buf, len, hdrs, req.n_headers, lim->max_headers);
    CHECK(inside(buf, len, req.method) && req.method.len > 0);
    CHECK(inside(buf, len, req.target) && req.target.len > 0 && req.target.len <= lim->max_uri);
    CHECK(inside(buf, len, req.authority));
    CHECK(req.path.len == 1 || inside(buf, len, req.path));
    CHECK(req.minor_version == 0 || req.minor_version == 1);
    CHECK(req.body != H1_BODY_CLOSE);
    CHECK(req.body == H1_BODY_LENGTH || req.content_length == 0);
    CHECK(req.content_length <= (uint64_t)INT64_MAX);
    /* the same head alone parses to the same length, and every proper prefix is incomplete
     * (checked for a few prefixes to stay fast) */
    struct h1_request again;
    again.headers = hdrs;
    CHECK(h1_parse_request(buf, (size_t)rc, &again, lim) == rc);
    CHECK(again.body == req.body && again.content_length == req.content_length);
    size_t cuts[3] = {(size_t)rc - 1, (size_t)rc / 2, 1};
    for (int i = 0; i < 3; i++) {
        int r2 = h1_parse_request(buf, cuts[i], &again, lim);
        CHECK(r2 == H1_INCOMPLETE);
    }
}

static void fuzz_response(const char *buf, size_t len, bool head)
{
    struct http_header hdrs[64];
    struct h1_limits lim = {4096, 64, 4096};
    struct h1_response resp;
    resp.headers = hdrs;
    int rc = h1_parse_response(buf, len, &resp, &lim, head);
    CHECK(rc == H1_INCOMPLETE || rc == H1_INVALID || (rc > 0 && (size_t)rc <= len));
    CHECK((rc == H1_INVALID) == (resp.err != H1_ERR_NONE));
    if (rc <= 0)
        return;
    check_headers(buf, len, hdrs, resp.n_headers, lim.max_headers);
    CHECK(resp.status >= 100 && resp.status <= 999);
    CHECK(inside(buf, len, resp.reason));
    CHECK(!(resp.body == H1_BODY_CLOSE && resp.keep_alive));
    CHECK(!head || resp.body == H1_BODY_NONE);
    CHECK(h1_parse_response(buf, (size_t)rc - 1, &resp, &lim, head) == H1_INCOMPLETE);
}

/* Decode buf[0..len) in pieces of at most `step` bytes (0: whole); returns the total consumed
 * or -1, and appends data to out. */
static long decode(const char *buf, size_t len, size_t step, size_t max_trailer, char *out,
                   size_t *out_len, bool *done)
{
    struct h1_chunked st;
    memset(&st, 0, sizeof(st));
    st.max_trailer_bytes = max_trailer;
    size_t pos = 0;
    *out_len = 0;
    *done = false;
    for (;;) {
        size_t avail = len - pos;
        size_t give = step && avail > step ? step : avail;
        size_t off, dlen;
        int rc = h1_chunked_decode(&st, buf + pos, give, &off, &dlen, done);
        if (rc == H1_INVALID)
            return -1;
        CHECK(rc >= 0 && (size_t)rc <= give);
        CHECK(dlen == 0 || (off < (size_t)rc && dlen <= (size_t)rc - off));
        memcpy(out + *out_len, buf + pos + off, dlen);
        *out_len += dlen;
        pos += (size_t)rc;
        if (*done || pos == len)
            return (long)pos;
        if (rc == 0 && give == avail)
            return (long)pos; /* nothing more can be consumed */
        CHECK(rc > 0 || give < avail);
        if (rc == 0)
            return (long)pos;
    }
}

static void fuzz_chunked(const char *buf, size_t len)
{
    char *a = malloc(len + 1);
    char *b = malloc(len + 1);
    size_t alen, blen;
    bool adone, bdone;
    size_t step = len ? (size_t)(unsigned char)buf[0] % 17 + 1 : 1;
    long ra = decode(buf, len, 0, 256, a, &alen, &adone);
    long rb = decode(buf, len, step, 256, b, &blen, &bdone);
    CHECK(ra <= (long)len && rb <= (long)len);
    /* splitting may only change where an error is noticed, never the decoded bytes */
    if (ra >= 0 && rb >= 0) {
        CHECK(ra == rb && adone == bdone && alen == blen && memcmp(a, b, alen) == 0);
    } else if (ra >= 0 || rb >= 0) {
        CHECK(0);
    }
    free(a);
    free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    struct h1_limits small = {64, 4, 32};
    struct h1_limits dflt = {H1_DEFAULT_MAX_HEAD_BYTES, H1_DEFAULT_MAX_HEADERS, H1_DEFAULT_MAX_URI};
    fuzz_request(buf, size, &small);
    fuzz_request(buf, size, &dflt);
    fuzz_response(buf, size, false);
    fuzz_response(buf, size, true);
    fuzz_chunked(buf, size);
    free(buf);
    return 0;
}
