/*
 * edge/upgroup.c: upstream groups at run time: the servers of every `upstream` of the config
 * (origin pools, shield groups, the sites' inline origin lines), their node-wide health, and
 * each worker's balancing state over them. See "upstream groups" in edge_int.h for the shape.
 *
 * Health is one struct health per server (balance/health.c), under the server's mutex because
 * every worker records request outcomes into it and the control thread feeds it active check
 * results and cool-down ends. Each change is published in the server's atomic `state`, which
 * workers read without a lock before each choice and copy into their own struct balance (the
 * choice itself is per worker and lock-free). The passive thresholds count node-wide, so a
 * server failing for every worker is ejected after `passive_failures` failures in total.
 *
 * Threads: upgroups_init/fini run on the main thread before the workers start and after they
 * stop; worker_groups_* on each worker (init before its loop runs); up_server_record on any
 * worker; up_server_check_result and upgroups_tick on the control thread; the status and
 * metrics renderers on the control thread (admin), reading atomics and the servers' health
 * under their locks.
 */
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "edge/edge_int.h"
#include "lib/log.h"
#include "lib/util.h"

int64_t edge_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *balance_name(enum conf_balance b)
{
    switch (b) {
    case CONF_BALANCE_LEAST_CONN:
        return "least_conn";
    case CONF_BALANCE_HASH:
        return "hash";
    case CONF_BALANCE_ROUND_ROBIN:
        break;
    }
    return "round_robin";
}

/* The site options that decide TLS towards an origin pool: the first site using the group. */
static const struct conf_site *first_site_of(const struct config *cfg, size_t group)
{
    for (size_t i = 0; i < cfg->n_sites; i++)
        if (cfg->sites[i].upstream == group)
            return &cfg->sites[i];
    return NULL;
}

static void health_conf_from(const struct conf_upstream_opts *o, struct health_conf *hc)
{
    *hc = health_conf_default;
    hc->rise = (unsigned)o->health_rise;
    hc->fall = (unsigned)o->health_fall;
    hc->window_ms = (uint32_t)o->passive_window_ms;
    hc->eject_failures = (unsigned)o->passive_failures;
    hc->eject_ratio_pct = (unsigned)o->passive_ratio;
    hc->cooldown_ms = (uint32_t)o->passive_cooldown_ms;
    hc->cooldown_max_ms = UTIL_MAX(hc->cooldown_ms, 300000u);
}

int upgroups_init(struct edge *e)
{
    const struct config *cfg = e->cfg;
    e->n_groups = cfg->n_upstreams;
    e->groups = xcalloc(e->n_groups ? e->n_groups : 1, sizeof(*e->groups));
    for (size_t gi = 0; gi < e->n_groups; gi++) {
        struct up_group *g = &e->groups[gi];
        const struct conf_upstream *cu = &cfg->upstreams[gi];
        g->conf = cu;
        g->idx = gi;
        g->shield = cu->shield;
        if (cu->shield) {
            g->tls = cu->tls;
            g->tls_verify = true;
        } else {
            const struct conf_site *s = first_site_of(cfg, gi);
            if (s != NULL && s->opts.upstream_tls) {
                g->tls = true;
                g->tls_ca = s->opts.upstream_tls_ca;
                g->tls_name = s->opts.upstream_tls_name;
                g->tls_verify = s->opts.upstream_tls_verify;
            }
        }
        g->n = cu->n_servers;
        g->servers = xcalloc(g->n ? g->n : 1, sizeof(*g->servers));
        struct health_conf hc;
        health_conf_from(&cu->opts, &hc);
        for (size_t i = 0; i < g->n; i++) {
            struct up_server *s = &g->servers[i];
            s->g = g;
            s->idx = i;
            s->conf = &cu->servers[i];
            pthread_mutex_init(&s->lock, NULL);
            if (health_init(&s->health, &hc) != 0) {
                log_msg(LOG_ERR, "upstream %s: invalid health settings", cu->name);
                return -1;
            }
            atomic_store(&s->state, HEALTH_HEALTHY);
            struct addrinfo hints, *res = NULL;
            memset(&hints, 0, sizeof(hints));
            hints.ai_socktype = SOCK_STREAM;
            char port[8];
            snprintf(port, sizeof(port), "%u", s->conf->addr.port);
            if (getaddrinfo(s->conf->addr.host, port, &hints, &res) == 0 && res) {
                memcpy(&s->ss, res->ai_addr, res->ai_addrlen);
                s->sslen = res->ai_addrlen;
                s->resolved = true;
                freeaddrinfo(res);
            } else {
                /* Never chosen: a name that does not resolve at start is a dead server. */
                log_msg(LOG_ERR, "upstream %s: cannot resolve %s", cu->name, s->conf->addr.text);
                atomic_store(&s->state, HEALTH_UNHEALTHY);
            }
        }
    }
    return 0;
}

