/*
 * tests/unit/balance/hash.c: balance/hash.c: SipHash-2-4 against the reference vectors, the
 * pinned values that every node must agree on, and weighted rendezvous hashing: even spread,
 * weighted proportions, removal of a server moves only its keys (spread over the others),
 * raising a weight only gains keys, the answer does not depend on the order of the arrays, and
 * the failover rank. Random keys: SEED= reproduces a run.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balance/balance.h"
#include "balance/balance_int.h"
#include "lib/util.h"
#include "lib/hash.h"
#include "tests/unit/tap.h"

#define NKEYS 100000

static char keybuf[NKEYS][24];
static struct str keys[NKEYS];

static void make_keys(void)
{
    for (size_t i = 0; i < NKEYS; i++) {
        unsigned a = (unsigned)rand();
        unsigned b = (unsigned)rand();
        int n = snprintf(keybuf[i], sizeof(keybuf[i]), "/o/%08x%08x", a, b);
        keys[i] = str_make(keybuf[i], (size_t)n);
    }
}

/* `got` of `n` independent trials of probability p: within 6 standard deviations of n * p
 * (a false failure about once in 500 million checks). */
static bool binom(long got, long n, double p)
{
    double want = (double)n * p;
    double tol = 6 * sqrt((double)n * p * (1 - p));
    bool r = fabs((double)got - want) <= tol;
    if (!r)
        printf("#   got %ld, want %.0f +- %.0f\n", got, want, tol);
    return r;
}

static void siphash_vectors(void)
{
    /* https://github.com/veorq/SipHash vectors.h: key 00..0f, message 00 01 02 .. */
    uint8_t key[16];
    uint8_t msg[64];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    ok(siphash24(key, msg, 0) == 0x726fdb47dd0e0e31ULL, "siphash: empty message");
    ok(siphash24(key, msg, 8) == 0x93f5f5799a932462ULL, "siphash: 8 bytes");
    ok(siphash24(key, msg, 15) == 0xa129ca6149be45e5ULL, "siphash: 15 bytes (the paper)");
    ok(siphash24(key, msg, 63) == 0x958a324ceb064572ULL, "siphash: 63 bytes");
}

/* These values decide which shield holds which object on every node of a cluster: a change
 * here reshuffles every cache. Do not update them without meaning to. They were checked against
 * an independent Python implementation of SipHash-2-4 (itself checked against the reference
 * vectors), fmix64 and the logarithmic score. */
static void pinned(void)
{
    ok(balance_hash(STR_LIT("")) == siphash24(balance_hash_key, "", 0),
       "balance_hash is SipHash under the fixed key");
    ok(balance_hash(STR_NULL) == balance_hash(STR_LIT("")), "STR_NULL hashes as empty");
    printf("# balance_hash(\"\") = %016llx, (\"shield-a:443\") = %016llx\n",
           (unsigned long long)balance_hash(STR_LIT("")),
           (unsigned long long)balance_hash(STR_LIT("shield-a:443")));
    ok(balance_hash(STR_LIT("")) == 0x6c62d80d378ef8f7ULL, "pinned: balance_hash(\"\")");
    ok(balance_hash(STR_LIT("shield-a:443")) == 0xac8304adc0816edeULL,
       "pinned: balance_hash(\"shield-a:443\")");

    const struct str ids[] = {STR_LIT("shield-a:443"), STR_LIT("shield-b:443"),
                              STR_LIT("shield-c:443"), STR_LIT("shield-d:443")};
    char got[64] = "";
    for (int k = 0; k < 16; k++) {
        char key[32];
        int n = snprintf(key, sizeof(key), "example.com/img/%d.png", k);
        int r = balance_rendezvous(ids, NULL, NULL, ARRAY_SIZE(ids), str_make(key, (size_t)n));
        got[k] = (char)('a' + r);
    }
    printf("# rendezvous of 16 keys over 4 shields: %s\n", got);
    is_str(got, "accadaabcdacdbba", "pinned: the shields of 16 keys");
}

static void spread_and_removal(void)
{
    const struct str ids[] = {STR_LIT("10.0.0.1:80"), STR_LIT("10.0.0.2:80"),
                              STR_LIT("10.0.0.3:80"), STR_LIT("10.0.0.4:80"),
                              STR_LIT("10.0.0.5:80")};
    enum { N = ARRAY_SIZE(ids) };
    static int first[NKEYS];
    long count[N] = {0};
    for (size_t i = 0; i < NKEYS; i++) {
        first[i] = balance_rendezvous(ids, NULL, NULL, N, keys[i]);
        count[first[i]]++;
    }
    for (int s = 0; s < N; s++)
        ok(binom(count[s], NKEYS, 1.0 / N), "5 servers: server %d gets ~1/5 (%ld)", s, count[s]);

    for (int down = 0; down < N; down++) {
        bool healthy[N] = {true, true, true, true, true};
        healthy[down] = false;
        long moved = 0;
        long stayed_wrong = 0;
        long to[N] = {0};
        for (size_t i = 0; i < NKEYS; i++) {
            int r = balance_rendezvous(ids, NULL, healthy, N, keys[i]);
            if (r != first[i]) {
                moved++;
                to[r]++;
                if (first[i] != down)
                    stayed_wrong++;
            } else if (r == down) {
                stayed_wrong++;
            }
        }
        is_int(stayed_wrong, 0, "server %d unhealthy: only its keys move", down);
        is_int(moved, count[down], "server %d unhealthy: all its keys move", down);
        ok(binom(moved, NKEYS, 1.0 / N), "server %d unhealthy: about 1/5 of keys move", down);
        bool even = true;
        for (int s = 0; s < N; s++)
            if (s != down && !binom(to[s], count[down], 1.0 / (N - 1)))
                even = false;
        ok(even, "server %d unhealthy: its keys spread evenly over the other 4", down);
    }

    /* Removing a server from the list (not just marking it) is the same for every other key. */
    long diff = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        int r = balance_rendezvous(ids + 1, NULL, NULL, N - 1, keys[i]) + 1;
        if (first[i] != 0 && r != first[i])
            diff++;
    }
    is_int(diff, 0, "server removed from the list: other keys keep their server");
}

