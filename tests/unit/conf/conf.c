/*
 * tests/unit/conf/conf.c: the configuration module. Every option type with its units and
 * bounds, each error message with its file:line, site matching order, flags overriding the
 * file, --set, merging of global per-site defaults into sites, the unit helpers, and that the
 * README reference equals `--help-config=markdown`. Runs from the repository root (make unit).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "lib/log.h"
#include "lib/util.h"
#include "tests/unit/tap.h"

static char err[1024];

static struct config *parse(const char *text)
{
    struct config *c = NULL;
    err[0] = '\0';
    if (conf_parse_buffer("t.conf", text, strlen(text), &c, err, sizeof(err)) < 0)
        return NULL;
    return c;
}

/* The text must fail with exactly this message. */
static void parse_fails(const char *text, const char *want, const char *what)
{
    struct config *c = parse(text);
    ok(c == NULL, "%s: rejected", what);
    is_str(err, want, "%s: message", what);
    conf_free(&c);
}

#define SITE "site * {\n origin 127.0.0.1:9000\n}\n"

static void test_defaults(void)
{
    struct config *c = parse(SITE);
    ok(c != NULL, "minimal config parses: %s", err);
    if (c == NULL)
        return;
    is_int(c->action, CONF_ACTION_RUN, "action run");
    is_str(c->file, "t.conf", "file name kept");
    is_int(c->n_listen, 1, "one default listener");
    is_str(c->listen[0].text, "127.0.0.1:8080", "default listen");
    is_int(c->listen[0].port, 8080, "default listen port");
    ok(c->admin_enabled, "admin on by default");
    is_str(c->admin.text, "127.0.0.1:8081", "default admin");
    is_int(c->workers, 0, "workers 0 stays 0 in the pure parser");
    ok(c->node_name == NULL, "node_name unresolved in the pure parser");
    is_str(c->cache_dir, "/var/cache/outpost", "default cache_dir");
    is_int(c->cache_max_size, 1024LL * 1024 * 1024, "cache_max_size 1g");
    is_int(c->cache_map_size, 0, "cache_map_size auto");
    is_int(c->max_object_size, 256LL * 1024 * 1024, "max_object_size 256m");
    ok(c->cache_sync, "cache_sync on");
    is_str(c->access_log, "-", "access_log stdout");
    is_int(c->log_level, LOG_INFO, "log_level info");
    is_int(c->max_header_bytes, 32 * 1024, "max_header_bytes");
    is_int(c->max_headers, 100, "max_headers");
    is_int(c->max_uri_length, 8192, "max_uri_length");
    is_int(c->max_body_size, 64LL * 1024 * 1024, "max_body_size");
    is_int(c->max_connections, 10000, "max_connections");
    is_int(c->header_timeout_ms, 10000, "header_timeout");
    is_int(c->idle_timeout_ms, 60000, "idle_timeout");
    is_int(c->body_timeout_ms, 30000, "body_timeout");
    is_int(c->send_timeout_ms, 60000, "send_timeout");
    is_int(c->upstream_connect_timeout_ms, 5000, "upstream_connect_timeout");
    is_int(c->upstream_first_byte_timeout_ms, 30000, "upstream_first_byte_timeout");
    is_int(c->upstream_idle_timeout_ms, 60000, "upstream_idle_timeout");
    is_int(c->upstream_keepalive, 32, "upstream_keepalive");
    is_int(c->upstream_retries, 2, "upstream_retries");
    is_int(c->retry_budget_pct, 20, "retry_budget");
    is_int(c->role, CONF_ROLE_EDGE, "role edge");
    is_str(c->health_path, "/_outpost/health", "health_path");
    is_int(c->upstream_defaults.balance, CONF_BALANCE_ROUND_ROBIN, "balance round_robin");
    ok(c->upstream_defaults.health_check == NULL, "health_check off");
    is_int(c->upstream_defaults.health_status_lo, 200, "health_status lo");
    is_int(c->upstream_defaults.health_status_hi, 399, "health_status hi");
    is_int(c->upstream_defaults.passive_failures, 5, "passive_failures");
    is_int(c->upstream_defaults.passive_cooldown_ms, 10000, "passive_cooldown");
    ok(c->site_defaults.shield_fallback_origin, "shield_fallback_origin on");
    ok(c->site_defaults.shields == NULL, "no shields");
    ok(!c->debug_api, "debug_api off");
    is_int(c->defaults.default_ttl, 0, "default_ttl 0");
    is_int(c->defaults.max_ttl, 0, "max_ttl 0");
    is_int(c->defaults.heuristic_max, 86400, "heuristic_max 1d in seconds");
    is_int(c->defaults.stale_while_revalidate, 0, "swr 0");
    is_int(c->defaults.stale_if_error, 0, "sie 0");
    ok(!c->defaults.ignore_cdn_cache_control, "cdn_cache_control on");
    ok(!c->defaults.cache_authorized, "cache_authorized off");
    is_int(c->n_sites, 1, "one site");
    is_str(c->sites[0].names[0], "*", "catch-all name");
    is_int(c->sites[0].line, 1, "site line");
    is_str(c->sites[0].origins[0].text, "127.0.0.1:9000", "origin");
    is_int(c->sites[0].policy.heuristic_max, 86400, "defaults merged into the site");
    conf_free(&c);
    ok(c == NULL, "conf_free clears the pointer");
    c = parse("\xef\xbb\xbf" SITE "workers 3");
    ok(c != NULL && c->workers == 3, "byte order mark skipped, last line without newline");
    conf_free(&c);
}

