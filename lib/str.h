/*
 * lib/str.h: counted strings. A struct str points into memory owned by someone else (an
 * arena, a connection buffer, a config); it is never NUL-terminated by contract.
 * NUL-terminated strings appear only at libc, TLS and nghttp2 boundaries (STYLE.md rule 22).
 * All functions are pure and thread-safe.
 */
#ifndef OUTPOST_LIB_STR_H
#define OUTPOST_LIB_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct str {
    const char *p;
    size_t len;
};

/* A struct str for a string literal. */
#define STR_LIT(s) ((struct str){(s), sizeof(s) - 1})
#define STR_NULL ((struct str){NULL, 0})

static inline struct str str_make(const char *p, size_t len)
{
    struct str s = {p, len};
    return s;
}

static inline struct str str_cstr(const char *p)
{
    struct str s = {p, p ? strlen(p) : 0};
    return s;
}

/* Byte-wise equality. */
bool str_eq(struct str a, struct str b);
/* ASCII case-insensitive equality (header names, tokens). */
bool str_caseeq(struct str a, struct str b);
bool str_caseeq_cstr(struct str a, const char *b);
/* True if `s` starts with `prefix` (case-sensitive). */
bool str_has_prefix(struct str s, struct str prefix);
/* Strip optional whitespace (SP / HTAB) at both ends. */
struct str str_trim(struct str s);
/* Parse a non-empty string of ASCII digits; -1 on any other byte or on overflow. */
int str_to_u64(struct str s, uint64_t *out);
/* Find byte c; returns its offset or -1. */
long str_chr(struct str s, char c);
/* Decimal digits of v into out (at least 21 bytes); returns the length (no NUL). */
size_t str_fmt_u64(uint64_t v, char *out);
/* Copy into a caller buffer as a C string, truncating; returns `out`. */
char *str_to_cstr(struct str s, char *out, size_t outlen);

#endif
