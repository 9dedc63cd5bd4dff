/*
 * edge/edge_int.h: internals shared by the files of the edge module (edge/ and edge/h1/).
 * No other module includes this header.
 *
 * Shape of a node:
 *   struct edge      the node: config, cache, workers, admin listener, metrics, clock.
 *   struct worker    one thread with its own event base and SO_REUSEPORT listeners; owns its
 *                    client connections, exchanges, upstream connections and the fetches it
 *                    started.
 *   struct exchange  one request/response, protocol-neutral. A front end (edge/h1 today;
 *                    h2 and h3 later) fills in the request, calls exchange_start(), and
 *                    implements struct transport_ops to carry the response back with
 *                    back-pressure. Everything in between (cache lookup, collapsing, upstream,
 *                    response policy) is written once, in exchange.c and fetch.c.
 *   struct fetch     one upstream request and its response body as it arrives. Refcounted;
 *                    several exchanges (possibly on other workers: request collapsing) read
 *                    from one fetch; the response is stored in the cache while it streams.
 *   struct upstream  an HTTP/1.1 client connection to an origin server, pooled per worker.
 *
 * Threads: everything here belongs to one worker unless a field group says otherwise. The
 * fetch is the only object shared between workers; its shared fields are under its lock.
 */
#ifndef OUTPOST_EDGE_INT_H
#define OUTPOST_EDGE_INT_H

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "balance/balance.h"
#include "cache/cache.h"
#include "conf/conf.h"
#include "edge/edge.h"
#include "edge/h1/h1.h"
#include "edge/h3/h3.h"
#include "edge/sockio.h"
#include "http/http.h"
#include "lib/arena.h"
#include "lib/buf.h"
#include "lib/str.h"

struct edge;
struct worker;
struct exchange;
struct fetch;
struct upstream;

/* ---- metrics ----------------------------------------------------------------------------- */

/* X-Cache values; also the `cache` label of outpost_requests_total. */
enum xcache {
    XCACHE_HIT = 0,
    XCACHE_MISS = 1,
    XCACHE_COLLAPSED = 2,
    XCACHE_STALE = 3,
    XCACHE_REVALIDATED = 4,
    XCACHE_BYPASS = 5,
    XCACHE_NONE = 6, /* rejected before the pipeline (bad request, admin) */
    XCACHE_COUNT = 7,
};
const char *xcache_name(enum xcache c);

/* Reasons a request is refused before it reaches the pipeline. */
enum reject {
    REJECT_SYNTAX = 0,
    REJECT_SMUGGLING = 1,
    REJECT_URI_TOO_LONG = 2,
    REJECT_HEADERS_TOO_LARGE = 3,
    REJECT_VERSION = 4,
    REJECT_TE_UNSUPPORTED = 5,
    REJECT_HOST = 6,
    REJECT_METHOD = 7,
    REJECT_BODY_TOO_LARGE = 8,
    REJECT_HEADER_TIMEOUT = 9,
    REJECT_TOO_MANY_CONNECTIONS = 10,
    REJECT_EXPECTATION = 11,
    REJECT_LOOP = 12, /* the request already passed through this node (its Via) */
    REJECT_COUNT = 13,
};
const char *reject_name(enum reject r);

enum upstream_err {
    UPERR_CONNECT = 0,
    UPERR_TIMEOUT = 1,
    UPERR_RESET = 2,
    UPERR_PROTOCOL = 3,
    UPERR_COUNT = 4,
};

#define METRICS_STATUS_SLOTS 6 /* 1xx..5xx, other */
#define METRICS_CODES 32
#define METRICS_LAT_BUCKETS 12

/* Per-worker counters: written by the owning worker only (relaxed atomics), summed by the
 * admin thread at scrape time. */
