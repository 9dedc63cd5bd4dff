/*
 * lib/hash.h: SipHash-2-4 (Aumasson and Bernstein), the keyed 64-bit hash of the project: for
 * tables indexed by values that clients choose (QUIC connection IDs) with a secret key, and for
 * placement that every node must compute alike (rendezvous hashing of cache keys over
 * shields) with a fixed one. Pure; any thread.
 */
#ifndef OUTPOST_LIB_HASH_H
#define OUTPOST_LIB_HASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t siphash24(const uint8_t key[16], const void *data, size_t len);

#endif
