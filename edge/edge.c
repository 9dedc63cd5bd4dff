/*
 * edge/edge.c: the node's lifecycle: worker threads with SO_REUSEPORT listeners, the control
 * loop on the main thread (signals, admin API), the node clock and graceful shutdown.
 *
 * Each worker has its own event base and its own listening sockets on every `listen` address
 * (SO_REUSEPORT: the kernel spreads connections), so accepting and serving take no lock.
 * Bases are created with libevent's pthread locking enabled because one cross-thread event
 * exists: a fetch on one worker wakes readers on another (request collapsing).
 *
 * Shutdown (SIGTERM/SIGINT): every worker stops accepting, closes idle keep-alive
 * connections, lets in-flight exchanges finish for up to 10 s, then closes the rest; the
 * main thread joins them and returns to main(), which closes the cache (draining its writer).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "edge/edge_int.h"
#include "edge/passthrough.h"
#include "lib/log.h"
#include "lib/util.h"

#define DRAIN_SECONDS 10

int64_t edge_now(const struct edge *e)
{
    return (int64_t)time(NULL) + atomic_load_explicit(&e->clock_offset, memory_order_relaxed);
}

void edge_timer_arm(struct event *ev, int64_t ms)
{
    if (ms <= 0) {
        evtimer_del(ev);
        return;
    }
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    evtimer_add(ev, &tv);
}

bool edge_conn_admit(struct worker *w)
{
    struct edge *e = w->edge;
    int64_t n = atomic_fetch_add(&e->connections, 1) + 1;
    if ((uint64_t)n > e->cfg->max_connections) {
        atomic_fetch_sub(&e->connections, 1);
        METRIC_INC(w, rejected[REJECT_TOO_MANY_CONNECTIONS]);
        return false;
    }
    METRIC_INC(w, connections_total);
    METRIC_ADD(w, connections, 1);
    return true;
}

void edge_conn_release(struct worker *w)
{
    atomic_fetch_sub(&w->edge->connections, 1);
    METRIC_ADD(w, connections, -1);
}

void edge_peer_name(const struct sockaddr *sa, char *out, size_t outlen)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        snprintf(out, outlen, "%s:%d", host, ntohs(s4->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        snprintf(out, outlen, "[%s]:%d", host, ntohs(s6->sin6_port));
    } else {
        snprintf(out, outlen, "?");
    }
}

int64_t edge_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct worker *w = arg;
    if (w->stopping) {
        evutil_closesocket(fd);
        return;
    }
    h1_conn_accept(w, fd, sa, salen, NULL);
}

/* The node's current TLS contexts, with a reference for the caller. */
static struct tls_server *tls_current(struct edge *e)
{
    pthread_mutex_lock(&e->tls_lock);
    struct tls_server *s = e->tls != NULL ? tls_server_ref(e->tls) : NULL;
    pthread_mutex_unlock(&e->tls_lock);
    return s;
}

static void accept_tls_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                          int salen, void *arg)
{
    struct worker *w = arg;
    struct tls_server *tls = w->stopping ? NULL : tls_current(w->edge);
    if (tls == NULL) {
        evutil_closesocket(fd);
        return;
    }
    h1_conn_accept(w, fd, sa, salen, tls);
    tls_server_unref(&tls); /* the connection took its own reference */
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    log_ratelimited(LOG_WARN, "accept: %s", evutil_socket_error_to_string(err));
}

static int bind_listener(struct worker *w, const struct conf_addr *a, bool tls,
                         struct evconnlistener **out)
{
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    if (evutil_parse_sockaddr_port(a->text, (struct sockaddr *)&ss, &sslen) != 0) {
        log_msg(LOG_ERR, "listen %s: not a numeric address", a->text);
        return -EINVAL;
    }
    struct evconnlistener *l = evconnlistener_new_bind(
        w->base, tls ? accept_tls_cb : accept_cb, w,
        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_EXEC,
        1024, (struct sockaddr *)&ss, sslen);
    if (l == NULL) {
        int err = errno;
        log_msg(LOG_ERR, "listen %s: %s", a->text, strerror(err));
        return -(err ? err : EADDRINUSE);
    }
    evconnlistener_set_error_cb(l, accept_error_cb);
    *out = l;
    return 0;
}

