/*
 * balance/balance.c: a set of upstream servers and the choice of one per attempt (balance.h):
 * smooth weighted round-robin, weighted least connections, weighted rendezvous hashing; with
 * max connections, health, slow start and retry exclusions applied to all three.
 *
 * Threads: a struct balance belongs to one thread (normally a worker); nothing here locks.
 * Owns: the server array and copies of the ids.
 *
 * Weights are handled in per mille of a weight unit (weight * 1000 at full weight), so that the
 * slow-start ramp stays an integer and the round-robin sequence of servers at full weight is
 * exactly nginx's (scaling every weight by 1000 does not change it).
 */
#include <limits.h>
#include <stdlib.h>

#include "balance/balance.h"
#include "balance/balance_int.h"
#include "lib/util.h"

#define BALANCE_MAGIC 0x62616c31u /* "bal1" */
#define CHECK(b) ASSERT((b) != NULL && (b)->magic == BALANCE_MAGIC)
#define NO_RAMP INT64_MIN

struct server {
    char *id; /* owned copy */
    size_t id_len;
    uint64_t id_hash;
    unsigned weight;
    unsigned max_conns;
    unsigned active;
    enum health_state state;
    int64_t ramp_start; /* when it last became healthy (slow start), or NO_RAMP */
    int64_t current; /* smooth weighted round-robin */
    uint64_t picks;
    void *user;
};

struct balance {
    uint32_t magic;
    enum balance_algo algo;
    uint32_t slow_start_ms;
    size_t n;
    struct server *s;
};

int balance_create(struct balance **out, const struct balance_conf *conf,
                   const struct balance_server_conf *servers, size_t n)
{
    *out = NULL;
    if (conf->algo != BALANCE_ROUND_ROBIN && conf->algo != BALANCE_LEAST_CONN &&
        conf->algo != BALANCE_HASH)
        return OP_EINVAL;
    if (n > INT_MAX)
        return OP_EINVAL;
    for (size_t i = 0; i < n; i++) {
        const struct balance_server_conf *c = &servers[i];
        if (c->id.len == 0 || c->weight > BALANCE_WEIGHT_MAX)
            return OP_EINVAL;
        if (c->initial != HEALTH_HEALTHY && c->initial != HEALTH_UNHEALTHY)
            return OP_EINVAL;
        for (size_t j = 0; j < i; j++)
            if (str_eq(c->id, servers[j].id))
                return OP_EINVAL;
    }
    struct balance *b = xcalloc(1, sizeof(*b));
    b->magic = BALANCE_MAGIC;
    b->algo = conf->algo;
    b->slow_start_ms = conf->slow_start_ms;
    b->n = n;
    b->s = xcalloc(n ? n : 1, sizeof(*b->s));
    for (size_t i = 0; i < n; i++) {
        const struct balance_server_conf *c = &servers[i];
        struct server *s = &b->s[i];
        s->id = xstrndup(c->id.p, c->id.len);
        s->id_len = c->id.len;
        s->id_hash = balance_hash(c->id);
        s->weight = c->weight ? c->weight : 1;
        s->max_conns = c->max_conns;
        s->state = c->initial;
        s->ramp_start = NO_RAMP;
        s->user = c->user;
    }
    *out = b;
    return 0;
}

void balance_destroy(struct balance **bp)
{
    struct balance *b = *bp;
    if (!b)
        return;
    CHECK(b);
    for (size_t i = 0; i < b->n; i++)
        free(b->s[i].id);
    free(b->s);
    b->magic = 0;
    free(b);
    *bp = NULL;
}

size_t balance_count(const struct balance *b)
{
    CHECK(b);
    return b->n;
}

static struct server *server(const struct balance *b, int idx)
{
    CHECK(b);
    ASSERT(idx >= 0 && (size_t)idx < b->n);
    return &b->s[idx];
}

/* Effective weight share in per mille: the slow-start ramp, the floor while probing. */
static unsigned permille(const struct balance *b, const struct server *s, int64_t now)
{
    if (s->state == HEALTH_PROBING)
        return BALANCE_SLOW_START_FLOOR;
    if (s->ramp_start == NO_RAMP || b->slow_start_ms == 0)
        return 1000;
    int64_t el = now - s->ramp_start;
    if (el >= (int64_t)b->slow_start_ms)
        return 1000;
    if (el < 0)
        el = 0;
    return BALANCE_SLOW_START_FLOOR +
           (unsigned)((1000 - BALANCE_SLOW_START_FLOOR) * el / (int64_t)b->slow_start_ms);
}

static int64_t eff_weight(const struct balance *b, const struct server *s, int64_t now)
{
    return (int64_t)s->weight * permille(b, s, now);
}

