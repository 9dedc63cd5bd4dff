/*
 * balance/balance.h: choosing an upstream server. Pure logic for tiered fetch (issue 6): no
 * sockets, no event loop, no clock, no locks, no logging.
 *
 * So far:
 *
 *   balance_rendezvous()  weighted rendezvous hashing over a caller's arrays: an edge
 *                         choosing the shield of a cache key among the healthy shields of a
 *                         group. Every node computes the same answer from the same ids.
 *
 * Threads: balance_hash() and balance_rendezvous*() are pure and may be called from any
 * thread.
 *
 * Hashing: balance_hash() is SipHash-2-4 (Aumasson and Bernstein, 2012) under a fixed key
 * compiled in (the 16 ASCII bytes "outpost-balance1"), so that every node, whatever its version
 * or start time, maps a key to the same shield. Rendezvous scores combine the key's hash with
 * the server id's hash through the MurmurHash3 64-bit finalizer (see balance_rendezvous()).
 * Changing either changes the shield of almost every key: a cluster-wide cache reshuffle.
 */
#ifndef OUTPOST_BALANCE_H
#define OUTPOST_BALANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/str.h"

/* ---- hashing and rendezvous (pure, any thread) ------------------------------------------- */

/* SipHash-2-4 of `s` under Outpost's fixed balance key (see Hashing above). Stable across
 * nodes, versions and restarts. */
uint64_t balance_hash(struct str s);

/*
 * Weighted rendezvous hashing: the index among ids[0..n) of the server for `key`, or -1 when
 * no server is eligible (n == 0, or none healthy, or all weights 0).
 *
 * For each eligible server i, h = fmix64(balance_hash(key) ^ balance_hash(ids[i])) is mapped to
 * u in (0, 1) (its high 52 bits, plus one half, over 2^52), and the score is
 * weights[i] / -ln(u) (the logarithmic method of Schindelhauer and Schomaker, 2005; also
 * Resch's "weighted rendezvous hashing"): a server wins a share of the keys proportional to its
 * weight, and removing or adding one server moves only the keys that server loses or gains.
 * The highest score wins; an exact tie goes to the higher id hash, so the answer does not
 * depend on the order of the arrays.
 *
 * `weights` may be NULL (all 1); a weight of 0 makes a server ineligible. `healthy` may be NULL
 * (all eligible); healthy[i] false makes server i ineligible. Ids need not be unique, but
 * duplicates tie. The arrays are only read during the call.
 */
int balance_rendezvous(const struct str *ids, const unsigned *weights, const bool *healthy,
                       size_t n, struct str key);
/* The same with the hashes precomputed: id_hashes[i] = balance_hash(ids[i]), and
 * key_hash = balance_hash(key). Lets an edge hash its shield ids once per config. */
int balance_rendezvous_hashed(const uint64_t *id_hashes, const unsigned *weights,
                              const bool *healthy, size_t n, uint64_t key_hash);
/*
 * The failover order: writes to order[0..) the indexes of up to `max` eligible servers, best
 * first (order[0] is what balance_rendezvous_hashed() returns), and returns how many. An edge
 * whose first shield fails tries order[1], and so on; every node agrees on the order.
 */
size_t balance_rendezvous_rank(const uint64_t *id_hashes, const unsigned *weights,
                               const bool *healthy, size_t n, uint64_t key_hash, int *order,
                               size_t max);

#endif
