/*
 * conf/help.c: `outpostd --help`, `--help-config` and `--help-config=markdown`. The two
 * config references are printed from the one option table (conf/options.h); the Markdown form
 * is what scripts/gen-config-doc.sh writes into README.md, and tests compare the two, so the
 * README cannot drift from the table. Called from the main thread before anything starts.
 */
#include <stdio.h>
#include <string.h>

#include "conf/conf.h"
#include "conf/options.h"

static const char *type_name(enum conf_type t)
{
    switch (t) {
    case CONF_T_ADDRS:
        return "addr...";
    case CONF_T_ADDR_OFF:
        return "addr|off";
    case CONF_T_UINT:
    case CONF_T_COUNT:
        return "int";
    case CONF_T_SIZE:
        return "size";
    case CONF_T_DURATION:
    case CONF_T_SECONDS:
        return "duration";
    case CONF_T_BOOL:
    case CONF_T_BOOL_NOT:
        return "bool";
    case CONF_T_STRING:
        return "string";
    case CONF_T_LOG_TARGET:
        return "path|-|off";
    case CONF_T_LOG_LEVEL:
        return "level";
    case CONF_T_SITE:
        return "block";
    case CONF_T_ORIGINS:
        return "addr...";
    case CONF_T_ROUTE:
        return "name addr";
    case CONF_T_TLS_VERSION:
        return "1.2|1.3";
    case CONF_T_ROLE:
        return "edge|shield";
    case CONF_T_BALANCE:
        return "algorithm";
    case CONF_T_PATH_OFF:
        return "path|off";
    case CONF_T_NAMES:
        return "name...";
    case CONF_T_STATUS:
        return "status";
    case CONF_T_UPSTREAM:
        return "block";
    case CONF_T_SERVERS:
        return "server";
    }
    return "?";
}

static const char *context_name(int ctx)
{
    if (ctx == (CONF_CTX_GLOBAL | CONF_CTX_SITE))
        return "global, site";
    if (ctx == (CONF_CTX_GLOBAL | CONF_CTX_UPSTREAM))
        return "global, upstream";
    if (ctx == CONF_CTX_UPSTREAM)
        return "upstream";
    return ctx == CONF_CTX_SITE ? "site" : "global";
}

static void value_format(const struct conf_option *o, uint64_t v, char *out, size_t outlen)
{
    if (o->type == CONF_T_SIZE)
        conf_size_format(v, out, outlen);
    else if (o->type == CONF_T_DURATION || o->type == CONF_T_SECONDS)
        conf_duration_format((int64_t)v, out, outlen);
    else
        snprintf(out, outlen, "%llu", (unsigned long long)v);
}

static void bounds_format(const struct conf_option *o, char *out, size_t outlen)
{
    char lo[32], hi[32];
    if (o->min == 0 && o->max == 0) {
        out[0] = '\0';
        return;
    }
    value_format(o, o->min, lo, sizeof(lo));
    value_format(o, o->max, hi, sizeof(hi));
    snprintf(out, outlen, "%s..%s", lo, hi);
}

static const char *default_text(const struct conf_option *o)
{
    if (o->def != NULL)
        return o->def;
    if (o == &conf_options[CONF_OPT_NODE_NAME])
        return "(host name)";
    if (o == &conf_options[CONF_OPT_ORIGIN])
        return "(required)";
    return "";
}

/* A Markdown table cell: '|' would end the cell. */
static void md_cell(FILE *f, const char *s)
{
    fputc(' ', f);
    for (; *s; s++) {
        if (*s == '|')
            fputc('\\', f);
        fputc(*s, f);
    }
    fputs(" |", f);
}

