/*
 * lib/util.h: allocation wrappers, assertions and Outpost's error codes.
 *
 * Any thread may call these. Allocation failure is not an expected condition in Outpost:
 * xmalloc() and friends abort the process with the size that failed (as h2o and Redis do),
 * so callers never check their result.
 *
 * Error convention (STYLE.md rule 15): functions return int, 0 is success, a negative value
 * is either -errno or one of the OP_E* codes below, which live in their own range so that
 * op_strerror() can tell them apart from errno values.
 */
#ifndef OUTPOST_LIB_UTIL_H
#define OUTPOST_LIB_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Outpost's own error codes: a private negative range, far from -errno values. */
enum {
    OP_EBASE = -30900,
    OP_EINVAL = -30900, /* invalid input (bad syntax, out of range) */
    OP_EAGAIN = -30901, /* incomplete input: more bytes are needed */
    OP_ENOTFOUND = -30902, /* lookup found nothing */
    OP_ETOOBIG = -30903, /* a configured limit was exceeded */
    OP_EFULL = -30904, /* storage is full */
    OP_ECORRUPT = -30905, /* stored data failed a consistency check */
    OP_ECLOSED = -30906, /* the peer or the object went away */
    OP_ETIMEDOUT = -30907, /* a timer expired */
    OP_ELAST = -30907,
};

/* Describe an error code: OP_E* codes, -errno values, or LMDB codes passed through as is. */
const char *op_strerror(int err);

/* Abort with a message; used by ASSERT. Never returns. */
void util_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));
/* Abort after an allocation of `size` bytes failed. Never returns. */
void util_oom(size_t size) __attribute__((noreturn));

/* Kept in release builds: an ASSERT that fires is a bug, never a response to bad input. */
#define ASSERT(cond)                                                                               \
    do {                                                                                           \
        if (__builtin_expect(!(cond), 0))                                                          \
            util_assert_fail(#cond, __FILE__, __LINE__);                                           \
    } while (0)

void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t len);
void *xmemdup(const void *p, size_t len);

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define UTIL_MIN(a, b) ((a) < (b) ? (a) : (b))
#define UTIL_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