struct metrics {
    /* owned by worker */
    _Atomic uint64_t requests[XCACHE_COUNT][METRICS_CODES]; /* by tracked status code slot */
    _Atomic uint64_t rejected[REJECT_COUNT];
    _Atomic uint64_t hits;
    _Atomic uint64_t misses;
    _Atomic uint64_t upstream_requests;
    _Atomic uint64_t upstream_errors[UPERR_COUNT];
    _Atomic uint64_t upstream_lat[METRICS_LAT_BUCKETS + 1];
    _Atomic uint64_t upstream_lat_sum_us;
    _Atomic uint64_t upstream_lat_count;
    _Atomic uint64_t connections_total;
    _Atomic int64_t connections;
    _Atomic uint64_t bytes_sent;
    _Atomic uint64_t bytes_received;
    _Atomic uint64_t store_skipped; /* cacheable but not stored (writer full, too big) */
    /* QUIC (edge/h3) */
    _Atomic uint64_t quic_datagrams_received;
    _Atomic uint64_t quic_datagrams_sent;
    _Atomic uint64_t quic_datagrams_dropped; /* malformed, unknown, not acceptable */
    _Atomic uint64_t quic_datagrams_forwarded; /* to the worker owning the connection */
    _Atomic uint64_t quic_retry_sent;
    _Atomic uint64_t quic_retry_failed; /* Initials with a token that did not verify */
    _Atomic uint64_t quic_stateless_reset_sent;
    _Atomic uint64_t quic_version_negotiation_sent;
};

#define METRIC_INC(w, field) atomic_fetch_add_explicit(&(w)->metrics.field, 1, memory_order_relaxed)
#define METRIC_ADD(w, field, n)                                                                    \
    atomic_fetch_add_explicit(&(w)->metrics.field, (n), memory_order_relaxed)

void metrics_count_request(struct worker *w, enum xcache c, int status);
void metrics_upstream_latency(struct worker *w, int64_t usec);
/* Render every worker's counters, summed, in Prometheus text format. */
void metrics_render(struct edge *e, struct buf *out);

/* ---- node and workers -------------------------------------------------------------------- */

struct worker {
    unsigned id;
    struct edge *edge;
    pthread_t thread;
    struct event_base *base;
    struct evconnlistener **listeners;
    size_t n_listeners;
    struct event *stop_ev; /* activated from the main thread to stop */
    struct event *reap_ev; /* deferred frees, end of loop iteration */
    struct worker_group *groups; /* one per upstream group (e->groups), same index */
    struct metrics metrics;
    struct h1_conn *conns; /* open client connections (list, for shutdown) */
    struct h1_conn *reap; /* closed connections freed at the end of the iteration */
    struct h2_conn *h2_conns; /* HTTP/2 connections (list, for shutdown); edge/h2 */
    struct h2_conn *h2_reap; /* closed HTTP/2 connections freed at the end of the iteration */
    struct passthrough *passthrough; /* TLS passthrough listeners and relays; edge/passthrough.c */
    struct h3_worker *h3; /* QUIC sockets and connections; edge/h3 (NULL without h3_listen) */
    bool stopping;
};

struct edge {
    const struct config *cfg;
    struct cache *cache;
    struct worker *workers;
    size_t n_workers;
    int64_t start_time;
    struct str via; /* "1.1 NODE (outpost)", our Via element */
    struct str alt_svc; /* Alt-Svc value advertising h3_listen; empty without it */
    _Atomic int64_t clock_offset; /* seconds; debug_api only */
    _Atomic int64_t connections; /* shared: all workers, for max_connections */
    FILE *access_log; /* shared: writes are single fwrite of a whole line + lock */
    pthread_mutex_t log_lock;
    struct admin *admin;
    struct up_group *groups; /* one per config->upstreams entry, same index */
    size_t n_groups;
    struct hcheck *hcheck; /* active health checks, on the control thread */
    /* fetch table for request collapsing: shared, lock `fetch_lock` */
    pthread_mutex_t fetch_lock;
    struct fetch **fetch_tab;
    size_t fetch_tab_size;
    size_t fetch_count;
    _Atomic uint64_t fetch_removals; /* fetches taken out of the table (fetch_table_gen) */
    struct nocollapse *nocollapse; /* keys answered uncacheable recently: hit-for-miss */
    /* TLS: the current server contexts, swapped by SIGHUP on the control thread; a worker
     * takes a reference under tls_lock for each accepted connection */
    pthread_mutex_t tls_lock;
    struct tls_server *tls;
    struct tls_tickets *tickets; /* shared by every generation of `tls` */
    struct h3_node *h3; /* QUIC secret and GnuTLS credentials; NULL without h3_listen */
    struct config **tls_cfgs; /* configs read by SIGHUP (the contexts may point into them) */
    size_t n_tls_cfgs;
    int n_argv; /* the command line, to read the config again on SIGHUP */
    char **argv;
};