void upgroups_fini(struct edge *e)
{
    for (size_t gi = 0; gi < e->n_groups; gi++) {
        struct up_group *g = &e->groups[gi];
        for (size_t i = 0; i < g->n; i++) {
            health_fini(&g->servers[i].health);
            pthread_mutex_destroy(&g->servers[i].lock);
        }
        free(g->servers);
    }
    free(e->groups);
    e->groups = NULL;
    e->n_groups = 0;
}

void worker_groups_init(struct worker *w)
{
    struct edge *e = w->edge;
    w->groups = xcalloc(e->n_groups ? e->n_groups : 1, sizeof(*w->groups));
    for (size_t gi = 0; gi < e->n_groups; gi++) {
        struct up_group *g = &e->groups[gi];
        struct worker_group *wg = &w->groups[gi];
        const struct conf_upstream_opts *o = &g->conf->opts;
        struct balance_conf bc = {
            .algo = g->shield                               ? BALANCE_HASH
                    : o->balance == CONF_BALANCE_LEAST_CONN ? BALANCE_LEAST_CONN
                    : o->balance == CONF_BALANCE_HASH       ? BALANCE_HASH
                                                            : BALANCE_ROUND_ROBIN,
            .slow_start_ms = (uint32_t)o->slow_start_ms,
        };
        struct balance_server_conf *sc = xcalloc(g->n ? g->n : 1, sizeof(*sc));
        wg->seen = xcalloc(g->n ? g->n : 1, sizeof(*wg->seen));
        wg->pools = xcalloc(g->n ? g->n : 1, sizeof(*wg->pools));
        for (size_t i = 0; i < g->n; i++) {
            struct up_server *s = &g->servers[i];
            sc[i].id = str_cstr(s->conf->addr.text);
            sc[i].weight = s->conf->weight;
            /* max_conns is per node; each worker balances alone: its share, rounded up */
            sc[i].max_conns =
                s->conf->max_conns == 0
                    ? 0
                    : (unsigned)((s->conf->max_conns + e->n_workers - 1) / e->n_workers);
            sc[i].initial =
                up_server_state(s) == HEALTH_HEALTHY ? HEALTH_HEALTHY : HEALTH_UNHEALTHY;
            sc[i].user = s;
            wg->seen[i] = sc[i].initial;
            wg->pools[i] = upstream_pool_new(w, s);
        }
        int rc = balance_create(&wg->bal, &bc, sc, g->n);
        ASSERT(rc == 0); /* ids are unique addresses (conf rejects duplicates) */
        free(sc);
        struct retry_budget_conf rbc = retry_budget_conf_default;
        rbc.ratio_pct = (unsigned)e->cfg->retry_budget_pct;
        rc = retry_budget_init(&wg->budget, &rbc);
        ASSERT(rc == 0);
    }
}

