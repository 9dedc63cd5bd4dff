/*
 * tests/unit/tls/clienthello.c: tls_clienthello_sni() over ClientHellos captured from real
 * clients (clienthello_vectors.h) and hand-built ones: every prefix, records split several
 * ways, bad lengths and names, the bounds, and random mutations (SEED= to replay).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/tap.h"
#include "tests/unit/tls/clienthello_vectors.h"
#include "tls/clienthello.h"

#define BIG (64 * 1024)

struct vec {
    const char *what;
    const uint8_t *p;
    size_t len;
    int want;
    const char *name;
};

static const struct vec captures[] = {
    {"curl", ch_curl_www_example_com, sizeof(ch_curl_www_example_com), TLS_CH_SNI,
     "www.example.com"},
    {"openssl", ch_openssl_api_test_internal, sizeof(ch_openssl_api_test_internal), TLS_CH_SNI,
     "api.test.internal"},
    {"openssl tls1.2", ch_openssl_tls12_legacy_example_org,
     sizeof(ch_openssl_tls12_legacy_example_org), TLS_CH_SNI, "legacy.example.org"},
    {"openssl no SNI", ch_openssl_nosni, sizeof(ch_openssl_nosni), TLS_CH_NO_SNI, ""},
    {"python", ch_python_py_example_net, sizeof(ch_python_py_example_net), TLS_CH_SNI,
     "py.example.net"},
};
#define N_CAPTURES (sizeof(captures) / sizeof(captures[0]))

static int parse(const uint8_t *p, size_t len, char *sni)
{
    return tls_clienthello_sni(p, len, sni, TLS_CH_SNI_MAX + 1);
}

/* ---- building ClientHellos --------------------------------------------------------------- */

struct out {
    uint8_t b[BIG];
    size_t n;
};

