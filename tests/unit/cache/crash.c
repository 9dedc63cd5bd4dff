/*
 * tests/unit/cache/crash.c: kill -9 in the middle of writing, then reopen (cache/store.c,
 * cache/writer.c). Each round forks a child that stores small and multi-chunk objects as fast
 * as it can (replacements, aborts, soft and hard invalidations mixed in), alternately with and
 * without MDB_NOSYNC, and reports through a pipe every put whose done(0) it saw. The parent
 * SIGKILLs it at a seeded random moment, reopens the cache and checks: cache_check() passes,
 * every object found reads back byte-exact (the body is derived from the key and the
 * generation in its X-Gen header), and every confirmed put of a key that is never invalidated
 * is still there or replaced by a later generation. Every third round runs the child with a
 * 16 MiB max_size and lookups between puts, so eviction and TOUCH run when it dies (those
 * rounds cannot check for lost puts: eviction may remove them legitimately).
 *
 * Bounded: ROUNDS rounds (default 5), each child runs at most 3 s and 4000 puts. Prints SEED,
 * honours SEED=.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache/cache_int.h"
#include "lib/util.h"
#include "tests/unit/tap.h"

#define NKEYS 300
#define STABLE_KEYS 200 /* keys below this are never invalidated nor aborted */

static const uint64_t sizes[] = {0, 10, 1000, 16384, 16385, 65536, 65537, 200000, 300001, 1u << 20};

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(p);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint32_t seed_of(struct str key, uint32_t gen)
{
    uint32_t h = 2166136261u ^ gen;
    for (size_t i = 0; i < key.len; i++)
        h = (h ^ (uint8_t)key.p[i]) * 16777619u;
    return h;
}

static uint8_t body_byte(uint32_t seed, uint64_t i)
{
    return (uint8_t)(seed + i * 13 + (i >> 10));
}

struct confirm {
    uint32_t k;
    uint32_t gen;
};

static int confirm_fd = -1;

static void on_done(void *arg, int err)
{
    uintptr_t v = (uintptr_t)arg;
    struct confirm cf = {(uint32_t)(v >> 32), (uint32_t)v};
    if (err == 0 && write(confirm_fd, &cf, sizeof(cf)) != sizeof(cf))
        _exit(5);
}

static void child(const char *dir, bool nosync, bool small, unsigned seed, uint32_t round)
{
    struct cache_options o = {0};
    o.dir = dir;
    o.max_size = small ? 16u << 20 : 1u << 30;
    o.nosync = nosync;
    o.batch_ms = 2;
    struct cache *c;
    if (cache_open(&c, &o) != 0)
        _exit(2);
    uint8_t *buf = xmalloc(1u << 20);
    double t0 = now_s();
    /* Runs until the parent kills it (at most 1.3 s); the bound only guards a lost parent. */
    for (uint32_t i = 0; now_s() - t0 < 60.0; i++) {
        uint32_t k = (uint32_t)rand_r(&seed) % NKEYS;
        uint32_t gen = round * 100000 + i + 1;
        char key[32], gs[16];
        snprintf(key, sizeof(key), "crash/%u", k);
        snprintf(gs, sizeof(gs), "%u", gen);
        if (small) {
            struct http_headers none;
            http_headers_init(&none);
            struct cache_obj *obj;
            for (int j = 0; j < 4; j++) {
                snprintf(key, sizeof(key), "crash/%u", (uint32_t)rand_r(&seed) % NKEYS);
                if (cache_lookup(c, str_cstr(key), &none, 1, &obj) == 0)
                    cache_obj_unref(&obj);
            }
            snprintf(key, sizeof(key), "crash/%u", k);
        }
        if (k >= STABLE_KEYS && rand_r(&seed) % 8 == 0) {
            cache_invalidate(c, str_cstr(key), rand_r(&seed) % 2, NULL, NULL);
            continue;
        }
        uint64_t len = sizes[(uint32_t)rand_r(&seed) % ARRAY_SIZE(sizes)];
        uint32_t s = seed_of(str_cstr(key), gen);
        for (uint64_t j = 0; j < len; j++)
            buf[j] = body_byte(s, j);
        struct http_headers h;
        http_headers_init(&h);
        http_headers_add(&h, str_cstr("X-Gen"), str_cstr(gs));
        struct cache_meta m = {.response_time = 1, .freshness_lifetime = 1000000};
        struct cache_put_info info = {.key = str_cstr(key),
                                      .status = 200,
                                      .headers = &h,
                                      .meta = &m,
                                      .content_length = (int64_t)len,
                                      .now = 1};
        struct cache_put *p;
        int brc = cache_put_begin(c, &info, &p);
        if (brc == OP_EFULL) {
            /* The writer's inbox is full (a slow disk): a real edge streams such an object
             * uncached; here, back off and go on writing. */
            http_headers_fini(&h);
            usleep(2000);
            continue;
        }
        if (brc != 0)
            _exit(3);
        http_headers_fini(&h);
        int rc = 0;
        for (uint64_t off = 0; off < len && rc == 0;) {
            size_t n = (size_t)UTIL_MIN(len - off, 50000u);
            rc = cache_put_append(p, buf + off, n);
            off += n;
        }
        if (rc != 0 || (k >= STABLE_KEYS && rand_r(&seed) % 10 == 0)) {
            cache_put_abort(&p);
            continue;
        }
        cache_put_end(&p, on_done, (void *)(((uintptr_t)k << 32) | gen));
    }
    cache_sync(c);
    _exit(0); /* not reached in practice: the parent kills first */
}