static void md_row(FILE *f, const struct conf_option *o)
{
    char bounds[80];
    const char *def = default_text(o);
    bool def_code = def[0] != '\0' && def[0] != '(';
    bounds_format(o, bounds, sizeof(bounds));
    fprintf(f, "| `%s` |", o->name);
    md_cell(f, type_name(o->type));
    if (def_code)
        fprintf(f, " `%s` |", def);
    else
        md_cell(f, def);
    md_cell(f, bounds);
    md_cell(f, o->reload == CONF_RELOAD ? "reload" : "restart");
    md_cell(f, context_name(o->context));
    md_cell(f, o->help);
    fputc('\n', f);
}

void conf_help_print(FILE *f, bool markdown)
{
    if (markdown) {
        fputs("Generated from `conf/options.h` by `scripts/gen-config-doc.sh` "
              "(`outpostd --help-config=markdown`); do not edit by hand.\n"
              "Options of context `global, site` set outside a `site` block are the defaults "
              "of every site that does not set them; likewise `global, upstream` for `upstream` "
              "blocks (and for the servers of a site's inline `origin` line). `reload`: a "
              "configuration reload may "
              "change it; `restart`: it takes a restart.\n\n",
              f);
        fputs("| option | type | default | bounds | reload | context | description |\n"
              "|---|---|---|---|---|---|---|\n",
              f);
        for (int i = 0; i < CONF_OPT_COUNT; i++)
            md_row(f, &conf_options[i]);
        return;
    }
    fprintf(f, "Configuration directives (file syntax: NAME ARGS..., one per line; "
               "--set NAME=VALUE on the command line)\n\n");
    fprintf(f, "%-28s %-10s %-20s %-18s %-8s %s\n", "NAME", "TYPE", "DEFAULT", "BOUNDS", "RELOAD",
            "CONTEXT");
    for (int i = 0; i < CONF_OPT_COUNT; i++) {
        const struct conf_option *o = &conf_options[i];
        char bounds[80];
        bounds_format(o, bounds, sizeof(bounds));
        fprintf(f, "%-28s %-10s %-20s %-18s %-8s %s\n    %s\n", o->name, type_name(o->type),
                default_text(o), bounds, o->reload == CONF_RELOAD ? "reload" : "restart",
                context_name(o->context), o->help);
    }
    fprintf(f, "\nSizes: k, m, g (powers of 1024). Durations: ms, s, m, h, d (bare number = "
               "seconds). Booleans: on, off.\n");
}

void conf_usage_print(FILE *f)
{
    fputs(
        "usage: outpostd [-c FILE] [flags]\n"
        "\n"
        "  -c, --config FILE         the config file\n"
        "  --listen ADDR:PORT        client listener (repeatable; replaces the file's listen)\n"
        "  --origin URL              http(s)://HOST:PORT: a catch-all site (*) with that origin\n"
        "                            (repeatable; with --shield, the fallback origin)\n"
        "  --role edge|shield        edge (default): misses go to shields, then the origin;\n"
        "                            shield: misses go to the origin\n"
        "  --shield URL              http(s)://HOST:PORT of a shield (repeatable): an edge sends\n"
        "                            each miss to one shield, chosen by hashing its cache key\n"
        "  --tls-listen ADDR:PORT    TLS listener, HTTP/1.1 and HTTP/2 by ALPN (repeatable)\n"
        "  --h3-listen ADDR:PORT     HTTP/3 (QUIC) listener on UDP, same --cert/--key "
        "(repeatable)\n"
        "  --cert FILE               PEM certificate chain for TLS (tls_certificate)\n"
        "  --key FILE                PEM private key for TLS (tls_certificate_key)\n"
        "  --cache-dir DIR           cache_dir\n"
        "  --admin ADDR:PORT|off     admin listener\n"
        "  --workers N               worker threads (0 = one per core)\n"
        "  --set NAME=VALUE          set any global option (repeatable)\n"
        "  -t, --check               validate the configuration and exit\n"
        "  --help-config[=markdown]  print the configuration reference\n"
        "  -V, --version             print the version\n"
        "  -h, --help                print this help\n"
        "\n"
        "Flags override the file.\n",
        f);
}
