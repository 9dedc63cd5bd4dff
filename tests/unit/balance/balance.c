/*
 * tests/unit/balance/balance.c: balance/balance.c: smooth weighted round-robin (nginx's
 * sequence and exact counts), least connections (least loaded, weights, ties taking turns),
 * rendezvous picks (the same as balance_rendezvous(), next choice on exclusion or max_conns),
 * max_conns, retry exclusions, health states and probing, slow start.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balance/balance.h"
#include "lib/util.h"
#include "tests/unit/tap.h"

#define T0 1000000

static struct balance *make(enum balance_algo algo, uint32_t slow_start_ms, const unsigned *w,
                            size_t n)
{
    static char names[16][8];
    struct balance_server_conf sc[16];
    ASSERT(n <= 16);
    memset(sc, 0, sizeof(sc));
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof(names[i]), "%c:80", (char)('a' + i));
        sc[i].id = str_cstr(names[i]);
        sc[i].weight = w[i];
        sc[i].user = names[i];
    }
    struct balance_conf c = {.algo = algo, .slow_start_ms = slow_start_ms};
    struct balance *b;
    ASSERT(balance_create(&b, &c, sc, n) == 0);
    return b;
}

/* `n` picks as letters */
static const char *seq(struct balance *b, int64_t now, int n)
{
    static char s[256];
    ASSERT(n < (int)sizeof(s));
    for (int i = 0; i < n; i++) {
        int r = balance_pick(b, STR_NULL, now, NULL, 0);
        s[i] = r < 0 ? '-' : (char)('a' + r);
    }
    s[n] = '\0';
    return s;
}

static void create_errors(void)
{
    struct balance_conf c = {.algo = BALANCE_ROUND_ROBIN};
    struct balance_server_conf sc[2] = {{.id = STR_LIT("a")}, {.id = STR_LIT("b")}};
    struct balance *b = (struct balance *)1;
    is_int(balance_create(&b, &c, sc, 2), 0, "create");
    is_int(balance_count(b), 2, "count");
    is_int(balance_pick(b, STR_NULL, T0, NULL, 0), 0, "weight 0 means 1: a");
    is_int(balance_pick(b, STR_NULL, T0, NULL, 0), 1, "then b");
    balance_destroy(&b);
    ok(b == NULL, "destroy clears the pointer");
    balance_destroy(&b);

    sc[1].id = STR_LIT("a");
    is_int(balance_create(&b, &c, sc, 2), OP_EINVAL, "duplicate id refused");
    ok(b == NULL, "*out NULL on error");
    sc[1].id = STR_NULL;
    is_int(balance_create(&b, &c, sc, 2), OP_EINVAL, "empty id refused");
    sc[1].id = STR_LIT("b");
    sc[1].weight = BALANCE_WEIGHT_MAX + 1;
    is_int(balance_create(&b, &c, sc, 2), OP_EINVAL, "weight over the max refused");
    sc[1].weight = BALANCE_WEIGHT_MAX;
    sc[1].initial = HEALTH_PROBING;
    is_int(balance_create(&b, &c, sc, 2), OP_EINVAL, "initial probing refused");
    sc[1].initial = HEALTH_UNHEALTHY;
    c.algo = (enum balance_algo)7;
    is_int(balance_create(&b, &c, sc, 2), OP_EINVAL, "unknown algorithm refused");
    c.algo = BALANCE_HASH;
    is_int(balance_create(&b, &c, sc, 2), 0, "initially unhealthy accepted");
    is_int(balance_pick(b, STR_LIT("k"), T0, NULL, 0), 0, "the unhealthy one is skipped");
    struct balance_server_info info;
    balance_server_info(b, 1, T0, &info);
    is_int(info.state, HEALTH_UNHEALTHY, "info: initial state");
    is_int(info.weight, BALANCE_WEIGHT_MAX, "info: weight");
    ok(info.id.len == 1 && info.id.p[0] == 'b', "info: id copied");
    balance_destroy(&b);

    is_int(balance_create(&b, &c, NULL, 0), 0, "an empty set");
    is_int(balance_pick(b, STR_LIT("k"), T0, NULL, 0), -1, "an empty set picks nothing");
    balance_destroy(&b);
}

