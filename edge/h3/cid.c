/*
 * edge/h3/cid.c: connection IDs, packet steering and the keyed hash (see cid.h).
 */
#include "edge/h3/cid.h"

#include <string.h>
#include <sys/random.h>

#include "lib/util.h"

void h3_cid_make(uint8_t *cid, unsigned worker)
{
    cid[0] = (uint8_t)worker;
    size_t got = 0;
    while (got < H3_CID_LEN - 1) {
        ssize_t n = getrandom(cid + 1 + got, H3_CID_LEN - 1 - got, 0);
        ASSERT(n > 0);
        got += (size_t)n;
    }
}

/* The first byte of the destination connection ID: offset 1 in a short header; in a long
 * header, after the first byte, the version (4) and the ID length (1). */
unsigned h3_cid_owner(const uint8_t *pkt, size_t len, unsigned n_workers)
{
    size_t off = len > 0 && (pkt[0] & 0x80) ? 6 : 1;
    if (len <= off || n_workers <= 1)
        return 0; /* the BPF program's failed load returns 0 too */
    return pkt[off] % n_workers;
}

void h3_cid_bpf(struct sock_filter *prog, unsigned n_workers)
{
    const struct sock_filter p[H3_BPF_LEN] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x80, 0, 2),
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 6), /* long header */
        BPF_JUMP(BPF_JMP | BPF_JA | BPF_K, 1, 0, 0),
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 1), /* short header */
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n_workers ? n_workers : 1),
        BPF_STMT(BPF_RET | BPF_A, 0),
    };
    memcpy(prog, p, sizeof(p));
}

static uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = rotl(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = rotl(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = rotl(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = rotl(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = rotl(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = rotl(v2, 32);                                                                         \
    } while (0)

uint64_t h3_siphash(const uint8_t key[16], const uint8_t *data, size_t len)
{
    uint64_t k0 = le64(key), k1 = le64(key + 8);
    uint64_t v0 = k0 ^ 0x736f6d6570736575ULL, v1 = k1 ^ 0x646f72616e646f6dULL;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ULL, v3 = k1 ^ 0x7465646279746573ULL;
    size_t full = len & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = le64(data + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t last = (uint64_t)len << 56;
    for (size_t i = 0; i < (len & 7); i++)
        last |= (uint64_t)data[full + i] << (8 * i);
    v3 ^= last;
    SIPROUND;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}
