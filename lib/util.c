/*
 * lib/util.c: allocation wrappers that abort on failure, assertion failure reporting and
 * op_strerror(). Thread-safe; owns no state.
 */
#include "lib/util.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const op_errors[] = {
    "invalid input", /* OP_EINVAL */
    "incomplete input", /* OP_EAGAIN */
    "not found", /* OP_ENOTFOUND */
    "limit exceeded", /* OP_ETOOBIG */
    "storage full", /* OP_EFULL */
    "corrupt data", /* OP_ECORRUPT */
    "closed", /* OP_ECLOSED */
    "timed out", /* OP_ETIMEDOUT */
};

const char *op_strerror(int err)
{
    if (err == 0)
        return "success";
    if (err <= OP_EBASE && err >= OP_ELAST)
        return op_errors[OP_EBASE - err];
    if (err >= MDB_KEYEXIST && err <= MDB_LAST_ERRCODE)
        return mdb_strerror(err);
    if (err < 0)
        return strerror(-err);
    return "unknown error";
}

void util_assert_fail(const char *expr, const char *file, int line)
{
    fprintf(stderr, "outpost: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

void util_oom(size_t size)
{
    fprintf(stderr, "outpost: out of memory allocating %zu bytes\n", size);
    abort();
}

void *xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        util_oom(size);
    return p;
}

void *xcalloc(size_t nmemb, size_t size)
{
    void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);
    if (p == NULL)
        util_oom(nmemb * size);
    return p;
}

void *xrealloc(void *p, size_t size)
{
    void *q = realloc(p, size ? size : 1);
    if (q == NULL)
        util_oom(size);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t len)
{
    char *p = xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void *xmemdup(const void *p, size_t len)
{
    void *q = xmalloc(len);
    if (len)
        memcpy(q, p, len);
    return q;
}
