/* tests/unit/http/headers.c: header list operations of http/headers.c. */
#include "http/http.h"
#include "tests/unit/tap.h"

static struct http_headers h;

static void add(const char *n, const char *v)
{
    http_headers_add(&h, str_cstr(n), str_cstr(v));
}

/* Join every list element of `name` with '|' into buf. */
static const char *elems(const char *name, char *buf, size_t len)
{
    size_t iter = 0, pos = 0, o = 0;
    struct str e;
    buf[0] = '\0';
    while (http_headers_list_next(&h, name, &iter, &pos, &e))
        o += (size_t)snprintf(buf + o, len - o, "%s%.*s", o ? "|" : "", (int)e.len, e.p);
    return buf;
}

int main(void)
{
    char buf[512];
    http_headers_init(&h);
    add("Accept", "a, b");
    add("X", "1");
    add("accept", " ,c ,, \"d,e\" ,f=\"g,\\\"h\" ");
    add("Vary", "Accept-Encoding");
    is_str(elems("ACCEPT", buf, sizeof(buf)), "a|b|c|\"d,e\"|f=\"g,\\\"h\"",
           "list across lines, quoted commas and escapes kept, empties skipped");
    is_str(elems("Missing", buf, sizeof(buf)), "", "absent list is empty");
    is_int(http_headers_count(&h, "accept"), 2, "count is case-insensitive");
    ok(http_headers_get(&h, "x") && str_eq(http_headers_get(&h, "x")->value, STR_LIT("1")), "get");
    ok(http_headers_get(&h, "y") == NULL, "get absent");
    ok(http_headers_has_token(&h, "Accept", "C"), "has_token case-insensitive");
    ok(!http_headers_has_token(&h, "Accept", "d"), "has_token does not look inside quotes");
    ok(!http_headers_has_token(&h, "Accept", "e"), "has_token: no partial element");

    http_headers_set(&h, STR_LIT("ACCEPT"), STR_LIT("z"));
    is_int(http_headers_count(&h, "accept"), 1, "set collapses duplicates");
    is_str(elems("accept", buf, sizeof(buf)), "z", "set value");
    ok(str_eq(h.v[0].value, STR_LIT("z")), "set keeps the first position");
    http_headers_set(&h, STR_LIT("New"), STR_LIT("v"));
    ok(h.n == 4 && str_eq(h.v[3].name, STR_LIT("New")), "set appends when absent");
    is_int(http_headers_remove(&h, "nEw"), 1, "remove returns count");
    is_int(http_headers_remove(&h, "nEw"), 0, "remove again: nothing");
    is_int(h.n, 3, "list shrank");
    for (int i = 0; i < 100; i++)
        add("Many", "x");
    is_int(http_headers_count(&h, "many"), 100, "list grows");
    is_int(http_headers_remove(&h, "many"), 100, "remove many");
    ok(http_headers_get(&h, "Vary") != NULL, "other headers survive remove");

    /* hop-by-hop, including Connection-listed names */
    http_headers_fini(&h);
    add("Connection", "close, X-Secret");
    add("Connection", "x-other");
    ok(http_is_hop_by_hop(&h, STR_LIT("Transfer-Encoding")), "Transfer-Encoding");
    ok(http_is_hop_by_hop(&h, STR_LIT("keep-alive")), "Keep-Alive");
    ok(http_is_hop_by_hop(&h, STR_LIT("Upgrade")), "Upgrade");
    ok(http_is_hop_by_hop(&h, STR_LIT("Connection")), "Connection");
    ok(http_is_hop_by_hop(&h, STR_LIT("x-secret")), "Connection-listed");
    ok(http_is_hop_by_hop(&h, STR_LIT("X-Other")), "Connection-listed on a second line");
    ok(!http_is_hop_by_hop(&h, STR_LIT("Content-Type")), "end-to-end field");
    ok(!http_is_hop_by_hop(NULL, STR_LIT("X-Secret")), "no list: only the static names");
    ok(http_is_token(STR_LIT("max-age")) && !http_is_token(STR_LIT("a b")) &&
           !http_is_token(STR_NULL),
       "is_token");
    http_headers_fini(&h);
    ok(h.n == 0 && h.v == NULL, "fini resets");
    return tap_done();
}