/* Copy a slice of a stored chunk into `out` (a cache_sink_fn; one copy from the LMDB page). */
struct edge_slice {
    struct evbuffer *out;
    size_t skip; /* bytes of the chunk before the slice */
    size_t max; /* most bytes to copy */
    size_t copied; /* set by the sink */
};
void edge_slice_sink(void *arg, const void *data, size_t len);
/* Arm a timer `ms` milliseconds from now; ms <= 0 disarms it. */
void edge_timer_arm(struct event *ev, int64_t ms);

/* Client connection accounting, shared by every front end (h1, h2, passthrough): admit
 * counts the connection against max_connections and in the metrics, or counts a refusal
 * (too_many_connections) and returns false; release undoes an admission. */
bool edge_conn_admit(struct worker *w);
void edge_conn_release(struct worker *w);
/* "addr:port" or "[v6]:port" of a peer ("?" for other families). */
void edge_peer_name(const struct sockaddr *sa, char *out, size_t outlen);

/* The node's clock in seconds (real time + debug offset). */
int64_t edge_now(const struct edge *e);
/* Monotonic microseconds, for latencies. */
int64_t edge_mono_us(void);

/* ---- transports -------------------------------------------------------------------------- */

/*
 * What a front end implements to carry a response. All are called on the exchange's worker.
 * The exchange calls send_head once, then send_body any number of times while
 * body_space() > 0, then finish (or abort). When space frees up the transport calls
 * exchange_on_writable(). Request bodies flow the other way: the transport calls
 * exchange_on_req_body() as bytes arrive; the exchange calls pause_body()/resume_body().
 */
typedef void transport_send_head_fn(struct exchange *x);
/* Moves every byte out of `data`. */
typedef void transport_send_body_fn(struct exchange *x, struct evbuffer *data);
typedef size_t transport_body_space_fn(struct exchange *x);
typedef void transport_finish_fn(struct exchange *x);
typedef void transport_abort_fn(struct exchange *x);
typedef void transport_flow_fn(struct exchange *x);
typedef void transport_continue_fn(struct exchange *x);
/* Take up to `len` body bytes from memory that is valid only during the call (an LMDB page):
 * sent at once if the connection can, else copied up to body_space(). Returns how many were
 * taken; never blocks. */
typedef size_t transport_send_direct_fn(struct exchange *x, const void *data, size_t len);

struct transport_ops {
    const char *name; /* "HTTP/1.1" */
    transport_send_head_fn *send_head;
    transport_send_body_fn *send_body;
    transport_body_space_fn *body_space;
    transport_finish_fn *finish;
    transport_abort_fn *abort;
    transport_flow_fn *pause_body;
    transport_flow_fn *resume_body;
    transport_continue_fn *send_continue; /* 100-continue, may be NULL */
    transport_send_direct_fn *send_direct; /* may be NULL: the exchange copies instead */
    bool quic; /* HTTP/3: no Alt-Svc advertisement */
};

/* ---- the exchange ------------------------------------------------------------------------ */

enum xstate {
    XS_NEW = 0,
    XS_WAIT_FETCH = 1, /* waiting for a fetch's response head */
    XS_STREAM_FETCH = 2, /* streaming a fetch's body */
    XS_STREAM_OBJ = 3, /* streaming a stored object's body */
    XS_DONE = 4,
    XS_WAIT_COMMIT = 5, /* joined a complete fetch: wait until its object is in the cache */
};

