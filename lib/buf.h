/*
 * lib/buf.h: a growable byte buffer owned by whoever embeds it. Not thread-safe; the owner's
 * thread uses it. buf_fini() releases the memory; a zeroed struct buf is a valid empty buffer.
 */
#ifndef OUTPOST_LIB_BUF_H
#define OUTPOST_LIB_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "lib/str.h"

struct buf {
    char *p;
    size_t len;
    size_t cap;
};

void buf_init(struct buf *b);
void buf_fini(struct buf *b);
/* Make room for at least `extra` more bytes; returns a pointer to the free space. */
char *buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *p, size_t len);
void buf_append_str(struct buf *b, struct str s);
void buf_append_cstr(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Append `s` as a JSON string: quoted, with '"', '\\' and control characters escaped. */
void buf_append_json_str(struct buf *b, const char *s);
/* Drop the first n bytes. */
void buf_consume(struct buf *b, size_t n);
static inline struct str buf_str(const struct buf *b)
{
    return str_make(b->p, b->len);
}

#endif