static void test_every_option(void)
{
    const char *text = "# every global option\n"
                       "listen 0.0.0.0:80 [::1]:8080\n"
                       "listen localhost:81   # a comment\n"
                       "admin off\n"
                       "workers 4\n"
                       "node_name \"edge \\\"one\\\" \\\\ a\"\n"
                       "cache_dir /tmp/c\n"
                       "cache_max_size 10G\n"
                       "cache_map_size 20gb\n"
                       "max_object_size 1024K\n"
                       "cache_sync off\n"
                       "access_log off\n"
                       "log_level debug\n"
                       "max_header_bytes 1m\n"
                       "max_headers 1000\n"
                       "max_uri_length 256\n"
                       "max_body_size 0\n"
                       "max_connections 1\n"
                       "header_timeout 1ms\n"
                       "idle_timeout 2m\n"
                       "body_timeout 1h\n"
                       "send_timeout 1d\n"
                       "upstream_connect_timeout 250ms\n"
                       "upstream_first_byte_timeout 45\n"
                       "upstream_idle_timeout 5s\n"
                       "upstream_keepalive 0\n"
                       "upstream_retries 5\n"
                       "debug_api on\n"
                       "default_ttl 5m\n"
                       "max_ttl 1d\n"
                       "heuristic_max 2h\n"
                       "stale_while_revalidate 30\n"
                       "stale_if_error 1m\n"
                       "cdn_cache_control off\n"
                       "cache_authorized on\n"
                       "\tsite Example.COM www.example.com {\r\n"
                       "    origin 10.0.0.5:80 10.0.0.6:80\r\n"
                       "    origin [2001:db8::1]:8080\n"
                       "}\n";
    struct config *c = parse(text);
    ok(c != NULL, "every option parses: %s", err);
    if (c == NULL)
        return;
    is_int(c->n_listen, 3, "three listeners over two lines");
    is_str(c->listen[0].text, "0.0.0.0:80", "listen v4");
    is_str(c->listen[1].host, "::1", "v6 host without brackets");
    is_str(c->listen[1].text, "[::1]:8080", "v6 text with brackets");
    is_str(c->listen[2].text, "localhost:81", "listen name, comment ignored");
    ok(!c->admin_enabled, "admin off");
    is_int(c->workers, 4, "workers");
    is_str(c->node_name, "edge \"one\" \\ a", "quoted string with escapes");
    is_str(c->cache_dir, "/tmp/c", "cache_dir");
    is_int(c->cache_max_size, 10LL << 30, "10G");
    is_int(c->cache_map_size, 20LL << 30, "20gb");
    is_int(c->max_object_size, 1LL << 20, "1024K");
    ok(!c->cache_sync, "cache_sync off");
    ok(c->access_log == NULL, "access_log off is NULL");
    is_int(c->log_level, LOG_DEBUG, "log_level debug");
    is_int(c->max_header_bytes, 1 << 20, "max_header_bytes 1m");
    is_int(c->max_headers, 1000, "max_headers");
    is_int(c->max_uri_length, 256, "max_uri_length at min");
    is_int(c->max_body_size, 0, "max_body_size 0");
    is_int(c->max_connections, 1, "max_connections");
    is_int(c->header_timeout_ms, 1, "1ms");
    is_int(c->idle_timeout_ms, 120000, "2m");
    is_int(c->body_timeout_ms, 3600000, "1h");
    is_int(c->send_timeout_ms, 86400000, "1d");
    is_int(c->upstream_connect_timeout_ms, 250, "250ms");
    is_int(c->upstream_first_byte_timeout_ms, 45000, "bare number is seconds");
    is_int(c->upstream_idle_timeout_ms, 5000, "5s");
    is_int(c->upstream_keepalive, 0, "keepalive 0");
    is_int(c->upstream_retries, 5, "retries 5");
    ok(c->debug_api, "debug_api on");
    is_int(c->defaults.default_ttl, 300, "default_ttl in seconds");
    is_int(c->defaults.max_ttl, 86400, "max_ttl");
    is_int(c->defaults.heuristic_max, 7200, "heuristic_max");
    is_int(c->defaults.stale_while_revalidate, 30, "swr");
    is_int(c->defaults.stale_if_error, 60, "sie");
    ok(c->defaults.ignore_cdn_cache_control, "cdn_cache_control off inverts");
    ok(c->defaults.cache_authorized, "cache_authorized");
    is_int(c->n_sites, 1, "one site");
    is_int(c->sites[0].n_names, 2, "two names");
    is_str(c->sites[0].names[0], "example.com", "names lower-cased");
    is_int(c->sites[0].line, 36, "site line");
    is_int(c->sites[0].n_origins, 3, "origins over two lines");
    is_str(c->sites[0].origins[2].text, "[2001:db8::1]:8080", "v6 origin");
    is_int(c->sites[0].policy.default_ttl, 300, "site inherits default_ttl");
    ok(c->sites[0].policy.ignore_cdn_cache_control, "site inherits cdn_cache_control off");
    conf_free(&c);
}

static void test_merge(void)
{
    const char *text = "site a.example {\n"
                       "  origin o:1\n"
                       "  default_ttl 10s\n"
                       "  cdn_cache_control off\n"
                       "}\n"
                       "site b.example {\n"
                       "  origin o:2\n"
                       "}\n"
                       "default_ttl 7m   # after the sites: still the default of b\n"
                       "stale_if_error 9\n";
    struct config *c = parse(text);
    ok(c != NULL, "merge config parses: %s", err);
    if (c == NULL)
        return;
    is_int(c->sites[0].policy.default_ttl, 10, "site value wins");
    ok(c->sites[0].policy.ignore_cdn_cache_control, "site bool kept");
    is_int(c->sites[0].policy.stale_if_error, 9, "unset site value takes a later global");
    is_int(c->sites[1].policy.default_ttl, 420, "other site gets the global default");
    ok(!c->sites[1].policy.ignore_cdn_cache_control, "other site keeps table default");
    is_int(c->sites[1].policy.heuristic_max, 86400, "table default reaches the site");
    conf_free(&c);
}

