/*
 * balance/balance_int.h: what the files of balance/ share and no other module may include: the
 * keyed hash and the rendezvous score, used by balance.c (BALANCE_HASH) and hash.c
 * (balance_rendezvous*()) so that both compute exactly the same scores.
 */
#ifndef OUTPOST_BALANCE_INT_H
#define OUTPOST_BALANCE_INT_H

#include <stddef.h>
#include <stdint.h>

/* The fixed SipHash key of balance_hash(): the ASCII bytes "outpost-balance1". */
extern const uint8_t balance_hash_key[16];

/* SipHash-2-4 of data[0..len) under `key` (reference: https://github.com/veorq/SipHash). */

/* The rendezvous score of a server whose id hashes to id_hash, for a key that hashes to
 * key_hash, with weight `weight` (> 0, any unit): weight / -ln(u), u = hash01(fmix64(key_hash
 * ^ id_hash)) in (0, 1). Always finite and > 0. */
double balance_score(uint64_t key_hash, uint64_t id_hash, double weight);

/* True if score a (of a server whose id hashes to ida) beats score b (id hash idb): higher
 * score, then higher id hash. */
static inline int balance_score_beats(double a, uint64_t ida, double b, uint64_t idb)
{
    return a > b || (a == b && ida > idb);
}

#endif
