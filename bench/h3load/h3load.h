/*
 * bench/h3load/h3load.h: the types shared by h3load's two files.
 *
 * h3load is an HTTP/3 load generator modelled on h2load: -c QUIC connections, each keeping up
 * to -m requests in flight, until -n requests are done or -D seconds have passed.
 *
 * h3load.c parses the command line into one struct h3load_config, which is immutable once the
 * workers start; it starts -t workers (one pthread and one libevent loop each), joins them,
 * merges their struct h3load_stats and prints the report. worker.c runs one worker: its QUIC
 * connections (ngtcp2 0.12 + GnuTLS through libngtcp2_crypto_gnutls), HTTP/3 on them (nghttp3
 * 0.8), their UDP sockets and timers. Workers share nothing mutable: each owns its stats until
 * it returns, and only then does the main thread read them.
 */
#ifndef OUTPOST_BENCH_H3LOAD_H
#define OUTPOST_BENCH_H3LOAD_H

#include <nghttp3/nghttp3.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* nreq when only -D bounds the run. */
#define H3LOAD_UNLIMITED UINT64_MAX

/* The header fields of one request, ready for nghttp3_conn_submit_request(). */
struct h3load_request {
    nghttp3_nv *nva;
    size_t nvlen;
};

/* The run, as the command line said it. Read-only once the workers have started. */
struct h3load_config {
    uint64_t nreq; /* -n: requests in all; H3LOAD_UNLIMITED with -D alone */
    unsigned nconn; /* -c: connections at a time, over all workers */
    unsigned max_streams; /* -m: requests in flight per connection */
    unsigned nthreads; /* -t */
    uint64_t duration_ns; /* -D; 0: none */
    uint64_t warmup_ns; /* --warm-up-time (with -D only); 0: none */
    uint64_t timeout_ns; /* --timeout: hard bound on the whole run */
    int verbose; /* -v: a stderr line per connection event; -vv: and ngtcp2's log */
    struct sockaddr_storage addr; /* the server: every URL has the same host and port */
    socklen_t addrlen;
    const char *sni; /* --sni, or the URL's host name; NULL for an IP literal */
    struct h3load_request *reqs; /* one per URL; a connection takes them in turn */
    size_t nreqs;
};

/* What one worker saw; the main thread adds them up (h3load_stats_merge). */
struct h3load_stats {
    uint64_t started; /* requests submitted */
    uint64_t succeeded; /* response complete, 2xx or 3xx, body length = Content-Length */
    uint64_t failed; /* response complete, but another status or a length mismatch */
    uint64_t errored; /* no complete response: stream reset, connection lost, timeout */
    uint64_t abandoned; /* in flight when -D ran out: not counted in the three above */
    uint64_t length_mismatch; /* of failed: body bytes != Content-Length */
    uint64_t status[6]; /* [1]..[5]: 1xx..5xx final statuses; [0]: anything else */
    uint64_t rx_bytes; /* UDP payload received */
    uint64_t rx_datagrams;
    uint64_t tx_bytes; /* UDP payload sent */
    uint64_t tx_datagrams;
    uint64_t body_bytes; /* response body (DATA payload) received */
    uint64_t conn_attempts; /* QUIC connections started, reconnections included */
    uint64_t conn_ok; /* handshakes completed */
    uint64_t conn_failed; /* closed by an error before the handshake completed */
    uint64_t start_ns; /* CLOCK_MONOTONIC: the worker's start, or the end of its warm-up */
    uint64_t end_ns; /* ... and its end: last response, deadline or timeout */
    uint32_t *latency_us; /* one per complete response (succeeded or failed) */
    size_t nlatency;
    size_t latency_cap;
};

/* One worker's share of the run; the main thread fills the first four fields. */
struct h3load_worker_args {
    const struct h3load_config *cfg;
    unsigned id;
    unsigned nconn;
    uint64_t nreq; /* H3LOAD_UNLIMITED or this worker's share of -n */
    struct h3load_stats stats; /* written by the worker, read after pthread_join() */
    int rc; /* 0, or -1 if the worker could not start (message on stderr) */
};

/* pthread entry point: runs one worker to its end. arg is a struct h3load_worker_args. */
void *h3load_worker_run(void *arg);

/* CLOCK_MONOTONIC in nanoseconds: ngtcp2's timestamps and every figure of the report. */
uint64_t h3load_now_ns(void);

#endif
