/*
 * tests/unit/balance/health.c: balance/health.c: active rise/fall, passive ejection by count
 * and by ratio over a sliding window, cool-down to probing, probes deciding either way with a
 * doubling cool-down, active checks during an ejection, and the retry budget.
 */
#include <stdio.h>
#include <string.h>

#include "balance/balance.h"
#include "lib/util.h"
#include "tests/unit/tap.h"

#define T0 5000000

static struct health_conf conf_passive(void)
{
    struct health_conf c = health_conf_default;
    c.window_ms = 10000;
    c.eject_failures = 5;
    c.eject_ratio_pct = 0;
    c.min_requests = 0;
    c.cooldown_ms = 1000;
    c.cooldown_max_ms = 5000;
    return c;
}

static void init_errors(void)
{
    struct health h;
    struct health_conf c = health_conf_default;
    is_int(health_init(&h, &c), 0, "defaults accepted");
    is_str(health_state_name(health_state_get(&h)), "healthy", "default: healthy");
    is_str(health_state_name(HEALTH_UNHEALTHY), "unhealthy", "name: unhealthy");
    is_str(health_state_name(HEALTH_PROBING), "probing", "name: probing");
    is_str(health_state_name((enum health_state)9), "?", "name: unknown");
    ok(health_next_change_ms(&h) == INT64_MAX, "healthy: no pending change");
    health_fini(&h);
    c.rise = 0;
    is_int(health_init(&h, &c), OP_EINVAL, "rise 0 refused");
    c = health_conf_default;
    c.fall = 0;
    is_int(health_init(&h, &c), OP_EINVAL, "fall 0 refused");
    c = health_conf_default;
    c.initial = HEALTH_PROBING;
    is_int(health_init(&h, &c), OP_EINVAL, "initial probing refused");
    c = health_conf_default;
    c.window_ms = HEALTH_BUCKETS - 1;
    is_int(health_init(&h, &c), OP_EINVAL, "window under one ms per bucket refused");
    c = health_conf_default;
    c.eject_ratio_pct = 101;
    is_int(health_init(&h, &c), OP_EINVAL, "ratio over 100 refused");
    c = health_conf_default;
    c.cooldown_ms = 0;
    is_int(health_init(&h, &c), OP_EINVAL, "cool-down 0 refused");
    c = health_conf_default;
    c.cooldown_max_ms = c.cooldown_ms - 1;
    is_int(health_init(&h, &c), OP_EINVAL, "max cool-down under the cool-down refused");
}

static void active(void)
{
    struct health h;
    struct health_conf c = health_conf_default; /* rise 2, fall 3 */
    health_init(&h, &c);
    int64_t t = T0;
    ok(!health_check_result(&h, false, t++), "fail 1 of 3: no change");
    ok(!health_check_result(&h, false, t++), "fail 2 of 3: no change");
    ok(!health_check_result(&h, true, t++), "a success resets the run");
    ok(!health_check_result(&h, false, t++), "fail 1 again");
    ok(!health_check_result(&h, false, t++), "fail 2 again");
    ok(health_check_result(&h, false, t++), "fail 3: changed");
    is_int(health_state_get(&h), HEALTH_UNHEALTHY, "unhealthy after fall");
    ok(health_next_change_ms(&h) == INT64_MAX, "active unhealthy: no timed change");
    ok(!health_tick(&h, t + 1000000), "active unhealthy: time alone changes nothing");
    ok(!health_record(&h, HEALTH_OK, t++), "outcomes ignored while unhealthy");
    ok(!health_check_result(&h, false, t++), "still failing");
    ok(!health_check_result(&h, true, t++), "success 1 of 2: no change");
    ok(!health_check_result(&h, false, t++), "a failure resets the rise run");
    ok(!health_check_result(&h, true, t++), "success 1 again");
    ok(health_check_result(&h, true, t++), "success 2: changed");
    is_int(health_state_get(&h), HEALTH_HEALTHY, "healthy after rise");
    ok(!health_check_result(&h, false, t++), "the fall run starts anew after rising");

    c.initial = HEALTH_UNHEALTHY;
    c.rise = 1;
    health_init(&h, &c);
    is_int(health_state_get(&h), HEALTH_UNHEALTHY, "initially unhealthy");
    ok(health_check_result(&h, true, t++), "rise 1: the first success makes it healthy");
}

