/*
 * tests/unit/edge/h3_cid.c: the QUIC steering helpers of edge/h3/cid.c: connection IDs carry
 * their worker, h3_cid_owner() and the kernel's BPF program (run here by a small interpreter
 * of the instructions it uses) choose the same worker for every packet.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge/h3/cid.h"
#include "tests/unit/tap.h"

/* The classic BPF subset h3_cid_bpf() emits, run on a UDP payload as the kernel does for
 * SO_ATTACH_REUSEPORT_CBPF (an out-of-range load ends the program with 0). */
static unsigned bpf_run(const struct sock_filter *p, size_t n, const uint8_t *pkt, size_t len)
{
    uint32_t a = 0;
    for (size_t pc = 0; pc < n; pc++) {
        const struct sock_filter *i = &p[pc];
        switch (i->code) {
        case BPF_LD | BPF_B | BPF_ABS:
            if (i->k >= len)
                return 0;
            a = pkt[i->k];
            break;
        case BPF_JMP | BPF_JSET | BPF_K:
            pc += (a & i->k) ? i->jt : i->jf;
            break;
        case BPF_JMP | BPF_JA | BPF_K:
            pc += i->k;
            break;
        case BPF_ALU | BPF_MOD | BPF_K:
            a %= i->k;
            break;
        case BPF_RET | BPF_A:
            return a;
        default:
            return 0xffffffffu; /* an instruction this interpreter does not know */
        }
    }
    return 0xfffffffeu;
}

static uint64_t rnd_state = 88172645463325252ULL;
static uint8_t rnd8(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return (uint8_t)rnd_state;
}

int main(void)
{
    uint8_t a[H3_CID_LEN], b[H3_CID_LEN];
    h3_cid_make(a, 3);
    h3_cid_make(b, 3);
    is_int(a[0], 3, "a connection ID starts with its worker");
    ok(memcmp(a + 1, b + 1, H3_CID_LEN - 1) != 0, "the rest is random");

    /* a short-header packet to a:  0x40 | dcid | ... */
    uint8_t shortp[64] = {0x41};
    memcpy(shortp + 1, a, sizeof(a));
    is_int(h3_cid_owner(shortp, sizeof(shortp), 4), 3, "short header: owner from the DCID");
    is_int(h3_cid_owner(shortp, sizeof(shortp), 2), 1, "fewer workers: modulo");
    is_int(h3_cid_owner(shortp, sizeof(shortp), 1), 0, "one worker");
    /* a long header: 0xc0 | version(4) | dcid len | dcid */
    uint8_t longp[64] = {0xc3, 0, 0, 0, 1, H3_CID_LEN};
    memcpy(longp + 6, a, sizeof(a));
    is_int(h3_cid_owner(longp, sizeof(longp), 4), 3, "long header: owner from the DCID");
    is_int(h3_cid_owner(longp, 6, 4), 0, "truncated long header: worker 0");
    is_int(h3_cid_owner(shortp, 1, 4), 0, "truncated short header: worker 0");
    is_int(h3_cid_owner(shortp, 0, 4), 0, "empty datagram: worker 0");

    struct sock_filter prog[H3_BPF_LEN];
    int agree = 1;
    for (unsigned workers = 1; workers <= 9; workers++) {
        h3_cid_bpf(prog, workers);
        for (int t = 0; t < 2000; t++) {
            uint8_t pkt[40];
            size_t len = (size_t)(rnd8() % sizeof(pkt));
            for (size_t i = 0; i < len; i++)
                pkt[i] = rnd8();
            unsigned k = bpf_run(prog, H3_BPF_LEN, pkt, len);
            if (k != h3_cid_owner(pkt, len, workers)) {
                fprintf(stderr, "# workers %u, len %zu: bpf %u, owner %u\n", workers, len, k,
                        h3_cid_owner(pkt, len, workers));
                agree = 0;
            }
        }
    }
    ok(agree, "the BPF program and h3_cid_owner choose the same worker for random datagrams");
    h3_cid_bpf(prog, 4);
    is_int(bpf_run(prog, H3_BPF_LEN, shortp, sizeof(shortp)), 3, "BPF: short header to worker 3");
    is_int(bpf_run(prog, H3_BPF_LEN, longp, sizeof(longp)), 3, "BPF: long header to worker 3");

    return tap_done();
}