struct exchange {
    struct worker *w;
    struct arena arena;
    const struct transport_ops *ops;
    void *transport;

    /* request, filled by the front end */
    struct str method;
    struct str scheme;
    struct str authority; /* lower-cased host[:port] */
    struct str host; /* authority without port */
    struct str path; /* path?query */
    int http_minor; /* HTTP/1.x clients: for the response line */
    struct http_headers req;
    bool req_has_body;
    int64_t req_content_length; /* -1: chunked / unknown */
    bool req_body_done;
    bool expect_continue;
    char client_addr[64];
    int64_t t_start_us;

    /* pipeline */
    const struct conf_site *site;
    bool is_get;
    bool is_head;
    struct str key;
    struct http_cc req_cc;
    enum xcache xcache;
    enum xstate state;
    struct cache_obj *obj; /* stored object served or being revalidated */
    bool obj_stale_ok_on_error;
    struct fetch *fetch; /* fetch read from */
    struct fetch_reader *reader;
    struct evbuffer *req_body; /* request body waiting for the upstream */
    bool body_buffering; /* receiving the first REQ_BUFFER bytes before forwarding */
    bool bypass_invalidate;
    bool looked_again; /* missed, found no fetch to join, and read the cache once more */
    uint64_t table_gen; /* fetch_table_gen() before the last cache lookup */

    /* response, as sent */
    int status;
    struct http_headers resp;
    int64_t resp_length; /* Content-Length sent; -1 unknown (chunked/close) */
    bool head_sent;
    bool no_body; /* HEAD, 304, 204 ... */
    uint64_t body_sent;
    uint64_t body_to_send; /* for ranges/objects: remaining */
    /* serving a stored object: the byte ranges still to send */
    struct http_range ranges[16];
    size_t n_ranges;
    size_t range_idx;
    uint64_t range_pos;
    struct str boundary;
    bool multipart;
    int part_state;
    struct http_headers *obj_headers; /* headers to serve the object with (304 refresh) */
    struct evbuffer *tmp;
    char upstream_addr[80];
    int64_t upstream_first_byte_us;
    bool finished;
};

/* Start the pipeline once the request head is complete. */
void exchange_start(struct exchange *x);
/* Send a locally generated response (errors). */
void exchange_respond_error(struct exchange *x, int status, const char *msg);
/* The transport can take more body bytes. */
void exchange_on_writable(struct exchange *x);
/* Request body bytes from the client; eof after the last. */
void exchange_on_req_body(struct exchange *x, struct evbuffer *data, bool eof);
/* The upstream took the buffered request body: the client may send more. */
void exchange_on_req_drain(struct exchange *x);
/* The client went away: detach from everything, then the transport frees the exchange. */
void exchange_on_client_gone(struct exchange *x);
/* Free resources after finish/abort (the transport owns the memory). */
void exchange_fini(struct exchange *x);
void exchange_init(struct exchange *x, struct worker *w, const struct transport_ops *ops,
                   void *transport);
/* Write the access-log line for a completed exchange. */
void exchange_log(struct exchange *x);

/* ---- fetches: collapsing and streaming --------------------------------------------------- */

enum fetch_state {
    FS_CONNECTING = 0,
    FS_HEAD = 1, /* response head received; body streaming */
    FS_DONE = 2, /* body complete */
    FS_FAILED = 3, /* failed before or during the body */
};

/* What a reader sees of a fetch. */
struct fetch_reader {
    struct fetch *f;
    struct exchange *x;
    struct event *wake; /* on the reader's worker */
    uint64_t pos; /* body bytes consumed */
    struct fetch_reader *next;
    bool waiting; /* wants a wake-up on the next event of the fetch (under the fetch lock) */
    bool initiator; /* the request that started the fetch: may use an unshareable answer */
};

struct fetch_params {
    struct str key; /* empty: private fetch, never shared nor stored */
    struct exchange *x; /* the request to send (method, headers, body) */
    struct cache_obj *validate; /* stored object to revalidate (conditional request) */
    bool background; /* no reader: a revalidation nobody waits for */
    bool private_; /* never shared nor stored (BYPASS); `key` only invalidates */
    bool invalidate; /* unsafe method: invalidate `key` after a success */
};

