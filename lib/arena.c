/* lib/arena.c: bump allocator with a byte cap (see arena.h). */
#include "lib/arena.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"

struct arena_block {
    struct arena_block *next;
    size_t size;
    size_t off;
    _Alignas(16) char data[];
};

void arena_init(struct arena *a, size_t cap)
{
    a->head = NULL;
    a->used = 0;
    a->cap = cap;
    a->overflow = false;
}

void arena_fini(struct arena *a)
{
    struct arena_block *b = a->head;
    while (b) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = NULL;
    a->used = 0;
}

void *arena_alloc(struct arena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if (a->cap && a->used + size > a->cap) {
        a->overflow = true;
        return NULL;
    }
    a->used += size;
#ifdef ARENA_MALLOC
    struct arena_block *nb = xmalloc(sizeof(*nb) + size);
    nb->size = size;
    nb->off = size;
    nb->next = a->head;
    a->head = nb;
    return nb->data;
#else
    struct arena_block *b = a->head;
    if (b == NULL || b->size - b->off < size) {
        size_t bs = size > 4096 - sizeof(*b) ? size : 4096 - sizeof(*b);
        b = xmalloc(sizeof(*b) + bs);
        b->size = bs;
        b->off = 0;
        b->next = a->head;
        a->head = b;
    }
    void *p = b->data + b->off;
    b->off += size;
    return p;
#endif
}

struct str arena_strdup(struct arena *a, struct str s)
{
    char *p = arena_alloc(a, s.len + 1);
    if (p == NULL)
        return STR_NULL;
    if (s.len)
        memcpy(p, s.p, s.len);
    p[s.len] = '\0';
    return str_make(p, s.len);
}

struct str arena_printf(struct arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return STR_NULL;
    char *p = arena_alloc(a, (size_t)n + 1);
    if (p == NULL)
        return STR_NULL;
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return str_make(p, (size_t)n);
}
