/*
 * conf/conf.c: the config file lexer and parser, the command-line flags, validation and the
 * merging of global per-site defaults into every site.
 *
 * Everything is driven by the table of conf/options.h: a directive is looked up by name, its
 * arguments are parsed by type (sizes and durations through conf_size_parse() and
 * conf_duration_parse(), the one helper for units) and stored at the table's offset, either
 * in struct config (global options) or in a struct cache_site_policy (per-site options: the
 * global value is config->defaults, the per-site one the site's policy). Defaults are written
 * as file text in the table and go through the same code.
 *
 * The file syntax is line based: one directive per line, tokens separated by blanks, '#'
 * starts a comment outside quotes, "double quotes" with \" and \\ escapes, '{' ends a `site`
 * line and '}' stands on a line of its own. A building config is held in a struct builder
 * that also remembers where each option was set, to reject duplicates and to know which
 * per-site options a site left to the global default. Flags are applied after the file so
 * they override it whatever their order. Runs on the main or control thread; the result is
 * immutable once returned.
 */
#include "conf/conf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/options.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/util.h"

const struct conf_option conf_options[CONF_OPT_COUNT] = {
#define CONF_X_ROW(id, name, type, ctx, off, def, mn, mx, rl, help)                                \
    [CONF_OPT_##id] = {name, type, ctx, off, def, mn, mx, rl, help},
    CONF_OPTIONS(CONF_X_ROW)
#undef CONF_X_ROW
};

#define MAX_FILE_SIZE (16u * 1024 * 1024)

/* Where an error is: "FILE:LINE: WHAT: problem", "FILE: WHAT: problem" or "FILE: problem". */
struct where {
    const char *file;
    unsigned line;
    const char *what;
};

/* Per-site bookkeeping parallel to config->sites. */
struct site_extra {
    unsigned set[CONF_OPT_COUNT]; /* line where the site set an option; 0 = inherited */
    bool origin_from_flag; /* --origin already replaced this site's origins */
};

/* Per-upstream bookkeeping parallel to config->upstreams. */
struct ups_extra {
    unsigned set[CONF_OPT_COUNT]; /* line where the block set an option; 0 = inherited */
};

/* The block a line is in. */
enum block {
    BLOCK_NONE = 0,
    BLOCK_SITE = 1,
    BLOCK_UPSTREAM = 2,
};

struct builder {
    struct config *c;
    unsigned set[CONF_OPT_COUNT]; /* line where the file set a global option; 0 = default */
    struct site_extra *sx;
    struct ups_extra *ux;
    unsigned shields_line; /* where the global `shields` was set (for errors) */
    bool addrs_from_flag[CONF_OPT_COUNT]; /* a flag already replaced the file's listeners */
    char *err;
    size_t errlen;
};

/* One token of a line: `s` points into the builder's scratch buffer. */
struct tok {
    struct str s;
    char brace; /* '{' or '}' when the token is an unquoted brace, else 0 */
};

struct toks {
    struct tok *v;
    size_t n;
    size_t cap;
    struct buf scratch;
};

__attribute__((format(printf, 3, 4))) static int fail(struct builder *b, const struct where *w,
                                                      const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (b->errlen == 0)
        return OP_EINVAL;
    if (w->line && w->what)
        snprintf(b->err, b->errlen, "%s:%u: %s: %s", w->file, w->line, w->what, msg);
    else if (w->line)
        snprintf(b->err, b->errlen, "%s:%u: %s", w->file, w->line, msg);
    else if (w->what)
        snprintf(b->err, b->errlen, "%s: %s: %s", w->file, w->what, msg);
    else
        snprintf(b->err, b->errlen, "%s: %s", w->file, msg);
    return OP_EINVAL;
}

/* User text echoed in messages is cut to a readable length. */
#define SHOW(s) (int)((s).len > 120 ? 120 : (s).len), (s).p

/* ---- units -------------------------------------------------------------------------------- */

static size_t digits_parse(struct str s, uint64_t *v, bool *overflow)
{
    size_t i = 0;
    *v = 0;
    *overflow = false;
    while (i < s.len && s.p[i] >= '0' && s.p[i] <= '9') {
        unsigned d = (unsigned)(s.p[i] - '0');
        if (*v > (UINT64_MAX - d) / 10)
            *overflow = true;
        else
            *v = *v * 10 + d;
        i++;
    }
    return i;
}

int conf_size_parse(struct str s, uint64_t *bytes)
{
    uint64_t v;
    bool overflow;
    size_t i = digits_parse(s, &v, &overflow);
    if (i == 0)
        return OP_EINVAL;
    struct str unit = str_make(s.p + i, s.len - i);
    uint64_t mult = 1;
    if (unit.len > 0) {
        switch (unit.p[0]) {
        case 'k':
        case 'K':
            mult = CONF_KIB;
            break;
        case 'm':
        case 'M':
            mult = CONF_MIB;
            break;
        case 'g':
        case 'G':
            mult = CONF_GIB;
            break;
        case 'b':
        case 'B':
            break;
        default:
            return OP_EINVAL;
        }
        if (mult != 1) {
            unit.p++;
            unit.len--;
        }
        if (unit.len == 1 && (unit.p[0] == 'b' || unit.p[0] == 'B'))
            unit.len = 0;
        if (unit.len != 0)
            return OP_EINVAL;
    }
    if (overflow || v > UINT64_MAX / mult)
        return OP_ETOOBIG;
    *bytes = v * mult;
    return 0;
}

int conf_duration_parse(struct str s, int64_t *ms)
{
    uint64_t v;
    bool overflow;
    size_t i = digits_parse(s, &v, &overflow);
    if (i == 0)
        return OP_EINVAL;
    struct str unit = str_make(s.p + i, s.len - i);
    uint64_t mult;
    if (unit.len == 0 || str_eq(unit, STR_LIT("s")))
        mult = 1000;
    else if (str_eq(unit, STR_LIT("ms")))
        mult = 1;
    else if (str_eq(unit, STR_LIT("m")))
        mult = 60 * 1000;
    else if (str_eq(unit, STR_LIT("h")))
        mult = 3600 * 1000;
    else if (str_eq(unit, STR_LIT("d")))
        mult = 86400 * 1000;
    else
        return OP_EINVAL;
    if (overflow || v > (uint64_t)INT64_MAX / mult)
        return OP_ETOOBIG;
    *ms = (int64_t)(v * mult);
    return 0;
}

void conf_size_format(uint64_t v, char *out, size_t outlen)
{
    if (v != 0 && v % CONF_GIB == 0)
        snprintf(out, outlen, "%llug", (unsigned long long)(v / CONF_GIB));
    else if (v != 0 && v % CONF_MIB == 0)
        snprintf(out, outlen, "%llum", (unsigned long long)(v / CONF_MIB));
    else if (v != 0 && v % CONF_KIB == 0)
        snprintf(out, outlen, "%lluk", (unsigned long long)(v / CONF_KIB));
    else
        snprintf(out, outlen, "%llu", (unsigned long long)v);
}

void conf_duration_format(int64_t ms, char *out, size_t outlen)
{
    static const struct {
        int64_t ms;
        const char *unit;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    if (ms == 0) {
        snprintf(out, outlen, "0");
        return;
    }
    for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
        if (ms % units[i].ms == 0) {
            snprintf(out, outlen, "%lld%s", (long long)(ms / units[i].ms), units[i].unit);
            return;
        }
    }
    snprintf(out, outlen, "%lldms", (long long)ms);
}

/* ---- addresses and names ------------------------------------------------------------------ */

static bool is_host_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_';
}

static bool is_v6_char(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F') ||
           ch == ':' || ch == '.';
}

/* HOST:PORT or [V6]:PORT. Returns NULL, or the problem. */
static const char *addr_parse(struct str s, struct conf_addr *a)
{
    struct str host, port;
    bool v6 = false;
    memset(a, 0, sizeof(*a));
    for (size_t i = 0; i + 2 < s.len; i++)
        if (memcmp(s.p + i, "://", 3) == 0)
            return "expected HOST:PORT, not a URL";
    if (s.len > 0 && s.p[0] == '[') {
        long close = str_chr(s, ']');
        if (close < 0)
            return "missing ']' after an IPv6 address";
        host = str_make(s.p + 1, (size_t)close - 1);
        if ((size_t)close + 1 >= s.len || s.p[close + 1] != ':')
            return "missing :PORT after the address";
        port = str_make(s.p + close + 2, s.len - (size_t)close - 2);
        if (host.len == 0 || str_chr(host, ':') < 0)
            return "expected an IPv6 address between '[' and ']'";
        for (size_t i = 0; i < host.len; i++)
            if (!is_v6_char((unsigned char)host.p[i]))
                return "expected an IPv6 address between '[' and ']'";
        v6 = true;
    } else {
        long colon = -1;
        for (size_t i = 0; i < s.len; i++)
            if (s.p[i] == ':')
                colon = (long)i;
        if (colon < 0)
            return "missing :PORT (expected HOST:PORT)";
        host = str_make(s.p, (size_t)colon);
        port = str_make(s.p + colon + 1, s.len - (size_t)colon - 1);
        if (str_chr(host, ':') >= 0)
            return "an IPv6 address needs brackets, as in [::1]:8080";
        if (host.len == 0)
            return "missing host (expected HOST:PORT)";
        for (size_t i = 0; i < host.len; i++)
            if (!is_host_char((unsigned char)host.p[i]))
                return "invalid character in the host (expected HOST:PORT)";
    }
    if (host.len >= sizeof(a->host))
        return "host name too long";
    uint64_t p;
    if (port.len == 0 || port.len > 5 || str_to_u64(port, &p) < 0 || p < 1 || p > 65535)
        return "the port must be a number from 1 to 65535";
    str_to_cstr(host, a->host, sizeof(a->host));
    a->port = (uint16_t)p;
    snprintf(a->text, sizeof(a->text), v6 ? "[%s]:%u" : "%s:%u", a->host, (unsigned)a->port);
    return NULL;
}

