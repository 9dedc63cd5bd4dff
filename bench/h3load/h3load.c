/*
 * bench/h3load/h3load.c: h3load's command line, its workers' start and end, and the report.
 *
 *   h3load [-n N] [-c N] [-m N] [-D SECONDS [--warm-up-time SECONDS]] [-t N]
 *          [-H 'name: value']... [--sni NAME] [--timeout SECONDS] [-v] https://HOST:PORT/path...
 *
 * The main thread parses the command line into a struct h3load_config (h3load.h), resolves
 * the server's address once, builds the header fields of one request per URL, splits -c and
 * -n between the -t workers (worker.c), runs each on its own pthread and, once all have
 * returned, merges their stats and prints the report on stdout: fixed lines of "key value"
 * pairs (bench/README.md describes them), so that a script can parse them. Diagnostics go to
 * stderr. The exit status is 0 when at least one request succeeded, 1 when none did, 2 on a
 * usage error.
 */
#include "bench/h3load/h3load.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include "lib/util.h"

#define DEFAULT_TIMEOUT_S 120 /* --timeout for a run bounded by -n only */
#define DURATION_GRACE_S 10 /* --timeout past -D */

struct header {
    char *name;
    char *value;
};

/* What the command line gave, before it becomes a struct h3load_config. */
struct args {
    uint64_t nreq;
    int have_nreq;
    unsigned nconn;
    unsigned max_streams;
    unsigned nthreads;
    double duration;
    double warmup;
    double timeout;
    int verbose;
    const char *sni;
    struct header *headers;
    size_t nheaders;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: h3load [-n TOTAL_REQUESTS] [-c CONNECTIONS] [-m MAX_STREAMS_PER_CONN]\n"
            "              [-D DURATION_SECONDS] [-t THREADS] [-H 'name: value']...\n"
            "              [--warm-up-time SECONDS] [--sni NAME] [--timeout SECONDS] [-v]\n"
            "              URL [URL...]\n"
            "\n"
            "An HTTP/3 load generator (ngtcp2 + GnuTLS + nghttp3). URL is https://HOST:PORT/path;\n"
            "every URL must name the same HOST:PORT, and each connection requests them in turn.\n"
            "The server's certificate is not verified.\n"
            "\n"
            "  -n N          requests in all (default 1; unlimited with -D alone)\n"
            "  -c N          concurrent QUIC connections (default 1)\n"
            "  -m N          requests in flight per connection (default 1)\n"
            "  -D SECONDS    stop after this long (requests in flight then are 'abandoned')\n"
            "  --warm-up-time SECONDS\n"
            "                with -D: run this long first without counting anything\n"
            "  -t N          worker threads, one event loop each (default 1; at most -c)\n"
            "  -H 'n: v'     add a request header field; 'host' or ':authority' replaces the\n"
            "                authority, 'user-agent' replaces h3load's\n"
            "  --sni NAME    TLS server name (default: the URL's host unless an IP literal)\n"
            "  --timeout S   hard bound on the whole run (default %d s, or warm-up + -D + %d s)\n"
            "  -v            log every connection's events on stderr; -vv adds ngtcp2's log\n",
            DEFAULT_TIMEOUT_S, DURATION_GRACE_S);
}