static void drain_cb(evutil_socket_t fd, short what, void *arg);

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    w->stopping = true;
    for (size_t i = 0; i < w->n_listeners; i++)
        evconnlistener_disable(w->listeners[i]);
    passthrough_stop(w);
    drain_cb(-1, 0, w);
}

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    static __thread int64_t deadline;
    if (deadline == 0)
        deadline = edge_mono_us() + (int64_t)DRAIN_SECONDS * 1000000;
    size_t left = h1_conn_close_idle(w) + h2_conn_close_idle(w) + passthrough_close_idle(w) +
                  h3_close_idle(w);
    if (left == 0 || edge_mono_us() >= deadline) {
        h1_conn_close_all(w);
        h2_conn_close_all(w);
        h3_close_all(w);
        passthrough_close_all(w);
        event_base_loopexit(w->base, NULL);
        return;
    }
    struct timeval tv = {0, 50000};
    event_base_once(w->base, -1, EV_TIMEOUT, drain_cb, w, &tv);
}

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    h1_conn_reap(arg);
    h2_conn_reap(arg);
    h3_reap(arg);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "outpost-w%u", w->id);
    pthread_setname_np(pthread_self(), name);
    event_base_dispatch(w->base);
    return NULL;
}

int edge_create(struct edge **out, const struct config *cfg, struct cache *cache)
{
    static bool threads_ready;
    if (!threads_ready) {
        evthread_use_pthreads();
        threads_ready = true;
    }
    struct edge *e = xcalloc(1, sizeof(*e));
    e->cfg = cfg;
    e->cache = cache;
    e->start_time = (int64_t)time(NULL);
    {
        char v[300];
        /* The comment names the role: an edge refuses requests a shield forwarded. */
        int n = snprintf(v, sizeof(v), "1.1 %s (outpost%s)", cfg->node_name,
                         cfg->role == CONF_ROLE_SHIELD ? " shield" : "");
        e->via = str_make(xstrndup(v, (size_t)n), (size_t)n);
    }
    if (cfg->n_h3_listen > 0) {
        /* h3=":PORT" for each distinct port (clients reach it on the address they used) */
        char v[512];
        size_t n = 0;
        for (size_t i = 0; i < cfg->n_h3_listen && n < sizeof(v) - 64; i++) {
            bool dup = false;
            for (size_t j = 0; j < i; j++)
                dup |= cfg->h3_listen[j].port == cfg->h3_listen[i].port;
            if (!dup)
                n += (size_t)snprintf(v + n, sizeof(v) - n, "%sh3=\":%u\"; ma=%lld", n ? ", " : "",
                                      (unsigned)cfg->h3_listen[i].port,
                                      (long long)(cfg->alt_svc_max_age_ms / 1000));
        }
        e->alt_svc = str_make(xstrndup(v, n), n);
    }
    pthread_mutex_init(&e->log_lock, NULL);
    pthread_mutex_init(&e->tls_lock, NULL);
    fetch_table_init(e);
    if (upgroups_init(e) != 0) {
        upgroups_fini(e);
        pthread_mutex_destroy(&e->tls_lock);
        pthread_mutex_destroy(&e->log_lock);
        fetch_table_fini(e);
        free((char *)e->via.p);
        free((char *)e->alt_svc.p);
        free(e);
        return OP_EINVAL;
    }
    if (cfg->n_tls_listen > 0) {
        char err[512];
        int rc = 0;
        if (cfg->tls_session_tickets)
            rc = tls_tickets_new(cfg->tls_ticket_rotation_ms, cfg->tls_ticket_key_file, &e->tickets,
                                 err, sizeof(err));
        if (rc == 0)
            rc = tls_server_new(cfg, e->tickets, cfg->http2, &e->tls, err, sizeof(err));
        if (rc < 0) {
            log_msg(LOG_ERR, "%s", err);
            tls_tickets_free(&e->tickets);
            pthread_mutex_destroy(&e->tls_lock);
            pthread_mutex_destroy(&e->log_lock);
            fetch_table_fini(e);
            upgroups_fini(e);
            free((char *)e->via.p);
            free((char *)e->alt_svc.p);
            free(e);
            return OP_EINVAL;
        }
    }
    if (cfg->n_h3_listen > 0) {
        char err[600];
        if (h3_node_new(cfg, &e->h3, err, sizeof(err)) != 0) {
            log_msg(LOG_ERR, "%s", err);
            edge_destroy(&e);
            return OP_EINVAL;
        }
    }
    if (cfg->access_log) {
        if (strcmp(cfg->access_log, "-") == 0) {
            e->access_log = stdout;
        } else {
            e->access_log = fopen(cfg->access_log, "a");
            if (e->access_log == NULL) {
                int err = errno;
                log_msg(LOG_ERR, "access_log %s: %s", cfg->access_log, strerror(err));
                free(e);
                return -err;
            }
        }
        setvbuf(e->access_log, NULL, _IOLBF, 0);
    }
    e->n_workers = cfg->workers ? cfg->workers : 1;
    e->workers = xcalloc(e->n_workers, sizeof(*e->workers));
    for (size_t i = 0; i < e->n_workers; i++) {
        struct worker *w = &e->workers[i];
        w->id = (unsigned)i;
        w->edge = e;
        /* Precise timers (timerfd): QUIC paces its packets with timers well under 1 ms. */
        struct event_config *ec = event_config_new();
        if (ec == NULL)
            util_oom(0);
        event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
        w->base = event_base_new_with_config(ec);
        event_config_free(ec);
        if (w->base == NULL)
            util_oom(0);
        w->stop_ev = event_new(w->base, -1, 0, stop_cb, w);
        w->reap_ev = event_new(w->base, -1, 0, reap_cb, w);
        size_t nl = cfg->n_listen + cfg->n_tls_listen;
        w->listeners = xcalloc(nl, sizeof(*w->listeners));
        for (size_t j = 0; j < nl; j++) {
            bool tls = j >= cfg->n_listen;
            const struct conf_addr *a = tls ? &cfg->tls_listen[j - cfg->n_listen] : &cfg->listen[j];
            int err = bind_listener(w, a, tls, &w->listeners[j]);
            if (err != 0) {
                e->n_workers = i + 1;
                w->n_listeners = j;
                edge_destroy(&e);
                return err;
            }
            w->n_listeners++;
        }
        int err = passthrough_create(w);
        if (err == 0 && e->h3 != NULL)
            err = h3_worker_create(w, e->h3);
        if (err != 0) {
            e->n_workers = i + 1;
            edge_destroy(&e);
            return err;
        }
        worker_groups_init(w);
    }
    h3_steering_attach(e);
    *out = e;
    return 0;
}