/* A site name: "*", "*.suffix", a host name, or "[v6]". Returns NULL, or the problem. */
static const char *site_name_check(struct str s)
{
    if (str_eq(s, STR_LIT("*")))
        return NULL;
    if (s.len > 253)
        return "is too long";
    if (s.len >= 2 && s.p[0] == '[' && s.p[s.len - 1] == ']') {
        for (size_t i = 1; i + 1 < s.len; i++)
            if (!is_v6_char((unsigned char)s.p[i]))
                return "is not a valid IPv6 address";
        return s.len > 2 ? NULL : "is empty";
    }
    struct str h = s;
    if (s.len >= 2 && s.p[0] == '*' && s.p[1] == '.') {
        h = str_make(s.p + 2, s.len - 2);
    }
    if (h.len == 0)
        return "is empty";
    for (size_t i = 0; i < h.len; i++) {
        if (h.p[i] == ':')
            return "must not contain a port (sites match the Host without its port)";
        if (h.p[i] == '*')
            return "may use '*' only as \"*\" or as a leading \"*.\"";
        if (!is_host_char((unsigned char)h.p[i]))
            return "contains a character that is not valid in a host name";
    }
    if (h.p[0] == '.' || h.p[h.len - 1] == '.')
        return "has an empty label";
    for (size_t i = 1; i < h.len; i++)
        if (h.p[i] == '.' && h.p[i - 1] == '.')
            return "has an empty label";
    return NULL;
}

static char *lower_dup(struct str s)
{
    char *d = xstrndup(s.p, s.len);
    for (size_t i = 0; i < s.len; i++)
        if (d[i] >= 'A' && d[i] <= 'Z')
            d[i] = (char)(d[i] | 0x20);
    return d;
}

/* ---- the directive table ------------------------------------------------------------------ */

static int option_find(struct str name)
{
    for (int i = 0; i < CONF_OPT_COUNT; i++)
        if (str_eq(name, str_cstr(conf_options[i].name)))
            return i;
    return -1;
}

static size_t edit_distance(struct str a, const char *bs)
{
    size_t bl = strlen(bs);
    size_t row[64];
    if (a.len >= 63 || bl >= 63)
        return SIZE_MAX;
    for (size_t j = 0; j <= bl; j++)
        row[j] = j;
    for (size_t i = 1; i <= a.len; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= bl; j++) {
            size_t up = row[j];
            size_t cost = a.p[i - 1] == bs[j - 1] ? 0 : 1;
            size_t v = UTIL_MIN(row[j] + 1, row[j - 1] + 1);
            row[j] = UTIL_MIN(v, diag + cost);
            diag = up;
        }
    }
    return row[bl];
}

/* The closest directive name, or NULL when none is close enough to be a likely typo. */
static const char *option_suggest(struct str name)
{
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    for (int i = 0; i < CONF_OPT_COUNT; i++) {
        size_t d = edit_distance(name, conf_options[i].name);
        if (d < best_d) {
            best_d = d;
            best = conf_options[i].name;
        }
    }
    size_t limit = name.len <= 4 ? 1 : name.len / 3 + 1;
    return best_d <= UTIL_MIN(limit, 3) ? best : NULL;
}

static void *field(void *base, const struct conf_option *o)
{
    return (char *)base + (o->offset & ~(CONF_OPTS_BIT | CONF_UPS_BIT));
}

/* Where option `o` is stored: struct config for global options; for per-site ones the
 * site's policy or opts (`site` NULL: the global defaults that every site inherits); for
 * upstream options the block's opts (`ups` NULL: the global defaults of every block). */
static void *option_base_in(struct config *c, const struct conf_option *o, struct conf_site *site,
                            struct conf_upstream *ups)
{
    if (o->context & CONF_CTX_UPSTREAM)
        return ups != NULL ? (void *)&ups->opts : (void *)&c->upstream_defaults;
    if (!(o->context & CONF_CTX_SITE))
        return c;
    if (o->offset & CONF_OPTS_BIT)
        return site != NULL ? (void *)&site->opts : (void *)&c->site_defaults;
    return site != NULL ? (void *)&site->policy : (void *)&c->defaults;
}

static void *option_base(struct config *c, const struct conf_option *o, struct conf_site *site)
{
    return option_base_in(c, o, site, NULL);
}

/* Bytes of the value of a scalar option type (what merging a default copies). */
static size_t type_size(enum conf_type t)
{
    switch (t) {
    case CONF_T_UINT:
    case CONF_T_ROLE:
    case CONF_T_BALANCE:
        return sizeof(unsigned);
    case CONF_T_COUNT:
    case CONF_T_SIZE:
        return sizeof(uint64_t);
    case CONF_T_DURATION:
    case CONF_T_SECONDS:
        return sizeof(int64_t);
    case CONF_T_BOOL:
    case CONF_T_BOOL_NOT:
        return sizeof(bool);
    default:
        return 0;
    }
}

static bool type_is_string(enum conf_type t)
{
    return t == CONF_T_STRING || t == CONF_T_LOG_TARGET || t == CONF_T_TLS_VERSION ||
           t == CONF_T_PATH_OFF || t == CONF_T_NAMES || t == CONF_T_STATUS;
}

/* Copy option o's value from `src` to `dst` (bases as option_base_in returns them). */
static void option_copy(const struct conf_option *o, void *dst, void *src)
{
    if (type_is_string(o->type)) {
        const char *v = *(char *const *)field(src, o);
        *(char **)field(dst, o) = v != NULL ? xstrdup(v) : NULL;
        if (o->type == CONF_T_STATUS) {
            ((struct conf_upstream_opts *)dst)->health_status_lo =
                ((struct conf_upstream_opts *)src)->health_status_lo;
            ((struct conf_upstream_opts *)dst)->health_status_hi =
                ((struct conf_upstream_opts *)src)->health_status_hi;
        }
        return;
    }
    memcpy(field(dst, o), field(src, o), type_size(o->type));
}

/* An upstream block name: letters, digits, '-', '_', '.'. Returns NULL, or the problem. */
static const char *upstream_name_check(struct str s)
{
    if (s.len == 0 || s.len > 64)
        return "must be 1 to 64 characters";
    for (size_t i = 0; i < s.len; i++)
        if (!is_host_char((unsigned char)s.p[i]))
            return "may only use letters, digits, '-', '_' and '.'";
    return NULL;
}

static struct conf_upstream *upstream_by_name(const struct config *c, struct str name)
{
    for (size_t i = 0; i < c->n_upstreams; i++)
        if (str_eq(name, str_cstr(c->upstreams[i].name)))
            return &c->upstreams[i];
    return NULL;
}

/* A new upstream with the given name and no servers; options are merged at the end. */
static size_t upstream_add(struct builder *b, struct str name, unsigned line)
{
    struct config *c = b->c;
    c->upstreams = xrealloc(c->upstreams, (c->n_upstreams + 1) * sizeof(*c->upstreams));
    b->ux = xrealloc(b->ux, (c->n_upstreams + 1) * sizeof(*b->ux));
    memset(&c->upstreams[c->n_upstreams], 0, sizeof(*c->upstreams));
    memset(&b->ux[c->n_upstreams], 0, sizeof(*b->ux));
    c->upstreams[c->n_upstreams].name = xstrndup(name.p, name.len);
    c->upstreams[c->n_upstreams].line = line;
    return c->n_upstreams++;
}

static void upstream_fini(struct conf_upstream *u)
{
    free(u->name);
    free(u->servers);
    for (int i = 0; i < CONF_OPT_COUNT; i++)
        if ((conf_options[i].context & CONF_CTX_UPSTREAM) && type_is_string(conf_options[i].type))
            free(*(char **)field(&u->opts, &conf_options[i]));
}

