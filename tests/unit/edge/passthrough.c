/*
 * tests/unit/edge/passthrough.c: passthrough_route(), the SNI routing of TLS passthrough:
 * exact names first, then the longest "*.suffix", then "*"; no SNI only reaches "*".
 */
#include <string.h>

#include "conf/conf.h"
#include "edge/passthrough.h"
#include "tests/unit/tap.h"

static struct conf_route routes[8];
static struct config cfg;

static void add(const char *name, const char *to)
{
    struct conf_route *r = &routes[cfg.n_passthrough++];
    snprintf(r->name, sizeof(r->name), "%s", name);
    snprintf(r->to.text, sizeof(r->to.text), "%s", to);
}

static const char *route(const char *sni)
{
    const struct conf_route *r = passthrough_route(&cfg, sni);
    return r ? r->to.text : "none";
}

int main(void)
{
    cfg.passthrough = routes;
    add("*.example.com", "wild");
    add("a.example.com", "exact");
    add("*.deep.example.com", "deep");
    add("*", "default");
    add("*", "second-default");
    add("*.b.example.com", "b-wild");

    is_str(route("a.example.com"), "exact", "exact name wins over a wildcard listed before it");
    is_str(route("a.example.com."), "exact", "one trailing dot ignored");
    is_str(route("x.example.com"), "wild", "wildcard");
    is_str(route("x.y.example.com"), "wild", "wildcard matches several labels");
    is_str(route("x.deep.example.com"), "deep", "longest suffix");
    is_str(route("deep.example.com"), "wild", "a suffix does not match itself");
    is_str(route("x.b.example.com"), "b-wild", "longest suffix listed last");
    is_str(route("example.com"), "default", "bare suffix goes to the default");
    is_str(route("xexample.com"), "default", "suffix must start at a label boundary");
    is_str(route("a.example.com.evil"), "default", "no prefix match");
    is_str(route(NULL), "default", "no SNI: first *");
    is_str(route(""), "default", "empty SNI: first *");
    is_str(route("."), "default", "a lone dot: *");

    cfg.n_passthrough = 0;
    add("a.example.com", "exact");
    add("*.example.com", "wild");
    is_str(route("zzz.test"), "none", "no match without *");
    is_str(route(NULL), "none", "no SNI without *");
    is_str(route(".example.com"), "none", "empty label before the suffix");
    return tap_done();
}
