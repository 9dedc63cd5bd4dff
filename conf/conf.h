/*
 * conf/conf.h: the node's configuration: command-line flags and the config file, parsed and
 * validated into one immutable struct config.
 *
 * Every option is declared once, in conf/options.h (name, type, default, bounds, unit,
 * reloadable or restart-only, help). The parser, `outpostd --help-config` and the README
 * reference are generated from that table (STYLE.md rules 23 and 24).
 *
 * Threads: conf_load() and conf_parse_buffer() run on the main thread at start-up (and, later,
 * on the control thread for a reload, which builds a new config and swaps it). Once returned,
 * a struct config is never written again: any thread may read it through a
 * `const struct config *` until the owner calls conf_free(). conf_site_find() is pure and
 * thread-safe.
 *
 * Errors are reported as one line in a caller buffer, in the form
 * "FILE:LINE: DIRECTIVE: PROBLEM" for the file and "command line: --flag: PROBLEM" for flags;
 * the caller prints it and exits with status 1.
 */
#ifndef OUTPOST_CONF_H
#define OUTPOST_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cache/cache_policy.h"
#include "lib/str.h"

/* A listening or origin address. `host` is a name or an IP literal without brackets; `text`
 * is "host:port", or "[v6]:port" when host contains ':'. */
struct conf_addr {
    char host[256];
    uint16_t port;
    char text[272];
};

/* Per-site options that are not cache policy (TLS, redirects, upstream TLS). Like the policy,
 * the global value (config->site_defaults) is the default of every site that does not set
 * them. Strings are owned (NULL = unset). */
struct conf_site_opts {
    char *tls_certificate; /* PEM chain, leaf first; NULL: the node's default certificate */
    char *tls_certificate_key; /* PEM private key (RSA or ECDSA) */
    char *tls_ocsp_staple; /* DER OCSP response stapled to handshakes; NULL = none */
    bool https_redirect; /* plaintext requests get 308 to https:// */
    int64_t hsts_max_age; /* seconds; 0 = no Strict-Transport-Security */
    bool alt_svc; /* advertise HTTP/3 with Alt-Svc on TCP responses (when h3_listen is set) */
    char *hide_headers; /* response header names never passed to clients, comma-separated */
    bool hsts_include_subdomains;
    bool upstream_tls; /* bridging: speak TLS to the origin servers */
    char *upstream_tls_ca; /* CA bundle to verify them; NULL = /etc/ssl/certs */
    char *upstream_tls_name; /* name verified and sent as SNI; NULL = the origin's host */
    bool upstream_tls_verify; /* off: accept any certificate (never in production) */
    char *origin_pool; /* `origin_pool NAME`: the upstream block of the origin servers */
    char *shields; /* shield groups (upstream block names) in fallback order, space-separated;
                      NULL = none: misses go to the origin */
    bool shield_fallback_origin; /* every shield group down: go to the origin directly */
};

enum conf_role {
    CONF_ROLE_EDGE = 0, /* misses go to the site's shields, if any, else to its origin */
    CONF_ROLE_SHIELD = 1, /* misses go to the origin; requests from a shield are refused */
};

enum conf_balance {
    CONF_BALANCE_ROUND_ROBIN = 0, /* smooth weighted round-robin */
    CONF_BALANCE_LEAST_CONN = 1, /* weighted least connections */
    CONF_BALANCE_HASH = 2, /* weighted rendezvous hashing of the cache key */
};

/* One `server HOST:PORT [weight=N] [max_conns=N]` of an upstream block. */
struct conf_server {
    struct conf_addr addr;
    unsigned weight; /* 1..1000 */
    unsigned max_conns; /* connections from this node at once; 0 = unlimited */
};

/* Options of an `upstream` block: balancing and health. The global values
 * (config->upstream_defaults) are the defaults of every block. */
struct conf_upstream_opts {
    unsigned balance; /* enum conf_balance; a shield group always hashes */
    int64_t slow_start_ms; /* a server back in rotation ramps up its weight over this */
    char *health_check; /* URI path of the active check; NULL = no active checks (a shield group
                           defaults to the shields' health_path) */
    char *health_host; /* Host of the check; NULL = the server's HOST:PORT */
    int64_t health_interval_ms;
    int64_t health_timeout_ms;
    uint64_t health_rise; /* consecutive passes to come back */
    uint64_t health_fall; /* consecutive failures to go out */
    char *health_status; /* expected statuses: "200", "2xx" or "200-399" */
    unsigned health_status_lo; /* health_status parsed, inclusive */
    unsigned health_status_hi;
    uint64_t passive_failures; /* failed requests in the window that eject; 0 = off */
    uint64_t passive_ratio; /* percent of failed requests (of >= 10) that eject; 0 = off */
    int64_t passive_window_ms;
    int64_t passive_cooldown_ms; /* ejection time before a trial request (doubles up to 5m) */
};

