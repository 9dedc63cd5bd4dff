/*
 * tests/unit/edge/h1_parse.c: edge/h1/parse.c: the strict request and response head parsers
 * and the chunked decoder. Valid messages of every shape, every error class, the known request
 * smuggling vectors, incremental (prefix) parsing, a randomised chunked round trip (SEED=) and
 * a timing figure for a typical request, printed as a TAP comment (never asserted).
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "edge/h1/h1.h"
#include "lib/util.h"
#include "tests/unit/tap.h"

#define MAXH 64

static struct http_header hdrs[MAXH];
static const struct h1_limits dflt = {H1_DEFAULT_MAX_HEAD_BYTES, MAXH, H1_DEFAULT_MAX_URI};

static int parse_req_lim(const char *s, size_t len, struct h1_request *r,
                         const struct h1_limits *lim)
{
    r->headers = hdrs;
    return h1_parse_request(s, len, r, lim);
}

static int parse_req(const char *s, struct h1_request *r)
{
    return parse_req_lim(s, strlen(s), r, &dflt);
}

static bool str_is(struct str s, const char *want)
{
    return s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

/* A request that must be refused with `want`. */
static void req_err(const char *s, enum h1_error want, const char *what)
{
    struct h1_request r;
    int rc = parse_req(s, &r);
    ok(rc == H1_INVALID && r.err == want, "refused (err %d): %s", (int)want, what);
    if (rc != H1_INVALID || r.err != want)
        printf("#   rc %d err %d\n", rc, (int)r.err);
}

static void req_err_len(const char *s, size_t len, enum h1_error want, const char *what)
{
    struct h1_request r;
    int rc = parse_req_lim(s, len, &r, &dflt);
    ok(rc == H1_INVALID && r.err == want, "refused (err %d): %s", (int)want, what);
}

/* A request that must be accepted whole; every proper prefix must be incomplete. */
static int req_ok(const char *s, struct h1_request *r, const char *what)
{
    size_t len = strlen(s);
    bool prefixes = true;
    for (size_t i = 0; i < len; i++) {
        struct h1_request p;
        int rc = parse_req_lim(s, i, &p, &dflt);
        if (rc != H1_INCOMPLETE) {
            printf("#   prefix %zu: rc %d err %d\n", i, rc, (int)p.err);
            prefixes = false;
            break;
        }
    }
    int rc = parse_req(s, r);
    ok(rc == (int)len && r->err == H1_ERR_NONE && prefixes, "accepted, prefixes incomplete: %s",
       what);
    if (rc != (int)len)
        printf("#   rc %d err %d\n", rc, (int)r->err);
    return rc;
}