static int parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max) {
        fprintf(stderr, "h3load: %s: '%s' is not a number in [%llu, %llu]\n", opt, s,
                (unsigned long long)min, (unsigned long long)max);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_unsigned(const char *opt, const char *s, unsigned max, unsigned *out)
{
    uint64_t v;

    if (parse_u64(opt, s, 1, max, &v) != 0)
        return -1;
    *out = (unsigned)v;
    return 0;
}

static int parse_seconds(const char *opt, const char *s, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v > 0) || v > 1e6) {
        fprintf(stderr, "h3load: %s: '%s' is not a number of seconds in (0, 1e6]\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_header(struct args *a, const char *s)
{
    const char *colon = strchr(s[0] == ':' ? s + 1 : s, ':');
    const char *v;
    struct header *h;
    size_t i;

    if (colon == NULL || colon == s) {
        fprintf(stderr, "h3load: -H: '%s' is not 'name: value'\n", s);
        return -1;
    }
    for (v = colon + 1; *v == ' ' || *v == '\t'; v++)
        ;
    a->headers = xrealloc(a->headers, (a->nheaders + 1) * sizeof(*a->headers));
    h = &a->headers[a->nheaders++];
    h->name = xstrndup(s, (size_t)(colon - s));
    h->value = xstrdup(v);
    for (i = 0; h->name[i] != '\0'; i++)
        h->name[i] = (char)tolower((unsigned char)h->name[i]);
    if (strcmp(h->name, "host") == 0) {
        free(h->name);
        h->name = xstrdup(":authority");
    }
    if (h->name[0] == ':' && strcmp(h->name, ":authority") != 0) {
        fprintf(stderr, "h3load: -H: only :authority may be set among pseudo-headers\n");
        return -1;
    }
    return 0;
}

/* The parts of one https URL, in one allocation owned by the caller (url->buf). */
struct url {
    char *buf;
    const char *host; /* without brackets */
    const char *port;
    const char *authority; /* as written: host[:port] */
    const char *path; /* "/" if none; the fragment dropped */
};

static int parse_url(const char *s, struct url *u)
{
    const char *rest;
    size_t alen;
    char *p;
    char *auth;

    memset(u, 0, sizeof(*u));
    if (strncasecmp(s, "https://", 8) != 0) {
        fprintf(stderr, "h3load: '%s': only https:// URLs are supported\n", s);
        return -1;
    }
    rest = s + 8;
    alen = strcspn(rest, "/?#");
    if (alen == 0) {
        fprintf(stderr, "h3load: '%s': no host\n", s);
        return -1;
    }
    /* authority NUL host NUL port NUL path NUL, each at most strlen(s) long. */
    u->buf = xmalloc(4 * strlen(s) + 8);
    auth = u->buf;
    memcpy(auth, rest, alen);
    auth[alen] = '\0';
    u->authority = auth;
    p = auth + alen + 1;
    u->host = p;
    if (auth[0] == '[') {
        const char *close = strchr(auth, ']');

        if (close == NULL || (close[1] != '\0' && close[1] != ':')) {
            fprintf(stderr, "h3load: '%s': bad IPv6 literal\n", s);
            return -1;
        }
        memcpy(p, auth + 1, (size_t)(close - auth - 1));
        p[close - auth - 1] = '\0';
        p += close - auth;
        u->port = close[1] == ':' ? close + 2 : "443";
    } else {
        const char *colon = strchr(auth, ':');
        size_t hlen = colon ? (size_t)(colon - auth) : alen;

        memcpy(p, auth, hlen);
        p[hlen] = '\0';
        p += hlen + 1;
        u->port = colon ? colon + 1 : "443";
    }
    if (u->host[0] == '\0' || u->port[0] == '\0') {
        fprintf(stderr, "h3load: '%s': no host or port\n", s);
        return -1;
    }
    u->path = p;
    rest += alen;
    if (rest[0] != '/')
        *p++ = '/';
    memcpy(p, rest, strcspn(rest, "#"));
    p[strcspn(rest, "#")] = '\0';
    return 0;
}

static nghttp3_nv make_nv(const char *name, const char *value)
{
    nghttp3_nv nv = {
        .name = (uint8_t *)name,
        .value = (uint8_t *)value,
        .namelen = strlen(name),
        .valuelen = strlen(value),
        .flags = NGHTTP3_NV_FLAG_NONE,
    };

    return nv;
}

/* The header fields of a request for `path`; they point into `urls` and `a`, which outlive it. */
static void build_request(struct h3load_request *req, const char *authority, const char *path,
                          const struct args *a)
{
    const char *ua = "h3load";
    size_t i;

    for (i = 0; i < a->nheaders; i++) {
        if (strcmp(a->headers[i].name, ":authority") == 0)
            authority = a->headers[i].value;
        else if (strcmp(a->headers[i].name, "user-agent") == 0)
            ua = a->headers[i].value;
    }
    req->nva = xcalloc(5 + a->nheaders, sizeof(*req->nva));
    req->nva[req->nvlen++] = make_nv(":method", "GET");
    req->nva[req->nvlen++] = make_nv(":scheme", "https");
    req->nva[req->nvlen++] = make_nv(":authority", authority);
    req->nva[req->nvlen++] = make_nv(":path", path);
    req->nva[req->nvlen++] = make_nv("user-agent", ua);
    for (i = 0; i < a->nheaders; i++) {
        if (strcmp(a->headers[i].name, ":authority") != 0 &&
            strcmp(a->headers[i].name, "user-agent") != 0)
            req->nva[req->nvlen++] = make_nv(a->headers[i].name, a->headers[i].value);
    }
}

static int resolve(const struct url *u, struct h3load_config *cfg)
{
    struct addrinfo hints;
    struct addrinfo *res;
    int rv;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICSERV;
    rv = getaddrinfo(u->host, u->port, &hints, &res);
    if (rv != 0) {
        fprintf(stderr, "h3load: %s port %s: %s\n", u->host, u->port, gai_strerror(rv));
        return -1;
    }
    memcpy(&cfg->addr, res->ai_addr, res->ai_addrlen);
    cfg->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void stats_merge(struct h3load_stats *dst, const struct h3load_stats *src)
{
    size_t i;

    dst->started += src->started;
    dst->succeeded += src->succeeded;
    dst->failed += src->failed;
    dst->errored += src->errored;
    dst->abandoned += src->abandoned;
    dst->length_mismatch += src->length_mismatch;
    for (i = 0; i < ARRAY_SIZE(dst->status); i++)
        dst->status[i] += src->status[i];
    dst->rx_bytes += src->rx_bytes;
    dst->rx_datagrams += src->rx_datagrams;
    dst->tx_bytes += src->tx_bytes;
    dst->tx_datagrams += src->tx_datagrams;
    dst->body_bytes += src->body_bytes;
    dst->conn_attempts += src->conn_attempts;
    dst->conn_ok += src->conn_ok;
    dst->conn_failed += src->conn_failed;
    if (dst->start_ns == 0 || src->start_ns < dst->start_ns)
        dst->start_ns = src->start_ns;
    if (src->end_ns > dst->end_ns)
        dst->end_ns = src->end_ns;
    if (src->nlatency > 0) {
        dst->latency_us =
            xrealloc(dst->latency_us, (dst->nlatency + src->nlatency) * sizeof(uint32_t));
        memcpy(dst->latency_us + dst->nlatency, src->latency_us, src->nlatency * sizeof(uint32_t));
        dst->nlatency += src->nlatency;
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a;
    uint32_t y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of the sorted latencies, in ms. */
static double percentile_ms(const struct h3load_stats *st, double p)
{
    size_t rank;

    if (st->nlatency == 0)
        return 0;
    rank = (size_t)ceil(p / 100.0 * (double)st->nlatency);
    rank = rank == 0 ? 0 : rank - 1;
    if (rank >= st->nlatency)
        rank = st->nlatency - 1;
    return st->latency_us[rank] / 1000.0;
}

static void report(struct h3load_stats *st)
{
    double secs = st->end_ns > st->start_ns ? (double)(st->end_ns - st->start_ns) / 1e9 : 0;
    uint64_t done = st->succeeded + st->failed;

    if (st->nlatency > 0)
        qsort(st->latency_us, st->nlatency, sizeof(uint32_t), cmp_u32);
    printf("requests: total %llu, succeeded %llu, failed %llu, errored %llu\n",
           (unsigned long long)(st->succeeded + st->failed + st->errored),
           (unsigned long long)st->succeeded, (unsigned long long)st->failed,
           (unsigned long long)st->errored);
    printf("status codes: 2xx %llu, 3xx %llu, 4xx %llu, 5xx %llu\n",
           (unsigned long long)st->status[2], (unsigned long long)st->status[3],
           (unsigned long long)st->status[4], (unsigned long long)st->status[5]);
    printf("traffic: total %llu bytes, body %llu bytes\n", (unsigned long long)st->rx_bytes,
           (unsigned long long)st->body_bytes);
    printf("finished in %.2fs, %.2f req/s, %.2f MB/s\n", secs, secs > 0 ? done / secs : 0.0,
           secs > 0 ? st->rx_bytes / secs / 1e6 : 0.0);
    printf("latency (ms): min %.3f, p50 %.3f, p90 %.3f, p99 %.3f, max %.3f\n",
           st->nlatency ? st->latency_us[0] / 1000.0 : 0.0, percentile_ms(st, 50),
           percentile_ms(st, 90), percentile_ms(st, 99),
           st->nlatency ? st->latency_us[st->nlatency - 1] / 1000.0 : 0.0);
    printf("connections: total %llu, succeeded %llu, failed %llu\n",
           (unsigned long long)st->conn_attempts, (unsigned long long)st->conn_ok,
           (unsigned long long)st->conn_failed);
    printf("details: started %llu, abandoned %llu, length mismatch %llu, other status %llu\n",
           (unsigned long long)st->started, (unsigned long long)st->abandoned,
           (unsigned long long)st->length_mismatch,
           (unsigned long long)(st->status[0] + st->status[1]));
    printf("udp: datagrams sent %llu, bytes sent %llu, datagrams received %llu, bytes received "
           "%llu\n",
           (unsigned long long)st->tx_datagrams, (unsigned long long)st->tx_bytes,
           (unsigned long long)st->rx_datagrams, (unsigned long long)st->rx_bytes);
}

static int parse_args(int argc, char **argv, struct args *a)
{
    static const struct option longopts[] = {
        {"requests", required_argument, NULL, 'n'},
        {"clients", required_argument, NULL, 'c'},
        {"max-concurrent-streams", required_argument, NULL, 'm'},
        {"duration", required_argument, NULL, 'D'},
        {"threads", required_argument, NULL, 't'},
        {"header", required_argument, NULL, 'H'},
        {"sni", required_argument, NULL, 'S'},
        {"timeout", required_argument, NULL, 'T'},
        {"warm-up-time", required_argument, NULL, 'W'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;

    a->nconn = a->max_streams = a->nthreads = 1;
    a->nreq = 1;
    while ((ch = getopt_long(argc, argv, "n:c:m:D:t:H:vh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'n':
            if (parse_u64("-n", optarg, 1, UINT64_MAX - 1, &a->nreq) != 0)
                return -1;
            a->have_nreq = 1;
            break;
        case 'c':
            if (parse_unsigned("-c", optarg, 100000, &a->nconn) != 0)
                return -1;
            break;
        case 'm':
            if (parse_unsigned("-m", optarg, 100000, &a->max_streams) != 0)
                return -1;
            break;
        case 'D':
            if (parse_seconds("-D", optarg, &a->duration) != 0)
                return -1;
            break;
        case 't':
            if (parse_unsigned("-t", optarg, 1024, &a->nthreads) != 0)
                return -1;
            break;
        case 'H':
            if (parse_header(a, optarg) != 0)
                return -1;
            break;
        case 'S':
            a->sni = optarg;
            break;
        case 'T':
            if (parse_seconds("--timeout", optarg, &a->timeout) != 0)
                return -1;
            break;
        case 'W':
            if (parse_seconds("--warm-up-time", optarg, &a->warmup) != 0)
                return -1;
            break;
        case 'v':
            a->verbose++;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "h3load: no URL\n");
        return -1;
    }
    if (a->nthreads > a->nconn) {
        fprintf(stderr, "h3load: -t %u is more than -c %u\n", a->nthreads, a->nconn);
        return -1;
    }
    if (a->warmup > 0 && a->duration == 0) {
        fprintf(stderr, "h3load: --warm-up-time needs -D\n");
        return -1;
    }
    if (a->duration > 0 && !a->have_nreq)
        a->nreq = H3LOAD_UNLIMITED;
    if (a->timeout == 0)
        a->timeout =
            a->duration > 0 ? a->warmup + a->duration + DURATION_GRACE_S : DEFAULT_TIMEOUT_S;
    return 0;
}

int main(int argc, char **argv)
{
    struct args a;
    struct h3load_config cfg;
    struct url *urls;
    struct h3load_worker_args *wa;
    pthread_t *tids;
    struct h3load_stats total;
    size_t nurls;
    size_t i;
    unsigned t;
    unsigned conn_before = 0;
    int rc = 0;

    memset(&a, 0, sizeof(a));
    if (parse_args(argc, argv, &a) != 0) {
        usage(stderr);
        return 2;
    }
    memset(&cfg, 0, sizeof(cfg));
    nurls = (size_t)(argc - optind);
    urls = xcalloc(nurls, sizeof(*urls));
    for (i = 0; i < nurls; i++) {
        if (parse_url(argv[optind + i], &urls[i]) != 0)
            return 2;
        if (i > 0 &&
            (strcmp(urls[i].host, urls[0].host) != 0 || strcmp(urls[i].port, urls[0].port) != 0)) {
            fprintf(stderr, "h3load: every URL must name the same host and port as the first\n");
            return 2;
        }
    }
    if (resolve(&urls[0], &cfg) != 0)
        return 2;
    cfg.nreq = a.nreq;
    cfg.nconn = a.nconn;
    cfg.max_streams = a.max_streams;
    cfg.nthreads = a.nthreads;
    cfg.duration_ns = (uint64_t)(a.duration * 1e9);
    cfg.warmup_ns = (uint64_t)(a.warmup * 1e9);
    cfg.timeout_ns = (uint64_t)(a.timeout * 1e9);
    cfg.verbose = a.verbose;
    cfg.sni = a.sni != NULL ? a.sni : is_ip_literal(urls[0].host) ? NULL : urls[0].host;
    cfg.nreqs = nurls;
    cfg.reqs = xcalloc(nurls, sizeof(*cfg.reqs));
    for (i = 0; i < nurls; i++)
        build_request(&cfg.reqs[i], urls[i].authority, urls[i].path, &a);

    /* Each worker takes a share of the connections and the same share of -n. */
    wa = xcalloc(cfg.nthreads, sizeof(*wa));
    tids = xcalloc(cfg.nthreads, sizeof(*tids));
    for (t = 0; t < cfg.nthreads; t++) {
        unsigned n = cfg.nconn / cfg.nthreads + (t < cfg.nconn % cfg.nthreads);

        wa[t].cfg = &cfg;
        wa[t].id = t;
        wa[t].nconn = n;
        if (cfg.nreq == H3LOAD_UNLIMITED) {
            wa[t].nreq = H3LOAD_UNLIMITED;
        } else {
            unsigned __int128 lo = (unsigned __int128)cfg.nreq * conn_before / cfg.nconn;
            unsigned __int128 hi = (unsigned __int128)cfg.nreq * (conn_before + n) / cfg.nconn;

            wa[t].nreq = (uint64_t)(hi - lo);
            /* No use for more connections than requests. */
            if (wa[t].nreq < n)
                wa[t].nconn = (unsigned)wa[t].nreq;
        }
        conn_before += n;
    }
    for (t = 0; t < cfg.nthreads; t++) {
        rc = pthread_create(&tids[t], NULL, h3load_worker_run, &wa[t]);
        if (rc != 0) {
            fprintf(stderr, "h3load: pthread_create: %s\n", strerror(rc));
            return 1;
        }
    }
    memset(&total, 0, sizeof(total));
    rc = 0;
    for (t = 0; t < cfg.nthreads; t++) {
        pthread_join(tids[t], NULL);
        if (wa[t].rc != 0)
            rc = 1;
        stats_merge(&total, &wa[t].stats);
        free(wa[t].stats.latency_us);
    }
    report(&total);
    if (total.succeeded == 0)
        rc = 1;

    free(total.latency_us);
    for (i = 0; i < nurls; i++) {
        free(cfg.reqs[i].nva);
        free(urls[i].buf);
    }
    for (i = 0; i < a.nheaders; i++) {
        free(a.headers[i].name);
        free(a.headers[i].value);
    }
    free(a.headers);
    free(cfg.reqs);
    free(urls);
    free(wa);
    free(tids);
    return rc;
}