/* Find a shareable in-flight fetch for `key` and join it, or return NULL. */
struct fetch *fetch_join(struct edge *e, struct str key, struct fetch_reader *r);
/* The fetch table's generation: it moves whenever a fetch leaves the table, which a fetch
 * whose object is stored does only after the commit. Read it before a cache lookup; if a miss
 * then finds no fetch to join and the generation moved, the object may have been stored in
 * between: look again rather than fetch it twice. */
uint64_t fetch_table_gen(struct edge *e);
#define FETCH_ANY_GEN UINT64_MAX
enum fetch_found {
    FETCH_STARTED = 0,
    FETCH_JOINED = 1,
    FETCH_TABLE_CHANGED = 2, /* nothing to join and the generation moved: nothing started */
};
/* Atomically (one hold of the table lock): join a shareable in-flight fetch for p->key, or
 * start and register one, so that two concurrent misses never both start one. With a `gen`
 * other than FETCH_ANY_GEN that is no longer current and nothing to join, starts nothing:
 * NULL, FETCH_TABLE_CHANGED. */
struct fetch *fetch_join_or_start(struct worker *w, const struct fetch_params *p,
                                  struct fetch_reader *r, uint64_t gen, enum fetch_found *how);
/* Start a fetch on worker `w`; the caller's reader (if any) is attached. */
struct fetch *fetch_start(struct worker *w, const struct fetch_params *p, struct fetch_reader *r);
/* Detach a reader (its exchange is done or gone). */
void fetch_reader_detach(struct fetch_reader *r);
/* Copy up to `max` body bytes available at r->pos into `out`; returns bytes copied.
 * *eof when everything was delivered; *failed if the fetch failed mid-body. */
size_t fetch_read(struct fetch_reader *r, struct evbuffer *out, size_t max, bool *eof,
                  bool *failed);
/* Response head of a fetch in FS_HEAD/FS_DONE (immutable once set). */
struct fetch_head {
    int status;
    struct http_headers headers; /* as received, hop-by-hop removed */
    int64_t content_length; /* -1 unknown */
    struct cache_meta meta;
    bool storing; /* being stored: shareable */
    bool shareable; /* readers may use this response */
    struct cache_obj *obj; /* 304 revalidation: serve this stored object */
    char upstream_addr[80];
    int64_t first_byte_us;
    bool timeout; /* FS_FAILED because of a timeout (504, else 502) */
};
/* Forward request body bytes of a private fetch to its upstream. */
void fetch_send_req_body(struct fetch *f, struct evbuffer *data, bool eof);
/* Returns true while the upstream request body buffer is over its bound. */
bool fetch_req_body_full(struct fetch *f);
enum fetch_state fetch_get_state(struct fetch *f, const struct fetch_head **head);
/* Tell the fetch that a reader made progress (memory may be released, origin resumed). */
void fetch_reader_progress(struct fetch_reader *r);
/* Stop collapsing onto `key` for a while (uncacheable answer). */
void fetch_nocollapse_mark(struct edge *e, struct str key, int64_t until);
bool fetch_nocollapse_check(struct edge *e, struct str key, int64_t now);
/* For a complete fetch being stored: true once cache_lookup() can see the object (or it will
 * never be stored); otherwise asks for a wake-up when it can. */
bool fetch_reader_wait_commit(struct fetch_reader *r);
/* Does `req` select the same variant as the request that started the fetch (its response's
 * Vary)? Call once the head is available. */
bool fetch_vary_matches(struct fetch *f, const struct http_headers *req);
/* Is a shareable fetch for `key` in flight? */
bool fetch_in_flight(struct edge *e, struct str key);
/* Atomically: if the fetch has not reached FS_HEAD yet, ask for a wake-up. Returns the state. */
enum fetch_state fetch_reader_wait(struct fetch_reader *r);
void fetch_table_init(struct edge *e);
void fetch_table_fini(struct edge *e);

