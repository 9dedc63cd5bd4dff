/*
 * http/cond.c: entity-tag comparison and conditional request evaluation (RFC 9110 8.8.3,
 * 13.1, 13.2). Pure, no allocation, callable from any thread. The cache evaluates client
 * preconditions against a stored response (RFC 9111 4.3.2) with these functions.
 *
 * An entity-tag that does not follow the grammar (missing quotes, a bad W/ prefix, DQUOTE
 * inside) never matches anything: comparing malformed validators could only yield a false
 * 304. A field value that is not a valid HTTP-date is ignored, as RFC 9110 13.1.3 and
 * 13.1.4 require. Two checks need information these functions do not have, so the caller
 * owns them: a date later than the server's clock makes If-Modified-Since invalid
 * (13.1.3), and a cache that has no Last-Modified may pass the stored Date instead
 * (RFC 9111 4.3.2).
 */
#include "http/http.h"

/* Split an entity-tag into weakness and opaque-tag (quotes included); false if malformed. */
static bool etag_split(struct str t, bool *weak, struct str *opaque)
{
    t = str_trim(t);
    *weak = false;
    if (t.len >= 2 && t.p[0] == 'W' && t.p[1] == '/') {
        *weak = true;
        t = str_make(t.p + 2, t.len - 2);
    }
    if (t.len < 2 || t.p[0] != '"' || t.p[t.len - 1] != '"')
        return false;
    for (size_t i = 1; i + 1 < t.len; i++) {
        unsigned char c = (unsigned char)t.p[i];
        /* etagc = %x21 / %x23-7E / obs-text */
        if (c < 0x21 || c == '"' || c == 0x7f)
            return false;
    }
    *opaque = t;
    return true;
}

bool http_etag_match(struct str a, struct str b, bool weak)
{
    bool wa, wb;
    struct str oa, ob;
    if (!etag_split(a, &wa, &oa) || !etag_split(b, &wb, &ob))
        return false;
    if (!weak && (wa || wb))
        return false;
    return str_eq(oa, ob);
}

/* Does the list value of `name` match `etag`? `*any` is set when the value is "*". */
static bool list_matches(const struct http_headers *req, const char *name, struct str etag,
                         bool weak, bool *any)
{
    size_t iter = 0, pos = 0;
    struct str e;
    *any = false;
    while (http_headers_list_next(req, name, &iter, &pos, &e)) {
        if (e.len == 1 && e.p[0] == '*') {
            *any = true;
            return true;
        }
        if (etag.len && http_etag_match(e, etag, weak))
            return true;
    }
    return false;
}

/* The date of a singleton date field, or -1 when absent, repeated, or invalid. */
static int64_t date_field(const struct http_headers *req, const char *name)
{
    int64_t t;
    const struct http_header *hd = http_headers_get(req, name);
    if (hd == NULL || http_headers_count(req, name) != 1 || http_date_parse(hd->value, &t) < 0)
        return -1;
    return t;
}

enum http_cond_result http_cond_evaluate(const struct http_headers *req, struct str etag,
                                         int64_t last_modified, bool is_get_or_head)
{
    bool any;
    /* Step 1: If-Match, strong comparison; "*" is true because a representation exists. */
    if (http_headers_count(req, "If-Match")) {
        if (!list_matches(req, "If-Match", etag, false, &any))
            return HTTP_COND_FAILED;
    } else if (http_headers_count(req, "If-Unmodified-Since")) {
        /* Step 2: only without If-Match; ignored if invalid or no Last-Modified. */
        int64_t t = date_field(req, "If-Unmodified-Since");
        if (t >= 0 && last_modified >= 0 && last_modified > t)
            return HTTP_COND_FAILED;
    }
    /* Step 3: If-None-Match, weak comparison. */
    if (http_headers_count(req, "If-None-Match")) {
        if (list_matches(req, "If-None-Match", etag, true, &any))
            return is_get_or_head ? HTTP_COND_NOT_MODIFIED : HTTP_COND_FAILED;
        return HTTP_COND_PROCEED;
    }
    /* Step 4: If-Modified-Since, GET/HEAD only. */
    if (is_get_or_head && last_modified >= 0 && http_headers_count(req, "If-Modified-Since")) {
        int64_t t = date_field(req, "If-Modified-Since");
        if (t >= 0 && last_modified <= t)
            return HTTP_COND_NOT_MODIFIED;
    }
    return HTTP_COND_PROCEED;
}

bool http_if_range_ok(struct str if_range, struct str etag, int64_t last_modified)
{
    struct str v = str_trim(if_range);
    if (v.len == 0)
        return false;
    if (v.p[0] == '"' || (v.len >= 2 && v.p[0] == 'W' && v.p[1] == '/'))
        return etag.len && http_etag_match(v, etag, false); /* strong comparison only */
    /*
     * 13.1.5: the date form passes only if it exactly equals the Last-Modified; the extra
     * "strong validator" test (Last-Modified at least a second before Date) needs the
     * stored Date and is left to the caller, which passes -1 when it fails.
     */
    int64_t t;
    if (http_date_parse(v, &t) < 0)
        return false;
    return last_modified >= 0 && t == last_modified;
}