void worker_groups_fini(struct worker *w)
{
    struct edge *e = w->edge;
    if (w->groups == NULL)
        return;
    for (size_t gi = 0; gi < e->n_groups; gi++) {
        struct worker_group *wg = &w->groups[gi];
        for (size_t i = 0; i < e->groups[gi].n; i++)
            upstream_pool_free(&wg->pools[i]);
        free(wg->pools);
        free(wg->seen);
        balance_destroy(&wg->bal);
        retry_budget_fini(&wg->budget);
    }
    free(w->groups);
    w->groups = NULL;
}

enum health_state up_server_state(const struct up_server *s)
{
    return (enum health_state)atomic_load_explicit(&s->state, memory_order_acquire);
}

/* With s->lock held: publish the health's state if it changed, and say so in the log. */
static void publish_locked(struct up_server *s, bool changed, const char *why)
{
    if (!changed)
        return;
    enum health_state st = health_state_get(&s->health);
    atomic_store_explicit(&s->state, (int)st, memory_order_release);
    atomic_fetch_add_explicit(&s->transitions, 1, memory_order_relaxed);
    log_msg(st == HEALTH_HEALTHY ? LOG_INFO : LOG_WARN, "upstream %s: %s is %s (%s)",
            s->g->conf->name, s->conf->addr.text, health_state_name(st), why);
}

void up_server_record(struct up_server *s, enum health_outcome o)
{
    atomic_fetch_add_explicit(&s->requests, 1, memory_order_relaxed);
    if (o != HEALTH_OK)
        atomic_fetch_add_explicit(&s->failures, 1, memory_order_relaxed);
    pthread_mutex_lock(&s->lock);
    bool changed = health_record(&s->health, o, edge_mono_ms());
    publish_locked(s, changed,
                   o == HEALTH_OK         ? "a request succeeded"
                   : o == HEALTH_TIMEOUT  ? "requests time out"
                   : o == HEALTH_HTTP_5XX ? "requests get 5xx"
                                          : "connections fail");
    pthread_mutex_unlock(&s->lock);
}

void up_server_check_result(struct up_server *s, bool ok, int status, int64_t latency_us)
{
    atomic_fetch_add_explicit(&s->checks, 1, memory_order_relaxed);
    if (!ok)
        atomic_fetch_add_explicit(&s->checks_failed, 1, memory_order_relaxed);
    atomic_store_explicit(&s->check_status, status, memory_order_relaxed);
    atomic_store_explicit(&s->check_latency_us, latency_us, memory_order_relaxed);
    pthread_mutex_lock(&s->lock);
    bool changed = health_check_result(&s->health, ok, edge_mono_ms());
    char why[64];
    if (ok)
        snprintf(why, sizeof(why), "health check passed");
    else if (status > 0)
        snprintf(why, sizeof(why), "health check got %d", status);
    else
        snprintf(why, sizeof(why), "health check failed");
    publish_locked(s, changed, why);
    pthread_mutex_unlock(&s->lock);
}

void upgroups_tick(struct edge *e)
{
    int64_t now = edge_mono_ms();
    for (size_t gi = 0; gi < e->n_groups; gi++) {
        struct up_group *g = &e->groups[gi];
        for (size_t i = 0; i < g->n; i++) {
            struct up_server *s = &g->servers[i];
            if (!s->resolved)
                continue;
            pthread_mutex_lock(&s->lock);
            publish_locked(s, health_tick(&s->health, now),
                           "cool-down over: next request is a trial");
            pthread_mutex_unlock(&s->lock);
        }
    }
}

/* ---- /status and /metrics ---------------------------------------------------------------- */