/* An `upstream NAME { server ... }` block: origin servers (a site's `origin_pool`) or a shield
 * group (a site's `shields`). A site's inline `origin HOST:PORT...` line becomes an upstream
 * too (`implicit`), with the global upstream options. */
struct conf_upstream {
    char *name; /* block name; "site NAME" for a site's origin line, "--shield" for the flag */
    struct conf_server *servers; /* at least one */
    size_t n_servers;
    struct conf_upstream_opts opts;
    unsigned line; /* where the block starts; 0 when made from a site line or flag */
    bool implicit;
    bool shield; /* some site lists it in `shields` */
    bool tls; /* --shield https://: speak TLS to these shields */
};

/* `passthrough NAME HOST:PORT`: raw TLS whose SNI is NAME (exact, *.suffix or *) goes to
 * HOST:PORT undecrypted. */
struct conf_route {
    char name[256];
    struct conf_addr to;
};

/* One `site NAME... { }` block (or the catch-all site that --origin adds). */
struct conf_site {
    char **names; /* lower-cased hostnames without port; "*" = catch-all; "*.example.com" =
                     any name below example.com (not example.com itself) */
    size_t n_names;
    struct conf_addr *origins; /* the inline `origin` line, if any (else origin_pool is set) */
    size_t n_origins;
    size_t upstream; /* index in config->upstreams: the origin servers */
    size_t *shields; /* indexes in config->upstreams: the shield groups, in fallback order */
    size_t n_shields; /* 0 on a shield */
    struct cache_site_policy policy; /* per-site values, global defaults merged in */
    struct conf_site_opts opts; /* same, for the options that are not cache policy */
    unsigned line; /* where the block starts; 0 for --origin */
};

enum conf_action {
    CONF_ACTION_RUN = 0,
    CONF_ACTION_CHECK = 1, /* -t / --check: validate and exit */
    CONF_ACTION_HELP = 2, /* --help: print conf_usage_print() */
    CONF_ACTION_HELP_CONFIG = 3, /* --help-config */
    CONF_ACTION_HELP_CONFIG_MD = 4, /* --help-config=markdown */
    CONF_ACTION_VERSION = 5, /* --version */
};

struct config {
    enum conf_action action;
    char *file; /* NULL when only flags were given */
    struct conf_addr *listen;
    size_t n_listen;
    struct conf_addr *tls_listen; /* TLS listeners: HTTP/1.1 and HTTP/2 by ALPN */
    size_t n_tls_listen;
    struct conf_addr *passthrough_listen; /* raw TLS routed by SNI (see passthrough) */
    size_t n_passthrough_listen;
    struct conf_addr *h3_listen; /* UDP: HTTP/3 over QUIC */
    size_t n_h3_listen;
    struct conf_route *passthrough;
    size_t n_passthrough;
    struct conf_addr admin;
    bool admin_enabled;
    unsigned role; /* enum conf_role */
    char *health_path; /* path this node answers itself for health checks; NULL = off */
    unsigned workers; /* 0 in the file means one per online CPU: resolved by conf_load() */
    char *node_name; /* default: gethostname(), resolved by conf_load() */
    char *cache_dir;
    uint64_t cache_max_size; /* bytes */
    uint64_t cache_map_size; /* bytes; 0 = auto */
    uint64_t max_object_size;
    bool cache_sync;
    int64_t cache_commit_interval_ms;
    char *access_log; /* NULL = off, "-" = stdout, else a path */
    int log_level; /* enum log_level from lib/log.h */
    uint64_t max_header_bytes;
    uint64_t max_headers;
    uint64_t max_uri_length;
    uint64_t max_body_size;
    uint64_t max_connections;
    int64_t header_timeout_ms;
    int64_t idle_timeout_ms;
    int64_t body_timeout_ms;
    int64_t send_timeout_ms;
    int64_t upstream_connect_timeout_ms;
    int64_t upstream_first_byte_timeout_ms;
    int64_t upstream_idle_timeout_ms;
    uint64_t upstream_keepalive;
    uint64_t upstream_retries;
    uint64_t retry_budget_pct;
    bool debug_api;
    /* TLS (server side; the certificate itself is per site, see conf_site_opts) */
    char *tls_min_version; /* "1.2" or "1.3" */
    char *tls_ciphers; /* TLS 1.2 cipher list (BoringSSL syntax); 1.3 suites are fixed */
    char *tls_curves; /* key exchange groups, "X25519:P-256:P-384" */
    bool tls_session_tickets;
    int64_t tls_ticket_rotation_ms;
    char *tls_ticket_key_file; /* 80 bytes shared across nodes; NULL = rotate locally */
    int64_t tls_handshake_timeout_ms;
    /* HTTP/2 */
    bool http2; /* offer h2 by ALPN on TLS listeners */
    bool h2c; /* accept HTTP/2 with prior knowledge on plaintext listeners */
    uint64_t h2_max_concurrent_streams;
    uint64_t h2_stream_window; /* bytes: initial stream flow-control window we grant */
    uint64_t h2_max_resets_per_second; /* client RST_STREAMs (rapid reset, CVE-2023-44487) */
    uint64_t h2_max_control_frames_per_second; /* PING, SETTINGS, PRIORITY, empty frames... */
    uint64_t h2_max_continuations; /* CONTINUATION frames in one header block */
    /* HTTP/3 */
    uint64_t h3_max_concurrent_streams; /* bidirectional streams a client may open */
    uint64_t h3_stream_window; /* bytes: flow-control window of a request stream */
    uint64_t h3_conn_window; /* bytes: connection flow-control window */
    bool h3_retry; /* always validate addresses with Retry */
    uint64_t h3_retry_under_load; /* handshakes in progress on a worker before Retry; 0 = never */
    bool h3_gso; /* UDP generic segmentation offload for sends */
    char *h3_secret_file; /* keys Retry tokens and stateless resets; NULL = random per start */
    int64_t alt_svc_max_age_ms; /* ma= of Alt-Svc */
    struct cache_site_policy defaults; /* global per-site defaults (seconds) */
    struct conf_site_opts site_defaults; /* global defaults of conf_site_opts */
    struct conf_upstream_opts upstream_defaults; /* global defaults of upstream blocks */
    struct conf_upstream *upstreams; /* blocks, then the sites' implicit ones */
    size_t n_upstreams;
    struct conf_site *sites;
    size_t n_sites;
};