static void test_units(void)
{
    uint64_t b = 0;
    int64_t ms = 0;
    ok(conf_size_parse(STR_LIT("0"), &b) == 0 && b == 0, "size 0");
    ok(conf_size_parse(STR_LIT("512"), &b) == 0 && b == 512, "size bare");
    ok(conf_size_parse(STR_LIT("512B"), &b) == 0 && b == 512, "size B");
    ok(conf_size_parse(STR_LIT("64k"), &b) == 0 && b == 65536, "size k");
    ok(conf_size_parse(STR_LIT("64KB"), &b) == 0 && b == 65536, "size KB");
    ok(conf_size_parse(STR_LIT("3M"), &b) == 0 && b == 3 << 20, "size M");
    ok(conf_size_parse(STR_LIT("2g"), &b) == 0 && b == 2ULL << 30, "size g");
    is_int(conf_size_parse(STR_LIT("1.5g"), &b), OP_EINVAL, "no fractions");
    is_int(conf_size_parse(STR_LIT("g"), &b), OP_EINVAL, "no digits");
    is_int(conf_size_parse(STR_LIT("-1"), &b), OP_EINVAL, "no sign");
    is_int(conf_size_parse(STR_LIT("1t"), &b), OP_EINVAL, "unknown unit");
    is_int(conf_size_parse(STR_LIT("1kk"), &b), OP_EINVAL, "two units");
    is_int(conf_size_parse(STR_LIT("17179869184g"), &b), OP_ETOOBIG, "size overflow by unit");
    is_int(conf_size_parse(STR_LIT("99999999999999999999"), &b), OP_ETOOBIG,
           "size overflow by digits");
    ok(conf_size_parse(STR_LIT("18446744073709551615"), &b) == 0 && b == UINT64_MAX, "size max");
    ok(conf_duration_parse(STR_LIT("0"), &ms) == 0 && ms == 0, "duration 0");
    ok(conf_duration_parse(STR_LIT("7"), &ms) == 0 && ms == 7000, "bare seconds");
    ok(conf_duration_parse(STR_LIT("7s"), &ms) == 0 && ms == 7000, "s");
    ok(conf_duration_parse(STR_LIT("7ms"), &ms) == 0 && ms == 7, "ms");
    ok(conf_duration_parse(STR_LIT("7m"), &ms) == 0 && ms == 420000, "m");
    ok(conf_duration_parse(STR_LIT("7h"), &ms) == 0 && ms == 25200000, "h");
    ok(conf_duration_parse(STR_LIT("7d"), &ms) == 0 && ms == 604800000, "d");
    is_int(conf_duration_parse(STR_LIT("7S"), &ms), OP_EINVAL, "units are lower case");
    is_int(conf_duration_parse(STR_LIT("7w"), &ms), OP_EINVAL, "unknown unit");
    is_int(conf_duration_parse(STR_LIT("1h30m"), &ms), OP_EINVAL, "no compound");
    is_int(conf_duration_parse(STR_LIT(""), &ms), OP_EINVAL, "empty");
    is_int(conf_duration_parse(STR_LIT("106751991167301d"), &ms), OP_ETOOBIG, "duration overflow");
    char out[32];
    conf_size_format(1ULL << 30, out, sizeof(out));
    is_str(out, "1g", "format 1g");
    conf_size_format(1536 * 1024, out, sizeof(out));
    is_str(out, "1536k", "format 1536k");
    conf_size_format(1000, out, sizeof(out));
    is_str(out, "1000", "format bytes");
    conf_duration_format(86400000, out, sizeof(out));
    is_str(out, "1d", "format 1d");
    conf_duration_format(90000, out, sizeof(out));
    is_str(out, "90s", "format 90s");
    conf_duration_format(1500, out, sizeof(out));
    is_str(out, "1500ms", "format 1500ms");
}