/* "200", "2xx" or "200-399" into [lo, hi]. */
static bool status_range_parse(struct str a, unsigned *lo, unsigned *hi)
{
    uint64_t x, y;
    if (a.len == 3 && a.p[0] >= '1' && a.p[0] <= '5' && a.p[1] == 'x' && a.p[2] == 'x') {
        *lo = (unsigned)(a.p[0] - '0') * 100;
        *hi = *lo + 99;
        return true;
    }
    long dash = str_chr(a, '-');
    struct str l = dash >= 0 ? str_make(a.p, (size_t)dash) : a;
    struct str h = dash >= 0 ? str_make(a.p + dash + 1, a.len - (size_t)dash - 1) : a;
    if (l.len != 3 || h.len != 3 || str_to_u64(l, &x) < 0 || str_to_u64(h, &y) < 0)
        return false;
    if (x < 100 || y > 599 || x > y)
        return false;
    *lo = (unsigned)x;
    *hi = (unsigned)y;
    return true;
}

/* `server HOST:PORT [weight=N] [max_conns=N]` */
static int server_parse(struct builder *b, const struct where *w, struct conf_upstream *u,
                        const struct str *args, size_t n)
{
    struct conf_server sv;
    memset(&sv, 0, sizeof(sv));
    sv.weight = 1;
    const char *problem = addr_parse(args[0], &sv.addr);
    if (problem != NULL)
        return fail(b, w, "'%.*s': %s", SHOW(args[0]), problem);
    for (size_t i = 0; i < u->n_servers; i++)
        if (strcmp(u->servers[i].addr.text, sv.addr.text) == 0)
            return fail(b, w, "%s is listed twice in this upstream", sv.addr.text);
    for (size_t k = 1; k < n; k++) {
        struct str a = args[k];
        long eq = str_chr(a, '=');
        uint64_t v;
        struct str key = eq >= 0 ? str_make(a.p, (size_t)eq) : a;
        struct str val = eq >= 0 ? str_make(a.p + eq + 1, a.len - (size_t)eq - 1) : STR_NULL;
        bool is_w = str_eq(key, STR_LIT("weight")), is_m = str_eq(key, STR_LIT("max_conns"));
        if (eq < 0 || (!is_w && !is_m))
            return fail(b, w, "'%.*s': expected weight=N or max_conns=N", SHOW(a));
        if (str_to_u64(val, &v) < 0)
            return fail(b, w, "'%.*s': expected a whole number", SHOW(a));
        if (is_w && (v < 1 || v > 1000))
            return fail(b, w, "'%.*s': the weight must be from 1 to 1000", SHOW(a));
        if (is_m && v > 1000000)
            return fail(b, w, "'%.*s': max_conns is above the maximum of 1000000", SHOW(a));
        if (is_w)
            sv.weight = (unsigned)v;
        else
            sv.max_conns = (unsigned)v;
    }
    u->servers = xrealloc(u->servers, (u->n_servers + 1) * sizeof(sv));
    u->servers[u->n_servers++] = sv;
    return 0;
}

/* The list a CONF_T_ADDRS option fills. */
static void addr_list(struct config *c, int id, struct conf_addr ***v, size_t **n)
{
    switch (id) {
    case CONF_OPT_TLS_LISTEN:
        *v = &c->tls_listen;
        *n = &c->n_tls_listen;
        return;
    case CONF_OPT_PASSTHROUGH_LISTEN:
        *v = &c->passthrough_listen;
        *n = &c->n_passthrough_listen;
        return;
    case CONF_OPT_H3_LISTEN:
        *v = &c->h3_listen;
        *n = &c->n_h3_listen;
        return;
    default:
        ASSERT(id == CONF_OPT_LISTEN);
        *v = &c->listen;
        *n = &c->n_listen;
        return;
    }
}

static int bound_check(struct builder *b, const struct where *w, const struct conf_option *o,
                       struct str text, uint64_t v)
{
    char lim[32];
    if (o->min == 0 && o->max == 0)
        return 0;
    if (v >= o->min && v <= o->max)
        return 0;
    uint64_t bound = v < o->min ? o->min : o->max;
    if (o->type == CONF_T_SIZE)
        conf_size_format(bound, lim, sizeof(lim));
    else if (o->type == CONF_T_DURATION || o->type == CONF_T_SECONDS)
        conf_duration_format((int64_t)bound, lim, sizeof(lim));
    else
        snprintf(lim, sizeof(lim), "%llu", (unsigned long long)bound);
    return fail(b, w, "%.*s is %s the %s of %s", SHOW(text), v < o->min ? "below" : "above",
                v < o->min ? "minimum" : "maximum", lim);
}

static int addrs_append(struct builder *b, const struct where *w, struct conf_addr **v, size_t *n,
                        struct str text)
{
    struct conf_addr a;
    const char *problem = addr_parse(text, &a);
    if (problem != NULL)
        return fail(b, w, "'%.*s': %s", SHOW(text), problem);
    *v = xrealloc(*v, (*n + 1) * sizeof(**v));
    (*v)[(*n)++] = a;
    return 0;
}

/*
 * Apply one option with its arguments. `base` is the struct config for global options, or the
 * struct cache_site_policy (config->defaults or a site's) for per-site ones.
 */
