/*
 * http/range.c: Range request evaluation (RFC 9110 14.1, 14.2) for the "bytes" unit.
 * Pure, no allocation, callable from any thread.
 *
 * Decisions where the RFC leaves room:
 *  - Only "bytes" (case-insensitive, RFC 9110 14.1: range units are case-insensitive) is
 *    understood; any other unit, or any syntax error anywhere in the set, makes the whole
 *    field ignored (HTTP_RANGE_NONE -> 200), which RFC 9110 14.2 permits ("MAY ignore").
 *    An int-range whose last-pos is below its first-pos is invalid (14.1.1), so ignored too.
 *  - Empty list elements and OWS around commas are accepted (RFC 9110 5.6.1).
 *  - Positions too large for 64 bits saturate (such a last-pos is clipped to the size anyway,
 *    such a first-pos is unsatisfiable anyway).
 *  - Satisfiable ranges are clipped to the representation, then sorted and coalesced when
 *    they overlap or touch. RFC 9110 14.2 lets a server coalesce; sorting also defeats
 *    reordered-overlap amplification, at the cost of the SHOULD to keep the request order
 *    (15.3.7.2) for multipart parts, which nginx and Apache also trade away.
 *  - More than HTTP_RANGE_SPECS_MAX range-specs, or more than `max` ranges after coalescing,
 *    means "serve the whole representation" (14.2: a server MAY ignore a Range with many
 *    small or overlapping ranges).
 *  - A zero-length representation: no int-range is satisfiable (first-pos < 0 is impossible),
 *    so those yield 416. A non-zero suffix-range is "satisfiable" per 14.1.1 but selects
 *    nothing that a Content-Range could describe, so any such suffix makes the answer
 *    HTTP_RANGE_NONE: the whole, empty, representation is sent with 200.
 */
#include "http/http.h"

#define HTTP_RANGE_SPECS_MAX 256

static size_t skip_ows(struct str s, size_t i)
{
    while (i < s.len && (s.p[i] == ' ' || s.p[i] == '\t'))
        i++;
    return i;
}

/* 1*DIGIT at s[*i], saturating; false if no digit. */
static bool pos_parse(struct str s, size_t *i, uint64_t *out)
{
    uint64_t v = 0;
    size_t start = *i;
    while (*i < s.len && s.p[*i] >= '0' && s.p[*i] <= '9') {
        unsigned d = (unsigned)(s.p[*i] - '0');
        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
        (*i)++;
    }
    *out = v;
    return *i > start;
}

static void sort_ranges(struct http_range *r, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        struct http_range x = r[i];
        size_t j = i;
        while (j > 0 && r[j - 1].first > x.first) {
            r[j] = r[j - 1];
            j--;
        }
        r[j] = x;
    }
}

enum http_range_result http_range_parse(struct str value, uint64_t size, struct http_range *out,
                                        size_t max, size_t *n)
{
    struct http_range tmp[HTTP_RANGE_SPECS_MAX];
    size_t nt = 0, specs = 0;
    bool empty_suffix = false;

    *n = 0;
    struct str v = str_trim(value);
    if (v.len < 6 || !str_caseeq(str_make(v.p, 6), STR_LIT("bytes=")))
        return HTTP_RANGE_NONE;
    size_t i = 6;
    for (;;) {
        i = skip_ows(v, i);
        if (i < v.len && v.p[i] == ',') {
            i++;
            continue;
        }
        if (i >= v.len)
            break;
        uint64_t a, b;
        if (++specs > HTTP_RANGE_SPECS_MAX)
            return HTTP_RANGE_NONE;
        if (v.p[i] == '-') {
            i++;
            if (!pos_parse(v, &i, &b))
                return HTTP_RANGE_NONE;
            if (b > 0 && size == 0)
                empty_suffix = true;
            else if (b > 0)
                tmp[nt++] = (struct http_range){b >= size ? 0 : size - b, size - 1};
        } else {
            if (!pos_parse(v, &i, &a) || i >= v.len || v.p[i] != '-')
                return HTTP_RANGE_NONE;
            i++;
            bool has_last = pos_parse(v, &i, &b);
            if (has_last && b < a)
                return HTTP_RANGE_NONE;
            if (a < size)
                tmp[nt++] = (struct http_range){a, has_last && b < size ? b : size - 1};
        }
        i = skip_ows(v, i);
        if (i < v.len && v.p[i] != ',')
            return HTTP_RANGE_NONE;
    }
    if (specs == 0)
        return HTTP_RANGE_NONE;
    if (empty_suffix)
        return HTTP_RANGE_NONE;
    if (nt == 0)
        return HTTP_RANGE_UNSATISFIABLE;
    sort_ranges(tmp, nt);
    size_t m = 0;
    for (size_t k = 1; k < nt; k++) {
        if (tmp[k].first <= tmp[m].last || tmp[k].first - tmp[m].last == 1) {
            if (tmp[k].last > tmp[m].last)
                tmp[m].last = tmp[k].last;
        } else {
            tmp[++m] = tmp[k];
        }
    }
    m++;
    if (m > max)
        return HTTP_RANGE_NONE;
    memcpy(out, tmp, m * sizeof(*out));
    *n = m;
    return HTTP_RANGE_OK;
}
