/*
 * cache/vary.c: Vary support (RFC 9111 4.1). A stored variant carries, for each header named
 * by its response's Vary, the request's value normalised by cache_vary_normalise(); a later
 * request selects the variant when every such value is equal after the same normalisation.
 *
 * Pure functions, any thread. Matching runs on the lookup hit path inside a read transaction:
 * it compares against the stored value without allocating (a stack buffer, a heap buffer only
 * for values longer than VARY_STACK).
 */
#include <stdlib.h>
#include <string.h>

#include "cache/cache_int.h"
#include "lib/util.h"

#define VARY_STACK 1024

static bool is_ws(char ch)
{
    return ch == ' ' || ch == '\t';
}

size_t cache_vary_normalise(const struct http_headers *req, const char *name, char *out, size_t cap)
{
    size_t n = 0;
    bool first = true;
    bool pending_space = false;
    struct str nm = str_cstr(name);
    if (req == NULL)
        return 0;
    for (size_t i = 0; i < req->n; i++) {
        if (!str_caseeq(req->v[i].name, nm))
            continue;
        struct str v = str_trim(req->v[i].value);
        if (!first) {
            /* ", " between lines; the space is a pending separator like any other run */
            if (n < cap)
                out[n++] = ',';
            pending_space = true;
        }
        first = false;
        for (size_t k = 0; k < v.len; k++) {
            if (is_ws(v.p[k])) {
                pending_space = n > 0;
                continue;
            }
            if (pending_space) {
                if (n < cap)
                    out[n++] = ' ';
                pending_space = false;
            }
            if (n < cap)
                out[n++] = v.p[k];
        }
    }
    return n;
}

bool cache_vary_match(const struct cache_rec *r, const struct http_headers *req)
{
    const uint8_t *p = r->vary;
    char stack[VARY_STACK];
    for (uint32_t i = 0; i < r->h.n_vary; i++) {
        struct str name;
        struct str want;
        cache_rec_pair_next(&p, &name, &want);
        /* One byte more than the stored value: a longer request value then cannot match. */
        size_t cap = want.len + 1;
        char *buf = cap <= sizeof(stack) ? stack : xmalloc(cap);
        char cname[128];
        bool same;
        if (name.len >= sizeof(cname)) {
            same = false; /* no real header name is this long; never matches */
        } else {
            memcpy(cname, name.p, name.len);
            cname[name.len] = '\0';
            size_t got = cache_vary_normalise(req, cname, buf, cap);
            same = got == want.len && memcmp(buf, want.p, got) == 0;
        }
        if (buf != stack)
            free(buf);
        if (!same)
            return false;
    }
    return true;
}

bool cache_vary_same(const struct cache_rec *a, const struct cache_rec *b)
{
    if (a->h.n_vary != b->h.n_vary || a->h.vary_len != b->h.vary_len)
        return false;
    /* The edge builds the pairs in the order of the response's Vary, so compare as sets:
     * every pair of a must appear in b (names are lower-case, compare case-insensitively). */
    const uint8_t *pa = a->vary;
    for (uint32_t i = 0; i < a->h.n_vary; i++) {
        struct str an, av;
        cache_rec_pair_next(&pa, &an, &av);
        const uint8_t *pb = b->vary;
        bool found = false;
        for (uint32_t j = 0; j < b->h.n_vary && !found; j++) {
            struct str bn, bv;
            cache_rec_pair_next(&pb, &bn, &bv);
            found = str_caseeq(an, bn) && str_eq(av, bv);
        }
        if (!found)
            return false;
    }
    return true;
}
