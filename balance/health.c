/*
 * balance/health.c: one server's health (active checks with rise/fall, passive ejection over a
 * sliding window, cool-down, probing) and the retry budget (balance.h). Both count events in a
 * struct health_window: HEALTH_BUCKETS time buckets in a ring, each tagged with the bucket
 * number it counts, so a stale slot is recognised and reset lazily and nothing runs on a timer.
 *
 * Threads: each struct belongs to one thread, or to the caller's lock; nothing here locks.
 * Owns: nothing beyond the caller's struct.
 *
 * States of struct health (a change is reported by the call that makes it):
 *
 *   HEALTHY --fall failed checks--> UNHEALTHY (active) --rise good checks--> HEALTHY
 *   HEALTHY --passive rule--> UNHEALTHY (ejected, until now + cool-down)
 *   UNHEALTHY (ejected) --cool-down over--> PROBING
 *   UNHEALTHY (ejected) --fall failed checks--> UNHEALTHY (active)
 *   PROBING --good check or ok outcome--> HEALTHY
 *   PROBING --failed check or failed outcome--> UNHEALTHY (ejected, cool-down doubled)
 */
#include <limits.h>

#include "balance/balance.h"
#include "lib/util.h"

const struct health_conf health_conf_default = {
    .rise = 2,
    .fall = 3,
    .initial = HEALTH_HEALTHY,
    .window_ms = 10000,
    .eject_failures = 5,
    .eject_ratio_pct = 50,
    .min_requests = 10,
    .cooldown_ms = 10000,
    .cooldown_max_ms = 300000,
};

const struct retry_budget_conf retry_budget_conf_default = {
    .ratio_pct = 20,
    .min_per_sec = 3,
    .window_ms = 10000,
};

const char *health_state_name(enum health_state st)
{
    switch (st) {
    case HEALTH_HEALTHY:
        return "healthy";
    case HEALTH_UNHEALTHY:
        return "unhealthy";
    case HEALTH_PROBING:
        return "probing";
    }
    return "?";
}

/* ---- sliding window ---------------------------------------------------------------------- */

static void window_clear(struct health_window *w)
{
    for (size_t i = 0; i < HEALTH_BUCKETS; i++) {
        w->_epoch[i] = INT64_MIN;
        w->_total[i] = 0;
        w->_bad[i] = 0;
    }
}

static void window_init(struct health_window *w, uint32_t window_ms)
{
    w->_bucket_ms = window_ms / HEALTH_BUCKETS;
    window_clear(w);
}

static void window_add(struct health_window *w, int64_t now, uint32_t total, uint32_t bad)
{
    ASSERT(now >= 0);
    int64_t cur = now / w->_bucket_ms;
    size_t slot = (size_t)(cur % HEALTH_BUCKETS);
    if (w->_epoch[slot] != cur) {
        w->_epoch[slot] = cur;
        w->_total[slot] = 0;
        w->_bad[slot] = 0;
    }
    w->_total[slot] += total;
    w->_bad[slot] += bad;
}

static void window_sum(const struct health_window *w, int64_t now, unsigned *total, unsigned *bad)
{
    int64_t cur = now / w->_bucket_ms;
    unsigned t = 0;
    unsigned b = 0;
    for (size_t i = 0; i < HEALTH_BUCKETS; i++) {
        if (w->_epoch[i] > cur - HEALTH_BUCKETS && w->_epoch[i] <= cur) {
            t += w->_total[i];
            b += w->_bad[i];
        }
    }
    if (total)
        *total = t;
    if (bad)
        *bad = b;
}

/* ---- health ------------------------------------------------------------------------------ */

int health_init(struct health *h, const struct health_conf *conf)
{
    if (conf->rise == 0 || conf->fall == 0)
        return OP_EINVAL;
    if (conf->initial != HEALTH_HEALTHY && conf->initial != HEALTH_UNHEALTHY)
        return OP_EINVAL;
    if (conf->window_ms < HEALTH_BUCKETS || conf->eject_ratio_pct > 100)
        return OP_EINVAL;
    if (conf->cooldown_ms == 0 ||
        (conf->cooldown_max_ms && conf->cooldown_max_ms < conf->cooldown_ms))
        return OP_EINVAL;
    *h = (struct health){0};
    h->_conf = *conf;
    h->_state = conf->initial;
    window_init(&h->_win, conf->window_ms);
    return 0;
}

void health_fini(struct health *h)
{
    (void)h;
}

bool health_tick(struct health *h, int64_t now_ms)
{
    if (h->_state == HEALTH_UNHEALTHY && h->_ejected && now_ms >= h->_until) {
        h->_state = HEALTH_PROBING;
        return true;
    }
    return false;
}

static void become_healthy(struct health *h)
{
    h->_state = HEALTH_HEALTHY;
    h->_ejected = false;
    h->_backoff = 0;
    h->_ok_run = 0;
    h->_fail_run = 0;
    window_clear(&h->_win);
}