/* ---- upstream groups: servers, health, choice (upgroup.c) ------------------------------- */

/*
 * Each `upstream` of the config (origin pools, shield groups, a site's inline origin line)
 * becomes a struct up_group with one struct up_server per server. Health is node-wide: one
 * struct health per server under the server's lock, fed by every worker's request outcomes
 * (passive) and by the control thread's active checks (hcheck.c); its state is published in
 * `state` for lock-free reads. Each worker keeps its own struct balance per group (the
 * algorithm's position, its own connection counts) and brings it up to date with the
 * published states before each choice. Connection pools are per worker, group and server.
 */
struct up_group;

struct up_server {
    struct up_group *g;
    size_t idx; /* in g->servers and in the group's struct balance */
    const struct conf_server *conf;
    struct sockaddr_storage ss;
    socklen_t sslen;
    bool resolved;
    pthread_mutex_t lock; /* guards `health` */
    struct health health;
    _Atomic int state; /* enum health_state, published after every change */
    /* relaxed counters, for /status and /metrics */
    _Atomic uint64_t requests; /* outcomes recorded */
    _Atomic uint64_t failures; /* of which failed: connect, timeout, 5xx */
    _Atomic uint64_t checks; /* active checks run */
    _Atomic uint64_t checks_failed;
    _Atomic int check_status; /* status of the last active check; 0 = none, -1 = no response */
    _Atomic int64_t check_latency_us; /* of the last active check */
    _Atomic uint64_t transitions; /* health state changes */
    _Atomic int64_t active; /* requests in flight to it, all workers */
    _Atomic uint64_t picks; /* attempts sent to it */
};

struct up_group {
    const struct conf_upstream *conf;
    size_t idx; /* in e->groups and config->upstreams */
    struct up_server *servers;
    size_t n;
    bool shield; /* a shield group: rendezvous hashing of the cache key */
    /* TLS towards these servers: shield groups from --shield https://, origin pools from the
     * upstream_tls options of the sites using them (conf checks that they agree) */
    bool tls;
    const char *tls_ca;
    const char *tls_name; /* NULL: each server's host */
    bool tls_verify;
    _Atomic uint64_t retries; /* attempts after a failure, all workers */
    _Atomic uint64_t retries_refused; /* retries the budget refused */
};

/* Per worker, per group: the worker's own balancing state and connection pools. */
struct worker_group {
    struct balance *bal;
    struct retry_budget budget;
    int *seen; /* the health state last given to `bal`, per server */
    struct upstream_pool **pools; /* one per server */
    size_t panic_next; /* round-robin position of last-resort choices */
};

/* Build e->groups from the config (resolves addresses). Returns 0 or -1 with a log line. */
int upgroups_init(struct edge *e);
void upgroups_fini(struct edge *e);
/* Per worker: balance sets, retry budgets and pools for every group. */
void worker_groups_init(struct worker *w);
void worker_groups_fini(struct worker *w);
/*
 * Choose a server of group gi for one attempt of a request whose cache key is `key` (what a
 * shield group or `balance hash` hashes), skipping tried[0..n_tried). -1 when none is
 * eligible; with `last_resort` (the last group a request can go to), servers out of rotation
 * are then tried anyway rather than none. The caller then calls upstream_request().
 */
int worker_group_pick(struct worker *w, size_t gi, struct str key, const int *tried, size_t n_tried,
                      bool last_resort);
/* Monotonic milliseconds (health and balancing clock). */
int64_t edge_mono_ms(void);
/* Passive health: the outcome of one request to s, from any worker. */
void up_server_record(struct up_server *s, enum health_outcome o);
/* Active health: the result of one check of s (control thread). `status` is the response
 * status, or -1 without a response; latency in microseconds. */