static void passive_count(void)
{
    struct health h;
    struct health_conf c = conf_passive(); /* eject at 5 failures in 10 s, cool-down 1 s */
    health_init(&h, &c);
    int64_t t = T0;
    for (int i = 0; i < 4; i++) {
        health_record(&h, HEALTH_OK, t);
        health_record(&h, i % 2 ? HEALTH_TIMEOUT : HEALTH_CONNECT_ERROR, t);
        t += 100;
    }
    unsigned total;
    unsigned failed;
    health_counts(&h, t, &total, &failed, NULL);
    is_int(total, 8, "window: 8 outcomes");
    is_int(failed, 4, "window: 4 failures");
    is_int(health_state_get(&h), HEALTH_HEALTHY, "4 failures: still healthy");
    ok(health_record(&h, HEALTH_HTTP_5XX, t), "5th failure (a 5xx): ejected, changed");
    is_int(health_state_get(&h), HEALTH_UNHEALTHY, "ejected: unhealthy");
    ok(health_next_change_ms(&h) == t + 1000, "cool-down ends 1 s later");
    uint64_t ej;
    health_counts(&h, t, &total, &failed, &ej);
    ok(total == 0 && failed == 0 && ej == 1, "ejection clears the window and is counted");
    ok(!health_record(&h, HEALTH_TIMEOUT, t + 10), "outcomes during the cool-down ignored");
    health_counts(&h, t + 10, &total, NULL, NULL);
    is_int(total, 0, "and not counted");
    ok(!health_tick(&h, t + 999), "1 ms before the end: still unhealthy");
    ok(health_tick(&h, t + 1000), "cool-down over: changed");
    is_int(health_state_get(&h), HEALTH_PROBING, "probing");
    is_str(health_state_name(health_state_get(&h)), "probing", "name for /status");
    ok(health_next_change_ms(&h) == INT64_MAX, "probing: no timed change");
    ok(health_record(&h, HEALTH_OK, t + 1100), "probing: a good trial request heals");
    is_int(health_state_get(&h), HEALTH_HEALTHY, "healthy");
    health_counts(&h, t + 1100, &total, NULL, NULL);
    is_int(total, 0, "the trial request does not count against the new window");

    /* Failures spread over more than the window do not add up. */
    health_init(&h, &c);
    t = T0;
    for (int i = 0; i < 4; i++)
        health_record(&h, HEALTH_TIMEOUT, t);
    t += 11000;
    for (int i = 0; i < 4; i++)
        health_record(&h, HEALTH_TIMEOUT, t);
    is_int(health_state_get(&h), HEALTH_HEALTHY, "4 + 4 failures 11 s apart: healthy");
    health_counts(&h, t, &total, &failed, NULL);
    is_int(failed, 4, "the old ones left the window");
    /* ...but within the window they do: 1 s buckets, so 9 s later the first 4 still count. */
    health_init(&h, &c);
    for (int i = 0; i < 4; i++)
        health_record(&h, HEALTH_TIMEOUT, T0);
    ok(health_record(&h, HEALTH_TIMEOUT, T0 + 9000), "4 + 1 failures 9 s apart: ejected");
}

static void passive_ratio(void)
{
    struct health h;
    struct health_conf c = conf_passive();
    c.eject_failures = 0;
    c.eject_ratio_pct = 50;
    c.min_requests = 10;
    health_init(&h, &c);
    int64_t t = T0;
    for (int i = 0; i < 9; i++)
        health_record(&h, HEALTH_TIMEOUT, t);
    is_int(health_state_get(&h), HEALTH_HEALTHY, "9 failures of 9: under min_requests");
    ok(health_record(&h, HEALTH_TIMEOUT, t), "10 of 10: ejected");

    health_init(&h, &c);
    for (int i = 0; i < 6; i++)
        health_record(&h, HEALTH_OK, t);
    for (int i = 0; i < 5; i++)
        health_record(&h, HEALTH_HTTP_5XX, t);
    is_int(health_state_get(&h), HEALTH_HEALTHY, "5 failures of 11 (45%%): healthy");
    ok(health_record(&h, HEALTH_HTTP_5XX, t), "6 of 12 (50%%): ejected");

    /* Both rules off: outcomes are counted, nothing is ejected. */
    c.eject_ratio_pct = 0;
    health_init(&h, &c);
    for (int i = 0; i < 100; i++)
        health_record(&h, HEALTH_CONNECT_ERROR, t);
    is_int(health_state_get(&h), HEALTH_HEALTHY, "passive off: never ejected");
    unsigned failed;
    health_counts(&h, t, NULL, &failed, NULL);
    is_int(failed, 100, "passive off: still counted");
}

static void eject(struct health *h, int64_t t)
{
    for (int i = 0; i < 5; i++)
        health_record(h, HEALTH_TIMEOUT, t);
    ASSERT(health_state_get(h) == HEALTH_UNHEALTHY);
}