/* SIGHUP: read the config file again and swap in new TLS contexts (certificates, keys, OCSP
 * staples) if they all load; otherwise keep serving with the old ones. Connections keep the
 * contexts they started with. The rest of the config is not reloaded yet. */
static void hup_cb(evutil_socket_t sig, short what, void *arg)
{
    struct edge *e = arg;
    if (e->n_argv == 0 || (e->cfg->n_tls_listen == 0 && e->h3 == NULL)) {
        log_msg(LOG_INFO, "SIGHUP: nothing to reload");
        return;
    }
    struct config *nc = NULL;
    char err[600];
    if (conf_load(e->n_argv, e->argv, &nc, err, sizeof(err)) < 0) {
        log_msg(LOG_ERR, "SIGHUP: reload refused, still serving the old certificates: %s", err);
        return;
    }
    struct tls_server *ns = NULL;
    if (e->cfg->n_tls_listen > 0 &&
        tls_server_new(nc, e->tickets, nc->http2, &ns, err, sizeof(err)) < 0) {
        log_msg(LOG_ERR, "SIGHUP: reload refused, still serving the old certificates: %s", err);
        conf_free(&nc);
        return;
    }
    /* HTTP/3 last: once its credentials load, nothing can fail any more */
    if (e->h3 != NULL && h3_node_reload(e->h3, nc, err, sizeof(err)) < 0) {
        log_msg(LOG_ERR, "SIGHUP: reload refused, still serving the old certificates: %s", err);
        tls_server_unref(&ns);
        conf_free(&nc);
        return;
    }
    if (ns != NULL) {
        pthread_mutex_lock(&e->tls_lock);
        struct tls_server *old = e->tls;
        e->tls = ns;
        pthread_mutex_unlock(&e->tls_lock);
        tls_server_unref(&old);
    }
    /* The new contexts may point into their config: keep it as long as the node runs. */
    e->tls_cfgs = xrealloc(e->tls_cfgs, (e->n_tls_cfgs + 1) * sizeof(*e->tls_cfgs));
    e->tls_cfgs[e->n_tls_cfgs++] = nc;
    log_msg(LOG_INFO, "SIGHUP: TLS certificates reloaded");
}

