/*
 * balance/hash.c: the keyed hash and weighted rendezvous hashing (balance.h, "hashing and
 * rendezvous"). Pure functions; any thread.
 *
 * Why rendezvous rather than a ring: with n shields (a handful to a few dozen) scoring every
 * server per key costs n mixes, needs no ring to build or virtual nodes to tune, weights are
 * exact, and removing a server moves exactly its keys. Why the logarithmic score: with
 * weight / -ln(u), u uniform, the winner is server i with probability w_i / sum(w) (the scores
 * are the reciprocals of exponential variables with rates w_i), and raising one server's weight
 * only raises its own scores.
 *
 * The values computed here decide which shield holds which object on every node: they must not
 * change between versions (tests/unit/balance/hash.c pins them).
 */
#include <math.h>
#include <string.h>

#include "balance/balance.h"
#include "balance/balance_int.h"
#include "lib/hash.h"
#include "lib/util.h"

const uint8_t balance_hash_key[16] = {'o', 'u', 't', 'p', 'o', 's', 't', '-',
                                      'b', 'a', 'l', 'a', 'n', 'c', 'e', '1'};

uint64_t balance_hash(struct str s)
{
    return siphash24(balance_hash_key, s.p ? s.p : "", s.len);
}

/* MurmurHash3's 64-bit finalizer: a bijection with full avalanche, so that the scores of
 * two servers for one key behave as independent uniform values. */
static uint64_t fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

double balance_score(uint64_t key_hash, uint64_t id_hash, double weight)
{
    /* 52 bits plus one half: u is exactly representable and 0 < u < 1, so ln(u) < 0. */
    uint64_t h = fmix64(key_hash ^ id_hash);
    double u = ((double)(h >> 12) + 0.5) * 0x1p-52;
    return weight / -log(u);
}

static bool eligible(const unsigned *weights, const bool *healthy, size_t i)
{
    return (!weights || weights[i] > 0) && (!healthy || healthy[i]);
}

size_t balance_rendezvous_rank(const uint64_t *id_hashes, const unsigned *weights,
                               const bool *healthy, size_t n, uint64_t key_hash, int *order,
                               size_t max)
{
    ASSERT(n <= INT32_MAX);
    size_t got = 0;
    double prev = 0;
    uint64_t prev_id = 0;
    /* Selection of the `max` best, each round the best below the previous one: n is small. */
    while (got < max) {
        int best = -1;
        double best_score = 0;
        for (size_t i = 0; i < n; i++) {
            if (!eligible(weights, healthy, i))
                continue;
            double s = balance_score(key_hash, id_hashes[i], weights ? weights[i] : 1.0);
            if (got > 0 && !balance_score_beats(prev, prev_id, s, id_hashes[i]))
                continue; /* already ranked */
            if (best < 0 || balance_score_beats(s, id_hashes[i], best_score, id_hashes[best])) {
                best = (int)i;
                best_score = s;
            }
        }
        if (best < 0)
            break;
        order[got++] = best;
        prev = best_score;
        prev_id = id_hashes[best];
    }
    return got;
}

int balance_rendezvous_hashed(const uint64_t *id_hashes, const unsigned *weights,
                              const bool *healthy, size_t n, uint64_t key_hash)
{
    int best = -1;
    return balance_rendezvous_rank(id_hashes, weights, healthy, n, key_hash, &best, 1) ? best : -1;
}

int balance_rendezvous(const struct str *ids, const unsigned *weights, const bool *healthy,
                       size_t n, struct str key)
{
    uint64_t key_hash = balance_hash(key);
    int best = -1;
    double best_score = 0;
    uint64_t best_id = 0;
    ASSERT(n <= INT32_MAX);
    for (size_t i = 0; i < n; i++) {
        if (!eligible(weights, healthy, i))
            continue;
        uint64_t id = balance_hash(ids[i]);
        double s = balance_score(key_hash, id, weights ? weights[i] : 1.0);
        if (best < 0 || balance_score_beats(s, id, best_score, best_id)) {
            best = (int)i;
            best_score = s;
            best_id = id;
        }
    }
    return best;
}