void upgroups_status_json(struct edge *e, struct buf *b)
{
    int64_t now = edge_mono_ms();
    buf_append_cstr(b, "\"upstreams\":[");
    for (size_t gi = 0; gi < e->n_groups; gi++) {
        struct up_group *g = &e->groups[gi];
        const struct conf_upstream_opts *o = &g->conf->opts;
        buf_append_cstr(b, gi ? ",{\"name\":" : "{\"name\":");
        buf_append_json_str(b, g->conf->name);
        buf_printf(b, ",\"shield\":%s,\"balance\":\"%s\",\"tls\":%s,\"health_check\":",
                   g->shield ? "true" : "false",
                   g->shield ? "hash" : balance_name((enum conf_balance)o->balance),
                   g->tls ? "true" : "false");
        if (o->health_check)
            buf_append_json_str(b, o->health_check);
        else
            buf_append_cstr(b, "null");
        buf_append_cstr(b, ",\"servers\":[");
        for (size_t i = 0; i < g->n; i++) {
            struct up_server *s = &g->servers[i];
            unsigned window_total = 0, window_failed = 0;
            uint64_t ejections = 0;
            pthread_mutex_lock(&s->lock);
            health_counts(&s->health, now, &window_total, &window_failed, &ejections);
            pthread_mutex_unlock(&s->lock);
            buf_append_cstr(b, i ? ",{\"address\":" : "{\"address\":");
            buf_append_json_str(b, s->conf->addr.text);
            buf_printf(
                b,
                ",\"weight\":%u,\"max_conns\":%u,\"state\":\"%s\",\"active\":%" PRId64
                ",\"picks\":%" PRIu64 ",\"requests\":%" PRIu64 ",\"failures\":%" PRIu64
                ",\"window_requests\":%u,\"window_failures\":%u,\"ejections\":%" PRIu64
                ",\"checks\":%" PRIu64 ",\"checks_failed\":%" PRIu64
                ",\"last_check_status\":%d,\"last_check_ms\":%.1f,\"transitions\":%" PRIu64 "}",
                s->conf->weight, s->conf->max_conns, health_state_name(up_server_state(s)),
                atomic_load(&s->active), atomic_load(&s->picks), atomic_load(&s->requests),
                atomic_load(&s->failures), window_total, window_failed, ejections,
                atomic_load(&s->checks), atomic_load(&s->checks_failed),
                atomic_load(&s->check_status), (double)atomic_load(&s->check_latency_us) / 1000.0,
                atomic_load(&s->transitions));
        }
        buf_printf(b, "],\"retries\":%" PRIu64 ",\"retries_refused\":%" PRIu64 "}",
                   atomic_load(&g->retries), atomic_load(&g->retries_refused));
    }
    buf_append_cstr(b, "]");
}

/* A label value: backslash, quote and newline escaped (Prometheus text format). */
static void label_value(struct buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            buf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            buf_append_cstr(b, "\\n");
        else
            buf_append(b, s, 1);
    }
}

static void server_labels(struct buf *b, const struct up_server *s)
{
    buf_append_cstr(b, "{upstream=\"");
    label_value(b, s->g->conf->name);
    buf_append_cstr(b, "\",server=\"");
    label_value(b, s->conf->addr.text);
    buf_append_cstr(b, "\"}");
}

