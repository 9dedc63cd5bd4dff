/*
 * conf/options.h: the one table of configuration directives (STYLE.md rule 23). Every
 * directive of the file, every --set NAME and every line of `outpostd --help-config` and of
 * the README reference comes from the CONF_OPTIONS list below; nothing else declares an
 * option. Internal to conf/ (conf.c parses with it, help.c prints it).
 *
 * Columns of X(ID, NAME, TYPE, CONTEXT, OFFSET, DEFAULT, MIN, MAX, RELOAD, HELP):
 *   ID       suffix of enum conf_opt (CONF_OPT_<ID>)
 *   NAME     the directive as written in the file
 *   TYPE     enum conf_type: how arguments parse and where the value is stored
 *   CONTEXT  CONF_CTX_GLOBAL, CONF_CTX_SITE, or both (per-site options, whose global value is
 *            the default of every site that does not set them)
 *   OFFSET   offsetof() into struct config (global) or struct cache_site_policy (per-site);
 *            unused (0) for types stored in dedicated fields (listen, admin, site, origin)
 *   DEFAULT  the default as it would be written in the file, parsed by the same code; NULL
 *            when the default is computed at load (node_name) or there is none
 *   MIN/MAX  bounds in base units (bytes, milliseconds, plain numbers); 0/0 = no bounds
 *   RELOAD   CONF_RELOAD (a reload may change it) or CONF_RESTART (needs a restart)
 *   HELP     one line of help
 */
#ifndef OUTPOST_CONF_OPTIONS_H
#define OUTPOST_CONF_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

enum conf_type {
    CONF_T_ADDRS = 0, /* one or more HOST:PORT, repeatable (listen) */
    CONF_T_ADDR_OFF, /* HOST:PORT or off (admin) */
    CONF_T_UINT, /* integer stored as unsigned */
    CONF_T_COUNT, /* integer stored as uint64_t */
    CONF_T_SIZE, /* size with unit, bytes in uint64_t */
    CONF_T_DURATION, /* duration with unit, milliseconds in int64_t */
    CONF_T_SECONDS, /* duration with unit, whole seconds in int64_t (cache_site_policy) */
    CONF_T_BOOL, /* on/off into bool */
    CONF_T_BOOL_NOT, /* on/off into bool, stored inverted */
    CONF_T_STRING, /* any string, xstrdup'ed char * */
    CONF_T_LOG_TARGET, /* path, "-" or off (NULL) */
    CONF_T_LOG_LEVEL, /* error|warn|info|debug into int */
    CONF_T_SITE, /* site NAME... { ... } */
    CONF_T_ORIGINS, /* origin HOST:PORT... inside a site */
    CONF_T_ROUTE, /* NAME HOST:PORT, repeatable (passthrough) */
    CONF_T_TLS_VERSION, /* 1.2 or 1.3, kept as a string */
    CONF_T_ROLE, /* edge|shield into unsigned (enum conf_role) */
    CONF_T_BALANCE, /* round_robin|least_conn|hash into unsigned (enum conf_balance) */
    CONF_T_PATH_OFF, /* an absolute URI path ("/...") or off (NULL), char * */
    CONF_T_NAMES, /* one or more upstream block names, kept space-separated in a char * */
    CONF_T_STATUS, /* 200, 2xx or 200-399: health_status with its lo/hi (conf_upstream_opts) */
    CONF_T_UPSTREAM, /* upstream NAME { ... } */
    CONF_T_SERVERS, /* server HOST:PORT [weight=N] [max_conns=N] inside an upstream */
};

enum {
    CONF_CTX_GLOBAL = 1,
    CONF_CTX_SITE = 2,
    CONF_CTX_UPSTREAM = 4, /* inside an upstream block; with GLOBAL, the global value is the
                              default of every block */
};

enum {
    CONF_RESTART = 0,
    CONF_RELOAD = 1,
};

#define CONF_G(f) offsetof(struct config, f)
#define CONF_P(f) offsetof(struct cache_site_policy, f)
/* Per-site options stored in struct conf_site_opts rather than the cache policy: the offset
 * carries this bit so that one OFFSET column serves both structs. */