static void test_errors(void)
{
    parse_fails("listne 1.2.3.4:80\n" SITE,
                "t.conf:1: listne: unknown directive (did you mean 'listen'?)", "typo suggests");
    parse_fails("\n\nfrobnicate yes\n" SITE, "t.conf:3: frobnicate: unknown directive",
                "unknown without suggestion");
    parse_fails("workers\n" SITE, "t.conf:1: workers: missing argument", "missing argument");
    parse_fails("workers 1 2\n" SITE,
                "t.conf:1: workers: takes one argument, got 2 (quote an argument that has spaces)",
                "extra argument");
    parse_fails("workers 257\n" SITE, "t.conf:1: workers: 257 is above the maximum of 256",
                "int max");
    parse_fails("workers two\n" SITE, "t.conf:1: workers: expected a whole number, got 'two'",
                "int syntax");
    parse_fails("workers -1\n" SITE, "t.conf:1: workers: expected a whole number, got '-1'",
                "int sign");
    parse_fails("max_headers 0\n" SITE, "t.conf:1: max_headers: 0 is below the minimum of 1",
                "int min");
    parse_fails("max_connections 99999999999999999999999\n" SITE,
                "t.conf:1: max_connections: 99999999999999999999999 is too large", "int overflow");
    parse_fails("cache_max_size 512k\n" SITE,
                "t.conf:1: cache_max_size: 512k is below the minimum of 1m", "size min");
    parse_fails("max_header_bytes 2m\n" SITE,
                "t.conf:1: max_header_bytes: 2m is above the maximum of 1m", "size max");
    parse_fails("max_uri_length 255\n" SITE,
                "t.conf:1: max_uri_length: 255 is below the minimum of 256", "size min bytes");
    parse_fails("cache_max_size 10x\n" SITE,
                "t.conf:1: cache_max_size: expected a size such as 512, 64k, 256m or 1g, got "
                "'10x'",
                "size syntax");
    parse_fails("cache_max_size 99999999999g\n" SITE,
                "t.conf:1: cache_max_size: 99999999999g is too large", "size overflow");
    parse_fails("idle_timeout soon\n" SITE,
                "t.conf:1: idle_timeout: expected a duration such as 500ms, 30s, 5m, 1h or 1d, "
                "got 'soon'",
                "duration syntax");
    parse_fails("idle_timeout 0\n" SITE, "t.conf:1: idle_timeout: 0 is below the minimum of 1ms",
                "duration min");
    parse_fails("idle_timeout 2d\n" SITE, "t.conf:1: idle_timeout: 2d is above the maximum of 1d",
                "duration max");
    parse_fails("idle_timeout 9999999999999999d\n" SITE,
                "t.conf:1: idle_timeout: 9999999999999999d is too large", "duration overflow");
    parse_fails("default_ttl 1500ms\n" SITE,
                "t.conf:1: default_ttl: 1500ms is not a whole number of seconds",
                "seconds precision");
    parse_fails("max_ttl 366d\n" SITE, "t.conf:1: max_ttl: 366d is above the maximum of 365d",
                "site duration max");
    parse_fails("cache_sync yes\n" SITE, "t.conf:1: cache_sync: expected on or off, got 'yes'",
                "bool");
    parse_fails("log_level loud\n" SITE,
                "t.conf:1: log_level: expected error, warn, info or debug, got 'loud'", "level");
    parse_fails("cache_dir \"\"\n" SITE, "t.conf:1: cache_dir: must not be empty", "empty string");
    parse_fails("listen 1.2.3.4\n" SITE,
                "t.conf:1: listen: '1.2.3.4': missing :PORT (expected HOST:PORT)", "addr no port");
    parse_fails("listen 1.2.3.4:0\n" SITE,
                "t.conf:1: listen: '1.2.3.4:0': the port must be a number from 1 to 65535",
                "addr port 0");
    parse_fails("listen 1.2.3.4:65536\n" SITE,
                "t.conf:1: listen: '1.2.3.4:65536': the port must be a number from 1 to 65535",
                "addr port too big");
    parse_fails("listen ::1:80\n" SITE,
                "t.conf:1: listen: '::1:80': an IPv6 address needs brackets, as in [::1]:8080",
                "v6 without brackets");
    parse_fails("listen [::1:80\n" SITE,
                "t.conf:1: listen: '[::1:80': missing ']' after an IPv6 address", "v6 bracket");
    parse_fails("listen :80\n" SITE, "t.conf:1: listen: ':80': missing host (expected HOST:PORT)",
                "addr no host");
    parse_fails("admin nowhere\n" SITE,
                "t.conf:1: admin: 'nowhere': missing :PORT (expected HOST:PORT), or off",
                "admin bad");
    parse_fails("workers 2\nworkers 3\n" SITE,
                "t.conf:2: workers: duplicate directive (already set at line 1)", "duplicate");
    parse_fails("site a {\n origin o:1\n default_ttl 1\n default_ttl 2\n}\n",
                "t.conf:4: default_ttl: duplicate directive (already set at line 3)",
                "duplicate in a site");
    parse_fails(
        "site a {\n default_ttl 1\n}\n",
        "t.conf:1: site: no origin in the site block (add: origin HOST:PORT, or origin_pool NAME)",
        "site without origin");
    parse_fails("site a {\n origin\n}\n", "t.conf:2: origin: missing argument (HOST:PORT)",
                "origin without address");
    parse_fails("site a {\n origin http://o:1\n}\n",
                "t.conf:2: origin: 'http://o:1': expected HOST:PORT, not a URL",
                "origin URL in the file");
    parse_fails("# x\nsite a {\n origin o:1\n",
                "t.conf:2: site: block not closed: missing '}' "
                "before the end of the file",
                "unterminated block");
    parse_fails(SITE "}\n", "t.conf:4: }: unexpected '}': no block is open", "stray brace");
    parse_fails("site a {\n origin o:1 }\n", "t.conf:2: origin: '}' must be on a line of its own",
                "brace after args");
    parse_fails("site a {\n origin o:1\n} x\n", "t.conf:3: }: '}' must be on a line of its own",
                "tokens after brace");
    parse_fails("site a { origin o:1\n}\n", "t.conf:1: site: '{' must end the line",
                "brace not last");
    parse_fails("site a\n", "t.conf:1: site: expected '{' at the end of the line",
                "site without brace");
    parse_fails("site {\n}\n", "t.conf:1: site: missing site name (a host name, *.suffix or *)",
                "site without name");
    parse_fails("workers 2 {\n",
                "t.conf:1: workers: unexpected '{': only a site or upstream line opens a block",
                "brace on a directive");
    parse_fails("{\n", "t.conf:1: {: '{' must follow a site or upstream line", "lone brace");
    parse_fails("node_name \"abc\n" SITE,
                "t.conf:1: node_name: unterminated quoted string (a closing '\"' is missing)",
                "unterminated quote");
    parse_fails("node_name \"a\\nb\"\n" SITE,
                "t.conf:1: node_name: invalid escape in a quoted string (only \\\" and \\\\)",
                "bad escape");
    parse_fails("node_name ab\"c\"\n" SITE,
                "t.conf:1: node_name: unexpected '\"' inside an argument (quote the whole "
                "argument)",
                "quote inside");
    parse_fails("node_name \"ab\"c\n" SITE,
                "t.conf:1: node_name: expected a space after a closing '\"'", "after quote");
    parse_fails("site a {\n workers 2\n origin o:1\n}\n",
                "t.conf:2: workers: not allowed inside a site block", "global directive in a site");
    parse_fails("origin o:1\n" SITE, "t.conf:1: origin: only allowed inside a site block",
                "site directive at global level");
    parse_fails("site a {\n site b {\n",
                "t.conf:2: site: blocks do not nest (the site block at line 1 is not closed)",
                "nested site");
    parse_fails("site a.example {\n origin o:1\n}\nsite b.example A.example {\n origin o:1\n}\n",
                "t.conf:4: site: duplicate site name 'A.example' (already used by the site at "
                "line 1)",
                "duplicate site name, case-insensitive");
    parse_fails("site a a {\n origin o:1\n}\n", "t.conf:1: site: site name 'a' is listed twice",
                "name listed twice");
    parse_fails("site a:80 {\n origin o:1\n}\n",
                "t.conf:1: site: site name 'a:80' must not contain a port (sites match the Host "
                "without its port)",
                "site name with port");
    parse_fails("site a.*.com {\n origin o:1\n}\n",
                "t.conf:1: site: site name 'a.*.com' may use '*' only as \"*\" or as a leading "
                "\"*.\"",
                "bad wildcard");
    parse_fails("site a..b {\n origin o:1\n}\n",
                "t.conf:1: site: site name 'a..b' has an empty label", "empty label");
    parse_fails("workers 2\n",
                "t.conf: no site to serve (add a block: site NAME { origin HOST:PORT })",
                "no site");
    parse_fails("", "t.conf: no site to serve (add a block: site NAME { origin HOST:PORT })",
                "empty file");
    static const char nul[] = "workers 2\0\n";
    struct config *c = NULL;
    ok(conf_parse_buffer("t.conf", nul, sizeof(nul) - 1, &c, err, sizeof(err)) < 0 && c == NULL,
       "NUL byte rejected");
    is_str(err, "t.conf:1: workers: NUL byte in the file", "NUL message");
    /* A tiny error buffer truncates but stays a C string. */
    char small[8];
    ok(conf_parse_buffer("t.conf", "x\n", 2, &c, small, sizeof(small)) < 0, "small err buffer");
    is_int(strlen(small), 7, "truncated message");
}

static void test_site_find(void)
{
    const char *text = "site example.com www.example.com {\n origin o:1\n}\n"
                       "site *.example.com {\n origin o:2\n}\n"
                       "site *.img.example.com {\n origin o:3\n}\n"
                       "site * {\n origin o:4\n}\n"
                       "site [::1] {\n origin o:5\n}\n";
    struct config *c = parse(text);
    ok(c != NULL, "sites parse: %s", err);
    if (c == NULL)
        return;
    const struct conf_site *s;
#define FIND(h) conf_site_find(c, STR_LIT(h))
    ok((s = FIND("example.com")) == &c->sites[0], "exact");
    ok((s = FIND("WWW.Example.COM:8080")) == &c->sites[0], "exact, case and port ignored");
    ok((s = FIND("example.com.")) == &c->sites[0], "trailing dot ignored");
    ok((s = FIND("a.example.com")) == &c->sites[1], "wildcard");
    ok((s = FIND("x.y.example.com")) == &c->sites[1], "wildcard, deeper name");
    ok((s = FIND("a.img.example.com")) == &c->sites[2], "longest wildcard wins");
    ok((s = FIND("img.example.com")) == &c->sites[1], "a wildcard does not match its own suffix");
    ok((s = FIND("notexample.com")) == &c->sites[3], "suffix must start at a dot");
    ok((s = FIND("other.org")) == &c->sites[3], "catch-all");
    ok((s = FIND("")) == &c->sites[3], "empty Host gets the catch-all");
    ok((s = FIND("[::1]:8080")) == &c->sites[4], "IPv6 literal host");
    conf_free(&c);
    c = parse("site a.example {\n origin o:1\n}\n");
    ok(c != NULL && conf_site_find(c, STR_LIT("b.example")) == NULL, "no site: NULL");
    conf_free(&c);
#undef FIND
}