static void weighted(void)
{
    const struct str ids[] = {STR_LIT("w1"), STR_LIT("w2"), STR_LIT("w3"), STR_LIT("w4")};
    const unsigned w[] = {1, 2, 3, 4};
    long count[4] = {0};
    static int first[NKEYS];
    for (size_t i = 0; i < NKEYS; i++) {
        first[i] = balance_rendezvous(ids, w, NULL, 4, keys[i]);
        count[first[i]]++;
    }
    for (int s = 0; s < 4; s++)
        ok(binom(count[s], NKEYS, w[s] / 10.0), "weights 1,2,3,4: server %d gets %u/10 (%ld)", s,
           w[s], count[s]);

    /* Raising one weight: keys only move to that server. */
    const unsigned w2[] = {1, 2, 6, 4};
    long gained = 0;
    long wrong = 0;
    for (size_t i = 0; i < NKEYS; i++) {
        int r = balance_rendezvous(ids, w2, NULL, 4, keys[i]);
        if (r != first[i]) {
            if (r == 2)
                gained++;
            else
                wrong++;
        }
    }
    is_int(wrong, 0, "raising a weight moves keys only to that server");
    ok(binom(count[2] + gained, NKEYS, 6.0 / 13), "weight 3 -> 6: its share is 6/13");

    const unsigned wz[] = {0, 2, 3, 4};
    long to_zero = 0;
    for (size_t i = 0; i < 1000; i++)
        to_zero += balance_rendezvous(ids, wz, NULL, 4, keys[i]) == 0;
    is_int(to_zero, 0, "weight 0: never chosen");
}

static void order_and_rank(void)
{
    const struct str ids[] = {STR_LIT("a"), STR_LIT("b"), STR_LIT("c"),
                              STR_LIT("d"), STR_LIT("e"), STR_LIT("f")};
    const struct str rev[] = {STR_LIT("f"), STR_LIT("e"), STR_LIT("d"),
                              STR_LIT("c"), STR_LIT("b"), STR_LIT("a")};
    const unsigned w[] = {1, 5, 2, 9, 3, 1};
    const unsigned wrev[] = {1, 3, 9, 2, 5, 1};
    enum { N = ARRAY_SIZE(ids) };
    uint64_t h[N];
    for (int i = 0; i < N; i++)
        h[i] = balance_hash(ids[i]);
    long order_dep = 0;
    long hashed_diff = 0;
    long rank_bad = 0;
    for (size_t i = 0; i < 10000; i++) {
        int r = balance_rendezvous(ids, w, NULL, N, keys[i]);
        int rr = balance_rendezvous(rev, wrev, NULL, N, keys[i]);
        if (rr != N - 1 - r)
            order_dep++;
        if (balance_rendezvous_hashed(h, w, NULL, N, balance_hash(keys[i])) != r)
            hashed_diff++;
        int order[N];
        size_t n = balance_rendezvous_rank(h, w, NULL, N, balance_hash(keys[i]), order, N);
        bool healthy[N] = {true, true, true, true, true, true};
        bool okr = n == N;
        /* order[j] is the winner once order[0..j) are unhealthy */
        for (size_t j = 0; okr && j < n; j++) {
            okr = balance_rendezvous_hashed(h, w, healthy, N, balance_hash(keys[i])) == order[j];
            healthy[order[j]] = false;
        }
        if (!okr)
            rank_bad++;
    }
    is_int(order_dep, 0, "the winner does not depend on the order of the arrays");
    is_int(hashed_diff, 0, "balance_rendezvous_hashed agrees with balance_rendezvous");
    is_int(rank_bad, 0, "rank: each next entry is the winner once the previous are down");

    int order[N];
    bool healthy[N] = {true, false, true, false, true, true};
    is_int(balance_rendezvous_rank(h, w, healthy, N, 42, order, N), 4, "rank skips unhealthy");
    is_int(balance_rendezvous_rank(h, w, healthy, N, 42, order, 2), 2, "rank stops at max");
    is_int(balance_rendezvous_rank(h, w, NULL, N, 42, order, 0), 0, "rank with max 0");

    bool none[N] = {false};
    is_int(balance_rendezvous(ids, NULL, none, N, STR_LIT("k")), -1, "none healthy: -1");
    is_int(balance_rendezvous(ids, NULL, NULL, 0, STR_LIT("k")), -1, "no server: -1");
    const unsigned zero[N] = {0};
    is_int(balance_rendezvous(ids, zero, NULL, N, STR_LIT("k")), -1, "all weights 0: -1");
    is_int(balance_rendezvous(ids, NULL, NULL, 1, STR_LIT("k")), 0, "one server: it");

    /* The score is finite and positive at the extremes of u. */
    double lo = balance_score(0, 0, 1.0);
    ok(lo > 0 && lo < 1e300, "score at hash 0 is finite and positive");
    ok(balance_score(1, 0, 1000.0) > 0, "score is positive");
}

int main(void)
{
    tap_seed();
    make_keys();
    siphash_vectors();
    pinned();
    spread_and_removal();
    weighted();
    order_and_rank();
    return tap_done();
}
