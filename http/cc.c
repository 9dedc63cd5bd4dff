/*
 * http/cc.c: Cache-Control (RFC 9111 5.2, RFC 5861) and CDN-Cache-Control (RFC 9213)
 * directive parsing into struct http_cc. Pure, no allocation, callable from any thread.
 *
 * Cache-Control is parsed leniently, as recipients must: every line of the field is one
 * comma-separated list (quoted strings may contain commas), directive names are
 * case-insensitive, arguments are a token or a quoted-string. A directive whose name is not
 * directly followed by "=" or the end of the element ("max-age =5") is ignored. Delta-seconds
 * arguments must be digits (RFC 9111 1.2.2), quoted digits are accepted (RFC 9111 5.2: a
 * recipient should accept both forms) and values beyond 2^31 saturate. An argument that is
 * not delta-seconds ("max-age=abc", "max-age=1.5", "max-age") is recorded as 0: RFC 9111
 * 4.2.1 lets a cache consider such a response stale, and "stale" is the only choice that
 * cannot serve content longer than its origin meant.
 *
 * Duplicates: RFC 9111 4.2.1 allows using the first occurrence or treating the response as
 * stale. We record a conflicting duplicate ("max-age=1800, max-age=1", on one or several
 * lines) as 0: the origin said two different things and the conservative reading never
 * over-serves. Equal duplicates are harmless and keep their value.
 *
 * CDN-Cache-Control is a Structured Field dictionary (RFC 9213 2.1, RFC 8941 3.2). A value
 * that fails to parse as one, or a delta-seconds directive whose value is not a non-negative
 * Integer ("max-age=\"10\"", "max-age=1.5"), makes the whole field invalid, and RFC 9213
 * says the cache then behaves as if the field were absent: `present` stays false, as it does
 * for an empty field. Two leniencies: keys are matched case-insensitively (RFC 8941 keys
 * are lower case; an upper-case key is unambiguous), and, per RFC 8941, a repeated key
 * overwrites the earlier one.
 */
#include "http/http.h"

int http_delta_parse(struct str s, int64_t *out)
{
    int64_t v = 0;
    if (s.len == 0)
        return -1;
    for (size_t i = 0; i < s.len; i++) {
        unsigned d = (unsigned char)s.p[i] - '0';
        if (d > 9)
            return -1;
        if (v < HTTP_DELTA_MAX)
            v = v * 10 + d;
    }
    *out = v > HTTP_DELTA_MAX ? HTTP_DELTA_MAX : v;
    return 0;
}

static void cc_init(struct http_cc *cc)
{
    memset(cc, 0, sizeof(*cc));
    cc->max_age = HTTP_CC_UNSET;
    cc->s_maxage = HTTP_CC_UNSET;
    cc->min_fresh = HTTP_CC_UNSET;
    cc->max_stale = HTTP_CC_UNSET;
    cc->stale_while_revalidate = HTTP_CC_UNSET;
    cc->stale_if_error = HTTP_CC_UNSET;
}

static void set_delta(int64_t *slot, int64_t v, bool overwrite)
{
    if (overwrite || *slot == HTTP_CC_UNSET)
        *slot = v;
    else if (*slot != v)
        *slot = 0;
}

enum arg_kind {
    ARG_NONE = 0, /* no "=" */
    ARG_DELTA = 1, /* valid delta-seconds in `delta` */
    ARG_INVALID = 2, /* an argument that is not delta-seconds */
};

/* Apply one directive. `sf` selects the RFC 8941 rule for duplicates (last one wins). */
static void apply(struct http_cc *cc, struct str name, enum arg_kind kind, int64_t delta, bool sf)
{
    static const struct {
        const char *name;
        size_t off;
    } deltas[] = {
        {"max-age", offsetof(struct http_cc, max_age)},
        {"s-maxage", offsetof(struct http_cc, s_maxage)},
        {"min-fresh", offsetof(struct http_cc, min_fresh)},
        {"max-stale", offsetof(struct http_cc, max_stale)},
        {"stale-while-revalidate", offsetof(struct http_cc, stale_while_revalidate)},
        {"stale-if-error", offsetof(struct http_cc, stale_if_error)},
    };
    for (size_t i = 0; i < sizeof(deltas) / sizeof(deltas[0]); i++) {
        if (!str_caseeq_cstr(name, deltas[i].name))
            continue;
        int64_t *slot = (int64_t *)((char *)cc + deltas[i].off);
        int64_t v = 0;
        if (kind == ARG_DELTA)
            v = delta;
        else if (kind == ARG_NONE && slot == &cc->max_stale)
            v = INT64_MAX; /* RFC 9111 5.2.1.2: any staleness */
        set_delta(slot, v, sf);
        return;
    }
    static const struct {
        const char *name;
        size_t off;
    } flags[] = {
        {"no-cache", offsetof(struct http_cc, no_cache)},
        {"no-store", offsetof(struct http_cc, no_store)},
        {"private", offsetof(struct http_cc, private_)},
        {"public", offsetof(struct http_cc, public_)},
        {"must-revalidate", offsetof(struct http_cc, must_revalidate)},
        {"proxy-revalidate", offsetof(struct http_cc, proxy_revalidate)},
        {"only-if-cached", offsetof(struct http_cc, only_if_cached)},
        {"no-transform", offsetof(struct http_cc, no_transform)},
        {"immutable", offsetof(struct http_cc, immutable)},
        {"must-understand", offsetof(struct http_cc, must_understand)},
    };
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (str_caseeq_cstr(name, flags[i].name)) {
            /* qualified no-cache="f" / private="f": treated as the unqualified form */
            *(bool *)((char *)cc + flags[i].off) = true;
            return;
        }
    }
}

