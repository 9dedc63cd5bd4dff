/*
 * src/outpostd.c: the daemon's entry point. Loads the configuration (flags and file; errors
 * name file and line and stop the node before anything starts), opens the cache, runs the
 * node until SIGTERM/SIGINT, then closes the cache so that its writer commits what it holds.
 */
#include <stdio.h>
#include <string.h>

#include "cache/cache.h"
#include "conf/conf.h"
#include "edge/edge.h"
#include "lib/log.h"
#include "lib/util.h"

int main(int argc, char **argv)
{
    struct config *cfg = NULL;
    char err[1024] = "";
    if (conf_load(argc, argv, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "outpostd: %s\n", err);
        return 1;
    }
    switch (cfg->action) {
    case CONF_ACTION_HELP:
        conf_usage_print(stdout);
        conf_free(&cfg);
        return 0;
    case CONF_ACTION_VERSION:
        printf("outpostd %s\n", OUTPOST_VERSION);
        conf_free(&cfg);
        return 0;
    case CONF_ACTION_HELP_CONFIG:
    case CONF_ACTION_HELP_CONFIG_MD:
        conf_help_print(stdout, cfg->action == CONF_ACTION_HELP_CONFIG_MD);
        conf_free(&cfg);
        return 0;
    case CONF_ACTION_CHECK:
        printf("outpostd: configuration %s is valid\n", cfg->file ? cfg->file : "(flags)");
        conf_free(&cfg);
        return 0;
    default:
        break;
    }
    log_set_level((enum log_level)cfg->log_level);
    struct cache_options copt = {
        .dir = cfg->cache_dir,
        .max_size = cfg->cache_max_size,
        .map_size = cfg->cache_map_size,
        .max_object_size = cfg->max_object_size,
        .high_water_pct = 90,
        .low_water_pct = 80,
        .nosync = !cfg->cache_sync,
        .batch_ms = (unsigned)cfg->cache_commit_interval_ms,
    };
    struct cache *cache = NULL;
    int r = cache_open(&cache, &copt);
    if (r != 0) {
        fprintf(stderr, "outpostd: cache_dir %s: %s\n", cfg->cache_dir, op_strerror(r));
        conf_free(&cfg);
        return 1;
    }
    struct edge *e = NULL;
    r = edge_create(&e, cfg, cache);
    if (r != 0) {
        fprintf(stderr, "outpostd: cannot start: %s\n", op_strerror(r));
        cache_close(&cache);
        conf_free(&cfg);
        return 1;
    }
    edge_set_argv(e, argc, argv);
    r = edge_run(e);
    /* The cache writer calls back into the edge (commit notifications): drain and stop it
     * before the edge goes away. */
    cache_close(&cache);
    edge_destroy(&e);
    conf_free(&cfg);
    log_msg(LOG_INFO, "stopped");
    return r == 0 ? 0 : 1;
}