void upgroups_metrics(struct edge *e, struct buf *b)
{
    static const struct {
        const char *name;
        const char *type;
        const char *help;
    } m[] = {
        {"outpost_upstream_server_up", "gauge",
         "1 while the server is in rotation (healthy or probing), 0 while it is out"},
        {"outpost_upstream_server_state", "gauge",
         "Health state: 0 healthy, 1 unhealthy, 2 probing (one trial request at a time)"},
        {"outpost_upstream_server_requests_total", "counter",
         "Request outcomes recorded for the server (passive health)"},
        {"outpost_upstream_server_failures_total", "counter",
         "Failed requests: connection errors, timeouts, 5xx responses"},
        {"outpost_upstream_server_checks_total", "counter", "Active health checks run"},
        {"outpost_upstream_server_checks_failed_total", "counter", "Active health checks failed"},
        {"outpost_upstream_server_transitions_total", "counter", "Health state changes"},
        {"outpost_upstream_server_active_connections", "gauge",
         "Requests in flight to the server, all workers"},
    };
    for (size_t k = 0; k < ARRAY_SIZE(m); k++) {
        buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", m[k].name, m[k].help, m[k].name, m[k].type);
        for (size_t gi = 0; gi < e->n_groups; gi++) {
            struct up_group *g = &e->groups[gi];
            for (size_t i = 0; i < g->n; i++) {
                struct up_server *s = &g->servers[i];
                enum health_state st = up_server_state(s);
                uint64_t v = 0;
                switch (k) {
                case 0:
                    v = st != HEALTH_UNHEALTHY;
                    break;
                case 1:
                    v = (uint64_t)st;
                    break;
                case 2:
                    v = atomic_load(&s->requests);
                    break;
                case 3:
                    v = atomic_load(&s->failures);
                    break;
                case 4:
                    v = atomic_load(&s->checks);
                    break;
                case 5:
                    v = atomic_load(&s->checks_failed);
                    break;
                case 6:
                    v = atomic_load(&s->transitions);
                    break;
                default:
                    v = (uint64_t)UTIL_MAX(0, atomic_load(&s->active));
                    break;
                }
                buf_append_cstr(b, m[k].name);
                server_labels(b, s);
                buf_printf(b, " %" PRIu64 "\n", v);
            }
        }
    }
    static const char *const gm[][2] = {
        {"outpost_upstream_retries_total", "Attempts after a failed one (next server or group)"},
        {"outpost_upstream_retries_refused_total",
         "Retries not made because the group's retry budget was spent"},
    };
    for (size_t k = 0; k < ARRAY_SIZE(gm); k++) {
        buf_printf(b, "# HELP %s %s\n# TYPE %s counter\n", gm[k][0], gm[k][1], gm[k][0]);
        for (size_t gi = 0; gi < e->n_groups; gi++) {
            struct up_group *g = &e->groups[gi];
            buf_printf(b, "%s{upstream=\"", gm[k][0]);
            label_value(b, g->conf->name);
            buf_printf(b, "\"} %" PRIu64 "\n",
                       atomic_load(k == 0 ? &g->retries : &g->retries_refused));
        }
    }
}

/* ---- choice, on the worker ---------------------------------------------------------------- */

/* Bring the worker's balance of group gi up to date with the published health states. */
static void sync_health(struct worker *w, size_t gi, int64_t now)
{
    struct up_group *g = &w->edge->groups[gi];
    struct worker_group *wg = &w->groups[gi];
    for (size_t i = 0; i < g->n; i++) {
        int st = (int)up_server_state(&g->servers[i]);
        if (st != wg->seen[i]) {
            balance_set_health(wg->bal, (int)i, (enum health_state)st, now);
            wg->seen[i] = st;
        }
    }
}

int worker_group_pick(struct worker *w, size_t gi, struct str key, const int *tried, size_t n_tried,
                      bool last_resort)
{
    int64_t now = edge_mono_ms();
    sync_health(w, gi, now);
    struct worker_group *wg = &w->groups[gi];
    int idx = balance_pick(wg->bal, key, now, tried, n_tried);
    if (idx >= 0 || !last_resort)
        return idx;
    /* Every server is out of rotation (or tried, or at max_conns): as Envoy's panic mode and
     * nginx do, a last resort tries the untried resolved servers anyway, in turn, rather than
     * failing without asking anyone; max_conns still holds. */
    struct up_group *g = &w->edge->groups[gi];
    for (size_t k = 0; k < g->n; k++) {
        size_t i = (wg->panic_next + k) % g->n;
        bool was_tried = false;
        for (size_t t = 0; t < n_tried; t++)
            was_tried = was_tried || tried[t] == (int)i;
        const struct up_server *s = &g->servers[i];
        if (was_tried || !s->resolved)
            continue;
        struct balance_server_info info;
        balance_server_info(wg->bal, (int)i, now, &info);
        if (s->conf->max_conns != 0 && info.max_conns != 0 && info.active >= info.max_conns)
            continue;
        wg->panic_next = i + 1;
        return (int)i;
    }
    return -1;
}
