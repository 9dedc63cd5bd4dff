/*
 * edge/metrics.c: request, cache and upstream counters. Each worker writes its own struct
 * metrics with relaxed atomics (no sharing of cache lines on the request path); the admin
 * thread sums them when /metrics or /status is read, and renders the Prometheus text format.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "edge/edge_int.h"
#include "lib/util.h"

static const int tracked_codes[METRICS_CODES - 1] = {
    200, 201, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408,
    410, 412, 413, 414, 416, 417, 421, 429, 431, 500, 501, 502, 503, 504, 505};

static const double lat_bounds[METRICS_LAT_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                       0.1,   0.25,   0.5,   1.0,  2.5,   10.0};

static const char *const reject_names[REJECT_COUNT] = {"syntax",
                                                       "smuggling",
                                                       "uri_too_long",
                                                       "headers_too_large",
                                                       "version",
                                                       "te_unsupported",
                                                       "host",
                                                       "method",
                                                       "body_too_large",
                                                       "header_timeout",
                                                       "too_many_connections",
                                                       "expectation",
                                                       "loop"};

static const char *const uperr_names[UPERR_COUNT] = {"connect", "timeout", "reset", "protocol"};

const char *reject_name(enum reject r)
{
    return reject_names[r];
}

static int code_slot(int status)
{
    for (int i = 0; i < METRICS_CODES - 1; i++)
        if (tracked_codes[i] == status)
            return i;
    return METRICS_CODES - 1; /* other */
}

void metrics_count_request(struct worker *w, enum xcache c, int status)
{
    METRIC_INC(w, requests[c][code_slot(status)]);
    if (c == XCACHE_HIT || c == XCACHE_STALE || c == XCACHE_REVALIDATED || c == XCACHE_COLLAPSED)
        METRIC_INC(w, hits);
    else if (c == XCACHE_MISS)
        METRIC_INC(w, misses);
}

void metrics_upstream_latency(struct worker *w, int64_t usec)
{
    double s = (double)usec / 1e6;
    int b = 0;
    while (b < METRICS_LAT_BUCKETS && s > lat_bounds[b])
        b++;
    METRIC_INC(w, upstream_lat[b]);
    METRIC_ADD(w, upstream_lat_sum_us, (uint64_t)(usec > 0 ? usec : 0));
    METRIC_INC(w, upstream_lat_count);
}

#define SUM(field)                                                                                 \
    ({                                                                                             \
        uint64_t s_ = 0;                                                                           \
        for (size_t i_ = 0; i_ < e->n_workers; i_++)                                               \
            s_ += atomic_load_explicit(&e->workers[i_].metrics.field, memory_order_relaxed);       \
        s_;                                                                                        \
    })