static void round_robin(void)
{
    const unsigned w511[] = {5, 1, 1};
    struct balance *b = make(BALANCE_ROUND_ROBIN, 0, w511, 3);
    is_str(seq(b, T0, 14), "aabacaaaabacaa", "weights 5,1,1: nginx's a a b a c a a, twice");
    balance_destroy(&b);

    const unsigned w111[] = {1, 1, 1};
    b = make(BALANCE_ROUND_ROBIN, 0, w111, 3);
    is_str(seq(b, T0, 9), "abcabcabc", "equal weights: plain rotation");
    balance_destroy(&b);

    const unsigned w42[] = {4, 2};
    b = make(BALANCE_ROUND_ROBIN, 0, w42, 2);
    is_str(seq(b, T0, 6), "abaaba", "weights 4,2: interleaved, not aaaabb");
    balance_destroy(&b);

    /* Exact counts over many cycles, with weights drawn at random. */
    unsigned w[8];
    unsigned sum = 0;
    for (int i = 0; i < 8; i++) {
        w[i] = 1 + (unsigned)rand() % BALANCE_WEIGHT_MAX;
        sum += w[i];
    }
    b = make(BALANCE_ROUND_ROBIN, 0, w, 8);
    long count[8] = {0};
    for (unsigned i = 0; i < sum * 3; i++)
        count[balance_pick(b, STR_NULL, T0, NULL, 0)]++;
    bool exact = true;
    for (int i = 0; i < 8; i++)
        if (count[i] != 3 * (long)w[i]) {
            printf("#   server %d weight %u: %ld picks\n", i, w[i], count[i]);
            exact = false;
        }
    ok(exact, "8 random weights: 3 * sum(weights) picks give each exactly 3 * weight");
    struct balance_server_info info;
    balance_server_info(b, 0, T0, &info);
    is_int(info.picks, 3 * (long)w[0], "info: picks counted");
    balance_destroy(&b);

    /* Unhealthy, excluded, at max_conns: skipped, and the others keep their proportions. */
    b = make(BALANCE_ROUND_ROBIN, 0, w511, 3);
    ok(balance_set_health(b, 0, HEALTH_UNHEALTHY, T0), "a unhealthy: changed");
    ok(!balance_set_health(b, 0, HEALTH_UNHEALTHY, T0), "a unhealthy again: not changed");
    is_str(seq(b, T0, 6), "bcbcbc", "a unhealthy: b and c alternate");
    int tried[] = {1};
    int r = balance_pick(b, STR_NULL, T0, tried, 1);
    is_int(r, 2, "b tried: c");
    int tried2[] = {1, 2};
    is_int(balance_pick(b, STR_NULL, T0, tried2, 2), -1, "b and c tried, a unhealthy: none");
    balance_set_health(b, 1, HEALTH_UNHEALTHY, T0);
    balance_set_health(b, 2, HEALTH_UNHEALTHY, T0);
    is_int(balance_pick(b, STR_NULL, T0, NULL, 0), -1, "all unhealthy: none");
    balance_destroy(&b);
}

static void max_conns(void)
{
    struct balance_server_conf sc[2] = {{.id = STR_LIT("a"), .weight = 10, .max_conns = 2},
                                        {.id = STR_LIT("b"), .weight = 1}};
    const enum balance_algo algos[] = {BALANCE_ROUND_ROBIN, BALANCE_LEAST_CONN, BALANCE_HASH};
    for (size_t k = 0; k < ARRAY_SIZE(algos); k++) {
        struct balance_conf c = {.algo = algos[k]};
        struct balance *b;
        balance_create(&b, &c, sc, 2);
        long to_a = 0;
        /* Hold every connection: a takes at most 2, then everything goes to b. */
        for (int i = 0; i < 20; i++) {
            char key[8];
            snprintf(key, sizeof(key), "k%d", i);
            int r = balance_pick(b, str_cstr(key), T0, NULL, 0);
            to_a += r == 0;
            balance_conn_start(b, r);
        }
        is_int(to_a, 2, "algo %zu: max_conns 2 caps a at 2 held connections", k);
        struct balance_server_info info;
        balance_server_info(b, 0, T0, &info);
        is_int(info.active, 2, "algo %zu: info.active", k);
        balance_conn_end(b, 0);
        int tried_b[] = {1};
        is_int(balance_pick(b, STR_LIT("k0"), T0, tried_b, 1), 0,
               "algo %zu: one connection ended: a eligible again", k);
        struct balance_server_info ib;
        balance_server_info(b, 1, T0, &ib);
        is_int(ib.active, 18, "algo %zu: b holds the other 18", k);
        balance_destroy(&b);
    }
}

