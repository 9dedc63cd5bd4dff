/*
 * tls/clienthello.c: the ClientHello server-name parser of TLS passthrough (format in
 * clienthello.h). Pure and bounded: handshake fragments are copied into a stack buffer of
 * TLS_CH_MAX_HANDSHAKE bytes, then the message is walked with a cursor whose every read is
 * length-checked. Any thread; no state.
 */
#include <stdbool.h>
#include <string.h>

#include "tls/clienthello.h"

#define REC_HANDSHAKE 22
#define HS_CLIENT_HELLO 1
#define REC_MAX_FRAGMENT 16384
#define EXT_SERVER_NAME 0
#define NAME_TYPE_HOST 0

struct cursor {
    const uint8_t *p;
    size_t len;
    size_t pos;
};

static size_t left(const struct cursor *c)
{
    return c->len - c->pos;
}

static bool get_u8(struct cursor *c, size_t *v)
{
    if (left(c) < 1)
        return false;
    *v = c->p[c->pos++];
    return true;
}

static bool get_u16(struct cursor *c, size_t *v)
{
    if (left(c) < 2)
        return false;
    *v = (size_t)c->p[c->pos] << 8 | c->p[c->pos + 1];
    c->pos += 2;
    return true;
}

/* The next `n` bytes as their own cursor, skipped in `c`. */
static bool get_sub(struct cursor *c, size_t n, struct cursor *sub)
{
    if (left(c) < n)
        return false;
    sub->p = c->p + c->pos;
    sub->len = n;
    sub->pos = 0;
    c->pos += n;
    return true;
}

static bool name_byte_ok(uint8_t ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '-' || ch == '_';
}

/* The server_name extension's data. */
static int parse_server_name(struct cursor *ext, char *sni, size_t snilen)
{
    size_t list_len;
    struct cursor list;
    if (!get_u16(ext, &list_len) || list_len == 0 || list_len != left(ext) ||
        !get_sub(ext, list_len, &list))
        return TLS_CH_INVALID;
    bool found = false;
    while (left(&list) > 0) {
        size_t type;
        size_t n;
        struct cursor name;
        if (!get_u8(&list, &type) || !get_u16(&list, &n) || !get_sub(&list, n, &name))
            return TLS_CH_INVALID;
        if (type != NAME_TYPE_HOST)
            continue;
        /* RFC 6066: no two names of the same type. */
        if (found || n == 0 || n > TLS_CH_SNI_MAX || n >= snilen)
            return TLS_CH_INVALID;
        for (size_t i = 0; i < n; i++) {
            uint8_t ch = name.p[i];
            if (!name_byte_ok(ch))
                return TLS_CH_INVALID;
            sni[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + ('a' - 'A') : ch);
        }
        sni[n] = '\0';
        found = true;
    }
    return found ? TLS_CH_SNI : TLS_CH_NO_SNI;
}

/* A complete ClientHello body. */
static int parse_hello(const uint8_t *p, size_t n, char *sni, size_t snilen)
{
    struct cursor c = {p, n, 0};
    struct cursor skip;
    size_t major;
    size_t minor;
    size_t len;
    if (!get_u8(&c, &major) || !get_u8(&c, &minor) || major != 3)
        return TLS_CH_INVALID;
    if (!get_sub(&c, 32, &skip)) /* random */
        return TLS_CH_INVALID;
    if (!get_u8(&c, &len) || len > 32 || !get_sub(&c, len, &skip)) /* legacy_session_id */
        return TLS_CH_INVALID;
    if (!get_u16(&c, &len) || len < 2 || len % 2 != 0 || !get_sub(&c, len, &skip))
        return TLS_CH_INVALID; /* cipher_suites */
    if (!get_u8(&c, &len) || len < 1 || !get_sub(&c, len, &skip)) /* compression_methods */
        return TLS_CH_INVALID;
    if (left(&c) == 0)
        return TLS_CH_NO_SNI; /* TLS 1.2 and older may send no extensions at all */
    if (!get_u16(&c, &len) || len != left(&c))
        return TLS_CH_INVALID;
    int res = TLS_CH_NO_SNI;
    bool seen = false;
    while (left(&c) > 0) {
        size_t type;
        struct cursor ext;
        if (!get_u16(&c, &type) || !get_u16(&c, &len) || !get_sub(&c, len, &ext))
            return TLS_CH_INVALID;
        if (type != EXT_SERVER_NAME)
            continue;
        if (seen)
            return TLS_CH_INVALID; /* RFC 8446 4.2: one extension of each type */
        seen = true;
        res = parse_server_name(&ext, sni, snilen);
        if (res == TLS_CH_INVALID)
            return res;
    }
    return res;
}

int tls_clienthello_sni(const uint8_t *buf, size_t len, char *sni, size_t snilen)
{
    uint8_t hs[TLS_CH_MAX_HANDSHAKE];
    size_t have = 0; /* handshake bytes gathered in hs */
    size_t need = 0; /* size of the whole message, once its header is in */
    size_t pos = 0;
    unsigned records = 0;
    if (snilen > 0)
        sni[0] = '\0';
    for (;;) {
        /* Stopping at the record bound keeps the promise of TLS_CH_MAX_WIRE. */
        if (records == TLS_CH_MAX_RECORDS)
            return TLS_CH_INVALID;
        size_t avail = len - pos;
        /* The header is checked byte by byte so that garbage is refused at once. */
        if (avail >= 1 && buf[pos] != REC_HANDSHAKE)
            return TLS_CH_INVALID;
        if (avail >= 2 && buf[pos + 1] != 3)
            return TLS_CH_INVALID;
        if (avail >= 3 && buf[pos + 2] > 4)
            return TLS_CH_INVALID;
        if (avail < 5)
            return TLS_CH_INCOMPLETE;
        size_t rlen = (size_t)buf[pos + 3] << 8 | buf[pos + 4];
        if (rlen == 0 || rlen > REC_MAX_FRAGMENT)
            return TLS_CH_INVALID; /* RFC 8446 5.1: no empty handshake fragments */
        records++;
        pos += 5;
        size_t frag = len - pos < rlen ? len - pos : rlen;
        size_t take = frag < sizeof(hs) - have ? frag : sizeof(hs) - have;
        memcpy(hs + have, buf + pos, take);
        have += take;
        if (have >= 1 && hs[0] != HS_CLIENT_HELLO)
            return TLS_CH_INVALID;
        if (have >= 4 && need == 0) {
            need = 4 + ((size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3]);
            if (need > sizeof(hs))
                return TLS_CH_INVALID;
        }
        if (need != 0 && have >= need) {
            int res = parse_hello(hs + 4, need - 4, sni, snilen);
            if (res != TLS_CH_SNI && snilen > 0)
                sni[0] = '\0'; /* a name may have been copied before a later error */
            return res;
        }
        if (frag < rlen)
            return TLS_CH_INCOMPLETE;
        pos += rlen;
    }
}