struct sink_state {
    uint32_t seed;
    uint64_t off;
    bool same;
};

static void sink(void *arg, const void *data, size_t len)
{
    struct sink_state *s = arg;
    const uint8_t *d = data;
    for (size_t i = 0; i < len; i++)
        if (d[i] != body_byte(s->seed, s->off + i))
            s->same = false;
    s->off += len;
}

static uint32_t gen_of(const struct cache_obj *o)
{
    const struct http_header *h = http_headers_get(&o->headers, "x-gen");
    char tmp[16];
    return h ? (uint32_t)strtoul(str_to_cstr(h->value, tmp, sizeof(tmp)), NULL, 10) : 0;
}

static bool read_back(struct cache *c, const struct cache_obj *o)
{
    struct sink_state s = {seed_of(o->key, gen_of(o)), 0, true};
    if (o->n_chunks == 0) {
        sink(&s, o->body.p, o->body.len);
    } else {
        for (uint32_t i = 0; i < o->n_chunks; i++)
            if (cache_chunk_read(c, o->id, i, sink, &s) != 0)
                return false;
    }
    return s.same && s.off == o->body_len;
}

int main(void)
{
    unsigned seed = tap_seed();
    int rounds = getenv("ROUNDS") ? (int)strtol(getenv("ROUNDS"), NULL, 10) : 5;
    char dir[] = "/tmp/outpost-crash-XXXXXX";
    ASSERT(mkdtemp(dir) != NULL);
    static uint32_t confirmed[NKEYS];
    for (int r = 0; r < rounds; r++) {
        bool nosync = r % 2 == 1;
        bool small = r % 3 == 2;
        int pfd[2];
        ASSERT(pipe(pfd) == 0);
        unsigned child_seed = seed * 31 + (unsigned)r;
        unsigned kill_ms = 100 + (unsigned)rand() % 1200;
        fflush(stdout);
        pid_t pid = fork();
        ASSERT(pid >= 0);
        if (pid == 0) {
            close(pfd[0]);
            confirm_fd = pfd[1];
            child(dir, nosync, small, child_seed, (uint32_t)r + 1);
        }
        close(pfd[1]);
        /* Collect confirmations until the kill moment. */
        double deadline = now_s() + kill_ms / 1000.0;
        unsigned n_conf = 0;
        for (;;) {
            double left = deadline - now_s();
            if (left <= 0)
                break;
            struct pollfd pf = {pfd[0], POLLIN, 0};
            if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0)
                continue;
            struct confirm cf;
            ssize_t n = read(pfd[0], &cf, sizeof(cf));
            if (n != sizeof(cf))
                break;
            if (cf.k < NKEYS && cf.gen > confirmed[cf.k])
                confirmed[cf.k] = cf.gen;
            n_conf++;
        }
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        struct confirm cf;
        while (read(pfd[0], &cf, sizeof(cf)) == sizeof(cf)) {
            if (cf.k < NKEYS && cf.gen > confirmed[cf.k])
                confirmed[cf.k] = cf.gen;
            n_conf++;
        }
        close(pfd[0]);
        ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
           "round %d (nosync=%d, evicting=%d): child killed after %u ms", r, nosync, small,
           kill_ms);

        struct cache_options o = {0};
        o.dir = dir;
        o.max_size = 1u << 30;
        struct cache *c;
        int rc = cache_open(&c, &o);
        is_int(rc, 0, "round %d: reopen", r);
        if (rc != 0)
            break;
        char err[256];
        rc = cache_check(c, err, sizeof(err));
        ok(rc == 0, "round %d: cache_check", r);
        if (rc != 0)
            printf("#   %s\n", err);
        struct http_headers req;
        http_headers_init(&req);
        int found = 0, intact = 0, lost = 0;
        for (uint32_t k = 0; k < NKEYS; k++) {
            char key[32];
            snprintf(key, sizeof(key), "crash/%u", k);
            struct cache_obj *obj;
            uint32_t gen = 0;
            if (cache_lookup(c, str_cstr(key), &req, 1, &obj) == 0) {
                found++;
                intact += read_back(c, obj);
                gen = gen_of(obj);
                cache_obj_unref(&obj);
            }
            if (!small && k < STABLE_KEYS && confirmed[k] && gen < confirmed[k]) {
                lost++;
                printf("#   key %u: confirmed gen %u, found gen %u\n", k, confirmed[k], gen);
            }
        }
        is_int(intact, found, "round %d: all %d objects found read back byte-exact", r, found);
        if (small)
            memset(confirmed, 0, sizeof(confirmed)); /* evicted ones may come back older */
        is_int(lost, 0, "round %d: no confirmed put lost (%u confirmations)", r, n_conf);

        struct cache_stats st;
        cache_stats_get(c, &st);
        printf("# round %d: %" PRIu64 " objects, %" PRIu64 " MiB\n", r, st.objects, st.bytes >> 20);
        http_headers_fini(&req);
        cache_close(&c);
    }
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return tap_done();
}
