/* http/headers.c: header list operations and field-value list iteration (see http.h). */
#include <stdlib.h>
#include <string.h>

#include "http/http.h"
#include "lib/util.h"

void http_headers_init(struct http_headers *h)
{
    h->v = NULL;
    h->n = 0;
    h->cap = 0;
}

void http_headers_fini(struct http_headers *h)
{
    free(h->v);
    http_headers_init(h);
}

void http_headers_add(struct http_headers *h, struct str name, struct str value)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 16;
        h->v = xrealloc(h->v, h->cap * sizeof(*h->v));
    }
    h->v[h->n].name = name;
    h->v[h->n].value = value;
    h->n++;
}

const struct http_header *http_headers_get(const struct http_headers *h, const char *name)
{
    struct str n = str_cstr(name);
    for (size_t i = 0; i < h->n; i++)
        if (str_caseeq(h->v[i].name, n))
            return &h->v[i];
    return NULL;
}

size_t http_headers_count(const struct http_headers *h, const char *name)
{
    struct str n = str_cstr(name);
    size_t c = 0;
    for (size_t i = 0; i < h->n; i++)
        if (str_caseeq(h->v[i].name, n))
            c++;
    return c;
}

size_t http_headers_remove(struct http_headers *h, const char *name)
{
    struct str n = str_cstr(name);
    size_t j = 0, removed = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (str_caseeq(h->v[i].name, n)) {
            removed++;
            continue;
        }
        h->v[j++] = h->v[i];
    }
    h->n = j;
    return removed;
}

void http_headers_set(struct http_headers *h, struct str name, struct str value)
{
    char tmp[128];
    str_to_cstr(name, tmp, sizeof(tmp));
    for (size_t i = 0; i < h->n; i++) {
        if (str_caseeq(h->v[i].name, name)) {
            h->v[i].value = value;
            /* drop later duplicates */
            size_t j = i + 1;
            for (size_t k = i + 1; k < h->n; k++)
                if (!str_caseeq(h->v[k].name, name))
                    h->v[j++] = h->v[k];
            h->n = j;
            return;
        }
    }
    http_headers_add(h, name, value);
}

bool http_headers_list_next(const struct http_headers *h, const char *name, size_t *iter,
                            size_t *pos, struct str *elem)
{
    struct str n = str_cstr(name);
    for (; *iter < h->n; (*iter)++, *pos = 0) {
        if (!str_caseeq(h->v[*iter].name, n))
            continue;
        struct str v = h->v[*iter].value;
        while (*pos < v.len) {
            size_t start = *pos;
            bool quoted = false;
            size_t i = start;
            for (; i < v.len; i++) {
                char c = v.p[i];
                if (quoted) {
                    if (c == '\\' && i + 1 < v.len)
                        i++;
                    else if (c == '"')
                        quoted = false;
                } else if (c == '"') {
                    quoted = true;
                } else if (c == ',') {
                    break;
                }
            }
            *pos = i < v.len ? i + 1 : v.len;
            struct str e = str_trim(str_make(v.p + start, i - start));
            if (e.len) {
                *elem = e;
                return true;
            }
        }
    }
    return false;
}

bool http_headers_has_token(const struct http_headers *h, const char *name, const char *token)
{
    size_t iter = 0, pos = 0;
    struct str e;
    while (http_headers_list_next(h, name, &iter, &pos, &e))
        if (str_caseeq_cstr(e, token))
            return true;
    return false;
}

bool http_is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

bool http_is_token(struct str s)
{
    if (s.len == 0)
        return false;
    for (size_t i = 0; i < s.len; i++)
        if (!http_is_tchar((unsigned char)s.p[i]))
            return false;
    return true;
}

bool http_is_hop_by_hop(const struct http_headers *h, struct str name)
{
    static const struct str hop[] = {STR_LIT("connection"),
                                     STR_LIT("keep-alive"),
                                     STR_LIT("proxy-connection"),
                                     STR_LIT("te"),
                                     STR_LIT("trailer"),
                                     STR_LIT("transfer-encoding"),
                                     STR_LIT("upgrade"),
                                     STR_LIT("proxy-authenticate"),
                                     STR_LIT("proxy-authorization")};
    for (size_t i = 0; i < ARRAY_SIZE(hop); i++)
        if (name.len == hop[i].len && str_caseeq(name, hop[i]))
            return true;
    size_t iter = 0, pos = 0;
    struct str e;
    while (h && http_headers_list_next(h, "connection", &iter, &pos, &e))
        if (str_caseeq(e, name))
            return true;
    return false;
}