void up_server_check_result(struct up_server *s, bool ok, int status, int64_t latency_us);
/* Apply cool-down ends (passive ejections that become probing); control thread, periodic. */
void upgroups_tick(struct edge *e);
/* The group's health state of server i as last published. */
enum health_state up_server_state(const struct up_server *s);
/* /status JSON ("upstreams":[...]) and /metrics lines for every group and server. */
void upgroups_status_json(struct edge *e, struct buf *b);
void upgroups_metrics(struct edge *e, struct buf *b);

/* ---- active health checks (hcheck.c), on the control thread ------------------------------ */

struct hcheck;
/* Start periodic checks of every server of every group whose conf has health_check set, on
 * `base` (the control thread's). Results go to up_server_check_result(). */
int hcheck_start(struct edge *e, struct event_base *base, struct hcheck **out);
void hcheck_stop(struct hcheck **h);

/* ---- upstream client --------------------------------------------------------------------- */

struct upstream_pool;

/* Callbacks from an upstream connection to its fetch, on the fetch's worker. */
struct upstream_cbs {
    void (*on_head)(void *arg, const struct h1_response *resp, const char *buf);
    void (*on_body)(void *arg, const char *data, size_t len);
    void (*on_done)(void *arg);
    void (*on_error)(void *arg, enum upstream_err err, bool any_byte_received);
    void (*on_req_drain)(void *arg); /* request body buffer drained: send more */
};

struct upstream;
/* Send a request head (already serialised in `head`) on a pooled or new connection to server
 * `server` of group `group`; the caller has counted it with balance_conn_start(), and the
 * upstream counts its end (balance_conn_end()) when it is released, fails or is abandoned.
 * Returns the connection, which calls back through `cbs`, or NULL when no connection can be
 * opened (counted as a connect failure). */
struct upstream *upstream_request(struct worker *w, size_t group, int server, struct evbuffer *head,
                                  bool head_request, const struct upstream_cbs *cbs, void *arg);
/* Append request body bytes; `eof` after the last. */
void upstream_send_body(struct upstream *u, struct evbuffer *data, bool eof);
size_t upstream_req_pending(struct upstream *u);
/* Flow control of the response body. */
void upstream_pause(struct upstream *u);
void upstream_resume(struct upstream *u);
/* The fetch no longer wants this connection (error or done early): close it. */
void upstream_abandon(struct upstream *u);
const char *upstream_addr(struct upstream *u);
/* A worker's pool for one server: TLS context and idle connections. */
struct upstream_pool *upstream_pool_new(struct worker *w, struct up_server *s);
void upstream_pool_free(struct upstream_pool **p);

/* ---- field sections: the request and response heads of HTTP/2 and HTTP/3 (fieldsec.c) --- */

#define FIELDSEC_BOMB_FACTOR                                                                       \
    4 /* decoded bytes past max_header_bytes times this: connection error */

/* What a front end accumulates while a request's fields are decoded. Zero it per request. */
struct fieldsec {
    size_t bytes; /* decoded, name + value + 32 per field */
    size_t count;
    bool too_large;
    bool malformed;
    bool regular_seen;
    struct str cookie; /* crumbs joined with "; " (RFC 9113 8.2.3, RFC 9114 4.2.1) */
    struct str host_hdr;
    /* set by fieldsec_finish() for FIELDSEC_REFUSE */
    enum reject why;
    int status;
    const char *msg;
};

enum fieldsec_verdict {
    FIELDSEC_OK = 0, /* start the exchange */
    FIELDSEC_MALFORMED = 1, /* a stream error (PROTOCOL_ERROR / H3_MESSAGE_ERROR) */
    FIELDSEC_REFUSE = 2, /* answer fs->status with fs->msg, count fs->why */
};

/* Add one decoded field of a request head to `x`. Returns false when the decoded size passed
 * FIELDSEC_BOMB_FACTOR times max_header_bytes (a compression bomb: close the connection). */
bool fieldsec_add(struct exchange *x, struct fieldsec *fs, const struct config *cfg,
                  const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen);
/* The head is complete (`end_stream`: and so is the request): check it and fill in the
 * scheme, authority, cookie and body framing of `x`. */