static char conf_path[64];

static void conf_write(const char *text)
{
    snprintf(conf_path, sizeof(conf_path), "/tmp/outpost-conf-test-XXXXXX");
    int fd = mkstemp(conf_path);
    ok(fd >= 0, "temp file");
    ok(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "temp file written");
    close(fd);
}

static int load(struct config **c, const char *const *args)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "outpostd";
    for (; *args != NULL; args++)
        argv[argc++] = (char *)*args;
    argv[argc] = NULL;
    err[0] = '\0';
    *c = NULL;
    return conf_load(argc, argv, c, err, sizeof(err));
}

#define LOAD(c, ...) load(c, (const char *const[]){__VA_ARGS__, NULL})

static void load_fails(const char *want, const char *what, const char *const *args)
{
    struct config *c;
    ok(load(&c, args) < 0 && c == NULL, "%s: rejected", what);
    is_str(err, want, "%s: message", what);
}

#define LOAD_FAILS(want, what, ...) load_fails(want, what, (const char *const[]){__VA_ARGS__, NULL})

static void test_flags(void)
{
    struct config *c;
    ok(LOAD(&c, "--listen", "127.0.0.1:18080", "--origin", "http://127.0.0.1:9000") == 0,
       "quick start: %s", err);
    if (c != NULL) {
        ok(c->file == NULL, "no file");
        is_int(c->n_listen, 1, "one listener");
        is_str(c->listen[0].text, "127.0.0.1:18080", "--listen");
        is_int(c->n_sites, 1, "one site");
        is_str(c->sites[0].names[0], "*", "--origin is a catch-all");
        is_str(c->sites[0].origins[0].text, "127.0.0.1:9000", "--origin address");
        ok(c->workers >= 1, "workers resolved at load (%u)", c->workers);
        ok(c->node_name != NULL && c->node_name[0] != '\0', "node_name resolved at load");
        is_int(c->sites[0].policy.heuristic_max, 86400, "defaults merged into --origin site");
        conf_free(&c);
    }
    ok(LOAD(&c, "--origin=http://[::1]:9000/", "--listen=[::]:80", "--listen", "1.2.3.4:81",
            "--workers=3", "--admin", "off", "--cache-dir", "/tmp/x", "-t") == 0,
       "flag=value forms: %s", err);
    if (c != NULL) {
        is_int(c->action, CONF_ACTION_CHECK, "-t is check");
        is_str(c->sites[0].origins[0].text, "[::1]:9000", "v6 origin, trailing slash");
        is_int(c->n_listen, 2, "--listen repeatable");
        is_str(c->listen[1].text, "1.2.3.4:81", "second listener");
        is_int(c->workers, 3, "--workers");
        ok(!c->admin_enabled, "--admin off");
        is_str(c->cache_dir, "/tmp/x", "--cache-dir");
        conf_free(&c);
    }
    ok(LOAD(&c, "--origin", "http://origin.test") == 0, "origin without port: %s", err);
    if (c != NULL) {
        is_str(c->sites[0].origins[0].text, "origin.test:80", "default port 80");
        conf_free(&c);
    }

    conf_write("listen 10.0.0.1:80\n"
               "listen 10.0.0.2:80\n"
               "workers 2\n"
               "max_headers 50\n"
               "default_ttl 1m\n"
               "site example.com {\n  origin o:1\n}\n"
               "site * {\n  origin o:2\n}\n");
    ok(LOAD(&c, "--workers", "5", "-c", conf_path, "--listen", "127.0.0.1:1", "--set",
            "max_headers=60", "--set", "default_ttl=2m", "--origin", "http://127.0.0.1:3",
            "--origin", "http://127.0.0.1:4") == 0,
       "file and flags: %s", err);
    if (c != NULL) {
        is_str(c->file, conf_path, "file kept");
        is_int(c->workers, 5, "flag before -c still overrides the file");
        is_int(c->n_listen, 1, "--listen replaces the file's listeners");
        is_str(c->listen[0].text, "127.0.0.1:1", "flag listener");
        is_int(c->max_headers, 60, "--set overrides a file value");
        is_int(c->defaults.default_ttl, 120, "--set of a per-site default");
        is_int(c->sites[0].policy.default_ttl, 120, "--set default reaches the sites");
        is_int(c->n_sites, 2, "--origin replaces the catch-all of the file");
        is_int(c->sites[1].n_origins, 2, "--origin repeatable");
        is_str(c->sites[1].origins[0].text, "127.0.0.1:3", "first --origin");
        conf_free(&c);
    }
    ok(LOAD(&c, "-c", conf_path) == 0, "file alone: %s", err);
    if (c != NULL) {
        is_int(c->workers, 2, "file workers");
        is_int(c->n_listen, 2, "file listeners");
        conf_free(&c);
    }
    ok(LOAD(&c, "-c", conf_path, "--set", "listen=127.0.0.1:7 \"127.0.0.1:8\"") == 0,
       "--set listen with two addresses: %s", err);
    if (c != NULL) {
        is_int(c->n_listen, 2, "--set listen replaces");
        is_str(c->listen[1].text, "127.0.0.1:8", "quoted --set argument");
        conf_free(&c);
    }
    unlink(conf_path);

    conf_write("workers 2\nworkers 300\n");
    char want[256];
    snprintf(want, sizeof(want), "%s:2: workers: duplicate directive (already set at line 1)",
             conf_path);
    LOAD_FAILS(want, "file error names the file and line", "-c", conf_path, "--origin",
               "http://o:1");
    unlink(conf_path);
    LOAD_FAILS("/nonexistent/outpost.conf: cannot open: No such file or directory", "missing file",
               "-c", "/nonexistent/outpost.conf");
    LOAD_FAILS("/tmp: cannot read: is a directory", "directory", "-c", "/tmp");
    LOAD_FAILS("command line: no site to serve: give -c FILE or --origin http://HOST:PORT",
               "nothing to serve", "--listen", "127.0.0.1:1");
    LOAD_FAILS("command line: --origin: 'ftp://o': expected http://HOST:PORT or https://HOST:PORT",
               "ftp origin", "--origin", "ftp://o");
    LOAD_FAILS("command line: --origin: 'http://o:1/app': only http(s)://HOST:PORT is supported "
               "(no path or user)",
               "origin path", "--origin", "http://o:1/app");
    LOAD_FAILS("command line: --origin: 'http://o:99999': the port must be a number from 1 to "
               "65535",
               "origin port", "--origin", "http://o:99999");
    LOAD_FAILS("command line: --listen: missing value", "missing value", "--listen");
    LOAD_FAILS("command line: --workers: 999 is above the maximum of 256", "flag bound",
               "--workers", "999", "--origin", "http://o:1");
    LOAD_FAILS("command line: --listen: 'x': missing :PORT (expected HOST:PORT)", "flag address",
               "--listen", "x", "--origin", "http://o:1");
    LOAD_FAILS("command line: --bogus: unknown flag (see --help)", "unknown flag", "--bogus");
    LOAD_FAILS("command line: stray: unexpected argument (the config file goes after -c)",
               "positional", "stray");
    LOAD_FAILS("command line: -c: given twice", "two files", "-c", "a", "-c", "b");
    LOAD_FAILS("command line: --set: 'workers': expected NAME=VALUE", "--set without =", "--set",
               "workers");
    LOAD_FAILS("command line: --set wrokers: unknown option (did you mean 'workers'?)",
               "--set typo", "--set", "wrokers=2");
    LOAD_FAILS("command line: --set origin: not a global option (sites are configured in the "
               "file)",
               "--set site option", "--set", "origin=o:1");
    LOAD_FAILS("command line: --set max_headers: missing argument", "--set empty", "--set",
               "max_headers=", "--origin", "http://o:1");
    LOAD_FAILS("command line: --set cache_sync: expected on or off, got 'maybe'", "--set bad",
               "--set", "cache_sync=maybe", "--origin", "http://o:1");
    LOAD_FAILS("command line: --help-config: 'html': the only format is markdown", "help format",
               "--help-config=html");

    ok(LOAD(&c, "--help-config=markdown", "-c", "/nonexistent") == 0 &&
           c->action == CONF_ACTION_HELP_CONFIG_MD,
       "help-config=markdown does not read the file");
    conf_free(&c);
    ok(LOAD(&c, "--help-config") == 0 && c->action == CONF_ACTION_HELP_CONFIG, "help-config");
    conf_free(&c);
    ok(LOAD(&c, "--version") == 0 && c->action == CONF_ACTION_VERSION, "version");
    conf_free(&c);
    ok(LOAD(&c, "--help", "--version") == 0 && c->action == CONF_ACTION_HELP, "help wins");
    conf_free(&c);
}