static int option_apply(struct builder *b, const struct where *w, int id, const struct str *args,
                        size_t n, void *base, bool from_flag)
{
    const struct conf_option *o = &conf_options[id];
    struct config *c = b->c;
    if (n == 0)
        return fail(b, w, "missing argument");
    if (o->type == CONF_T_ROUTE && n != 2)
        return fail(b, w, "expected NAME HOST:PORT, got %zu argument(s)", n);
    if (o->type != CONF_T_ADDRS && o->type != CONF_T_ORIGINS && o->type != CONF_T_ROUTE &&
        o->type != CONF_T_NAMES && n > 1)
        return fail(b, w, "takes one argument, got %zu (quote an argument that has spaces)", n);
    struct str a = args[0];
    uint64_t u;
    int64_t ms;
    int rc;
    switch (o->type) {
    case CONF_T_ADDRS: {
        struct conf_addr **v;
        size_t *nv;
        addr_list(c, id, &v, &nv);
        if (from_flag && !b->addrs_from_flag[id]) {
            free(*v);
            *v = NULL;
            *nv = 0;
            b->addrs_from_flag[id] = true;
        }
        for (size_t i = 0; i < n; i++)
            if ((rc = addrs_append(b, w, v, nv, args[i])) < 0)
                return rc;
        return 0;
    }
    case CONF_T_ROUTE: {
        struct conf_route r;
        memset(&r, 0, sizeof(r));
        if (a.len == 0 || a.len >= sizeof(r.name))
            return fail(b, w, "'%.*s': bad server name", SHOW(a));
        for (size_t i = 0; i < a.len; i++) {
            char ch = a.p[i];
            bool okc = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                       (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '*' || ch == '_';
            if (!okc)
                return fail(b, w, "'%.*s': bad server name", SHOW(a));
            r.name[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        }
        const char *problem = addr_parse(args[1], &r.to);
        if (problem != NULL)
            return fail(b, w, "'%.*s': %s", SHOW(args[1]), problem);
        c->passthrough = xrealloc(c->passthrough, (c->n_passthrough + 1) * sizeof(r));
        c->passthrough[c->n_passthrough++] = r;
        return 0;
    }
    case CONF_T_TLS_VERSION: {
        char **dst = field(base, o);
        if (!str_eq(a, STR_LIT("1.2")) && !str_eq(a, STR_LIT("1.3")))
            return fail(b, w, "expected 1.2 or 1.3, got '%.*s'", SHOW(a));
        free(*dst);
        *dst = xstrndup(a.p, a.len);
        return 0;
    }
    case CONF_T_ADDR_OFF: {
        struct conf_addr addr;
        if (str_eq(a, STR_LIT("off"))) {
            c->admin_enabled = false;
            memset(&c->admin, 0, sizeof(c->admin));
            return 0;
        }
        const char *problem = addr_parse(a, &addr);
        if (problem != NULL)
            return fail(b, w, "'%.*s': %s, or off", SHOW(a), problem);
        c->admin = addr;
        c->admin_enabled = true;
        return 0;
    }
    case CONF_T_UINT:
    case CONF_T_COUNT:
        if (str_to_u64(a, &u) < 0) {
            bool digits = a.len > 0;
            for (size_t i = 0; i < a.len; i++)
                digits = digits && a.p[i] >= '0' && a.p[i] <= '9';
            if (digits)
                return fail(b, w, "%.*s is too large", SHOW(a));
            return fail(b, w, "expected a whole number, got '%.*s'", SHOW(a));
        }
        if ((rc = bound_check(b, w, o, a, u)) < 0)
            return rc;
        if (o->type == CONF_T_UINT)
            *(unsigned *)field(base, o) = (unsigned)u;
        else
            *(uint64_t *)field(base, o) = u;
        return 0;
    case CONF_T_SIZE:
        rc = conf_size_parse(a, &u);
        if (rc == OP_ETOOBIG)
            return fail(b, w, "%.*s is too large", SHOW(a));
        if (rc < 0)
            return fail(b, w, "expected a size such as 512, 64k, 256m or 1g, got '%.*s'", SHOW(a));
        if ((rc = bound_check(b, w, o, a, u)) < 0)
            return rc;
        *(uint64_t *)field(base, o) = u;
        return 0;
    case CONF_T_DURATION:
    case CONF_T_SECONDS:
        rc = conf_duration_parse(a, &ms);
        if (rc == OP_ETOOBIG)
            return fail(b, w, "%.*s is too large", SHOW(a));
        if (rc < 0)
            return fail(b, w, "expected a duration such as 500ms, 30s, 5m, 1h or 1d, got '%.*s'",
                        SHOW(a));
        if ((rc = bound_check(b, w, o, a, (uint64_t)ms)) < 0)
            return rc;
        if (o->type == CONF_T_DURATION) {
            *(int64_t *)field(base, o) = ms;
        } else {
            if (ms % 1000 != 0)
                return fail(b, w, "%.*s is not a whole number of seconds", SHOW(a));
            *(int64_t *)field(base, o) = ms / 1000;
        }
        return 0;
    case CONF_T_BOOL:
    case CONF_T_BOOL_NOT: {
        bool v;
        if (str_eq(a, STR_LIT("on")))
            v = true;
        else if (str_eq(a, STR_LIT("off")))
            v = false;
        else
            return fail(b, w, "expected on or off, got '%.*s'", SHOW(a));
        *(bool *)field(base, o) = o->type == CONF_T_BOOL ? v : !v;
        return 0;
    }
    case CONF_T_STRING:
    case CONF_T_LOG_TARGET: {
        char **dst = field(base, o);
        if (a.len == 0)
            return fail(b, w, "must not be empty");
        free(*dst);
        *dst = NULL;
        if (o->type == CONF_T_LOG_TARGET && str_eq(a, STR_LIT("off")))
            return 0;
        *dst = xstrndup(a.p, a.len);
        return 0;
    }
    case CONF_T_LOG_LEVEL: {
        static const char *const levels[] = {
            [LOG_ERR] = "error", [LOG_WARN] = "warn", [LOG_INFO] = "info", [LOG_DEBUG] = "debug"};
        for (size_t i = 0; i < ARRAY_SIZE(levels); i++) {
            if (str_eq(a, str_cstr(levels[i]))) {
                *(int *)field(base, o) = (int)i;
                return 0;
            }
        }
        return fail(b, w, "expected error, warn, info or debug, got '%.*s'", SHOW(a));
    }
    case CONF_T_ROLE:
    case CONF_T_BALANCE: {
        static const char *const roles[] = {"edge", "shield"};
        static const char *const algos[] = {"round_robin", "least_conn", "hash"};
        const char *const *names = o->type == CONF_T_ROLE ? roles : algos;
        size_t nn = o->type == CONF_T_ROLE ? ARRAY_SIZE(roles) : ARRAY_SIZE(algos);
        for (size_t i = 0; i < nn; i++) {
            if (str_eq(a, str_cstr(names[i]))) {
                *(unsigned *)field(base, o) = (unsigned)i;
                return 0;
            }
        }
        if (o->type == CONF_T_ROLE)
            return fail(b, w, "expected edge or shield, got '%.*s'", SHOW(a));
        return fail(b, w, "expected round_robin, least_conn or hash, got '%.*s'", SHOW(a));
    }
    case CONF_T_PATH_OFF: {
        char **dst = field(base, o);
        if (!str_eq(a, STR_LIT("off")) && (a.len == 0 || a.p[0] != '/'))
            return fail(b, w, "expected a path starting with '/', or off, got '%.*s'", SHOW(a));
        for (size_t i = 0; i < a.len; i++)
            if ((unsigned char)a.p[i] <= ' ' || a.p[i] == 0x7f)
                return fail(b, w, "the path must not contain spaces or control characters");
        free(*dst);
        *dst = str_eq(a, STR_LIT("off")) ? NULL : xstrndup(a.p, a.len);
        return 0;
    }
    case CONF_T_NAMES: {
        char **dst = field(base, o);
        struct buf joined;
        buf_init(&joined);
        for (size_t i = 0; i < n; i++) {
            const char *problem = upstream_name_check(args[i]);
            if (problem != NULL) {
                buf_fini(&joined);
                return fail(b, w, "'%.*s': an upstream name %s", SHOW(args[i]), problem);
            }
            if (i)
                buf_append(&joined, " ", 1);
            buf_append(&joined, args[i].p, args[i].len);
        }
        free(*dst);
        *dst = xstrndup(joined.p, joined.len);
        buf_fini(&joined);
        return 0;
    }
    case CONF_T_STATUS: {
        struct conf_upstream_opts *uo = base;
        unsigned lo, hi;
        if (!status_range_parse(a, &lo, &hi))
            return fail(b, w, "expected a status such as 200, 2xx or 200-399, got '%.*s'", SHOW(a));
        free(uo->health_status);
        uo->health_status = xstrndup(a.p, a.len);
        uo->health_status_lo = lo;
        uo->health_status_hi = hi;
        return 0;
    }
    case CONF_T_SITE:
    case CONF_T_ORIGINS:
    case CONF_T_UPSTREAM:
    case CONF_T_SERVERS:
        break;
    }
    ASSERT(!"option type handled by the caller");
    return OP_EINVAL;
}

/* ---- sites -------------------------------------------------------------------------------- */

static const struct conf_site *site_by_name(const struct config *c, struct str name)
{
    for (size_t i = 0; i < c->n_sites; i++)
        for (size_t j = 0; j < c->sites[i].n_names; j++)
            if (str_caseeq(name, str_cstr(c->sites[i].names[j])))
                return &c->sites[i];
    return NULL;
}

static size_t site_add(struct builder *b, unsigned line)
{
    struct config *c = b->c;
    c->sites = xrealloc(c->sites, (c->n_sites + 1) * sizeof(*c->sites));
    b->sx = xrealloc(b->sx, (c->n_sites + 1) * sizeof(*b->sx));
    memset(&c->sites[c->n_sites], 0, sizeof(*c->sites));
    memset(&b->sx[c->n_sites], 0, sizeof(*b->sx));
    c->sites[c->n_sites].line = line;
    return c->n_sites++;
}

static void site_name_add(struct conf_site *s, struct str name)
{
    s->names = xrealloc(s->names, (s->n_names + 1) * sizeof(*s->names));
    s->names[s->n_names++] = lower_dup(name);
}

static void site_fini(struct conf_site *s)
{
    for (size_t i = 0; i < s->n_names; i++)
        free(s->names[i]);
    free(s->names);
    free(s->origins);
    free(s->shields);
}

const struct conf_site *conf_site_find(const struct config *c, struct str host)
{
    if (host.len > 0 && host.p[0] == '[') {
        long close = str_chr(host, ']');
        if (close >= 0)
            host.len = (size_t)close + 1;
    } else {
        long colon = str_chr(host, ':');
        if (colon >= 0)
            host.len = (size_t)colon;
    }
    if (host.len > 0 && host.p[host.len - 1] == '.')
        host.len--;
    const struct conf_site *wild = NULL;
    const struct conf_site *any = NULL;
    size_t wild_len = 0;
    for (size_t i = 0; i < c->n_sites; i++) {
        const struct conf_site *s = &c->sites[i];
        for (size_t j = 0; j < s->n_names; j++) {
            const char *n = s->names[j];
            if (n[0] == '*' && n[1] == '\0') {
                any = s;
            } else if (n[0] == '*') {
                struct str suffix = str_cstr(n + 1); /* ".example.com" */
                if (host.len > suffix.len && suffix.len > wild_len &&
                    str_caseeq(str_make(host.p + host.len - suffix.len, suffix.len), suffix)) {
                    wild = s;
                    wild_len = suffix.len;
                }
            } else if (str_caseeq(host, str_cstr(n))) {
                return s;
            }
        }
    }
    return wild != NULL ? wild : any;
}

/* ---- lexer -------------------------------------------------------------------------------- */

static void toks_push(struct toks *t, const char *p, size_t len, char brace)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 8;
        t->v = xrealloc(t->v, t->cap * sizeof(*t->v));
    }
    t->v[t->n].s = str_make(p, len);
    t->v[t->n].brace = brace;
    t->n++;
}

static void toks_fini(struct toks *t)
{
    free(t->v);
    buf_fini(&t->scratch);
}

/*
 * Split one line (without its '\n') into tokens. Unescaped token text goes to t->scratch,
 * which is sized up front so that the token pointers stay valid.
 */