static void least_conn(void)
{
    const unsigned w111[] = {1, 1, 1};
    struct balance *b = make(BALANCE_LEAST_CONN, 0, w111, 3);
    is_str(seq(b, T0, 6), "abcabc", "no connections: ties take turns, not always the first");
    balance_conn_start(b, 0);
    balance_conn_start(b, 0);
    balance_conn_start(b, 2);
    is_int(balance_pick(b, STR_NULL, T0, NULL, 0), 1, "the least loaded: b (0) over c (1), a (2)");
    balance_conn_start(b, 1);
    is_str(seq(b, T0, 4), "bcbc", "b and c tie at 1: they take turns");
    int tried[] = {1, 2};
    is_int(balance_pick(b, STR_NULL, T0, tried, 2), 0, "b, c tried: a, although the busiest");
    balance_destroy(&b);

    /* Weights: holding every connection, a (3) ends up with three times b's (1). */
    const unsigned w31[] = {3, 1};
    b = make(BALANCE_LEAST_CONN, 0, w31, 2);
    for (int i = 0; i < 400; i++)
        balance_conn_start(b, balance_pick(b, STR_NULL, T0, NULL, 0));
    struct balance_server_info ia;
    struct balance_server_info ib;
    balance_server_info(b, 0, T0, &ia);
    balance_server_info(b, 1, T0, &ib);
    is_int(ia.active, 300, "weights 3,1, 400 held connections: a has 300");
    is_int(ib.active, 100, "and b 100");
    balance_destroy(&b);

    /* Short requests (each ends before the next): every pick is a tie, shared 3:1. */
    b = make(BALANCE_LEAST_CONN, 0, w31, 2);
    is_str(seq(b, T0, 8), "aabaaaba", "weights 3,1, no load: ties by weighted round-robin");
    balance_destroy(&b);

    /* a has 2 connections at weight 3 (0.67), b 1 at weight 1 (1): a is less loaded. */
    b = make(BALANCE_LEAST_CONN, 0, w31, 2);
    balance_conn_start(b, 0);
    balance_conn_start(b, 0);
    balance_conn_start(b, 1);
    is_int(balance_pick(b, STR_NULL, T0, NULL, 0), 0, "2/3 beats 1/1: a");
    balance_conn_start(b, 0);
    balance_conn_start(b, 0);
    is_int(balance_pick(b, STR_NULL, T0, NULL, 0), 1, "4/3 loses to 1/1: b");
    balance_destroy(&b);
}

static void hashing(void)
{
    const unsigned w[] = {1, 2, 3, 1, 1};
    struct balance *b = make(BALANCE_HASH, 0, w, 5);
    struct str ids[5];
    for (int i = 0; i < 5; i++) {
        struct balance_server_info info;
        balance_server_info(b, i, T0, &info);
        ids[i] = info.id;
    }
    long same = 0;
    long next = 0;
    long excl = 0;
    for (int i = 0; i < 5000; i++) {
        char key[24];
        snprintf(key, sizeof(key), "/k/%d/%d", i, rand());
        struct str k = str_cstr(key);
        int r = balance_pick(b, k, T0, NULL, 0);
        same += r == balance_rendezvous(ids, w, NULL, 5, k);
        same += r == balance_pick(b, k, T0, NULL, 0);
        /* excluded or full: the next in rendezvous order */
        uint64_t h[5];
        for (int j = 0; j < 5; j++)
            h[j] = balance_hash(ids[j]);
        int order[5];
        balance_rendezvous_rank(h, w, NULL, 5, balance_hash(k), order, 5);
        int tried[] = {order[0], order[1]};
        excl += balance_pick(b, k, T0, tried, 2) == order[2];
        balance_set_health(b, order[0], HEALTH_UNHEALTHY, T0);
        next += balance_pick(b, k, T0, NULL, 0) == order[1];
        balance_set_health(b, order[0], HEALTH_HEALTHY, T0);
    }
    is_int(same, 10000, "hash: pick is balance_rendezvous over the ids and weights, stable");
    is_int(next, 5000, "hash: its server unhealthy, a key goes to its second choice");
    is_int(excl, 5000, "hash: two servers tried, a key goes to its third choice");
    is_str((const char *)balance_server_user(b, 2), "c:80", "server_user");
    balance_destroy(&b);
}

static void probing(void)
{
    const unsigned w11[] = {1, 1};
    struct balance *b = make(BALANCE_ROUND_ROBIN, 0, w11, 2);
    balance_set_health(b, 0, HEALTH_UNHEALTHY, T0);
    ok(balance_set_health(b, 0, HEALTH_PROBING, T0), "unhealthy -> probing: changed");
    struct balance_server_info info;
    balance_server_info(b, 0, T0, &info);
    is_int(info.effective_permille, BALANCE_SLOW_START_FLOOR, "probing weighs the floor");
    long to_a = 0;
    for (int i = 0; i < 40; i++) {
        int r = balance_pick(b, STR_NULL, T0, NULL, 0);
        if (r == 0) {
            to_a++;
            balance_conn_start(b, 0); /* the trial request stays in flight */
        }
    }
    is_int(to_a, 1, "probing: one trial request at a time");
    balance_conn_end(b, 0);
    long again = 0;
    for (int i = 0; i < 40; i++)
        again += balance_pick(b, STR_NULL, T0, NULL, 0) == 0;
    ok(again >= 1, "trial done: probing eligible again (%ld of 40 at its 10%% weight)", again);
    balance_destroy(&b);
}