/*
 * Parse argv (the flags of README "Running a node": -c FILE, --listen ADDR (repeatable),
 * --origin URL, --cache-dir DIR, --admin ADDR|off, --workers N, --set NAME=VALUE (any global
 * option, repeatable), -t/--check, --help, --help-config[=markdown], --version) and the file
 * if any. Flags override the file whatever their order. `argv[0]` is the program name.
 *
 * Returns 0 with *out set to a config the caller owns (free with conf_free(); treat it as
 * immutable). On error returns OP_EINVAL (or -errno when the file cannot be read), *out is
 * untouched and `err` holds "FILE:LINE: DIRECTIVE: PROBLEM", "FILE: PROBLEM" (unreadable
 * file), or "command line: --flag: PROBLEM".
 *
 * For HELP, HELP_CONFIG, HELP_CONFIG_MD and VERSION the file is not read and nothing is
 * validated beyond the flags' syntax. Otherwise at least one site must have an origin (from
 * the file or --origin), workers 0 is replaced by the number of online CPUs and an unset
 * node_name by gethostname().
 */
int conf_load(int argc, char **argv, struct config **out, char *err, size_t errlen);

/*
 * Parse and validate a config file held in memory: `name` is used in error messages only,
 * `buf` need not be NUL-terminated. A pure function of its input (no I/O, no environment):
 * workers stays as written (0 = auto) and node_name is NULL unless the file sets it. Same
 * return values and error format as conf_load(). Used by conf_load() and the fuzz target.
 */
int conf_parse_buffer(const char *name, const char *buf, size_t len, struct config **out, char *err,
                      size_t errlen);

/* Free a config from conf_load()/conf_parse_buffer() and clear the pointer. NULL is fine. */
void conf_free(struct config **c);

/*
 * The site serving a Host value: the port (":8080") and one trailing dot are ignored, and
 * names compare case-insensitively. Order: an exact name, then the longest matching wildcard
 * "*.suffix", then "*". NULL if no site serves it (the edge answers 421). The pointer lives
 * as long as `c`.
 */
const struct conf_site *conf_site_find(const struct config *c, struct str host);

/*
 * The one helper for quantities with units (STYLE.md rule 24).
 * Sizes: digits with an optional k, m or g (powers of 1024, either case) and an optional
 * trailing B: "512", "64k", "1G", "10MB". Durations: digits with ms, s, m, h or d; a bare
 * number is seconds. Both return 0, or OP_EINVAL on bad syntax, OP_ETOOBIG on overflow.
 */
int conf_size_parse(struct str s, uint64_t *bytes);
int conf_duration_parse(struct str s, int64_t *ms);
/* The shortest exact text for a value ("64m", "1g", "1500ms", "1d"), NUL-terminated. */
void conf_size_format(uint64_t bytes, char *out, size_t outlen);
void conf_duration_format(int64_t ms, char *out, size_t outlen);

/* --help-config: every option with type, default, bounds, reload class and help; as an
 * aligned text table, or (markdown) as the Markdown table of the README reference. */
void conf_help_print(FILE *f, bool markdown);
/* --help: the command-line flags. */
void conf_usage_print(FILE *f);

#endif