enum fieldsec_verdict fieldsec_finish(struct exchange *x, struct fieldsec *fs,
                                      const struct config *cfg, bool tls, bool end_stream);

struct fieldsec_field {
    struct str name;
    struct str value;
};
/* The response head of `x` as fields: ":status", the headers without the connection-specific
 * ones (lower-cased names), content-length when known. `out` holds x->resp.n + 2 entries;
 * returns how many were filled. Strings live in x's arena. */
size_t fieldsec_response(struct exchange *x, struct fieldsec_field *out, size_t max);

/* ---- multiplexed streams: shared by edge/h2 and edge/h3 (mux.c) -------------------------- */

/* A request body on its way from the protocol library to the exchange. */
struct mux_body {
    struct evbuffer *in; /* received, not yet taken by the exchange */
    uint64_t bytes;
    bool eof; /* the client ended the stream */
    bool eof_delivered;
    bool paused; /* the exchange asked for no more for now */
    bool too_large; /* past max_body_size: the rest is dropped */
    size_t discard; /* dropped bytes whose flow-control credit is not given back yet */
};
void mux_body_init(struct mux_body *b);
void mux_body_fini(struct mux_body *b);
/* Bytes of DATA from the client (dropped, but counted, past max_body_size). */
void mux_body_add(struct mux_body *b, const struct config *cfg, const uint8_t *data, size_t len);
/* Anything for mux_body_deliver() to do? */
bool mux_body_pending(const struct mux_body *b);
/* Hand what arrived to `x` (x_active: the stream's exchange is still running; 413 past the
 * limit). Returns the bytes the caller must give back to the client's flow-control windows:
 * those the exchange took, or that nobody will. May finish the exchange. */
size_t mux_body_deliver(struct mux_body *b, struct exchange *x, bool x_active);
/* May the exchange of a stream whose head is complete start (mux.c explains the wait)? */
bool mux_head_ready(const struct exchange *x, const struct mux_body *b, bool end_on_headers);
/* Is the request known to have no body (the stream ended with the head or without data)? */
bool mux_no_body(const struct mux_body *b, bool end_on_headers);
/* The exchange completed (finish or abort): log it and free its resources. */
void mux_exchange_done(struct exchange *x);
/* The client will not read the response (stream reset, connection gone): detach, log a 499
 * if a request had started and no head was sent, free. */
void mux_exchange_gone(struct exchange *x, bool started);

/* ---- H1 front end ------------------------------------------------------------------------ */

struct h1_conn;
/* `tls` NULL for a plaintext listener; else the connection takes its own reference. */
void h1_conn_accept(struct worker *w, evutil_socket_t fd, const struct sockaddr *sa, int salen,
                    struct tls_server *tls);
void h1_conn_close_all(struct worker *w);
/* Close connections that wait for a request (graceful stop); returns how many remain. */
size_t h1_conn_close_idle(struct worker *w);
/* Free connections closed during this loop iteration (the worker's reap event). */
void h1_conn_reap(struct worker *w);

/* ---- H2 front end ------------------------------------------------------------------------ */

struct h2_conn;
/* Take over a client connection from edge/h1 (ALPN h2 after the TLS handshake, or the h2c
 * preface on a plaintext listener): `io` is moved into the new connection and must not be
 * used by the caller afterwards; bytes already in io->in (the preface) are processed first.
 * The connection keeps the accounting h1_conn_accept() did (e->connections, the
 * connections gauge) and undoes it when it closes. */
void h2_conn_adopt(struct worker *w, struct sockio *io);
/* Graceful stop: GOAWAY on every connection; close those with no open stream. Returns how
 * many connections remain. */
size_t h2_conn_close_idle(struct worker *w);
void h2_conn_close_all(struct worker *w);
/* Free connections closed during this loop iteration (the worker's reap event). */
void h2_conn_reap(struct worker *w);

/* ---- admin ------------------------------------------------------------------------------- */

struct admin;
/* On the control thread's base. */
int admin_start(struct edge *e, struct event_base *base, struct admin **out);
void admin_stop(struct admin **a);

#endif