/* Passive ejection, or a failed probe when `backoff` is set: cool-down * 2^backoff, capped. */
static void eject(struct health *h, int64_t now, bool failed_probe)
{
    const struct health_conf *c = &h->_conf;
    if (failed_probe && h->_backoff < 32)
        h->_backoff++;
    uint64_t cd = c->cooldown_ms;
    uint64_t max = c->cooldown_max_ms ? c->cooldown_max_ms : c->cooldown_ms;
    for (unsigned i = 0; i < h->_backoff && cd < max; i++)
        cd *= 2;
    if (cd > max)
        cd = max;
    h->_state = HEALTH_UNHEALTHY;
    h->_ejected = true;
    h->_until = now + (int64_t)cd;
    h->_ejections++;
    window_clear(&h->_win);
}

static bool passive_rule(const struct health *h, int64_t now)
{
    const struct health_conf *c = &h->_conf;
    unsigned total;
    unsigned bad;
    window_sum(&h->_win, now, &total, &bad);
    if (c->eject_failures && bad >= c->eject_failures)
        return true;
    if (c->eject_ratio_pct && total > 0 && total >= c->min_requests &&
        (uint64_t)bad * 100 >= (uint64_t)c->eject_ratio_pct * total)
        return true;
    return false;
}

bool health_check_result(struct health *h, bool ok, int64_t now_ms)
{
    enum health_state before = h->_state;
    health_tick(h, now_ms);
    if (ok) {
        h->_ok_run++;
        h->_fail_run = 0;
    } else {
        h->_fail_run++;
        h->_ok_run = 0;
    }
    switch (h->_state) {
    case HEALTH_HEALTHY:
        if (h->_fail_run >= h->_conf.fall) {
            h->_state = HEALTH_UNHEALTHY;
            h->_ejected = false;
            h->_ok_run = 0;
        }
        break;
    case HEALTH_UNHEALTHY:
        if (h->_ejected) {
            if (h->_fail_run >= h->_conf.fall) {
                h->_ejected = false; /* now `rise` good checks bring it back */
                h->_ok_run = 0;
            }
        } else if (h->_ok_run >= h->_conf.rise) {
            become_healthy(h);
        }
        break;
    case HEALTH_PROBING:
        if (ok)
            become_healthy(h);
        else
            eject(h, now_ms, true);
        break;
    }
    return h->_state != before;
}

bool health_record(struct health *h, enum health_outcome o, int64_t now_ms)
{
    enum health_state before = h->_state;
    bool bad = o != HEALTH_OK;
    health_tick(h, now_ms);
    switch (h->_state) {
    case HEALTH_HEALTHY:
        window_add(&h->_win, now_ms, 1, bad);
        if (bad && passive_rule(h, now_ms))
            eject(h, now_ms, false);
        break;
    case HEALTH_UNHEALTHY:
        break;
    case HEALTH_PROBING:
        if (bad)
            eject(h, now_ms, true);
        else
            become_healthy(h);
        break;
    }
    return h->_state != before;
}

enum health_state health_state_get(const struct health *h)
{
    return h->_state;
}

int64_t health_next_change_ms(const struct health *h)
{
    return h->_state == HEALTH_UNHEALTHY && h->_ejected ? h->_until : INT64_MAX;
}

void health_counts(const struct health *h, int64_t now_ms, unsigned *total, unsigned *failed,
                   uint64_t *ejections)
{
    window_sum(&h->_win, now_ms, total, failed);
    if (ejections)
        *ejections = h->_ejections;
}

/* ---- retry budget ------------------------------------------------------------------------ */

int retry_budget_init(struct retry_budget *rb, const struct retry_budget_conf *conf)
{
    if (conf->window_ms < HEALTH_BUCKETS)
        return OP_EINVAL;
    *rb = (struct retry_budget){0};
    rb->_conf = *conf;
    window_init(&rb->_win, conf->window_ms);
    return 0;
}

void retry_budget_fini(struct retry_budget *rb)
{
    (void)rb;
}

void retry_budget_request(struct retry_budget *rb, int64_t now_ms)
{
    window_add(&rb->_win, now_ms, 1, 0);
}

bool retry_budget_take(struct retry_budget *rb, int64_t now_ms)
{
    const struct retry_budget_conf *c = &rb->_conf;
    unsigned requests;
    unsigned retries;
    window_sum(&rb->_win, now_ms, &requests, &retries);
    /* In hundredths of a retry: (retries + 1) <= ratio * requests + min/s * window seconds. */
    uint64_t span_ms = (uint64_t)rb->_win._bucket_ms * HEALTH_BUCKETS;
    uint64_t allowed = (uint64_t)c->ratio_pct * requests + (uint64_t)c->min_per_sec * span_ms / 10;
    if (((uint64_t)retries + 1) * 100 > allowed)
        return false;
    window_add(&rb->_win, now_ms, 0, 1);
    return true;
}

void retry_budget_counts(const struct retry_budget *rb, int64_t now_ms, unsigned *requests,
                         unsigned *retries)
{
    window_sum(&rb->_win, now_ms, requests, retries);
}
