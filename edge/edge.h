/*
 * edge/edge.h: a running Outpost node: worker threads serving clients, the admin listener and
 * the control loop. The daemon's main() creates the config and the cache, then:
 *
 *     struct edge *e;
 *     edge_create(&e, cfg, cache);   // binds every listener (errors: -errno, with a log line)
 *     edge_run(e);                   // serves until SIGTERM/SIGINT, then drains gracefully
 *     edge_destroy(&e);
 *
 * Threads: edge_create/edge_run/edge_destroy run on the main thread, which becomes the
 * control thread (signals, admin API). Workers are created by edge_run and joined before it
 * returns. `cfg` and `cache` must outlive the edge.
 */
#ifndef OUTPOST_EDGE_H
#define OUTPOST_EDGE_H

struct edge;
struct config;
struct cache;

#define OUTPOST_VERSION "0.1.0"

int edge_create(struct edge **out, const struct config *cfg, struct cache *cache);
/* The command line, so that SIGHUP can read the config file again (argv must outlive e). */
void edge_set_argv(struct edge *e, int argc, char **argv);
int edge_run(struct edge *e);
void edge_destroy(struct edge **e);

#endif