static void put(struct out *o, const void *p, size_t n)
{
    if (o->n + n > sizeof(o->b))
        abort();
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void put8(struct out *o, unsigned v)
{
    uint8_t b = (uint8_t)v;
    put(o, &b, 1);
}

static void put16(struct out *o, unsigned v)
{
    put8(o, v >> 8);
    put8(o, v);
}

/* One server_name extension holding `n` entries (type, name). */
static void ext_sni(struct out *o, size_t n, const unsigned *types, const char *const *names)
{
    size_t list = 0;
    for (size_t i = 0; i < n; i++)
        list += 3 + strlen(names[i]);
    put16(o, 0);
    put16(o, (unsigned)(list + 2));
    put16(o, (unsigned)list);
    for (size_t i = 0; i < n; i++) {
        put8(o, types[i]);
        put16(o, (unsigned)strlen(names[i]));
        put(o, names[i], strlen(names[i]));
    }
}

static void ext_host(struct out *o, const char *name)
{
    unsigned t = 0;
    ext_sni(o, 1, &t, &name);
}

/* An opaque extension of `n` bytes (padding, 21). */
static void ext_pad(struct out *o, size_t n)
{
    put16(o, 21);
    put16(o, (unsigned)n);
    for (size_t i = 0; i < n; i++)
        put8(o, 0);
}

/* A ClientHello body with the given extensions block (NULL: no extensions field). */
static void hello_body(struct out *o, const struct out *exts, size_t sid_len, size_t cs_len)
{
    put16(o, 0x0303);
    for (int i = 0; i < 32; i++)
        put8(o, (unsigned)i);
    put8(o, (unsigned)sid_len);
    for (size_t i = 0; i < sid_len; i++)
        put8(o, 0xaa);
    put16(o, (unsigned)cs_len);
    for (size_t i = 0; i < cs_len; i++)
        put8(o, 0x13);
    put8(o, 1);
    put8(o, 0);
    if (exts) {
        put16(o, (unsigned)exts->n);
        put(o, exts->b, exts->n);
    }
}

/* Wrap a body into a handshake message in records of at most `frag` bytes. */
static void records(struct out *o, const struct out *body, size_t frag)
{
    static struct out msg;
    msg.n = 0;
    put8(&msg, 1);
    put8(&msg, (unsigned)(body->n >> 16));
    put16(&msg, (unsigned)(body->n & 0xffff));
    put(&msg, body->b, body->n);
    for (size_t off = 0; off < msg.n; off += frag) {
        size_t n = msg.n - off < frag ? msg.n - off : frag;
        put8(o, 22);
        put16(o, 0x0301);
        put16(o, (unsigned)n);
        put(o, msg.b + off, n);
    }
}

/* Re-split the records of a single-record capture into records of `frag` bytes. */
static void resplit(struct out *o, const uint8_t *p, size_t len, size_t frag)
{
    static struct out body;
    body.n = 0;
    /* skip record header (5) and handshake header (4) */
    put(&body, p + 9, len - 9);
    o->n = 0;
    records(o, &body, frag);
}

static int build_with_exts(const struct out *exts, char *sni)
{
    static struct out body;
    static struct out wire;
    body.n = 0;
    wire.n = 0;
    hello_body(&body, exts, 32, 4);
    records(&wire, &body, 16384);
    return parse(wire.b, wire.n, sni);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_captures(void)
{
    char sni[TLS_CH_SNI_MAX + 1];
    for (size_t i = 0; i < N_CAPTURES; i++) {
        const struct vec *v = &captures[i];
        is_int(parse(v->p, v->len, sni), v->want, "%s: complete", v->what);
        is_str(sni, v->name, "%s: name", v->what);
        bool prefixes_ok = true;
        for (size_t k = 0; k < v->len; k++) {
            sni[0] = 'x';
            sni[1] = '\0';
            if (parse(v->p, k, sni) != TLS_CH_INCOMPLETE || sni[0] != '\0') {
                prefixes_ok = false;
                printf("# %s: prefix of %zu bytes not incomplete\n", v->what, k);
                break;
            }
        }
        ok(prefixes_ok, "%s: every prefix (0..%zu bytes) is incomplete", v->what, v->len - 1);

        static uint8_t more[BIG];
        memcpy(more, v->p, v->len);
        memcpy(more + v->len, "\x17\x03\x03\x00\x05hello GET / HTTP/1.1\r\n", 27);
        is_int(parse(more, v->len + 27, sni), v->want, "%s: bytes after it are ignored", v->what);
        is_str(sni, v->name, "%s: name with bytes after it", v->what);
    }
}

static void test_fragmented(void)
{
    static const size_t frags[] = {17, 100, 211, 256};
    char sni[TLS_CH_SNI_MAX + 1];
    static struct out o;
    for (size_t i = 0; i < N_CAPTURES; i++) {
        const struct vec *v = &captures[i];
        for (size_t f = 0; f < sizeof(frags) / sizeof(frags[0]); f++) {
            resplit(&o, v->p, v->len, frags[f]);
            is_int(parse(o.b, o.n, sni), v->want, "%s in records of %zu: complete", v->what,
                   frags[f]);
            is_str(sni, v->name, "%s in records of %zu: name", v->what, frags[f]);
            bool prefixes_ok = true;
            for (size_t k = 0; k < o.n && prefixes_ok; k++)
                prefixes_ok = parse(o.b, k, sni) == TLS_CH_INCOMPLETE;
            ok(prefixes_ok, "%s in records of %zu: every prefix incomplete", v->what, frags[f]);
        }
        /* One-byte records would need more than TLS_CH_MAX_RECORDS records. */
        resplit(&o, v->p, v->len, 1);
        is_int(parse(o.b, o.n, sni), TLS_CH_INVALID, "%s in one-byte records: over the bound",
               v->what);
    }
    /* Exactly TLS_CH_MAX_RECORDS records is fine. */
    const struct vec *v = &captures[1];
    size_t hs = v->len - 5;
    size_t frag = (hs + TLS_CH_MAX_RECORDS - 1) / TLS_CH_MAX_RECORDS;
    resplit(&o, v->p, v->len, frag);
    is_int(parse(o.b, o.n, sni), TLS_CH_SNI, "%zu records of %zu bytes: complete",
           (hs + frag - 1) / frag, frag);

    /* A record of another type between two fragments. */
    resplit(&o, v->p, v->len, 100);
    static struct out bad;
    bad.n = 0;
    put(&bad, o.b, 105);
    put(&bad, "\x15\x03\x03\x00\x02\x02\x28", 7);
    put(&bad, o.b + 105, o.n - 105);
    is_int(parse(bad.b, bad.n, sni), TLS_CH_INVALID, "alert record between fragments");
}

static void test_big_hello(void)
{
    char sni[TLS_CH_SNI_MAX + 1];
    static struct out exts;
    static struct out body;
    static struct out wire;
    /* A ClientHello of exactly TLS_CH_MAX_HANDSHAKE bytes, over two records, SNI last. */
    exts.n = 0;
    size_t fixed = 2 + 32 + 1 + 32 + 2 + 4 + 1 + 1 + 2; /* body before the extensions */
    size_t sni_ext = 4 + 2 + 3 + strlen("big.example");
    ext_pad(&exts, TLS_CH_MAX_HANDSHAKE - 4 - fixed - sni_ext - 4);
    ext_host(&exts, "big.example");
    body.n = 0;
    hello_body(&body, &exts, 32, 4);
    is_int(body.n + 4, TLS_CH_MAX_HANDSHAKE, "hand-built hello has the maximum size");
    wire.n = 0;
    records(&wire, &body, 10000);
    is_int(parse(wire.b, wire.n, sni), TLS_CH_SNI, "maximum-size hello over two records");
    is_str(sni, "big.example", "maximum-size hello: name");
    is_int(parse(wire.b, wire.n - 1, sni), TLS_CH_INCOMPLETE, "maximum-size hello less a byte");

    /* One byte more is refused as soon as the handshake header is seen. */
    exts.n = 0;
    ext_pad(&exts, TLS_CH_MAX_HANDSHAKE - 4 - fixed - sni_ext - 4 + 1);
    ext_host(&exts, "big.example");
    body.n = 0;
    hello_body(&body, &exts, 32, 4);
    wire.n = 0;
    records(&wire, &body, 16384);
    is_int(parse(wire.b, 9, sni), TLS_CH_INVALID, "hello over the bound: refused at its header");

    /* The TLS_CH_MAX_WIRE promise, tight: the worst case is 31 one-byte records announcing a
     * maximum-size message, then one record with the rest. */
    static const uint8_t head[4] = {1, 0x00, 0x3f, 0xfc};
    wire.n = 0;
    for (int i = 0; i < TLS_CH_MAX_RECORDS - 1; i++) {
        put8(&wire, 22);
        put16(&wire, 0x0303);
        put16(&wire, 1);
        put8(&wire, i < 4 ? head[i] : 0);
    }
    put8(&wire, 22);
    put16(&wire, 0x0303);
    put16(&wire, 16384);
    while (wire.n < TLS_CH_MAX_WIRE + 64)
        put8(&wire, 0);
    is_int(parse(wire.b, TLS_CH_MAX_WIRE - 1, sni), TLS_CH_INCOMPLETE,
           "worst-case fragmentation: incomplete at TLS_CH_MAX_WIRE - 1 bytes");
    is_int(parse(wire.b, TLS_CH_MAX_WIRE, sni), TLS_CH_INVALID,
           "worst-case fragmentation: decided at TLS_CH_MAX_WIRE bytes");

    /* After 32 records of an unfinished message a 33rd would be needed: refused at once. */
    wire.n = 0;
    for (int i = 0; i < TLS_CH_MAX_RECORDS; i++) {
        put8(&wire, 22);
        put16(&wire, 0x0303);
        put16(&wire, 1);
        put8(&wire, i < 4 ? head[i] : 0);
    }
    is_int(parse(wire.b, wire.n - 6, sni), TLS_CH_INCOMPLETE, "31 one-byte records: incomplete");
    is_int(parse(wire.b, wire.n, sni), TLS_CH_INVALID, "32 one-byte records, unfinished: refused");
}

static void test_names(void)
{
    char sni[TLS_CH_SNI_MAX + 1];
    static struct out exts;

    exts.n = 0;
    ext_host(&exts, "MiXeD.Example.COM");
    is_int(build_with_exts(&exts, sni), TLS_CH_SNI, "mixed case name");
    is_str(sni, "mixed.example.com", "name is lower-cased");

    exts.n = 0;
    ext_host(&exts, "under_score-1.x");
    is_int(build_with_exts(&exts, sni), TLS_CH_SNI, "underscore, digit and dash");
    is_str(sni, "under_score-1.x", "underscore name");

    static const char *const bad[] = {"a b.com", "a/b.com", "a\x01.com", "\xc3\xa9.com",
                                      "a:443",   "a*.com",  ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        exts.n = 0;
        ext_host(&exts, bad[i]);
        sni[0] = 'x';
        sni[1] = '\0';
        is_int(build_with_exts(&exts, sni), TLS_CH_INVALID, "bad name #%zu refused", i);
        is_str(sni, "", "bad name #%zu: sni left empty", i);
    }
    /* A NUL inside a name (the builder uses strlen, so build it by hand). */
    exts.n = 0;
    put16(&exts, 0);
    put16(&exts, 2 + 3 + 3);
    put16(&exts, 3 + 3);
    put8(&exts, 0);
    put16(&exts, 3);
    put(&exts, "a\0b", 3);
    is_int(build_with_exts(&exts, sni), TLS_CH_INVALID, "NUL inside the name");

    char name[300];
    memset(name, 'a', sizeof(name));
    name[255] = '\0';
    exts.n = 0;
    ext_host(&exts, name);
    is_int(build_with_exts(&exts, sni), TLS_CH_SNI, "255-byte name accepted");
    is_int(strlen(sni), 255, "255-byte name copied whole");
    name[255] = 'a';
    name[256] = '\0';
    exts.n = 0;
    ext_host(&exts, name);
    is_int(build_with_exts(&exts, sni), TLS_CH_INVALID, "256-byte name refused");

    /* A caller buffer too small for the name. */
    exts.n = 0;
    ext_host(&exts, "abcdefgh");
    {
        static struct out body;
        static struct out wire;
        body.n = 0;
        wire.n = 0;
        hello_body(&body, &exts, 0, 2);
        records(&wire, &body, 16384);
        char small[8];
        is_int(tls_clienthello_sni(wire.b, wire.n, small, sizeof(small)), TLS_CH_INVALID,
               "name longer than the caller's buffer refused");
        char fits[9];
        is_int(tls_clienthello_sni(wire.b, wire.n, fits, sizeof(fits)), TLS_CH_SNI,
               "name that just fits");
        is_str(fits, "abcdefgh", "name that just fits: copied");
    }

    /* Two host_names in one list; a second server_name extension. */
    {
        static const unsigned types[] = {0, 0};
        static const char *const names[] = {"one.example", "two.example"};
        exts.n = 0;
        ext_sni(&exts, 2, types, names);
        is_int(build_with_exts(&exts, sni), TLS_CH_INVALID, "two host_names refused");
    }
    exts.n = 0;
    ext_host(&exts, "one.example");
    ext_host(&exts, "one.example");
    is_int(build_with_exts(&exts, sni), TLS_CH_INVALID, "duplicate server_name extension");

    /* Only an unknown name type: no SNI. An unknown type before host_name is skipped. */
    {
        static const unsigned types[] = {7, 0};
        static const char *const names[] = {"opaque", "after.example"};
        exts.n = 0;
        ext_sni(&exts, 1, types, names);
        is_int(build_with_exts(&exts, sni), TLS_CH_NO_SNI, "only an unknown name type");
        exts.n = 0;
        ext_sni(&exts, 2, types, names);
        is_int(build_with_exts(&exts, sni), TLS_CH_SNI, "unknown name type, then host_name");
        is_str(sni, "after.example", "host_name after an unknown type");
    }

    /* server_name after other extensions. */
    exts.n = 0;
    ext_pad(&exts, 10);
    put16(&exts, 43); /* supported_versions */
    put16(&exts, 3);
    put8(&exts, 2);
    put16(&exts, 0x0304);
    ext_host(&exts, "last.example");
    is_int(build_with_exts(&exts, sni), TLS_CH_SNI, "server_name after other extensions");
    is_str(sni, "last.example", "server_name after other extensions: name");

    /* Empty extensions block; no extensions field at all (TLS 1.2). */
    exts.n = 0;
    is_int(build_with_exts(&exts, sni), TLS_CH_NO_SNI, "empty extensions block");
    is_int(build_with_exts(NULL, sni), TLS_CH_NO_SNI, "no extensions field");
    /* server_name with an empty body (what servers send back, never clients). */
    exts.n = 0;
    put16(&exts, 0);
    put16(&exts, 0);
    is_int(build_with_exts(&exts, sni), TLS_CH_INVALID, "empty server_name extension");
}

static void test_bad_lengths(void)
{
    char sni[TLS_CH_SNI_MAX + 1];
    static struct out exts;
    static struct out body;
    static struct out wire;

    body.n = 0;
    wire.n = 0;
    exts.n = 0;
    ext_host(&exts, "ok.example");
    hello_body(&body, &exts, 33, 4);
    records(&wire, &body, 16384);
    is_int(parse(wire.b, wire.n, sni), TLS_CH_INVALID, "session id of 33 bytes");

    body.n = 0;
    wire.n = 0;
    hello_body(&body, &exts, 0, 3);
    records(&wire, &body, 16384);
    is_int(parse(wire.b, wire.n, sni), TLS_CH_INVALID, "odd cipher suites length");

    body.n = 0;
    wire.n = 0;
    hello_body(&body, &exts, 0, 0);
    records(&wire, &body, 16384);
    is_int(parse(wire.b, wire.n, sni), TLS_CH_INVALID, "no cipher suites");

    /* Trailing byte inside the message, after the extensions. */
    body.n = 0;
    wire.n = 0;
    hello_body(&body, &exts, 0, 2);
    put8(&body, 0);
    records(&wire, &body, 16384);
    is_int(parse(wire.b, wire.n, sni), TLS_CH_INVALID, "byte after the extensions");

    /* Extensions length one short and one long, and an extension running past the end. */
    const struct vec *v = &captures[1];
    static uint8_t m[BIG];
    size_t ext_len_off = 0;
    {
        /* find the extensions length: after sid, suites and compression */
        size_t p = 9 + 2 + 32;
        p += 1 + v->p[p];
        p += 2 + ((size_t)v->p[p] << 8 | v->p[p + 1]);
        p += 1 + v->p[p];
        ext_len_off = p;
        size_t el = (size_t)v->p[p] << 8 | v->p[p + 1];
        is_int(ext_len_off + 2 + el, v->len, "capture: extensions end with the record");
    }
    for (int d = -1; d <= 1; d += 2) {
        memcpy(m, v->p, v->len);
        size_t el = ((size_t)m[ext_len_off] << 8 | m[ext_len_off + 1]) + (size_t)d;
        m[ext_len_off] = (uint8_t)(el >> 8);
        m[ext_len_off + 1] = (uint8_t)el;
        is_int(parse(m, v->len, sni), TLS_CH_INVALID, "extensions length off by %d", d);
    }
    memcpy(m, v->p, v->len);
    m[ext_len_off + 2 + 2] = 0xff; /* first extension's length */
    is_int(parse(m, v->len, sni), TLS_CH_INVALID, "extension longer than the block");

    /* Record layer. */
    static const struct {
        const char *what;
        const char *bytes;
        size_t len;
        int want;
    } rec[] = {
        {"HTTP request, first byte", "G", 1, TLS_CH_INVALID},
        {"HTTP request", "GET / HTTP/1.1\r\n", 16, TLS_CH_INVALID},
        {"SSLv2 hello", "\x80\x2e\x01\x00\x02", 5, TLS_CH_INVALID},
        {"record version 2.0", "\x16\x02", 2, TLS_CH_INVALID},
        {"record version 3.5", "\x16\x03\x05", 3, TLS_CH_INVALID},
        {"record of length 0", "\x16\x03\x01\x00\x00", 5, TLS_CH_INVALID},
        {"record of 16385", "\x16\x03\x01\x40\x01\x01", 6, TLS_CH_INVALID},
        {"server hello", "\x16\x03\x03\x00\x04\x02", 6, TLS_CH_INVALID},
        {"handshake of 16381 bytes", "\x16\x03\x01\x00\x04\x01\x00\x3f\xfd", 9, TLS_CH_INVALID},
        {"empty input", "", 0, TLS_CH_INCOMPLETE},
        {"record header only", "\x16\x03\x01\x00\x04", 5, TLS_CH_INCOMPLETE},
        {"handshake header", "\x16\x03\x01\x00\x04\x01\x00\x3f\xfc", 9, TLS_CH_INCOMPLETE},
        {"hello too short to parse", "\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03", 10,
         TLS_CH_INVALID},
        {"empty hello", "\x16\x03\x01\x00\x04\x01\x00\x00\x00", 9, TLS_CH_INVALID},
    };
    for (size_t i = 0; i < sizeof(rec) / sizeof(rec[0]); i++)
        is_int(parse((const uint8_t *)rec[i].bytes, rec[i].len, sni), rec[i].want, "%s",
               rec[i].what);
}

/* Random mutations of the captures: any answer is fine but a crash (ASan builds) or an
 * INCOMPLETE for a buffer of TLS_CH_MAX_WIRE bytes; SNI names obey the charset. */
static void test_mutations(void)
{
    tap_seed();
    static uint8_t m[TLS_CH_MAX_WIRE];
    char sni[TLS_CH_SNI_MAX + 1];
    bool names_ok = true;
    bool decided = true;
    int counts[4] = {0, 0, 0, 0};
    for (int iter = 0; iter < 20000; iter++) {
        const struct vec *v = &captures[(size_t)rand() % N_CAPTURES];
        size_t len = v->len;
        memcpy(m, v->p, len);
        int flips = 1 + rand() % 4;
        for (int f = 0; f < flips; f++)
            m[(size_t)rand() % len] = (uint8_t)rand();
        if (rand() % 4 == 0)
            len = (size_t)rand() % (len + 1);
        int r = parse(m, len, sni);
        counts[r + 2]++;
        if (r == TLS_CH_SNI) {
            for (const char *c = sni; *c; c++)
                if (!(*c == '.' || *c == '-' || *c == '_' || (*c >= 'a' && *c <= 'z') ||
                      (*c >= '0' && *c <= '9')))
                    names_ok = false;
        } else if (sni[0] != '\0') {
            names_ok = false;
        }
        /* pad to the wire bound with valid-looking records */
        if (r == TLS_CH_INCOMPLETE && len == v->len) {
            for (size_t k = len; k < sizeof(m); k++)
                m[k] = (uint8_t)rand();
            if (parse(m, sizeof(m), sni) == TLS_CH_INCOMPLETE)
                decided = false;
        }
    }
    printf("# mutations: %d invalid, %d incomplete, %d without SNI, %d with SNI\n", counts[1],
           counts[0], counts[2], counts[3]);
    ok(names_ok, "mutated inputs: names only from [a-z0-9._-], empty unless found");
    ok(decided, "mutated inputs: never incomplete at TLS_CH_MAX_WIRE bytes");
}

int main(void)
{
    test_captures();
    test_fragmented();
    test_big_hello();
    test_names();
    test_bad_lengths();
    test_mutations();
    return tap_done();
}