static void probes_and_backoff(void)
{
    struct health h;
    struct health_conf c = conf_passive(); /* cool-down 1 s, max 5 s */
    health_init(&h, &c);
    int64_t t = T0;
    eject(&h, t);
    ok(health_next_change_ms(&h) == t + 1000, "first ejection: 1 s");
    t += 1000;
    /* The cool-down ends and the probe fails in one call: unhealthy before and after. */
    ok(!health_record(&h, HEALTH_TIMEOUT, t), "probe failed in the same call: no change");
    is_int(health_state_get(&h), HEALTH_UNHEALTHY, "unhealthy again");
    ok(health_next_change_ms(&h) == t + 2000, "failed probe: 2 s");
    t += 2000;
    health_tick(&h, t);
    ok(health_check_result(&h, false, t), "probe by an active check fails too");
    ok(health_next_change_ms(&h) == t + 4000, "second failed probe: 4 s");
    t += 4000;
    health_record(&h, HEALTH_CONNECT_ERROR, t);
    ok(health_next_change_ms(&h) == t + 5000, "third: capped at 5 s");
    t += 5000;
    health_record(&h, HEALTH_CONNECT_ERROR, t);
    ok(health_next_change_ms(&h) == t + 5000, "fourth: still 5 s");
    t += 5000;
    /* One call crosses the end of the cool-down and decides: reported as a change. */
    ok(health_check_result(&h, true, t), "a good active check while probing heals");
    is_int(health_state_get(&h), HEALTH_HEALTHY, "healthy");
    uint64_t ej;
    health_counts(&h, t, NULL, NULL, &ej);
    is_int(ej, 5, "5 ejections counted");
    eject(&h, t);
    ok(health_next_change_ms(&h) == t + 1000, "healthy reset the back-off: 1 s again");

    /* Fixed cool-down when cooldown_max_ms is 0. */
    c.cooldown_max_ms = 0;
    health_init(&h, &c);
    eject(&h, T0);
    health_record(&h, HEALTH_TIMEOUT, T0 + 1000);
    ok(health_next_change_ms(&h) == T0 + 2000, "no max: the cool-down does not grow");
}

static void active_during_ejection(void)
{
    struct health h;
    struct health_conf c = conf_passive();
    c.rise = 2;
    c.fall = 2;
    health_init(&h, &c);
    int64_t t = T0;
    eject(&h, t);
    ok(!health_check_result(&h, true, t + 100), "good check while cooling down: no change");
    ok(!health_check_result(&h, true, t + 200), "even `rise` of them: no change");
    is_int(health_state_get(&h), HEALTH_UNHEALTHY, "the cool-down still holds");
    ok(health_check_result(&h, true, t + 1000), "cool-down over: the next check decides");
    is_int(health_state_get(&h), HEALTH_HEALTHY, "healthy");

    health_init(&h, &c);
    eject(&h, t);
    health_check_result(&h, false, t + 100);
    health_check_result(&h, false, t + 200);
    ok(health_next_change_ms(&h) == INT64_MAX, "`fall` failed checks: no longer timed");
    ok(!health_tick(&h, t + 60000), "cool-down time passes: still unhealthy");
    ok(!health_check_result(&h, true, t + 60000), "success 1 of rise 2");
    ok(health_check_result(&h, true, t + 61000), "success 2: healthy");
}

static void retry_budget(void)
{
    struct retry_budget rb;
    struct retry_budget_conf c = {.ratio_pct = 20, .min_per_sec = 0, .window_ms = 10000};
    is_int(retry_budget_init(&rb, &c), 0, "budget init");
    int64_t t = T0;
    ok(!retry_budget_take(&rb, t), "no requests, no floor: no retry");
    for (int i = 0; i < 100; i++)
        retry_budget_request(&rb, t + i * 10);
    t += 1000;
    int granted = 0;
    for (int i = 0; i < 50; i++)
        granted += retry_budget_take(&rb, t);
    is_int(granted, 20, "100 requests at 20%%: 20 retries");
    unsigned req;
    unsigned ret;
    retry_budget_counts(&rb, t, &req, &ret);
    ok(req == 100 && ret == 20, "counts: 100 requests, 20 retries");
    for (int i = 0; i < 5; i++)
        retry_budget_request(&rb, t);
    is_int(retry_budget_take(&rb, t), 1, "5 more requests: one more retry");
    is_int(retry_budget_take(&rb, t), 0, "and no more");
    t += 10000;
    retry_budget_counts(&rb, t, &req, &ret);
    ok(req == 0 && ret == 0, "10 s later the window is empty");
    ok(!retry_budget_take(&rb, t), "the old requests no longer pay for retries");

    /* The floor: 2 per second over a 10 s window = 20 retries without any request. */
    c.min_per_sec = 2;
    retry_budget_init(&rb, &c);
    granted = 0;
    for (int i = 0; i < 50; i++)
        granted += retry_budget_take(&rb, T0);
    is_int(granted, 20, "floor 2/s over 10 s: 20 retries with no traffic");

    /* An outage: every request fails and would be retried; retries stay at ~20% + floor. */
    c = retry_budget_conf_default;
    retry_budget_init(&rb, &c);
    long sent = 0;
    long retried = 0;
    for (int64_t ms = 0; ms < 60000; ms++) {
        retry_budget_request(&rb, T0 + ms);
        sent++;
        retried += retry_budget_take(&rb, T0 + ms);
    }
    ok(retried * 100 <= sent * 21 + 3 * 60 * 100,
       "outage: %ld retries for %ld requests (<= 20%% + 3/s)", retried, sent);
    ok(retried * 100 >= sent * 19, "outage: the budget is used (%ld)", retried);

    c.window_ms = 5;
    is_int(retry_budget_init(&rb, &c), OP_EINVAL, "window under one ms per bucket refused");
    retry_budget_fini(&rb);
}

int main(void)
{
    init_errors();
    active();
    passive_count();
    passive_ratio();
    probes_and_backoff();
    active_during_ejection();
    retry_budget();
    return tap_done();
}
