/*
 * edge/admin.c: the admin HTTP listener (loopback by default), served by the control thread:
 * GET /status (JSON), GET /metrics (Prometheus), and with `debug_api on` the test hooks
 * POST /debug/clock?advance=N (moves the node clock) and POST /debug/cache-sync (waits for
 * the cache writer). One request per connection (Connection: close): the admin API is for
 * scrapers and operators, not for throughput. Requests are parsed by the same strict parser
 * as client requests.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge/edge_int.h"
#include "lib/log.h"
#include "lib/util.h"

#define ADMIN_MAX_HEAD 16384

struct admin {
    struct edge *e;
    struct evconnlistener *l;
};

struct admin_conn {
    struct admin *a;
    struct bufferevent *bev;
    bool responded;
};

static void respond(struct admin_conn *c, int status, const char *reason, const char *ctype,
                    const struct buf *body)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                        status, reason, ctype, body->len);
    evbuffer_add(out, body->p, body->len);
    c->responded = true;
    bufferevent_disable(c->bev, EV_READ);
}

static void render_status(struct edge *e, struct buf *b)
{
    const struct config *cfg = e->cfg;
    struct cache_stats cs;
    cache_stats_get(e->cache, &cs);
    int64_t conns = atomic_load(&e->connections);
    buf_append_cstr(b, "{\"node\":");
    buf_append_json_str(b, cfg->node_name);
    buf_printf(b,
               ",\"version\":\"%s\",\"role\":\"%s\",\"uptime\":%lld,\"workers\":%zu,"
               "\"connections\":%lld,\"clock_offset\":%lld,",
               OUTPOST_VERSION, cfg->role == CONF_ROLE_SHIELD ? "shield" : "edge",
               (long long)(time(NULL) - e->start_time), e->n_workers, (long long)conns,
               (long long)atomic_load(&e->clock_offset));
    buf_printf(b,
               "\"cache\":{\"objects\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"max_bytes\":%" PRIu64
               ",\"evictions\":%" PRIu64 ",\"write_errors\":%" PRIu64 ",\"queue\":%" PRIu64 "},",
               cs.objects, cs.bytes, cs.max_size, cs.evictions, cs.write_errors, cs.queue_len);
    buf_append_cstr(b, "\"listen\":[");
    for (size_t i = 0; i < cfg->n_listen; i++) {
        if (i)
            buf_append_cstr(b, ",");
        buf_append_json_str(b, cfg->listen[i].text);
    }
    buf_append_cstr(b, "],\"sites\":[");
    for (size_t i = 0; i < cfg->n_sites; i++) {
        const struct conf_site *s = &cfg->sites[i];
        buf_append_cstr(b, i ? ",{\"names\":[" : "{\"names\":[");
        for (size_t j = 0; j < s->n_names; j++) {
            if (j)
                buf_append_cstr(b, ",");
            buf_append_json_str(b, s->names[j]);
        }
        buf_append_cstr(b, "],\"origin\":");
        buf_append_json_str(b, cfg->upstreams[s->upstream].name);
        buf_append_cstr(b, ",\"shields\":[");
        for (size_t j = 0; j < s->n_shields; j++) {
            if (j)
                buf_append_cstr(b, ",");
            buf_append_json_str(b, cfg->upstreams[s->shields[j]].name);
        }
        buf_printf(b, "],\"shield_fallback_origin\":%s}",
                   s->opts.shield_fallback_origin ? "true" : "false");
    }
    buf_append_cstr(b, "],");
    upgroups_status_json(e, b);
    buf_append_cstr(b, "}\n");
}

static void handle(struct admin_conn *c, struct str method, struct str path)
{
    struct edge *e = c->a->e;
    struct buf b;
    buf_init(&b);
    struct str query = STR_NULL;
    long q = str_chr(path, '?');
    if (q >= 0) {
        query = str_make(path.p + q + 1, path.len - (size_t)q - 1);
        path.len = (size_t)q;
    }
    bool get = str_eq(method, STR_LIT("GET")) || str_eq(method, STR_LIT("HEAD"));
    bool post = str_eq(method, STR_LIT("POST"));
    if (get && str_eq(path, STR_LIT("/status"))) {
        render_status(e, &b);
        respond(c, 200, "OK", "application/json", &b);
    } else if (get && str_eq(path, STR_LIT("/metrics"))) {
        metrics_render(e, &b);
        respond(c, 200, "OK", "text/plain; version=0.0.4", &b);
    } else if (str_has_prefix(path, STR_LIT("/debug/")) && !e->cfg->debug_api) {
        buf_append_cstr(&b, "{\"error\":\"debug_api is off\"}\n");
        respond(c, 404, "Not Found", "application/json", &b);
    } else if (post && str_eq(path, STR_LIT("/debug/clock"))) {
        char qs[64];
        str_to_cstr(query, qs, sizeof(qs));
        char *end = NULL;
        long long adv = strncmp(qs, "advance=", 8) == 0 ? strtoll(qs + 8, &end, 10) : 0;
        if (end == NULL || *end != '\0' || end == qs + 8) {
            buf_append_cstr(&b, "{\"error\":\"expected ?advance=SECONDS\"}\n");
            respond(c, 400, "Bad Request", "application/json", &b);
        } else {
            int64_t off = atomic_fetch_add(&e->clock_offset, adv) + adv;
            buf_printf(&b, "{\"offset\":%lld}\n", (long long)off);
            respond(c, 200, "OK", "application/json", &b);
        }
    } else if (post && str_eq(path, STR_LIT("/debug/cache-sync"))) {
        cache_sync(e->cache);
        buf_append_cstr(&b, "{\"ok\":true}\n");
        respond(c, 200, "OK", "application/json", &b);
    } else {
        buf_append_cstr(&b, "{\"error\":\"not found\"}\n");
        respond(c, 404, "Not Found", "application/json", &b);
    }
    buf_fini(&b);
}

static void conn_free(struct admin_conn *c)
{
    bufferevent_free(c->bev);
    free(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct admin_conn *c = arg;
    if (c->responded)
        return;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    if (len > ADMIN_MAX_HEAD)
        len = ADMIN_MAX_HEAD;
    const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
    struct http_header hdrs[64];
    struct h1_request req;
    memset(&req, 0, sizeof(req));
    req.headers = hdrs;
    struct h1_limits lim = {ADMIN_MAX_HEAD, 64, 4096};
    int r = h1_parse_request(p, len, &req, &lim);
    if (r == H1_INCOMPLETE)
        return;
    struct buf b;
    buf_init(&b);
    if (r == H1_INVALID) {
        buf_append_cstr(&b, "{\"error\":\"bad request\"}\n");
        respond(c, 400, "Bad Request", "application/json", &b);
    } else {
        handle(c, req.method, req.path);
    }
    buf_fini(&b);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    struct admin_conn *c = arg;
    if (c->responded && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_free(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    conn_free(arg);
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    struct admin *a = arg;
    struct admin_conn *c = xcalloc(1, sizeof(*c));
    c->a = a;
    c->bev = bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    struct timeval tv = {10, 0};
    bufferevent_set_timeouts(c->bev, &tv, &tv);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

int admin_start(struct edge *e, struct event_base *base, struct admin **out)
{
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);
    if (evutil_parse_sockaddr_port(e->cfg->admin.text, (struct sockaddr *)&ss, &sslen) != 0) {
        log_msg(LOG_ERR, "admin %s: not a numeric address", e->cfg->admin.text);
        return -EINVAL;
    }
    struct admin *a = xcalloc(1, sizeof(*a));
    a->e = e;
    a->l = evconnlistener_new_bind(
        base, accept_cb, a, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 64,
        (struct sockaddr *)&ss, sslen);
    if (a->l == NULL) {
        int err = errno;
        log_msg(LOG_ERR, "admin %s: %s", e->cfg->admin.text, strerror(err));
        free(a);
        return -(err ? err : EADDRINUSE);
    }
    log_msg(LOG_INFO, "admin API on %s", e->cfg->admin.text);
    *out = a;
    return 0;
}

void admin_stop(struct admin **ap)
{
    struct admin *a = *ap;
    if (a == NULL)
        return;
    evconnlistener_free(a->l);
    free(a);
    *ap = NULL;
}