static int line_lex(struct builder *b, const struct where *w0, const char *p, size_t len,
                    struct toks *t)
{
    struct where w = *w0;
    char name[72];
    t->n = 0;
    t->scratch.len = 0;
    char *out = buf_reserve(&t->scratch, len + 1);
    size_t o = 0;
    size_t i = 0;
    while (i < len) {
        char ch = p[i];
        if (t->n == 1 && w.what == NULL) {
            str_to_cstr(t->v[0].s, name, sizeof(name));
            w.what = name;
        }
        if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f') {
            i++;
        } else if (ch == '#') {
            break;
        } else if (ch == '\0') {
            return fail(b, &w, "NUL byte in the file");
        } else if (ch == '{' || ch == '}') {
            out[o] = ch;
            toks_push(t, out + o, 1, ch);
            o++;
            i++;
        } else if (ch == '"') {
            size_t start = o;
            i++;
            for (;;) {
                if (i >= len)
                    return fail(b, &w, "unterminated quoted string (a closing '\"' is missing)");
                ch = p[i];
                if (ch == '\\') {
                    if (i + 1 < len && (p[i + 1] == '"' || p[i + 1] == '\\')) {
                        out[o++] = p[i + 1];
                        i += 2;
                        continue;
                    }
                    return fail(b, &w, "invalid escape in a quoted string (only \\\" and \\\\)");
                }
                if (ch == '\0')
                    return fail(b, &w, "NUL byte in the file");
                i++;
                if (ch == '"')
                    break;
                out[o++] = ch;
            }
            if (i < len && !strchr(" \t\r\v\f#{}", p[i]))
                return fail(b, &w, "expected a space after a closing '\"'");
            toks_push(t, out + start, o - start, 0);
        } else {
            size_t start = o;
            while (i < len && !strchr(" \t\r\v\f#{}\"", p[i]) && p[i] != '\0')
                out[o++] = p[i++];
            if (i < len && p[i] == '"')
                return fail(b, &w, "unexpected '\"' inside an argument (quote the whole argument)");
            toks_push(t, out + start, o - start, 0);
        }
    }
    t->scratch.len = o;
    return 0;
}

/* ---- the file ----------------------------------------------------------------------------- */

static int site_close(struct builder *b, const char *file, size_t idx)
{
    struct conf_site *s = &b->c->sites[idx];
    struct where w = {file, s->line, "site"};
    if (s->n_origins == 0 && s->opts.origin_pool == NULL)
        return fail(b, &w,
                    "no origin in the site block (add: origin HOST:PORT, or origin_pool NAME)");
    if (s->n_origins > 0 && s->opts.origin_pool != NULL)
        return fail(b, &w, "has both origin and origin_pool: give one");
    return 0;
}

static int upstream_close(struct builder *b, const char *file, size_t idx)
{
    struct conf_upstream *u = &b->c->upstreams[idx];
    if (u->n_servers == 0) {
        struct where w = {file, u->line, "upstream"};
        return fail(b, &w, "no server in the upstream block (add: server HOST:PORT)");
    }
    return 0;
}

/* An `upstream NAME {` line. */
static int upstream_open(struct builder *b, const struct where *w, const struct toks *t,
                         size_t *idx)
{
    if (t->v[t->n - 1].brace != '{')
        return fail(b, w, "expected '{' at the end of the line");
    if (t->n != 3)
        return fail(b, w, "expected: upstream NAME {");
    struct str n = t->v[1].s;
    const char *problem = upstream_name_check(n);
    if (problem != NULL)
        return fail(b, w, "the name '%.*s' %s", SHOW(n), problem);
    const struct conf_upstream *dup = upstream_by_name(b->c, n);
    if (dup != NULL)
        return fail(b, w, "duplicate upstream name '%.*s' (already used at line %u)", SHOW(n),
                    dup->line);
    *idx = upstream_add(b, n, w->line);
    return 0;
}

/* A `site NAME... {` line: tokens 1 .. n-2 are names. */
static int site_open(struct builder *b, const struct where *w, const struct toks *t,
                     size_t *site_idx)
{
    if (t->v[t->n - 1].brace != '{')
        return fail(b, w, "expected '{' at the end of the line");
    if (t->n < 3)
        return fail(b, w, "missing site name (a host name, *.suffix or *)");
    for (size_t k = 1; k + 1 < t->n; k++) {
        struct str n = t->v[k].s;
        const char *problem = site_name_check(n);
        if (problem != NULL)
            return fail(b, w, "site name '%.*s' %s", SHOW(n), problem);
        const struct conf_site *dup = site_by_name(b->c, n);
        if (dup != NULL)
            return fail(b, w, "duplicate site name '%.*s' (already used by the site at line %u)",
                        SHOW(n), dup->line);
        for (size_t m = 1; m < k; m++)
            if (str_caseeq(n, t->v[m].s))
                return fail(b, w, "site name '%.*s' is listed twice", SHOW(n));
    }
    *site_idx = site_add(b, w->line);
    for (size_t k = 1; k + 1 < t->n; k++)
        site_name_add(&b->c->sites[*site_idx], t->v[k].s);
    return 0;
}

static int line_handle(struct builder *b, const char *file, unsigned line, const struct toks *t,
                       size_t *blk_idx, enum block *blk)
{
    char name[72];
    struct where w = {file, line, NULL};
    const struct tok *t0 = &t->v[0];
    if (t0->brace == '}') {
        w.what = "}";
        if (t->n > 1)
            return fail(b, &w, "'}' must be on a line of its own");
        if (*blk == BLOCK_NONE)
            return fail(b, &w, "unexpected '}': no block is open");
        enum block was = *blk;
        *blk = BLOCK_NONE;
        return was == BLOCK_SITE ? site_close(b, file, *blk_idx)
                                 : upstream_close(b, file, *blk_idx);
    }
    if (t0->brace == '{') {
        w.what = "{";
        return fail(b, &w, "'{' must follow a site or upstream line");
    }
    str_to_cstr(t0->s, name, sizeof(name));
    w.what = name;
    int id = option_find(t0->s);
    if (id < 0) {
        const char *hint = option_suggest(t0->s);
        if (hint != NULL)
            return fail(b, &w, "unknown directive (did you mean '%s'?)", hint);
        return fail(b, &w, "unknown directive");
    }
    const struct conf_option *o = &conf_options[id];
    bool opens = o->type == CONF_T_SITE || o->type == CONF_T_UPSTREAM;
    for (size_t k = 1; k < t->n; k++) {
        if (t->v[k].brace == '}')
            return fail(b, &w, "'}' must be on a line of its own");
        if (t->v[k].brace == '{' && !opens)
            return fail(b, &w, "unexpected '{': only a site or upstream line opens a block");
        if (t->v[k].brace == '{' && k + 1 < t->n)
            return fail(b, &w, "'{' must end the line");
    }
    if (*blk != BLOCK_NONE && opens) {
        unsigned at =
            *blk == BLOCK_SITE ? b->c->sites[*blk_idx].line : b->c->upstreams[*blk_idx].line;
        return fail(b, &w, "blocks do not nest (the %s block at line %u is not closed)",
                    *blk == BLOCK_SITE ? "site" : "upstream", at);
    }
    if (*blk == BLOCK_SITE && !(o->context & CONF_CTX_SITE))
        return fail(b, &w, "not allowed inside a site block");
    if (*blk == BLOCK_UPSTREAM && !(o->context & CONF_CTX_UPSTREAM))
        return fail(b, &w, "not allowed inside an upstream block");
    if (*blk == BLOCK_NONE && !(o->context & CONF_CTX_GLOBAL)) {
        if (o->context & CONF_CTX_UPSTREAM)
            return fail(b, &w, "only allowed inside an upstream block");
        return fail(b, &w, "only allowed inside a site block");
    }
    if (o->type == CONF_T_SITE) {
        int rc = site_open(b, &w, t, blk_idx);
        if (rc == 0)
            *blk = BLOCK_SITE;
        return rc;
    }
    if (o->type == CONF_T_UPSTREAM) {
        int rc = upstream_open(b, &w, t, blk_idx);
        if (rc == 0)
            *blk = BLOCK_UPSTREAM;
        return rc;
    }

    struct str args[64];
    size_t n = t->n - 1;
    if (n > ARRAY_SIZE(args))
        return fail(b, &w, "too many arguments (%zu)", n);
    for (size_t k = 0; k < n; k++)
        args[k] = t->v[k + 1].s;

    if (o->type == CONF_T_ORIGINS) {
        struct conf_site *s = &b->c->sites[*blk_idx];
        if (n == 0)
            return fail(b, &w, "missing argument (HOST:PORT)");
        for (size_t k = 0; k < n; k++) {
            int rc = addrs_append(b, &w, &s->origins, &s->n_origins, args[k]);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    if (o->type == CONF_T_SERVERS) {
        if (n == 0)
            return fail(b, &w, "missing argument (HOST:PORT)");
        return server_parse(b, &w, &b->c->upstreams[*blk_idx], args, n);
    }
    unsigned *set = *blk == BLOCK_SITE       ? b->sx[*blk_idx].set
                    : *blk == BLOCK_UPSTREAM ? b->ux[*blk_idx].set
                                             : b->set;
    if (set[id] != 0 && o->type != CONF_T_ADDRS && o->type != CONF_T_ROUTE)
        return fail(b, &w, "duplicate directive (already set at line %u)", set[id]);
    void *base = option_base_in(b->c, o, *blk == BLOCK_SITE ? &b->c->sites[*blk_idx] : NULL,
                                *blk == BLOCK_UPSTREAM ? &b->c->upstreams[*blk_idx] : NULL);
    int rc = option_apply(b, &w, id, args, n, base, false);
    if (rc == 0 && set[id] == 0)
        set[id] = line;
    return rc;
}

static int text_parse(struct builder *b, const char *file, const char *buf, size_t len)
{
    struct toks t = {0};
    size_t pos = 0;
    unsigned line = 0;
    size_t blk_idx = 0;
    enum block blk = BLOCK_NONE;
    int rc = 0;
    if (len > MAX_FILE_SIZE) {
        struct where w = {file, 0, NULL};
        return fail(b, &w, "file too large (more than %u bytes)", MAX_FILE_SIZE);
    }
    if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
        pos = 3; /* a UTF-8 byte order mark, as some editors write */
    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - buf) : len;
        struct where w = {file, ++line, NULL};
        rc = line_lex(b, &w, buf + pos, end - pos, &t);
        if (rc == 0 && t.n > 0)
            rc = line_handle(b, file, line, &t, &blk_idx, &blk);
        if (rc < 0)
            break;
        pos = end + 1;
    }
    toks_fini(&t);
    if (rc == 0 && blk != BLOCK_NONE) {
        bool site = blk == BLOCK_SITE;
        struct where w = {file, site ? b->c->sites[blk_idx].line : b->c->upstreams[blk_idx].line,
                          site ? "site" : "upstream"};
        rc = fail(b, &w, "block not closed: missing '}' before the end of the file");
    }
    return rc;
}