/* ---- Cache-Control: lenient list-of-directives ------------------------------------------- */

static void cc_element(struct http_cc *cc, struct str e)
{
    size_t i = 0;
    while (i < e.len && http_is_tchar((unsigned char)e.p[i]))
        i++;
    if (i == 0)
        return;
    struct str name = str_make(e.p, i);
    if (i == e.len) {
        apply(cc, name, ARG_NONE, 0, false);
        return;
    }
    if (e.p[i] != '=')
        return; /* "max-age =5" or garbage: not this directive */
    struct str v = str_make(e.p + i + 1, e.len - i - 1);
    if (v.len >= 2 && v.p[0] == '"' && v.p[v.len - 1] == '"') {
        /* quoted-string: only plain digits can be delta-seconds, so an escape or an inner
         * quote simply makes it invalid */
        v = str_make(v.p + 1, v.len - 2);
    }
    int64_t d;
    if (http_delta_parse(v, &d) == 0)
        apply(cc, name, ARG_DELTA, d, false);
    else
        apply(cc, name, ARG_INVALID, 0, false);
}

/* ---- CDN-Cache-Control: RFC 8941 dictionary ---------------------------------------------- */

enum sf_type {
    SF_INVALID = 0,
    SF_INTEGER = 1,
    SF_DECIMAL = 2,
    SF_OTHER = 3, /* string, token, byte sequence, boolean, inner list */
};

struct sf {
    const char *p;
    size_t n;
    size_t i;
};

static bool sf_end(const struct sf *s)
{
    return s->i >= s->n;
}

static char sf_peek(const struct sf *s)
{
    return sf_end(s) ? '\0' : s->p[s->i];
}

static bool is_lcalpha(char c)
{
    return c >= 'a' && c <= 'z';
}