static void slow_start(void)
{
    const unsigned w11[] = {1, 1};
    struct balance *b = make(BALANCE_ROUND_ROBIN, 10000, w11, 2);
    struct balance_server_info info;
    balance_server_info(b, 0, T0, &info);
    is_int(info.effective_permille, 1000, "healthy at creation: full weight, no slow start");
    balance_set_health(b, 0, HEALTH_UNHEALTHY, T0);
    ok(balance_set_health(b, 0, HEALTH_HEALTHY, T0 + 1000), "healthy again: changed");
    balance_server_info(b, 0, T0 + 1000, &info);
    is_int(info.effective_permille, 100, "slow start begins at 10%%");
    balance_server_info(b, 0, T0 + 6000, &info);
    is_int(info.effective_permille, 550, "half way: 55%%");
    balance_server_info(b, 0, T0 + 10999, &info);
    ok(info.effective_permille > 990 && info.effective_permille < 1000, "just before the end");
    balance_server_info(b, 0, T0 + 11000, &info);
    is_int(info.effective_permille, 1000, "after slow_start_ms: full weight");

    /* At 10%: 100 of every 1100 picks; at 55%: 550 of 1550; then even. */
    const int64_t at[] = {T0 + 1000, T0 + 6000, T0 + 11000};
    const long want[] = {100, 550, 1000};
    const long total[] = {1100, 1550, 2000};
    for (int k = 0; k < 3; k++) {
        long to_a = 0;
        for (long i = 0; i < total[k]; i++)
            to_a += balance_pick(b, STR_NULL, at[k], NULL, 0) == 0;
        is_int(to_a, want[k], "round-robin share follows the ramp (%d)", k);
    }
    balance_destroy(&b);

    /* Least connections counts the effective weight: with a at 10%, its first connection
     * makes it busier (1/0.1) than b with 9 (9/1). */
    b = make(BALANCE_LEAST_CONN, 10000, w11, 2);
    balance_set_health(b, 0, HEALTH_UNHEALTHY, T0);
    balance_set_health(b, 0, HEALTH_HEALTHY, T0);
    balance_conn_start(b, 0);
    for (int i = 0; i < 9; i++)
        balance_conn_start(b, 1);
    is_int(balance_pick(b, STR_NULL, T0, NULL, 0), 1, "least conn, slow start: b (9/1 < 1/0.1)");
    is_int(balance_pick(b, STR_NULL, T0 + 10000, NULL, 0), 0, "at full weight: a (1 < 9)");
    balance_destroy(&b);

    /* Hash: as the weight ramps, keys only move to the recovering server, and at full
     * weight it has exactly the keys it had before it failed. */
    const unsigned w5[] = {1, 1, 1, 1, 1};
    b = make(BALANCE_HASH, 10000, w5, 5);
    enum { NK = 20000 };
    static char kb[NK][16];
    static int before[NK];
    static int prev[NK];
    for (int i = 0; i < NK; i++) {
        snprintf(kb[i], sizeof(kb[i]), "/x/%d", i);
        before[i] = balance_pick(b, str_cstr(kb[i]), T0, NULL, 0);
    }
    balance_set_health(b, 3, HEALTH_UNHEALTHY, T0);
    for (int i = 0; i < NK; i++)
        prev[i] = balance_pick(b, str_cstr(kb[i]), T0, NULL, 0);
    balance_set_health(b, 3, HEALTH_HEALTHY, T0);
    long wrong = 0;
    long owned[4] = {0};
    for (int step = 0; step < 4; step++) {
        int64_t now = T0 + step * 3500;
        for (int i = 0; i < NK; i++) {
            int r = balance_pick(b, str_cstr(kb[i]), now, NULL, 0);
            if (r != prev[i] && r != 3)
                wrong++;
            if (prev[i] == 3 && r != 3)
                wrong++;
            owned[step] += r == 3;
            prev[i] = r;
        }
    }
    is_int(wrong, 0, "hash slow start: keys only move to the ramping server");
    ok(owned[0] < owned[1] && owned[1] < owned[2] && owned[2] < owned[3],
       "hash slow start: its share grows (%ld %ld %ld %ld)", owned[0], owned[1], owned[2],
       owned[3]);
    long back = 0;
    for (int i = 0; i < NK; i++)
        back += prev[i] == before[i];
    is_int(back, NK, "hash slow start done: every key is back on its server");
    balance_destroy(&b);
}

int main(void)
{
    tap_seed();
    create_errors();
    round_robin();
    max_conns();
    least_conn();
    hashing();
    probing();
    slow_start();
    return tap_done();
}
