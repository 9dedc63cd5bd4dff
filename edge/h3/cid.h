/*
 * edge/h3/cid.h: pure helpers of the QUIC endpoint: connection IDs that carry the worker that
 * owns the connection, the reuseport BPF program that steers packets by them, and a keyed
 * hash for the connection-ID table. No I/O, no ngtcp2: unit-tested alone.
 *
 * Steering: every connection ID the node issues is H3_CID_LEN bytes whose first byte is the
 * owning worker's index. The kernel runs h3_cid_bpf() on each datagram to pick the socket of
 * the SO_REUSEPORT group (socket i belongs to worker i): the first byte of the destination
 * connection ID modulo the number of workers. A client's first Initial carries a random
 * destination ID, so it lands on some worker, deterministically for all its retransmissions;
 * that worker then issues IDs naming itself, and every later packet follows. h3_cid_owner()
 * computes the same choice in user space (packets are forwarded between workers when the BPF
 * program could not be attached). The connection-ID table hashes with lib/hash.h's SipHash and
 * a per-worker random key, because clients choose their first IDs.
 */
#ifndef OUTPOST_EDGE_H3_CID_H
#define OUTPOST_EDGE_H3_CID_H

#include <linux/filter.h>
#include <stddef.h>
#include <stdint.h>

#define H3_CID_LEN 18
#define H3_BPF_LEN 7

/* A new connection ID for worker `worker` (< 256): its index, then random bytes. */
void h3_cid_make(uint8_t *cid, unsigned worker);
/* The worker a datagram belongs to, as the BPF program chooses it (n_workers >= 1). */
unsigned h3_cid_owner(const uint8_t *pkt, size_t len, unsigned n_workers);
/* Fill `prog` (H3_BPF_LEN instructions) with the steering program for `n_workers`. */
void h3_cid_bpf(struct sock_filter *prog, unsigned n_workers);

#endif