static bool is_alpha(char c)
{
    return is_lcalpha(c) || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" ), case-insensitive */
static bool sf_key(struct sf *s, struct str *key)
{
    size_t start = s->i;
    char c = sf_peek(s);
    if (!is_alpha(c) && c != '*')
        return false;
    s->i++;
    while (!sf_end(s)) {
        c = sf_peek(s);
        if (!is_alpha(c) && !is_digit(c) && c != '_' && c != '-' && c != '.' && c != '*')
            break;
        s->i++;
    }
    *key = str_make(s->p + start, s->i - start);
    return true;
}

static enum sf_type sf_bare_item(struct sf *s, int64_t *ival)
{
    char c = sf_peek(s);
    if (c == '-' || is_digit(c)) {
        bool neg = c == '-';
        if (neg)
            s->i++;
        size_t nd = 0, nf = 0;
        int64_t v = 0;
        while (is_digit(sf_peek(s))) {
            if (++nd > 15)
                return SF_INVALID;
            v = v * 10 + (sf_peek(s) - '0');
            s->i++;
        }
        if (nd == 0)
            return SF_INVALID;
        if (sf_peek(s) != '.') {
            *ival = neg ? -v : v;
            return SF_INTEGER;
        }
        if (nd > 12)
            return SF_INVALID;
        s->i++;
        while (is_digit(sf_peek(s))) {
            if (++nf > 3)
                return SF_INVALID;
            s->i++;
        }
        return nf ? SF_DECIMAL : SF_INVALID;
    }
    if (c == '"') {
        s->i++;
        while (!sf_end(s)) {
            c = sf_peek(s);
            s->i++;
            if (c == '\\') {
                c = sf_peek(s);
                if (c != '"' && c != '\\')
                    return SF_INVALID;
                s->i++;
            } else if (c == '"') {
                return SF_OTHER;
            } else if ((unsigned char)c < 0x20 || (unsigned char)c > 0x7e) {
                return SF_INVALID;
            }
        }
        return SF_INVALID;
    }
    if (is_alpha(c) || c == '*') {
        s->i++;
        while (!sf_end(s) &&
               (http_is_tchar((unsigned char)sf_peek(s)) || sf_peek(s) == ':' || sf_peek(s) == '/'))
            s->i++;
        return SF_OTHER;
    }
    if (c == ':') {
        s->i++;
        while (!sf_end(s) && sf_peek(s) != ':') {
            c = sf_peek(s);
            if (!is_alpha(c) && !is_digit(c) && c != '+' && c != '/' && c != '=')
                return SF_INVALID;
            s->i++;
        }
        if (sf_end(s))
            return SF_INVALID;
        s->i++;
        return SF_OTHER;
    }
    if (c == '?') {
        s->i++;
        c = sf_peek(s);
        if (c != '0' && c != '1')
            return SF_INVALID;
        s->i++;
        return SF_OTHER;
    }
    return SF_INVALID;
}

static bool sf_params(struct sf *s)
{
    while (sf_peek(s) == ';') {
        s->i++;
        while (sf_peek(s) == ' ')
            s->i++;
        struct str key;
        int64_t unused;
        if (!sf_key(s, &key))
            return false;
        if (sf_peek(s) == '=') {
            s->i++;
            if (sf_bare_item(s, &unused) == SF_INVALID)
                return false;
        }
    }
    return true;
}

static enum sf_type sf_item_or_list(struct sf *s, int64_t *ival)
{
    enum sf_type t;
    if (sf_peek(s) == '(') {
        s->i++;
        for (;;) {
            while (sf_peek(s) == ' ')
                s->i++;
            if (sf_end(s))
                return SF_INVALID;
            if (sf_peek(s) == ')') {
                s->i++;
                break;
            }
            int64_t unused;
            if (sf_bare_item(s, &unused) == SF_INVALID || !sf_params(s))
                return SF_INVALID;
            if (sf_peek(s) != ' ' && sf_peek(s) != ')')
                return SF_INVALID;
        }
        t = SF_OTHER;
    } else {
        t = sf_bare_item(s, ival);
        if (t == SF_INVALID)
            return t;
    }
    return sf_params(s) ? t : SF_INVALID;
}

/* Parse one line as a dictionary; apply into `cc` only if `cc` is non-NULL. Returns false if
 * the line is not a valid dictionary or has a delta directive of the wrong type. Sets
 * *nonempty if it had at least one member. */
static bool sf_dict(struct str line, struct http_cc *cc, bool *nonempty)
{
    struct sf s = {line.p, line.len, 0};
    while (sf_peek(&s) == ' ')
        s.i++;
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t'))
        s.n--;
    if (sf_end(&s))
        return true;
    for (;;) {
        struct str key;
        if (!sf_key(&s, &key))
            return false;
        enum sf_type t = SF_OTHER;
        int64_t ival = 0;
        bool has_value = false;
        if (sf_peek(&s) == '=') {
            s.i++;
            has_value = true;
            t = sf_item_or_list(&s, &ival);
            if (t == SF_INVALID)
                return false;
        } else if (!sf_params(&s)) {
            return false;
        }
        bool is_delta = str_caseeq_cstr(key, "max-age") || str_caseeq_cstr(key, "s-maxage") ||
                        str_caseeq_cstr(key, "stale-while-revalidate") ||
                        str_caseeq_cstr(key, "stale-if-error") ||
                        str_caseeq_cstr(key, "min-fresh") || str_caseeq_cstr(key, "max-stale");
        if (is_delta && has_value && (t != SF_INTEGER || ival < 0))
            return false;
        if (is_delta && !has_value && !str_caseeq_cstr(key, "max-stale"))
            return false; /* a Boolean true where an Integer is required */
        *nonempty = true;
        if (cc)
            apply(cc, key, has_value ? ARG_DELTA : ARG_NONE,
                  ival > HTTP_DELTA_MAX ? HTTP_DELTA_MAX : ival, true);
        while (sf_peek(&s) == ' ' || sf_peek(&s) == '\t')
            s.i++;
        if (sf_end(&s))
            return true;
        if (sf_peek(&s) != ',')
            return false;
        s.i++;
        while (sf_peek(&s) == ' ' || sf_peek(&s) == '\t')
            s.i++;
        if (sf_end(&s))
            return false; /* trailing comma */
    }
}

void http_cc_parse(const struct http_headers *h, const char *name, struct http_cc *out)
{
    cc_init(out);
    struct str n = str_cstr(name);
    if (str_caseeq_cstr(n, "CDN-Cache-Control")) {
        bool nonempty = false;
        for (size_t i = 0; i < h->n; i++)
            if (str_caseeq(h->v[i].name, n) && !sf_dict(h->v[i].value, NULL, &nonempty))
                return;
        if (!nonempty)
            return;
        for (size_t i = 0; i < h->n; i++)
            if (str_caseeq(h->v[i].name, n))
                sf_dict(h->v[i].value, out, &nonempty);
        out->present = true;
        return;
    }
    size_t iter = 0, pos = 0;
    struct str e;
    out->present = http_headers_count(h, name) > 0;
    while (http_headers_list_next(h, name, &iter, &pos, &e))
        cc_element(out, e);
}