/* Text between the README markers must be exactly `--help-config=markdown`. */
static void test_readme(void)
{
    FILE *f = fopen("README.md", "r");
    ok(f != NULL, "README.md readable (run from the repository root)");
    if (f == NULL)
        return;
    char *readme = NULL;
    size_t n = 0;
    ssize_t got = getdelim(&readme, &n, '\0', f);
    fclose(f);
    ok(got > 0, "README read");
    const char *start_mark = "<!-- config-reference:start -->\n";
    char *start = strstr(readme, start_mark);
    char *end = strstr(readme, "<!-- config-reference:end -->");
    ok(start != NULL && end != NULL && end > start, "markers present");
    if (start != NULL && end != NULL && end > start) {
        start += strlen(start_mark);
        char *gen = NULL;
        size_t genlen = 0;
        FILE *m = open_memstream(&gen, &genlen);
        conf_help_print(m, true);
        fclose(m);
        ok((size_t)(end - start) == genlen && memcmp(start, gen, genlen) == 0,
           "README reference equals --help-config=markdown (run scripts/gen-config-doc.sh)");
        free(gen);
    }
    free(readme);

    char *txt = NULL;
    size_t txtlen = 0;
    FILE *m = open_memstream(&txt, &txtlen);
    conf_help_print(m, false);
    conf_usage_print(m);
    fclose(m);
    ok(strstr(txt, "upstream_first_byte_timeout") != NULL && strstr(txt, "1m..16384g") != NULL,
       "text reference lists options with bounds");
    ok(strstr(txt, "--set NAME=VALUE") != NULL, "usage lists --set");
    free(txt);
}