/* Rotate the session ticket keys when their period is over. */
static void tickets_cb(evutil_socket_t fd, short what, void *arg)
{
    struct edge *e = arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    tls_tickets_tick(e->tickets, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

void edge_set_argv(struct edge *e, int argc, char **argv)
{
    e->n_argv = argc;
    e->argv = argv;
}

static void health_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    upgroups_tick(arg);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct event_base *base = arg;
    log_msg(LOG_INFO, "signal %d: stopping gracefully", (int)sig);
    event_base_loopbreak(base);
}

int edge_run(struct edge *e)
{
    struct event_base *base = event_base_new();
    signal(SIGPIPE, SIG_IGN);
    struct event *sigterm = evsignal_new(base, SIGTERM, signal_cb, base);
    struct event *sigint = evsignal_new(base, SIGINT, signal_cb, base);
    struct event *sighup = evsignal_new(base, SIGHUP, hup_cb, e);
    event_add(sigterm, NULL);
    event_add(sigint, NULL);
    event_add(sighup, NULL);
    struct event *tickets = NULL;
    if (e->tickets != NULL) {
        tickets = event_new(base, -1, EV_PERSIST, tickets_cb, e);
        struct timeval tv = {10, 0};
        event_add(tickets, &tv);
        tickets_cb(-1, 0, e);
    }
    /* Passive ejections end by time: a quarter-second tick turns them into trials. */
    struct event *health_tick = event_new(base, -1, EV_PERSIST, health_tick_cb, e);
    struct timeval quarter = {0, 250000};
    event_add(health_tick, &quarter);
    int err = 0;
    if (e->cfg->admin_enabled) {
        err = admin_start(e, base, &e->admin);
        if (err != 0)
            goto out;
    }
    err = hcheck_start(e, base, &e->hcheck);
    if (err != 0)
        goto out;
    for (size_t i = 0; i < e->n_workers; i++)
        pthread_create(&e->workers[i].thread, NULL, worker_main, &e->workers[i]);
    for (size_t i = 0; i < e->cfg->n_listen; i++)
        log_msg(LOG_INFO, "listening on %s (%zu workers)", e->cfg->listen[i].text, e->n_workers);
    for (size_t i = 0; i < e->cfg->n_tls_listen; i++)
        log_msg(LOG_INFO, "listening on %s with TLS (%zu workers)", e->cfg->tls_listen[i].text,
                e->n_workers);
    for (size_t i = 0; i < e->cfg->n_passthrough_listen; i++)
        log_msg(LOG_INFO, "passthrough on %s", e->cfg->passthrough_listen[i].text);
    for (size_t i = 0; i < e->cfg->n_h3_listen; i++)
        log_msg(LOG_INFO, "listening on %s with HTTP/3 (UDP, %zu workers)",
                e->cfg->h3_listen[i].text, e->n_workers);
    event_base_dispatch(base);
    for (size_t i = 0; i < e->n_workers; i++)
        event_active(e->workers[i].stop_ev, EV_READ, 0);
    for (size_t i = 0; i < e->n_workers; i++)
        pthread_join(e->workers[i].thread, NULL);
    log_msg(LOG_INFO, "all workers stopped");
out:
    hcheck_stop(&e->hcheck); /* before the base: libevent frees its closed connections */
    if (e->admin)
        admin_stop(&e->admin);
    event_free(sigterm);
    event_free(sigint);
    event_free(sighup);
    event_free(health_tick);
    if (tickets != NULL)
        event_free(tickets);
    event_base_free(base);
    return err;
}

void edge_destroy(struct edge **ep)
{
    struct edge *e = *ep;
    if (e == NULL)
        return;
    for (size_t i = 0; i < e->n_workers; i++) {
        struct worker *w = &e->workers[i];
        for (size_t j = 0; j < w->n_listeners; j++)
            evconnlistener_free(w->listeners[j]);
        free(w->listeners);
        passthrough_destroy(w);
        h3_worker_destroy(w);
        worker_groups_fini(w);
        if (w->stop_ev)
            event_free(w->stop_ev);
        if (w->reap_ev) {
            h1_conn_reap(w);
            h2_conn_reap(w);
            event_free(w->reap_ev);
        }
        if (w->base)
            event_base_free(w->base);
    }
    free(e->workers);
    upgroups_fini(e);
    if (e->access_log && e->access_log != stdout)
        fclose(e->access_log);
    fetch_table_fini(e);
    free((char *)e->via.p);
    free((char *)e->alt_svc.p);
    tls_server_unref(&e->tls);
    h3_node_free(&e->h3);
    tls_tickets_free(&e->tickets); /* after the last server that used it */
    for (size_t i = 0; i < e->n_tls_cfgs; i++)
        conf_free(&e->tls_cfgs[i]);
    free(e->tls_cfgs);
    pthread_mutex_destroy(&e->tls_lock);
    pthread_mutex_destroy(&e->log_lock);
    free(e);
    *ep = NULL;
}
