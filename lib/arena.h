/*
 * lib/arena.h: a bump allocator for data that lives exactly as long as one exchange (headers,
 * the normalised URL, the cache key). Owned by one thread. On overflow of its configured cap
 * it sets `overflow` and returns NULL instead of aborting, so that the caller can answer
 * 431/500 (Varnish workspace). Built with ARENA_MALLOC defined, every allocation is a separate
 * malloc so that ASan sees overflows.
 */
#ifndef OUTPOST_LIB_ARENA_H
#define OUTPOST_LIB_ARENA_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/str.h"

struct arena_block;

struct arena {
    struct arena_block *head;
    size_t used; /* bytes handed out, all blocks */
    size_t cap; /* limit on `used`; 0 means unlimited */
    bool overflow; /* set once an allocation was refused */
};

void arena_init(struct arena *a, size_t cap);
/* Free everything; the arena may be reused after arena_init(). */
void arena_fini(struct arena *a);
/* Aligned to 16; NULL (and overflow set) past the cap. */
void *arena_alloc(struct arena *a, size_t size);
/* Copies; the result is NUL-terminated for convenience but used as a struct str. */
struct str arena_strdup(struct arena *a, struct str s);
/* snprintf into the arena. */
struct str arena_printf(struct arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