#define CONF_OPTS_BIT ((size_t)1 << 30)
#define CONF_S(f) (CONF_OPTS_BIT | offsetof(struct conf_site_opts, f))
/* Upstream block options, stored in struct conf_upstream_opts. */
#define CONF_UPS_BIT ((size_t)1 << 29)
#define CONF_U(f) (CONF_UPS_BIT | offsetof(struct conf_upstream_opts, f))
#define CONF_UPS (CONF_CTX_GLOBAL | CONF_CTX_UPSTREAM)
#define CONF_KIB 1024ULL
#define CONF_MIB (1024ULL * 1024)
#define CONF_GIB (1024ULL * 1024 * 1024)
#define CONF_SEC 1000ULL
#define CONF_DAY (86400ULL * 1000)
#define CONF_BOTH (CONF_CTX_GLOBAL | CONF_CTX_SITE)

/* clang-format off */
#define CONF_OPTIONS(X)                                                                            \
    X(LISTEN, "listen", CONF_T_ADDRS, CONF_CTX_GLOBAL, 0, "127.0.0.1:8080", 0, 0, CONF_RESTART,    \
      "Client listener, HOST:PORT or [V6]:PORT; repeat the directive for more listeners")          \
    X(TLS_LISTEN, "tls_listen", CONF_T_ADDRS, CONF_CTX_GLOBAL, 0, NULL, 0, 0, CONF_RESTART,        \
      "TLS listener (HTTP/1.1 and HTTP/2 by ALPN), HOST:PORT; repeatable")                        \
    X(PASSTHROUGH_LISTEN, "passthrough_listen", CONF_T_ADDRS, CONF_CTX_GLOBAL, 0, NULL, 0, 0,      \
      CONF_RESTART, "TLS passthrough listener: routes raw TLS by SNI without decrypting it")       \
    X(H3_LISTEN, "h3_listen", CONF_T_ADDRS, CONF_CTX_GLOBAL, 0, NULL, 0, 0, CONF_RESTART,          \
      "HTTP/3 (QUIC) listener on UDP HOST:PORT, usually the port of a tls_listen; repeatable")    \
    X(PASSTHROUGH, "passthrough", CONF_T_ROUTE, CONF_CTX_GLOBAL, 0, NULL, 0, 0, CONF_RELOAD,       \
      "passthrough NAME HOST:PORT: TLS with SNI NAME (exact, *.suffix or *) goes to HOST:PORT")    \
    X(ADMIN, "admin", CONF_T_ADDR_OFF, CONF_CTX_GLOBAL, 0, "127.0.0.1:8081", 0, 0, CONF_RESTART,   \
      "Admin API listener (status, metrics), HOST:PORT, or off")                                   \
    X(WORKERS, "workers", CONF_T_UINT, CONF_CTX_GLOBAL, CONF_G(workers), "0", 0, 256,              \
      CONF_RESTART, "Worker threads; 0 = one per online CPU")                                      \
    X(NODE_NAME, "node_name", CONF_T_STRING, CONF_CTX_GLOBAL, CONF_G(node_name), NULL, 0, 0,       \
      CONF_RESTART, "Name of this node in Via and /status; default: the host name")                \
    X(CACHE_DIR, "cache_dir", CONF_T_STRING, CONF_CTX_GLOBAL, CONF_G(cache_dir),                   \
      "/var/cache/outpost", 0, 0, CONF_RESTART, "Directory of the on-disk cache (LMDB)")           \
    X(CACHE_MAX_SIZE, "cache_max_size", CONF_T_SIZE, CONF_CTX_GLOBAL, CONF_G(cache_max_size),      \
      "1g", CONF_MIB, 16384 * CONF_GIB, CONF_RELOAD,                                               \
      "Bytes of cached objects kept; eviction starts above it")                                   \
    X(CACHE_MAP_SIZE, "cache_map_size", CONF_T_SIZE, CONF_CTX_GLOBAL, CONF_G(cache_map_size),      \
      "0", 0, 16384 * CONF_GIB, CONF_RESTART,                                                      \
      "LMDB map size; 0 = derived from cache_max_size")                                            \
    X(MAX_OBJECT_SIZE, "max_object_size", CONF_T_SIZE, CONF_CTX_GLOBAL, CONF_G(max_object_size),   \
      "256m", CONF_KIB, 64 * CONF_GIB, CONF_RELOAD,                                                \
      "Largest response body stored in the cache; larger ones are passed through")                 \
    X(CACHE_SYNC, "cache_sync", CONF_T_BOOL, CONF_CTX_GLOBAL, CONF_G(cache_sync), "on", 0, 0,      \
      CONF_RESTART, "Flush each cache commit to disk; off is faster but a crash may lose the "     \
      "latest writes")                                                                             \
    X(CACHE_COMMIT_INTERVAL, "cache_commit_interval", CONF_T_DURATION, CONF_CTX_GLOBAL,            \
      CONF_G(cache_commit_interval_ms), "10ms", 1, 1000, CONF_RESTART,                            \
      "Longest wait of the cache writer to gather a batch into one commit")                        \
    X(ACCESS_LOG, "access_log", CONF_T_LOG_TARGET, CONF_CTX_GLOBAL, CONF_G(access_log), "-", 0, 0, \
      CONF_RELOAD, "Access log: a file path, - for stdout, or off")                                \
    X(LOG_LEVEL, "log_level", CONF_T_LOG_LEVEL, CONF_CTX_GLOBAL, CONF_G(log_level), "info", 0, 0,  \
      CONF_RELOAD, "Error log verbosity: error, warn, info or debug")                              \
    X(MAX_HEADER_BYTES, "max_header_bytes", CONF_T_SIZE, CONF_CTX_GLOBAL,                          \
      CONF_G(max_header_bytes), "32k", CONF_KIB, CONF_MIB, CONF_RELOAD,                            \
      "Largest request head (request line and header fields); larger gets 431")                   \
    X(MAX_HEADERS, "max_headers", CONF_T_COUNT, CONF_CTX_GLOBAL, CONF_G(max_headers), "100", 1,    \
      1000, CONF_RELOAD, "Most request header fields; more gets 431")                              \
    X(MAX_URI_LENGTH, "max_uri_length", CONF_T_SIZE, CONF_CTX_GLOBAL, CONF_G(max_uri_length),      \
      "8k", 256, CONF_MIB, CONF_RELOAD, "Longest request target; longer gets 414")                 \
    X(MAX_BODY_SIZE, "max_body_size", CONF_T_SIZE, CONF_CTX_GLOBAL, CONF_G(max_body_size), "64m",  \
      0, 64 * CONF_GIB, CONF_RELOAD, "Largest request body; larger gets 413")                      \
    X(MAX_CONNECTIONS, "max_connections", CONF_T_COUNT, CONF_CTX_GLOBAL,                           \
      CONF_G(max_connections), "10000", 1, 1000000, CONF_RELOAD,                                   \
      "Most open client connections; further ones are refused")                                    \
    X(HEADER_TIMEOUT, "header_timeout", CONF_T_DURATION, CONF_CTX_GLOBAL,                          \
      CONF_G(header_timeout_ms), "10s", 1, CONF_DAY, CONF_RELOAD,                                  \
      "Time a client has to send a complete request head; then 408")                               \
    X(IDLE_TIMEOUT, "idle_timeout", CONF_T_DURATION, CONF_CTX_GLOBAL, CONF_G(idle_timeout_ms),     \
      "60s", 1, CONF_DAY, CONF_RELOAD, "Time an idle keep-alive client connection stays open")     \
    X(BODY_TIMEOUT, "body_timeout", CONF_T_DURATION, CONF_CTX_GLOBAL, CONF_G(body_timeout_ms),     \
      "30s", 1, CONF_DAY, CONF_RELOAD, "Longest wait for the next bytes of a request body")        \
    X(SEND_TIMEOUT, "send_timeout", CONF_T_DURATION, CONF_CTX_GLOBAL, CONF_G(send_timeout_ms),     \
      "60s", 1, CONF_DAY, CONF_RELOAD, "Longest wait for a client to accept more response bytes")  \
    X(UPSTREAM_CONNECT_TIMEOUT, "upstream_connect_timeout", CONF_T_DURATION, CONF_CTX_GLOBAL,      \
      CONF_G(upstream_connect_timeout_ms), "5s", 1, CONF_DAY, CONF_RELOAD,                         \
      "Time to establish a connection to an origin")                                               \
    X(UPSTREAM_FIRST_BYTE_TIMEOUT, "upstream_first_byte_timeout", CONF_T_DURATION,                 \
      CONF_CTX_GLOBAL, CONF_G(upstream_first_byte_timeout_ms), "30s", 1, CONF_DAY, CONF_RELOAD,    \
      "Time from sending a request to an origin until its first response byte")                   \
    X(UPSTREAM_IDLE_TIMEOUT, "upstream_idle_timeout", CONF_T_DURATION, CONF_CTX_GLOBAL,            \
      CONF_G(upstream_idle_timeout_ms), "60s", 1, CONF_DAY, CONF_RELOAD,                           \
      "Time an idle keep-alive origin connection stays open")                                      \
    X(UPSTREAM_KEEPALIVE, "upstream_keepalive", CONF_T_COUNT, CONF_CTX_GLOBAL,                     \
      CONF_G(upstream_keepalive), "32", 0, 10000, CONF_RELOAD,                                     \
      "Idle keep-alive connections kept per origin; 0 = close after each response")                \
    X(UPSTREAM_RETRIES, "upstream_retries", CONF_T_COUNT, CONF_CTX_GLOBAL,                         \
      CONF_G(upstream_retries), "2", 0, 5, CONF_RELOAD,                                            \
      "Further attempts (next server, shield or group) of an idempotent request that failed "     \
      "before any response byte")                                                                  \
    X(RETRY_BUDGET, "retry_budget", CONF_T_COUNT, CONF_CTX_GLOBAL, CONF_G(retry_budget_pct), "20", \
      0, 100, CONF_RELOAD,                                                                         \
      "Retries allowed per upstream group, in percent of its requests over 10 s (plus 3/s)")     \
    X(ROLE, "role", CONF_T_ROLE, CONF_CTX_GLOBAL, CONF_G(role), "edge", 0, 0, CONF_RESTART,        \
      "edge: misses go to the site's shields, then its origin; shield: misses go to the origin")  \
    X(HEALTH_PATH, "health_path", CONF_T_PATH_OFF, CONF_CTX_GLOBAL, CONF_G(health_path),           \
      "/_outpost/health", 0, 0, CONF_RELOAD,                                                       \
      "Path this node answers itself on client listeners (200, or 503 while stopping), for "      \
      "health checks; off = none")                                                                 \
    X(SHIELDS, "shields", CONF_T_NAMES, CONF_BOTH, CONF_S(shields), NULL, 0, 0, CONF_RELOAD,        \
      "Shield groups (upstream block names) an edge sends misses to, in fallback order")          \
    X(SHIELD_FALLBACK_ORIGIN, "shield_fallback_origin", CONF_T_BOOL, CONF_BOTH,                    \
      CONF_S(shield_fallback_origin), "on", 0, 0, CONF_RELOAD,                                     \
      "When every shield group is down, fetch from the origin directly")                         \
    X(UPSTREAM, "upstream", CONF_T_UPSTREAM, CONF_CTX_GLOBAL, 0, NULL, 0, 0, CONF_RELOAD,          \
      "Block naming a group of servers: origin servers (origin_pool) or shields (shields)")       \
    X(SERVER, "server", CONF_T_SERVERS, CONF_CTX_UPSTREAM, 0, NULL, 0, 0, CONF_RELOAD,             \
      "server HOST:PORT [weight=1..1000] [max_conns=N]: a server of the upstream; repeatable")    \
    X(BALANCE, "balance", CONF_T_BALANCE, CONF_UPS, CONF_U(balance), "round_robin", 0, 0,          \
      CONF_RELOAD, "round_robin, least_conn or hash (of the cache key); shield groups always hash")\
    X(SLOW_START, "slow_start", CONF_T_DURATION, CONF_UPS, CONF_U(slow_start_ms), "0", 0,          \
      3600 * CONF_SEC, CONF_RELOAD, "A server back in rotation ramps up to its weight over this")  \
    X(HEALTH_CHECK, "health_check", CONF_T_PATH_OFF, CONF_UPS, CONF_U(health_check), "off", 0, 0,  \
      CONF_RELOAD, "Path of the active health check (GET), or off; shield groups default to "     \
      "health_path")                                                                               \
    X(HEALTH_HOST, "health_host", CONF_T_STRING, CONF_UPS, CONF_U(health_host), NULL, 0, 0,        \
      CONF_RELOAD, "Host header of health checks; default: the server's HOST:PORT")               \
    X(HEALTH_INTERVAL, "health_interval", CONF_T_DURATION, CONF_UPS, CONF_U(health_interval_ms),   \
      "2s", 100, 3600 * CONF_SEC, CONF_RELOAD, "Time between two active checks of a server")      \
    X(HEALTH_TIMEOUT, "health_timeout", CONF_T_DURATION, CONF_UPS, CONF_U(health_timeout_ms),      \
      "1s", 10, 60 * CONF_SEC, CONF_RELOAD, "An active check without a response head by then fails")\
    X(HEALTH_RISE, "health_rise", CONF_T_COUNT, CONF_UPS, CONF_U(health_rise), "2", 1, 100,        \
      CONF_RELOAD, "Consecutive passed checks that bring a server back")                          \
    X(HEALTH_FALL, "health_fall", CONF_T_COUNT, CONF_UPS, CONF_U(health_fall), "3", 1, 100,        \
      CONF_RELOAD, "Consecutive failed checks that take a server out")                            \
    X(HEALTH_STATUS, "health_status", CONF_T_STATUS, CONF_UPS, CONF_U(health_status), "200-399",   \
      0, 0, CONF_RELOAD, "Statuses that pass a check: 200, 2xx or a range such as 200-399")       \
    X(PASSIVE_FAILURES, "passive_failures", CONF_T_COUNT, CONF_UPS, CONF_U(passive_failures), "5", \
      0, 1000000, CONF_RELOAD,                                                                     \
      "Failed requests (connect errors, timeouts, 5xx) in the window that eject a server; 0 = off")\
    X(PASSIVE_RATIO, "passive_ratio", CONF_T_COUNT, CONF_UPS, CONF_U(passive_ratio), "50", 0, 100, \
      CONF_RELOAD, "Percent of failed requests (of at least 10 in the window) that eject; 0 = off")\
    X(PASSIVE_WINDOW, "passive_window", CONF_T_DURATION, CONF_UPS, CONF_U(passive_window_ms),      \
      "10s", 100, 3600 * CONF_SEC, CONF_RELOAD, "Window over which request failures are counted")  \
    X(PASSIVE_COOLDOWN, "passive_cooldown", CONF_T_DURATION, CONF_UPS,                             \
      CONF_U(passive_cooldown_ms), "10s", 100, 3600 * CONF_SEC, CONF_RELOAD,                       \
      "An ejected server waits this long (doubling up to 5m) before one trial request")           \
    X(DEBUG_API, "debug_api", CONF_T_BOOL, CONF_CTX_GLOBAL, CONF_G(debug_api), "off", 0, 0,        \
      CONF_RESTART, "Enable the /debug endpoints of the admin API (for tests only)")               \
    X(TLS_MIN_VERSION, "tls_min_version", CONF_T_TLS_VERSION, CONF_CTX_GLOBAL,                     \
      CONF_G(tls_min_version), "1.2", 0, 0, CONF_RELOAD, "Oldest TLS version accepted: 1.2 or 1.3")\
    X(TLS_CIPHERS, "tls_ciphers", CONF_T_STRING, CONF_CTX_GLOBAL, CONF_G(tls_ciphers),             \
      "ECDHE+AESGCM:ECDHE+CHACHA20", 0, 0, CONF_RELOAD,                                            \
      "TLS 1.2 cipher list (BoringSSL syntax); TLS 1.3 suites are fixed")                         \
    X(TLS_CURVES, "tls_curves", CONF_T_STRING, CONF_CTX_GLOBAL, CONF_G(tls_curves),                \
      "X25519:P-256:P-384", 0, 0, CONF_RELOAD, "Key exchange groups, in order of preference")     \
    X(TLS_SESSION_TICKETS, "tls_session_tickets", CONF_T_BOOL, CONF_CTX_GLOBAL,                    \
      CONF_G(tls_session_tickets), "on", 0, 0, CONF_RELOAD, "Resume TLS sessions with tickets")    \
    X(TLS_TICKET_ROTATION, "tls_ticket_rotation", CONF_T_DURATION, CONF_CTX_GLOBAL,                \
      CONF_G(tls_ticket_rotation_ms), "1h", 60 * CONF_SEC, 7 * CONF_DAY, CONF_RESTART,             \
      "Period of the ticket keys: a key encrypts for one period, decrypts for two")              \
    X(TLS_TICKET_KEY_FILE, "tls_ticket_key_file", CONF_T_STRING, CONF_CTX_GLOBAL,                  \
      CONF_G(tls_ticket_key_file), NULL, 0, 0, CONF_RELOAD,                                        \
      "80-byte ticket key shared by several nodes (not rotated); default: keys rotate locally")   \
    X(TLS_HANDSHAKE_TIMEOUT, "tls_handshake_timeout", CONF_T_DURATION, CONF_CTX_GLOBAL,            \
      CONF_G(tls_handshake_timeout_ms), "10s", 1, CONF_DAY, CONF_RELOAD,                           \
      "Time a client has to complete the TLS handshake")                                           \
    X(HTTP2, "http2", CONF_T_BOOL, CONF_CTX_GLOBAL, CONF_G(http2), "on", 0, 0, CONF_RELOAD,        \
      "Offer HTTP/2 (ALPN h2) on TLS listeners")                                                   \
    X(H2C, "h2c", CONF_T_BOOL, CONF_CTX_GLOBAL, CONF_G(h2c), "on", 0, 0, CONF_RELOAD,              \
      "Accept HTTP/2 with prior knowledge (cleartext) on plain listeners")                         \
    X(H2_MAX_CONCURRENT_STREAMS, "h2_max_concurrent_streams", CONF_T_COUNT, CONF_CTX_GLOBAL,       \
      CONF_G(h2_max_concurrent_streams), "128", 1, 10000, CONF_RELOAD,                             \
      "Open HTTP/2 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS)")                      \
    X(H2_STREAM_WINDOW, "h2_stream_window", CONF_T_SIZE, CONF_CTX_GLOBAL, CONF_G(h2_stream_window),\
      "256k", 16 * CONF_KIB, CONF_GIB, CONF_RELOAD,                                                \
      "Flow-control window granted to each HTTP/2 request stream")                                 \
    X(H2_MAX_RESETS_PER_SECOND, "h2_max_resets_per_second", CONF_T_COUNT, CONF_CTX_GLOBAL,         \
      CONF_G(h2_max_resets_per_second), "100", 1, 1000000, CONF_RELOAD,                            \
      "Client stream resets per second (burst: twice as many) before GOAWAY (rapid reset)")        \
    X(H2_MAX_CONTROL_FRAMES_PER_SECOND, "h2_max_control_frames_per_second", CONF_T_COUNT,          \
      CONF_CTX_GLOBAL, CONF_G(h2_max_control_frames_per_second), "500", 1, 1000000, CONF_RELOAD,   \
      "PING, SETTINGS, PRIORITY, WINDOW_UPDATE and empty frames per second before GOAWAY")        \
    X(H2_MAX_CONTINUATIONS, "h2_max_continuations", CONF_T_COUNT, CONF_CTX_GLOBAL,                 \
      CONF_G(h2_max_continuations), "16", 1, 1000, CONF_RELOAD,                                    \
      "CONTINUATION frames in one header block before the connection is closed")                  \
    X(H3_MAX_CONCURRENT_STREAMS, "h3_max_concurrent_streams", CONF_T_COUNT, CONF_CTX_GLOBAL,       \
      CONF_G(h3_max_concurrent_streams), "100", 1, 10000, CONF_RELOAD,                             \
      "Request streams a client may open at once per HTTP/3 connection")                          \
    X(H3_STREAM_WINDOW, "h3_stream_window", CONF_T_SIZE, CONF_CTX_GLOBAL, CONF_G(h3_stream_window),\
      "256k", 16 * CONF_KIB, CONF_GIB, CONF_RELOAD,                                                \
      "QUIC flow-control window of each HTTP/3 request stream (request bodies)")                  \
    X(H3_CONN_WINDOW, "h3_conn_window", CONF_T_SIZE, CONF_CTX_GLOBAL, CONF_G(h3_conn_window),      \
      "4m", 64 * CONF_KIB, CONF_GIB, CONF_RELOAD,                                                  \
      "QUIC flow-control window of a whole HTTP/3 connection")                                    \
    X(H3_RETRY, "h3_retry", CONF_T_BOOL, CONF_CTX_GLOBAL, CONF_G(h3_retry), "off", 0, 0,           \
      CONF_RELOAD, "Validate every QUIC client address with a Retry round trip")                  \
    X(H3_RETRY_UNDER_LOAD, "h3_retry_under_load", CONF_T_COUNT, CONF_CTX_GLOBAL,                   \
      CONF_G(h3_retry_under_load), "100", 0, 1000000, CONF_RELOAD,                                 \
      "QUIC handshakes in progress on a worker from which on new clients get a Retry; 0 = never")   \
    X(H3_GSO, "h3_gso", CONF_T_BOOL, CONF_CTX_GLOBAL, CONF_G(h3_gso), "on", 0, 0, CONF_RELOAD,     \
      "Send QUIC packets in batches with UDP segmentation offload (when the kernel has it)")      \
    X(H3_SECRET_FILE, "h3_secret_file", CONF_T_STRING, CONF_CTX_GLOBAL, CONF_G(h3_secret_file),    \
      NULL, 0, 0, CONF_RESTART,                                                                    \
      "File of at least 32 secret bytes keying Retry tokens and stateless resets (share it "       \
      "across restarts); default: random at start")                                               \
    X(ALT_SVC, "alt_svc", CONF_T_BOOL, CONF_BOTH, CONF_S(alt_svc), "on", 0, 0, CONF_RELOAD,        \
      "Advertise HTTP/3 (Alt-Svc: h3=\":PORT\") on HTTP/1.1 and HTTP/2 responses when h3_listen "  \
      "is set")                                                                                    \
    X(HIDE_HEADERS, "hide_headers", CONF_T_STRING, CONF_BOTH, CONF_S(hide_headers), NULL, 0, 0,    \
      CONF_RELOAD, "Origin response headers never passed to clients, comma-separated (e.g. "      \
      "\"Server,X-Powered-By\"); still stored")                                                  \
    X(ALT_SVC_MAX_AGE, "alt_svc_max_age", CONF_T_DURATION, CONF_CTX_GLOBAL,                        \
      CONF_G(alt_svc_max_age_ms), "24h", 1 * CONF_SEC, 365 * CONF_DAY, CONF_RELOAD,                \
      "How long clients may remember the Alt-Svc advertisement (ma=)")                            \
    X(DEFAULT_TTL, "default_ttl", CONF_T_SECONDS, CONF_BOTH, CONF_P(default_ttl), "0", 0,          \
      365 * CONF_DAY, CONF_RELOAD,                                                                 \
      "Freshness of cacheable responses without explicit freshness or Last-Modified; 0 = do "      \
      "not store them")                                                                            \
    X(MAX_TTL, "max_ttl", CONF_T_SECONDS, CONF_BOTH, CONF_P(max_ttl), "0", 0, 365 * CONF_DAY,      \
      CONF_RELOAD, "Cap on any freshness lifetime; 0 = no cap")                                    \
    X(HEURISTIC_MAX, "heuristic_max", CONF_T_SECONDS, CONF_BOTH, CONF_P(heuristic_max), "1d", 0,   \
      365 * CONF_DAY, CONF_RELOAD,                                                                 \
      "Cap on heuristic freshness (10% of the time since Last-Modified)")                         \
    X(STALE_WHILE_REVALIDATE, "stale_while_revalidate", CONF_T_SECONDS, CONF_BOTH,                 \
      CONF_P(stale_while_revalidate), "0", 0, 365 * CONF_DAY, CONF_RELOAD,                         \
      "stale-while-revalidate window when the response gives none; 0 = off")                      \
    X(STALE_IF_ERROR, "stale_if_error", CONF_T_SECONDS, CONF_BOTH, CONF_P(stale_if_error), "0", 0, \
      365 * CONF_DAY, CONF_RELOAD, "stale-if-error window when the response gives none; 0 = off")  \
    X(CDN_CACHE_CONTROL, "cdn_cache_control", CONF_T_BOOL_NOT, CONF_BOTH,                          \
      CONF_P(ignore_cdn_cache_control), "on", 0, 0, CONF_RELOAD,                                   \
      "Honour CDN-Cache-Control (RFC 9213) before Cache-Control")                                  \
    X(CACHE_AUTHORIZED, "cache_authorized", CONF_T_BOOL, CONF_BOTH, CONF_P(cache_authorized),      \
      "off", 0, 0, CONF_RELOAD,                                                                    \
      "Store responses to requests with Authorization even without public/s-maxage")              \
    X(TLS_CERTIFICATE, "tls_certificate", CONF_T_STRING, CONF_BOTH, CONF_S(tls_certificate), NULL, \
      0, 0, CONF_RELOAD, "PEM certificate chain (leaf first, RSA or ECDSA); in a site: chosen by "\
      "SNI")                                                                                       \
    X(TLS_CERTIFICATE_KEY, "tls_certificate_key", CONF_T_STRING, CONF_BOTH,                        \
      CONF_S(tls_certificate_key), NULL, 0, 0, CONF_RELOAD, "PEM private key of tls_certificate")  \
    X(TLS_OCSP_STAPLE, "tls_ocsp_staple", CONF_T_STRING, CONF_BOTH, CONF_S(tls_ocsp_staple), NULL, \
      0, 0, CONF_RELOAD, "DER OCSP response stapled to handshakes (refreshed on reload)")          \
    X(HTTPS_REDIRECT, "https_redirect", CONF_T_BOOL, CONF_BOTH, CONF_S(https_redirect), "off", 0,  \
      0, CONF_RELOAD, "Answer plaintext requests with 308 to the https:// URL")                    \
    X(HSTS_MAX_AGE, "hsts_max_age", CONF_T_SECONDS, CONF_BOTH, CONF_S(hsts_max_age), "0", 0,       \
      730 * CONF_DAY, CONF_RELOAD, "Strict-Transport-Security max-age on TLS responses; 0 = none") \
    X(HSTS_INCLUDE_SUBDOMAINS, "hsts_include_subdomains", CONF_T_BOOL, CONF_BOTH,                  \
      CONF_S(hsts_include_subdomains), "off", 0, 0, CONF_RELOAD,                                   \
      "Add includeSubDomains to Strict-Transport-Security")                                        \
    X(UPSTREAM_TLS, "upstream_tls", CONF_T_BOOL, CONF_BOTH, CONF_S(upstream_tls), "off", 0, 0,     \
      CONF_RELOAD, "Speak TLS to the origin servers (bridging)")                                   \
    X(UPSTREAM_TLS_CA, "upstream_tls_ca", CONF_T_STRING, CONF_BOTH, CONF_S(upstream_tls_ca), NULL, \
      0, 0, CONF_RELOAD, "CA bundle that origin certificates must chain to; default: the system's")\
    X(UPSTREAM_TLS_NAME, "upstream_tls_name", CONF_T_STRING, CONF_BOTH,                            \
      CONF_S(upstream_tls_name), NULL, 0, 0, CONF_RELOAD,                                          \
      "Name sent as SNI and verified in origin certificates; default: the origin's host")          \
    X(UPSTREAM_TLS_VERIFY, "upstream_tls_verify", CONF_T_BOOL, CONF_BOTH,                          \
      CONF_S(upstream_tls_verify), "on", 0, 0, CONF_RELOAD,                                        \
      "Verify origin certificates (off only for testing)")                                         \
    X(SITE, "site", CONF_T_SITE, CONF_CTX_GLOBAL, 0, NULL, 0, 0, CONF_RELOAD,                      \
      "Block of options for the Host names listed: exact, *.suffix or * (catch-all)")              \
    X(ORIGIN, "origin", CONF_T_ORIGINS, CONF_CTX_SITE, 0, NULL, 0, 0, CONF_RELOAD,                 \
      "Origin servers of a site, HOST:PORT ...; each site has this or origin_pool")               \
    X(ORIGIN_POOL, "origin_pool", CONF_T_STRING, CONF_CTX_SITE, CONF_S(origin_pool), NULL, 0, 0,   \
      CONF_RELOAD, "The upstream block whose servers are the site's origin (instead of origin)")
/* clang-format on */

enum conf_opt {
#define CONF_X_ENUM(id, ...) CONF_OPT_##id,
    CONF_OPTIONS(CONF_X_ENUM)
#undef CONF_X_ENUM
        CONF_OPT_COUNT
};

struct conf_option {
    const char *name;
    enum conf_type type;
    int context;
    size_t offset;
    const char *def;
    uint64_t min;
    uint64_t max;
    int reload;
    const char *help;
};

/* The table, indexed by enum conf_opt (defined in conf/conf.c). */
extern const struct conf_option conf_options[CONF_OPT_COUNT];

#endif