static bool eligible(const struct balance *b, size_t i, const int *tried, size_t n_tried)
{
    const struct server *s = &b->s[i];
    if (s->state == HEALTH_UNHEALTHY)
        return false;
    if (s->state == HEALTH_PROBING && s->active > 0)
        return false;
    if (s->max_conns && s->active >= s->max_conns)
        return false;
    for (size_t t = 0; t < n_tried; t++)
        if (tried[t] == (int)i)
            return false;
    return true;
}

/*
 * Smooth weighted round-robin over the eligible servers, or only over those whose
 * active/weight ratio equals ratio_active/ratio_weight when `ratio_weight` is nonzero (the
 * ties of least connections).
 */
static int wrr(struct balance *b, int64_t now, const int *tried, size_t n_tried,
               uint64_t ratio_active, uint64_t ratio_weight)
{
    int best = -1;
    int64_t total = 0;
    for (size_t i = 0; i < b->n; i++) {
        struct server *s = &b->s[i];
        if (!eligible(b, i, tried, n_tried))
            continue;
        int64_t w = eff_weight(b, s, now);
        if (ratio_weight && (uint64_t)s->active * ratio_weight != ratio_active * (uint64_t)w)
            continue;
        s->current += w;
        total += w;
        if (best < 0 || s->current > b->s[best].current)
            best = (int)i;
    }
    if (best >= 0)
        b->s[best].current -= total;
    return best;
}

static int least_conn(struct balance *b, int64_t now, const int *tried, size_t n_tried)
{
    int best = -1;
    uint64_t best_active = 0;
    uint64_t best_w = 0;
    for (size_t i = 0; i < b->n; i++) {
        const struct server *s = &b->s[i];
        if (!eligible(b, i, tried, n_tried))
            continue;
        uint64_t w = (uint64_t)eff_weight(b, s, now);
        /* active/w < best_active/best_w, without division */
        if (best < 0 || (uint64_t)s->active * best_w < best_active * w) {
            best = (int)i;
            best_active = s->active;
            best_w = w;
        }
    }
    if (best < 0)
        return -1;
    return wrr(b, now, tried, n_tried, best_active, best_w);
}

static int hash_pick(struct balance *b, struct str key, int64_t now, const int *tried,
                     size_t n_tried)
{
    uint64_t key_hash = balance_hash(key);
    int best = -1;
    double best_score = 0;
    for (size_t i = 0; i < b->n; i++) {
        const struct server *s = &b->s[i];
        if (!eligible(b, i, tried, n_tried))
            continue;
        double sc = balance_score(key_hash, s->id_hash, (double)eff_weight(b, s, now));
        if (best < 0 || balance_score_beats(sc, s->id_hash, best_score, b->s[best].id_hash)) {
            best = (int)i;
            best_score = sc;
        }
    }
    return best;
}

int balance_pick(struct balance *b, struct str key, int64_t now_ms, const int *tried,
                 size_t n_tried)
{
    CHECK(b);
    ASSERT(tried || n_tried == 0);
    int idx;
    switch (b->algo) {
    case BALANCE_LEAST_CONN:
        idx = least_conn(b, now_ms, tried, n_tried);
        break;
    case BALANCE_HASH:
        idx = hash_pick(b, key, now_ms, tried, n_tried);
        break;
    case BALANCE_ROUND_ROBIN:
    default:
        idx = wrr(b, now_ms, tried, n_tried, 0, 0);
        break;
    }
    if (idx >= 0)
        b->s[idx].picks++;
    return idx;
}

void balance_conn_start(struct balance *b, int idx)
{
    struct server *s = server(b, idx);
    ASSERT(s->active < UINT_MAX);
    s->active++;
}

void balance_conn_end(struct balance *b, int idx)
{
    struct server *s = server(b, idx);
    ASSERT(s->active > 0);
    s->active--;
}

bool balance_set_health(struct balance *b, int idx, enum health_state st, int64_t now_ms)
{
    struct server *s = server(b, idx);
    ASSERT(st == HEALTH_HEALTHY || st == HEALTH_UNHEALTHY || st == HEALTH_PROBING);
    if (s->state == st)
        return false;
    if (st == HEALTH_HEALTHY)
        s->ramp_start = now_ms;
    s->state = st;
    return true;
}

void *balance_server_user(const struct balance *b, int idx)
{
    return server(b, idx)->user;
}

void balance_server_info(const struct balance *b, int idx, int64_t now_ms,
                         struct balance_server_info *out)
{
    const struct server *s = server(b, idx);
    out->id = str_make(s->id, s->id_len);
    out->weight = s->weight;
    out->effective_permille = permille(b, s, now_ms);
    out->max_conns = s->max_conns;
    out->active = s->active;
    out->state = s->state;
    out->picks = s->picks;
}