void metrics_render(struct edge *e, struct buf *out)
{
    buf_printf(out, "# HELP outpost_requests_total Requests answered, by cache result and status.\n"
                    "# TYPE outpost_requests_total counter\n");
    for (int c = 0; c < XCACHE_COUNT; c++) {
        for (int k = 0; k < METRICS_CODES; k++) {
            uint64_t v = SUM(requests[c][k]);
            if (v == 0)
                continue;
            if (k < METRICS_CODES - 1)
                buf_printf(out, "outpost_requests_total{cache=\"%s\",code=\"%d\"} %" PRIu64 "\n",
                           xcache_name((enum xcache)c), tracked_codes[k], v);
            else
                buf_printf(out, "outpost_requests_total{cache=\"%s\",code=\"other\"} %" PRIu64 "\n",
                           xcache_name((enum xcache)c), v);
        }
    }
    buf_printf(out, "# HELP outpost_http_rejected_total Requests refused before the pipeline.\n"
                    "# TYPE outpost_http_rejected_total counter\n");
    for (int r = 0; r < REJECT_COUNT; r++)
        buf_printf(out, "outpost_http_rejected_total{reason=\"%s\"} %" PRIu64 "\n", reject_names[r],
                   SUM(rejected[r]));
    uint64_t hits = SUM(hits), misses = SUM(misses);
    buf_printf(out,
               "# HELP outpost_cache_hit_ratio Hits / (hits + misses) since start.\n"
               "# TYPE outpost_cache_hit_ratio gauge\noutpost_cache_hit_ratio %.6f\n",
               hits + misses ? (double)hits / (double)(hits + misses) : 0.0);
    buf_printf(out,
               "# TYPE outpost_cache_hits_total counter\noutpost_cache_hits_total %" PRIu64
               "\n# TYPE outpost_cache_misses_total counter\noutpost_cache_misses_total %" PRIu64
               "\n",
               hits, misses);
    struct cache_stats cs;
    cache_stats_get(e->cache, &cs);
    buf_printf(
        out,
        "# TYPE outpost_cache_objects gauge\noutpost_cache_objects %" PRIu64 "\n"
        "# TYPE outpost_cache_bytes gauge\noutpost_cache_bytes %" PRIu64 "\n"
        "# TYPE outpost_cache_max_bytes gauge\noutpost_cache_max_bytes %" PRIu64 "\n"
        "# TYPE outpost_cache_evictions_total counter\noutpost_cache_evictions_total %" PRIu64 "\n"
        "# TYPE outpost_cache_write_errors_total counter\n"
        "outpost_cache_write_errors_total %" PRIu64 "\n"
        "# TYPE outpost_cache_store_skipped_total counter\n"
        "outpost_cache_store_skipped_total %" PRIu64 "\n",
        cs.objects, cs.bytes, cs.max_size, cs.evictions, cs.write_errors, SUM(store_skipped));
    buf_printf(out,
               "# TYPE outpost_upstream_requests_total counter\n"
               "outpost_upstream_requests_total %" PRIu64 "\n"
               "# TYPE outpost_upstream_errors_total counter\n",
               SUM(upstream_requests));
    for (int i = 0; i < UPERR_COUNT; i++)
        buf_printf(out, "outpost_upstream_errors_total{reason=\"%s\"} %" PRIu64 "\n",
                   uperr_names[i], SUM(upstream_errors[i]));
    buf_printf(out, "# HELP outpost_upstream_first_byte_seconds Time to the upstream's first "
                    "response byte.\n# TYPE outpost_upstream_first_byte_seconds histogram\n");
    uint64_t cum = 0;
    for (int b = 0; b < METRICS_LAT_BUCKETS; b++) {
        cum += SUM(upstream_lat[b]);
        buf_printf(out, "outpost_upstream_first_byte_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                   lat_bounds[b], cum);
    }
    cum += SUM(upstream_lat[METRICS_LAT_BUCKETS]);
    buf_printf(out,
               "outpost_upstream_first_byte_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
               "outpost_upstream_first_byte_seconds_sum %.6f\n"
               "outpost_upstream_first_byte_seconds_count %" PRIu64 "\n",
               cum, (double)SUM(upstream_lat_sum_us) / 1e6, SUM(upstream_lat_count));
    int64_t conns = 0;
    for (size_t i = 0; i < e->n_workers; i++)
        conns += atomic_load_explicit(&e->workers[i].metrics.connections, memory_order_relaxed);
    buf_printf(out,
               "# TYPE outpost_connections gauge\noutpost_connections %lld\n"
               "# TYPE outpost_connections_total counter\noutpost_connections_total %" PRIu64 "\n"
               "# TYPE outpost_bytes_sent_total counter\noutpost_bytes_sent_total %" PRIu64 "\n"
               "# TYPE outpost_bytes_received_total counter\n"
               "outpost_bytes_received_total %" PRIu64 "\n",
               (long long)conns, SUM(connections_total), SUM(bytes_sent), SUM(bytes_received));
    upgroups_metrics(e, out);
    if (e->h3 == NULL)
        return;
    buf_printf(out,
               "# HELP outpost_quic_datagrams_received_total UDP datagrams read on h3_listen.\n"
               "# TYPE outpost_quic_datagrams_received_total counter\n"
               "outpost_quic_datagrams_received_total %" PRIu64 "\n"
               "# TYPE outpost_quic_datagrams_sent_total counter\n"
               "outpost_quic_datagrams_sent_total %" PRIu64 "\n"
               "# HELP outpost_quic_datagrams_dropped_total Datagrams ignored: malformed, for no "
               "connection, not acceptable.\n"
               "# TYPE outpost_quic_datagrams_dropped_total counter\n"
               "outpost_quic_datagrams_dropped_total %" PRIu64 "\n"
               "# HELP outpost_quic_datagrams_forwarded_total Datagrams a worker passed to the "
               "worker owning their connection (0 while kernel steering works).\n"
               "# TYPE outpost_quic_datagrams_forwarded_total counter\n"
               "outpost_quic_datagrams_forwarded_total %" PRIu64 "\n"
               "# TYPE outpost_quic_retry_sent_total counter\n"
               "outpost_quic_retry_sent_total %" PRIu64 "\n"
               "# TYPE outpost_quic_retry_failed_total counter\n"
               "outpost_quic_retry_failed_total %" PRIu64 "\n"
               "# TYPE outpost_quic_stateless_reset_sent_total counter\n"
               "outpost_quic_stateless_reset_sent_total %" PRIu64 "\n"
               "# TYPE outpost_quic_version_negotiation_sent_total counter\n"
               "outpost_quic_version_negotiation_sent_total %" PRIu64 "\n",
               SUM(quic_datagrams_received), SUM(quic_datagrams_sent), SUM(quic_datagrams_dropped),
               SUM(quic_datagrams_forwarded), SUM(quic_retry_sent), SUM(quic_retry_failed),
               SUM(quic_stateless_reset_sent), SUM(quic_version_negotiation_sent));
}