/* ---- building ----------------------------------------------------------------------------- */

static void builder_init(struct builder *b, char *err, size_t errlen)
{
    memset(b, 0, sizeof(*b));
    b->err = err;
    b->errlen = errlen;
    b->c = xcalloc(1, sizeof(*b->c));
    struct where w = {"default", 0, NULL};
    for (int i = 0; i < CONF_OPT_COUNT; i++) {
        const struct conf_option *o = &conf_options[i];
        if (o->def == NULL || o->type == CONF_T_ADDRS)
            continue;
        struct str def = str_cstr(o->def);
        int rc = option_apply(b, &w, i, &def, 1, option_base(b->c, o, NULL), false);
        ASSERT(rc == 0);
    }
}

static void builder_fail(struct builder *b)
{
    conf_free(&b->c);
    free(b->sx);
    b->sx = NULL;
    free(b->ux);
    b->ux = NULL;
}

/* No address may serve two listeners of one transport: with SO_REUSEPORT both binds would
 * succeed and the kernel would split connections between, say, the plaintext and the TLS
 * listener. TCP (`ids` of the TCP listeners, and admin) and UDP (h3_listen) are checked apart:
 * HTTP/3 on the port number of a TLS listener is the usual setup. */
static int listeners_check_ids(struct builder *b, const char *file, const int *ids, size_t n_ids,
                               bool admin)
{
    struct config *c = b->c;
    struct {
        const struct conf_addr *a;
        int id;
    } all[256];
    size_t n = 0;
    for (size_t k = 0; k < n_ids; k++) {
        struct conf_addr **v;
        size_t *nv;
        addr_list(c, ids[k], &v, &nv);
        for (size_t i = 0; i < *nv && n < ARRAY_SIZE(all); i++, n++) {
            all[n].a = &(*v)[i];
            all[n].id = ids[k];
        }
    }
    if (admin && c->admin_enabled && n < ARRAY_SIZE(all)) {
        all[n].a = &c->admin;
        all[n++].id = CONF_OPT_ADMIN;
    }
    for (size_t i = 1; i < n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (all[i].a->port != all[j].a->port || strcmp(all[i].a->host, all[j].a->host) != 0)
                continue;
            const struct conf_option *o = &conf_options[all[i].id];
            struct where w = {b->set[all[i].id] ? file : "command line", b->set[all[i].id],
                              o->name};
            return fail(b, &w, "%s is already used by %s", all[i].a->text,
                        conf_options[all[j].id].name);
        }
    }
    return 0;
}

static int listeners_check(struct builder *b, const char *file)
{
    static const int tcp[] = {CONF_OPT_LISTEN, CONF_OPT_TLS_LISTEN, CONF_OPT_PASSTHROUGH_LISTEN};
    static const int udp[] = {CONF_OPT_H3_LISTEN};
    int rc = listeners_check_ids(b, file, tcp, ARRAY_SIZE(tcp), true);
    return rc < 0 ? rc : listeners_check_ids(b, file, udp, ARRAY_SIZE(udp), false);
}

/* TLS settings that only make sense together. Run after the merge, so a site sees the
 * certificate it inherits. */
static int tls_check(struct builder *b, const char *file)
{
    struct config *c = b->c;
    const struct conf_site_opts *d = &c->site_defaults;
    unsigned cl = b->set[CONF_OPT_TLS_CERTIFICATE], kl = b->set[CONF_OPT_TLS_CERTIFICATE_KEY];
    if ((d->tls_certificate == NULL) != (d->tls_certificate_key == NULL)) {
        struct where w = {file, cl ? cl : kl,
                          d->tls_certificate ? "tls_certificate" : "tls_certificate_key"};
        return fail(b, &w,
                    "tls_certificate and tls_certificate_key go together (or --cert "
                    "and --key)");
    }
    if ((c->n_tls_listen > 0 || c->n_h3_listen > 0) && d->tls_certificate == NULL) {
        int id = c->n_tls_listen > 0 ? CONF_OPT_TLS_LISTEN : CONF_OPT_H3_LISTEN;
        struct where w = {b->set[id] ? file : "command line", b->set[id], conf_options[id].name};
        return fail(b, &w,
                    "needs a default certificate: set tls_certificate and "
                    "tls_certificate_key (or --cert and --key)");
    }
    for (size_t s = 0; s < c->n_sites; s++) {
        const struct conf_site_opts *o = &c->sites[s].opts;
        if ((o->tls_certificate == NULL) != (o->tls_certificate_key == NULL)) {
            struct where w = {file, c->sites[s].line, "site"};
            return fail(b, &w, "tls_certificate and tls_certificate_key go together");
        }
    }
    return 0;
}

/* Give upstream blocks the global defaults of what they did not set, make each site's inline
 * origin line an upstream of its own, and resolve origin_pool and shields to indexes. */
static int upstreams_resolve(struct builder *b, const char *file)
{
    struct config *c = b->c;
    size_t n_blocks = c->n_upstreams;
    for (size_t u = 0; u < n_blocks; u++) {
        for (int i = 0; i < CONF_OPT_COUNT; i++) {
            const struct conf_option *o = &conf_options[i];
            if (!(o->context & CONF_CTX_UPSTREAM) ||
                type_size(o->type) + type_is_string(o->type) == 0 || b->ux[u].set[i])
                continue;
            option_copy(o, &c->upstreams[u].opts, &c->upstream_defaults);
        }
    }
    for (size_t s = 0; s < c->n_sites; s++) {
        struct conf_site *site = &c->sites[s];
        struct where w = {site->line ? file : "command line", site->line,
                          site->line ? "site" : "--origin"};
        if (b->sx[s].origin_from_flag && site->opts.origin_pool != NULL) {
            free(site->opts.origin_pool); /* --origin replaces the file's origin_pool */
            site->opts.origin_pool = NULL;
        }
        if (site->opts.origin_pool != NULL) {
            const struct conf_upstream *u = upstream_by_name(c, str_cstr(site->opts.origin_pool));
            if (u == NULL) {
                w.line = b->sx[s].set[CONF_OPT_ORIGIN_POOL];
                w.what = "origin_pool";
                return fail(b, &w, "no upstream block named '%s'", site->opts.origin_pool);
            }
            site->upstream = (size_t)(u - c->upstreams);
        } else {
            char name[300];
            snprintf(name, sizeof(name), "site %s", site->names[0]);
            size_t idx = upstream_add(b, str_cstr(name), 0);
            struct conf_upstream *u = &c->upstreams[idx];
            u->implicit = true;
            u->servers = xcalloc(site->n_origins, sizeof(*u->servers));
            for (size_t k = 0; k < site->n_origins; k++) {
                u->servers[k].addr = site->origins[k];
                u->servers[k].weight = 1;
            }
            u->n_servers = site->n_origins;
            for (int i = 0; i < CONF_OPT_COUNT; i++) {
                const struct conf_option *o = &conf_options[i];
                if ((o->context & CONF_CTX_UPSTREAM) &&
                    type_size(o->type) + type_is_string(o->type))
                    option_copy(o, &u->opts, &c->upstream_defaults);
            }
            site->upstream = idx;
        }
        /* One TLS setting per origin pool: its connections are shared by the sites using it. */
        for (size_t k = 0; k < s; k++) {
            const struct conf_site_opts *o1 = &c->sites[k].opts, *o2 = &site->opts;
            if (c->sites[k].upstream != site->upstream)
                continue;
            if (o1->upstream_tls != o2->upstream_tls ||
                o1->upstream_tls_verify != o2->upstream_tls_verify ||
                !str_eq(str_cstr(o1->upstream_tls_ca ? o1->upstream_tls_ca : ""),
                        str_cstr(o2->upstream_tls_ca ? o2->upstream_tls_ca : "")) ||
                !str_eq(str_cstr(o1->upstream_tls_name ? o1->upstream_tls_name : ""),
                        str_cstr(o2->upstream_tls_name ? o2->upstream_tls_name : "")))
                return fail(b, &w,
                            "shares origin_pool '%s' with the site at line %u but not its "
                            "upstream_tls settings",
                            c->upstreams[site->upstream].name, c->sites[k].line);
            break;
        }
        if (site->opts.shields == NULL)
            continue;
        unsigned at = b->sx[s].set[CONF_OPT_SHIELDS] ? b->sx[s].set[CONF_OPT_SHIELDS]
                                                     : b->set[CONF_OPT_SHIELDS];
        struct where ws = {at ? file : "command line", at, at ? "shields" : "--shield"};
        if (c->role == CONF_ROLE_SHIELD)
            return fail(b, &ws, "a shield sends misses to its origin only (role is shield)");
        struct str rest = str_cstr(site->opts.shields);
        while (rest.len > 0) {
            long sp = str_chr(rest, ' ');
            struct str nm = sp >= 0 ? str_make(rest.p, (size_t)sp) : rest;
            rest = sp >= 0 ? str_make(rest.p + sp + 1, rest.len - (size_t)sp - 1) : STR_NULL;
            struct conf_upstream *u = upstream_by_name(c, nm);
            if (u == NULL)
                return fail(b, &ws, "no upstream block named '%.*s'", SHOW(nm));
            size_t idx = (size_t)(u - c->upstreams);
            for (size_t k = 0; k < site->n_shields; k++)
                if (site->shields[k] == idx)
                    return fail(b, &ws, "'%.*s' is listed twice", SHOW(nm));
            if (idx == site->upstream)
                return fail(b, &ws, "'%.*s' is also the site's origin_pool", SHOW(nm));
            site->shields = xrealloc(site->shields, (site->n_shields + 1) * sizeof(size_t));
            site->shields[site->n_shields++] = idx;
            if (!u->shield) {
                u->shield = true;
                /* A shield group checks the shields' own health endpoint unless told otherwise. */
                if (u->opts.health_check == NULL && !b->ux[idx].set[CONF_OPT_HEALTH_CHECK])
                    u->opts.health_check = xstrdup(conf_options[CONF_OPT_HEALTH_PATH].def);
            }
        }
    }
    return 0;
}