static void test_valid_requests(void)
{
    struct h1_request r;

    req_ok("GET /index.html?a=b HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n", &r,
           "simple GET");
    ok(str_is(r.method, "GET") && str_is(r.target, "/index.html?a=b") &&
           str_is(r.path, "/index.html?a=b") && str_is(r.authority, "example.com"),
       "method, target, path, authority");
    ok(r.target_form == H1_TARGET_ORIGIN && r.minor_version == 1 && r.n_headers == 2,
       "origin-form, 1.1, 2 headers");
    ok(r.keep_alive && !r.expect_continue && r.body == H1_BODY_NONE, "1.1 defaults");
    ok(str_is(hdrs[0].name, "Host") && str_is(hdrs[1].value, "t"), "header name/value");

    req_ok("GET / HTTP/1.1\r\nHost: a\r\nX-A:  v  w \t\r\nX-B:\r\nX-C: \x80\xff\tq\r\n\r\n", &r,
           "OWS trimmed, empty value, obs-text and HTAB in a value");
    ok(str_is(hdrs[1].value, "v  w") && hdrs[2].value.len == 0 &&
           str_is(hdrs[3].value, "\x80\xff\tq"),
       "values trimmed, inner whitespace kept");

    int rc = req_ok("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", &r, "leading CRLFs");
    ok(rc == 31 && str_is(r.method, "GET"), "leading CRLFs are counted in the head length");
    req_err("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX,
            "too many leading CRLFs");
    req_err("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "leading bare LF");
    req_err("\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "leading bare CR");

    req_ok("GET http://Example.com:8080/p?q HTTP/1.1\r\nHost: other\r\n\r\n", &r, "absolute-form");
    ok(r.target_form == H1_TARGET_ABSOLUTE && str_is(r.authority, "Example.com:8080") &&
           str_is(r.path, "/p?q"),
       "absolute-form: the target's authority wins over Host, path after authority");
    req_ok("GET HTTPS://h HTTP/1.1\r\nHost: h\r\n\r\n", &r, "absolute-form https, no path");
    ok(str_is(r.authority, "h") && str_is(r.path, "/"), "empty path becomes /");
    req_ok("GET http://[2001:db8::1]:80/x HTTP/1.1\r\nHost: \r\n\r\n", &r,
           "absolute-form with IPv6 and empty Host");
    ok(str_is(r.authority, "[2001:db8::1]:80") && str_is(r.path, "/x"), "IPv6 authority");

    req_ok("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", &r,
           "authority-form");
    ok(r.target_form == H1_TARGET_AUTHORITY && str_is(r.authority, "example.com:443"),
       "authority-form authority");
    req_ok("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &r, "asterisk-form");
    ok(r.target_form == H1_TARGET_ASTERISK && str_is(r.authority, "a"), "asterisk-form");

    req_ok("GET / HTTP/1.0\r\n\r\n", &r, "HTTP/1.0 without Host");
    ok(r.minor_version == 0 && !r.keep_alive && r.authority.len == 0, "1.0 defaults");
    req_ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r, "1.0 keep-alive");
    ok(r.keep_alive, "1.0 with keep-alive keeps the connection");
    req_ok("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", &r, "1.0 both tokens");
    ok(!r.keep_alive, "close wins over keep-alive");
    req_ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n", &r, "1.1 close");
    ok(!r.keep_alive, "1.1 with close token in a list closes");
    req_ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo\r\nConnection: close\r\n\r\n", &r,
           "1.1 close in a second Connection header");
    ok(!r.keep_alive, "Connection lists are combined");
    req_ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", &r, "not close");
    ok(r.keep_alive, "'closed' is not 'close'");

    req_ok("PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n", &r,
           "Expect: 100-continue");
    ok(r.expect_continue && r.body == H1_BODY_LENGTH && r.content_length == 3,
       "expect_continue, length body");
    req_ok("PUT /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", &r,
           "Expect in HTTP/1.0");
    ok(!r.expect_continue, "100-continue is ignored in HTTP/1.0");
    req_err("GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", H1_ERR_EXPECTATION,
            "other Expect");
    req_err("GET / HTTP/1.1\r\nHost: a\r\nExpect:\r\n\r\n", H1_ERR_EXPECTATION, "empty Expect");

    req_ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", &r, "CL 0");
    ok(r.body == H1_BODY_LENGTH && r.content_length == 0, "CL 0 is a zero-length body");
    req_ok("POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 9223372036854775807\r\n\r\n", &r,
           "CL INT64_MAX");
    ok(r.content_length == 9223372036854775807ull, "largest content length");
    req_ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n", &r, "TE chunked");
    ok(r.body == H1_BODY_CHUNKED, "chunked body (case-insensitive)");

    const char *hosts[] = {"a.b-c_d~e", "192.0.2.1",          "192.0.2.1:8080",
                           "[::1]",     "[::ffff:1.2.3.4]:1", "h:65535",
                           "h:0"};
    for (size_t i = 0; i < ARRAY_SIZE(hosts); i++) {
        char buf[128];
        snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", hosts[i]);
        req_ok(buf, &r, hosts[i]);
        ok(str_is(r.authority, hosts[i]), "authority is Host %s", hosts[i]);
    }

    /* pipelining: the parser stops at the end of the first head */
    const char *two = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: b\r\n\r\n";
    rc = parse_req(two, &r);
    ok(rc == 28 && str_is(r.target, "/1"), "first of two pipelined requests");
    rc = parse_req(two + 28, &r);
    ok(rc == 28 && str_is(r.target, "/2") && str_is(r.authority, "b"), "second request");
}

static void test_request_errors(void)
{
    /* request line */
    req_err("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_METHOD, "method with (");
    req_err("GE\x01T / HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_METHOD, "method with a CTL");
    req_err(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_METHOD, "line starting with SP");
    req_err("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_METHOD, "HTAB after method");
    req_err("GET\r\n\r\n", H1_ERR_SYNTAX, "method alone");
    req_err("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "two SPs after method");
    req_err("GET /  HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "two SPs after target");
    req_err("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "SP after version");
    req_err("GET /\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "no version (HTTP/0.9)");
    req_err("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "DEL in target");
    req_err("GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "UTF-8 in target");
    req_err("GET / http/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "lowercase version");
    req_err("GET / HTTP/11\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "version without dot");
    req_err("GET / HTTP/1.1x\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "junk after version");
    req_err("GET / HTTP/1.1\rHost: a\r\n\r\n", H1_ERR_SYNTAX, "bare CR after version");
    req_err("GET / HTTP/1.1\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "bare LF after version");
    req_err_len("GET / HTTP/1.1x", 15, H1_ERR_SYNTAX, "junk after version, incomplete line");
    req_err("GET / HTTP/2.0\r\nHost: a\r\n\r\n", H1_ERR_VERSION, "HTTP/2.0");
    req_err("GET / HTTP/1.2\r\nHost: a\r\n\r\n", H1_ERR_VERSION, "HTTP/1.2");
    req_err("GET / HTTP/0.9\r\nHost: a\r\n\r\n", H1_ERR_VERSION, "HTTP/0.9 with a version");

    /* target forms */
    req_err("GET * HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "asterisk without OPTIONS");
    req_err("GET a.com:80 HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "authority without CONNECT");
    req_err("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "CONNECT with origin-form");
    req_err("CONNECT a.com HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "CONNECT without port");
    req_err("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "other scheme");
    req_err("GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "userinfo");
    req_err("GET http://u:p@a/ HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "userinfo w/ pass");
    req_err("GET http:/// HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "empty authority");
    req_err("GET http:// HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "scheme only");
    req_err("GET http://a%2f/ HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "percent in host");
    req_err("GET http://a:x/ HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "bad port");
    req_err("GET http://a?q HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "query without path");
    req_err("GET index.html HTTP/1.1\r\nHost: a\r\n\r\n", H1_ERR_SYNTAX, "relative target");

    /* header syntax */
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", H1_ERR_SYNTAX,
            "space before colon");
    req_err("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", H1_ERR_SYNTAX, "tab before colon");
    req_err("GET / HTTP/1.1\r\nHost: a\r\nX Y: z\r\n\r\n", H1_ERR_SYNTAX, "space in name");
    req_err("GET / HTTP/1.1\r\nHost: a\r\nX@Y: z\r\n\r\n", H1_ERR_SYNTAX, "@ in name");
    req_err("GET / HTTP/1.1\r\nHost: a\r\nX\"Y: z\r\n\r\n", H1_ERR_SYNTAX, "quote in name");
    req_err("GET / HTTP/1.1\r\nHost: a\r\n: z\r\n\r\n", H1_ERR_SYNTAX, "empty name");
    req_err("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", H1_ERR_SYNTAX, "no colon");
    req_err("GET / HTTP/1.1\r\nHost: a\r\nX\xe9: z\r\n\r\n", H1_ERR_SYNTAX, "8-bit name");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n x\r\n\r\n", H1_ERR_SYNTAX,
            "obs-fold after a TE line");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\tchunked\r\n\r\n", H1_ERR_SYNTAX,
            "TE value folded onto the next line");
    req_err("GET / HTTP/1.1\r\n Host: a\r\n\r\n", H1_ERR_SYNTAX,
            "line starting with SP right after the request line");
    req_err("GET / HTTP/1.1\r\n\tHost: a\r\n\r\n", H1_ERR_SYNTAX,
            "line starting with HTAB right after the request line");
    req_err("GET / HTTP/1.1\nHost: a\n\n", H1_ERR_SYNTAX, "bare LF line endings");
    req_err("GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", H1_ERR_SYNTAX, "bare LF after a field");
    req_err("GET / HTTP/1.1\r\nHost: a\r\n\n", H1_ERR_SYNTAX, "bare LF ending the head");
    req_err("GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", H1_ERR_SYNTAX, "bare CR after a value");
    req_err("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", H1_ERR_SYNTAX, "bare CR in value");
    req_err("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", H1_ERR_SYNTAX, "bare CR ending the head");
    req_err_len("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 36, H1_ERR_SYNTAX,
                "NUL in a value");
    req_err("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n", H1_ERR_SYNTAX, "CTL in a value");
    req_err("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", H1_ERR_SYNTAX, "DEL in a value");
    req_err("GET / HTTP/1.1\r\nHost: a\r\nX: a\x1b[0m\r\n\r\n", H1_ERR_SYNTAX, "ESC in a value");

    /* Host */
    req_err("GET / HTTP/1.1\r\n\r\n", H1_ERR_HOST, "missing Host in 1.1");
    req_err("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", H1_ERR_HOST, "duplicate Host");
    req_err("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", H1_ERR_HOST, "duplicate Host 1.0");
    req_err("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", H1_ERR_HOST, "space in Host");
    req_err("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", H1_ERR_HOST, "slash in Host");
    req_err("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", H1_ERR_HOST, "userinfo in Host");
    req_err("GET / HTTP/1.1\r\nHost: a:\r\n\r\n", H1_ERR_HOST, "empty port");
    req_err("GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n", H1_ERR_HOST, "port out of range");
    req_err("GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n", H1_ERR_HOST, "port too long");
    req_err("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", H1_ERR_HOST, "unclosed IPv6");
    req_err("GET / HTTP/1.1\r\nHost: [abc]\r\n\r\n", H1_ERR_HOST, "IPv6 without colons");
    req_err("GET / HTTP/1.1\r\nHost: \r\n\r\n", H1_ERR_HOST, "empty Host with origin-form");
    req_err("GET / HTTP/1.1\r\nHost: \x80\r\n\r\n", H1_ERR_HOST, "obs-text Host");
    req_err("GET http://a/ HTTP/1.1\r\n\r\n", H1_ERR_HOST, "absolute-form still needs Host");
}

static void test_smuggling(void)
{
    const enum h1_error S = H1_ERR_SMUGGLING;
    req_err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            S, "CL + TE");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            S, "TE + CL");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", S, "xchunked");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunkedx\r\n\r\n", S, "chunkedx");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", S,
            "chunked, identity");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            "Transfer-Encoding: chunked\r\n\r\n",
            S, "TE chunked twice (two headers)");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", S,
            "TE chunked twice (one list)");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
            "Transfer-Encoding: x\r\n\r\n",
            S, "TE chunked then x");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", S, "TE gzip alone");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", S, "empty TE");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n", S,
            "empty TE list element");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", S,
            "chunked with a parameter");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", S,
            "quoted chunked");
    req_err("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", S, "TE in HTTP/1.0");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            H1_ERR_TE_UNSUPPORTED, "gzip, chunked");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
            "Transfer-Encoding: chunked\r\n\r\n",
            H1_ERR_TE_UNSUPPORTED, "gzip then chunked in two headers");

    req_err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", S,
            "duplicate CL, equal");
    req_err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", S,
            "duplicate CL, different");
    const char *bad_cl[] = {"+5",
                            "-5",
                            "5, 5",
                            "5,5",
                            "0x5",
                            "5abc",
                            "5 5",
                            "",
                            "5.0",
                            "1e3",
                            "\x80",
                            "9223372036854775808",
                            "99999999999999999999999"};
    for (size_t i = 0; i < ARRAY_SIZE(bad_cl); i++) {
        char buf[160];
        snprintf(buf, sizeof(buf), "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %s\r\n\r\n",
                 bad_cl[i]);
        req_err(buf, S, bad_cl[i]);
    }
    /* smuggling wins over the Host error: a bad body frame must never be read */
    req_err("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", S,
            "framing checked before Host");
}

/* Every position of a long value and a long target, so that both the 16-byte scans and their
 * scalar tails meet each kind of byte. */
static void test_byte_sweep(void)
{
    static const unsigned char bad_value[] = {0x00, 0x01, '\n', '\r', 0x1f, 0x7f};
    static const unsigned char bad_target[] = {0x00, ' ', '\t', 0x7f, 0x80, 0xff};
    char buf[256];
    struct h1_request r;
    int wrong = 0;
    for (size_t pos = 0; pos < 40; pos++) {
        for (size_t k = 0; k < sizeof(bad_value) + 2; k++) {
            int n = snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: a\r\nX: ");
            size_t vstart = (size_t)n;
            memset(buf + vstart, 'v', 40);
            unsigned char c = k < sizeof(bad_value)    ? bad_value[k]
                              : k == sizeof(bad_value) ? '\t'
                                                       : 0xe9;
            buf[vstart + pos] = (char)c;
            memcpy(buf + vstart + 40, "w\r\n\r\n", 5);
            size_t len = vstart + 45;
            int rc = parse_req_lim(buf, len, &r, &dflt);
            bool good = k < sizeof(bad_value)
                            ? (rc == H1_INVALID && r.err == H1_ERR_SYNTAX)
                            : (rc == (int)len &&
                               r.headers[1].value.len == (c == '\t' && pos == 0 ? 40u : 41u));
            wrong += !good;
        }
        for (size_t k = 0; k < sizeof(bad_target) + 1; k++) {
            memcpy(buf, "GET /", 5);
            memset(buf + 5, 't', 40);
            unsigned char c = k < sizeof(bad_target) ? bad_target[k] : '~';
            buf[5 + pos] = (char)c;
            memcpy(buf + 45, " HTTP/1.1\r\nHost: a\r\n\r\n", 22);
            int rc = parse_req_lim(buf, 67, &r, &dflt);
            bool good = k < sizeof(bad_target) ? (rc == H1_INVALID && r.err == H1_ERR_SYNTAX)
                                               : (rc == 67 && r.target.len == 41);
            wrong += !good;
        }
    }
    ok(wrong == 0, "bad bytes refused and good bytes accepted at every position (%d wrong)", wrong);
}

static void test_limits(void)
{
    struct h1_request r;
    struct h1_limits lim = {128, 4, 16};
    char buf[512];

    const char *at = "GET /234567890123456 HTTP/1.1\r\nHost: a\r\n\r\n";
    ok(parse_req_lim(at, strlen(at), &r, &lim) == (int)strlen(at), "target exactly max_uri");
    const char *over = "GET /2345678901234567 HTTP/1.1\r\nHost: a\r\n\r\n";
    int rc = parse_req_lim(over, strlen(over), &r, &lim);
    ok(rc == H1_INVALID && r.err == H1_ERR_URI_TOO_LONG, "target one over max_uri");
    rc = parse_req_lim(over, 21, &r, &lim);
    ok(rc == H1_INVALID && r.err == H1_ERR_URI_TOO_LONG, "long target detected while incomplete");
    rc = parse_req_lim(over, 20, &r, &lim);
    ok(rc == H1_INCOMPLETE, "target of exactly max_uri bytes so far is incomplete");

    /* head bytes */
    memset(buf, 0, sizeof(buf));
    strcpy(buf, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
    size_t n = strlen(buf);
    while (n < 128 - 4)
        buf[n++] = 'v';
    memcpy(buf + n, "\r\n\r\n", 4);
    n += 4;
    ok(n == 128 && parse_req_lim(buf, n, &r, &lim) == 128, "head of exactly max_head_bytes");
    ok(parse_req_lim(buf, n + 10, &r, &lim) == 128, "bytes after a full head are not counted");
    memmove(buf + 30, buf + 29, n - 29);
    buf[29] = 'v';
    rc = parse_req_lim(buf, n + 1, &r, &lim);
    ok(rc == H1_INVALID && r.err == H1_ERR_HEADERS_TOO_LARGE, "complete head one byte too big");
    rc = parse_req_lim(buf, 129, &r, &lim);
    ok(rc == H1_INVALID && r.err == H1_ERR_HEADERS_TOO_LARGE,
       "incomplete head with len over the limit");
    rc = parse_req_lim(buf, 128, &r, &lim);
    ok(rc == H1_INCOMPLETE, "incomplete head with len at the limit");

    /* header count */
    const char *four = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    ok(parse_req_lim(four, strlen(four), &r, &lim) == (int)strlen(four) && r.n_headers == 4,
       "max_headers fields");
    const char *five = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    rc = parse_req_lim(five, strlen(five), &r, &lim);
    ok(rc == H1_INVALID && r.err == H1_ERR_HEADERS_TOO_LARGE, "one field over max_headers");
    rc = parse_req_lim(five, strlen(four) - 1, &r, &lim);
    ok(rc == H1_INVALID && r.err == H1_ERR_HEADERS_TOO_LARGE,
       "too many fields detected while incomplete");
}

/* ---- responses ------------------------------------------------------------------------- */

static int parse_resp(const char *s, struct h1_response *r, bool head)
{
    r->headers = hdrs;
    return h1_parse_response(s, strlen(s), r, &dflt, head);
}

static void resp_case(const char *s, bool head, int want_rc, enum h1_error want_err,
                      enum h1_body want_body, bool want_ka, const char *what)
{
    struct h1_response r;
    int rc = parse_resp(s, &r, head);
    if (want_rc == 0)
        want_rc = (int)strlen(s);
    bool good = rc == want_rc && r.err == want_err;
    if (rc > 0)
        good = good && r.body == want_body && r.keep_alive == want_ka;
    if (good && rc > 0) {
        for (size_t i = 0; i < (size_t)rc; i++) {
            r.headers = hdrs;
            if (h1_parse_response(s, i, &r, &dflt, head) != H1_INCOMPLETE) {
                printf("#   prefix %zu not incomplete\n", i);
                good = false;
                break;
            }
        }
    }
    ok(good, "response: %s", what);
    if (!good)
        printf("#   rc %d err %d body %d ka %d\n", rc, (int)r.err, (int)r.body, r.keep_alive);
}

static void test_responses(void)
{
    struct h1_response r;
    const int I = H1_INVALID;

    int rc = parse_resp("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX: y\r\n\r\nbody", &r, false);
    ok(rc == 45 && r.status == 200 && str_is(r.reason, "OK") && r.minor_version == 1 &&
           r.n_headers == 2 && r.body == H1_BODY_LENGTH && r.content_length == 12 && r.keep_alive,
       "200 with Content-Length");
    rc = parse_resp("HTTP/1.1 404\r\n\r\n", &r, false);
    ok(rc > 0 && r.status == 404 && r.reason.len == 0, "missing reason phrase tolerated");
    rc = parse_resp("HTTP/1.1 500 \r\n\r\n", &r, false);
    ok(rc > 0 && r.status == 500 && r.reason.len == 0, "empty reason phrase");
    rc = parse_resp("HTTP/1.1 299 Whatever \xe9t\xe9\t!\r\n\r\n", &r, false);
    ok(rc > 0 && r.status == 299 && r.reason.len == 14, "reason with SP, HTAB and obs-text");
    rc = parse_resp("HTTP/1.0 999 X\r\n\r\n", &r, false);
    ok(rc > 0 && r.status == 999 && r.minor_version == 0, "status 999, HTTP/1.0");

    resp_case("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false, 0, 0, H1_BODY_LENGTH, true,
              "CL framing");
    resp_case("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, 0, 0, H1_BODY_CHUNKED,
              true, "chunked framing");
    resp_case("HTTP/1.1 200 OK\r\nX: y\r\n\r\n", false, 0, 0, H1_BODY_CLOSE, false,
              "no framing: read until close");
    resp_case("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", false, 0, 0, H1_BODY_NONE,
              true, "204 has no body");
    resp_case("HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", false, 0, 0, H1_BODY_NONE,
              true, "304 has no body");
    resp_case("HTTP/1.1 100 Continue\r\n\r\n", false, 0, 0, H1_BODY_NONE, true, "1xx");
    resp_case("HTTP/1.1 101 Switching Protocols\r\nTransfer-Encoding: chunked\r\n\r\n", false, 0, 0,
              H1_BODY_NONE, true, "101 with TE has no body");
    resp_case("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true, 0, 0, H1_BODY_NONE, true,
              "response to HEAD");
    resp_case("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, 0, 0, H1_BODY_NONE,
              true, "chunked response to HEAD");
    resp_case("HTTP/1.1 200 OK\r\n\r\n", true, 0, 0, H1_BODY_NONE, true,
              "unframed response to HEAD keeps the connection");
    resp_case("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", false, 0, 0,
              H1_BODY_LENGTH, true, "repeated identical CL accepted");
    resp_case("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", false, I,
              H1_ERR_SMUGGLING, 0, false, "differing CL");
    resp_case("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n", false, I, H1_ERR_SMUGGLING, 0,
              false, "CL list");
    resp_case("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false, I, H1_ERR_SMUGGLING, 0, false,
              "negative CL");
    resp_case("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", false,
              I, H1_ERR_SMUGGLING, 0, false, "CL + TE");
    resp_case("HTTP/1.1 304 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", false,
              I, H1_ERR_SMUGGLING, 0, false, "CL + TE even on 304");
    resp_case("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, 0, 0, H1_BODY_CLOSE,
              false, "TE without final chunked: close-delimited");
    resp_case("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", false, 0, 0,
              H1_BODY_CLOSE, false, "TE chunked, gzip: close-delimited");
    resp_case("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false, I,
              H1_ERR_TE_UNSUPPORTED, 0, false, "TE gzip, chunked");
    resp_case("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", false, I,
              H1_ERR_SMUGGLING, 0, false, "TE chunked twice");
    resp_case("HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n", false, I, H1_ERR_SMUGGLING, 0, false,
              "empty TE");
    resp_case("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", false, 0, 0,
              H1_BODY_LENGTH, false, "Connection: close");
    resp_case("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, 0, 0, H1_BODY_LENGTH, false,
              "1.0 default close");
    resp_case("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", false, 0, 0,
              H1_BODY_LENGTH, true, "1.0 keep-alive");
    resp_case("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", false, I, H1_ERR_SYNTAX, 0, false,
              "obs-fold");
    resp_case("HTTP/1.1 200 OK\nX: a\n\n", false, I, H1_ERR_SYNTAX, 0, false, "bare LF");
    resp_case("HTTP/1.1 200 OK\r\nX : a\r\n\r\n", false, I, H1_ERR_SYNTAX, 0, false,
              "space before colon");
    resp_case("HTTP/1.1 200 O\x01K\r\n\r\n", false, I, H1_ERR_SYNTAX, 0, false, "CTL in reason");
    resp_case("HTTP/1.1 099 X\r\n\r\n", false, I, H1_ERR_SYNTAX, 0, false, "status 099");
    resp_case("HTTP/1.1 20 OK\r\n\r\n", false, I, H1_ERR_SYNTAX, 0, false, "two-digit status");
    resp_case("HTTP/1.1 2000 OK\r\n\r\n", false, I, H1_ERR_SYNTAX, 0, false, "four-digit status");
    resp_case("HTTP/1.1  200 OK\r\n\r\n", false, I, H1_ERR_SYNTAX, 0, false, "two SPs");
    resp_case("HTTP/1.1 200OK\r\n\r\n", false, I, H1_ERR_SYNTAX, 0, false, "no SP after status");
    resp_case("HTTP/2.0 200 OK\r\n\r\n", false, I, H1_ERR_VERSION, 0, false, "HTTP/2.0");
    resp_case("ICY 200 OK\r\n\r\n", false, I, H1_ERR_SYNTAX, 0, false, "not HTTP");

    struct h1_limits small = {40, 2, 16};
    r.headers = hdrs;
    const char *big = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    rc = h1_parse_response(big, strlen(big), &r, &small, false);
    ok(rc == I && r.err == H1_ERR_HEADERS_TOO_LARGE, "response over max_headers");
    const char *longer = "HTTP/1.1 200 OK\r\nA: 1111111111111111111111111\r\n\r\n";
    rc = h1_parse_response(longer, strlen(longer), &r, &small, false);
    ok(rc == I && r.err == H1_ERR_HEADERS_TOO_LARGE, "response over max_head_bytes");
}

/* ---- chunked decoder ------------------------------------------------------------------- */

/* Decode s[0..len) feeding at most `step` bytes per call (0: everything at once). Returns the
 * bytes consumed or -1, the decoded data in out. */
static long chunked(const char *s, size_t len, size_t step, size_t max_trailer, char *out,
                    size_t *out_len, bool *done)
{
    struct h1_chunked st;
    memset(&st, 0, sizeof(st));
    st.max_trailer_bytes = max_trailer;
    size_t pos = 0;
    *out_len = 0;
    *done = false;
    while (!*done) {
        size_t avail = len - pos;
        size_t give = step && avail > step ? step : avail;
        size_t off, dlen;
        int rc = h1_chunked_decode(&st, s + pos, give, &off, &dlen, done);
        if (rc < 0)
            return -1;
        if (dlen) {
            memcpy(out + *out_len, s + pos + off, dlen);
            *out_len += dlen;
        }
        pos += (size_t)rc;
        if (rc == 0 && (give == avail || *done))
            break;
    }
    return (long)pos;
}

static void chunk_ok(const char *s, const char *want, const char *what)
{
    char out[1024];
    size_t olen;
    bool done;
    size_t len = strlen(s);
    bool good = true;
    for (size_t step = 0; step <= 3 && good; step++) {
        long rc = chunked(s, len, step, 0, out, &olen, &done);
        good = rc == (long)len && done && olen == strlen(want) && memcmp(out, want, olen) == 0;
        if (!good)
            printf("#   step %zu: rc %ld done %d out %zu\n", step, rc, done, olen);
    }
    ok(good, "chunked ok: %s", what);
}

static void chunk_bad(const char *s, size_t max_trailer, const char *what)
{
    char out[8192];
    size_t olen;
    bool done;
    size_t len = strlen(s);
    long whole = chunked(s, len, 0, max_trailer, out, &olen, &done);
    long bytewise = chunked(s, len, 1, max_trailer, out, &olen, &done);
    ok(whole == -1 && bytewise == -1, "chunked refused: %s", what);
    if (whole != -1 || bytewise != -1)
        printf("#   whole %ld bytewise %ld\n", whole, bytewise);
}

static void test_chunked(void)
{
    chunk_ok("5\r\nhello\r\n0\r\n\r\n", "hello", "one chunk");
    chunk_ok("0\r\n\r\n", "", "empty body");
    chunk_ok("000\r\n\r\n", "", "last-chunk with zeros");
    chunk_ok("A\r\n0123456789\r\n1\r\n!\r\n0\r\n\r\n", "0123456789!", "hex size, two chunks");
    chunk_ok("a;name\r\n0123456789\r\n0\r\n\r\n", "0123456789", "extension without value");
    chunk_ok("5 ; a=b ;c = \"d;e\\\"f\" ; g\r\nhello\r\n0;last=1\r\n\r\n", "hello",
             "extensions with BWS, token and quoted values");
    chunk_ok("5\r\nhello\r\n0\r\nX-Sum: abc\r\nY:\r\nZ: a b\t\x80\r\n\r\n", "hello", "trailers");
    chunk_ok("5\r\nhe\r\nl\r\n0\r\n\r\n", "he\r\nl", "CRLF inside data");

    /* bytes after the message are not consumed; done is sticky */
    {
        struct h1_chunked st = {0};
        size_t off, dlen;
        bool done;
        const char *s = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        int rc = h1_chunked_decode(&st, s, strlen(s), &off, &dlen, &done);
        ok(rc == 13 && done && off == 3 && dlen == 3, "stops after the trailer section");
        rc = h1_chunked_decode(&st, s + rc, strlen(s) - 13, &off, &dlen, &done);
        ok(rc == 0 && done && dlen == 0, "nothing more consumed once done");
    }
    /* at most one data span per call */
    {
        struct h1_chunked st = {0};
        size_t off, dlen;
        bool done;
        const char *s = "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
        int rc = h1_chunked_decode(&st, s, strlen(s), &off, &dlen, &done);
        ok(rc == 11 && off == 3 && dlen == 3 && !done, "first span, stops before the second");
        int rc2 = h1_chunked_decode(&st, s + rc, strlen(s) - (size_t)rc, &off, &dlen, &done);
        ok(rc2 == (int)strlen(s) - rc && off == 0 && dlen == 3 && done && s[rc + off] == 'd',
           "second span and the end");
    }
    /* a huge chunk */
    {
        struct h1_chunked st = {0};
        size_t off, dlen;
        bool done;
        int rc = h1_chunked_decode(&st, "4000000000000000\r\nxy", 20, &off, &dlen, &done);
        ok(rc == 20 && off == 18 && dlen == 2 && !done, "2^62-byte chunk accepted");
    }

    chunk_bad("0x5\r\nhello\r\n0\r\n\r\n", 0, "0x prefix");
    chunk_bad("+5\r\nhello\r\n0\r\n\r\n", 0, "sign");
    chunk_bad("-5\r\nhello\r\n0\r\n\r\n", 0, "negative");
    chunk_bad(" 5\r\nhello\r\n0\r\n\r\n", 0, "leading space");
    chunk_bad("5 \r\nhello\r\n0\r\n\r\n", 0, "trailing space without extension");
    chunk_bad("\r\nhello\r\n0\r\n\r\n", 0, "empty size");
    chunk_bad("g\r\n", 0, "non-hex size");
    chunk_bad("00000000000000005\r\nhello\r\n0\r\n\r\n", 0, "17 hex digits");
    chunk_bad("4000000000000001\r\n", 0, "over 2^62");
    chunk_bad("ffffffffffffffff\r\n", 0, "2^64-1");
    chunk_bad("10000000000000000\r\n", 0, "2^64 (overflow)");
    chunk_bad("5\nhello\r\n0\r\n\r\n", 0, "bare LF after size");
    chunk_bad("5\rhello\r\n0\r\n\r\n", 0, "bare CR after size");
    chunk_bad("5\r\nhelloX\r\n0\r\n\r\n", 0, "junk after data");
    chunk_bad("5\r\nhello0\r\n\r\n", 0, "missing CRLF after data");
    chunk_bad("5\r\nhello\n0\r\n\r\n", 0, "bare LF after data");
    chunk_bad("5\r\nhello\r\r\n0\r\n\r\n", 0, "CR CR LF after data");
    chunk_bad("5;\r\nhello\r\n0\r\n\r\n", 0, "empty extension name");
    chunk_bad("5;a=\r\nhello\r\n0\r\n\r\n", 0, "empty extension value");
    chunk_bad("5;a=\"x\r\nhello\r\n0\r\n\r\n", 0, "unterminated quoted value");
    chunk_bad("5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", 0, "CTL in quoted value");
    chunk_bad("5;a b\r\nhello\r\n0\r\n\r\n", 0, "two names");
    chunk_bad("5;a=b c\r\nhello\r\n0\r\n\r\n", 0, "two values");
    chunk_bad("5;a@\r\nhello\r\n0\r\n\r\n", 0, "bad name byte");
    chunk_bad("0\r\nX : y\r\n\r\n", 0, "space before colon in trailer");
    chunk_bad("0\r\nX: y\r\n z\r\n\r\n", 0, "obs-fold in trailer");
    chunk_bad("0\r\nX: y\n\r\n", 0, "bare LF in trailer");
    chunk_bad("0\r\nX: y\x7f\r\n\r\n", 0, "DEL in trailer");
    chunk_bad("0\r\nNoColon\r\n\r\n", 0, "trailer without colon");
    chunk_bad("0\r\n\n", 0, "bare LF at the end");
    chunk_bad("0\r\nX: 0123456789\r\n\r\n", 16, "trailer over max_trailer_bytes");
    {
        char out[16];
        size_t olen;
        bool done;
        const char *s = "0\r\nX: 012345678\r\n\r\n"; /* 16 bytes of trailer section */
        ok(chunked(s, strlen(s), 0, 16, out, &olen, &done) == (long)strlen(s) && done,
           "trailer of exactly max_trailer_bytes");
        ok(chunked(s, strlen(s), 1, 15, out, &olen, &done) == -1, "one byte over, bytewise");
    }
    {
        static char line[H1_CHUNK_MAX_LINE + 64];
        memset(line, 0, sizeof(line));
        strcpy(line, "1;x=");
        size_t n = strlen(line);
        while (n < H1_CHUNK_MAX_LINE - 2)
            line[n++] = 'v';
        strcpy(line + n, "\r\na\r\n0\r\n\r\n");
        char out[8];
        size_t olen;
        bool done;
        ok(chunked(line, strlen(line), 0, 0, out, &olen, &done) == (long)strlen(line) && done,
           "size line of exactly H1_CHUNK_MAX_LINE bytes");
        memmove(line + 5, line + 4, strlen(line + 4) + 1);
        line[4] = 'v';
        chunk_bad(line, 0, "size line one byte over the limit");
    }
    /* an error is sticky */
    {
        struct h1_chunked st = {0};
        size_t off, dlen;
        bool done;
        ok(h1_chunked_decode(&st, "z", 1, &off, &dlen, &done) == H1_INVALID &&
               h1_chunked_decode(&st, "0\r\n\r\n", 5, &off, &dlen, &done) == H1_INVALID,
           "invalid state is sticky");
    }
}

/* Random valid chunked encodings of random data, decoded with random split points. */
static void test_chunked_property(void)
{
    static char data[4096];
    static char enc[16384];
    static char out[4096];
    tap_seed();
    int failures = 0;
    for (int iter = 0; iter < 500 && failures < 3; iter++) {
        size_t dlen = (size_t)rand() % sizeof(data);
        if (rand() % 8 == 0)
            dlen = 0;
        for (size_t i = 0; i < dlen; i++)
            data[i] = (char)(rand() & 0xff);
        size_t e = 0, pos = 0;
        while (pos < dlen) {
            size_t c = 1 + (size_t)rand() % 700;
            if (c > dlen - pos)
                c = dlen - pos;
            const char *fmt = rand() % 2 ? "%zx" : "%zX";
            if (rand() % 5 == 0)
                fmt = rand() % 2 ? "00%zx" : "%zx";
            e += (size_t)snprintf(enc + e, sizeof(enc) - e, fmt, c);
            switch (rand() % 4) {
            case 0:
                e += (size_t)snprintf(enc + e, sizeof(enc) - e, ";ext");
                break;
            case 1:
                e += (size_t)snprintf(enc + e, sizeof(enc) - e, " ;a=b; c =\t\"q\\\"s\"");
                break;
            default:
                break;
            }
            memcpy(enc + e, "\r\n", 2);
            e += 2;
            memcpy(enc + e, data + pos, c);
            e += c;
            memcpy(enc + e, "\r\n", 2);
            e += 2;
            pos += c;
        }
        e += (size_t)snprintf(enc + e, sizeof(enc) - e, "0%s\r\n%s\r\n",
                              rand() % 3 ? "" : ";end=\"1\"",
                              rand() % 2 ? "" : "Digest: x\r\nX-Y:  z \r\n");
        size_t total = e;
        /* trailing garbage that must not be consumed */
        memcpy(enc + e, "NEXT", 4);

        struct h1_chunked st = {0};
        size_t got = 0, at = 0;
        bool done = false, good = true;
        while (!done && good) {
            size_t remain = total + 4 - at;
            size_t give = rand() % 4 == 0 ? 1 : 1 + (size_t)rand() % (remain < 300 ? remain : 300);
            if (give > remain)
                give = remain;
            size_t off, n;
            int rc = h1_chunked_decode(&st, enc + at, give, &off, &n, &done);
            if (rc < 0 || (size_t)rc > give || (n && off + n > (size_t)rc) || got + n > dlen) {
                good = false;
                break;
            }
            memcpy(out + got, enc + at + off, n);
            got += n;
            at += (size_t)rc;
            if (rc == 0 && !done && give == remain)
                good = false;
        }
        good = good && done && at == total && got == dlen && memcmp(out, data, dlen) == 0;
        if (!good) {
            failures++;
            printf("# iteration %d failed: at %zu of %zu, got %zu of %zu\n", iter, at, total, got,
                   dlen);
        }
    }
    ok(failures == 0, "500 random chunked bodies decode to the original at random splits");
}

static void test_timing(void)
{
    const char *req =
        "GET /assets/img/logo-large.png?v=1234567 HTTP/1.1\r\n"
        "Host: www.example.com\r\n"
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
        "Accept: image/avif,image/webp,*/*\r\n"
        "Accept-Language: en-US,en;q=0.5\r\n"
        "Accept-Encoding: gzip, deflate, br\r\n"
        "Connection: keep-alive\r\n"
        "Referer: https://www.example.com/\r\n"
        "\r\n";
    size_t len = strlen(req);
    struct h1_request r;
    /* best of many short batches: on a loaded machine the minimum is the figure that means
     * something; the mean is printed too */
    const int batches = 200;
    const int per = 1000;
    double best = 1e30;
    double total = 0;
    long sum = 0;
    for (int b = 0; b < batches; b++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < per; i++) {
            r.headers = hdrs;
            sum += h1_parse_request(req, len, &r, &dflt);
            __asm__ __volatile__("" : : "r"(&r) : "memory");
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ns = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec));
        total += ns;
        if (ns < best)
            best = ns;
    }
    ok(sum == (long)batches * per * (long)len, "timing loop parsed every request");
    printf("# h1_parse_request: %zu-byte request, best %.1f ns per parse (%.2f ns/byte), mean "
           "%.1f ns\n",
           len, best / per, best / per / (double)len, total / ((double)batches * per));
}

int main(void)
{
    test_valid_requests();
    test_request_errors();
    test_smuggling();
    test_byte_sweep();
    test_limits();
    test_responses();
    test_chunked();
    test_chunked_property();
    test_timing();
    return tap_done();
}