/* TLS, HTTP/2 and passthrough options (issue 4). */
static void test_tls(void)
{
    struct config *c = parse("tls_listen 127.0.0.1:8443 [::1]:8443\n"
                             "tls_certificate /d/cert.pem\n"
                             "tls_certificate_key /d/key.pem\n"
                             "tls_min_version 1.3\n"
                             "hsts_max_age 1d\n"
                             "passthrough_listen 127.0.0.1:9443\n"
                             "passthrough a.example 127.0.0.1:10443\n"
                             "passthrough *.B.example 127.0.0.1:10444\n"
                             "h2_max_concurrent_streams 10\n"
                             "site a.example {\n origin 127.0.0.1:9000\n"
                             " tls_certificate /a/cert.pem\n tls_certificate_key /a/key.pem\n"
                             " upstream_tls on\n upstream_tls_name origin.a.example\n}\n"
                             "site * {\n origin 127.0.0.1:9001\n hsts_max_age 0\n}\n");
    ok(c != NULL, "tls config parses: %s", err);
    if (c == NULL)
        return;
    is_int(c->n_listen, 0, "no default plain listener when tls_listen is given");
    is_int(c->n_tls_listen, 2, "two tls listeners");
    is_str(c->tls_listen[1].text, "[::1]:8443", "v6 tls listener");
    is_str(c->tls_min_version, "1.3", "tls_min_version");
    is_str(c->site_defaults.tls_certificate, "/d/cert.pem", "default certificate");
    is_str(c->sites[0].opts.tls_certificate, "/a/cert.pem", "site certificate");
    is_str(c->sites[1].opts.tls_certificate, "/d/cert.pem", "site inherits the certificate");
    ok(c->sites[0].opts.upstream_tls && c->sites[0].opts.upstream_tls_verify, "upstream_tls");
    is_str(c->sites[0].opts.upstream_tls_name, "origin.a.example", "upstream_tls_name");
    ok(!c->sites[1].opts.upstream_tls, "upstream_tls off by default");
    is_int(c->sites[0].opts.hsts_max_age, 86400, "hsts inherited, in seconds");
    is_int(c->sites[1].opts.hsts_max_age, 0, "hsts overridden");
    is_int(c->n_passthrough, 2, "two passthrough routes");
    is_str(c->passthrough[1].name, "*.b.example", "route name lower-cased");
    is_str(c->passthrough[1].to.text, "127.0.0.1:10444", "route target");
    is_int(c->n_passthrough_listen, 1, "passthrough listener");
    is_int(c->h2_max_concurrent_streams, 10, "h2_max_concurrent_streams");
    ok(c->http2 && c->h2c && c->tls_session_tickets, "h2, h2c and tickets on by default");
    is_int(c->h2_stream_window, 256 * 1024, "h2_stream_window default");
    conf_free(&c);

    parse_fails("tls_listen 127.0.0.1:8443\n" SITE,
                "t.conf:1: tls_listen: needs a default certificate: set tls_certificate and "
                "tls_certificate_key (or --cert and --key)",
                "tls_listen without a certificate");
    parse_fails("tls_certificate /c.pem\n" SITE,
                "t.conf:1: tls_certificate: tls_certificate and tls_certificate_key go together "
                "(or --cert and --key)",
                "certificate without key");
    parse_fails("listen 127.0.0.1:8080\ntls_listen 127.0.0.1:8080\ntls_certificate /c\n"
                "tls_certificate_key /k\n" SITE,
                "t.conf:2: tls_listen: 127.0.0.1:8080 is already used by listen",
                "one address for two listeners");
    parse_fails("h3_listen 127.0.0.1:8443\n" SITE,
                "t.conf:1: h3_listen: needs a default certificate: set tls_certificate and "
                "tls_certificate_key (or --cert and --key)",
                "h3_listen without a certificate");
    parse_fails("tls_certificate /c\ntls_certificate_key /k\nh3_listen 127.0.0.1:8443\n"
                "h3_listen 127.0.0.1:8443\n" SITE,
                "t.conf:3: h3_listen: 127.0.0.1:8443 is already used by h3_listen",
                "one UDP address twice");
    c = parse("tls_certificate /c\ntls_certificate_key /k\ntls_listen 127.0.0.1:8443\n"
              "h3_listen 127.0.0.1:8443 [::1]:8443\nh3_retry on\nalt_svc_max_age 1h\n"
              "h3_max_concurrent_streams 50\n" SITE);
    ok(c != NULL, "HTTP/3 on the port number of a TLS listener (UDP and TCP are apart)");
    if (c) {
        is_int(c->n_h3_listen, 2, "two h3 listeners");
        is_int(c->h3_listen[1].port, 8443, "v6 h3 listener port");
        ok(c->h3_retry, "h3_retry on");
        is_int(c->alt_svc_max_age_ms, 3600000, "alt_svc_max_age in ms");
        is_int(c->h3_max_concurrent_streams, 50, "h3_max_concurrent_streams");
        ok(c->sites[0].opts.alt_svc, "alt_svc defaults to on in sites");
        is_int(c->h3_retry_under_load, 100, "h3_retry_under_load default");
    }
    conf_free(&c);
    parse_fails("admin 127.0.0.1:9\npassthrough_listen 127.0.0.1:9\n" SITE,
                "t.conf:1: admin: 127.0.0.1:9 is already used by passthrough_listen",
                "admin on a listener's address");
    parse_fails("tls_min_version 1.1\n" SITE,
                "t.conf:1: tls_min_version: expected 1.2 or 1.3, "
                "got '1.1'",
                "old tls version");
    parse_fails("passthrough a.example\n" SITE,
                "t.conf:1: passthrough: expected NAME HOST:PORT, got 1 argument(s)",
                "passthrough arity");
    parse_fails("passthrough a/b 127.0.0.1:1\n" SITE,
                "t.conf:1: passthrough: 'a/b': bad server name", "passthrough name");
    parse_fails("site a {\n origin 127.0.0.1:1\n tls_certificate_key /k.pem\n}\n",
                "t.conf:1: site: tls_certificate and tls_certificate_key go together",
                "site key without certificate");

    ok(LOAD(&c, "--origin", "https://o.example", "--tls-listen", "127.0.0.1:8443", "--cert",
            "/c.pem", "--key", "/k.pem") == 0,
       "quick-start tls flags: %s", err);
    if (c != NULL) {
        is_str(c->tls_listen[0].text, "127.0.0.1:8443", "--tls-listen");
        is_str(c->site_defaults.tls_certificate_key, "/k.pem", "--key");
        is_str(c->sites[0].origins[0].text, "o.example:443", "https origin port 443");
        ok(c->sites[0].opts.upstream_tls, "https origin bridges");
        is_str(c->sites[0].opts.tls_certificate, "/c.pem", "catch-all site gets --cert");
        conf_free(&c);
    }
}