/* Fill in listen, merge the global per-site defaults into the sites and check that there is
 * something to serve. `file` names the source for the error. */
static int builder_finish(struct builder *b, const char *file)
{
    struct config *c = b->c;
    if (c->n_listen == 0 && c->n_tls_listen == 0 && c->n_passthrough_listen == 0) {
        struct str def = str_cstr(conf_options[CONF_OPT_LISTEN].def);
        struct where w = {"default", 0, NULL};
        int rc = option_apply(b, &w, CONF_OPT_LISTEN, &def, 1, c, false);
        ASSERT(rc == 0);
    }
    for (size_t s = 0; s < c->n_sites; s++) {
        for (int i = 0; i < CONF_OPT_COUNT; i++) {
            const struct conf_option *o = &conf_options[i];
            if (!(o->context & CONF_CTX_SITE) || o->type == CONF_T_ORIGINS || b->sx[s].set[i])
                continue;
            option_copy(o, option_base(c, o, &c->sites[s]), option_base(c, o, NULL));
        }
    }
    int rc = tls_check(b, file);
    if (rc == 0)
        rc = listeners_check(b, file);
    if (rc == 0)
        rc = upstreams_resolve(b, file);
    if (rc < 0)
        return rc;
    free(b->sx);
    b->sx = NULL;
    free(b->ux);
    b->ux = NULL;
    if (c->n_sites == 0) {
        struct where w = {file, 0, NULL};
        if (c->file != NULL)
            return fail(b, &w, "no site to serve (add a block: site NAME { origin HOST:PORT })");
        return fail(b, &w, "no site to serve: give -c FILE or --origin http://HOST:PORT");
    }
    return 0;
}

int conf_parse_buffer(const char *name, const char *buf, size_t len, struct config **out, char *err,
                      size_t errlen)
{
    struct builder b;
    builder_init(&b, err, errlen);
    b.c->file = xstrdup(name);
    int rc = text_parse(&b, name, buf, len);
    if (rc == 0)
        rc = builder_finish(&b, name);
    if (rc < 0) {
        builder_fail(&b);
        return rc;
    }
    *out = b.c;
    return 0;
}

void conf_free(struct config **cp)
{
    struct config *c = *cp;
    if (c == NULL)
        return;
    free(c->file);
    free(c->listen);
    free(c->tls_listen);
    free(c->h3_listen);
    free(c->passthrough_listen);
    free(c->passthrough);
    for (int i = 0; i < CONF_OPT_COUNT; i++) {
        const struct conf_option *o = &conf_options[i];
        if (!type_is_string(o->type))
            continue;
        free(*(char **)field(option_base(c, o, NULL), o));
        for (size_t s = 0; s < c->n_sites && (o->context & CONF_CTX_SITE); s++)
            free(*(char **)field(option_base(c, o, &c->sites[s]), o));
    }
    for (size_t i = 0; i < c->n_sites; i++)
        site_fini(&c->sites[i]);
    free(c->sites);
    for (size_t i = 0; i < c->n_upstreams; i++)
        upstream_fini(&c->upstreams[i]);
    free(c->upstreams);
    free(c);
    *cp = NULL;
}

/* ---- the command line --------------------------------------------------------------------- */

