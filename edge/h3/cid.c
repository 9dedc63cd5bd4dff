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