/* upstream blocks, origin_pool, shields, role: issue 6 */
static void test_upstreams(void)
{
    struct config *c =
        parse("health_interval 500ms\n"
              "upstream origins {\n"
              " server 10.0.0.1:80 weight=3\n"
              " server [2001:db8::1]:8080 max_conns=10 weight=2\n"
              " balance least_conn\n"
              " health_check /healthz\n"
              " health_status 2xx\n"
              "}\n"
              "upstream eu-shields {\n"
              " server 10.1.0.1:80\n"
              " server 10.1.0.2:80\n"
              "}\n"
              "upstream us-shields {\n"
              " server 10.2.0.1:80\n"
              " health_check off\n"
              "}\n"
              "shields eu-shields us-shields\n"
              "site a.example {\n origin_pool origins\n}\n"
              "site * {\n origin 127.0.0.1:9000 127.0.0.1:9001\n shields us-shields\n"
              " shield_fallback_origin off\n}\n");
    ok(c != NULL, "upstream blocks parse: %s", err);
    if (c == NULL)
        return;
    is_int(c->n_upstreams, 4, "three blocks and the catch-all's origin line");
    const struct conf_upstream *o = &c->upstreams[0];
    is_str(o->name, "origins", "block name");
    is_int(o->n_servers, 2, "two servers");
    is_int(o->servers[0].weight, 3, "weight");
    is_int(o->servers[1].max_conns, 10, "max_conns");
    is_int(o->servers[1].weight, 2, "weight after max_conns");
    is_str(o->servers[1].addr.text, "[2001:db8::1]:8080", "v6 server");
    is_int(o->opts.balance, CONF_BALANCE_LEAST_CONN, "balance");
    is_str(o->opts.health_check, "/healthz", "health_check");
    is_int(o->opts.health_status_lo, 200, "2xx lo");
    is_int(o->opts.health_status_hi, 299, "2xx hi");
    is_int(o->opts.health_interval_ms, 500, "global health_interval inherited");
    ok(!o->shield, "an origin pool is not a shield group");
    ok(c->upstreams[1].shield, "eu-shields is a shield group");
    is_str(c->upstreams[1].opts.health_check, "/_outpost/health",
           "a shield group checks the shields' health endpoint by default");
    ok(c->upstreams[2].opts.health_check == NULL, "health_check off is kept for a shield group");
    is_int(c->sites[0].upstream, 0, "origin_pool resolved");
    is_int(c->sites[0].n_shields, 2, "global shields inherited");
    is_int(c->sites[0].shields[0], 1, "first shield group");
    is_int(c->sites[0].shields[1], 2, "fallback shield group");
    ok(c->sites[0].opts.shield_fallback_origin, "fallback on by default");
    is_int(c->sites[1].upstream, 3, "inline origin line: its own upstream");
    ok(c->upstreams[3].implicit, "implicit");
    is_str(c->upstreams[3].name, "site *", "implicit name");
    is_int(c->upstreams[3].n_servers, 2, "inline servers");
    is_int(c->upstreams[3].opts.health_interval_ms, 500, "implicit gets the global options");
    is_int(c->sites[1].n_shields, 1, "site shields override the global");
    ok(!c->sites[1].opts.shield_fallback_origin, "fallback off");
    conf_free(&c);

    parse_fails("site * {\n origin_pool nope\n}\n",
                "t.conf:2: origin_pool: no upstream block named 'nope'", "unknown origin_pool");
    parse_fails("upstream a {\n}\n" SITE,
                "t.conf:1: upstream: no server in the upstream block (add: server HOST:PORT)",
                "empty upstream");
    parse_fails("upstream a {\n server 1.2.3.4:5 weight=0\n}\n",
                "t.conf:2: server: 'weight=0': the weight must be from 1 to 1000", "weight 0");
    parse_fails("upstream a {\n server 1.2.3.4:5 colour=red\n}\n",
                "t.conf:2: server: 'colour=red': expected weight=N or max_conns=N",
                "unknown param");
    parse_fails("upstream a {\n server 1.2.3.4:5\n server 1.2.3.4:5\n}\n",
                "t.conf:3: server: 1.2.3.4:5 is listed twice in this upstream", "duplicate server");
    parse_fails("upstream a {\n server 1.2.3.4:5\n}\nupstream a {\n",
                "t.conf:4: upstream: duplicate upstream name 'a' (already used at line 1)",
                "duplicate upstream");
    parse_fails("upstream a {\n listen 1.2.3.4:5\n",
                "t.conf:2: listen: not allowed inside an upstream block", "global in upstream");
    parse_fails("server 1.2.3.4:5\n", "t.conf:1: server: only allowed inside an upstream block",
                "server outside");
    parse_fails("upstream a {\n server 1.2.3.4:5\n balance random\n}\n",
                "t.conf:3: balance: expected round_robin, least_conn or hash, got 'random'",
                "bad balance");
    parse_fails("upstream a {\n server 1.2.3.4:5\n health_status 600\n}\n",
                "t.conf:3: health_status: expected a status such as 200, 2xx or 200-399, got "
                "'600'",
                "bad status");
    parse_fails("upstream a {\n server 1.2.3.4:5\n health_check healthz\n}\n",
                "t.conf:3: health_check: expected a path starting with '/', or off, got 'healthz'",
                "relative health path");
    parse_fails("upstream a {\n server 1.2.3.4:5\n site b {\n",
                "t.conf:3: site: blocks do not nest (the upstream block at line 1 is not closed)",
                "site in upstream");
    parse_fails("upstream a {\n server 1.2.3.4:5\n",
                "t.conf:1: upstream: block not closed: missing '}' before the end of the file",
                "unclosed upstream");
    parse_fails("shields nope\n" SITE, "t.conf:1: shields: no upstream block named 'nope'",
                "unknown shield group");
    parse_fails("upstream s {\n server 1.2.3.4:5\n}\nrole shield\nshields s\n" SITE,
                "t.conf:5: shields: a shield sends misses to its origin only (role is shield)",
                "shield with shields");
    parse_fails("upstream s {\n server 1.2.3.4:5\n}\n"
                "site * {\n origin_pool s\n shields s\n}\n",
                "t.conf:6: shields: 's' is also the site's origin_pool", "pool is its own shield");
    parse_fails("upstream s {\n server 1.2.3.4:5\n}\n"
                "site * {\n origin_pool s\n origin 1.2.3.4:6\n}\n",
                "t.conf:4: site: has both origin and origin_pool: give one", "both");
    parse_fails("upstream p {\n server 1.2.3.4:5\n}\nsite a {\n origin_pool p\n}\n"
                "site b {\n origin_pool p\n upstream_tls on\n}\n",
                "t.conf:7: site: shares origin_pool 'p' with the site at line 4 but not its "
                "upstream_tls settings",
                "pool with two TLS settings");
    c = parse("upstream p {\n server 1.2.3.4:5\n}\nupstream_tls on\nsite a {\n origin_pool p\n}\n"
              "site b {\n origin_pool p\n}\n");
    ok(c != NULL, "sites sharing a pool with the same TLS settings: %s", err);
    conf_free(&c);
    parse_fails("role origin\n" SITE, "t.conf:1: role: expected edge or shield, got 'origin'",
                "bad role");

    ok(LOAD(&c, "--origin", "http://127.0.0.1:9000", "--shield", "http://127.0.0.1:7001",
            "--shield", "127.0.0.1:7002") != 0,
       "--shield needs a URL");
    ok(LOAD(&c, "--origin", "http://127.0.0.1:9000", "--shield", "http://127.0.0.1:7001",
            "--shield", "http://127.0.0.1:7002/") == 0,
       "--shield: %s", err);
    if (c != NULL) {
        is_int(c->role, CONF_ROLE_EDGE, "edge by default");
        is_int(c->sites[0].n_shields, 1, "one shield group");
        const struct conf_upstream *u = &c->upstreams[c->sites[0].shields[0]];
        is_str(u->name, "--shield", "the flag's group");
        is_int(u->n_servers, 2, "--shield repeatable");
        is_str(u->servers[1].addr.text, "127.0.0.1:7002", "second shield");
        ok(u->shield && !u->tls, "plain shield group");
        is_str(c->upstreams[c->sites[0].upstream].servers[0].addr.text, "127.0.0.1:9000",
               "--origin is the fallback");
        conf_free(&c);
    }
    ok(LOAD(&c, "--role", "shield", "--origin", "http://127.0.0.1:9000") == 0, "--role: %s", err);
    if (c != NULL) {
        is_int(c->role, CONF_ROLE_SHIELD, "--role shield");
        is_int(c->sites[0].n_shields, 0, "a shield has no shields");
        conf_free(&c);
    }
    LOAD_FAILS("command line: --shield: a shield sends misses to its origin only (role is shield)",
               "shield with --shield", "--role", "shield", "--origin", "http://127.0.0.1:9000",
               "--shield", "http://127.0.0.1:7001");
    LOAD_FAILS("command line: --shield: 'https://127.0.0.1:7002': mixes http:// and https:// "
               "shields",
               "mixed schemes", "--origin", "http://127.0.0.1:9000", "--shield",
               "http://127.0.0.1:7001", "--shield", "https://127.0.0.1:7002");
}

int main(void)
{
    test_defaults();
    test_every_option();
    test_merge();
    test_units();
    test_errors();
    test_site_find();
    test_flags();
    test_upstreams();
    test_tls();
    test_readme();
    return tap_done();
}