static int file_read(struct builder *b, const char *path, char **data, size_t *len)
{
    struct where w = {path, 0, NULL};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        fail(b, &w, "cannot open: %s", strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        fail(b, &w, "cannot read: %s", strerror(e));
        return -e;
    }
    if (!S_ISREG(st.st_mode)) {
        int e = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        close(fd);
        fail(b, &w, "cannot read: %s", e == EISDIR ? "is a directory" : "not a regular file");
        return -e;
    }
    if ((uint64_t)st.st_size > MAX_FILE_SIZE) {
        close(fd);
        fail(b, &w, "file too large (more than %u bytes)", MAX_FILE_SIZE);
        return OP_ETOOBIG;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    char *p = xmalloc(cap);
    for (;;) {
        if (n == cap) {
            if (cap > MAX_FILE_SIZE) {
                free(p);
                close(fd);
                fail(b, &w, "file too large (more than %u bytes)", MAX_FILE_SIZE);
                return OP_ETOOBIG;
            }
            cap *= 2;
            p = xrealloc(p, cap);
        }
        ssize_t r = read(fd, p + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(p);
            close(fd);
            fail(b, &w, "cannot read: %s", strerror(e));
            return -e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    *data = p;
    *len = n;
    return 0;
}

/* http://HOST[:PORT][/] */
static int origin_url_parse(struct builder *b, const struct where *w, const char *url,
                            struct conf_addr *a, bool *tls)
{
    struct str s = str_cstr(url);
    bool https = str_has_prefix(s, STR_LIT("https://"));
    if (!https && !str_has_prefix(s, STR_LIT("http://")))
        return fail(b, w, "'%s': expected http://HOST:PORT or https://HOST:PORT", url);
    *tls = https;
    s.p += https ? 8 : 7;
    s.len -= https ? 8 : 7;
    if (s.len > 0 && s.p[s.len - 1] == '/')
        s.len--;
    if (str_chr(s, '/') >= 0 || str_chr(s, '?') >= 0 || str_chr(s, '@') >= 0)
        return fail(b, w, "'%s': only http(s)://HOST:PORT is supported (no path or user)", url);
    char tmp[300];
    bool has_port = s.len > 0 && (s.p[0] == '[' ? str_chr(s, ']') >= 0 && s.p[s.len - 1] != ']'
                                                : str_chr(s, ':') >= 0);
    if (s.len > 256)
        return fail(b, w, "'%s': host name too long", url);
    snprintf(tmp, sizeof(tmp), "%.*s%s", (int)s.len, s.p, has_port ? "" : https ? ":443" : ":80");
    const char *problem = addr_parse(str_cstr(tmp), a);
    if (problem != NULL)
        return fail(b, w, "'%s': %s", url, problem);
    return 0;
}

static int flag_origin(struct builder *b, const struct where *w, const char *url)
{
    struct conf_addr a;
    bool tls = false;
    int rc = origin_url_parse(b, w, url, &a, &tls);
    if (rc < 0)
        return rc;
    struct config *c = b->c;
    const struct conf_site *found = site_by_name(c, STR_LIT("*"));
    size_t idx;
    if (found == NULL) {
        idx = site_add(b, 0);
        site_name_add(&c->sites[idx], STR_LIT("*"));
        b->sx[idx].origin_from_flag = true;
    } else {
        idx = (size_t)(found - c->sites);
        if (!b->sx[idx].origin_from_flag) {
            /* Flags override the file: --origin replaces the file's catch-all origins. */
            free(c->sites[idx].origins);
            c->sites[idx].origins = NULL;
            c->sites[idx].n_origins = 0;
            b->sx[idx].origin_from_flag = true;
        }
    }
    struct conf_site *s = &c->sites[idx];
    s->origins = xrealloc(s->origins, (s->n_origins + 1) * sizeof(*s->origins));
    s->origins[s->n_origins++] = a;
    if (tls) {
        /* https:// origins: the catch-all site bridges (verifying against the system CAs). */
        s->opts.upstream_tls = true;
        b->sx[idx].set[CONF_OPT_UPSTREAM_TLS] = 1;
    }
    return 0;
}

/* --shield URL (repeatable): the servers of the "--shield" group, which becomes the global
 * `shields` (replacing the file's). */
static int flag_shield(struct builder *b, const struct where *w, const char *url)
{
    struct conf_addr a;
    bool tls = false;
    int rc = origin_url_parse(b, w, url, &a, &tls);
    if (rc < 0)
        return rc;
    struct config *c = b->c;
    struct conf_upstream *u = upstream_by_name(c, STR_LIT("--shield"));
    if (u == NULL) {
        size_t idx = upstream_add(b, STR_LIT("--shield"), 0);
        u = &c->upstreams[idx];
        free(c->site_defaults.shields);
        c->site_defaults.shields = xstrdup("--shield");
        b->set[CONF_OPT_SHIELDS] = 0;
    }
    if (u->n_servers > 0 && u->tls != tls)
        return fail(b, w, "'%s': mixes http:// and https:// shields", url);
    u->tls = tls;
    struct str args[1] = {str_cstr(a.text)};
    return server_parse(b, w, u, args, 1);
}

/* --set NAME=VALUE: VALUE is split like a line of the file (quotes allowed). */
static int flag_set(struct builder *b, const char *arg)
{
    char what[96];
    const char *eq = strchr(arg, '=');
    struct where w = {"command line", 0, "--set"};
    if (eq == NULL || eq == arg)
        return fail(b, &w, "'%s': expected NAME=VALUE", arg);
    struct str name = str_make(arg, (size_t)(eq - arg));
    snprintf(what, sizeof(what), "--set %.*s", SHOW(name));
    w.what = what;
    int id = option_find(name);
    if (id < 0) {
        const char *hint = option_suggest(name);
        if (hint != NULL)
            return fail(b, &w, "unknown option (did you mean '%s'?)", hint);
        return fail(b, &w, "unknown option");
    }
    const struct conf_option *o = &conf_options[id];
    if (!(o->context & CONF_CTX_GLOBAL) || o->type == CONF_T_SITE)
        return fail(b, &w, "not a global option (sites are configured in the file)");
    struct toks t = {0};
    int rc = line_lex(b, &w, eq + 1, strlen(eq + 1), &t);
    if (rc == 0) {
        struct str args[64];
        size_t n = 0;
        for (size_t k = 0; k < t.n && rc == 0; k++) {
            if (t.v[k].brace)
                rc = fail(b, &w, "unexpected '%c'", t.v[k].brace);
            else if (n == ARRAY_SIZE(args))
                rc = fail(b, &w, "too many arguments");
            else
                args[n++] = t.v[k].s;
        }
        if (rc == 0)
            rc = option_apply(b, &w, id, args, n, option_base(b->c, o, NULL), true);
    }
    toks_fini(&t);
    return rc;
}

struct flag_op {
    const char *flag;
    const char *val;
};

/* The flags that take a value; `opt` is the option they set (-1: handled specially). */
static const struct {
    const char *flag;
    int opt;
} value_flags[] = {
    {"-c", -1},
    {"--config", -1},
    {"--listen", CONF_OPT_LISTEN},
    {"--origin", -1},
    {"--shield", -1},
    {"--role", CONF_OPT_ROLE},
    {"--cache-dir", CONF_OPT_CACHE_DIR},
    {"--admin", CONF_OPT_ADMIN},
    {"--workers", CONF_OPT_WORKERS},
    {"--tls-listen", CONF_OPT_TLS_LISTEN},
    {"--h3-listen", CONF_OPT_H3_LISTEN},
    {"--cert", CONF_OPT_TLS_CERTIFICATE},
    {"--key", CONF_OPT_TLS_CERTIFICATE_KEY},
    {"--set", -1},
};

static int flags_apply(struct builder *b, const struct flag_op *ops, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct where w = {"command line", 0, ops[i].flag};
        const char *f = ops[i].flag;
        int rc = 0;
        if (strcmp(f, "--origin") == 0) {
            rc = flag_origin(b, &w, ops[i].val);
        } else if (strcmp(f, "--shield") == 0) {
            rc = flag_shield(b, &w, ops[i].val);
        } else if (strcmp(f, "--set") == 0) {
            rc = flag_set(b, ops[i].val);
        } else {
            for (size_t k = 0; k < ARRAY_SIZE(value_flags); k++) {
                if (strcmp(f, value_flags[k].flag) != 0 || value_flags[k].opt < 0)
                    continue;
                struct str v = str_cstr(ops[i].val);
                const struct conf_option *o = &conf_options[value_flags[k].opt];
                rc = option_apply(b, &w, value_flags[k].opt, &v, 1, option_base(b->c, o, NULL),
                                  true);
            }
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void env_resolve(struct config *c)
{
    if (c->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->workers = n < 1 ? 1 : n > 256 ? 256 : (unsigned)n;
    }
    if (c->node_name == NULL) {
        char host[256] = {0};
        if (gethostname(host, sizeof(host) - 1) < 0 || host[0] == '\0')
            snprintf(host, sizeof(host), "outpost");
        c->node_name = xstrdup(host);
    }
}

int conf_load(int argc, char **argv, struct config **out, char *err, size_t errlen)
{
    struct builder b;
    builder_init(&b, err, errlen);
    struct flag_op *ops = xcalloc((size_t)(argc > 0 ? argc : 1), sizeof(*ops));
    size_t n_ops = 0;
    const char *file = NULL;
    bool help = false, version = false, check = false;
    int help_config = 0;
    int rc = 0;
    char *data = NULL;
    size_t len = 0;

    for (int i = 1; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        struct where w = {"command line", 0, a};
        if (strcmp(a, "-t") == 0 || strcmp(a, "--check") == 0) {
            check = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            help = true;
        } else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            version = true;
        } else if (strcmp(a, "--help-config") == 0) {
            help_config = 1;
        } else if (strcmp(a, "--help-config=markdown") == 0) {
            help_config = 2;
        } else if (strncmp(a, "--help-config=", 14) == 0) {
            w.what = "--help-config";
            rc = fail(&b, &w, "'%s': the only format is markdown", a + 14);
        } else {
            const char *val = NULL;
            const char *flag = NULL;
            for (size_t k = 0; k < ARRAY_SIZE(value_flags) && flag == NULL; k++) {
                size_t fl = strlen(value_flags[k].flag);
                if (strcmp(a, value_flags[k].flag) == 0) {
                    flag = value_flags[k].flag;
                    w.what = flag;
                    if (i + 1 >= argc) {
                        rc = fail(&b, &w, "missing value");
                        break;
                    }
                    val = argv[++i];
                } else if (fl > 2 && strncmp(a, value_flags[k].flag, fl) == 0 && a[fl] == '=') {
                    flag = value_flags[k].flag;
                    val = a + fl + 1;
                }
            }
            if (rc < 0)
                break;
            if (flag == NULL && a[0] == '-')
                rc = fail(&b, &w, "unknown flag (see --help)");
            else if (flag == NULL)
                rc = fail(&b, &w, "unexpected argument (the config file goes after -c)");
            else if (strcmp(flag, "-c") == 0 || strcmp(flag, "--config") == 0) {
                w.what = flag;
                if (file != NULL)
                    rc = fail(&b, &w, "given twice");
                else if (val[0] == '\0')
                    rc = fail(&b, &w, "missing value");
                file = val;
            } else {
                ops[n_ops].flag = flag;
                ops[n_ops].val = val;
                n_ops++;
            }
        }
    }
    if (rc < 0)
        goto out;

    b.c->action = help      ? CONF_ACTION_HELP
                  : version ? CONF_ACTION_VERSION
                  : help_config
                      ? (help_config == 2 ? CONF_ACTION_HELP_CONFIG_MD : CONF_ACTION_HELP_CONFIG)
                  : check ? CONF_ACTION_CHECK
                          : CONF_ACTION_RUN;
    if (b.c->action != CONF_ACTION_RUN && b.c->action != CONF_ACTION_CHECK) {
        free(b.sx);
        b.sx = NULL;
        goto out;
    }
    if (file != NULL) {
        b.c->file = xstrdup(file);
        rc = file_read(&b, file, &data, &len);
        if (rc == 0)
            rc = text_parse(&b, file, data, len);
        if (rc < 0)
            goto out;
    }
    rc = flags_apply(&b, ops, n_ops);
    if (rc == 0)
        rc = builder_finish(&b, file != NULL ? file : "command line");
    if (rc == 0)
        env_resolve(b.c);

out:
    free(data);
    free(ops);
    if (rc < 0) {
        builder_fail(&b);
        return rc;
    }
    *out = b.c;
    return 0;
}
